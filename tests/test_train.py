"""Trainer and runner: determinism, NaN guard, decay on plateau over every optimizer, what last.pt
holds, the training-noise generator. (SIGKILL + resume: tests/test_resume.py.)"""

from dataclasses import dataclass, replace

import pytest
import torch
from vae_collapse_bench.bench import data, registry
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.model import GaussianMethod, Reg
from vae_collapse_bench.bench.runner import Runner, RunSpec
from vae_collapse_bench.bench.store import RunStore, open_storage
from vae_collapse_bench.bench.train import Trainer, TrainingDiverged, seed_everything
from vae_collapse_bench.methods.vae import VAE

SMOKE = PROFILES["smoke"]
VAE_SEED0 = RunSpec("synthetic", "smoke", "vae", (), 0)


def run_once(root, results, spec=VAE_SEED0, profile=SMOKE):
    corpus = data.load_corpus("synthetic", root)
    store = RunStore(open_storage(None, results), "synthetic", profile.name)
    return Runner(store, corpus, profile, results).run(spec), store


def test_same_seed_same_metrics_and_different_seed_differs(synthetic_root, tmp_path):
    a, _ = run_once(synthetic_root, tmp_path / "a")
    b, _ = run_once(synthetic_root, tmp_path / "b")
    c, _ = run_once(synthetic_root, tmp_path / "c", RunSpec("synthetic", "smoke", "vae", (), 1))
    assert a.status == b.status == "done"
    assert a.metrics == b.metrics
    assert a.metrics != c.metrics
    assert a.run_key == b.run_key != c.run_key


def test_second_run_is_cached_and_provenance_is_stored(synthetic_root, tmp_path):
    first, store = run_once(synthetic_root, tmp_path)
    again, _ = run_once(synthetic_root, tmp_path)
    assert again.status == "cached" and again.metrics == first.metrics
    (trial,) = store.trials()
    attrs = trial.user_attrs
    for key in ("run_key", "training_key", "eval_key", "config_key", "identity", "config", "seed",
                "data_checksum", "versions", "wall_time_s", "peak_memory_mb", "command", "metrics",
                "eval_seconds", "eval_sizes", "history", "skipped_batches", "posterior_family", "torch_threads"):
        assert key in attrs, key
    assert attrs["versions"]["bench"] and attrs["versions"]["torch"]
    assert attrs["config"]["training"]["max_epochs"] == SMOKE.training.max_epochs
    assert set(attrs["metrics"]) == {"priorLL", "postLL", "KL", "MI", "AU", "CU", "IW-NLL", "PPL", "Rouge-L"}


@dataclass(frozen=True)
class NanParams:
    """at_step: the training step whose loss becomes NaN."""

    at_step: int = 3


class NanVAE(GaussianMethod):
    """Diverges on purpose."""

    Params = NanParams
    calls = 0

    def regularizer(self, q, z, x):
        NanVAE.calls += 1
        kl = q.kl_to_prior().mean()
        return Reg(kl * float("nan") if NanVAE.calls >= self.params.at_step else kl)


@pytest.fixture()
def nan_method():
    registry.register("nan-vae")(NanVAE)
    NanVAE.calls = 0
    yield
    registry._REGISTRY.pop("nan-vae")


def test_nan_loss_marks_the_run_failed_with_its_reason_and_the_sweep_goes_on(synthetic_root, tmp_path,
                                                                              nan_method):
    corpus = data.load_corpus("synthetic", synthetic_root)
    store = RunStore(open_storage(None, tmp_path), "synthetic", "smoke")
    runner = Runner(store, corpus, SMOKE, tmp_path)
    bad, good = runner.run_all([RunSpec("synthetic", "smoke", "nan-vae", (("at_step", 3),), 0),
                                RunSpec("synthetic", "smoke", "vae", (), 0)])
    assert bad.status == "failed" and "training loss became nan" in bad.reason and "epoch 1" in bad.reason
    assert good.status == "done"
    states = sorted(t.state.name for t in store.trials())
    assert states == ["COMPLETE", "FAIL"]
    again = runner.run(RunSpec("synthetic", "smoke", "nan-vae", (("at_step", 3),), 0))
    assert again.status == "failed" and "failed before" in again.reason


def test_decay_on_plateau_reloads_best_and_stops_after_max_decays(synthetic_root, tmp_path, monkeypatch):
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(64, 32, 32)
    training = replace(SMOKE.training, max_epochs=50, patience=2, decay_from_epoch=3, max_decays=2)
    seed_everything(0)
    model = VAE(len(corpus.vocab), SMOKE.backbone)
    # validation objectives by epoch: best at epoch 2; no decay before epoch 3; plateau of 2 -> decay
    objectives = iter([5.0, 4.0, 4.5, 4.6, 4.7, 3.0, 3.5, 3.6, 9.9])
    records, reloaded = [], []

    def on_epoch(record):
        records.append(record)
        if "decayed_to" in record:
            best = torch.load(tmp_path / "best.pt")
            reloaded.append(all(torch.equal(best[k], v) for k, v in model.state_dict().items()))

    trainer = Trainer(model, corpus, training, 0, tmp_path, on_epoch=on_epoch)
    monkeypatch.setattr(trainer, "validate", lambda split: {"valid_objective": next(objectives),
                                                            "valid_rec": 0.0, "valid_kl": 0.0})
    state = trainer.fit()
    # epoch 4: two bad epochs (3, 4) since the best (2), epoch >= 3 -> lr 0.25; epoch 6 new best;
    # epochs 7, 8 bad -> lr 0.125 = second decay -> stop
    assert [r["epoch"] for r in records if "decayed_to" in r] == [4, 8]
    assert [r["decayed_to"] for r in records if "decayed_to" in r] == [0.25, 0.125]
    assert state.finished and state.epoch == 8 and state.decays == 2 and state.best_epoch == 6
    assert reloaded == [True, True]


