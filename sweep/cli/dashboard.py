"""`sweep dashboard`: optuna-dashboard on a sweep storage, on 127.0.0.1 only, until Ctrl-C."""

from __future__ import annotations

import argparse
import signal

from ._base import Command, UsageError


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class DashboardCommand(Command):
    name = "dashboard"
    help = "Start optuna-dashboard on a sweep storage, bound to 127.0.0.1 (live view while a sweep runs)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--storage", default=None,
                            help="storage URL (default: $SPARSESWEEP_STORAGE, else sqlite:///sweeps.db)")
        parser.add_argument("--port", type=int, default=8080, help="port on 127.0.0.1; 0 picks a free one "
                                                                    "(default: %(default)s)")

    def run(self, args: argparse.Namespace) -> int:
        from dashboards.live import DashboardUnavailable, make_dashboard_server, url_of

        from ..study import StorageError, storage_url_from

        if not 0 <= args.port <= 65535:
            raise UsageError(f"--port must be in 0..65535, got {args.port}")
        storage = storage_url_from(args.storage)
        try:
            server = make_dashboard_server(storage, args.port)
        except (StorageError, DashboardUnavailable) as exc:
            raise UsageError(str(exc)) from None
        except OSError as exc:
            raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}; "
                             f"pick another --port (0 = any free port)") from None
        print(f"optuna-dashboard for {storage} at {url_of(server)} (Ctrl-C to stop)", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("stopped", flush=True)
        finally:
            server.server_close()
        return 0


command = DashboardCommand()
