"""vMF-VAE (Xu & Durrett 2018, "Spherical Latent Spaces for Stable Variational Autoencoders").

The posterior is a von Mises-Fisher distribution on the unit sphere S^{D-1} with a *fixed*
concentration kappa, and the prior is uniform on the sphere:

    q(z|x) = vMF(mu(x), kappa),  mu(x) = h(x) / |h(x)|  (h: the encoder output, D numbers),
    p(z)   = Uniform(S^{D-1}),
    KL(q||p) = kappa A_D(kappa) + log C_D(kappa) + log |S^{D-1}|,

the same constant for every x (Xu & Durrett 2018, Sec. 3; formulas in `bench.posterior.VonMisesFisher`).
Because kappa is fixed, the KL term adds nothing to the gradients and cannot collapse; the loss is
E_q[-log p(x|z)] + w(t) KL, with the usual schedule w(t) (it only shifts the reported loss).
Samples use Wood's (1994) rejection sampler and a Householder reflection (reparameterised through mu).
Paper grid: kappa in 13, 25, 50, 100, 200 (D = 32: KL = 2.17, 5.76, 12.25, 20.76, 30.37 nats).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor
from vae_collapse_bench.bench.model import Method
from vae_collapse_bench.bench.posterior import Posterior, VonMisesFisher
from vae_collapse_bench.bench.registry import check_number, register

KAPPA_GRID = [13, 25, 50, 100, 200]


def _check_kappa(params) -> None:
    check_number("kappa", params.kappa, 0)
    object.__setattr__(params, "kappa", float(params.kappa))  # 50 and 50.0 resolve to the same run


@dataclass(frozen=True)
class VMFParams:
    """kappa: the fixed vMF concentration, a finite float > 0 (default 50.0; paper grid 13 25 50 100 200)."""

    kappa: float = 50.0

    def __post_init__(self):
        _check_kappa(self)


class VMFMethod(Method):
    """Base of the vMF methods: the encoder emits D numbers, normalised to the mean direction mu,
    with the fixed concentration `params.kappa`. The regularizer is the (constant) analytic KL."""

    Params = VMFParams

    def encoder_out_dim(self, latent_dim: int) -> int:
        return latent_dim

    def posterior(self, h: Tensor) -> Posterior:
        return VonMisesFisher(F.normalize(h, dim=-1), self.params.kappa)


@register("vmf-vae", grid={"kappa": KAPPA_GRID},
          search=lambda trial: {"kappa": trial.suggest_float("kappa", 5.0, 300.0, log=True)})
class VMFVAE(VMFMethod):
    """vMF posterior with fixed kappa and a uniform prior on the sphere (Xu & Durrett 2018)."""
