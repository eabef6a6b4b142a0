"""dashboards.dask_page: the sweep page inside the Dask dashboard of a real process cluster."""

from __future__ import annotations

import urllib.request

import pytest
from distributed import Client, LocalCluster

from dashboards.dask_page import announce, page_url, sweep_page
from dash_fixtures import made_studies  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def client():
    with sweep_page():
        cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True, scheduler_port=0,
                               dashboard_address="127.0.0.1:0", host="127.0.0.1")
    with cluster, Client(cluster, timeout=60) as client:
        yield client


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


def test_page_before_any_sweep(client):
    assert "No sweep announced" in _get(page_url(client))


def test_page_shows_announced_sweeps(client, made_studies):
    announce(client, "mnist", made_studies)
    announce(client, "all-failed", made_studies)
    html = _get(page_url(client))
    assert "14 finished</b> (12 complete, 0 pruned, 2 fail, 0 running, 0 waiting)" in html
    assert "3 finished</b> (0 complete, 0 pruned, 3 fail" in html
    assert "Best trials" in html and "sparsity=" in html
    assert page_url(client).startswith("http://127.0.0.1:") and page_url(client).endswith("/sweep")


def test_dask_dashboard_still_serves_its_own_pages(client):
    assert "Dask" in _get(client.dashboard_link)
