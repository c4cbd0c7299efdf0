"""bn-vae: a fixed, untrained BatchNorm scale and the KL lower bound it implies."""

import pytest
import torch
from helpers import tiny_backbone
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.methods.bn_vae import BNVAE

BB = tiny_backbone(latent_dim=6)


def build(gamma=0.9):
    torch.manual_seed(0)
    return BNVAE(20, BB, registry.get("bn-vae").resolve({"gamma": gamma}))


def test_scale_is_a_fixed_buffer_and_bias_is_trained():
    model = build(0.7)
    names = dict(model.named_parameters())
    assert "beta" in names and not any("gamma" in n or "mu_bn" in n for n in names)
    assert "gamma" in dict(model.named_buffers()) and "gamma" in model.state_dict()
    assert torch.equal(model.gamma, torch.full((6,), 0.7))
    h = torch.randn(16, 12, requires_grad=True)
    model.posterior(h).kl_to_prior().sum().backward()
    assert model.gamma.grad is None and not model.gamma.requires_grad
    assert model.beta.grad is not None and model.beta.grad.abs().sum() > 0


@pytest.mark.parametrize("gamma", [0.6, 1.2, 1.8])
def test_training_batch_mean_kl_is_at_least_d_gamma_squared_over_two(gamma):
    model = build(gamma).train()
    g = torch.Generator().manual_seed(1)
    for scale, shift in [(1.0, 0.0), (5.0, 3.0), (0.1, -2.0)]:
        h = scale * torch.randn(32, 12, generator=g) + shift
        kl = model.posterior(h).kl_to_prior().mean()
        assert kl >= 6 * gamma**2 / 2 - 1e-3


def test_eval_uses_running_statistics_and_a_single_sentence_batch_trains():
    model = build().train()
    h = torch.randn(32, 12) * 2 + 1
    for _ in range(50):  # running statistics converge to the batch's
        model.posterior(h)
    model.eval()
    full = model.posterior(h).mean
    alone = model.posterior(h[:1]).mean  # no dependence on the rest of the batch in eval mode
    assert torch.allclose(full[:1], alone, atol=1e-6)
    model.train()
    running = model.mu_bn.running_mean.clone()
    one = model.posterior(h[:1])  # B = 1 in training: running statistics, not updated
    assert torch.isfinite(one.mean).all() and torch.equal(model.mu_bn.running_mean, running)


def test_mean_is_gamma_times_batchnorm_plus_beta_exactly():
    """mu = gamma (a - m) / sqrt(v + 1e-5) + beta: batch statistics (biased variance) in training,
    running statistics in evaluation; the log-variance passes through untouched."""
    model = build(0.7).double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        model.beta.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0, -0.3, 1.5], dtype=torch.float64))
    h = 3 * torch.randn(16, 12, generator=g, dtype=torch.float64) + 1
    a, logvar = h[:, :6], h[:, 6:]

    q = model.train().posterior(h)
    by_hand = 0.7 * (a - a.mean(0)) / torch.sqrt(a.var(0, unbiased=False) + 1e-5) + model.beta
    assert torch.allclose(q.mean, by_hand, rtol=0, atol=1e-6)
    assert torch.equal(q.logvar, logvar)

    running_mean = torch.randn(6, generator=g, dtype=torch.float64)
    running_var = torch.rand(6, generator=g, dtype=torch.float64) + 0.5
    model.mu_bn.running_mean.copy_(running_mean)
    model.mu_bn.running_var.copy_(running_var)
    q = model.eval().posterior(h)
    by_hand = 0.7 * (a - running_mean) / torch.sqrt(running_var + 1e-5) + model.beta
    assert torch.allclose(q.mean, by_hand, rtol=0, atol=1e-6)
    assert torch.equal(q.logvar, logvar)


def test_gamma_domain():
    for bad in ("0", "-1", "inf"):
        with pytest.raises(BenchError, match="gamma must be a finite number > 0"):
            registry.get("bn-vae").resolve({"gamma": bad})
