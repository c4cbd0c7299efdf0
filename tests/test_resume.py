"""SIGKILL at any moment, then the same CLI command again: the stored metrics are byte-identical to
those of an uninterrupted run.

Five methods that stress what last.pt must hold: vae (the plain step), dg-vae (a stochastic
regularizer: the training-noise generator), aae (two optimizers, two steps per batch), dg-vae-bank
(a memory bank carried over epochs) and aggressive-vae (an encoder loop on batches drawn by the
trainer's generator, and a phase that a held-out check ends). Two kill
points each: mid-epoch (the 3rd step of epoch 2, epoch 1 checkpointed) and between the atomic writes
of best.pt and last.pt in epoch 2 (best.pt already holds epoch 2's weights, last.pt still epoch 1).
The processes run once for all cases, in three lanes (one per kill point, one uninterrupted). Every
process gets this process's torch thread count (the numbers depend on it), and only as many lanes
run at once as the cores hold at that count: oversubscribed OpenMP threads spin (3x the CPU time).
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from vae_collapse_bench.bench.store import RunStore, open_storage

METHODS = ("vae", "dg-vae", "aae", "dg-vae-bank", "aggressive-vae")
KILL_POINTS = ("mid-epoch", "after-best")

CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vae_collapse_bench.bench import train as bench_train
    from vae_collapse_bench.bench import data, registry
    from vae_collapse_bench.bench.config import PROFILES
    from vae_collapse_bench.bench.runner import Reporter, Runner, expand
    from vae_collapse_bench.bench.store import RunStore, open_storage

    root, results, method, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    class KillMidEpoch(Reporter):
        epochs = 0
        def epoch_done(self, record, max_epochs):
            self.epochs += 1
        def train_step(self, step, steps):
            if kill_at == "mid-epoch" and self.epochs == 1 and step == 3:  # epoch 2 under way
                die()

    save = bench_train.atomic_save
    def save_then_die(obj, path):
        save(obj, path)
        if kill_at == "after-best" and path.name == "best.pt" and (path.parent / "last.pt").exists():
            die()  # an epoch after the first improved: best.pt is new, last.pt not yet
    bench_train.atomic_save = save_then_die

    corpus = data.load_corpus("synthetic", root)
    store = RunStore(open_storage(None, results), "synthetic", "smoke")
    (spec,) = expand([registry.get(method)], "synthetic", "smoke", "default", [0])
    Runner(store, corpus, PROFILES["smoke"], results, reporter=KillMidEpoch()).run(spec)
""")


def _metrics(results, method):
    store = RunStore(open_storage(None, results), "synthetic", "smoke")
    (done,) = [t for t in store.trials() if t.state.name == "COMPLETE" and t.user_attrs["method"] == method]
    return json.dumps(done.user_attrs["metrics"], sort_keys=True)


def _checkpoint(results, method):
    """(finished epochs in last.pt, whether best.pt was written after last.pt) of `method`'s run."""
    store = RunStore(open_storage(None, results), "synthetic", "smoke")
    (trial,) = [t for t in store.trials() if t.user_attrs["method"] == method]
    folder = results / "checkpoints" / trial.user_attrs["training_key"]
    last, best = folder / "last.pt", folder / "best.pt"
    epoch = torch.load(last, weights_only=False)["state"]["epoch"]
    return epoch, best.stat().st_mtime_ns > last.stat().st_mtime_ns


@pytest.fixture(scope="module")
def lanes(synthetic_root, tmp_path_factory):
    """Runs every process once: per kill point, one killed child per method into one results folder,
    then one CLI run that resumes them all; and one uninterrupted CLI run. Returns what the tests
    compare, keyed by kill point (or "fresh")."""
    root, threads = tmp_path_factory.mktemp("resume"), torch.get_num_threads()
    env = {**os.environ, "BENCH_DATA": str(synthetic_root), "OMP_NUM_THREADS": str(threads)}
    cli = [sys.executable, "-m", "vae_collapse_bench", "run", "--methods", ",".join(METHODS), "--grid", "default",
           "--dataset", "synthetic", "--profile", "smoke", "--seeds", "0", "--quiet", "--results"]

    def run(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)

    def lane(kill_at):
        results = root / kill_at
        out = {"killed": {}}
        if kill_at != "fresh":
            for method in METHODS:
                child = run([sys.executable, "-c", CHILD, str(synthetic_root), str(results), method, kill_at])
                where = _checkpoint(results, method) if child.returncode == -9 else (None, None)
                out["killed"][method] = (child.returncode, child.stderr, where)
        out["cli"] = run(cli + [str(results)])
        out["metrics"] = {m: _metrics(results, m) for m in METHODS} if out["cli"].returncode == 0 else {}
        return out

    with ThreadPoolExecutor(max(1, len(os.sched_getaffinity(0)) // threads)) as pool:
        return dict(zip(("fresh", *KILL_POINTS), pool.map(lane, ("fresh", *KILL_POINTS))))


@pytest.mark.parametrize("kill_at", KILL_POINTS)
@pytest.mark.parametrize("method", METHODS)
def test_a_run_killed_then_rerun_stores_the_metrics_of_an_uninterrupted_run(lanes, method, kill_at):
    returncode, stderr, (epoch, best_is_newer) = lanes[kill_at]["killed"][method]
    assert returncode == -9, stderr
    assert epoch == 1  # killed in epoch 2, after epoch 1's checkpoint ...
    assert best_is_newer == (kill_at == "after-best")  # ... and, at the second point, after its best.pt
    for lane in ("fresh", kill_at):
        assert lanes[lane]["cli"].returncode == 0, lanes[lane]["cli"].stderr
    assert re.search(rf"\] {re.escape(method)}\[.*: training \(resuming after epoch 1\)", lanes[kill_at]["cli"].stderr)
    assert lanes[kill_at]["metrics"][method] == lanes["fresh"]["metrics"][method]
