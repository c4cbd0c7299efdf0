"""DG-vMF-VAE: the density-gap regularizer for a vMF posterior (DG-VAE, NeurIPS 2022, Eq. 9).

The posterior is that of vMF-VAE (fixed kappa, mean direction mu_k = normalised encoder output,
uniform prior on S^{D-1}). The ELBo's constant KL is replaced by the density gap between the
aggregated posterior of a group b of datapoints and the prior, a joint (not per-dimension) density
on the sphere. With M samples per datapoint z_s ~ vMF(mu_k(s), kappa) (S = |b| M, stratified):

    DG(b) = (1/S) sum_s [ log (1/|b|) sum_{k in b} C_D(kappa) exp(kappa mu_k . z_s) - log p(z_s) ],
    log p(z) = -log |S^{D-1}|                                          (Eq. 9; design.md §5)

computed as one batched log-space expression (logsumexp over k). The batch's regularizer is the mean
of DG(b) over its groups. Groups follow dg-vae's rule (`methods.dg_vae.aggregation_groups`: whole
batch by default; with agg = k, the rows that do not fill a group stay out and training batches
smaller than k are skipped). It is weighted by the KL schedule; the reported KL stays the analytic
vMF constant and the DG value is logged as `dg` in the run's per-epoch history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from vae_collapse_bench.bench.model import Reg
from vae_collapse_bench.bench.posterior import Posterior, VonMisesFisher, log_sphere_area
from vae_collapse_bench.bench.registry import check_count, register
from vae_collapse_bench.methods.dg_vae import aggregation_groups, min_batch_for
from vae_collapse_bench.methods.vmf_vae import KAPPA_GRID, VMFMethod, VMFParams


def density_gap_kl_vmf(loc: Tensor, kappa: float, m: int, generator: torch.Generator | None = None,
                       agg: int | str = "default") -> Tensor:
    """The density-gap KL of DG-VAE's Eq. 9 for vMF posteriors, a scalar (differentiable in `loc`).

    loc [B, D]: unit mean directions mu_k; kappa: the shared fixed concentration; m: samples per
    datapoint. Draws z = VonMisesFisher(loc, kappa).rsample(m, generator) ([M, B, D], reparameterised),
    scores every draw against every posterior of its group, and returns

        (1/(U M)) sum_{s} [ logsumexp_{k in b(s)} (log C_D(kappa) + kappa mu_k . z_s) - log |b|
                            + log |S^{D-1}| ]

    over the U rows inside groups (`aggregation_groups`; the paper's dg-vmf uses the whole batch,
    agg="default"): the mean of DG(b) over the groups. Cost O(M B^2 D) time, O(M B^2) memory.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1; got {m}")
    bsz, d = loc.shape
    q = VonMisesFisher(loc, kappa)
    z = q.rsample(m, generator)  # [M, B, D]: every row draws, so the stream does not depend on agg
    size, used = aggregation_groups(bsz, agg)
    z, loc = z[:, :used], loc[:used]
    scores = q.log_c + q.kappa * torch.einsum("msd,kd->msk", z, loc)  # [M, U(sample's row), U(k)]
    gid = torch.arange(used, device=loc.device) // size
    same = gid[:, None] == gid[None, :]  # [U, U]
    log_q_agg = torch.logsumexp(scores.masked_fill(~same, -math.inf), dim=-1) - math.log(size)  # [M, U]
    return (log_q_agg + log_sphere_area(d)).mean()


@dataclass(frozen=True)
class DGVMFParams(VMFParams):
    """kappa: fixed vMF concentration > 0 (default 50.0; paper grid 13 25 50 100 200);
    m: samples per datapoint, int >= 1 (default 32, the paper's M);
    agg: aggregation group size, "default" (whole batch, the paper's setting) or an int >= 1."""

    m: int = 32
    agg: int | str = "default"

    def __post_init__(self):
        super().__post_init__()
        check_count("m", self.m)
        check_count("agg", self.agg, or_default=True)


@register("dg-vmf-vae", grid={"kappa": KAPPA_GRID},
          search=lambda trial: {"kappa": trial.suggest_float("kappa", 5.0, 300.0, log=True)})
class DGVMFVAE(VMFMethod):
    """vMF posterior regularised by the density gap of the aggregated posterior (DG-VAE Eq. 9)."""

    Params = DGVMFParams

    @property
    def min_batch_size(self) -> int:
        return min_batch_for(self.params.agg)

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        """DG (Eq. 9) of the batch, a scalar (weighted by the KL schedule)."""
        dg = density_gap_kl_vmf(q.loc, q.kappa, self.params.m, self.noise, agg=self.params.agg)
        return Reg(dg, {"dg": dg.detach()})
