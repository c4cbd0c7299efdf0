"""Reading search studies (`bench.search`): their counts, the best feasible trial or the feasible
Pareto front (`bench search --show`), the settings `bench run --from-search` trains, and the marks
the leaderboard puts on those rows ("searched").

The two-phase protocol: a search chooses on the validation split; `--from-search` trains the chosen
setting (float hyperparameters to `search.SHOWN_DIGITS` significant digits, the precision the
board shows and `--set` takes) with fixed seeds and evaluates it on test, as a run like any other.
It records the choice in the search study (a study user attr `selected:<setting>`), which is where
the board reads its marks from.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import Profile
from vae_collapse_bench.bench.errors import BenchError, quote, unknown
from vae_collapse_bench.bench.identity import config_key
from vae_collapse_bench.bench.objectives import describe_constraints, get_objective, is_feasible
from vae_collapse_bench.bench.runner import RunSpec
from vae_collapse_bench.bench.search import PREFIX, setting_text, shown, study_name

SELECTED = "selected:"


@dataclass
class TrialRow:
    """One finished trial as `--show` lists it."""

    number: int
    state: str  # complete | pruned
    params: dict[str, Any]
    setting: str
    metrics: dict[str, float]
    values: list[float] | None
    feasible: bool | None  # None: no constraint recorded
    chosen: bool = False  # the best feasible trial, or on the feasible Pareto front
    note: str = ""


@dataclass
class SearchSummary:
    """A search study at a glance: counts by outcome, the rows to show and what was chosen."""

    study: str
    objective: str
    attrs: dict[str, Any]
    counts: dict[str, int]
    rows: list[TrialRow]
    chosen: list[TrialRow]

    @property
    def constraints(self) -> str:
        return describe_constraints(int(self.attrs.get("latent_dim", 0)))

    def headline(self, target: int | None = None) -> str:
        c = self.counts
        finished = c["complete"] + c["pruned"]
        of = f"{finished} of {target}" if target else str(finished)
        extra = [f"{c['failed']} failed"] + ([f"{c['running']} running"] if c["running"] else [])
        extra += [f"{c['reused']} reused the result of an equal setting"] if c["reused"] else []
        return (f"{self.study}: {of} trials finished ({c['complete']} complete, {c['pruned']} pruned); "
                + ", ".join(extra))

    def as_dict(self) -> dict[str, Any]:
        return {"study": self.study, "objective": self.objective, "constraints": self.constraints,
                "counts": self.counts, "chosen": [dataclasses.asdict(r) for r in self.chosen],
                "trials": [dataclasses.asdict(r) for r in self.rows],
                "valid_sentences": self.attrs.get("valid_sentences"), "config_key": self.attrs.get("config_key")}


def search_studies(storage) -> list[str]:
    return sorted(n for n in optuna.get_all_study_names(storage) if n.startswith(PREFIX))


def load(storage, method: str, dataset: str, profile: str, objective: str, hint: str = "") -> optuna.Study:
    """The stored study, or a BenchError naming the stored ones (and `hint`: how to make it)."""
    name = study_name(method, dataset, profile, objective)
    stored = search_studies(storage)
    if name not in stored:
        if not stored:
            raise BenchError(f"no search study {name} (none is stored here){hint}")
        raise unknown("search study", name, stored)
    return optuna.load_study(study_name=name, storage=storage)


def _row(t: FrozenTrial) -> TrialRow:
    a = t.user_attrs
    params = a.get("params", t.params)
    feasible = is_feasible(t.constraints) if t.constraints else None
    metrics = a.get("metrics") or a.get("latent_use") or {}
    same = str(a.get("same_as", ""))
    # a result reused from the method's search under the other objective: "from <objective> trial n"
    note = f"from {same.split('/')[-1]}" if same.startswith(PREFIX) else ""
    return TrialRow(t.number, t.state.name.lower(), params, setting_text(shown(params)), dict(metrics),
                    list(t.values) if t.values else None, feasible, note=note)


def summarise(study: optuna.Study, top: int = 10) -> SearchSummary:
    """Counts, and the rows `--show` prints, one per setting (its first complete trial; "+k
    reused": trials that reused its result): the chosen ones (the best feasible trial, or the
    feasible Pareto front) first, then the others, feasible ones first, best first; at most `top`
    rows besides the chosen ones."""
    attrs = study.user_attrs
    objective = get_objective(attrs.get("objective", "priorLL"))
    trials = study.get_trials(deepcopy=False)
    failed = [t for t in trials if t.state == TrialState.FAIL and "abandoned" not in t.user_attrs]
    counts = {"complete": sum(t.state == TrialState.COMPLETE for t in trials),
              "pruned": sum(t.state == TrialState.PRUNED for t in trials), "failed": len(failed),
              "running": sum(t.state == TrialState.RUNNING for t in trials),
              "reused": sum("same_as" in t.user_attrs for t in trials if t.state == TrialState.COMPLETE),
              "feasible": sum(bool(t.constraints) and is_feasible(t.constraints)
                              for t in trials if t.state == TrialState.COMPLETE)}
    complete, repeats = [], {}
    for t in trials:  # one row per setting: its first trial, and how many more reused it
        if t.state == TrialState.COMPLETE:
            row = _row(t)
            first = next((r for r in complete if r.params == row.params), None)
            if first is None:
                complete.append(row)
            else:
                repeats[first.number] = repeats.get(first.number, 0) + 1
    chosen_numbers = {t.number for t in chosen_trials(study)}
    for r in complete:
        r.chosen = r.number in chosen_numbers
        if r.number in repeats:
            r.note = ", ".join(filter(None, [r.note, f"+{repeats[r.number]} reused"]))
    complete.sort(key=lambda r: (not r.chosen, r.feasible is False, [-v for v in r.values or []]))
    shown_rows = [r for r in complete if r.chosen] + [r for r in complete if not r.chosen][:top]
    return SearchSummary(study.study_name, objective.name, attrs, counts, shown_rows,
                         [r for r in complete if r.chosen])


def chosen_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best feasible complete trial (one objective), or the feasible Pareto front (two), in
    order of priorLL; [] when no complete trial meets the constraints."""
    if len(study.directions) == 1:
        feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if is_feasible(t.constraints)]
        return [max(feasible, key=lambda t: (t.value, -t.number))] if feasible else []
    front = [t for t in study.best_trials if is_feasible(t.constraints)]  # Optuna: feasible trials only
    chosen, seen = [], []
    for t in sorted(front, key=lambda t: (-t.values[0], t.number)):  # a reused setting is one point
        params = t.user_attrs.get("params", t.params)
        if params not in seen:
            seen.append(params)
            chosen.append(t)
    return chosen