class TwoSpeedVAE(VAE):
    """Two optimizers: the decoder at twice the lr of the rest."""

    def configure_optimizers(self, training):
        decoder = list(self.decoder.parameters())
        rest = [p for p in self.parameters() if all(p is not d for d in decoder)]
        return [torch.optim.SGD(rest, lr=training.lr), torch.optim.SGD(decoder, lr=2 * training.lr)]


def test_decay_halves_every_optimizers_lr_and_last_pt_holds_every_optimizer_and_the_noise(synthetic_root,
                                                                                          tmp_path, monkeypatch):
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(64, 32, 32)
    # patience 0: a decay after every epoch
    training = replace(SMOKE.training, max_epochs=3, patience=0, decay_from_epoch=1, max_decays=5)
    seed_everything(0)
    model = TwoSpeedVAE(len(corpus.vocab), SMOKE.backbone)
    checkpoints, noise_in_validation = [], []

    def on_epoch(record):
        ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
        if "model" in ckpt:
            checkpoints.append(ckpt)

    trainer = Trainer(model, corpus, training, 0, tmp_path, on_epoch=on_epoch)
    validate = trainer.validate

    def recording(split):
        noise_in_validation.append(model.noise)
        return validate(split)

    monkeypatch.setattr(trainer, "validate", recording)
    state = trainer.fit()
    assert state.decays == 3 and model.noise is None and noise_in_validation == [None] * 3
    assert [opt.param_groups[0]["lr"] for opt in trainer.optimizers] == [0.0625, 0.125]
    assert len(checkpoints) == 2  # the last epoch leaves the state alone
    for ckpt, lrs in zip(checkpoints, ([0.25, 0.5], [0.125, 0.25])):
        assert [o["param_groups"][0]["lr"] for o in ckpt["optimizers"]] == lrs  # the ratio is kept
        assert "optimizer" not in ckpt and torch.is_tensor(ckpt["rng"]["noise"])
    assert not torch.equal(checkpoints[0]["rng"]["noise"], checkpoints[1]["rng"]["noise"])  # it drew


def test_the_training_noise_is_a_stream_of_its_own_seeded_from_the_run_seed(synthetic_root, tmp_path):
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(32, 32, 32)
    model = VAE(len(corpus.vocab), SMOKE.backbone)
    seeds = [Trainer(model, corpus, SMOKE.training, seed, tmp_path / str(i)).noise.initial_seed()
             for i, seed in enumerate((0, 0, 1))]
    assert seeds[0] == seeds[1] != seeds[2]
    assert seeds[0] != 0  # not the data order's generator, which is seeded with the run seed itself


def test_trainer_raises_on_nonfinite_validation(synthetic_root, tmp_path):
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(32, 32, 32)
    model = VAE(len(corpus.vocab), SMOKE.backbone)
    trainer = Trainer(model, corpus, SMOKE.training, 0, tmp_path)
    with torch.no_grad():
        model.decoder.out.weight.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match="validation objective"):
        trainer.validate(corpus.splits["valid"])


def test_a_new_evaluator_config_evaluates_the_stored_checkpoint_and_never_retrains(synthetic_root, tmp_path):
    first, store = run_once(synthetic_root, tmp_path)
    (ckpt,) = (tmp_path / "checkpoints").iterdir()
    best = ckpt / "best.pt"
    stamp = best.stat().st_mtime_ns
    more_k = replace(SMOKE, evaluation=replace(SMOKE.evaluation, iw_samples=16))
    second, _ = run_once(synthetic_root, tmp_path, profile=more_k)
    assert second.status == "evaluated" and second.run_key == first.run_key
    assert best.stat().st_mtime_ns == stamp and [p.name for p in (tmp_path / "checkpoints").iterdir()] == [ckpt.name]
    done = [t for t in store.trials() if t.state.name == "COMPLETE"]
    assert len(done) == 2 and done[0].user_attrs["eval_key"] != done[1].user_attrs["eval_key"]
    assert done[1].user_attrs["eval_sizes"]["K_iw"] == 16 and done[0].user_attrs["eval_sizes"]["K_iw"] == 8
    assert done[1].user_attrs["history"] == done[0].user_attrs["history"]  # carried over, not retrained
    assert second.metrics["IW-NLL"] != first.metrics["IW-NLL"]
    assert run_once(synthetic_root, tmp_path, profile=more_k)[0].status == "cached"


