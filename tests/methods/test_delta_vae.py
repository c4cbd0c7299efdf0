"""delta-vae: mu = sqrt(2 delta - g(sigma^2) + relu(a) + eps), so KL_i = delta + relu(a_i)/2 (+ eps/2)
for any encoder output, the mean is continuous in a, and an uninformative encoder has no active unit."""

import math

import pytest
import torch
from helpers import BB, sentences
from scipy.optimize import brentq
from vae_collapse_bench.bench import metrics, registry
from vae_collapse_bench.bench.config import Backbone
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.methods.delta_vae import EPS, DeltaVAE, variance_bounds


def build(delta=0.15, bb=BB):
    torch.manual_seed(0)
    return DeltaVAE(20, bb, registry.get("delta-vae").resolve({"delta": delta}))


def raw_output(a, b):
    """Encoder output h = [a | b] for raw mean parts a and raw variance parts b, each [N, D]."""
    return torch.cat([a, b], dim=-1)


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
def test_kl_per_dimension_is_delta_plus_half_relu_a(delta):
    model = build(delta)
    g = torch.Generator().manual_seed(0)
    a = 3 * torch.randn(256, 4, generator=g, dtype=torch.float64)
    b = 3 * torch.randn(256, 4, generator=g, dtype=torch.float64)
    q = model.posterior(raw_output(a, b))
    kl = q.kl_to_prior_dims()
    assert (a < 0).any() and (a > 0).any()
    assert torch.allclose(kl, delta + 0.5 * torch.relu(a), rtol=0, atol=1e-6)
    assert torch.allclose(kl, delta + 0.5 * torch.relu(a) + EPS / 2, rtol=0, atol=1e-12)  # eps/2 exactly
    # the variance is the bounded sigmoid map of b, and the mean is non-negative
    lower, upper = variance_bounds(delta)
    assert torch.allclose(q.logvar.exp(), lower + (upper - lower) * torch.sigmoid(b), rtol=1e-12)
    assert (q.mean >= 0).all()


def test_mean_is_continuous_across_a_zero():
    model = build()
    b = torch.tensor([[-2.0, 0.0, 0.5, 3.0]])
    below = model.posterior(raw_output(torch.full((1, 4), -1e-6), b)).mean
    at = model.posterior(raw_output(torch.zeros(1, 4), b)).mean
    above = model.posterior(raw_output(torch.full((1, 4), 1e-6), b)).mean
    assert (above - below).abs().max() < 1e-5
    assert (at - below).abs().max() < 1e-5 and (at > 0.1).all()  # and nowhere near 0: the delta floor


@pytest.mark.parametrize("delta", [0.15, 0.5, 3.0, 20.0])
def test_every_dimension_commits_delta_for_any_encoder_output(delta):
    model = build(delta)
    g = torch.Generator().manual_seed(0)
    raw = torch.cat([
        torch.randn(64, 8, generator=g),
        20 * torch.randn(64, 8, generator=g),
        torch.tensor([0.0, -0.0, 1e-8, -1e-8, 1e4, -1e4, 1e30, -1e30]).repeat(8, 1),  # extremes
        torch.tensor([1e30, -1e30, 1e4, -1e4, 0.0, -0.0, 1e-8, -1e-8]).repeat(8, 1),
        torch.zeros(4, 8),
    ])
    raw.requires_grad_(True)
    q = model.posterior(raw)
    kl = q.kl_to_prior_dims()
    assert torch.isfinite(kl).all()
    assert (kl >= delta * (1 - 1e-6)).all(), kl.min()
    lower, upper = variance_bounds(delta)
    var = q.logvar.exp()
    assert (var >= lower * (1 - 1e-6)).all() and (var <= upper * (1 + 1e-6)).all()
    kl.sum().backward()
    assert torch.isfinite(raw.grad).all()


def test_a_negative_raw_mean_sits_at_delta():
    model = build()
    a = -torch.rand(3, 4) * 5
    kl = model.posterior(raw_output(a, torch.randn(3, 4))).kl_to_prior_dims()
    assert torch.allclose(kl, torch.full_like(kl, 0.15), atol=1e-5)


def test_no_active_unit_at_initialisation():
    """Raw means near 0 of both signs (the U(-0.01, 0.01) init) must not spread the posterior means."""
    model = build(bb=Backbone(16, 32, 32, latent_dim=8)).eval()
    x = sentences(b=64, t=9, seed=1)
    with torch.no_grad():
        raw_mu = model.encoder(x)[:, :8]
        q = model.encode(x)
    assert (raw_mu < 0).any() and (raw_mu > 0).any()  # the old sign(a) mean spread these over +-0.53
    au, var = metrics.active_units(q.mean)
    assert au == 0 and var.max() < 1e-4
    assert q.kl_to_prior().mean().item() == pytest.approx(8 * 0.15, abs=0.01)


def test_delta_domain():
    spec = registry.get("delta-vae")
    for bad in ("0", "-0.1", "21", "nan"):
        with pytest.raises(BenchError, match=r"delta must be a number in \(0, 20\]"):
            spec.resolve({"delta": bad})
