"""aggressive-vae: the inner loop's stopping rule (by hand, and on a tiny model), who moves when, the
held-out MI check that ends the aggressive phase (recorded in the history, never reverted), and
vae's step once the phase is over."""

import dataclasses
import math

import pytest
import torch
from helpers import sentences, tiny_backbone
from vae_collapse_bench.bench import data
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.model import StepContext
from vae_collapse_bench.bench.train import Trainer, seed_everything
from vae_collapse_bench.methods import aggressive_vae
from vae_collapse_bench.methods.aggressive_vae import AGGRESSIVE, PLAIN, AggressiveParams, AggressiveVAE, InnerLoopRule
from vae_collapse_bench.methods.vae import VAE

SMOKE = PROFILES["smoke"]
BB = tiny_backbone(dec_dropout_in=0.0, dec_dropout_out=0.0)


def stops_at(rule, steps):
    """The step (1-based) at which `rule` says stop, feeding (loss_sum, tokens) pairs; None if never."""
    for i, (loss_sum, tokens) in enumerate(steps, 1):
        if rule.update(loss_sum, tokens):
            return i
    return None


def test_the_rule_compares_each_windows_loss_per_token_with_the_previous_windows():
    # window 2: per-token means 18/4 = 4.5 (vs inf), 16/4 = 4.0 (better), 19/4 = 4.75 (worse): stop at step 6
    assert stops_at(InnerLoopRule(2), [(10, 2), (8, 2), (7, 2), (9, 2), (9, 2), (10, 2)]) == 6
    # a window as good as the one before does not stop the loop; the first window never does
    assert stops_at(InnerLoopRule(2), [(4, 1), (4, 1), (8, 2), (8, 2), (100, 1)]) is None
    assert stops_at(InnerLoopRule(3), [(9, 1)] * 3) is None
    # tokens weigh the windows: (10 + 2) / (2 + 1) = 4 against (9 + 3) / (1 + 2) = 4: not worse; then 5 > 4
    assert stops_at(InnerLoopRule(2), [(10, 2), (2, 1), (9, 1), (3, 2), (5, 1), (5, 1)]) == 6


def expected_stop(records, window, max_inner):
    """Independent replay of the rule on the recorded (loss_sum, tokens) of every encoder step."""
    previous = math.inf
    for end in range(window, len(records) + 1, window):
        chunk = records[end - window:end]
        current = sum(s for s, _ in chunk) / sum(t for _, t in chunk)
        if current > previous:
            return end
        previous = current
    return max_inner


def make_ctx(model, pool_seed=0):
    """A StepContext with the model's own optimizers and a sampler over a pool of random batches."""
    pool = [sentences(b=4, t=5 + i % 3, seed=pool_seed + i) for i in range(6)]
    pick = torch.Generator().manual_seed(pool_seed)
    return StepContext(kl_weight=0.5, optimizers=model.configure_optimizers(SMOKE.training), clip_grad=5.0,
                       sample_batch=lambda: pool[int(torch.randint(len(pool), (1,), generator=pick))])


@pytest.mark.parametrize("window,max_inner", [(2, 100), (3, 100), (4, 9), (50, 7)])
def test_the_inner_loop_stops_by_its_rule_on_a_tiny_model(monkeypatch, window, max_inner):
    records = []

    class Recording(InnerLoopRule):
        def update(self, loss_sum, tokens):
            records.append((loss_sum, tokens))
            return super().update(loss_sum, tokens)

    monkeypatch.setattr(aggressive_vae, "InnerLoopRule", Recording)
    torch.manual_seed(0)
    model = AggressiveVAE(20, BB, AggressiveParams(max_inner=max_inner, window=window)).train()
    model.noise = torch.Generator().manual_seed(1)
    terms = model.training_step(sentences(b=4), make_ctx(model))
    steps = int(terms.logs["inner_steps"])
    assert steps == len(records) == expected_stop(records, window, max_inner)
    # predicted tokens: x (4 x 6) first, then pool batches of 4 sentences of 5 to 7 tokens
    assert records[0][1] == 4 * 5 and {t for _, t in records} <= {16, 20, 24}
    if max_inner == 100:  # the rule, not the cap, ended the loop: after a worse window
        assert steps < max_inner and steps % window == 0 and steps >= 2 * window
    if window > max_inner:
        assert steps == max_inner  # no comparison ever happens: the cap ends it


