"""The evaluator: every metric of design.md §7 for one model on one split, by the same code for
every method (it touches the latent space only through `Posterior`).

Per length-bucketed batch: encode, then the mixture-proposal samples of priorLL/postLL and the K
importance samples of IW-NLL, each pushed through the decoder as one batched pass (cut only to
bound memory). Whole-split statistics (MI, AU, CU) run afterwards on the N stored posteriors, in
chunks over N; then the interpolation curve (bench.interpolate: greedy decoding along DG-VAE Eq. 14,
Rouge-L) on pairs of equal-length sentences of the split. Sampling uses a generator seeded from
the run seed, so evaluation is reproducible independently of the training RNG.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from vae_collapse_bench.bench import metrics
from vae_collapse_bench.bench.config import Evaluation
from vae_collapse_bench.bench.data import Split, length_batches
from vae_collapse_bench.bench.interpolate import interpolate_split
from vae_collapse_bench.bench.model import Method

EVAL_SEED_OFFSET = 1_000_003  # evaluation draws never share a stream with training
# Part of every eval key (bench.identity): bump it whenever a change here alters any metric's value,
# so stored checkpoints are evaluated again instead of mixing old and new numbers on one board.
EVALUATOR_VERSION = "3"  # 3: Rouge-L of the interpolation curve


@dataclass
class EvalResult:
    """What `evaluate` measured. `family` is the posterior family (type(q).__name__, e.g.
    "DiagGaussian", "VonMisesFisher"); `au_comparable` says whether AU may be set against the
    papers' AU and their bold rule (False for vMF: `Posterior.au_comparable`); `cu_defined` is False
    when the family has no Gaussian marginals, in which case CU is nan by design. `interpolation` is
    the Rouge-L curve's record (bench.interpolate.Interpolation.record), None when the split has no
    pair of equal-length sentences (then "Rouge-L" is not among the metrics)."""

    metrics: dict[str, float]
    timings: dict[str, float]  # seconds per metric family
    sizes: dict[str, int]  # N, tokens, K of each estimator
    family: str
    au_comparable: bool
    cu_defined: bool
    interpolation: dict | None = None


def nonfinite_metrics(metrics: EvalResult | Mapping[str, float], *, cu_defined: bool | None = None
                      ) -> list[str]:
    """Names of the metrics that are nan or +-inf, in the dict's order, except CU where the posterior
    family has no Gaussian marginals (CU is nan by design there, e.g. for vMF).

    Pass an `EvalResult` (its `cu_defined` is used), or a plain dict of metrics together with
    `cu_defined`. With a plain dict `cu_defined` is required on purpose: a default either way would
    silently fail every vMF run or let a broken Gaussian CU through.
    """
    if isinstance(metrics, EvalResult):
        metrics, cu_defined = metrics.metrics, metrics.cu_defined if cu_defined is None else cu_defined
    elif cu_defined is None:
        raise TypeError("nonfinite_metrics(dict) needs cu_defined= (EvalResult.cu_defined)")
    return [name for name, value in metrics.items()
            if not math.isfinite(value) and not (name == "CU" and not cu_defined)]


class _Stopwatch:
    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


@torch.no_grad()
def evaluate(
    model: Method,
    split: Split,
    ev: Evaluation,
    seed: int,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
) -> EvalResult:
    model.eval().to(device)
    gen = torch.Generator(device=device).manual_seed(seed + EVAL_SEED_OFFSET)
    clock = _Stopwatch()
    vocab = model.decoder.out.out_features
    k_half, k_iw = ev.ll_samples_per_component, ev.iw_samples
    sums = defaultdict(float)
    tokens, posteriors = 0, []
    batches = length_batches(split, ev.batch_size)
    for i, x in enumerate(batches):
        x = x.to(device)
        b, t = x.shape
        max_rows = max(1, ev.max_logits // (t * vocab))
        with clock("encode"):
            q = model.encode(x)
            posteriors.append(q.detach())
        with clock("kl"):
            sums["kl"] += q.kl_to_prior().sum().item()
        with clock("prior_post_ll"):
            prior = q.prior
            z = torch.cat([prior.sample((k_half, b), gen), q.rsample(k_half, gen)])
            prior_ll, post_ll = metrics.mixture_proposal_log_likelihoods(
                model.log_px_z(x, z, max_rows), prior.log_prob(z), q.log_prob(z)
            )
            sums["prior_ll"] += prior_ll.sum().item()
            sums["post_ll"] += post_ll.sum().item()
        with clock("iw_nll"):
            z = q.rsample(k_iw, gen)
            nll = metrics.iw_nll(model.log_px_z(x, z, max_rows), q.prior.log_prob(z), q.log_prob(z))
            sums["iw_nll"] += nll.sum().item()
        tokens += b * (t - 1)
        if on_batch:
            on_batch(i + 1, len(batches))

    n = len(split)
    q_all = type(posteriors[0]).cat(posteriors)
    with clock("mi"):
        mi = metrics.mutual_information(q_all, n_samples=ev.mi_samples, generator=gen)
    with clock("au"):
        au, _ = metrics.active_units(q_all.mean, ev.au_threshold)
    with clock("cu"):
        marginals = q_all.gaussian_marginals()
        cu = (
            metrics.consistent_units(*marginals, threshold=ev.cu_threshold,
                                     grid_points=ev.cu_grid_points, grid_limit=ev.cu_grid_limit)[0]
            if marginals is not None
            else math.nan  # no factorised marginals (e.g. vMF): CU is undefined, not zero
        )
    result = {
        "priorLL": sums["prior_ll"] / n,
        "postLL": sums["post_ll"] / n,
        "KL": sums["kl"] / n,
        "MI": float(mi),
        "AU": float(au),
        "CU": float(cu),
        "IW-NLL": sums["iw_nll"] / n,
        "PPL": metrics.perplexity(sums["iw_nll"], tokens),
    }
    with clock("interpolation"):
        interp = interpolate_split(model, split, ev.interpolation_pairs, ev.interpolation_seed, device,
                                   ev.max_logits)
    if interp is not None:
        result["Rouge-L"] = interp.minimum
    sizes = {"N": n, "tokens": tokens, "K_ll": 2 * k_half, "K_iw": k_iw, "mi_samples": ev.mi_samples,
             "D": q_all.mean.shape[-1], "interpolation_pairs": len(interp.endpoints) if interp else 0}
    return EvalResult(result, dict(clock.seconds), sizes, family=type(q_all).__name__,
                      au_comparable=bool(q_all.au_comparable), cu_defined=marginals is not None,
                      interpolation=interp.record() if interp else None)