def _closest_to_feasible(study: optuna.Study) -> str:
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.constraints]
    if not done:
        return "no trial has completed yet"
    t = min(done, key=lambda t: sum(max(v, 0.0) for v in t.constraints.values()))
    m = t.user_attrs.get("metrics", {})
    return (f"the nearest is trial {t.number} ({setting_text(shown(t.user_attrs.get('params', t.params)))}: "
            f"AU {m.get('AU', math.nan):.0f}, CU {m.get('CU', math.nan):.0f})")


def searched_specs(storage, method: str, dataset: str, profile: Profile, data_checksum: str, family: str,
                   seeds: list[int], pareto: bool = False) -> tuple[list[RunSpec], list[str]]:
    """The runs of `bench run --from-search METHOD [--pareto]`: the chosen setting(s) x seeds, and
    one line per setting saying where it came from. Records the choice in the study."""
    spec = registry.get(method)
    objective = "pareto" if pareto else "priorLL"
    flag = " --objective pareto" if pareto else ""
    study = load(storage, method, dataset, profile.name, objective,
                 f": run `bench search --method {method} --dataset {dataset} --profile {profile.name} --trials N"
                 f"{flag}` first, then --from-search trains what it found")
    if study.user_attrs.get("config_key") != config_key(data_checksum, profile, family):
        raise BenchError(f"{study.study_name} searched under another config (data, backbone, training or "
                         f"evaluator) than {dataset}/{profile.name} now has: search again before --from-search")
    chosen = chosen_trials(study)
    if not chosen:
        limits = describe_constraints(study.user_attrs.get("latent_dim", 0))
        raise BenchError(f"no complete trial of {study.study_name} meets {limits} on the validation split; "
                         f"{_closest_to_feasible(study)}: search longer "
                         f"(bench search ... --trials N with a larger N) before --from-search")
    specs, lines, seen = [], [], set()
    what = "on the feasible Pareto front" if pareto else "the best feasible trial"
    for t in chosen:
        exact = t.user_attrs.get("params", t.params)
        params = dataclasses.asdict(spec.resolve(shown(exact)))
        frozen = tuple(sorted(params.items()))
        if frozen in seen:
            continue
        seen.add(frozen)
        specs += [RunSpec(dataset, profile.name, method, frozen, seed) for seed in seeds]
        setting = specs[-1].setting
        values = ", ".join(f"{name} {value:.2f}" for name, value in zip(get_objective(objective).maximised, t.values))
        lines.append(f"from {study.study_name}: trial {t.number}, {what} (validation {values}): {setting}")
        storage.set_study_user_attr(study._study_id, SELECTED + setting,
                                    {"method": method, "setting": setting, "trial": t.number, "params": exact})
    return specs, lines


def searched_marks(storage, dataset: str, profile: str) -> dict[tuple[str, str], str]:
    """{(method, setting): "search/... trial n"} for every setting --from-search chose on this
    dataset and profile (the leaderboard marks those rows "searched")."""
    marks: dict[tuple[str, str], str] = {}
    for name in search_studies(storage):
        parts = name[len(PREFIX):].split("/")
        if len(parts) != 4 or parts[1] != dataset or parts[2] != profile:
            continue
        attrs = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
        for key, value in attrs.items():
            if key.startswith(SELECTED) and isinstance(value, dict):
                marks[(value["method"], value["setting"])] = f"{name} trial {value['trial']}"
    return marks


def check_show_format(fmt: str) -> str:
    if fmt not in ("table", "json"):
        raise BenchError(f"unknown format {quote(fmt)}: use --format table or --format json")
    return fmt
