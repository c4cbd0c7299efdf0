"""`bench worker`: takes queued runs (`bench.queue`) from the storage until none is left.

A worker serves every queue of the storage (or the ones it is given), oldest run first. Each run goes
through the Runner exactly as in `bench run`: claimed in its runs study before any work, resumed from
last.pt, evaluated, stored; a run that raises or diverges is stored as failed with its reason and the
worker goes on. The queue trial keeps a heartbeat while the run works, so a worker that dies is
noticed (`RunQueue.requeue_dead`) and its run queued again for the next one.

`bench run --workers K` starts K local workers (`start_local_workers`) on one storage. Each worker
sets torch to one intra-op thread unless told otherwise: K processes with K threads each on K cores
oversubscribe them and slow each other 5-50x; and the numbers depend on the thread count, so a run
gives the same numbers whichever worker trains it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from vae_collapse_bench.bench import data
from vae_collapse_bench.bench.config import get_profile
from vae_collapse_bench.bench.data import Corpus
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.queue import QUEUE_PREFIX, QueuedRun, RunQueue
from vae_collapse_bench.bench.runner import Reporter, Runner, RunOutcome, RunSpec
from vae_collapse_bench.bench.store import Heartbeat, RunStore


@dataclass(frozen=True)
class WorkerOptions:
    results_dir: Path
    device: str = "cpu"
    max_runs: int | None = None  # stop after taking this many runs
    until_empty: bool = False  # stop once no run is queued or in flight; else wait for more
    poll_s: float = 5.0  # how often an idle worker looks at the queue again
    queues: tuple[str, ...] | None = None  # queue study names to serve (None: every queue)


class Worker:
    """The loop of one worker process (module docstring)."""

    def __init__(self, storage: optuna.storages.BaseStorage, options: WorkerOptions, reporter: Reporter):
        self.storage, self.options, self.reporter = storage, options, reporter
        self._corpora: dict[str, Corpus] = {}

    def queues(self) -> list[RunQueue]:
        names = self.options.queues
        if names is None:
            names = tuple(n for n in optuna.get_all_study_names(self.storage) if n.startswith(QUEUE_PREFIX))
        existing = set(optuna.get_all_study_names(self.storage))
        return [RunQueue.from_name(self.storage, n) for n in sorted(names) if n in existing]

    def serve(self) -> list[RunOutcome]:
        """Take and run queued runs until --max-runs are taken or, with --until-empty, none is queued
        or in flight; the outcomes of the runs this worker took."""
        outcomes: list[RunOutcome] = []
        max_runs = self.options.max_runs
        while max_runs is None or len(outcomes) < max_runs:
            queues = self.queues()
            for queue in queues:
                queue.requeue_dead()
            taken = next(((q, item) for q in queues if (item := q.take()) is not None), None)
            if taken is None:
                if self.options.until_empty and not any(q.live() for q in queues):
                    break
                time.sleep(self.options.poll_s)
                continue
            outcomes.append(self._work(*taken, index=len(outcomes)))
        return outcomes

    def _work(self, queue: RunQueue, item: QueuedRun, index: int) -> RunOutcome:
        with Heartbeat(self.storage, item.trial_id):
            try:
                outcome = self._run(item, index)
            except BaseException as exc:  # interrupted (Ctrl-C, SIGTERM): the next worker takes the run
                queue.give_back(item, f"its worker stopped: {type(exc).__name__} {exc}".strip())
                raise
            queue.finish(item, outcome)
        return outcome

    def _run(self, item: QueuedRun, index: int) -> RunOutcome:
        spec = item.spec
        try:
            runner = self._runner(item)
        except BenchError as exc:  # e.g. the data is missing on this machine: the run fails, the worker goes on
            outcome = RunOutcome(spec, "failed", reason=f"on {os.uname().nodename}: {exc}")
            self.reporter.run_finished(outcome)
            return outcome
        while True:
            outcome = runner.run(spec, index, index + 1)
            if outcome.status != "skipped":
                return outcome
            # Claimed by a live process elsewhere (a plain `bench run`, or a worker whose death is not
            # yet stale): wait for it to finish, or to be found dead and taken over here.
            time.sleep(self.options.poll_s)

    def _runner(self, item: QueuedRun) -> Runner:
        a, spec = item.attrs, item.spec
        if spec.dataset not in self._corpora:
            self._corpora[spec.dataset] = data.load_corpus(spec.dataset)
        corpus = self._corpora[spec.dataset]
        store = RunStore(self.storage, spec.dataset, spec.profile)
        runner = Runner(store, corpus, get_profile(spec.profile), self.options.results_dir, self.options.device,
                        self.reporter, retry_failed=bool(a.get("retry_failed")))
        if corpus.checksum != a.get("data_checksum"):
            raise BenchError(f"the data of {spec.dataset} here (checksum {corpus.checksum[:12]}) differs from "
                             f"where the run was queued ({str(a.get('data_checksum'))[:12]}): give every worker "
                             "the same data")
        if runner.identity(spec).eval_key != a.get("eval_key"):
            raise BenchError(f"this worker's bench {a.get('queued_by', {}).get('bench', '?')} would train another "
                             "run than the one queued: run the same bench version on every worker")
        return runner


def set_threads(threads: int) -> None:
    """torch's intra-op threads for this process (the numbers depend on it; provenance records it)."""
    import torch

    torch.set_num_threads(threads)


