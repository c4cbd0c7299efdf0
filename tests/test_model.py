import copy
import math

import pytest
import torch
from helpers import BB, sentences
from vae_collapse_bench.bench.config import Training
from vae_collapse_bench.bench.model import Decoder, LossTerms, Method, Reg, StepContext, sequence_log_prob
from vae_collapse_bench.bench.posterior import DiagGaussian, Posterior
from vae_collapse_bench.methods.skip_vae import SkipVAE
from vae_collapse_bench.methods.vae import VAE

LOG_2PI = math.log(2 * math.pi)


def test_log_px_z_is_chunk_invariant_and_matches_a_manual_loop():
    torch.manual_seed(0)
    model = VAE(20, BB).eval()
    x, z = sentences(3), torch.randn(5, 3, 4)
    full = model.log_px_z(x, z)
    assert full.shape == (5, 3)
    assert torch.allclose(full, model.log_px_z(x, z, max_rows=2), atol=1e-6)
    for k in range(5):
        for b in range(3):
            logits = model.decoder_logits(x[b : b + 1, :-1], z[k, b : b + 1])
            manual = torch.log_softmax(logits, -1)[0].gather(1, x[b, 1:, None]).sum()
            assert torch.allclose(full[k, b], manual, atol=1e-5)


def test_initialisation_ranges():
    model = VAE(20, BB)
    for name, p in model.named_parameters():
        bound = 0.1 if "embed" in name else 0.01
        assert p.abs().max() <= bound, name


def test_vae_loss_terms_and_gradients_reach_encoder_and_decoder():
    torch.manual_seed(0)
    model = VAE(20, BB)
    terms = model.loss(sentences(3), kl_weight=0.3)
    assert isinstance(terms, LossTerms) and torch.isfinite(terms.loss)
    assert terms.rec.shape == terms.kl.shape == (3,)
    assert terms.reg.shape == () and terms.loss.shape == () and terms.objective.shape == ()
    # ELBo: reg is the batch-mean KL; loss = mean(rec) + w reg (+ aux = 0); objective at full weight
    assert torch.allclose(terms.reg, terms.kl.mean())
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.3 * terms.reg)
    assert torch.allclose(terms.objective, terms.rec.mean() + terms.reg)
    terms.loss.backward()
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0
    assert model.decoder.lstm.weight_ih_l0.grad.abs().sum() > 0


def test_diag_gaussian_against_hand_values():
    q = DiagGaussian(torch.tensor([[1.0, 0.0]]), torch.log(torch.tensor([[4.0, 1.0]])))
    # KL = 1/2 [(1 + 4 - log 4 - 1) + 0]
    assert torch.allclose(q.kl_to_prior(), torch.tensor([0.5 * (4 - torch.log(torch.tensor(4.0)))]))
    z = torch.tensor([[3.0, 0.0]])
    expected = torch.distributions.Normal(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0])).log_prob(z).sum()
    assert torch.allclose(q.log_prob(z), expected.reshape(1))
    # scoring samples against every posterior: [S, 1, D] -> [S, B]
    q2 = DiagGaussian.cat([q, DiagGaussian(torch.zeros(1, 2), torch.zeros(1, 2))])
    assert q2.log_prob(torch.zeros(7, 1, 2)).shape == (7, 2)
    assert len(q2[1:]) == 1


class WithAux(VAE):
    """A scalar regularizer unrelated to the KL and an auxiliary term, both with logs."""

    def regularizer(self, q, z, x):
        return Reg(q.kl_to_prior().mean() * 2 + 1, {"reg_log": 5.0})

    def auxiliary_loss(self, q, z, x):
        return Reg(z.pow(2).mean(), {"aux_log": torch.tensor(7.0)})


