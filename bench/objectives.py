"""What `bench search` optimises (design.md §8, "Search"): its objectives, their constraints, and the
per-epoch value a trial reports to Optuna. Everything is measured on the validation split; nothing
here ever sees the test split.

Objectives (maximised, values in nats per sentence, design.md §7):

- `priorLL`: validation priorLL = log E_{p(z)} p(x|z), the model's log-likelihood (DG-VAE §5).
- `pareto`: the pair (priorLL, postLL), postLL = log E_{q(z|x)} p(x|z): how well a sentence is
  reconstructed from its own code; the trade-off between the two is the collapse trade-off.

Constraints, for both: AU >= 0.9 D and CU >= 0.9 D (a model that uses nearly every latent dimension
and leaves no hole in the aggregate posterior). In Optuna's convention a trial is feasible when
every constraint value is <= 0, so the values are c_AU = 0.9 D - AU and c_CU = 0.9 D - CU; an
infeasible trial is kept and marked, never dropped. A posterior family without per-dimension
marginals (vMF) has no CU: only the AU constraint applies to it.

The per-epoch value is priorLL (and postLL) of the current model on the validation split by the
evaluator's own estimator: the mixture proposal (p(z) + q(z|x)) / 2 with the profile's K/2 draws from
each (`metrics.mixture_proposal_log_likelihoods`), from a generator of its own, so the training
stream is untouched and a search trial trains exactly what `bench run` trains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from vae_collapse_bench.bench import metrics
from vae_collapse_bench.bench.config import Evaluation
from vae_collapse_bench.bench.data import Split, length_batches
from vae_collapse_bench.bench.errors import unknown
from vae_collapse_bench.bench.evaluate import EVAL_SEED_OFFSET
from vae_collapse_bench.bench.model import Method

# The share of the D latent dimensions that must be active (AU) and consistent (CU).
LATENT_USE = 0.9


@dataclass(frozen=True)
class Objective:
    """A search objective: the validation metrics it maximises, in Optuna's order of values."""

    name: str
    maximised: tuple[str, ...]
    description: str

    @property
    def directions(self) -> list[str]:
        return ["maximize"] * len(self.maximised)

    @property
    def prunable(self) -> bool:
        """Optuna's pruners judge one value per step: multi-objective trials report nothing."""
        return len(self.maximised) == 1

    def values(self, measured: Mapping[str, float]) -> list[float]:
        return [float(measured[name]) for name in self.maximised]


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in [
        Objective("priorLL", ("priorLL",), "maximise validation priorLL"),
        Objective("pareto", ("priorLL", "postLL"), "the Pareto front of validation priorLL and postLL"),
    ]
}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise unknown("objective", name, list(OBJECTIVES)) from None


def minimum_use(latent_dim: int) -> float:
    """0.9 D: the fewest active (and consistent) dimensions a feasible trial may have."""
    return LATENT_USE * latent_dim


def constraint_values(measured: Mapping[str, float], latent_dim: int) -> dict[str, float]:
    """{"AU": 0.9 D - AU, "CU": 0.9 D - CU}; feasible iff every value <= 0. CU is left out when it
    is undefined (nan: a posterior family without per-dimension marginals)."""
    floor = minimum_use(latent_dim)
    values = {"AU": floor - float(measured["AU"])}
    if math.isfinite(float(measured.get("CU", math.nan))):
        values["CU"] = floor - float(measured["CU"])
    return values


def is_feasible(constraints: Mapping[str, float]) -> bool:
    return all(value <= 0.0 for value in constraints.values())


def describe_constraints(latent_dim: int) -> str:
    floor = minimum_use(latent_dim)
    return f"AU >= {floor:g} and CU >= {floor:g} ({LATENT_USE:g} D, D = {latent_dim})"


@torch.no_grad()
def held_out_likelihoods(model: Method, split: Split, ev: Evaluation, seed: int,
                         device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean priorLL and postLL per sentence of `split` (module docstring): the evaluator's estimator
    and K, without its other metrics. The model is left in eval mode (the trainer sets train mode
    at the start of each epoch)."""
    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET)
    vocab = model.decoder.out.out_features
    k_half = ev.ll_samples_per_component
    prior_sum = post_sum = 0.0
    for x in length_batches(split, ev.batch_size):
        x = x.to(device)
        b, t = x.shape
        q = model.encode(x)
        prior = q.prior
        z = torch.cat([prior.sample((k_half, b), gen), q.rsample(k_half, gen)])
        prior_ll, post_ll = metrics.mixture_proposal_log_likelihoods(
            model.log_px_z(x, z, max(1, ev.max_logits // (t * vocab))), prior.log_prob(z), q.log_prob(z))
        prior_sum += prior_ll.sum().item()
        post_sum += post_ll.sum().item()
    n = max(len(split), 1)
    return {"priorLL": prior_sum / n, "postLL": post_sum / n}


@torch.no_grad()
def latent_use(model: Method, split: Split, ev: Evaluation, device: torch.device | str = "cpu") -> dict[str, float]:
    """AU and CU of the current model on `split` (the evaluator's definitions and thresholds): what
    a pruned trial, which is never fully evaluated, is judged feasible by."""
    model.eval()
    posteriors = [model.encode(x.to(device)) for x in length_batches(split, ev.batch_size)]
    q_all = type(posteriors[0]).cat(posteriors)
    au, _ = metrics.active_units(q_all.mean, ev.au_threshold)
    marginals = q_all.gaussian_marginals()
    cu = (metrics.consistent_units(*marginals, threshold=ev.cu_threshold, grid_points=ev.cu_grid_points,
                                   grid_limit=ev.cu_grid_limit)[0] if marginals is not None else math.nan)
    return {"AU": float(au), "CU": float(cu)}
