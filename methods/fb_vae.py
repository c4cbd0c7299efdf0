"""Free bits (Kingma, Salimans, Jozefowicz, Chen, Sutskever & Welling 2016, "Improved Variational
Inference with Inverse Autoregressive Flow", the free-bits objective of their appendix), applied per
sample and per latent dimension as in the DG-VAE paper's baseline:

    reg_n = sum_i max(KL_{n,i}, lambda / D),   KL_{n,i} = 1/2 (mu_{n,i}^2 + sigma_{n,i}^2 - ln sigma_{n,i}^2 - 1)

A dimension whose KL is below its share lambda / D of the total budget pays a constant and gets no
gradient from the regularizer, so the optimiser has no incentive to push it further toward the
prior. lambda is the hyperparameter `free_bits` (`--set fb-vae.free_bits=9`): the total free KL in
nats per sentence, split evenly over the D dimensions. The reported KL stays the analytic KL; the
validation objective is rec + reg (the clipped sum).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from vae_collapse_bench.bench.model import GaussianMethod, Reg
from vae_collapse_bench.bench.posterior import Posterior
from vae_collapse_bench.bench.registry import check_number, register


@dataclass(frozen=True)
class FreeBitsParams:
    """free_bits: lambda, total free KL in nats per sentence (lambda / D per dimension), >= 0
    (default 4, the paper grid's smallest)."""

    free_bits: float = 4.0

    def __post_init__(self):
        check_number("free_bits (lambda)", self.free_bits, 0, low_inclusive=True)


@register("fb-vae", grid={"free_bits": [4, 9, 16, 25, 36, 49]},
          search=lambda trial: {"free_bits": trial.suggest_float("free_bits", 0.0, 64.0)})
class FreeBitsVAE(GaussianMethod):
    """Free bits: per sample and dimension, the KL counts only above lambda / D."""

    Params = FreeBitsParams

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        kl = q.kl_to_prior_dims()  # [B, D]
        return Reg(kl.clamp_min(self.params.free_bits / kl.shape[-1]).sum(-1).mean())
