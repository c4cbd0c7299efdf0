"""`bench status`: what every study of a storage holds right now, read without writing anything.

One row per study: runs queued, running (each with host, pid, epoch and the age of its last
heartbeat), finished, failed and pruned. A queue study (`queue/D/P`) is shown in the row of the runs
study it feeds (`runs/D/P`): its waiting trials are that row's queued runs. In a runs study a run
counts as failed only while nothing superseded its failure: a later record that finished, a claim
that is running, or the run waiting in the queue again (a run whose worker died and that another
worker resumed is not a failure). Other studies (an Optuna search, anything else) are counted by
trial state.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import optuna
from optuna.trial import FrozenTrial, TrialState
from vae_collapse_bench.bench.errors import unknown
from vae_collapse_bench.bench.queue import QUEUE_PREFIX, RUNS_PREFIX


@dataclass
class Running:
    run: str
    host: str | None
    pid: int | None
    epoch: int | None
    heartbeat_age_s: float | None  # None: no heartbeat recorded yet


@dataclass
class StudyStatus:
    study: str
    queued: int = 0
    running: int = 0
    finished: int = 0
    failed: int = 0
    pruned: int = 0
    running_runs: list[Running] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)  # {"run": label, "reason": ...}

    def as_dict(self) -> dict:
        return asdict(self)


def storage_status(storage: optuna.storages.BaseStorage, study: str | None = None,
                   now: float | None = None) -> list[StudyStatus]:
    """The rows of `bench status`, sorted by study name; only `study`'s with a name (a runs or a queue
    study name selects the same row). An unknown name is a BenchError listing the known ones."""
    now = time.time() if now is None else now
    names = optuna.get_all_study_names(storage)
    rows: dict[str, tuple[str | None, str | None]] = {}  # row name -> (main study, queue study)
    for name in names:
        if name.startswith(QUEUE_PREFIX):
            row = RUNS_PREFIX + name.removeprefix(QUEUE_PREFIX)
            rows[row] = (rows.get(row, (None, None))[0], name)
        else:
            rows[name] = (name, rows.get(name, (None, None))[1])
    if study is not None:
        row = RUNS_PREFIX + study.removeprefix(QUEUE_PREFIX) if study.startswith(QUEUE_PREFIX) else study
        if row not in rows:
            raise unknown("study", study, names)
        rows = {row: rows[row]}

    def trials(name):
        return storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False) if name else []

    out = []
    for row, (main, queue) in sorted(rows.items()):
        queued = trials(queue)
        if row.startswith(RUNS_PREFIX):
            out.append(_runs_row(row, trials(main), queued, now))
        else:
            out.append(_trials_row(row, trials(main), now))
    return out


def _label(t: FrozenTrial) -> str:
    a = t.user_attrs
    if "method" in a and "seed" in a:
        return f"{a['method']}[{a.get('setting', '-')}] seed {a['seed']}"
    params = ",".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
    return f"trial {t.number}" + (f" [{params}]" if params else "")


def _running(t: FrozenTrial, now: float) -> Running:
    a = t.user_attrs
    epoch = a.get("epoch")
    if epoch is None and t.intermediate_values:  # an Optuna search reports per-epoch values by step
        epoch = max(t.intermediate_values)
    beat = a.get("heartbeat_at")
    return Running(_label(t), a.get("host"), a.get("pid"), epoch,
                   None if beat is None else max(0.0, now - float(beat)))


def _runs_row(name: str, runs: list[FrozenTrial], queued: list[FrozenTrial], now: float) -> StudyStatus:
    row = StudyStatus(name)
    waiting = [t for t in queued if t.state == TrialState.WAITING]
    row.queued = len(waiting)
    live_keys = {t.user_attrs.get("eval_key") for t in waiting}
    for t in runs:
        if t.state == TrialState.RUNNING:
            row.running_runs.append(_running(t, now))
            live_keys |= {t.user_attrs.get("eval_key"), t.user_attrs.get("training_key")}
        elif t.state == TrialState.COMPLETE:
            row.finished += 1
            live_keys.add(t.user_attrs.get("eval_key"))
    row.running = len(row.running_runs)
    live_keys.discard(None)
    failed: dict[str, FrozenTrial] = {}  # the latest failure of each run, unless superseded
    for t in runs:
        a = t.user_attrs
        if t.state == TrialState.FAIL and not a.get("claim_lost"):
            key = a.get("eval_key") or a.get("claim") or str(t.number)
            if key not in live_keys and a.get("training_key") not in live_keys:
                failed[key] = t
    row.failed = len(failed)
    row.failures = [{"run": _label(t), "reason": t.user_attrs.get("fail_reason", "unknown")} for t in failed.values()]
    return row


def _trials_row(name: str, trials: list[FrozenTrial], now: float) -> StudyStatus:
    row = StudyStatus(name)
    for t in trials:
        if t.state == TrialState.WAITING:
            row.queued += 1
        elif t.state == TrialState.RUNNING:
            row.running_runs.append(_running(t, now))
        elif t.state == TrialState.COMPLETE:
            row.finished += 1
        elif t.state == TrialState.PRUNED:
            row.pruned += 1
        elif t.state == TrialState.FAIL and not t.user_attrs.get("claim_lost"):
            row.failed += 1
            row.failures.append({"run": _label(t), "reason": t.user_attrs.get("fail_reason", "unknown")})
    row.running = len(row.running_runs)
    return row
