"""Optuna RDB storage and the study conventions of docs/architecture.md (names, user attrs, trial accounting).

Accounting: a trial *counts* towards a sweep's `n_trials` once it reached a verdict: COMPLETE, PRUNED, or FAIL
because the payload raised or diverged. A FAIL caused by the platform (worker lost, CUDA error, Ctrl-C, the driver
killed) carries `infra_fault=True` and does not count: it is rerun with the same parameters as a new trial
(`retry_of` = its number) until `max_retries` is spent, and then it is marked `gave_up=True` and counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "StorageError",
    "open_storage",
    "sqlite_path",
    "study_names",
    "load_study",
    "counts_toward_target",
    "needs_retry",
    "TrialCounts",
    "count_trials",
    "set_user_attrs",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


class StorageError(ValueError):
    """The storage URL or the study named does not exist / cannot be opened."""


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:/// URL (None for in-memory or non-SQLite URLs)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):]
    if not path or path == ":memory:":
        return None
    return Path(path)


def open_storage(url: str, *, create: bool = True) -> optuna.storages.RDBStorage:
    """Open (and with `create`, create) an Optuna RDB storage. Without `create`, a missing SQLite file is an error
    instead of a new empty database."""
    path = sqlite_path(url)
    if path is not None:
        if not create and not path.is_file():
            raise StorageError(f"no database at {path} (storage {url}); run `sweep run NAME` first or pass --storage")
        if create and not path.parent.exists():
            raise StorageError(f"the directory of {path} does not exist (storage {url}); create it or change --storage")
    engine_kwargs = {"connect_args": {"timeout": 60}} if path is not None else {}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:  # sqlalchemy's ArgumentError/OperationalError, version mismatches, ...
        raise StorageError(f"cannot open storage {url}: {exc}") from exc
    if path is not None and create:  # the driver (writer); readers leave the file exactly as it is
        _fast_sqlite(storage)
    return storage


def _fast_sqlite(storage) -> None:
    """WAL + synchronous=NORMAL: a commit no longer waits for an fsync (it was ~25 ms each here), readers (status,
    dashboards) never block the driver, and a killed process still leaves a consistent database."""
    from sqlalchemy import event

    engine = getattr(storage, "engine", None)
    if engine is None:
        return

    def pragmas(dbapi_connection, _record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener get the pragmas when reopened


def set_user_attrs(study: optuna.Study, trial_id: int, attrs: dict) -> None:
    """Several user attrs in one transaction of three statements, instead of a commit and two statements per key
    (the per-trial cost of the platform is mostly these writes)."""
    import json

    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    try:
        import sqlalchemy as sa
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session
    except ImportError:  # another Optuna layout: the public, per-key path
        backend = None
    if not isinstance(backend, optuna.storages.RDBStorage) or not attrs:
        for key, value in attrs.items():
            storage.set_trial_user_attr(trial_id, key, value)
        return
    rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)} for key, value in attrs.items()]
    table = models.TrialUserAttributeModel.__table__
    with _create_scoped_session(backend.scoped_session, True) as session:
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        backend.check_trial_is_updatable(trial_id, trial.state)
        session.execute(sa.delete(table).where(table.c.trial_id == trial_id, table.c.key.in_(list(attrs))))
        session.execute(sa.insert(table), rows)


def study_names(storage) -> list[str]:
    return [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]


def load_study(storage, name: str) -> optuna.Study:
    names = study_names(storage)
    if name not in names:
        known = ", ".join(names) or "(none)"
        raise StorageError(f"no study named {name!r} in this storage; studies there: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def counts_toward_target(trial: FrozenTrial) -> bool:
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    if trial.state == TrialState.FAIL:
        attrs = trial.user_attrs
        return not attrs.get("infra_fault") or bool(attrs.get("gave_up"))
    return False


def needs_retry(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """FAIL trials with a platform fault, retries left, and no retry yet (e.g. after a killed driver)."""
    retried = {t.user_attrs.get("retry_of") for t in trials}
    return [
        t for t in trials
        if t.state == TrialState.FAIL and t.user_attrs.get("infra_fault") and not t.user_attrs.get("gave_up")
        and t.number not in retried
    ]


@dataclass
class TrialCounts:
    counted: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    retried: int = 0  # platform faults that were (or will be) rerun
    running: int = 0
    waiting: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def count_trials(trials: list[FrozenTrial]) -> TrialCounts:
    c = TrialCounts()
    for t in trials:
        c.counted += counts_toward_target(t)
        if t.state == TrialState.COMPLETE:
            c.complete += 1
        elif t.state == TrialState.PRUNED:
            c.pruned += 1
        elif t.state == TrialState.FAIL:
            if counts_toward_target(t):
                c.failed += 1
            else:
                c.retried += 1
        elif t.state == TrialState.RUNNING:
            c.running += 1
        elif t.state == TrialState.WAITING:
            c.waiting += 1
    return c


def storage_url_from(arg: str | None, spec_storage: str | None = None) -> str:
    """--storage, else $SPARSESWEEP_STORAGE, else the sweep's own storage, else sqlite:///sweeps.db."""
    from .config import DEFAULT_STORAGE

    return arg or os.environ.get("SPARSESWEEP_STORAGE") or spec_storage or DEFAULT_STORAGE
