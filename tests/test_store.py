import subprocess
import sys

import pytest
from optuna.trial import TrialState

from bench.errors import BenchError
from bench.store import RunStore, open_storage, run_key


@pytest.mark.parametrize("url", ["foo://bar", "results", "http://example.org/db"])
def test_malformed_storage_url(tmp_path, url):
    with pytest.raises(BenchError, match="malformed --storage"):
        open_storage(url, tmp_path)


def test_unreachable_rdb_storage_names_the_url_and_hides_the_password(tmp_path):
    with pytest.raises(BenchError, match="cannot reach storage 'sqlite:////nonexistent-dir/x/y.db'"):
        open_storage("sqlite:////nonexistent-dir/x/y.db", tmp_path)
    with pytest.raises(BenchError) as info:
        open_storage("postgresql://me:secret@127.0.0.1:1/bench", tmp_path)
    assert "secret" not in str(info.value)
    assert "postgresql://me:***@127.0.0.1:1/bench" in str(info.value)


def test_unwritable_journal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchError, match="cannot write the journal storage"):
        open_storage(str(blocker / "sub" / "optuna.journal"), tmp_path)


def test_default_is_journal_under_results(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_STORAGE", raising=False)
    open_storage(None, tmp_path)
    assert (tmp_path / "optuna.journal").exists()


def test_run_key_depends_on_identity_only():
    a = {"dataset": "ptb", "seed": 0, "params": {"gamma": 0.6}}
    assert run_key(a) == run_key(dict(reversed(list(a.items()))))
    assert run_key(a) != run_key({**a, "seed": 1})
    assert run_key(a) != run_key({**a, "params": {"gamma": 0.7}})


@pytest.mark.parametrize("url", [None, "sqlite:///{tmp}/bench.db"])
def test_run_lifecycle_and_cache(tmp_path, url):
    storage = open_storage(url and url.format(tmp=tmp_path), tmp_path)
    store = RunStore(storage, "synthetic", "smoke")
    assert store.completed("k1") is None
    trial = store.begin({"run_key": "k1", "method": "vae"})
    store.complete(trial, -10.0, {"metrics": {"priorLL": -10.0}})
    done = store.completed("k1")
    assert done.value == -10.0 and done.user_attrs["metrics"] == {"priorLL": -10.0}
    assert done.user_attrs["versions"]["bench"]
    failing = store.begin({"run_key": "k2"})
    store.fail(failing, "loss became nan", diverged=True)
    assert store.failed("k2").user_attrs["fail_reason"] == "loss became nan"
    # a second handle on the same storage sees the same study
    assert RunStore(storage, "synthetic", "smoke").completed("k1").number == done.number


def test_trial_of_a_dead_local_process_is_failed_not_skipped(tmp_path):
    store = RunStore(open_storage(None, tmp_path), "synthetic", "smoke")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.begin({"run_key": "k", "pid": dead.pid})
    assert store.running_elsewhere("k") is None
    (trial,) = store.trials()
    assert trial.state == TrialState.FAIL and "died" in trial.user_attrs["fail_reason"]
    store.begin({"run_key": "k"})  # this process: alive
    assert store.running_elsewhere("k") is not None
