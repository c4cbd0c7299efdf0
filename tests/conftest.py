"""Shared fixtures: a session-wide data directory holding the generated synthetic corpus, and the
path of the real corpora in ../shared/datasets (tests that need them skip when it is absent)."""

from pathlib import Path

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A data directory with the synthetic corpus generated once for the whole session."""
    from bench import data

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

