"""BN-VAE (Zhu, Bi, Liu, Ma, Li & Wu 2020, "A Batch Normalized Inference Network Keeps the KL
Vanishing Away").

The posterior mean passes through batch normalisation whose scale is FIXED to gamma and whose bias
beta is learned:

    mu_i = gamma (a_i - mean_batch(a_i)) / sqrt(var_batch(a_i) + eps) + beta_i

In training mode (batch statistics) the batch mean of mu_i^2 is gamma^2 + beta_i^2 (times
var / (var + eps)), so the expected KL over the batch is bounded below (their central argument):

    E_batch[KL] = 1/2 sum_i E[mu_i^2 + sigma_i^2 - ln sigma_i^2 - 1] >= D gamma^2 / 2,

because sigma^2 - ln sigma^2 - 1 >= 0. Evaluation uses the running statistics, as BatchNorm does.
gamma is a buffer (saved with the weights, never trained); beta is a Parameter. eps = 1e-5 and
momentum 0.1 are PyTorch's BatchNorm defaults; note that the bound's factor var / (var + eps)
is far below 1 while the encoder's raw means still vary by less than ~sqrt(eps) across the batch
(e.g. right after the U(-0.01, 0.01) initialisation).

A batch of ONE sentence has no batch variance. The trainer never steps on one (`min_batch_size`
is 2), but should one reach `posterior` in training mode it is normalised with the running
statistics, which are then not updated.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vae_collapse_bench.bench.config import Backbone
from vae_collapse_bench.bench.model import GaussianMethod
from vae_collapse_bench.bench.posterior import DiagGaussian, Posterior
from vae_collapse_bench.bench.registry import check_number, register


@dataclass(frozen=True)
class BNParams:
    """gamma: the fixed BatchNorm scale of the posterior mean, > 0 (default 0.6, the paper grid's
    smallest; the expected KL per dimension is then at least gamma^2 / 2 = 0.18 nats)."""

    gamma: float = 0.6

    def __post_init__(self):
        check_number("gamma", self.gamma, 0)


@register("bn-vae", grid={"gamma": [0.6, 0.7, 0.9, 1.2, 1.5, 1.8]},
          search=lambda trial: {"gamma": trial.suggest_float("gamma", 0.3, 2.0)})
class BNVAE(GaussianMethod):
    """BatchNorm on the posterior mean with a fixed scale gamma and a learned bias."""

    Params = BNParams

    def build_extras(self, vocab_size: int, backbone: Backbone) -> None:
        d = backbone.latent_dim
        self.mu_bn = nn.BatchNorm1d(d, affine=False)  # running statistics only; no parameters
        self.register_buffer("gamma", torch.full((d,), float(self.params.gamma)))
        self.beta = nn.Parameter(torch.zeros(d))

    def posterior(self, h: Tensor) -> Posterior:
        raw_mu, logvar = h.chunk(2, dim=-1)
        if self.training and raw_mu.shape[0] == 1:  # no batch variance: use the running statistics
            bn = self.mu_bn
            normed = F.batch_norm(raw_mu, bn.running_mean, bn.running_var, training=False, eps=bn.eps)
        else:
            normed = self.mu_bn(raw_mu)
        return DiagGaussian(self.gamma * normed + self.beta, logvar)
