"""pretrain-fb-vae: the autoencoder phase's length, the switch (best pretrained weights reloaded,
decoder re-initialised, encoder kept; lr, schedule and checkpoint selection start over), the phases
in the history, and a resume across the switch."""

import copy
import dataclasses

import pytest
import torch
from helpers import sentences, tiny_backbone
from vae_collapse_bench.bench import data
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.model import EpochContext, init_uniform
from vae_collapse_bench.bench.train import Trainer, seed_everything
from vae_collapse_bench.methods.pretrain_fb_vae import (
    FREE_BITS,
    PRETRAIN,
    PretrainFBParams,
    PretrainFBVAE,
    pretrain_epochs,
)

SMOKE = PROFILES["smoke"]


@pytest.mark.parametrize("share,max_epochs,expected", [(0.5, 40, 20), (0.5, 100, 50), (0.3, 10, 3),
                                                       (0.01, 40, 1), (1.0, 40, 39), (0.5, 2, 1)])
def test_the_pretraining_phase_takes_its_share_of_the_epochs(share, max_epochs, expected):
    assert pretrain_epochs(share, max_epochs) == expected


def test_params_resolve_like_fb_vae():
    assert PretrainFBParams(free_bits=9, pretrain=1) == PretrainFBParams(free_bits=9.0, pretrain=1.0)
    for bad in ({"pretrain": 0.0}, {"pretrain": 1.5}, {"free_bits": -1.0}):
        with pytest.raises(ValueError):
            PretrainFBParams(**bad)


def test_the_autoencoder_phase_has_no_regularizer_and_free_bits_has_fb_vaes():
    torch.manual_seed(0)
    model = PretrainFBVAE(20, tiny_backbone(), PretrainFBParams(free_bits=1.0)).eval()
    x = sentences()
    with torch.no_grad():
        assert model.loss(x).reg == 0
        model.phase = FREE_BITS
        q = model.encode(x)
        expected = q.kl_to_prior_dims().clamp_min(1.0 / 4).sum(-1).mean()
        assert torch.allclose(model.loss(x).reg, expected)


def test_begin_phase_reinitialises_the_decoder_as_at_construction_and_keeps_the_encoder():
    torch.manual_seed(0)
    model = PretrainFBVAE(20, tiny_backbone())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "trained": far from any initialisation
    encoder = copy.deepcopy(model.encoder.state_dict())
    decoder = copy.deepcopy(model.decoder)
    torch.manual_seed(7)
    model.begin_phase(FREE_BITS)
    torch.manual_seed(7)
    init_uniform(decoder)
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, encoder[k]), k
    for (k, v), fresh in zip(model.decoder.state_dict().items(), decoder.state_dict().values()):
        assert torch.equal(v, fresh), k
        assert v.abs().max() <= (0.1 if "embed" in k else 0.01)


def context(phase, phase_epochs, stopping=False, max_epochs=10, history=(), record=None):
    return EpochContext(epoch=len(history) + 1, phase=phase, phase_epochs=phase_epochs, stopping=stopping,
                        training=dataclasses.replace(SMOKE.training, max_epochs=max_epochs),
                        record=record or {"epoch": len(history) + 1, "valid_objective": 1.0},
                        history=list(history), held_out=lambda: iter(()))


def test_the_phase_ends_after_its_share_or_when_the_trainer_would_stop():
    model = PretrainFBVAE(20, tiny_backbone(), PretrainFBParams(pretrain=0.5))
    history = [{"epoch": e, "valid_objective": v} for e, v in [(1, 5.0), (2, 3.0), (3, 3.0), (4, 4.0)]]
    assert not model.end_epoch(context(PRETRAIN, 4, history=history[:3], record=history[3])).next_phase
    end = model.end_epoch(context(PRETRAIN, 5, history=history, record={"epoch": 5, "valid_objective": 3.5}))
    assert end.next_phase and end.restart and end.record == {"phase": "pretrain", "pretrain_best_epoch": 2}
    stop = model.end_epoch(context(PRETRAIN, 2, stopping=True, history=history[:1], record=history[1]))
    assert stop.next_phase and stop.restart and stop.record["pretrain_best_epoch"] == 2
    assert model.end_epoch(context(FREE_BITS, 1)).record == {"phase": "free-bits"}
    assert not model.end_epoch(context(FREE_BITS, 9, stopping=True)).next_phase


