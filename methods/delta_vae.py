"""delta-VAE (Razavi, van den Oord, Poole & Vinyals 2019, "Preventing Posterior Collapse with
delta-VAEs", Sec. 2.1, the independent-Gaussian case): constrain the posterior family so that it
can never reach the prior. Every dimension commits a rate of at least delta:

    KL_i = 1/2 (mu_i^2 + sigma_i^2 - ln sigma_i^2 - 1) >= delta      for every i and every x.

Construction (ours, exact for ANY encoder output (a_i, b_i) = (raw mean, raw log-variance part)):

* Let l < 1 < u be the two roots of  ln s - s + 2 delta + 1 = 0  (s = sigma^2), i.e. the variances
  whose KL with mu = 0 is exactly delta. Closed form with the Lambert W function: s e^{-s} = e^{-c}
  with c = 2 delta + 1, so l = -W_0(-e^{-c}), u = -W_{-1}(-e^{-c}).
* sigma_i^2 = l + (u - l) sigmoid(b_i), so sigma_i^2 in [l, u], where g(s) = s - ln s - 1 <= 2 delta
  (g is convex, g(l) = g(u) = 2 delta): the variance alone cannot exceed the committed rate.
* The mean supplies the rest: with r_i = 2 delta - g(sigma_i^2) >= 0 (the rate still missing),
  mu_i = sign(a_i) sqrt(r_i + a_i^2), sign(0) := +1. Then

      KL_i = 1/2 (r_i + a_i^2 + g(sigma_i^2)) = delta + a_i^2 / 2  >=  delta    exactly.

  The encoder keeps full control: a_i moves the mean (and the rate above delta), b_i the variance.
  In floating point r_i is clamped at 0 and the square root's argument at 1e-12 (finite gradients
  when sigmoid saturates, b_i -> +-inf), which can only raise KL_i; the analytic KL then agrees with
  delta + a_i^2/2 up to rounding (~1e-6 relative).

delta is bounded above by 20 nats per dimension (l = e^{-41}, u ~ 45): beyond it l underflows in
float32, and 20 nats per dimension already exceeds what a sentence carries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
from scipy.special import lambertw
from torch import Tensor

from bench.model import GaussianMethod
from bench.posterior import DiagGaussian, Posterior
from bench.registry import check_number, register

MAX_DELTA = 20.0


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
    """Posterior variance bounded and mean shifted so that every dimension's KL >= delta."""

    Params = DeltaParams

    def posterior(self, h: Tensor) -> Posterior:
        raw_mu, raw_var = h.chunk(2, dim=-1)
        delta = float(self.params.delta)
        lower, upper = variance_bounds(delta)
        var = lower + (upper - lower) * torch.sigmoid(raw_var)
        logvar = torch.log(var)
        missing = (2 * delta - (var - logvar - 1)).clamp_min(0)  # r_i in the module docstring
        sign = torch.where(raw_mu >= 0, 1.0, -1.0).to(raw_mu.dtype)
        loc = sign * torch.sqrt((missing + raw_mu * raw_mu).clamp_min(1e-12))
        return DiagGaussian(loc, logvar)
