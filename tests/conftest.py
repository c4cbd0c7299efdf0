"""Shared fixtures: a session-wide data directory holding the generated synthetic corpus, and the
path of the real corpora in ../shared/datasets (tests that need them skip when it is absent). Plain
helpers (the tiny backbone BB, random `sentences`) are in helpers.py: `from helpers import ...`."""

from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A data directory with the synthetic corpus generated once for the whole session."""
    from vae_collapse_bench.bench import data

    root = tmp_path_factory.mktemp("bench-data")
    data.load_corpus("synthetic", root)
    return root


@pytest.fixture()
def bench_env(synthetic_root, tmp_path, monkeypatch):
    """BENCH_DATA -> the shared synthetic data; results and storage -> this test's tmp_path."""
    monkeypatch.setenv("BENCH_DATA", str(synthetic_root))
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "results"))
    monkeypatch.delenv("BENCH_STORAGE", raising=False)
    return tmp_path


@pytest.fixture()
def shared_datasets():
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present")
    return SHARED_DATASETS



@pytest.fixture()
def held_out_mmd():
    """Factory for the aggregate-matching tests of wae and aae: `measure(method_cls, params, optimizer)`
    builds a tiny model from seed 0, trains it for `steps` on 64 fixed random sentences (batches of 32,
    full regularizer weight) with `optimizer(model)`, and returns MMD^2 (methods.wae.mmd_imq) between
    one posterior draw per held-out sentence and as many prior draws."""
    import torch
    from helpers import sentences, tiny_backbone
    from vae_collapse_bench.methods.wae import mmd_imq

    def measure(method_cls, params, optimizer, steps=100):
        torch.manual_seed(0)
        bb = tiny_backbone(hidden=16, dec_dropout_in=0.0, dec_dropout_out=0.0)
        model = method_cls(20, bb, params).train()
        opt, train = optimizer(model), sentences(64, t=8, seed=1)
        for step in range(steps):
            loss = model.loss(train[32 * (step % 2):][:32], kl_weight=1.0).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            q = model.eval().encode(sentences(64, t=8, seed=2))
            g = torch.Generator().manual_seed(3)
            return mmd_imq(q.rsample(1, g)[0], torch.randn(64, 4, generator=g)).item()

    return measure
