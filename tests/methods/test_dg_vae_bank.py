"""dg-vae-bank: the FIFO bank (order, size, no gradients, checkpointed, ignored in eval mode), the
density gap against batch + bank (against a float64 reference, values and gradients), and Q = 0 (or an
empty bank) as dg-vae exactly."""

import dataclasses
import math

import pytest
import torch
from helpers import sentences, tiny_backbone
from vae_collapse_bench.bench import data, registry
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.model import StepContext
from vae_collapse_bench.bench.train import Trainer, seed_everything
from vae_collapse_bench.methods.dg_vae import density_gap_kl
from vae_collapse_bench.methods.dg_vae_bank import BankParams, DGVAEBank, PosteriorBank, bank_density_gap_kl

SMOKE = PROFILES["smoke"]


def rows(start, count, dim=2):
    """count rows of (mean, log sigma) whose mean is the row's number: start, start + 1, ..."""
    ids = torch.arange(start, start + count, dtype=torch.float32)
    return ids[:, None].expand(count, dim), -ids[:, None].expand(count, dim)


def test_the_bank_keeps_fifo_order_and_size():
    bank = PosteriorBank(5, 2)
    assert len(bank) == 0 and bank.contents()[0].shape == (0, 2)
    for start, count, expected in [(0, 2, [0, 1]), (2, 2, [0, 1, 2, 3]), (4, 3, [2, 3, 4, 5, 6]),
                                   (7, 1, [3, 4, 5, 6, 7]), (8, 7, [10, 11, 12, 13, 14])]:
        bank.push(*rows(start, count))
        loc, log_sd = bank.contents()
        assert len(bank) == len(expected) and loc[:, 0].tolist() == expected  # oldest first
        assert torch.equal(log_sd, -loc)
    assert bank.entries.shape == (5, 2, 2)  # Q x 2D floats, whatever was pushed


def test_a_bank_of_size_zero_stays_empty():
    bank = PosteriorBank(0, 3)
    bank.push(*rows(0, 4, dim=3))
    assert len(bank) == 0 and bank.contents()[0].shape == (0, 3)


def test_bank_size_must_be_a_non_negative_integer():
    assert BankParams(bank=0).bank == 0 and BankParams(bank=2**20).bank == 2**20
    for bad in (-1, 2.5, True, "8", 2**20 + 1, 10**40):
        with pytest.raises(ValueError, match=r"bank must be an integer in \[0, 1048576\]"):
            BankParams(bank=bad)
    with pytest.raises(BenchError, match="bank"):
        registry.get("dg-vae-bank").resolve({"bank": "-3"})


def reference_gap(loc, std, bank_loc, bank_log_sd, eps):
    """Float64, by broadcasting every sample against every component: Eq. 11 with the batch + bank mixture."""
    z = loc[:, None, :] + std[:, None, :] * eps  # [B, M, D]
    z = z.reshape(-1, 1, loc.shape[1])
    comp_loc = torch.cat([loc, bank_loc])[None]
    comp_sd = torch.cat([std, bank_log_sd.exp()])[None]
    log_n = -0.5 * ((z - comp_loc) / comp_sd) ** 2 - comp_sd.log() - 0.5 * math.log(2 * math.pi)
    log_q = torch.logsumexp(log_n, dim=1) - math.log(comp_loc.shape[1])
    log_p = -0.5 * z[:, 0] ** 2 - 0.5 * math.log(2 * math.pi)
    return (log_q - log_p).mean(0).sum()


@pytest.mark.parametrize("spread", [0.5, 3.0])
def test_the_bank_gap_matches_a_float64_reference_in_value_and_gradient(spread):
    g = torch.Generator().manual_seed(0)
    b, n, m, d = 5, 7, 3, 4
    loc = (spread * torch.randn(b, d, generator=g, dtype=torch.float64)).requires_grad_()
    std = torch.exp(0.5 * torch.randn(b, d, generator=g, dtype=torch.float64)).requires_grad_()
    bank_loc = spread * torch.randn(n, d, generator=g, dtype=torch.float64)
    bank_log_sd = 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    eps = torch.randn(b, m, d, generator=g, dtype=torch.float64)
    fast = bank_density_gap_kl(loc, std, bank_loc, bank_log_sd, eps)
    slow = reference_gap(loc, std, bank_loc, bank_log_sd, eps)
    assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-10)
    fast_grads = torch.autograd.grad(fast, (loc, std))
    slow_grads = torch.autograd.grad(slow, (loc, std))
    for a, b_ in zip(fast_grads, slow_grads):
        assert torch.allclose(a, b_, rtol=1e-8, atol=1e-10)


def test_the_bank_components_get_their_gradient_only_when_asked():
    g = torch.Generator().manual_seed(1)
    loc, std = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.ones(3, 2, dtype=torch.float64)
    bank_loc = torch.randn(4, 2, generator=g, dtype=torch.float64).requires_grad_()
    bank_log_sd = torch.zeros(4, 2, dtype=torch.float64).requires_grad_()
    eps = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    grads = torch.autograd.grad(bank_density_gap_kl(loc, std, bank_loc, bank_log_sd, eps), (bank_loc, bank_log_sd))
    expected = torch.autograd.grad(reference_gap(loc, std, bank_loc, bank_log_sd, eps), (bank_loc, bank_log_sd))
    for a, b in zip(grads, expected):
        assert torch.allclose(a, b, rtol=1e-8, atol=1e-10)


