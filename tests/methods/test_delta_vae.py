"""delta-vae: every dimension's KL >= delta for any encoder output."""

import math

import pytest
import torch
from scipy.optimize import brentq

from bench import registry
from bench.config import Backbone
from bench.errors import BenchError
from methods.delta_vae import DeltaVAE, variance_bounds

BB = Backbone(8, 12, 12, latent_dim=4)


@pytest.mark.parametrize("delta", [0.01, 0.15, 1.0, 5.0, 20.0])
def test_variance_bounds_are_the_two_roots(delta):
    lower, upper = variance_bounds(delta)
    assert 0 < lower < 1 < upper

    def f(s):
        return math.log(s) - s + 2 * delta + 1

    assert abs(f(lower)) < 1e-9 and abs(f(upper)) < 1e-9
    assert lower == pytest.approx(brentq(f, 1e-30, 1.0, xtol=1e-300), rel=1e-9)
    assert upper == pytest.approx(brentq(f, 1.0, 1e3, xtol=1e-300), rel=1e-9)


@pytest.mark.parametrize("delta", [0.15, 0.5, 3.0])
def test_every_dimension_commits_delta_for_any_encoder_output(delta):
    model = DeltaVAE(20, BB, registry.get("delta-vae").resolve({"delta": delta}))
    g = torch.Generator().manual_seed(0)
    raw = torch.cat([
        torch.randn(64, 8, generator=g),
        20 * torch.randn(64, 8, generator=g),
        torch.tensor([0.0, -0.0, 1e-8, -1e-8, 1e4, -1e4, 1e30, -1e30]).repeat(8, 1),  # extremes
        torch.zeros(4, 8),
    ])
    raw.requires_grad_(True)
    q = model.posterior(raw)
    kl = q.kl_to_prior_dims()
    assert torch.isfinite(kl).all()
    assert (kl >= delta - 1e-5).all(), kl.min()
    lower, upper = variance_bounds(delta)
    var = q.logvar.exp()
    assert (var >= lower * (1 - 1e-6)).all() and (var <= upper * (1 + 1e-6)).all()
    # KL_i = delta + a_i^2 / 2 exactly (a_i the raw mean), for moderate raw values
    moderate = raw[:64, :4].detach()
    assert torch.allclose(kl[:64], delta + 0.5 * moderate**2, rtol=1e-5, atol=1e-5)
    kl.sum().backward()
    assert torch.isfinite(raw.grad).all()


def test_zero_raw_mean_sits_exactly_at_delta():
    model = DeltaVAE(20, BB)
    kl = model.posterior(torch.zeros(3, 8)).kl_to_prior_dims()
    assert torch.allclose(kl, torch.full_like(kl, 0.15), atol=1e-6)


def test_delta_domain():
    spec = registry.get("delta-vae")
    for bad in ("0", "-0.1", "21", "nan"):
        with pytest.raises(BenchError, match=r"delta must be a number in \(0, 20\]"):
            spec.resolve({"delta": bad})