@pytest.fixture(scope="module")
def smoke_corpus(synthetic_root):
    t = SMOKE.training
    return data.load_corpus("synthetic", synthetic_root).truncated(t.max_train, t.max_valid)


TRAINING = dataclasses.replace(SMOKE.training, max_epochs=4, max_decays=3)


def build(corpus):
    seed_everything(0)
    return PretrainFBVAE(len(corpus.vocab), SMOKE.backbone, PretrainFBParams(free_bits=2.0, pretrain=0.5))


def test_the_switch_reloads_the_best_pretrained_weights_resets_the_decoder_and_starts_training_over(
        smoke_corpus, tmp_path, monkeypatch):
    model = build(smoke_corpus)
    seen, weights = [], []
    original_begin, original_weight = PretrainFBVAE.begin_phase, PretrainFBVAE.kl_weight

    def begin_phase(self, phase):
        best = torch.load(tmp_path / "best.pt")
        seen.append({k: torch.equal(v, best[k]) for k, v in self.state_dict().items()})
        original_begin(self, phase)
        seen.append({k: torch.equal(v, best[k]) for k, v in self.state_dict().items()})

    def kl_weight(self, step, steps_per_epoch, training):
        weights.append((self.phase, step))
        return original_weight(self, step, steps_per_epoch, training)

    monkeypatch.setattr(PretrainFBVAE, "begin_phase", begin_phase)
    monkeypatch.setattr(PretrainFBVAE, "kl_weight", kl_weight)
    state = Trainer(model, smoke_corpus, TRAINING, 0, tmp_path).fit()
    before, after = seen
    assert all(before.values())  # the best pretrained weights, reloaded
    assert all(same for k, same in after.items() if k.startswith("encoder."))  # encoder kept
    assert not any(same for k, same in after.items() if k.startswith("decoder."))  # decoder re-initialised
    history = state.history
    assert [r["phase"] for r in history] == ["pretrain", "pretrain", "free-bits", "free-bits"]
    best_pretrain = min(history[:2], key=lambda r: r["valid_objective"])["epoch"]
    assert history[1]["pretrain_best_epoch"] == best_pretrain
    assert [r["train_reg"] == 0 for r in history] == [True, True, False, False]
    assert history[2]["lr"] == TRAINING.lr  # lr back to its start, whatever pretraining decayed
    assert state.phase == FREE_BITS and state.best_epoch >= 3  # the result is a free-bits checkpoint
    first_free_bits = next(step for phase, step in weights if phase == FREE_BITS)
    assert first_free_bits == 0  # the KL annealing starts over


def test_a_run_resumed_across_the_switch_ends_as_an_uninterrupted_one(smoke_corpus, tmp_path):
    class Stop(Exception):
        pass

    def stop_after(epochs):
        def on_epoch(record):
            if record["epoch"] == epochs:
                raise Stop

        return on_epoch

    full = Trainer(build(smoke_corpus), smoke_corpus, TRAINING, 0, tmp_path / "full").fit()
    for epochs in (2, 3):  # killed right after the switch, and one epoch into free bits
        workdir = tmp_path / f"stopped{epochs}"
        with pytest.raises(Stop):
            Trainer(build(smoke_corpus), smoke_corpus, TRAINING, 0, workdir, on_epoch=stop_after(epochs)).fit()
        torch.manual_seed(123)  # the resumed process's RNG is not the interrupted one's
        resumed = Trainer(build(smoke_corpus), smoke_corpus, TRAINING, 0, workdir).fit()
        strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
        assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
        got, expected = torch.load(workdir / "best.pt"), torch.load(tmp_path / "full" / "best.pt")
        assert got.keys() == expected.keys() and all(torch.equal(v, expected[k]) for k, v in got.items())
