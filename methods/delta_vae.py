"""delta-VAE (Razavi, van den Oord, Poole & Vinyals 2019, "Preventing Posterior Collapse with
delta-VAEs", Sec. 2.1, the independent-Gaussian case): constrain the posterior family so that it
can never reach the prior. Every dimension commits a rate of at least delta:

    KL_i = 1/2 (mu_i^2 + sigma_i^2 - ln sigma_i^2 - 1) >= delta      for every i and every x.

Construction (that of BN-VAE's public delta-VAE encoder, which the DG-VAE baseline code reuses),
for the encoder output (a_i, b_i) = (raw mean part, raw variance part):

* Let l < 1 < u be the two roots of  ln s - s + 2 delta + 1 = 0  (s = sigma^2), i.e. the variances
  whose KL with mu = 0 is exactly delta. Closed form with the Lambert W function: s e^{-s} = e^{-c}
  with c = 2 delta + 1, so l = -W_0(-e^{-c}), u = -W_{-1}(-e^{-c}).
* sigma_i^2 = l + (u - l) sigmoid(b_i), so sigma_i^2 in [l, u], where g(s) = s - ln s - 1 <= 2 delta
  (g is convex, g(l) = g(u) = 2 delta): the variance alone never exceeds the committed rate.
* The mean supplies the rest, plus whatever the encoder adds on top:

      mu_i = sqrt(2 delta - g(sigma_i^2) + relu(a_i) + eps)
           = sqrt(2 delta + 1 + ln sigma_i^2 - sigma_i^2 + relu(a_i) + eps),
      KL_i = 1/2 (2 delta + relu(a_i) + eps) = delta + relu(a_i) / 2 + eps / 2  >=  delta    exactly,

  with eps = 1e-6 (a finite gradient of the square root where its argument would be 0). In floating
  point the argument is also clamped at >= eps, which only matters where rounding of
  2 delta + 1 + ln sigma^2 - sigma^2 (exactly >= 0) falls below -relu(a_i); it can only raise KL_i.

Why this form: mu_i >= 0 is a continuous function of (a_i, b_i), so an encoder that carries no
information about x (a_i, b_i nearly constant over the data, as at initialisation) has nearly
constant posterior means: no active unit and a KL of D delta, the paper table's delta-VAE row
(KL ~ 4.8 = 32 x 0.15 with AU = 0 and CU = 0). A signed mean, sign(a_i) sqrt(2 delta - g + a_i^2),
also meets the bound but jumps from -sqrt(2 delta - g) to +sqrt(2 delta - g) at a_i = 0 (+-0.53 for
delta = 0.15 and b_i = 0), so the sign of a near-zero raw output spreads the means over two points
and counts as an active unit although the encoder says nothing. The price of the relu: a dimension with
a_i < 0 sits at KL_i = delta and gets no gradient through a_i until the encoder raises a_i.

delta is bounded above by 20 nats per dimension (l = e^{-41}, u ~ 45): 20 nats per dimension already
exceeds what a sentence carries, and l underflows float32 from delta ~ 43 on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from scipy.special import lambertw
from torch import Tensor
from vae_collapse_bench.bench.model import GaussianMethod
from vae_collapse_bench.bench.posterior import DiagGaussian, Posterior
from vae_collapse_bench.bench.registry import check_number, register

MAX_DELTA = 20.0
EPS = 1e-6


@cache
def variance_bounds(delta: float) -> tuple[float, float]:
    """The roots l < 1 < u of ln s - s + 2 delta + 1 = 0 (Lambert W, computed once per delta)."""
    arg = -math.exp(-(2 * delta + 1))
    lower = float(-lambertw(arg, 0).real)
    upper = float(-lambertw(arg, -1).real)
    return lower, upper


@dataclass(frozen=True)
class DeltaParams:
    """delta: committed rate per dimension in nats, 0 < delta <= 20 (default 0.15, the paper grid)."""

    delta: float = 0.15

    def __post_init__(self):
        check_number("delta", self.delta, 0, MAX_DELTA)


@register("delta-vae", grid={"delta": [0.15]},
          search=lambda trial: {"delta": trial.suggest_float("delta", 0.01, 1.0, log=True)})
class DeltaVAE(GaussianMethod):
    """Posterior variance bounded and mean set so that every dimension's KL = delta + relu(a)/2 >= delta."""

    Params = DeltaParams

    def posterior(self, h: Tensor) -> Posterior:
        raw_mu, raw_var = h.chunk(2, dim=-1)
        delta = float(self.params.delta)
        lower, upper = variance_bounds(delta)
        var = lower + (upper - lower) * torch.sigmoid(raw_var)
        logvar = torch.log(var)
        # 2 delta - g(sigma^2) + relu(a) + eps, clamped against rounding (module docstring)
        square = (2 * delta + 1 + logvar - var + F.relu(raw_mu) + EPS).clamp_min(EPS)
        return DiagGaussian(torch.sqrt(square), logvar)
