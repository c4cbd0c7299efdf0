"""aae: each player's loss reaches only its own parameters, and one step improves each."""

import torch

from bench.config import Backbone
from methods.aae import AAE

BB = Backbone(8, 12, 12, latent_dim=4)


def build():
    torch.manual_seed(0)
    model = AAE(20, BB)
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
    model.regularizer(q, z, x).sum().backward(retain_graph=True)
    assert all(p.grad is None for p in disc_params(model))
    assert model.encoder.out.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    model.auxiliary_loss(q, z, x).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in disc_params(model))
    assert model.encoder.out.weight.grad is None


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