def test_loss_is_mean_rec_plus_weighted_reg_plus_aux_and_logs_are_merged():
    torch.manual_seed(0)
    model = WithAux(20, BB)
    x = sentences(3)
    torch.manual_seed(1)
    terms = model.loss(x, kl_weight=0.25)
    torch.manual_seed(1)
    q = model.encode(x)
    z = q.rsample(1)[0]
    rec = -model.log_px_z(x, z.unsqueeze(0))[0]
    torch.testing.assert_close(terms.rec, rec)
    torch.testing.assert_close(terms.reg, q.kl_to_prior().mean() * 2 + 1)
    torch.testing.assert_close(terms.loss, rec.mean() + 0.25 * terms.reg + z.pow(2).mean())
    torch.testing.assert_close(terms.objective, rec.mean() + terms.reg)  # aux is not part of it
    assert set(terms.logs) == {"reg_log", "aux_log"}
    assert Method.auxiliary_loss(model, q, z, x).value.shape == ()


def test_vocabulary_projection_has_no_bias_and_reads_the_methods_output_width():
    for model, width in ((VAE(20, BB), BB.dec_hidden), (SkipVAE(20, BB), BB.dec_hidden + BB.latent_dim)):
        assert model.decoder.out.bias is None and model.decoder.out.in_features == width
        assert model.encoder.out.bias is None
        assert not any(name.endswith("out.bias") for name, _ in model.named_parameters())
    assert Decoder(20, BB).out.bias is None


def test_the_default_decoder_hooks_are_the_plain_backbone():
    torch.manual_seed(0)
    model = VAE(20, BB).eval()
    x, z = sentences(3), torch.randn(2, 3, 4)
    dec = model.decoder
    plain = sequence_log_prob(lambda inputs, c: dec.out(dec.hidden(inputs, c)), x, z)  # c = z, o_t = h_t
    assert torch.equal(model.log_px_z(x, z), plain)


class Conditioned(VAE):
    """Conditions the decoder on [z ; z^2] and projects 2 h_t + mean(z)."""

    def decoder_input_dim(self, backbone):
        return 2 * backbone.latent_dim

    def decoder_input(self, z):
        return torch.cat([z, z * z], -1)

    def decoder_output(self, h, z):
        return 2 * h + z.mean(-1)[:, None, None]


def test_decoder_hooks_set_what_the_decoder_conditions_on_and_what_the_projection_reads():
    torch.manual_seed(0)
    model = Conditioned(20, BB).eval()
    assert model.decoder.lstm.input_size == BB.emb_dim + 8 and model.decoder.init_c.in_features == 8
    x, z = sentences(3), torch.randn(2, 3, 4)

    def by_hand(inputs, zz):
        h = model.decoder.hidden(inputs, torch.cat([zz, zz * zz], -1))
        return model.decoder.out(2 * h + zz.mean(-1)[:, None, None])

    torch.testing.assert_close(model.log_px_z(x, z), sequence_log_prob(by_hand, x, z), rtol=0, atol=0)
    torch.testing.assert_close(model.log_px_z(x, z, max_rows=4), model.log_px_z(x, z), rtol=0, atol=1e-6)


def test_the_default_step_is_one_clipped_sgd_step_on_the_loss_with_the_trainers_noise():
    torch.manual_seed(0)
    model = VAE(20, BB).train()
    twin = copy.deepcopy(model)
    training = Training(lr=0.5, clip_grad=0.01)  # a clip that bites
    (opt,) = model.configure_optimizers(training)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["lr"] == 0.5
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters()}
    x = sentences(3)
    model.noise = torch.Generator().manual_seed(7)
    torch.manual_seed(1)  # dropout draws from the global RNG
    terms = model.training_step(x, StepContext(kl_weight=0.3, optimizers=[opt], clip_grad=training.clip_grad))
    # by hand: the draw z ~ q from a generator in the same state, then zero_grad, backward, clip, step
    twin.noise = torch.Generator().manual_seed(7)
    torch.manual_seed(1)
    loss = twin.loss(x, 0.3).loss
    manual = torch.optim.SGD(twin.parameters(), lr=0.5)
    manual.zero_grad()
    loss.backward()
    assert torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.01) > 0.01
    manual.step()
    assert torch.equal(terms.loss, loss)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