def test_the_inner_loop_moves_the_encoder_only_and_the_final_step_the_decoder_only():
    torch.manual_seed(0)
    model = AggressiveVAE(20, BB, AggressiveParams(max_inner=4, window=2)).train()
    model.noise = torch.Generator().manual_seed(0)
    ctx = make_ctx(model)
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    model.train_encoder(sentences(b=4), ctx, ctx.optimizers[0])
    assert all(torch.equal(v, decoder[k]) for k, v in model.decoder.state_dict().items())
    assert not any(torch.equal(v, encoder[k]) for k, v in model.encoder.state_dict().items())
    # a whole step: the decoder moves once, after the encoder's loop, which the final step leaves alone
    steps = []
    original = AggressiveVAE.train_encoder

    def spy(self, x, ctx, optimizer):
        out = original(self, x, ctx, optimizer)
        steps.append({k: v.clone() for k, v in self.encoder.state_dict().items()})
        return out

    AggressiveVAE.train_encoder = spy
    try:
        decoder = {k: v.clone() for k, v in model.decoder.state_dict().items()}
        model.training_step(sentences(b=4, seed=9), ctx)
    finally:
        AggressiveVAE.train_encoder = original
    assert all(torch.equal(v, steps[0][k]) for k, v in model.encoder.state_dict().items())
    assert not all(torch.equal(v, decoder[k]) for k, v in model.decoder.state_dict().items())


def test_after_the_aggressive_phase_every_step_is_vaes():
    models = []
    for cls in (AggressiveVAE, VAE):
        torch.manual_seed(0)
        models.append(cls(20, tiny_backbone(), None).train())  # with dropout: the global RNG too
    aggressive, vae = models
    aggressive.phase = PLAIN
    assert all(torch.equal(a, b) for a, b in zip(aggressive.parameters(), vae.parameters()))
    optimizers = [m.configure_optimizers(SMOKE.training) for m in models]
    for step in range(3):
        for model, opts in zip(models, optimizers):
            model.noise = torch.Generator().manual_seed(step)
            torch.manual_seed(100 + step)
            model.training_step(sentences(b=5, seed=step), StepContext(kl_weight=0.3, optimizers=opts, clip_grad=0.05))
    for (name, a), b in zip(aggressive.named_parameters(), vae.parameters()):
        assert torch.equal(a, b), name
    # and the aggressive step differs (the comparison above can fail)
    aggressive.phase = AGGRESSIVE
    before = [p.clone() for p in aggressive.parameters()]
    aggressive.noise = torch.Generator().manual_seed(0)
    aggressive.training_step(sentences(b=5), StepContext(kl_weight=0.3, optimizers=optimizers[0], clip_grad=0.05))
    assert any(not torch.equal(a, b) for a, b in zip(aggressive.parameters(), before))


def test_the_held_out_mi_uses_the_same_draws_every_time():
    torch.manual_seed(0)
    model = AggressiveVAE(20, BB).eval()
    batches = [sentences(b=6, seed=s) for s in range(3)]
    with torch.no_grad():
        first, second = model.held_out_mi(batches), model.held_out_mi(batches)
    assert first == second and math.isfinite(first) and first <= math.log(18) + 1e-9


@pytest.fixture(scope="module")
def smoke_corpus(synthetic_root):
    t = SMOKE.training
    return data.load_corpus("synthetic", synthetic_root).truncated(t.max_train, t.max_valid)


def test_the_phase_ends_when_held_out_mi_falls_and_stays_ended_in_the_history(smoke_corpus, tmp_path, monkeypatch):
    mis = iter([0.4, 0.9, 0.7, 5.0, 6.0])  # rises, then falls at epoch 3
    monkeypatch.setattr(AggressiveVAE, "held_out_mi", lambda self, batches: next(mis))
    seed_everything(0)
    model = AggressiveVAE(len(smoke_corpus.vocab), SMOKE.backbone, AggressiveParams(max_inner=4, window=2))
    training = dataclasses.replace(SMOKE.training, max_epochs=5, max_decays=5)
    state = Trainer(model, smoke_corpus, training, 0, tmp_path).fit()
    history = state.history
    assert [r["aggressive"] for r in history] == [True, True, True, False, False]
    assert [r.get("held_out_mi") for r in history] == [0.4, 0.9, 0.7, None, None]
    assert [r.get("aggressive_ended", False) for r in history] == [False, False, True, False, False]
    assert all(1 <= r["train_inner_steps"] <= 4 for r in history[:3])
    assert all("train_inner_steps" not in r for r in history[3:])
    assert state.phase == PLAIN and state.decays > 0  # a decay reloaded best.pt; the phase stayed


def test_a_first_epoch_whose_mi_is_below_zero_ends_the_phase_at_once(smoke_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(AggressiveVAE, "held_out_mi", lambda self, batches: -0.01)
    seed_everything(0)
    model = AggressiveVAE(len(smoke_corpus.vocab), SMOKE.backbone, AggressiveParams(max_inner=3, window=2))
    state = Trainer(model, smoke_corpus, SMOKE.training, 0, tmp_path).fit()
    assert [r["aggressive"] for r in state.history] == [True, False]
    assert state.history[0]["aggressive_ended"] is True
