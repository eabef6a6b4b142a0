"""`sweep dashboard`: optuna-dashboard on the sweep storage, on 127.0.0.1, stopped cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from dashboards.live import make_dashboard_server
from dash_fixtures import made_studies  # noqa: F401 - fixtures

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed (pip install -e '.[test]')")


def _read_url(process: subprocess.Popen, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if match:
            return match.group(1)
    process.kill()
    raise AssertionError(f"`sweep dashboard` printed no URL: {process.stdout.read()}")


def test_dashboard_serves_the_storage_on_localhost_and_stops(made_studies):
    process = subprocess.Popen([sys.executable, "-m", "sweep", "dashboard", "--storage", made_studies, "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONWARNINGS": "ignore"})
    try:
        url = _read_url(process)
        with urllib.request.urlopen(url, timeout=30) as response:  # redirects to the single-page app
            assert response.status == 200 and b"<html" in response.read().lower()
        with urllib.request.urlopen(url + "api/studies", timeout=30) as response:
            names = {s["study_name"] for s in json.load(response)["study_summaries"]}
        assert {"mnist", "multi", "all-failed"} <= names
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            rest, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 0 and "stopped" in rest


def test_dashboard_binds_loopback_only(made_studies):
    server = make_dashboard_server(made_studies, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.server_port > 0
    finally:
        server.server_close()


def test_missing_storage_exits_2_and_creates_nothing(tmp_path):
    db = tmp_path / "nothing.db"
    done = subprocess.run([sys.executable, "-m", "sweep", "dashboard", "--storage", f"sqlite:///{db}", "--port", "0"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 2 and "sweep run" in done.stderr and not db.exists()
