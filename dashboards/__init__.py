"""Reports and live dashboards of sweeps: `sweep report` (HTML + PNG), `sweep dashboard` (optuna-dashboard), and a
sweep page in the Dask dashboard.

Names are imported on first use: `sweep run` needs only the Dask page, not matplotlib and bokeh (seconds to import).
"""

from __future__ import annotations

import importlib

_SOURCES = {
    "BrowserError": "browser", "PageCheck": "browser", "check_page": "browser", "find_chromium": "browser",
    "announce": "dask_page", "page_url": "dask_page", "sweep_page": "dask_page",
    "DashboardUnavailable": "live", "make_dashboard_server": "live",
    "PAGE_READY_JS": "report", "Report": "report", "build_report": "report",
    "DEFAULT_STORAGE": "study", "StudyNotFound": "study", "SweepData": "study", "TrialRecord": "study",
    "list_sweeps": "study", "load_sweep": "study",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
