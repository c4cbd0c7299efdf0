"""`bench store import FILE`: the runs of an export (a published board's runs.jsonl, bench.export)
added to a results storage, so that a sweep goes on where another machine, or an earlier session on a
machine since wiped, left off, and a board is republished from all of its runs.

Which records enter the study `runs/<dataset>/<profile>` named by the export's header:

- a finished run, unless the storage already holds a finished evaluation with its eval key. Then the
  two are compared instead: the same metrics (exactly, as JSON carries floats) mean the run was
  reproduced; any difference is reported metric by metric and the storage keeps its own record;
- a run that failed for good (training diverged, or its evaluation gave a non-finite metric), unless
  its training run finished somewhere (in the storage or in the file) or the storage already holds
  that failure. `bench run` then leaves it alone without --retry-failed, as the machine it came from did;
- nothing else: an interrupted claim (a worker killed mid-run) only points at a checkpoint on the
  machine it ran on, and a run that finished later supersedes it.

An imported record keeps every user attribute of the export (config, seed, data checksum, versions,
host, metrics, history) and gains `imported_from`, the file it came from. Its value is its priorLL,
as `bench run` stores it (bench.store). Its checkpoint stayed on the machine that trained it: `bench run`
counts the run as done (its eval key is stored); `bench evaluate` leaves it out and says so, and the
latent pictures and `bench interpolate`, which need the checkpoint, say so too.

Importing the same file twice adds nothing the second time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from optuna.trial import TrialState, create_trial
from vae_collapse_bench.bench.errors import BenchError, plain

IMPORTED_FROM = "imported_from"


@dataclass
class Mismatch:
    """A run stored here and in the file whose metrics differ: {metric: (here, in the file)}."""

    label: str
    metrics: dict[str, tuple[float | None, float | None]]


@dataclass
class ImportReport:
    """What `import_runs` did with each record of one export."""

    study: str
    finished: int = 0  # finished runs added
    failed: int = 0  # failures for good added
    reproduced: list[str] = field(default_factory=list)  # stored here already, same metrics
    mismatched: list[Mismatch] = field(default_factory=list)  # stored here already, other metrics
    present: int = 0  # failures already stored, or superseded by a finished run
    left_out: int = 0  # interrupted claims

    def lines(self) -> list[str]:
        out = [f"{self.study}: {self.finished} finished and {self.failed} failed run"
               f"{'' if self.finished + self.failed == 1 else 's'} added"]
        if self.reproduced or self.mismatched:
            out.append(f"{len(self.reproduced) + len(self.mismatched)} run(s) were stored here already: "
                       f"{len(self.reproduced)} with the same metrics, {len(self.mismatched)} with other metrics "
                       "(the stored record is kept)")
        for m in self.mismatched:
            diffs = ", ".join(f"{k} {_num(here)} here, {_num(there)} in the file"
                              for k, (here, there) in m.metrics.items())
            out.append(f"  {m.label}: {diffs}")
        if self.present:
            out.append(f"{self.present} failure(s) left out: stored already, or the run finished after all")
        if self.left_out:
            out.append(f"{self.left_out} interrupted claim(s) left out (their checkpoints are on the machine "
                       "that ran them)")
        return out


def _num(value) -> str:
    return "missing" if value is None else f"{value:.6g}"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def metric_differences(here: dict, there: dict) -> dict[str, tuple]:
    """{metric: (here, there)} for every metric that is not exactly equal (NaN equals NaN)."""
    return {k: (here.get(k), there.get(k)) for k in sorted(set(here) | set(there))
            if not _same(here.get(k), there.get(k))}


def _label(attrs: dict) -> str:
    setting = attrs.get("setting", "-")
    return f"{attrs.get('method', '?')}{'' if setting == '-' else f' [{setting}]'} seed {attrs.get('seed', '?')}"


def import_runs(export, store) -> ImportReport:
    """Add the records of `export` (bench.export.ExportedStore) to `store` (bench.store.RunStore of the
    export's dataset and profile) by the rules of the module docstring."""
    if (export.dataset, export.profile) != (store.dataset, store.profile):
        raise BenchError(f"{plain(export.path)} holds {export.dataset} / {export.profile}, not the study "
                         f"{store.dataset} / {store.profile}")
    report = ImportReport(f"runs/{store.dataset}/{store.profile}")
    finished_here = {t.user_attrs.get("eval_key"): t for t in store.trials((TrialState.COMPLETE,))
                     if "metrics" in t.user_attrs}
    trained = {t.user_attrs.get("training_key") for t in finished_here.values()}
    trained |= {t.user_attrs.get("training_key") for t in export.trials() if t.state.name == "COMPLETE"}
    failures_here = {(t.user_attrs.get("eval_key"), t.user_attrs.get("fail_reason"))
                     for t in store.trials((TrialState.FAIL,))}
    records = sorted(export.trials(), key=lambda t: t.number)
    for record in records:  # all checked before any is added: a bad file imports nothing
        if record.state.name == "COMPLETE":
            _check_finished(export, record)
    for record in records:
        attrs = dict(record.user_attrs)
        if record.state.name == "COMPLETE":
            if (here := finished_here.get(attrs.get("eval_key"))) is not None:
                diffs = metric_differences(here.user_attrs["metrics"], attrs["metrics"])
                if diffs:
                    report.mismatched.append(Mismatch(_label(attrs), diffs))
                else:
                    report.reproduced.append(_label(attrs))
                continue
            _add(store, TrialState.COMPLETE, attrs, export.path, attrs["metrics"]["priorLL"])
            finished_here[attrs.get("eval_key")] = record
            report.finished += 1
        elif record.state.name == "FAIL" and attrs.get("diverged"):
            key = (attrs.get("eval_key"), attrs.get("fail_reason"))
            if attrs.get("training_key") in trained or key in failures_here:
                report.present += 1
                continue
            _add(store, TrialState.FAIL, attrs, export.path)
            failures_here.add(key)
            report.failed += 1
        else:
            report.left_out += 1
    return report


def _check_finished(export, record) -> None:
    metrics = record.user_attrs.get("metrics")
    value = metrics.get("priorLL") if isinstance(metrics, dict) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise BenchError(f"{plain(export.path)}: run record {record.number} is finished but has no finite "
                         "priorLL among its metrics; nothing was imported")
    for key in ("eval_key", "training_key", "method", "seed"):
        if key not in record.user_attrs:
            raise BenchError(f"{plain(export.path)}: run record {record.number} lacks {key!r}; nothing was "
                             "imported")


def _add(store, state: TrialState, attrs: dict, source: str, value: float | None = None) -> None:
    attrs = {**attrs, IMPORTED_FROM: attrs.get(IMPORTED_FROM, source)}
    store.study.add_trial(create_trial(state=state, value=value, user_attrs=attrs))
