"""Runs on Optuna storage (design.md §8): storage URLs, run keys, caching, provenance.

Every run is one trial of the study `runs/<dataset>/<profile>`; the trial's user_attrs carry the run
key, method, hyperparameters, seed, metrics and provenance. The value is priorLL (maximised).
The embedded default is a journal file under the results directory (safe for several local
processes); any SQLAlchemy URL selects an RDB storage shared by many machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import sys
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

import bench
from bench.errors import BenchError

optuna.logging.set_verbosity(optuna.logging.WARNING)

RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def _redact(url: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def open_storage(url: str | None, results_dir: Path) -> optuna.storages.BaseStorage:
    """`None` -> $BENCH_STORAGE or the journal file `<results>/optuna.journal`.

    Accepted: a journal file path (`*.journal`, `*.log`, or `journal:PATH`) or an RDB URL
    (`sqlite:///file.db`, `postgresql://user@host/db`, ...). Anything else, or a storage that cannot be
    reached, is a BenchError naming the fix.
    """
    url = url or os.environ.get("BENCH_STORAGE") or str(Path(results_dir) / "optuna.journal")
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in RDB_SCHEMES:
        return _open_rdb(url)
    if url.startswith("journal:") or (not scheme and url.endswith((".journal", ".log"))):
        return _open_journal(Path(url.removeprefix("journal:")))
    raise BenchError(
        f"malformed --storage {_redact(url)!r}: give a journal file (results/optuna.journal or "
        "journal:PATH) or an RDB URL such as sqlite:///results/bench.db or postgresql://user@host/db"
    )


def _open_journal(path: Path) -> JournalStorage:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise BenchError(f"cannot write the journal storage {path}: {exc.strerror}; "
                         "choose a writable --results directory or --storage path") from None
    return JournalStorage(JournalFileBackend(str(path)))


def _open_rdb(url: str) -> RDBStorage:
    try:
        # A short connect timeout so an unreachable server fails in seconds, not minutes.
        kwargs = {} if url.startswith("sqlite") else {"connect_args": {"connect_timeout": 5}}
        return RDBStorage(url, engine_kwargs=kwargs)
    except ModuleNotFoundError as exc:
        raise BenchError(f"storage {_redact(url)!r} needs the database driver {exc.name!r}: "
                         f"pip install {exc.name}") from None
    except Exception as exc:  # SQLAlchemy raises many kinds; the first line is what the user needs
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"cannot reach storage {_redact(url)!r}: {reason[:300]}; "
                         "check host, port, credentials and database name") from None


def bench_version() -> str:
    return bench.__version__


def package_versions() -> dict[str, str]:
    import numpy
    import pandas
    import torch

    return {
        "bench": bench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
        "pandas": pandas.__version__,
    }


def run_key(identity: dict[str, Any]) -> str:
    """Hash of (dataset + data checksum, resolved profile, method, resolved params, seed, bench
    major.minor). A finished run with the same key is never trained again."""
    major_minor = ".".join(bench_version().split(".")[:2])
    payload = json.dumps({**identity, "bench": major_minor}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """The study of one (dataset, profile): look up, start, finish and fail runs by run key."""

    def __init__(self, storage: optuna.storages.BaseStorage, dataset: str, profile: str):
        self.dataset, self.profile = dataset, profile
        self.study = optuna.create_study(
            storage=storage, study_name=f"runs/{dataset}/{profile}", direction="maximize",
            load_if_exists=True,
        )

    def trials(self, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=states)

    def _with_key(self, key: str, state: TrialState) -> list[FrozenTrial]:
        return [t for t in self.trials((state,)) if t.user_attrs.get("run_key") == key]

    def completed(self, key: str) -> FrozenTrial | None:
        done = self._with_key(key, TrialState.COMPLETE)
        return done[-1] if done else None

    def failed(self, key: str) -> FrozenTrial | None:
        failed = [t for t in self._with_key(key, TrialState.FAIL) if t.user_attrs.get("diverged")]
        return failed[-1] if failed else None

    def running_elsewhere(self, key: str) -> FrozenTrial | None:
        """A live worker already runs this key. Trials of dead local processes are failed here
        (the journal storage has no heartbeat), so their run resumes from its checkpoint."""
        host = socket.gethostname()
        for t in self._with_key(key, TrialState.RUNNING):
            if t.user_attrs.get("host") == host and not _process_alive(int(t.user_attrs.get("pid", -1))):
                self._mark_failed(t, "worker process died; the run resumes from its checkpoint")
            else:
                return t
        return None

    def begin(self, attrs: dict[str, Any]) -> optuna.Trial:
        trial = self.study.ask()
        base = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.argv),
                "versions": package_versions()}
        for k, v in {**base, **attrs}.items():
            trial.set_user_attr(k, v)
        return trial

    def complete(self, trial: optuna.Trial, value: float, attrs: dict[str, Any]) -> None:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        self.study.tell(trial, value)

    def fail(self, trial: optuna.Trial, reason: str, diverged: bool = False) -> None:
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("diverged", diverged)
        self.study.tell(trial, state=TrialState.FAIL)

    def _mark_failed(self, frozen: FrozenTrial, reason: str) -> None:
        self.study._storage.set_trial_user_attr(frozen._trial_id, "fail_reason", reason)
        self.study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
