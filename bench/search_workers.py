"""Local worker processes of `bench search --workers K`: K processes running the same search on
one storage and results folder, each with its own torch thread count; a worker dies with its parent
(bench.worker's `die_with_parent` and `wait_workers`, shared with `bench run --workers K`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from vae_collapse_bench.bench.search import SearchSettings
from vae_collapse_bench.bench.worker import die_with_parent

PARENT_ENV = "BENCH_SEARCH_PARENT"


def start_workers(count: int, settings: SearchSettings, results_dir: Path, storage_url: str | None, device: str,
                  threads: int) -> list[subprocess.Popen]:
    """`count` processes running the same search on the same storage and results folder, each with
    `threads` torch threads. The storage URL travels in the environment (`ps` would show a password)."""
    env = dict(os.environ, **{PARENT_ENV: str(os.getpid()), "OMP_NUM_THREADS": str(threads),
                              "MKL_NUM_THREADS": str(threads)})
    if storage_url:
        env["BENCH_STORAGE"] = storage_url
    s = settings
    argv = [sys.executable, "-m", "vae_collapse_bench", "search", "--method", s.method, "--dataset", s.dataset,
            "--profile", s.profile, "--trials", str(s.trials), "--objective", s.objective, "--pruner", str(s.pruner),
            "--seed", str(s.seed), "--device", device, "--threads", str(threads), "--results", str(results_dir)]
    return [subprocess.Popen([*argv, "--worker-index", str(i)], env=env) for i in range(count)]


def orphan_check() -> Callable[[], bool]:
    """In a worker of `--workers K`: die with the parent (Linux; the dead worker's trial is failed and
    retried by the next search), and answer whether the parent is gone (checked between trials, also
    where a process cannot be told to die with its parent)."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    die_with_parent(parent)
    return lambda: os.getppid() != parent


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads for the search (numbers depend on it; each trial records it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