def test_a_new_training_config_trains_again(synthetic_root, tmp_path):
    first, _ = run_once(synthetic_root, tmp_path)
    longer = replace(SMOKE, training=replace(SMOKE.training, max_epochs=3))
    second, _ = run_once(synthetic_root, tmp_path, profile=longer)
    assert second.status == "done" and second.run_key != first.run_key


def test_nonfinite_metric_marks_the_run_failed_naming_the_metric(synthetic_root, tmp_path, monkeypatch):
    from vae_collapse_bench.bench import runner as bench_runner

    real = bench_runner.evaluate

    def broken(model, *args, **kwargs):
        result = real(model, *args, **kwargs)
        result.metrics["postLL"] = float("nan")
        return result

    monkeypatch.setattr(bench_runner, "evaluate", broken)
    corpus = data.load_corpus("synthetic", synthetic_root)
    store = RunStore(open_storage(None, tmp_path), "synthetic", "smoke")
    runner = Runner(store, corpus, SMOKE, tmp_path)
    bad, other = runner.run_all([VAE_SEED0, RunSpec("synthetic", "smoke", "vae", (), 1)])
    assert bad.status == other.status == "failed" and "postLL = nan" in bad.reason
    assert [t.state.name for t in store.trials()] == ["FAIL", "FAIL"]
    assert runner.run(VAE_SEED0).status == "failed"  # deterministic: not retried without --retry-failed
    monkeypatch.setattr(bench_runner, "evaluate", real)
    retry = Runner(store, corpus, SMOKE, tmp_path, retry_failed=True).run(VAE_SEED0)
    assert retry.status == "done"


class AllEpochsVAE(VAE):
    needs_all_epochs = True


@pytest.mark.parametrize(("cls", "epochs"), [(VAE, 1), (AllEpochsVAE, 3)])
def test_a_method_that_needs_all_epochs_is_not_stopped_by_max_decays(synthetic_root, tmp_path, cls, epochs):
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(64, 32, 32)
    # patience 0: a decay after every epoch; max_decays 1 would stop after epoch 1
    training = replace(SMOKE.training, max_epochs=3, patience=0, decay_from_epoch=1, max_decays=1)
    seed_everything(0)
    state = Trainer(cls(len(corpus.vocab), SMOKE.backbone), corpus, training, 0, tmp_path).fit()
    assert state.epoch == epochs and state.decays == epochs


def test_dg_vae_agg_32_skips_short_batches_and_trains_differently_from_default(synthetic_root, tmp_path):
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(1500, 32, 32)
    training = replace(SMOKE.training, max_epochs=1)
    chunks = data.length_batch_indices([len(s) for s in corpus.splits["train"].sentences], 32)
    short = [c for c in chunks if len(c) < 32]
    assert short and len(short) < len(chunks)  # the length buckets leave short batches
    histories = {}
    for agg in (32, "default"):
        method = registry.get("dg-vae")
        seed_everything(0)
        model = method.cls(len(corpus.vocab), SMOKE.backbone, method.resolve({"agg": agg}))
        trainer = Trainer(model, corpus, training, 0, tmp_path / str(agg))
        histories[agg] = trainer.fit().history[0]
        assert trainer.steps_per_epoch() == len(chunks) - (len(short) if agg == 32 else
                                                           sum(len(c) < 2 for c in chunks))
    assert histories[32]["skipped_batches"] == len(short)
    assert histories[32]["skipped_sentences"] == sum(map(len, short))
    assert histories["default"]["skipped_batches"] == sum(len(c) < 2 for c in chunks)
    assert histories[32]["train_loss"] != histories["default"]["train_loss"]
    assert histories[32]["train_dg"] != histories["default"]["train_dg"]


def test_training_records_the_methods_logs_per_epoch(synthetic_root, tmp_path):
    _, store = run_once(synthetic_root, tmp_path, RunSpec("synthetic", "smoke", "dg-vae",
                                                          (("agg", "default"), ("m", 32)), 0))
    (trial,) = store.trials()
    record = trial.user_attrs["history"][0]
    for key in ("train_dg", "train_kl", "train_reg", "skipped_batches", "skipped_sentences"):
        assert key in record, key
    assert record["train_dg"] == pytest.approx(record["train_reg"])  # DG is dg-vae's regularizer


def test_a_run_whose_every_batch_is_skipped_fails_instead_of_evaluating_the_initialisation(synthetic_root,
                                                                                           tmp_path):
    corpus = data.load_corpus("synthetic", synthetic_root)
    store = RunStore(open_storage(None, tmp_path), "synthetic", "smoke")
    runner = Runner(store, corpus, SMOKE, tmp_path)  # smoke: 256 sentences, no length bucket holds 32
    outcome = runner.run(RunSpec("synthetic", "smoke", "dg-vae", (("agg", 32), ("m", 32)), 0))
    assert outcome.status == "failed" and "no training batch has 32 or more sentences" in outcome.reason
    assert runner.run(RunSpec("synthetic", "smoke", "dg-vae", (("agg", 32), ("m", 32)), 0)).status == "failed"