def die_with_parent(parent_pid: int) -> None:
    """Linux: this process receives SIGTERM when its parent dies (a `bench run --workers K` or `bench
    search --workers K` that was killed takes its workers with it: a run goes back to the queue, a
    trial is failed and retried from its checkpoint). Elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def start_local_workers(count: int, results_dir: Path, storage_url: str | None, study: str, device: str,
                        threads: int, quiet: bool) -> list[subprocess.Popen]:
    """`count` worker processes (`bench worker --until-empty`) on this machine serving `study`'s queue.
    The storage URL travels in the environment, not on the command line (`ps` would show a password)."""
    env = dict(os.environ, BENCH_WORKER_PARENT=str(os.getpid()))
    if storage_url:
        env["BENCH_STORAGE"] = storage_url
    argv = [sys.executable, "-m", "vae_collapse_bench", "worker", "--until-empty", "--results", str(results_dir),
            "--study", study, "--device", device, "--threads", str(threads), "--poll", "1"]
    if quiet:
        argv.append("--quiet")
    return [subprocess.Popen(argv, env=env) for _ in range(count)]


def wait_workers(workers: list[subprocess.Popen]) -> list[int]:
    """The exit codes of the local workers (of `bench run` or `bench search --workers K`). Interrupted
    here, they are stopped too (SIGTERM: as with die_with_parent) before the interrupt goes on."""
    try:
        return [w.wait() for w in workers]
    except BaseException:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait()
        raise


def sweep_outcomes(runner: Runner, specs: list[RunSpec], known: list[RunOutcome]) -> list[RunOutcome]:
    """After the workers of `bench run --workers K` ended: each run's outcome as the storage holds it.
    `known` are the outcomes found before anything was queued (cached, or failed before)."""
    before = {o.spec: o for o in known}
    outcomes = []
    for spec in specs:
        if spec in before:
            outcomes.append(before[spec])
            continue
        ident = runner.identity(spec)
        if (done := runner.store.evaluated(ident.eval_key)) is not None:
            outcomes.append(RunOutcome(spec, "done", done.user_attrs.get("metrics"), run_key=ident.training_key))
        elif (failed := runner.store.failed(ident.training_key, ident.eval_key)) is not None:
            outcomes.append(RunOutcome(spec, "failed", reason=failed.user_attrs.get("fail_reason", "unknown"),
                                       run_key=ident.training_key))
        else:
            outcomes.append(RunOutcome(spec, "failed", reason="not finished: its worker stopped before it (run the "
                                       "same command again to finish it)", run_key=ident.training_key))
    return outcomes
