"""The same tests for every registered method (built-in or plug-in), at smoke size.

Parametrised over `bench.registry.names()`, so a newly registered method is covered without edits:
it builds, its loss is finite, gradients reach every trainable parameter (encoder and decoder
included), a state_dict round trip reproduces it, the same seed gives the same loss, and every
setting of its paper grid resolves and trains one step.
"""

import io

import pytest
import torch

from bench import registry
from bench.config import PROFILES
from bench.perf import random_batch

BB = PROFILES["smoke"].backbone
VOCAB = 30


def sentences(b=6, t=7):
    return random_batch(t, b, vocab=VOCAB)


def build(name, seed=0, **overrides):
    spec = registry.get(name)
    torch.manual_seed(seed)
    return spec.cls(VOCAB, BB, spec.resolve(overrides))


@pytest.mark.parametrize("name", registry.names())
class TestMethod:
    def test_loss_is_finite_and_gradients_reach_every_trainable_parameter(self, name):
        model = build(name).train()
        terms = model.loss(sentences(), kl_weight=0.5)
        assert torch.isfinite(terms.loss)
        for t in (terms.rec, terms.kl, terms.reg):
            assert t.shape == (6,) and torch.isfinite(t).all()
        terms.loss.backward()
        for pname, p in model.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, f"{pname} gets no gradient"
                assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"
        assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0
        assert model.decoder.lstm.weight_ih_l0.grad.abs().sum() > 0

    def test_a_single_sentence_batch_trains(self, name):
        # length-bucketed batches without padding can hold one sentence
        model = build(name).train()
        terms = model.loss(sentences(b=1), kl_weight=1.0)
        assert torch.isfinite(terms.loss)
        terms.loss.backward()

    def test_state_dict_round_trip_gives_identical_outputs(self, name):
        model = build(name).train()
        x = sentences()
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        model.loss(x, 1.0).loss.backward()  # one step: weights (and running statistics) move
        opt.step()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        buffer.seek(0)
        copy = build(name, seed=1)
        copy.load_state_dict(torch.load(buffer))
        model.eval()
        copy.eval()
        with torch.no_grad():
            mean_a, mean_b = model.encode(x).mean, copy.encode(x).mean
            assert torch.equal(mean_a, mean_b)
            assert torch.equal(model.log_px_z(x, mean_a[None]), copy.log_px_z(x, mean_b[None]))
            torch.manual_seed(5)
            a = model.loss(x)
            torch.manual_seed(5)
            b = copy.loss(x)
        assert torch.equal(a.loss, b.loss) and torch.equal(a.objective, b.objective)

    def test_same_seed_same_loss(self, name):
        x = sentences()
        losses = []
        for _ in range(2):
            model = build(name, seed=3).train()
            torch.manual_seed(4)
            losses.append(model.loss(x, 0.3).loss)
        assert torch.equal(losses[0], losses[1])

    def test_validation_objective_is_finite(self, name):
        model = build(name).eval()
        with torch.no_grad():
            terms = model.loss(sentences())
        assert terms.objective.shape == (6,) and torch.isfinite(terms.objective).all()

    def test_every_paper_grid_setting_resolves_and_builds(self, name):
        spec = registry.get(name)
        for setting in spec.settings("paper"):
            model = build(name, **setting)
            assert model.params == spec.resolve(setting)
            terms = model.loss(sentences(b=4), kl_weight=1.0)
            assert torch.isfinite(terms.loss), setting
