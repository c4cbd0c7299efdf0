"""How `bench search` samples and prunes (design.md §8, "Search"): TPE reseeded per trial, the
pruners of `--pruner` (each judging feasible trials against feasible ones: `FeasibleOnly`), and
which pruner an objective allows.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from optuna.pruners import BasePruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial
from vae_collapse_bench.bench.config import Training
from vae_collapse_bench.bench.errors import BenchError, quote
from vae_collapse_bench.bench.objectives import Objective


class FeasibleOnly(BasePruner):
    """A pruner for a constrained search: `base` judges a trial only against the trials that met
    the constraints at the same epoch, and only once the trial itself meets them there.

    Why: escaping collapse costs priorLL for a while, so a plain pruner on priorLL removes exactly
    the runs that are about to become feasible. On the synthetic corpus at the quick profile, the
    per-epoch priorLL of dg-vae's seven agg settings differs by < 0.2 nats up to epoch 16, the
    median pruner then pruned agg = 1, 8, 32 and default (AU 0 at the time), and the full runs of
    agg = 32 and default were the only feasible ones (AU 30 and 31; their KL leaves 0 at epochs 18-30)
    while the collapsed agg = 1 had the best priorLL. A trial that has not met the constraints yet
    may still escape, so it runs on; a feasible one is compared with feasible ones. The per-epoch
    feasibility is the `feasible` flag of the trial's `curve` entry for that epoch."""

    def __init__(self, base: BasePruner):
        self.base = base

    def prune(self, study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or not feasible_at(trial, step):
            return False
        return self.base.prune(_FeasibleAt(study, step), trial)


def feasible_at(trial: FrozenTrial, epoch: int) -> bool:
    return any(c.get("epoch") == epoch and c.get("feasible") for c in trial.user_attrs.get("curve", []))


class _FeasibleAt:
    """The study as a pruner sees it: only the trials feasible at `step` (everything else delegated)."""

    def __init__(self, study, step: int):
        self._study, self._step = study, step

    def get_trials(self, deepcopy: bool = True, states=None):
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if feasible_at(t, self._step)]

    def __getattr__(self, name):
        return getattr(self._study, name)


# Pruning waits for the epoch from which the protocol itself judges a run (`decay_from_epoch`: no lr
# decay before it); MedianPruner needs 5 finished trials (feasible at the epoch judged: FeasibleOnly).
PRUNERS: dict[str, Callable[[Training], BasePruner]] = {
    "median": lambda t: FeasibleOnly(MedianPruner(n_startup_trials=5, n_warmup_steps=t.decay_from_epoch)),
    "halving": lambda t: FeasibleOnly(SuccessiveHalvingPruner(min_resource=t.decay_from_epoch, reduction_factor=3)),
    "none": lambda t: NopPruner(),
}


def resolve_pruner(name: str | None, objective: Objective) -> str:
    """The pruner's name: the given one, else median for one objective and none for two."""
    if name is None:
        return "median" if objective.prunable else "none"
    if name not in PRUNERS:
        raise BenchError(f"unknown pruner {quote(name)}: use one of {', '.join(PRUNERS)}")
    if name != "none" and not objective.prunable:
        raise BenchError(f"--objective {objective.name} has {len(objective.maximised)} objectives and Optuna's "
                         f"pruners judge one: leave --pruner out (or give --pruner none)")
    return name


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the results: a third of the budget, from 3 to Optuna's 10
    (its default 10 would leave a 12-trial search almost entirely random)."""
    return min(10, max(3, trials // 3))


def trial_seed(seed: int, number: int) -> int:
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class TrialSeededSampler(BaseSampler):
    """TPE (Optuna's defaults, constant liar on) whose generator is seeded anew for each trial from
    (seed, trial number): a trial's random draws depend on its number and the study's history only,
    not on which process asks for it or what it drew before."""

    def __init__(self, seed: int, n_startup_trials: int):
        self.seed, self.n_startup_trials = seed, n_startup_trials
        self._tpe = self._sampler(0)

    def _sampler(self, number: int) -> TPESampler:
        return TPESampler(seed=trial_seed(self.seed, number), n_startup_trials=self.n_startup_trials)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        self._tpe = self._sampler(trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._tpe.after_trial(study, trial, state, values)
