"""Runs on Optuna storage (design.md §8): storage URLs, run keys, caching, provenance.

Every evaluated run is one trial of the study `runs/<dataset>/<profile>`; the trial's user_attrs carry
the training key, the evaluation key, method, hyperparameters, seed, metrics and provenance (see
`RunStore`). The value is priorLL (maximised).
The embedded default is a journal file under the results directory (safe for several local
processes); any SQLAlchemy URL selects an RDB storage shared by many machines.
"""

from __future__ import annotations

import os
import platform
import re
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState, create_trial
from vae_collapse_bench.bench.errors import BenchError, quote
from vae_collapse_bench.bench.journal import open_journal

from vae_collapse_bench import __version__

optuna.logging.set_verbosity(optuna.logging.WARNING)

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_storage(url: str | None, results_dir: Path, read_only: bool = False) -> optuna.storages.BaseStorage:
    """`None` -> $BENCH_STORAGE or the journal file `<results>/optuna.journal`.

    Accepted: a journal file path (`*.journal`, `*.log`, or `journal:PATH`) or an RDB URL
    (`sqlite:///file.db`, `postgresql://user@host/db`, ...). Anything else, or a storage that cannot be
    reached, is a BenchError naming the fix. A journal is checked on every open (`bench.journal`);
    with read_only it is neither created nor changed.
    """
    url = url or os.environ.get("BENCH_STORAGE") or str(Path(results_dir) / "optuna.journal")
    heartbeat_settings()  # a bad $BENCH_HEARTBEAT_S is refused here, before any run is claimed
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in RDB_SCHEMES:
        return _open_rdb(url)
    if url.startswith("journal:") or (not scheme and url.endswith((".journal", ".log"))):
        return open_journal(Path(url.removeprefix("journal:")), read_only)
    raise BenchError(
        f"malformed --storage {quote(_redact(url))}: give a journal file (results/optuna.journal or "
        "journal:PATH) or an RDB URL such as sqlite:///results/bench.db or postgresql://user@host/db"
    )


def _open_rdb(url: str) -> RDBStorage:
    interval, grace = heartbeat_settings()
    try:
        # A short connect timeout so an unreachable server fails in seconds, not minutes.
        kwargs = {} if url.startswith("sqlite") else {"connect_args": {"connect_timeout": 5}}
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=interval,
                              grace_period=grace, heartbeat_stale_trial_callback=_report_stale)
    except ImportError as exc:  # Optuna re-raises the driver's ModuleNotFoundError as a bare ImportError
        if url.startswith("postgres"):
            raise BenchError(
                f"storage {_redact(url)!r} needs the PostgreSQL driver psycopg 3, which is not installed: "
                "pip install 'vae-collapse-bench[postgres]' (from a checkout: pip install -e '.[postgres]') "
                "and give the URL as postgresql+psycopg://USER@HOST/DB"
            ) from None
        missing = exc.name or getattr(exc.__cause__, "name", None) or "a module"
        raise BenchError(f"storage {_redact(url)!r} needs a database driver that is not installed ({missing}): "
                         f"install the driver SQLAlchemy names for {url.split('://')[0]} URLs") from None
    except Exception as exc:  # SQLAlchemy raises many kinds; the first line is what the user needs
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot reach storage {_redact(url)!r}: {reason[:300]}; "
                         "check host, port, credentials and database name") from None


