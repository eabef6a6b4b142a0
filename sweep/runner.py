"""The driver: one process owns the Optuna study (ask and tell; the only writer of the database) and runs the
trials as Dask tasks, up to workers x trials-per-GPU at once, telling each result as it completes.

Faults: a payload that raises or diverges -> FAIL with its reason (counts as a trial). A lost worker (killed
process, CUDA error) -> FAIL with `infra_fault`, rerun with the same parameters up to `max_retries` times.
Ctrl-C -> running trials FAIL (`infra_fault`), rerun by the next `sweep run`. A driver killed outright leaves
RUNNING trials, which the next `sweep run` of the sweep marks FAIL (`infra_fault`) and reruns.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import time
import uuid
import warnings
from collections import deque
from dataclasses import dataclass, field

import optuna
from distributed import Event, KilledWorker, wait
from optuna.trial import TrialState

from .config import DEFAULT_PAYLOAD, SweepSpec
from .progress import IdleSummary, SweepProgress, summarize_idle
from .space import make_pruner, make_sampler, suggest
from .study import TrialCounts, count_trials, needs_retry, open_storage, set_user_attrs
from .trial import run_trial

__all__ = ["RunnerError", "SweepRunner", "RunResult", "run_sweep"]

# Metric keys that are lists (curves) or bookkeeping, not scalar user attrs.
_CURVES = ("test_accuracy", "train_loss")
_SKIP = {"status", "reason"}
# A trial killed by the restart of a worker after another trial's CUDA error is sent again at most this often.
_MAX_RESUBMITS = 3


class RunnerError(RuntimeError):
    """The study cannot be (re)used as asked; the message says why and what to do."""


@dataclass
class _InFlight:
    trial: optuna.Trial
    config: dict
    future: object
    attempt: int
    key: str
    prune_event: str | None
    submitted_at: float
    resubmits: int = 0  # times it was sent again after our own restart of its worker killed it


@dataclass
class RunResult:
    study_name: str
    run_id: str
    target: int
    counts: TrialCounts
    idle: IdleSummary
    wall_s: float
    trials_this_run: int
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def trials_per_hour(self) -> float:
        return 3600.0 * self.trials_this_run / self.wall_s if self.wall_s > 0 else math.nan


class SweepRunner:
    def __init__(self, spec: SweepSpec, storage_url: str, *, n_trials: int | None = None, progress: bool = True,
                 poll_s: float = 0.25, worker_wait_s: float = 300.0, out=None):
        self.spec = spec
        self.storage_url = storage_url
        self.target = n_trials if n_trials is not None else spec.n_trials
        self.progress_enabled = progress
        self.poll_s = poll_s
        self.worker_wait_s = worker_wait_s
        self.out = out or sys.stderr
        self.run_id = uuid.uuid4().hex[:12]
        self.study: optuna.Study | None = None
        self.notes: list[str] = []
        self._retry_queue: deque = deque()  # (FrozenTrial, next attempt)
        self._inflight: dict[str, _InFlight] = {}
        self._reports: queue.Queue = queue.Queue()
        self._trials_told = 0
        self._best: str = "-"
        self._command_of = None
        # worker address this driver restarted after a CUDA error -> the keys in flight at that moment
        self._restarted: dict[str, set[str]] = {}

    # ------------------------------------------------------------------------------------------ preparation

    def prepare(self) -> TrialCounts:
        """Open/create the study, fail the RUNNING trials a killed driver left, queue their reruns."""
        spec = self.spec
        storage = open_storage(self.storage_url)
        existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
        directions = [optuna.study.StudyDirection[d.upper()] for d in spec.directions]
        if spec.name in existing and list(existing[spec.name].directions) != directions:
            have = [d.name.lower() for d in existing[spec.name].directions]
            raise RunnerError(f"study {spec.name!r} in {self.storage_url} has directions {have} but the sweep now asks "
                              f"for {spec.directions}; use another --storage or delete the study")
        self.study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions,
                                         sampler=make_sampler(spec), pruner=make_pruner(spec), load_if_exists=True)
        if spec.name not in existing:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(spec.metric_names)
        previous = self.study.user_attrs.get("sweep")
        spec_dict = spec.to_dict()
        if previous is not None and _without(previous, "n_trials") != _without(spec_dict, "n_trials"):
            self.notes.append("note: the sweep's definition changed since this study was created; the new "
                              "definition applies to new trials")
        self.study.set_user_attr("sweep", spec_dict)
        self.study.set_user_attr("objectives", [{"metric": m, "direction": d} for m, d in spec.objectives])

        trials = self.study.get_trials(deepcopy=False)
        orphans = [t for t in trials if t.state == TrialState.RUNNING]
        for t in orphans:
            self._fail_infra(t._trial_id, t.number, t.user_attrs.get("attempt", 1),
                             "orphaned: the driver running it ended without a verdict (killed?)")
        if orphans:
            self.notes.append(f"resumed: {len(orphans)} RUNNING trial(s) left by a previous driver marked FAIL "
                              "and queued for a rerun")
            trials = self.study.get_trials(deepcopy=False)
        for t in needs_retry(trials):
            self._retry_queue.append((t, t.user_attrs.get("attempt", 1) + 1))
        return count_trials(trials)

    # ------------------------------------------------------------------------------------------ the loop

    def run(self, client) -> RunResult:
        if self.study is None:
            self.prepare()
        spec, study = self.spec, self.study
        self.client = client
        started = time.time()
        stream = not spec.multi_objective  # Optuna accepts intermediate values on single-objective studies only
        self._topic = f"sparsesweep-{self.run_id}" if stream else None
        if stream:
            client.subscribe_topic(self._topic, lambda event: self._reports.put(event[1]))
        if spec.payload == DEFAULT_PAYLOAD:
            try:
                from .trainer import config_to_command

                self._command_of = config_to_command
            except ImportError:
                self._command_of = None

        counts = count_trials(study.get_trials(deepcopy=False))
        if counts.complete:  # resuming: show the best so far from the start
            self._update_best()
        bar = SweepProgress(spec.name, self.target, counts.counted, enabled=self.progress_enabled, out=self.out)
        for note in self.notes:
            bar.write(note)
        interrupted = False
        no_workers_since = None
        try:
            while True:
                self._drain_reports()
                for key in [k for k, f in self._inflight.items() if f.future.done()]:
                    self._finish(self._inflight.pop(key))
                counted = counts.counted
                if self._trials_told or not self._inflight:
                    counts = count_trials(study.get_trials(deepcopy=False, states=None))
                    counted = counts.counted
                    self._trials_told = 0
                if counted >= self.target and not self._inflight:
                    break
                capacity, n_workers = self._capacity()
                if n_workers == 0:
                    no_workers_since = no_workers_since or time.time()
                    if time.time() - no_workers_since > self.worker_wait_s:
                        raise RunnerError(f"no Dask worker for {self.worker_wait_s:.0f} s; is the cluster alive?")
                else:
                    no_workers_since = None
                while len(self._inflight) < capacity and counted + len(self._inflight) < self.target:
                    self._launch()
                bar.update(counted, counts.failed, len(self._inflight), self._best)
                futures = [f.future for f in self._inflight.values()]
                if futures:
                    try:
                        wait(futures, timeout=self.poll_s, return_when="FIRST_COMPLETED")
                    except TimeoutError:  # nothing finished within poll_s: drain reports, look again
                        pass
                else:
                    time.sleep(self.poll_s)
        except KeyboardInterrupt:
            interrupted = True
            self._interrupt("interrupted (Ctrl-C or SIGTERM) before it finished")
            raise
        except BaseException as exc:
            self._interrupt(f"the driver stopped on an error before it finished: {type(exc).__name__}: {exc}")
            raise
        finally:
            if stream:
                try:
                    client.unsubscribe_topic(self._topic)
                except Exception:
                    pass
            counts = count_trials(study.get_trials(deepcopy=False))
            bar.update(counts.counted, counts.failed, len(self._inflight), self._best)
            bar.close()
        wall = time.time() - started
        trials = study.get_trials(deepcopy=False)
        idle = summarize_idle(trials, self.run_id, slots_per_worker=spec.trials_per_gpu)
        this_run = sum(1 for t in trials if t.user_attrs.get("run_id") == self.run_id and t.state != TrialState.RUNNING)
        return RunResult(spec.name, self.run_id, self.target, counts, idle, wall, this_run, interrupted, self.notes)

    def _capacity(self) -> tuple[int, int]:
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        threads = sum(min(w.get("nthreads", 1), self.spec.trials_per_gpu) for w in workers.values())
        # `prefetch` extra trials per worker wait at the scheduler, so a worker starts its next trial as soon
        # as one ends instead of after a round trip through the driver and the database.
        return threads + self.spec.prefetch * len(workers), len(workers)

    def _launch(self) -> None:
        spec, study = self.spec, self.study
        if self._retry_queue:
            failed, attempt = self._retry_queue.popleft()
            study.enqueue_trial(failed.params, user_attrs={"retry_of": failed.number, "attempt": attempt})
        trial = study.ask()
        params = suggest(trial, spec)
        attempt = int(trial.user_attrs.get("attempt", 1))
        config = spec.trial_config(params)
        attrs = {"attempt": attempt, "run_id": self.run_id, "config": config}
        if self._command_of is not None:
            try:
                attrs["command"] = self._command_of(config)
            except Exception:  # a config the trainer rejects: the trial itself reports why
                pass
        set_user_attrs(study, trial._trial_id, attrs)
        self._submit(trial, config, attempt)

    def _submit(self, trial: optuna.Trial, config: dict, attempt: int, resubmits: int = 0) -> None:
        spec = self.spec
        key = f"{spec.name}-trial{trial.number}-{uuid.uuid4().hex[:6]}"
        prune_event = f"prune-{key}" if (self._topic and spec.pruner) else None
        future = self.client.submit(run_trial, spec.payload, config, trial_key=key,
                                    report_topic=self._topic, prune_event=prune_event, key=key, pure=False)
        self._inflight[key] = _InFlight(trial, config, future, attempt, key, prune_event, time.time(), resubmits)

    # ------------------------------------------------------------------------------------------ results

    def _drain_reports(self) -> None:
        while True:
            try:
                msg = self._reports.get_nowait()
            except queue.Empty:
                return
            flight = self._inflight.get(msg.get("key"))
            if flight is None:
                continue
            try:
                flight.trial.report(msg["value"], msg["epoch"])
                if flight.prune_event and flight.trial.should_prune():
                    Event(flight.prune_event, client=self.client).set()
            except Exception:  # a late report of a trial already told; nothing to do
                pass

    def _finish(self, flight: _InFlight) -> None:
        future, trial = flight.future, flight.trial
        self._trials_told += 1
        if flight.prune_event:
            try:
                Event(flight.prune_event, client=self.client).clear()
            except Exception:
                pass
        result = None
        if future.status == "finished":
            try:
                result = future.result(timeout=60)
            except Exception as exc:
                reason = f"lost the result: {type(exc).__name__}: {exc}"
        else:
            try:
                exc = future.exception(timeout=60)
                reason = f"worker lost: {type(exc).__name__}: {exc}"
            except Exception as exc2:  # cancelled futures raise here
                exc, reason = exc2, f"worker lost: {type(exc2).__name__}: {exc2}"
            if self._killed_by_our_restart(exc, flight.key) and flight.resubmits < _MAX_RESUBMITS:
                # Another trial's CUDA error made us restart the worker this one was queued or running on:
                # not this trial's fault, so it runs again as the same trial and keeps its attempt count.
                set_user_attrs(self.study, trial._trial_id, {"resubmitted": flight.resubmits + 1})
                self._submit(trial, flight.config, flight.attempt, flight.resubmits + 1)
                return
        if result is None:
            self._fail_infra(trial._trial_id, trial.number, flight.attempt, reason, params=trial.params)
            return
        self._set_attrs(trial, result)
        status = result["status"]
        if status == "cuda-error":
            self._fail_infra(trial._trial_id, trial.number, flight.attempt, f"CUDA error: {result['reason']}",
                             params=trial.params)
            self._restart_worker(result.get("worker"))
        elif status == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        elif status == "ok":
            metrics = result.get("metrics") or {}
            values = [metrics.get(m) for m in self.spec.metric_names]
            bad = [m for m, v in zip(self.spec.metric_names, values)
                   if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)]
            if bad:
                set_user_attrs(self.study, trial._trial_id,
                               {"fail_reason": f"objective metric(s) {', '.join(bad)} missing or not finite"})
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, values)
                self._update_best()
        else:  # diverged, error
            set_user_attrs(self.study, trial._trial_id, {"fail_reason": f"{status}: {result.get('reason')}"})
            self.study.tell(trial, state=TrialState.FAIL)

    def _set_attrs(self, trial: optuna.Trial, result: dict) -> None:
        attrs = {}
        for key, value in (result.get("metrics") or {}).items():
            if key in _SKIP:
                continue
            if key in _CURVES or isinstance(value, (bool, int, float, str)) or value is None:
                attrs[key] = value
        for key in ("worker", "host", "pid", "started_at", "finished_at", "gpu_uuid", "pinned_gpu",
                    "pinned_gpu_uuid", "traceback"):
            if result.get(key) is not None:
                attrs[key] = result[key]
        set_user_attrs(self.study, trial._trial_id, attrs)

    def _update_best(self) -> None:
        if self.spec.multi_objective:
            n = len(self.study.best_trials)
            self._best = f"{n} on the Pareto front"
        else:
            best = self.study.best_value
            self._best = f"{self.spec.metric_names[0]}={best:.4g}"

    def _fail_infra(self, trial_id: int, number: int, attempt: int, reason: str, params: dict | None = None) -> None:
        """A platform fault: FAIL, and queue a rerun with the same parameters while retries are left."""
        gave_up = attempt > self.spec.max_retries
        attrs = {"fail_reason": reason + (f" (gave up after {attempt} attempts)" if gave_up else ""),
                 "infra_fault": True, "gave_up": gave_up, "attempt": attempt}
        set_user_attrs(self.study, trial_id, attrs)
        self.study.tell(number, state=TrialState.FAIL)
        if not gave_up and params is not None:
            frozen = self.study._storage.get_trial(trial_id)
            self._retry_queue.append((frozen, attempt + 1))

    def _killed_by_our_restart(self, exc: BaseException | None, key: str) -> bool:
        worker = getattr(exc, "last_worker", None) if isinstance(exc, KilledWorker) else None
        return key in self._restarted.get(getattr(worker, "address", None), ())

    def _restart_worker(self, address: str | None) -> None:
        if not address:
            return
        # Before the restart: only a trial already in flight can be killed by it (a later death is its own).
        self._restarted[address] = set(self._inflight)
        try:  # a CUDA error leaves the worker's context unusable: give it a fresh process
            self.client.restart_workers([address], timeout=120, raise_for_error=False)
        except Exception as exc:
            self.notes.append(f"could not restart worker {address}: {exc}")

    def _interrupt(self, reason: str) -> None:
        """Ctrl-C: cancel what runs and tell those trials FAIL; the next `sweep run` reruns them."""
        for flight in list(self._inflight.values()):
            try:
                flight.future.cancel()
            except Exception:
                pass
            try:
                self._fail_infra(flight.trial._trial_id, flight.trial.number, flight.attempt, reason)
            except Exception as exc:
                print(f"could not mark trial {flight.trial.number} FAIL: {exc}", file=self.out)
        self._inflight.clear()
        # The signal may have arrived between `ask` and the submit: this driver is the study's only writer, so
        # any trial still RUNNING is one of its own.
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                self._fail_infra(t._trial_id, t.number, t.user_attrs.get("attempt", 1), reason)
            except Exception as exc:
                print(f"could not mark trial {t.number} FAIL: {exc}", file=self.out)


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def run_sweep(spec: SweepSpec, client, storage_url: str, *, n_trials: int | None = None,
              progress: bool = False) -> RunResult:
    """Run (or resume) a sweep on an existing Dask client; for library use and tests."""
    runner = SweepRunner(spec, storage_url, n_trials=n_trials, progress=progress)
    runner.prepare()
    return runner.run(client)
