"""methods/vae.py: the cyclic schedule at hand-computed steps; beta-VAE's weighted KL."""

import pytest
import torch
from helpers import BB, sentences
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import Training
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.methods.vae import VAE, BetaVAE, CyclicVAE


@pytest.mark.parametrize("step,weight", [
    (0, 0.0), (250, 0.25), (999, 0.999), (1000, 1.0), (1500, 1.0), (1999, 1.0),  # cycle 1: rise, hold
    (2000, 0.0), (2500, 0.5), (3000, 1.0), (3999, 1.0), (4100, 0.1),  # cycles 2 and 3 restart
])
def test_cyclic_weight_at_hand_computed_steps(step, weight):
    # paper protocol: anneal 10 epochs, hold 10; 100 steps per epoch -> period 2000, rise 1000
    model = CyclicVAE(20, BB)
    assert model.kl_weight(step, 100, Training(anneal_epochs=10)) == pytest.approx(weight)


def test_cyclic_scales_with_the_profile_and_matches_vae_in_the_first_rise():
    cyc, vae = CyclicVAE(20, BB), VAE(20, BB)
    short = Training(anneal_epochs=3)
    assert cyc.kl_weight(450, 50, short) == pytest.approx(1.0)  # hold: epochs 3-6
    assert cyc.kl_weight(300 + 75, 50, short) == pytest.approx(0.5)  # second rise, half way
    for step in range(0, 150, 7):
        assert cyc.kl_weight(step, 50, short) == vae.kl_weight(step, 50, short)
    assert cyc.kl_weight(123, 50, Training(anneal_epochs=0)) == 1.0


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.8])
def test_beta_vae_regularizer_is_beta_times_kl(beta):
    torch.manual_seed(0)
    model = BetaVAE(20, BB, registry.get("beta-vae").resolve({"beta": beta}))
    terms = model.loss(sentences(), kl_weight=0.5)
    assert terms.reg.shape == () and torch.allclose(terms.reg, beta * terms.kl.mean())
    assert torch.allclose(terms.objective, terms.rec.mean() + beta * terms.kl.mean())
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.5 * beta * terms.kl.mean())


def test_only_the_cyclic_schedule_needs_all_epochs():
    # a cyclic run must not stop after max_decays half-way through a cycle; the others may
    assert CyclicVAE.needs_all_epochs is True and CyclicVAE(20, BB).needs_all_epochs is True
    assert VAE.needs_all_epochs is False and BetaVAE.needs_all_epochs is False


def test_vae_regularizer_is_the_mean_analytic_kl():
    torch.manual_seed(0)
    model = VAE(20, BB)
    terms = model.loss(sentences(), kl_weight=0.3)
    assert terms.reg.shape == () and torch.allclose(terms.reg, terms.kl.mean())
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.3 * terms.kl.mean())
    assert terms.logs == {}


def test_beta_domain():
    spec = registry.get("beta-vae")
    assert spec.resolve({"beta": "0"}).beta == 0
    for bad in ("-1", "-0.1", "inf", "nan"):
        with pytest.raises(BenchError, match="beta must be a finite number >= 0"):
            spec.resolve({"beta": bad})
