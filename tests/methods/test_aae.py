"""aae: two optimizers, one per player; the discriminator step moves only the discriminator and the
autoencoder step only the encoder and decoder; one step improves each player; the generator term is
lambda times the mean generator loss (annealed like the KL) against the critic just updated, the
discriminator loss is unweighted; and a large lambda keeps the aggregated posterior at the prior
where lambda = 0 lets it drift."""

import copy
import math

import pytest
import torch
from helpers import BB, sentences, tiny_backbone
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import Training
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.model import StepContext
from vae_collapse_bench.methods.aae import AAE, AAEParams
from vae_collapse_bench.methods.wae import mmd_imq


def build(lam=1.0):
    torch.manual_seed(0)
    model = AAE(20, BB, AAEParams(lam=lam))
    for layer in model.discriminator:  # a discriminator that is not ~constant (the test needs signal)
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return model


def disc_params(model):
    return list(model.discriminator.parameters())


def test_each_step_moves_only_its_own_players_parameters():
    model = build()
    autoencoder, critic = model.configure_optimizers(Training(lr=0.5))
    critic_ids = {id(p) for p in disc_params(model)}
    assert {id(p) for g in critic.param_groups for p in g["params"]} == critic_ids
    assert {id(p) for g in autoencoder.param_groups for p in g["params"]} == \
        {id(p) for p in model.parameters()} - critic_ids
    assert autoencoder.param_groups[0]["lr"] == critic.param_groups[0]["lr"] == 0.5
    snapshots = [{name: p.detach().clone() for name, p in model.named_parameters()}]
    for opt in (critic, autoencoder):  # the order training_step must step them in
        opt.register_step_post_hook(lambda *_: snapshots.append(
            {name: p.detach().clone() for name, p in model.named_parameters()}))
    model.noise = torch.Generator().manual_seed(0)
    model.training_step(torch.randint(4, 20, (6, 5)), StepContext(0.5, [autoencoder, critic], clip_grad=5.0))
    before, after_critic, after_autoencoder = snapshots

    def moved(a, b):
        return {name for name in a if not torch.equal(a[name], b[name])}

    critic_names = {name for name, p in model.named_parameters() if id(p) in critic_ids}
    assert moved(before, after_critic) == critic_names
    assert moved(after_critic, after_autoencoder) == set(before) - critic_names


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
    # in the autoencoder's loss w(t) scales the generator term; the critic's loss is not in it
    torch.manual_seed(2)
    terms = model.loss(x, kl_weight=0.25)
    assert torch.allclose(terms.reg, 7 * terms.logs["adv"]) and "disc" not in terms.logs
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.25 * terms.reg)


def test_the_step_trains_the_critic_at_full_weight_then_scores_g_against_it():
    model = build(lam=7.0)
    twin = copy.deepcopy(model)
    x = torch.randint(4, 20, (6, 5), generator=torch.Generator().manual_seed(0))
    optimizers = model.configure_optimizers(Training(lr=0.5))
    model.noise = torch.Generator().manual_seed(1)
    terms = model.training_step(x, StepContext(kl_weight=0.0, optimizers=optimizers, clip_grad=5.0))
    # by hand, with the same draws: L_T at full weight though w = 0, a critic step, G after it
    noise = torch.Generator().manual_seed(1)
    q = twin.encode(x)
    z = q.rsample(1, noise)[0]
    disc = twin.discriminator_loss(z, torch.randn(6, 4, generator=noise))
    assert torch.equal(terms.logs["disc"], disc.detach())
    opt = torch.optim.SGD(disc_params(twin), lr=0.5)
    disc.backward()
    torch.nn.utils.clip_grad_norm_(disc_params(twin), 5.0)
    opt.step()
    torch.testing.assert_close(terms.logs["adv"], twin.generator_loss(z).mean().detach())
    assert torch.allclose(terms.reg, 7 * terms.logs["adv"]) and torch.allclose(terms.loss, terms.rec.mean())


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
    return [torch.optim.Adam(autoencoder, lr=0.01), torch.optim.Adam(disc_params(model), lr=0.03)]


def held_out_mismatch(lam, steps=100):
    """MMD^2 (methods.wae.mmd_imq) between one posterior draw per held-out sentence and as many prior
    draws, after `steps` AAE training steps (full generator weight, no clipping, batches of 32 of 64
    fixed sentences): the measurement of conftest's `held_out_mmd`, with the method's own two-player
    `training_step` (that fixture trains `loss` with one optimizer, which never trains the critic)."""

    torch.manual_seed(0)
    bb = tiny_backbone(hidden=16, dec_dropout_in=0.0, dec_dropout_out=0.0)
    model = AAE(20, bb, AAEParams(lam=lam)).train()
    model.noise = torch.Generator().manual_seed(0)
    ctx = StepContext(kl_weight=1.0, optimizers=faster_critic(model), clip_grad=math.inf)
    train = sentences(64, t=8, seed=1)
    for step in range(steps):
        model.training_step(train[32 * (step % 2):][:32], ctx)
    with torch.no_grad():
        q = model.eval().encode(sentences(64, t=8, seed=2))
        g = torch.Generator().manual_seed(3)
        return mmd_imq(q.rsample(1, g)[0], torch.randn(64, 4, generator=g)).item()


def test_a_large_lambda_keeps_the_aggregated_posterior_closer_to_the_prior():
    free, matched = (held_out_mismatch(lam) for lam in (0.0, 100.0))
    assert free > 1.0  # reconstruction alone moves q(z) away from N(0, I) ...
    assert matched < free / 4  # ... the adversarial term pulls it back
