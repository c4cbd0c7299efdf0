"""How torch runs on the CPU: memory allocation and OpenMP waiting, set when the harness is first
imported (`BENCH_RUNTIME`), before torch loads.

Memory. torch's CPU tensors come from glibc malloc, which serves every block above its mmap
threshold (at most 32 MiB) with a fresh mmap and unmaps it on free: every training step faults its
large tensors in again, 4 KiB page by page, and the kernel zeroes each page. At the Yahoo backbone
(B 32, T 82, V 20,001) the logits, their log-softmax and their gradient are 207 MB each: one vae
step took 338,000 page faults (1.3 GB faulted in per step). Two settings remove nearly all of it:

- torch's `THP_MEM_ALLOC_ENABLE=1`: blocks of 2 MB and more are page-aligned and advised to use
  transparent huge pages (2 MiB pages, where /sys/kernel/mm/transparent_hugepage/enabled says
  `madvise` or `always`): 8,900 faults per Yahoo step;
- glibc's thresholds fixed (mallopt): blocks up to 32 MiB stay in the heap and are reused
  (M_MMAP_THRESHOLD = 32 MiB, glibc's largest), and freed memory is returned to the system only
  above 1 GiB of free heap (M_TRIM_THRESHOLD), instead of glibc's sliding thresholds.

Both together: 5,950 faults per Yahoo step, 41 instead of 1,040 per snli-backbone step; the numbers
a run computes are unchanged (checked bit for bit on a snli-backbone step and its log p(x|z)).

Waiting. libgomp's threads spin after each parallel region before they sleep. When other processes
load the cores, a spinning thread burns the time slice that the thread holding the work needs: on a
loaded 2-core machine a quick-backbone vae step took 554-868 ms with 2 threads spinning, 49-155 ms
with `OMP_WAIT_POLICY=PASSIVE` (threads sleep at once) and a quick run's epoch 33-205 s against 9-10 s.
(What PASSIVE costs on an idle machine, `bench perf` measures: its fresh-process rows.)

BENCH_RUNTIME:

    tuned   (default) the memory settings and OMP_WAIT_POLICY=PASSIVE
    memory  the memory settings only (libgomp's own waiting)
    system  neither: glibc's, torch's and libgomp's defaults

A variable the user set (THP_MEM_ALLOC_ENABLE, MALLOC_*_, OMP_WAIT_POLICY) is left as it is. torch
reads THP_MEM_ALLOC_ENABLE at its first CPU allocation and libgomp reads OMP_WAIT_POLICY when torch
loads it, so `configure` runs from bench/__init__.py: a program that imported torch before the
harness keeps torch's and libgomp's defaults (the glibc settings still apply). Child processes
inherit the environment.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "BENCH_RUNTIME"
SETTINGS = ("tuned", "memory", "system")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc refuses more (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 2**30
# glibc's own environment variables for the same two settings; set by a user, they win
GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _libc():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def setting() -> str:
    """The BENCH_RUNTIME setting in force (an unknown value counts as the default, `tuned`)."""
    value = os.environ.get(ENV, "tuned").strip().lower()
    return value if value in SETTINGS else "tuned"


def configure() -> str:
    """Apply BENCH_RUNTIME (module docstring); returns what is in force, for provenance. Never
    raises: a system without glibc's mallopt keeps its allocator and says so."""
    chosen = setting()
    if chosen == "system":
        return "system (glibc, torch and libgomp defaults)"
    done = []
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if os.environ["THP_MEM_ALLOC_ENABLE"] == "1":
        done.append("THP_MEM_ALLOC_ENABLE=1")
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        done.append("no glibc mallopt here")
    elif not any(name in os.environ for name in GLIBC_ENV):
        ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        done.append("glibc mmap 32 MiB, trim 1 GiB" if ok else "glibc mallopt refused")
    else:
        done.append("glibc MALLOC_*_ from the environment")
    if chosen == "tuned":
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "OMP_WAIT_POLICY" in os.environ:
        done.append(f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    return f"{chosen} ({', '.join(done)})"


def trim() -> None:
    """Hand freed heap memory back to the system (glibc malloc_trim), so that the resident size is
    what is live; a no-op without glibc."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def faults_per_mib(size_mib: int = 64) -> float:
    """Minor page faults per MiB of a fresh `size_mib` MiB CPU tensor written once: about 256 with
    4 KiB pages, about 0.5 with transparent huge pages (what `bench perf` reports as in effect)."""
    import resource

    import torch

    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(size_mib * 2**18)  # float32: 2**18 per MiB
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    del block
    return (after - before) / size_mib
