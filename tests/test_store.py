import subprocess
import sys
import time

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.store import RunStore, open_storage


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


@pytest.mark.parametrize("url", [None, "sqlite:///{tmp}/bench.db"])
def test_run_lifecycle_and_cache(tmp_path, url):
    storage = open_storage(url and url.format(tmp=tmp_path), tmp_path)
    store = RunStore(storage, "synthetic", "smoke")
    assert store.evaluated("e1") is None
    trial = store.claim("t1", {"training_key": "t1", "eval_key": "e1", "method": "vae"})
    store.complete(trial, -10.0, {"metrics": {"priorLL": -10.0}})
    done = store.evaluated("e1")
    assert done.value == -10.0 and done.user_attrs["metrics"] == {"priorLL": -10.0}
    assert done.user_attrs["versions"]["bench"]
    failing = store.claim("t2", {"training_key": "t2", "eval_key": "e2"})
    store.fail(failing, "loss became nan", diverged=True, stage="training")
    assert store.failed("t2", "another-eval-key").user_attrs["fail_reason"] == "loss became nan"
    assert store.failed("t1", "e1") is None
    # a second handle on the same storage sees the same study; reading need not create it
    assert RunStore(storage, "synthetic", "smoke", create=False).evaluated("e1").number == done.number


def test_a_claim_is_won_once(tmp_path):
    store = RunStore(open_storage(None, tmp_path), "synthetic", "smoke")
    first = store.claim("k", {})
    second = store.claim("k", {})
    assert isinstance(first, optuna.Trial) and not isinstance(second, optuna.Trial)
    assert second.number == first.number  # the loser is told who holds the run
    lost = store.trials()[-1]
    assert lost.state == TrialState.FAIL and lost.user_attrs["claim_lost"]
    assert store.failed("k", "k") is None  # a lost claim is no failure
    assert isinstance(store.claim("other", {}), optuna.Trial)


def test_the_claim_of_a_dead_local_process_is_failed_and_taken_over(tmp_path):
    store = RunStore(open_storage(None, tmp_path), "synthetic", "smoke")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.claim("k", {"pid": dead.pid})
    assert isinstance(store.claim("k", {}), optuna.Trial)
    first = store.trials()[0]
    assert first.state == TrialState.FAIL and "died" in first.user_attrs["fail_reason"]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_rdb_heartbeat_fails_the_claim_of_a_silent_worker_on_another_host(tmp_path):
    storage = RDBStorage(f"sqlite:///{tmp_path}/hb.db", heartbeat_interval=1, grace_period=1)
    store = RunStore(storage, "synthetic", "smoke")
    silent = store.claim("k", {"host": "elsewhere", "pid": 1})
    storage.record_heartbeat(silent._trial_id)  # it beat once, then its host went away
    assert not isinstance(store.claim("k", {}), optuna.Trial)  # still within the grace period
    time.sleep(2.2)
    winner = store.claim("k", {})
    assert isinstance(winner, optuna.Trial)
    assert store.trials()[0].state == TrialState.FAIL
    with store.heartbeat(winner):  # a live claim keeps beating, so nobody takes it over
        time.sleep(2.2)
        assert not isinstance(store.claim("k", {}), optuna.Trial)


def test_a_missing_postgres_driver_says_so_not_check_your_credentials(tmp_path):
    try:
        import psycopg  # noqa: F401
    except ImportError:
        with pytest.raises(BenchError, match=r"needs the PostgreSQL driver psycopg 3.*\[postgres\]") as info:
            open_storage("postgresql://me:secret@127.0.0.1:1/bench", tmp_path)
        assert "credentials" not in str(info.value) and "secret" not in str(info.value)
    else:
        pytest.skip("psycopg is installed here: the message for a missing driver cannot be shown")
