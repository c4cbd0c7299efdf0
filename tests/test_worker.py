"""The run queue, workers and `bench status` on the journal file (PostgreSQL: tests/test_postgres.py).

Real processes run with tests/hooks on PYTHONPATH (its sitecustomize turns test hooks on through
BENCH_TEST_* variables) and one torch thread, like every worker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from vae_collapse_bench.bench import cli, data
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.queue import MAX_REQUEUES, RunQueue
from vae_collapse_bench.bench.runner import Runner, RunSpec
from vae_collapse_bench.bench.status import storage_status
from vae_collapse_bench.bench.store import Heartbeat, RunStore, heartbeat_settings, open_storage

HOOKS = Path(__file__).resolve().parent / "hooks"
SMOKE = ["--dataset", "synthetic", "--profile", "smoke", "--grid", "default"]


def worker_env(synthetic_root, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "CI"))}
    path = os.pathsep.join(p for p in (str(HOOKS), os.environ.get("PYTHONPATH", "")) if p)
    return {**env, "BENCH_DATA": str(synthetic_root), "OMP_NUM_THREADS": "1", "PYTHONPATH": path,
            "BENCH_HEARTBEAT_S": "1", "BENCH_STALE_AFTER_S": "3", **{k: str(v) for k, v in extra.items()}}


def bench(env, *argv, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vae_collapse_bench", *argv], capture_output=True, text=True,
                          env=env, timeout=timeout)


def finished(storage, study="runs/synthetic/smoke") -> dict[str, list]:
    """training key -> the COMPLETE records of it (a run finished exactly once has one)."""
    out: dict[str, list] = {}
    if study not in optuna.get_all_study_names(storage):
        return out
    for t in storage.get_all_trials(storage.get_study_id_from_name(study), deepcopy=False,
                                    states=(TrialState.COMPLETE,)):
        out.setdefault(t.user_attrs["training_key"], []).append(t)
    return out


# --- the queue itself, in this process ----------------------------------------------------------------
@pytest.fixture()
def queued(bench_env, synthetic_root):
    """Three vae runs queued on a journal; returns (results dir, runner)."""
    results = bench_env / "results"
    storage = open_storage(None, results)
    corpus = data.load_corpus("synthetic", synthetic_root)
    runner = Runner(RunStore(storage, "synthetic", "smoke"), corpus, PROFILES["smoke"], results)
    specs = [RunSpec("synthetic", "smoke", "vae", (), seed) for seed in range(3)]
    done = RunQueue(storage, "synthetic", "smoke").enqueue(runner, specs)
    assert len(done.queued) == 3 and not done.already_queued and not done.known
    return results, runner, specs


def test_enqueue_twice_queues_nothing_twice(queued):
    results, runner, specs = queued
    again = RunQueue(open_storage(None, results), "synthetic", "smoke").enqueue(runner, specs)
    assert again.queued == [] and again.already_queued == specs


def test_two_processes_never_take_the_same_run(queued):
    results = queued[0]
    # two storage handles on one journal: two writers, as two processes would be
    first, second = (RunQueue(open_storage(None, results), "synthetic", "smoke") for _ in range(2))
    taken = [first.take(), second.take(), second.take(), first.take()]
    assert taken[3] is None
    assert sorted(item.spec.seed for item in taken[:3]) == [0, 1, 2]
    assert len({item.trial_id for item in taken[:3]}) == 3


def test_the_run_of_a_dead_worker_is_queued_again_a_bounded_number_of_times(queued):
    results = queued[0]
    storage = open_storage(None, results)
    queue = RunQueue(storage, "synthetic", "smoke")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for death in range(1, MAX_REQUEUES + 2):
        item = next(i for i in iter(queue.take, None) if i.spec.seed == 0)
        storage.set_trial_user_attr(item.trial_id, "pid", dead.pid)  # its worker died
        queue.requeue_dead()
        assert storage.get_trial(item.trial_id).state == TrialState.FAIL
        copies = [t for t in queue.trials((TrialState.WAITING,)) if t.user_attrs["seed"] == 0]
        assert len(copies) == (1 if death <= MAX_REQUEUES else 0)
        for other in queue.trials((TrialState.RUNNING,)):  # put the runs of other seeds back
            storage.set_trial_state_values(other._trial_id, TrialState.WAITING)
    (row,) = storage_status(storage)
    assert (row.queued, row.running, row.finished) == (2, 0, 0)


def test_status_counts_and_running_rows(queued):
    results, runner, specs = queued
    storage = open_storage(None, results)
    queue, store = RunQueue(storage, "synthetic", "smoke"), runner.store
    item = queue.take()
    ident = runner.identity(item.spec)
    claim = store.claim(ident.training_key, {"training_key": ident.training_key, "eval_key": ident.eval_key,
                                             "method": "vae", "setting": "-", "seed": item.spec.seed})
    with Heartbeat(storage, claim._trial_id):
        claim.set_user_attr("epoch", 1)
        beat = storage.get_trial(claim._trial_id).user_attrs["heartbeat_at"]
        (row,) = storage_status(storage, "queue/synthetic/smoke", now=beat + 12.5)
    assert (row.study, row.queued, row.running, row.finished, row.failed) == ("runs/synthetic/smoke", 2, 1, 0, 0)
    (running,) = row.running_runs
    assert (running.run, running.epoch, running.heartbeat_age_s) == (f"vae[-] seed {item.spec.seed}", 1, 12.5)
    assert running.pid == os.getpid()
    store.fail(claim, "worker process died; the run resumes from its checkpoint")
    (row,) = storage_status(storage)
    assert row.failed == 1 and row.failures[0]["reason"].startswith("worker process died")
    queue.give_back(item, "its worker stopped")  # waiting again: its failure is superseded
    (row,) = storage_status(storage)
    assert (row.queued, row.running, row.failed) == (3, 0, 0)
    with pytest.raises(BenchError, match="unknown study 'runs/synthetic/smok'; did you mean"):
        storage_status(storage, "runs/synthetic/smok")


@pytest.mark.parametrize(("interval", "grace", "message"), [
    ("0", "", r"\$BENCH_HEARTBEAT_S='0': give whole seconds"),
    ("x", "", "give whole seconds"),
    ("5", "5", "must exceed"),
    ("", "-3", r"\$BENCH_STALE_AFTER_S='-3'"),
])
def test_heartbeat_settings_are_checked(monkeypatch, interval, grace, message):
    monkeypatch.setenv("BENCH_HEARTBEAT_S", interval)
    monkeypatch.setenv("BENCH_STALE_AFTER_S", grace)
    with pytest.raises(BenchError, match=message):
        heartbeat_settings()


def test_a_bad_heartbeat_variable_is_refused_when_the_storage_opens(bench_env, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_STALE_AFTER_S", "soon")
    assert cli.main(["status"]) == 2
    assert capsys.readouterr().err.startswith("error: $BENCH_STALE_AFTER_S='soon': give whole seconds")


# --- bad input: one clear error each ------------------------------------------------------------------
BAD = {
    "wrong storage URL": (["worker", "--storage", "foo://bar"], "malformed --storage"),
    "unreachable server": (["worker", "--storage", "postgresql+psycopg://me:secret@127.0.0.1:1/bench"],
                           "(cannot reach storage|needs the PostgreSQL driver)"),
    "status on an unreachable server": (["status", "--storage", "postgresql+psycopg://me@127.0.0.1:1/bench"],
                                        "(cannot reach storage|needs the PostgreSQL driver)"),
    "--workers -1": (["run", "--methods", "vae", *SMOKE, "--workers", "-1"], "--workers -1: give a whole number"),
    "--workers 0": (["run", "--methods", "vae", *SMOKE, "--workers", "0"], "--workers 0: give a whole number"),
    "--threads 0": (["worker", "--threads", "0"], "--threads 0: give a whole number"),
    "--max-runs -2": (["worker", "--max-runs", "-2"], "--max-runs -2"),
    "--poll nan": (["worker", "--poll", "nan"], "--poll nan: give seconds"),
    "both": (["run", "--methods", "vae", *SMOKE, "--workers", "2", "--enqueue-only"], "give one of the two"),
    "worker, unknown study": (["worker", "--study", "runs/nope/smoke"], "unknown study 'runs/nope/smoke'"),
    "status, unknown study": (["status", "--study", "runs/synthetic/smok"],
                              "unknown study 'runs/synthetic/smok'; did you mean 'runs/synthetic/smoke'"),
    "status format": (["status", "--format", "xml"], "unknown format 'xml'"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_one_clear_error(case, queued, capsys):
    argv, message = BAD[case]
    capsys.readouterr()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert "secret" not in err


# --- real worker processes ----------------------------------------------------------------------------
def test_a_run_that_raises_or_diverges_fails_with_its_reason_and_the_worker_goes_on(bench_env, synthetic_root,
                                                                                       capsys):
    results = bench_env / "results"
    # in queue order: bn-vae seed 1 raises, bn-vae seed 0 diverges, vae seed 1 raises, vae seed 0 finishes
    assert cli.main(["run", "--methods", "bn-vae,vae", "--set", "bn-vae.gamma=1e6", *SMOKE, "--seeds", "1,0",
                     "--enqueue-only"]) == 0
    assert "queued 4 of 4 runs" in capsys.readouterr().out
    proc = bench(worker_env(synthetic_root, BENCH_TEST_RAISE_SEED=1), "worker", "--until-empty", "--poll", "0.2",
                 "--results", str(results))
    assert proc.returncode == 1, proc.stderr
    assert "took 4 runs: 1 trained, 0 cached, 3 failed" in proc.stdout
    storage = open_storage(None, results, read_only=True)
    (row,) = storage_status(storage)
    assert (row.queued, row.running, row.finished, row.failed) == (0, 0, 1, 3)
    reasons = {f["run"]: f["reason"] for f in row.failures}
    assert reasons["vae[-] seed 1"].startswith("training raised RuntimeError at sitecustomize.py")
    assert reasons["vae[-] seed 1"].endswith("boom: test hook")
    assert "non-finite" in reasons["bn-vae[gamma=1000000.0] seed 0"]
    queue = RunQueue(storage, "synthetic", "smoke", create=False)
    failed = {t.user_attrs["fail_reason"] for t in queue.trials((TrialState.FAIL,))}
    assert failed == set(reasons.values())  # the queue says why, too
    assert cli.main(["status", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["studies"][0]["failed"] == 3


def _progress(results: Path) -> tuple[int, int, set[str]]:
    """(queue trials, finished runs, training keys whose last.pt exists but that did not finish)."""
    journal = results / "optuna.journal"
    if not journal.exists():
        return 0, 0, set()
    storage = open_storage(str(journal), results, read_only=True)
    names = optuna.get_all_study_names(storage)
    queue = (len(storage.get_all_trials(storage.get_study_id_from_name("queue/synthetic/smoke"), deepcopy=False))
             if "queue/synthetic/smoke" in names else 0)
    done = finished(storage)
    started = {p.parent.name for p in (results / "checkpoints").glob("*/last.pt")}
    return queue, len(done), started - set(done)


def test_a_sweep_with_two_workers_killed_three_times_ends_with_the_board_of_an_uninterrupted_one(
        tmp_path, synthetic_root):
    """`bench run --workers 2` on the journal, its whole process group SIGKILLed: once the queue is
    written (before any training), once mid-run (a run's epoch-1 checkpoint written, the run not
    finished), once just after a run finished; then run to the end. Every run is finished exactly
    once, the interrupted run resumes from its checkpoint, and the board equals that of a sweep
    that was never interrupted (a plain `bench run`, without queue or workers)."""
    argv = ["run", "--methods", "vae,beta-vae", *SMOKE, "--seeds", "0-1", "--workers", "2", "--quiet"]
    # the default heartbeat (60 s): fewer journal appends, so a kill seldom leaves the journal's lock
    # held, which the next process breaks only after Optuna's 30 s
    calm = worker_env(synthetic_root, BENCH_HEARTBEAT_S="", BENCH_STALE_AFTER_S="")
    slow = {**calm, "BENCH_TEST_STEP_SLEEP": "0.03"}  # wider moments; same numbers
    # the reference: one plain process (one torch thread, like each worker), no queue at all
    fresh = bench(calm, *argv[:-3], "--quiet", "--results", str(tmp_path / "fresh"))
    assert fresh.returncode == 0, fresh.stderr[-3000:]

    results = tmp_path / "killed"
    moments = {
        "queued": lambda start, now: now[0] >= 1,
        "mid-run": lambda start, now: bool(now[2]),
        "a run finished": lambda start, now: now[1] > start[1],
    }
    logs = []
    for name, reached in moments.items():
        with open(tmp_path / f"{len(logs)}.log", "w+") as log:
            proc = subprocess.Popen([sys.executable, "-m", "vae_collapse_bench", *argv, "--results", str(results)],
                                    env=slow, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            start, deadline = _progress(results), time.monotonic() + 240
            while not reached(start, _progress(results)):
                assert proc.poll() is None, f"the sweep ended before the moment {name!r}"
                assert time.monotonic() < deadline, f"the moment {name!r} never came"
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
            assert proc.wait() == -signal.SIGKILL
            log.seek(0)
            logs.append(log.read())
    last = bench(slow, *argv, "--results", str(results))
    assert last.returncode == 0, last.stderr[-3000:]
    assert "4 runs: " in last.stdout and "0 failed" in last.stdout
    assert "resuming after epoch 1" in "".join(logs[1:]) + last.stderr  # the mid-run kill's run resumed

    storage = open_storage(None, results)
    done = finished(storage)
    assert len(done) == 4 and all(len(records) == 1 for records in done.values())
    queue = RunQueue(storage, "synthetic", "smoke", create=False)
    assert not queue.trials((TrialState.WAITING, TrialState.RUNNING))
    boards = [bench(calm, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--results", str(r))
              for r in (tmp_path / "fresh", results)]
    assert boards[0].returncode == 0 and boards[0].stdout == boards[1].stdout


# --- every option of the new commands, fed the fuzz test's odd values -----------------------------------
FUZZ_TEMPLATES = {
    **{f"worker{opt}": ["worker", "--until-empty", "--poll", "0.01", opt, "{V}"]
       for opt in ("--max-runs", "--threads", "--study", "--poll", "--device", "--results", "--storage")},
    **{f"status{opt}": ["status", opt, "{V}"] for opt in ("--study", "--format", "--results", "--storage")},
    **{f"run{opt}": ["run", "--methods", "vae", *SMOKE, "--quiet", opt, "{V}"] for opt in ("--workers", "--threads")},
    "run--enqueue-only--results": ["run", "--methods", "vae", *SMOKE, "--enqueue-only", "--results", "{V}"],
}


@pytest.mark.parametrize("value_id", ["empty", "long", "negative", "nan", "under-file"])
@pytest.mark.parametrize("template", list(FUZZ_TEMPLATES))
def test_odd_values_end_in_0_1_or_2_without_a_traceback(template, value_id, queued, monkeypatch, capsys):
    from test_fuzz import VALUES, call, fill
    from vae_collapse_bench.bench import worker

    monkeypatch.setattr(worker, "set_threads", lambda threads: None)  # this process keeps its threads
    monkeypatch.setattr(worker, "start_local_workers", lambda *args: [])  # nothing trains here
    monkeypatch.chdir(queued[0].parent)  # a relative --results such as `nan` lands in this test's folder
    blocker = queued[0].parent / "a-file.txt"
    blocker.write_text("not a folder\n")
    argv = fill(FUZZ_TEMPLATES[template], VALUES[value_id], {"file": str(blocker), "folder": str(blocker.parent)})
    code, _, err, by_argparse = call(argv, capsys)
    assert code in (0, 1, 2), (argv[:8], code, err[-500:])
    if code == 2 and not by_argparse:
        lines = err.splitlines()
        assert lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, err