def test_with_an_empty_bank_the_gap_is_dg_vaes():
    g = torch.Generator().manual_seed(2)
    loc, std = torch.randn(6, 3, generator=g), torch.exp(0.3 * torch.randn(6, 3, generator=g))
    eps = torch.randn(6, 4, 3, generator=g)
    empty = torch.zeros(0, 3)
    assert torch.allclose(bank_density_gap_kl(loc, std, empty, empty, eps),
                          density_gap_kl(loc, std, "default", eps=eps), rtol=1e-6, atol=1e-6)


def train_step(model, x, noise_seed):
    optimizers = model.configure_optimizers(SMOKE.training)
    model.noise = torch.Generator().manual_seed(noise_seed)
    try:
        return model.training_step(x, StepContext(kl_weight=1.0, optimizers=optimizers, clip_grad=5.0))
    finally:
        model.noise = None


def build(bank, seed=0, bb=None):
    torch.manual_seed(seed)
    return DGVAEBank(20, bb or tiny_backbone(), BankParams(bank=bank)).train()


def test_a_training_step_fills_the_bank_with_the_detached_posteriors_and_no_gradient_reaches_it():
    model = build(bank=10)
    x = sentences(b=4)
    with torch.no_grad():
        expected = model.encode(x)
    train_step(model, x, noise_seed=0)
    loc, log_sd = model.bank.contents()
    assert torch.allclose(loc, expected.loc) and torch.allclose(log_sd, expected.std.log())
    terms = train_step(model, sentences(b=4, seed=1), noise_seed=1)  # reads the bank
    assert terms.logs["bank_fill"] == 4.0 and len(model.bank) == 8
    for tensor in (model.bank.entries, model.bank.filled):
        assert not tensor.requires_grad and tensor.grad is None and tensor.grad_fn is None
    assert dict(model.named_buffers()).keys() >= {"bank.entries", "bank.filled"}  # in the state_dict
    assert not any("bank" in name for name, _ in model.named_parameters())


def test_eval_mode_neither_reads_nor_writes_the_bank():
    x = sentences(b=4)
    filled, empty = build(bank=10), build(bank=10)
    train_step(filled, sentences(b=4, seed=3), noise_seed=0)
    empty.load_state_dict({k: v for k, v in filled.state_dict().items() if not k.startswith("bank.")}, strict=False)
    before = filled.bank.entries.clone()
    filled.eval(), empty.eval()
    with torch.no_grad():
        torch.manual_seed(5)
        a = filled.loss(x)
        torch.manual_seed(5)
        b = empty.loss(x)
    assert len(filled.bank) == 4 and len(empty.bank) == 0
    assert torch.equal(a.objective, b.objective) and a.logs["bank_fill"] == 0.0
    assert torch.equal(filled.bank.entries, before)


def test_a_full_bank_changes_the_term():
    model = build(bank=8)
    x = sentences(b=4)
    torch.manual_seed(0)
    alone = model.loss(x, 1.0).reg
    model.bank.push(torch.randn(8, 4), torch.zeros(8, 4))
    torch.manual_seed(0)
    assert not torch.equal(model.loss(x, 1.0).reg, alone)


def fit(name, params, corpus, workdir, training=SMOKE.training):
    spec = registry.get(name)
    seed_everything(0)
    model = spec.cls(len(corpus.vocab), SMOKE.backbone, spec.resolve(params))
    state = Trainer(model, corpus, training, 0, workdir).fit()
    return model, state


@pytest.fixture(scope="module")
def smoke_corpus(synthetic_root):
    t = SMOKE.training
    return data.load_corpus("synthetic", synthetic_root).truncated(t.max_train, t.max_valid)


def test_with_q_zero_a_run_is_dg_vaes_exactly(smoke_corpus, tmp_path):
    bank, bank_state = fit("dg-vae-bank", {"bank": 0}, smoke_corpus, tmp_path / "bank")
    dg, dg_state = fit("dg-vae", {}, smoke_corpus, tmp_path / "dg")
    shared = [k for k in dg_state.history[0] if k != "seconds"]
    assert [[r[k] for k in shared] for r in bank_state.history] == [[r[k] for k in shared] for r in dg_state.history]
    weights = dict(dg.named_parameters())
    for name, p in bank.named_parameters():
        assert torch.equal(p, weights[name]), name
    # and a bank that fills does change training (the comparison above can fail)
    _, filled_state = fit("dg-vae-bank", {"bank": 64}, smoke_corpus, tmp_path / "filled")
    assert filled_state.history[0]["train_loss"] != dg_state.history[0]["train_loss"]
    assert filled_state.history[0]["train_bank_fill"] > 0


def test_the_bank_carries_over_epochs_in_last_pt(smoke_corpus, tmp_path):
    spec = registry.get("dg-vae-bank")
    seed_everything(0)
    model = spec.cls(len(smoke_corpus.vocab), SMOKE.backbone, spec.resolve({"bank": 48}))
    saved = []
    trainer = Trainer(model, smoke_corpus, dataclasses.replace(SMOKE.training, max_epochs=3), 0, tmp_path,
                      on_epoch=lambda record: saved.append(torch.load(tmp_path / "last.pt", weights_only=False)))
    state = trainer.fit()
    first = saved[0]["model"]  # after epoch 1: the bank as training left it, full
    assert int(first["bank.filled"]) == 48 and first["bank.entries"].shape == (48, 2, SMOKE.backbone.latent_dim)
    # epoch 1 starts empty; epoch 2 starts where epoch 1 ended: every step reads a full bank
    assert 0 < state.history[0]["train_bank_fill"] < 48 and state.history[1]["train_bank_fill"] == 48
