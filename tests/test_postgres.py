"""Workers on a real PostgreSQL server: a shared grid, a worker killed mid-run, its run taken over.

The server: $BENCH_TEST_POSTGRES_URL (`.ci/run` starts a throwaway cluster and sets it), else a
throwaway cluster this module starts itself (tests/pgcluster.py) where PostgreSQL is installed. Where
no server can be had the tests skip, saying why; under CI (the variable CI set, as `.ci/run` does)
they fail instead, so CI never passes without them. Each test gets a database of its own.

The workers are real `bench worker` processes with one torch thread, a 1 s heartbeat and a 3 s grace
period (BENCH_HEARTBEAT_S, BENCH_STALE_AFTER_S), and the test hooks of tests/hooks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pgcluster
import pytest
from optuna.trial import TrialState
from test_worker import SMOKE, bench, finished, worker_env
from vae_collapse_bench.bench.queue import RunQueue
from vae_collapse_bench.bench.store import open_storage

GRID = ["--methods", "vae,beta-vae", *SMOKE, "--seeds", "0-2"]  # 6 runs


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"the PostgreSQL tests must run in CI, but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_server():
    """The URL of a PostgreSQL server whose user may create databases."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("the driver psycopg 3 is not installed (pip install -e '.[postgres]')")
    if url := os.environ.get("BENCH_TEST_POSTGRES_URL"):
        yield url
        return
    if pgcluster.bindir() is None:
        _unavailable("no PostgreSQL server: set BENCH_TEST_POSTGRES_URL, or install PostgreSQL (initdb, pg_ctl)")
    folder = pgcluster.new_folder()
    try:
        url = pgcluster.start(folder)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pgcluster.stop(folder)
        _unavailable(f"a throwaway PostgreSQL cluster could not be started: {exc}")
    yield url
    pgcluster.stop(folder)