def _report_stale(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna calls this for each claim it failed for a stale heartbeat: say so, once, on stderr.
    A run taken from the queue (`bench.queue`) is queued again for the next worker."""
    a = trial.user_attrs
    grace = heartbeat_settings()[1]
    if a.get("queued"):
        from vae_collapse_bench.bench.queue import requeue

        requeue(study, trial, f"its worker {a.get('host')} pid {a.get('pid')} sent no heartbeat for {grace} s")
        return
    print(f"note: the run {a.get('method')}[{a.get('setting')}] seed {a.get('seed')} claimed by "
          f"{a.get('host')} pid {a.get('pid')} sent no heartbeat for {grace} s; it is marked "
          "failed and runs again here (from its checkpoint when this machine can read it)", file=sys.stderr)


def package_versions() -> dict[str, str]:
    import numpy
    import pandas
    import torch

    return {
        "bench": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


HEARTBEAT_INTERVAL_S = 60  # a live worker refreshes its claim this often ($BENCH_HEARTBEAT_S)
GRACE_PERIOD_S = 180  # RDB: a claim whose heartbeat is older than this is failed ($BENCH_STALE_AFTER_S)


def heartbeat_settings() -> tuple[int, int]:
    """(heartbeat interval, grace period) in whole seconds (Optuna's RDB heartbeat takes integers):
    the defaults above, or $BENCH_HEARTBEAT_S and $BENCH_STALE_AFTER_S. The grace period must exceed
    the interval, or a live worker between two beats would be taken for dead."""
    values = []
    for name, default in (("BENCH_HEARTBEAT_S", HEARTBEAT_INTERVAL_S), ("BENCH_STALE_AFTER_S", GRACE_PERIOD_S)):
        text = os.environ.get(name, "").strip()
        if not text:
            values.append(default)
            continue
        if not text.isdigit() or len(text) > 7 or int(text) < 1:
            raise BenchError(f"${name}={quote(text)}: give whole seconds from 1 to 9999999, or unset it")
        values.append(int(text))
    interval, grace = values
    if grace <= interval:
        raise BenchError(f"$BENCH_STALE_AFTER_S ({grace}) must exceed $BENCH_HEARTBEAT_S ({interval}): a live "
                         "worker between two heartbeats would be taken for dead")
    return interval, grace


class Heartbeat:
    """Keeps a claimed trial's heartbeat fresh while it runs: the user attr `heartbeat_at` (Unix time,
    the worker's clock; what `bench status` shows, on every storage) and, on RDB storages, Optuna's
    own heartbeat (the server's clock; what `fail_stale_trials` judges). A context manager around
    the work of one run."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self._record()
        interval = _heartbeat_interval(self.storage) or heartbeat_settings()[0]
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
        self._thread.start()
        return self

    def _record(self) -> None:
        if _heartbeat_interval(self.storage) is not None:
            self.storage.record_heartbeat(self.trial_id)
        self.storage.set_trial_user_attr(self.trial_id, "heartbeat_at", time.time())

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._record()
            except Exception:  # a transient database error must not kill the run; the next beat retries
                continue

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _heartbeat_interval(storage) -> int | None:
    return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None


class RunStore:
    """The study of one (dataset, profile): look up, claim, finish and fail runs.

    Every trial is one *evaluation record* of one *training run*: its user_attrs carry the
    `training_key` (what was trained: data, backbone, training config, method, params, seed, training
    code version) and the `eval_key` (the training key plus the evaluator's config and version), so
    re-evaluating a stored checkpoint adds a trial with the same training key and never retrains.

    Claims: before any work a process creates a RUNNING trial carrying a `claim` key in ONE storage
    write (`create_new_trial` with a template), then looks for an earlier live claim of the same key.
    Trial ids are assigned in write order, so of two processes that claim at once exactly one sees
    no earlier claim; the other marks its trial lost (`claim_lost`, not a failure) and moves on.
    Nothing but the winner touches the run's checkpoint folder.

    Dead claims: a RUNNING trial of a dead process on this host is failed (pid check; the journal
    file has no heartbeat). On RDB storages each claim keeps a heartbeat and Optuna's
    `fail_stale_trials` fails claims whose heartbeat is older than the grace period, whatever host
    they came from.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, dataset: str, profile: str,
                 create: bool = True):
        self.dataset, self.profile = dataset, profile
        self.storage = storage
        name = study_name(dataset, profile)
        if create:
            self.study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                             load_if_exists=True)
        else:
            self.study = optuna.load_study(storage=storage, study_name=name)

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def _with(self, attr: str, key: str, state: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials((state,)) if t.user_attrs.get(attr) == key]

    def evaluated(self, eval_key: str) -> FrozenTrial | None:
        """The finished evaluation record with this eval key (the latest, should there be two), if it
        is whole (a repaired store may hold a finished trial that lost its metrics)."""
        done = [t for t in self._with("eval_key", eval_key, TrialState.COMPLETE) if "metrics" in t.user_attrs]
        return done[-1] if done else None

    def trained(self, training_key: str) -> FrozenTrial | None:
        """The latest finished record of this training run whose best.pt still exists."""
        for t in reversed(self._with("training_key", training_key, TrialState.COMPLETE)):
            if "history" in t.user_attrs and (Path(t.user_attrs.get("checkpoint_dir", "")) / "best.pt").exists():
                return t
        return None

    def failed(self, training_key: str, eval_key: str) -> FrozenTrial | None:
        """A deterministic failure of this run: training diverged (any evaluator), or this very
        evaluation gave a non-finite metric. Such runs are not retried without --retry-failed."""
        for t in reversed(self.trials((TrialState.FAIL,))):
            a = t.user_attrs
            if not a.get("diverged"):
                continue
            if a.get("eval_key") == eval_key or (a.get("training_key") == training_key
                                                 and a.get("failed_stage") == "training"):
                return t
        return None

    def interrupted(self, training_key: str) -> FrozenTrial | None:
        """The latest claim of this training run that died after finishing an epoch (its worker was
        killed or went silent): the run should resume from that epoch's checkpoint."""
        for t in reversed(self.trials((TrialState.FAIL,))):
            a = t.user_attrs
            if (a.get("training_key") == training_key and not a.get("claim_lost") and not a.get("diverged")
                    and a.get("epoch", 0) >= 1):
                return t
        return None

    def fail_stale(self) -> None:
        """Fail RUNNING trials whose worker is gone: dead local pids, and (RDB) stale heartbeats."""
        fail_dead_workers(self.study, "worker process died; the run resumes from its checkpoint")

    def claim(self, key: str, attrs: dict[str, Any]) -> optuna.Trial | FrozenTrial:
        """Claim `key` for this process. Returns an optuna.Trial to work on, or the FrozenTrial of
        the live claim that got there first (then this process must leave the run alone)."""
        self.fail_stale()
        import torch
        from vae_collapse_bench.bench import RUNTIME

        # intra-op threads change the order of float reductions, hence the numbers: same seed, same
        # machine and same thread count give the same result
        base = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
                "versions": package_versions(), "torch_threads": torch.get_num_threads(), "claim": key,
                "runtime": RUNTIME}  # bench.runtime: allocator and OpenMP waiting (speed, not numbers)
        template = create_trial(state=TrialState.RUNNING, user_attrs={**base, **attrs})
        trial_id = self.storage.create_new_trial(self.study._study_id, template_trial=template)
        earlier = [t for t in self._with("claim", key, TrialState.RUNNING) if t._trial_id < trial_id]
        if earlier:
            self.storage.set_trial_user_attr(trial_id, "claim_lost", True)
            self.storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
            return earlier[0]
        return optuna.Trial(self.study, trial_id)

    def heartbeat(self, trial: optuna.Trial) -> Heartbeat:
        return Heartbeat(self.storage, trial._trial_id)

    def release(self, trial: optuna.Trial) -> None:
        """Give a claim up without a result (someone else finished the same work meanwhile)."""
        trial.set_user_attr("claim_lost", True)
        self.study.tell(trial, state=TrialState.FAIL)

    def complete(self, trial: optuna.Trial, value: float, attrs: dict[str, Any]) -> None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        self.study.tell(trial, value)

    def fail(self, trial: optuna.Trial, reason: str, diverged: bool = False, stage: str = "") -> None:
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("diverged", diverged)
        if stage:
            trial.set_user_attr("failed_stage", stage)
        self.study.tell(trial, state=TrialState.FAIL)



def fail_dead_workers(study: optuna.Study, reason: str) -> list[FrozenTrial]:
    """Fail the RUNNING trials of `study` whose worker is gone: on RDB storages those whose heartbeat
    is older than the grace period, whatever their host (Optuna's `fail_stale_trials`, which calls
    `_report_stale` for each); everywhere those of a dead pid on this host. Returns the trials of
    dead local pids that this process failed (of two processes that look at once, one fails each)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        fail_stale_trials(study)
    host, failed = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        a = t.user_attrs
        if a.get("host") == host and not _process_alive(int(a.get("pid", -1))):
            if mark_failed(study._storage, t, reason):
                failed.append(t)
    return failed


def mark_failed(storage: optuna.storages.BaseStorage, frozen: FrozenTrial, reason: str) -> bool:
    """Fail a trial of another process; False when it was finished first (by its owner or another
    process: the journal and the RDB storage both refuse a second finish)."""
    try:
        storage.set_trial_user_attr(frozen._trial_id, "fail_reason", reason)
        storage.set_trial_state_values(frozen._trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def study_name(dataset: str, profile: str) -> str:
    return f"runs/{dataset}/{profile}"
