"""`sweep dashboard`: optuna-dashboard on a sweep's storage, served on 127.0.0.1 only."""

from __future__ import annotations

import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sweep.study import open_storage

HOST = "127.0.0.1"  # never another interface: the dashboard can edit studies (notes, user attrs) and has no login
DEFAULT_PORT = 8080


class DashboardUnavailable(RuntimeError):
    pass


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the stdlib's signature
        pass  # the dashboard polls every second; one line per request would bury the URL


def make_dashboard_server(storage: str, port: int = DEFAULT_PORT) -> WSGIServer:
    """An optuna-dashboard WSGI server bound to 127.0.0.1:`port` (0 = a free port), not yet serving.

    Raises StorageError (sweep.study) for a storage that does not exist, DashboardUnavailable without
    optuna-dashboard, OSError when the port is taken.
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise DashboardUnavailable(
            "optuna-dashboard is not installed; install it with `pip install optuna-dashboard` "
            "(or `pip install -e '.[dashboard]'`)"
        ) from None
    app = optuna_dashboard.wsgi(open_storage(storage, create=False))
    return make_server(HOST, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler)


def url_of(server: WSGIServer) -> str:
    return f"http://{HOST}:{server.server_port}/"


def start_in_thread(server: WSGIServer) -> threading.Thread:
    """Serve in a daemon thread (stop with server.shutdown(); server.server_close())."""
    thread = threading.Thread(target=server.serve_forever, name="optuna-dashboard", daemon=True)
    thread.start()
    return thread
