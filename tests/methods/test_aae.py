"""aae: each player's loss reaches only its own parameters, one step improves each, the generator term
is lambda times the mean generator loss (annealed like the KL), the discriminator loss is unweighted,
and a large lambda keeps the aggregated posterior at the prior where lambda = 0 lets it drift."""

import pytest
import torch

from bench import registry
from bench.config import Backbone
from bench.errors import BenchError
from methods.aae import AAE, AAEParams

BB = Backbone(8, 12, 12, latent_dim=4)


def build(lam=1.0):
    torch.manual_seed(0)
    model = AAE(20, BB, AAEParams(lam=lam))
    for layer in model.discriminator:  # a discriminator that is not ~constant (the test needs signal)
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return model


def disc_params(model):
    return list(model.discriminator.parameters())


def test_generator_term_trains_only_the_encoder_and_discriminator_loss_only_the_discriminator():
    model = build()
    x = torch.randint(4, 20, (6, 5))
    q = model.encode(x)
    z = q.rsample(1)[0]
    model.regularizer(q, z, x).value.backward(retain_graph=True)
    assert all(p.grad is None for p in disc_params(model))
    assert model.encoder.out.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.auxiliary_loss(q, z, x).value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc_params(model))
    assert model.encoder.out.weight.grad is None


def test_generator_term_is_lambda_times_the_mean_generator_loss_and_the_critic_loss_is_unweighted():
    model = build(lam=7.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(4, 20, (6, 5), generator=g)
    q = model.encode(x)
    z = q.rsample(1, g)[0]
    reg = model.regularizer(q, z, x)
    adv = model.generator_loss(z).mean()
    assert reg.value.shape == () and torch.allclose(reg.value, 7 * adv)
    assert torch.allclose(reg.logs["adv"], adv) and not reg.logs["adv"].requires_grad
    torch.manual_seed(1)
    aux = model.auxiliary_loss(q, z, x)
    torch.manual_seed(1)
    disc = model.discriminator_loss(z, torch.randn(6, 4))  # the prior draws auxiliary_loss made
    assert torch.allclose(aux.value, disc) and torch.allclose(aux.logs["disc"], disc)
    # in the loss, w(t) scales the generator term only: the critic trains at full weight from step 0
    torch.manual_seed(2)
    terms = model.loss(x, kl_weight=0.25)
    assert torch.allclose(terms.reg, 7 * terms.logs["adv"])
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.25 * terms.reg + terms.logs["disc"])
    torch.manual_seed(2)
    assert torch.allclose(model.loss(x, kl_weight=0.0).loss, terms.rec.mean() + terms.logs["disc"])


def test_one_discriminator_step_lowers_its_loss():
    model = build()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 4, generator=g) * 0.5 + 1.5  # "posterior" codes, away from the prior
    z_prior = torch.randn(64, 4, generator=g)
    opt = torch.optim.SGD(disc_params(model), lr=0.1)
    before = model.discriminator_loss(z, z_prior)
    opt.zero_grad()
    before.backward()
    opt.step()
    assert model.discriminator_loss(z, z_prior) < before.detach()


def test_one_generator_step_moves_posterior_samples_toward_what_d_calls_prior():
    model = build()
    g = torch.Generator().manual_seed(0)
    opt_d = torch.optim.SGD(disc_params(model), lr=0.5)
    for _ in range(25):  # a discriminator that tells the two apart
        z = torch.randn(64, 4, generator=g) * 0.5 + 1.5
        loss = model.discriminator_loss(z, torch.randn(64, 4, generator=g))
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    z = (torch.randn(64, 4, generator=g) * 0.5 + 1.5).requires_grad_(True)
    before = model.generator_loss(z).mean()
    before.backward()
    with torch.no_grad():
        z_new = z - 0.5 * z.grad
    assert model.generator_loss(z_new).mean() < before.detach()
    # prior-like codes are where D says "prior": the step moved z toward the origin on average
    assert z_new.norm(dim=-1).mean() < z.detach().norm(dim=-1).mean()


def test_lambda_params_grid_and_domain():
    spec = registry.get("aae")
    assert spec.defaults == {"lam": 1.0}
    assert spec.grid == {"lam": [1, 10, 100]}
    assert spec.resolve({"lam": "1"}) == spec.resolve({}) and isinstance(spec.resolve({"lam": 1}).lam, float)
    assert spec.resolve({"lam": "0"}).lam == 0.0
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(BenchError, match="lam must be a finite number >= 0"):
            spec.resolve({"lam": bad})


def faster_critic(model):
    """Adam with a faster critic (the usual GAN setting) keeps the game stable at this size."""
    autoencoder = list(model.encoder.parameters()) + list(model.decoder.parameters())
    return torch.optim.Adam([{"params": autoencoder, "lr": 0.01}, {"params": disc_params(model), "lr": 0.03}])


def test_a_large_lambda_keeps_the_aggregated_posterior_closer_to_the_prior(held_out_mmd):
    free, matched = (held_out_mmd(AAE, AAEParams(lam=lam), faster_critic) for lam in (0.0, 100.0))
    assert free > 1.0  # reconstruction alone moves q(z) away from N(0, I) ...
    assert matched < free / 4  # ... the adversarial term pulls it back