def _database(server: str):
    """A new database on `server`: (its URL, a function that drops it)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"bench_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():  # FORCE: this process's storage engines still hold connections
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return make_url(server).set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture()
def postgres_url(postgres_server):
    url, drop = _database(postgres_server)
    yield url
    drop()


def _env(synthetic_root, url, **hooks):
    return worker_env(synthetic_root, BENCH_STORAGE=url, **hooks)


def _metrics(storage) -> dict[tuple, str]:
    return {(t.user_attrs["method"], t.user_attrs["setting"], t.user_attrs["seed"]):
            json.dumps(t.user_attrs["metrics"], sort_keys=True)
            for records in finished(storage).values() for t in records}


@pytest.fixture(scope="module")
def alone(postgres_server, synthetic_root, tmp_path_factory):
    """The metrics of the grid run by one worker alone."""
    url, drop = _database(postgres_server)
    results = tmp_path_factory.mktemp("alone")
    env = _env(synthetic_root, url)
    queued = bench(env, "run", *GRID, "--enqueue-only", "--results", str(results))
    assert queued.returncode == 0, queued.stderr
    proc = bench(env, "worker", "--until-empty", "--poll", "0.5", "--results", str(results))
    assert proc.returncode == 0 and "took 6 runs: 6 trained" in proc.stdout, proc.stderr[-3000:]
    metrics = _metrics(open_storage(url, results))
    drop()
    assert len(metrics) == 6
    return metrics


def _start(env, log: Path, *argv) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vae_collapse_bench", *argv], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def _finished_once(url, results) -> dict:
    """Every run of the grid finished exactly once and nothing is left in the queue; the metrics."""
    storage = open_storage(url, results)
    done = finished(storage)
    assert len(done) == 6 and all(len(records) == 1 for records in done.values()), \
        {k[:8]: len(v) for k, v in done.items()}
    queue = RunQueue(storage, "synthetic", "smoke", create=False)
    assert not queue.trials((TrialState.WAITING, TrialState.RUNNING))
    return _metrics(storage)


def test_two_workers_share_a_queued_grid_and_match_one_worker_alone(postgres_url, synthetic_root, tmp_path, alone):
    env = _env(synthetic_root, postgres_url, BENCH_TEST_STEP_SLEEP=0.02)  # runs overlap; same numbers
    results = tmp_path / "results"
    assert bench(env, "run", *GRID, "--enqueue-only", "--results", str(results)).returncode == 0
    # --max-runs 3 each: the grid is split between the two whatever their start-up times
    workers = [_start(env, tmp_path / f"w{i}.log", "worker", "--until-empty", "--max-runs", "3", "--poll", "0.5",
                      "--results", str(results)) for i in range(2)]
    codes = [w.wait(timeout=300) for w in workers]
    logs = [(tmp_path / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    assert all("took 3 runs: 3 trained, 0 cached, 0 failed" in log for log in logs), logs
    assert _finished_once(postgres_url, results) == alone


def _wait_for(condition, what: str, proc: subprocess.Popen | None = None, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, f"the worker exited before {what}"
        assert time.monotonic() < deadline, f"{what} never came"
        time.sleep(0.1)


@pytest.mark.parametrize("shared", [True, False], ids=["shared-results", "own-results"])
def test_a_worker_killed_mid_run_is_found_by_its_heartbeat_and_its_run_taken_over(
        postgres_url, synthetic_root, tmp_path, alone, shared):
    """Worker A ("machine-a": no pid check can see it die) stops in epoch 2 of its first run, after
    epoch 1's checkpoint; worker B starts and finishes a run; then A is SIGKILLed. B finds A's run
    by its stale heartbeat, queues it again, takes it and resumes it from the checkpoint (the
    results folder shared) or trains it from scratch and says so (a folder of its own). Every run
    ends finished exactly once, with the metrics of one worker alone."""
    results_a = tmp_path / "results"
    results_b = results_a if shared else tmp_path / "results-b"
    go = tmp_path / "kill-a-now"
    env = _env(synthetic_root, postgres_url)
    assert bench(env, "run", *GRID, "--enqueue-only", "--results", str(results_a)).returncode == 0
    storage = open_storage(postgres_url, results_a)

    def claims(state):
        if "runs/synthetic/smoke" not in optuna.get_all_study_names(storage):
            return []
        sid = storage.get_study_id_from_name("runs/synthetic/smoke")
        return storage.get_all_trials(sid, deepcopy=False, states=(state,))

    a = _start({**env, "BENCH_TEST_HOSTNAME": "machine-a", "BENCH_TEST_DIE_IN_EPOCH2": str(go)}, tmp_path / "a.log",
               "worker", "--until-empty", "--poll", "0.5", "--results", str(results_a))
    _wait_for(lambda: any(t.user_attrs.get("host") == "machine-a" and t.user_attrs.get("epoch") == 1
                          for t in claims(TrialState.RUNNING)), "worker A's epoch 1", a)
    (dead,) = [t for t in claims(TrialState.RUNNING) if t.user_attrs.get("host") == "machine-a"]
    label = f"{dead.user_attrs['method']}[{dead.user_attrs['setting']}] seed {dead.user_attrs['seed']}"
    b = _start(env, tmp_path / "b.log", "worker", "--until-empty", "--poll", "0.5", "--results", str(results_b))
    _wait_for(lambda: len(claims(TrialState.COMPLETE)) >= 1, "worker B's first finished run", b)
    go.touch()
    assert a.wait(timeout=120) == -9, (tmp_path / "a.log").read_text()
    assert b.wait(timeout=300) == 0, (tmp_path / "b.log").read_text()
    log = (tmp_path / "b.log").read_text()
    assert f"{label}: its worker machine-a pid {dead.user_attrs['pid']} sent no heartbeat for 3 s; queued again" \
        in log, log
    if shared:
        assert f"{label}: training (resuming after epoch 1)" in log, log
    else:
        assert f"{label}: its run on machine-a pid {dead.user_attrs['pid']} stopped after epoch 1, but its " \
               "checkpoint is not under" in log, log
        assert f"{label}: training\n" in log and "training from scratch" in log, log
    assert "took 6 runs" in log  # its own five and A's
    assert _finished_once(postgres_url, results_a) == alone
