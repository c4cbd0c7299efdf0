"""The same tests for every registered method (built-in or plug-in), at smoke size.

Parametrised over `bench.registry.names()`, so a newly registered method is covered without edits:
it builds, its loss is finite with the shapes the trainer expects (rec and kl per sentence; reg,
objective and the named logs scalars), the regularizer and only it is weighted by w(t), one
`training_step` with its own optimizers moves every parameter it trains (encoder and decoder
included) and no buffer but running statistics, its training draws come from the trainer's
generator alone, its smallest training batch trains and a one-sentence batch validates, a
state_dict round trip reproduces it, the same seed gives the same loss, and every setting of its
paper grid resolves to its own hyperparameters and trains one step.
"""

import dataclasses
import functools
import io

import helpers
import pytest
import torch
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.model import StepContext

BB = PROFILES["smoke"].backbone
TRAINING = PROFILES["smoke"].training
VOCAB = 30

sentences = functools.partial(helpers.sentences, b=6, t=7, vocab=VOCAB)


def build(name, seed=0, **overrides):
    spec = registry.get(name)
    torch.manual_seed(seed)
    return spec.cls(VOCAB, BB, spec.resolve(overrides))


def train_one_step(model, x, noise_seed=0, kl_weight=0.5):
    """One `training_step` of `model` with its own optimizers and a noise generator seeded
    `noise_seed`, as the trainer runs it; returns (LossTerms, optimizers)."""
    optimizers = model.configure_optimizers(TRAINING)
    model.noise = torch.Generator().manual_seed(noise_seed)
    ctx = StepContext(kl_weight=kl_weight, optimizers=optimizers, clip_grad=TRAINING.clip_grad)
    try:
        return model.training_step(x, ctx), optimizers
    finally:
        model.noise = None


@pytest.mark.parametrize("name", registry.names())
class TestMethod:
    def test_loss_is_finite_with_the_shapes_the_trainer_expects(self, name):
        model = build(name).train()
        terms = model.loss(sentences(), kl_weight=0.5)
        assert terms.loss.shape == () and torch.isfinite(terms.loss)
        for t in (terms.rec, terms.kl):
            assert t.shape == (6,) and torch.isfinite(t).all()
        assert terms.reg.shape == () and torch.isfinite(terms.reg)
        for log_name, value in terms.logs.items():  # the trainer averages these per epoch
            assert log_name not in ("kl", "reg"), f"log {log_name!r} would overwrite the trainer's own"
            assert torch.as_tensor(value).shape == () and not torch.as_tensor(value).requires_grad
            assert torch.isfinite(torch.as_tensor(value))

    def test_one_training_step_moves_every_trained_parameter_and_no_buffer_but_running_statistics(self, name):
        model = build(name).train()
        params = dict(model.named_parameters())
        before = {k: v.detach().clone() for k, v in params.items()}
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        running = {f"{module_name}.{b}".lstrip(".") for module_name, module in model.named_modules()
                   if getattr(module, "track_running_stats", False) for b, _ in module.named_buffers(recurse=False)}
        terms, optimizers = train_one_step(model, sentences(b=max(6, model.min_batch_size)))
        assert terms.loss.shape == () and torch.isfinite(terms.loss)
        for log_name, value in terms.logs.items():
            assert torch.as_tensor(value).shape == () and not torch.as_tensor(value).requires_grad, log_name
        held = [p for opt in optimizers for group in opt.param_groups for p in group["params"]]
        assert len({id(p) for p in held}) == len(held), "a parameter is held by two optimizers"
        trained = {id(p) for p in held if p.requires_grad}
        for pname, p in params.items():
            assert id(p) in trained or not p.requires_grad, f"{pname} requires grad but no optimizer holds it"
            if id(p) in trained:
                assert torch.isfinite(p).all(), pname
                assert not torch.equal(p, before[pname]), f"{pname} did not move"
            else:
                assert torch.equal(p, before[pname]), f"{pname} is not trained but moved"
        for bname, value in model.named_buffers():
            if bname not in running:  # e.g. BN-VAE's fixed gamma
                assert torch.equal(value, buffers[bname]), f"buffer {bname} changed"

    def test_training_draws_come_from_the_trainers_generator_alone(self, name):
        # without dropout (which draws from the global RNG) a training step is a function of the
        # weights, the batch and the noise generator: the global RNG is neither read nor advanced
        bb = dataclasses.replace(BB, dec_dropout_in=0.0, dec_dropout_out=0.0)
        spec = registry.get(name)
        weights = []
        for global_seed in (1, 2):
            torch.manual_seed(0)
            model = spec.cls(VOCAB, bb, spec.resolve({})).train()
            x = sentences(b=max(6, model.min_batch_size))  # fixed tokens, whatever the global RNG
            torch.manual_seed(global_seed)
            state = torch.get_rng_state()
            train_one_step(model, x, noise_seed=3)
            assert torch.equal(torch.get_rng_state(), state), "a training draw used the global RNG"
            weights.append(model.state_dict())
        for key, value in weights[0].items():
            assert torch.equal(value, weights[1][key]), key

    def test_only_the_regularizer_is_weighted_by_the_schedule(self, name):
        # the same draws with w = 0 and w = 1: the losses differ by exactly the regularizer
        model = build(name).train()
        x = sentences()
        torch.manual_seed(4)
        off = model.loss(x, kl_weight=0.0)
        torch.manual_seed(4)
        on = model.loss(x, kl_weight=1.0)
        assert torch.equal(off.reg, on.reg) and torch.equal(off.rec, on.rec)
        assert torch.allclose(on.loss - off.loss, on.reg, rtol=1e-5, atol=1e-5)

    def test_the_smallest_training_batch_trains_and_one_sentence_validates(self, name):
        model = build(name).train()
        smallest = model.min_batch_size
        assert isinstance(smallest, int) and smallest >= 2
        terms = model.loss(sentences(b=smallest), kl_weight=1.0)
        assert torch.isfinite(terms.loss)
        terms.loss.backward()
        # length-bucketed validation batches without padding can hold one sentence: it is scored
        with torch.no_grad():
            one = model.eval().loss(sentences(b=1))
        assert torch.isfinite(one.objective) and one.rec.shape == (1,)

    def test_state_dict_round_trip_gives_identical_outputs(self, name):
        model = build(name).train()
        x = sentences()
        train_one_step(model, x, kl_weight=1.0)  # one step: weights (and running statistics) move
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
        assert terms.objective.shape == () and torch.isfinite(terms.objective)
        assert torch.allclose(terms.objective, terms.rec.mean() + terms.reg)

    def test_every_paper_grid_setting_resolves_to_its_own_params_and_trains(self, name):
        spec = registry.get(name)
        settings = spec.settings("paper")
        resolved = []
        for setting in settings:
            model = build(name, **setting)
            values = dataclasses.asdict(model.params)
            for key, value in setting.items():  # the setting reaches the model, not a default
                assert values[key] == value, (setting, values)
            resolved.append(tuple(sorted(values.items())))
            terms = model.loss(sentences(b=max(4, model.min_batch_size)), kl_weight=1.0)
            assert torch.isfinite(terms.loss), setting
        assert len(set(resolved)) == len(settings)  # no two grid settings are the same run
