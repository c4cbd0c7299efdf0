"""DG-VAE: the density-gap regularizer with Gaussian posteriors (the DG-VAE paper's Eq. 11;
design.md §5).

For an aggregation group b of |b| datapoints with posteriors N(mu_k, diag sigma_k^2), the KL from
the group's aggregated posterior q_b(z) = (1/|b|) sum_k q(z|x_k) to the prior is estimated per
dimension (Eq. 11, the marginal form) with S = |b| M stratified samples, M per datapoint,
z_{s} = mu_k + sigma_k eps_s:

    KL_i(b) = (1/S) sum_s [ log (1/|b|) sum_k N(z_{s,i}; mu_{k,i}, sigma_{k,i}^2) - log N(z_{s,i}; 0, 1) ]
    DG(b)   = sum_i KL_i(b)

and the batch's regularizer is the mean of DG(b) over its groups. With |b| = 1 it is a Monte-Carlo
estimate of the ordinary KL(q(z|x) || p(z)). The regularizer replaces the KL in the loss (weighted by
the annealing schedule like every method); the reported KL stays the analytic per-datapoint KL and
the DG value is logged beside it (`dg` in the run's per-epoch history).

Groups (`agg`, rule in `aggregation_groups`, shared with dg-vmf-vae): `default` makes the whole batch
one group. For agg = k the batch is cut into consecutive groups of k rows and the B mod k rows that
do not fill a group stay out of the DG term (their reconstruction term still counts). A training
batch smaller than k is skipped, no step taken (`min_batch_size`; the trainer counts such batches):
the paper's footnote 4, "DG-VAE (|b| = 32) ignores data batch B if |B| < 32 while DG-VAE (default)
accepts it". So agg = 32 and default differ at batch size 32 whenever length bucketing leaves short
batches. For the validation objective, where every sentence must be scored, a batch smaller than k
forms one group.

Computation: one batched log-space expression, no Python loop over groups, samples or dimensions.
For a sample of datapoint j, z = mu_j + sigma_j eps, its log-density under component k is a
quadratic in eps (written relative to the sample's own component, which keeps float32 exact where
it matters: the own component's entry is exactly -eps^2/2 - log sigma_j, whatever mu_j):

    log N(z; mu_k, sigma_k^2) + log sqrt(2 pi) = -1/2 (d_jk + r_jk eps)^2 - log sigma_k
        = [1, eps, eps^2] . [-d_jk^2/2 - log sigma_k, -d_jk r_jk, -r_jk^2/2],
    d_jk = (mu_j - mu_k) / sigma_k,  r_jk = sigma_j / sigma_k.

So the whole |b| M x |b| table of a (group, dimension) is one batched matrix product of the constant
eps-features with a small coefficient tensor (`torch.bmm`), followed by a log-sum-exp over k. A
custom autograd function exponentiates that table in place and computes the backward pass as one
more batched matrix product (the eps-features need no gradient) plus the chain rule on small
tensors, so the term costs about one exp per table entry plus two matrix products, and keeps one
table of B |b| M D floats alive for the backward pass (4 MiB at B = |b| = M = D = 32). Cost
O(B |b| M D). The -log sqrt(2 pi) constants of q and p cancel and are left out. In float32 the
result agrees with float64 to ~1e-7 relative for sigma from 1 down to 1e-6 and means spread over
+-9 (tests/methods/test_dg_vae.py); the rounding of an entry grows like 1e-7 (r eps)^2, so it
matters only when a wide posterior's sample lands on a far narrower one (r >~ 1e3), and sigma^2
must be a normal float32 (|log sigma^2| < 87).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from vae_collapse_bench.bench.model import GaussianMethod, Reg
from vae_collapse_bench.bench.posterior import Posterior
from vae_collapse_bench.bench.registry import check_count, register


class _LogMixture(torch.autograd.Function):
    """log sum_k N(z_jm; mu_k, sigma_k^2) + log sqrt(2 pi) for every sample z_jm = mu_j + sigma_j eps_jm.

    Inputs per row n (a (group, dimension) pair): mu, log_sd [N, g] and the constant eps-features
    A = [1, eps, eps^2] as [N g, M, 3] (row (n, j), sample m). Output [N g, M].

    Forward: the coefficients C [N, g(j), 3, g(k)] = [-d^2/2 - log sigma_k, -d r, -r^2/2] (module
    docstring), one batched matrix product A @ C -> the [N g, M, g] table, exponentiated in place,
    summed over k. That table is the only large tensor; it is kept for the backward pass, where
    dL/dC = (A scaled by grad / total)^T @ table is one more batched matrix product (the scaling
    goes on the small A, not on the table) and the chain rule to mu and log_sd is written out on
    the small [N, g, g] tensors.

    No max-shift pass is needed: every entry is a Gaussian log-density (plus log sqrt(2 pi)), at
    most -log sigma_k < 44 while sigma_k^2 is a normal float32, so exp cannot overflow; the
    sample's own component scores -eps^2/2 - log sigma_j > -103 for |eps| < 10, so the sum over k
    cannot underflow to 0.
    """

    @staticmethod
    def forward(ctx, mu: Tensor, log_sd: Tensor, a: Tensor) -> Tensor:
        rows, size = mu.shape
        inv = torch.exp(-log_sd).unsqueeze(1)  # 1 / sigma_k
        d = (mu.unsqueeze(2) - mu.unsqueeze(1)) * inv  # (mu_j - mu_k) / sigma_k
        r = torch.exp(log_sd.unsqueeze(2) - log_sd.unsqueeze(1))  # sigma_j / sigma_k (1 exactly on j = k)
        coef = torch.stack([-0.5 * d * d - log_sd.unsqueeze(1), -d * r, -0.5 * r * r], dim=2)
        table = torch.bmm(a, coef.view(rows * size, 3, size)).exp_()
        total = table.sum(-1)
        ctx.save_for_backward(a, table, total, inv, d, r)
        return total.log()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        a, table, total, inv, d, r = ctx.saved_tensors
        rows, _, size = inv.shape
        scaled = a * (grad / total).unsqueeze(-1)  # softmax over k = table / total
        g0, g1, g2 = torch.bmm(scaled.transpose(1, 2), table).view(rows, size, 3, size).unbind(2)
        grad_d = -(g0 * d + g1 * r)
        grad_r = -(g1 * d + g2 * r)
        grad_d_inv, grad_r_r = grad_d * inv, grad_r * r
        # d depends on mu_j (+1/sigma_k), mu_k (-1/sigma_k), log sigma_k (-d); r on log sigma_j (+r),
        # log sigma_k (-r); the first coefficient on log sigma_k (-1). j indexes dim 1, k dim 2.
        grad_mu = grad_d_inv.sum(2) - grad_d_inv.sum(1)
        grad_log_sd = grad_r_r.sum(2) - grad_r_r.sum(1) - (grad_d * d).sum(1) - g0.sum(1)
        return grad_mu, grad_log_sd, None


def _group_gaps(loc: Tensor, std: Tensor, eps: Tensor) -> Tensor:
    """DG(b) for G equal-sized groups: loc, std [G, g, D], eps [G, g, M, D] -> [G].

    Rows of the batched problem are the N = G D (group, dimension) pairs; within a row, sample m
    of datapoint j is z_jm = mu_j + sigma_j eps_jm, scored against every component k of the group.
    """
    n_groups, size, samples, dim = eps.shape
    rows = n_groups * dim
    mu = loc.transpose(1, 2).reshape(rows, size)
    log_sd = std.log().transpose(1, 2).reshape(rows, size)
    noise = eps.permute(0, 3, 1, 2).reshape(rows * size, samples)  # [N g, M]: row (n, j), column m
    features = torch.stack([torch.ones_like(noise), noise, noise * noise], dim=-1)  # [N g, M, 3]
    log_mix = _LogMixture.apply(mu, log_sd, features).view(rows, size * samples)
    z = (mu.unsqueeze(-1) + log_sd.exp().unsqueeze(-1) * noise.view(rows, size, samples)).reshape(rows, -1)
    # KL_i(b) = mean_s [log (1/|b|) sum_k N(z_s; mu_k, sigma_k^2) - log N(z_s; 0, 1)]; log sqrt(2 pi) cancels
    gap = (log_mix + 0.5 * z * z).mean(-1) - math.log(size)
    return gap.view(n_groups, dim).sum(-1)


def aggregation_groups(batch: int, agg: int | str | None) -> tuple[int, int]:
    """(group size |b|, rows used) for a batch of `batch` rows (module docstring; footnote 4).

    agg "default" (or None): one group of the whole batch. agg = k: groups of k consecutive rows;
    the last batch mod k rows stay out. A batch of fewer than k rows, which training skips, forms one
    group (the validation objective scores every sentence).
    """
    if agg is None or agg == "default" or batch < int(agg):
        return batch, batch
    size = int(agg)
    return size, batch - batch % size


def density_gap_kl(loc: Tensor, std: Tensor, agg: int | str | None = None, m: int = 32,
                   generator: torch.Generator | None = None, eps: Tensor | None = None) -> Tensor:
    """The density-gap KL of a batch (Eq. 11), a scalar: the mean of DG(b) over its groups.

    loc, std [B, D]: the Gaussian posteriors. agg: group size |b| or "default" (`aggregation_groups`).
    m: samples per datapoint, drawn as eps = randn(B, m, D) from `generator` (the global RNG when
    None); or pass those draws as `eps` [B, m, D] (then m is eps.shape[1]). Rows outside every
    group draw noise too (so the draws do not depend on agg) but do not enter the term.
    """
    batch, dim = loc.shape
    if eps is None:
        eps = torch.randn(batch, m, dim, generator=generator, device=loc.device, dtype=loc.dtype)
    m = eps.shape[1]
    size, used = aggregation_groups(batch, agg)
    gaps = _group_gaps(loc[:used].reshape(-1, size, dim), std[:used].reshape(-1, size, dim),
                       eps[:used].reshape(-1, size, m, dim))
    return gaps.mean()


def min_batch_for(agg: int | str) -> int:
    """Training batches smaller than one aggregation group are skipped (footnote 4)."""
    return 2 if agg == "default" else max(2, int(agg))


@dataclass(frozen=True)
class DGParams:
    """agg: aggregation group size |b|, an integer >= 1 or "default" (the whole batch; default).
    m: samples per datapoint, an integer >= 1 (default 32, the paper's M)."""

    agg: int | str = "default"
    m: int = 32

    def __post_init__(self):
        check_count("agg", self.agg, or_default=True)
        check_count("m", self.m)


@register("dg-vae", grid={"agg": [1, 2, 4, 8, 16, 32, "default"]},
          search=lambda trial: {"agg": trial.suggest_categorical("agg", [1, 2, 4, 8, 16, 32, "default"])})
class DGVAE(GaussianMethod):
    """Marginal density-gap KL (Eq. 11) over aggregation groups replaces the per-datapoint KL."""

    Params = DGParams

    @property
    def min_batch_size(self) -> int:
        return min_batch_for(self.params.agg)

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        loc, std = q.gaussian_marginals()
        dg = density_gap_kl(loc, std, self.params.agg, self.params.m, generator=self.noise)
        return Reg(dg, {"dg": dg.detach()})
