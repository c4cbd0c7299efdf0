"""The run queue (design.md §8): runs waiting for workers, as Optuna trials on the run storage.

`bench run --enqueue-only` adds one WAITING trial per run (Optuna's `enqueue_trial`) to the study
`queue/<dataset>/<profile>`, beside the study `runs/<dataset>/<profile>` that will hold the result.
A worker takes one through Optuna's own WAITING -> RUNNING transition: `set_trial_state_values`
returns True to exactly one process (a row lock on RDB storages; on the journal file, the order of
the records). It then runs it with the Runner, which claims the run in the runs study before any
work, so a queued run is never trained twice, not even beside a plain `bench run`; the queue trial
ends COMPLETE with the run's priorLL, or FAIL with the run's failure reason.

A taken trial carries its worker's host and pid and a heartbeat (`store.Heartbeat`). When the worker
dies (a dead pid on this host; on an RDB storage a heartbeat older than the grace period, whatever
the host) the trial is failed and a copy is queued again (`requeue`, at most MAX_REQUEUES times):
the next worker takes it, and the run resumes from its checkpoint when the results folder is shared.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState
from vae_collapse_bench.bench.runner import Runner, RunOutcome, RunSpec
from vae_collapse_bench.bench.store import fail_dead_workers, heartbeat_settings, mark_failed

from vae_collapse_bench import __version__

QUEUE_PREFIX = "queue/"
RUNS_PREFIX = "runs/"
# A run whose worker died this many times is not queued again by itself: something kills whatever
# runs it (memory, a node's time limit); `bench run --enqueue-only` queues it again on purpose.
MAX_REQUEUES = 5
# What a queued trial carries over to its requeued copy: the run and where it was queued from.
SPEC_ATTRS = ("queued", "dataset", "profile", "method", "params", "setting", "seed", "training_key", "eval_key",
              "data_checksum", "retry_failed", "queued_by", "queued_at")


def queue_name(dataset: str, profile: str) -> str:
    return f"{QUEUE_PREFIX}{dataset}/{profile}"


def queue_of(study: str) -> str:
    """The queue study of a runs study (`runs/D/P` -> `queue/D/P`); a queue study is its own."""
    return QUEUE_PREFIX + study.removeprefix(RUNS_PREFIX) if study.startswith(RUNS_PREFIX) else study


@dataclass
class QueuedRun:
    """One taken queue trial: the run it asks for and what the enqueuing process computed for it."""

    trial_id: int
    number: int
    spec: RunSpec
    attrs: dict[str, Any]


@dataclass
class Enqueued:
    """What `enqueue` did with each run of a sweep."""

    queued: list[RunSpec] = field(default_factory=list)
    already_queued: list[RunSpec] = field(default_factory=list)
    known: list[RunOutcome] = field(default_factory=list)  # cached, or failed before: not queued


class RunQueue:
    """The queue study of one (dataset, profile); see the module docstring."""

    def __init__(self, storage: optuna.storages.BaseStorage, dataset: str, profile: str, create: bool = True):
        self.storage, self.dataset, self.profile = storage, dataset, profile
        self.name = queue_name(dataset, profile)
        if create:  # COMPLETE queue trials carry the run's priorLL (maximised, as in the runs study)
            self.study = optuna.create_study(storage=storage, study_name=self.name, direction="maximize",
                                             load_if_exists=True)
        else:
            self.study = optuna.load_study(storage=storage, study_name=self.name)

    @classmethod
    def from_name(cls, storage, name: str) -> RunQueue:
        dataset, _, profile = name.removeprefix(QUEUE_PREFIX).rpartition("/")
        return cls(storage, dataset, profile, create=False)

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    # --- enqueuing --------------------------------------------------------------------------------
    def enqueue(self, runner: Runner, specs: list[RunSpec], retry_failed: bool = False) -> Enqueued:
        """Queue every run of `specs` that is neither finished (cached), nor failed before (unless
        retry_failed), nor queued or taken already. Queued runs of dead workers are queued again
        first, so a sweep restarted after a crash queues nothing twice."""
        self.requeue_dead()
        pending = {t.user_attrs.get("eval_key") for t in self.trials((TrialState.WAITING, TrialState.RUNNING))}
        done = Enqueued()
        by = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv)}
        for spec in specs:
            if (known := runner.known(spec)) is not None:
                done.known.append(known)
                continue
            ident = runner.identity(spec)
            if ident.eval_key in pending:
                done.already_queued.append(spec)
                continue
            pending.add(ident.eval_key)
            self.study.enqueue_trial({}, user_attrs={
                "queued": True, "dataset": spec.dataset, "profile": spec.profile, "method": spec.method,
                "params": spec.params_dict, "setting": spec.setting, "seed": spec.seed,
                "training_key": ident.training_key, "eval_key": ident.eval_key,
                "data_checksum": runner.full_corpus.checksum, "retry_failed": retry_failed,
                "queued_by": {**by, "bench": __version__}, "queued_at": time.time(),
            })
            done.queued.append(spec)
        return done

    # --- taking and finishing ---------------------------------------------------------------------
    def take(self) -> QueuedRun | None:
        """Take the oldest waiting run for this process, or None when none is waiting."""
        for t in self.trials((TrialState.WAITING,)):
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    continue  # another worker took it first
            except UpdateFinishedTrialError:
                continue
            now = time.time()
            for key, value in {"host": socket.gethostname(), "pid": os.getpid(), "taken_at": now,
                               "heartbeat_at": now}.items():
                self.storage.set_trial_user_attr(t._trial_id, key, value)
            a = t.user_attrs
            spec = RunSpec(a["dataset"], a["profile"], a["method"], tuple(sorted(a["params"].items())), a["seed"])
            return QueuedRun(t._trial_id, t.number, spec, dict(a))
        return None

    def finish(self, item: QueuedRun, outcome: RunOutcome) -> None:
        """End a taken trial with its run's outcome: COMPLETE with priorLL, or FAIL with the reason."""
        self.storage.set_trial_user_attr(item.trial_id, "outcome", outcome.status)
        if outcome.status in ("done", "evaluated", "cached"):
            self.storage.set_trial_state_values(item.trial_id, TrialState.COMPLETE,
                                                [outcome.metrics["priorLL"]])
        else:
            self.fail(item, outcome.reason)

    def fail(self, item: QueuedRun, reason: str) -> None:
        self.storage.set_trial_user_attr(item.trial_id, "fail_reason", reason)
        self.storage.set_trial_state_values(item.trial_id, TrialState.FAIL)

    def give_back(self, item: QueuedRun, reason: str) -> None:
        """This worker stops before the run ends (interrupted): the run is queued again at once."""
        self.fail(item, reason)
        requeue(self.study, self.storage.get_trial(item.trial_id), reason)

    # --- dead workers -----------------------------------------------------------------------------
    def requeue_dead(self) -> None:
        """Fail and queue again the taken runs whose worker is gone (module docstring). Also a trial
        taken by a worker that died before it wrote its host and pid: RUNNING without a heartbeat
        for longer than the grace period (judged by the taker's clock, which stamped its start)."""
        for t in fail_dead_workers(self.study, "its worker died"):
            requeue(self.study, t, f"its worker {t.user_attrs.get('host')} pid {t.user_attrs.get('pid')} died")
        grace = timedelta(seconds=heartbeat_settings()[1])
        for t in self.trials((TrialState.RUNNING,)):
            if "heartbeat_at" not in t.user_attrs and t.datetime_start and datetime.now() - t.datetime_start > grace:
                reason = "its worker died before its first heartbeat"
                if mark_failed(self.storage, t, reason):
                    requeue(self.study, t, reason)

    def live(self) -> int:
        """Runs waiting or taken: what a worker started with --until-empty waits for."""
        return len(self.trials((TrialState.WAITING, TrialState.RUNNING)))


def requeue(study: optuna.Study, dead: FrozenTrial, reason: str) -> None:
    """Queue a copy of a taken trial whose worker died (or gave it back), noting why; after
    MAX_REQUEUES deaths the run stays failed and the note says so."""
    a = dead.user_attrs
    label = f"{a.get('method')}[{a.get('setting')}] seed {a.get('seed')}"
    count = a.get("requeues", 0) + 1
    if count > MAX_REQUEUES:
        print(f"note: {study.study_name} #{dead.number} {label}: {reason}; its workers died {count} times, so it "
              "is not queued again (`bench run ... --enqueue-only` queues it again)", file=sys.stderr)
        return
    copy = {k: a[k] for k in SPEC_ATTRS if k in a}
    study.enqueue_trial({}, user_attrs={**copy, "requeues": count, "requeue_of": dead.number,
                                        "requeued_because": reason})
    print(f"note: {study.study_name} #{dead.number} {label}: {reason}; queued again", file=sys.stderr)