def test_training_draws_come_from_noise_and_outside_training_from_the_global_rng():
    torch.manual_seed(0)
    model = VAE(20, BB).eval()  # eval: no dropout, the posterior draw is the only random step
    x = sentences(3)
    losses = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        model.noise = torch.Generator().manual_seed(5)
        losses.append(model.loss(x).loss)
        assert torch.equal(torch.get_rng_state(), before)  # the global RNG is not touched
    assert torch.equal(losses[0], losses[1])
    model.noise = None
    torch.manual_seed(5)
    assert torch.equal(model.loss(x).loss, losses[0])  # same seed, the global RNG: the same draw


# --------------------------------------------------------------------------- stable DiagGaussian density


@pytest.mark.parametrize("dtype, logvar", [(torch.float32, -200.0), (torch.float32, -89.0),
                                           (torch.float64, -200.0), (torch.float64, -1000.0)])
def test_log_prob_is_finite_when_a_draw_hits_its_mean_with_a_tiny_variance(dtype, logvar):
    # exp(-logvar) overflows (float32 below -88.7, float64 below -709.8); z == loc must score the
    # analytic -1/2 (logvar + log 2 pi) per dim, not 0 * inf = nan, and the gradients must be finite.
    loc = torch.tensor([[0.3, -1.5, 2.0]], dtype=dtype, requires_grad=True)
    lv = torch.full((1, 3), logvar, dtype=dtype, requires_grad=True)
    z = loc.detach().clone().requires_grad_(True)
    q = DiagGaussian(loc, lv)
    dims = q.log_prob_dims(z)
    torch.testing.assert_close(dims.double(), torch.full((1, 3), -0.5 * (logvar + LOG_2PI), dtype=torch.float64),
                               rtol=1e-7, atol=0)
    lp = q.log_prob(z)
    assert lp.item() == pytest.approx(-1.5 * (logvar + LOG_2PI), rel=1e-6)
    lp.sum().backward()
    for t in (loc, lv, z):
        assert torch.isfinite(t.grad).all()
    assert torch.equal(lv.grad, torch.full((1, 3), -0.5, dtype=dtype))  # d/dlogvar at diff = 0
    assert torch.equal(z.grad, torch.zeros_like(z)) and torch.equal(loc.grad, torch.zeros_like(loc))
    # the same through rsample, where the std underflows and every draw lands on its mean
    q2 = DiagGaussian(loc.detach() + 1.0, lv.detach())
    draws = q2.rsample(4, torch.Generator().manual_seed(0))
    assert torch.equal(draws, (loc.detach() + 1.0).expand(4, 1, 3))
    assert torch.isfinite(q2.log_prob(draws)).all()


def test_log_prob_near_a_tiny_variance_mean_is_the_exact_value():
    # diff != 0 with exp(-logvar) = inf in float32: diff^2 / var = exp(2 log|diff| - logvar) is finite
    # (1e-60 * e^200 = 7.2e26 here) and must equal the float64 value, and where the true value itself
    # overflows float32 the log-density is -inf (not nan).
    loc = torch.zeros(1, 2)
    lv = torch.full((1, 2), -200.0)
    z = torch.tensor([[1e-30, 3e-35]])
    got = DiagGaussian(loc, lv).log_prob_dims(z)
    z64 = z.double()
    expected = -0.5 * (z64 * z64 * math.exp(200.0) - 200.0 + LOG_2PI)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=0)
    far = DiagGaussian(loc, lv).log_prob_dims(torch.tensor([[1.0, -2.0]]))
    assert torch.equal(far, torch.full((1, 2), -math.inf))


