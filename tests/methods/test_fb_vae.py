"""fb-vae: per sample and dimension, the KL counts (and gets gradient) only above lambda / D."""

import pytest
import torch
from helpers import BB
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.posterior import DiagGaussian
from vae_collapse_bench.methods.fb_vae import FreeBitsVAE


def test_gradient_zero_below_the_threshold_and_nonzero_above():
    model = FreeBitsVAE(20, BB, registry.get("fb-vae").resolve({"free_bits": 4}))  # lambda / D = 1
    # KL_i = mu_i^2 / 2 with sigma = 1: mu = 0.5 -> 0.125 (below), mu = 2 -> 2 (above)
    loc = torch.tensor([[0.5, 2.0, 0.1, 3.0], [2.0, 0.5, 1.0, 0.2]], requires_grad=True)
    q = DiagGaussian(loc, torch.zeros(2, 4))
    reg = model.regularizer(q, loc, None).value
    kl = 0.5 * loc.detach() ** 2
    assert reg.shape == () and torch.allclose(reg, kl.clamp_min(1.0).sum(-1).mean())  # (6.125 + 3.5) / 2
    reg.backward()
    below = kl < 1.0
    assert (loc.grad[below] == 0).all()
    assert (loc.grad[~below] != 0).all()


def test_zero_free_bits_is_the_elbo():
    torch.manual_seed(0)
    model = FreeBitsVAE(20, BB, registry.get("fb-vae").resolve({"free_bits": 0}))
    terms = model.loss(torch.randint(4, 20, (3, 5)))
    assert torch.allclose(terms.reg, terms.kl.mean(), atol=1e-6)


def test_free_bits_domain_and_name():
    spec = registry.get("fb-vae")
    assert spec.grid == {"free_bits": [4, 9, 16, 25, 36, 49]}
    with pytest.raises(BenchError, match=r"free_bits \(lambda\) must be a finite number >= 0"):
        spec.resolve({"free_bits": "-1"})