def test_log_prob_ordinary_range_matches_torch_distributions_and_has_the_right_gradients():
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    lv = (3 * torch.randn(5, 4, generator=gen, dtype=torch.float64)).requires_grad_(True)
    z = torch.randn(6, 5, 4, generator=gen, dtype=torch.float64)
    ours = DiagGaussian(loc, lv).log_prob(z)
    ref = torch.distributions.Normal(loc, torch.exp(0.5 * lv)).log_prob(z).sum(-1)
    torch.testing.assert_close(ours, ref, rtol=1e-13, atol=1e-12)
    g_ours = torch.autograd.grad(ours.sum(), (loc, lv))
    g_ref = torch.autograd.grad(ref.sum(), (loc, lv))
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    # below the switch to the log form (-354 in float64): logvar = -400, diff ~ e^-200 (so that
    # diff^2 / var ~ 1 and the quadratic term matters), against a hand evaluation in which nothing
    # overflows: diff^2 / var = (diff / 1e-87)^2 * 10^-174 e^400.
    lv_small = torch.full((5, 4), -400.0, dtype=torch.float64)
    zz = 1e-87 * (1 + torch.rand(6, 5, 4, generator=gen, dtype=torch.float64))
    quad = (zz / 1e-87) ** 2 * math.exp(400.0 - 174 * math.log(10))
    assert 0.5 < quad.min() and quad.max() < 2.1
    hand = -0.5 * (quad - 400.0 + LOG_2PI)
    lv_small.requires_grad_(True)
    zz.requires_grad_(True)
    got = DiagGaussian(torch.zeros(5, 4, dtype=torch.float64), lv_small).log_prob_dims(zz)
    torch.testing.assert_close(got, hand, rtol=1e-12, atol=0)
    # gradients of the log form: d/dz = -diff / var, d/dlogvar = (quad - 1) / 2 (summed over draws)
    g_z, g_lv = torch.autograd.grad(got.sum(), (zz, lv_small))
    torch.testing.assert_close(g_z, -(zz.detach() / 1e-87) * math.exp(400.0 - 87 * math.log(10)), rtol=1e-12, atol=0)
    torch.testing.assert_close(g_lv, (0.5 * (quad - 1)).sum(0), rtol=0, atol=1e-11)


def random_posteriors(b, d, low, seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    loc = torch.randn(b, d, generator=gen, dtype=dtype)
    logvar = low + (2.0 - low) * torch.rand(b, d, generator=gen, dtype=dtype)
    logvar[0, 0] = low  # the minimum is reached
    return DiagGaussian(loc, logvar), gen


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_log_prob_cross_is_exact_for_tiny_variances(dtype):
    # logvar in [-60, 2]: the expanded matrix product would cancel terms of size e^60 z^2 (errors of
    # 1e8 nats and more); log_prob_cross must agree with the broadcast per-pair log_prob, including
    # the draws scored against their own posterior, which dominate the aggregated posterior.
    q, gen = random_posteriors(30, 4, -60.0, seed=1, dtype=dtype)
    z = q.rsample(3, gen).reshape(-1, 4)  # [90, 4]: each draw's own posterior is row % 30
    cross = q.log_prob_cross(z)
    q64 = q.map(lambda t: t.double())
    broadcast = q64.log_prob(z.double()[:, None, :])
    assert cross.dtype == torch.float64 and cross.shape == (90, 30)
    torch.testing.assert_close(cross, broadcast, rtol=1e-12, atol=1e-9)
    own = torch.arange(90), torch.arange(90) % 30
    assert torch.isfinite(cross[own]).all()
    torch.testing.assert_close(cross[own], broadcast[own], rtol=0, atol=1e-9)
    # what the expansion would have given on the same tensors: badly wrong, so the test can tell
    loc, lv, zz = q64.loc, q64.logvar, z.double()
    prec = torch.exp(-lv)
    quad = (zz * zz) @ prec.T - 2 * zz @ (loc * prec).T + (loc * loc * prec).sum(-1)
    expanded = -0.5 * (quad + lv.sum(-1) + 4 * LOG_2PI)
    assert (expanded[own] - broadcast[own]).abs().max() > 1.0


def test_log_prob_cross_fallback_is_blocked_and_matches_the_generic_form(monkeypatch):
    q, gen = random_posteriors(11, 3, -40.0, seed=2)
    z = q.rsample(2, gen).reshape(-1, 3)
    ref = q.log_prob_cross(z)
    torch.testing.assert_close(ref, Posterior.log_prob_cross(q, z), rtol=0, atol=0)
    for elements in (1, 3, 2 * 3, 5 * 11 * 3, 10**6):  # blocks over posteriors and over draws
        monkeypatch.setattr("vae_collapse_bench.bench.posterior.CROSS_CHUNK_ELEMENTS", elements)
        torch.testing.assert_close(q.log_prob_cross(z), ref, rtol=0, atol=0)
