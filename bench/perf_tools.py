"""What every section of `bench perf` (bench.perf, bench.perf_eval) shares: the shapes it times, random
token batches, and the measuring tools: a device sync, the matmul peak, the memory one call adds at
its peak, minor page faults, the machine's record, and Kineto's log chatter kept off stderr.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from vae_collapse_bench.bench import RUNTIME, runtime
from vae_collapse_bench.bench.config import PROFILES, Backbone
from vae_collapse_bench.bench.flops import matmul_flops

BATCH = 32


@dataclass(frozen=True)
class Shape:
    """One training/evaluation shape: a backbone, sentence length T (<s> and </s> included), vocabulary V."""

    label: str
    backbone: Backbone
    seq_len: int
    vocab: int

    @property
    def sizes(self) -> str:
        b = self.backbone
        return f"{b.emb_dim}/{b.enc_hidden}/{b.dec_hidden}/{b.latent_dim}"


def shapes(profile: str = "quick") -> list[Shape]:
    """The quick backbone and the snli backbone at the snli sizes (V 10,000, T 11: the papers' Table 1
    vocabulary and mean length); `paper` adds the Yahoo backbone at Yahoo's (V 20,001, T 82)."""
    from vae_collapse_bench.bench.data import paper_backbone

    out = [Shape("quick", PROFILES["quick"].backbone, 11, 10_000), Shape("snli", paper_backbone("snli"), 11, 10_000)]
    if profile == "paper":
        out.append(Shape("yahoo", paper_backbone("yahoo"), 82, 20_001))
    return out


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU's kernels run asynchronously); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Kineto (torch.profiler's C++ side) logs `USDT:2026-01-01 12:00:00 pid:tid SyncActivityProfilerHandler.cpp:52]
# profiler_start` (and STAGE/INFO lines) straight to file descriptor 2, whatever KINETO_LOG_LEVEL says.
_KINETO_LINE = re.compile(r"^(USDT|STAGE|INFO|WARNING):\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \d+:\d+ \S+\.\w+:\d+\]")


@contextlib.contextmanager
def kineto_quiet() -> Iterator[None]:
    """File descriptor 2 goes to a temporary file while the block runs; afterwards every line written
    there that is not Kineto's log chatter (_KINETO_LINE; its ERROR lines are kept) is passed on to
    sys.stderr. Python's own output (a warning, a traceback) is therefore delayed, never lost."""
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 at all: nothing to keep quiet
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        sys.stderr.flush()
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode(errors="replace").splitlines(keepends=True)
                    if not _KINETO_LINE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def random_batch(seq_len: int, batch: int = BATCH, vocab: int = 10_000, seed: int = 0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Random tokens [batch, seq_len] framed by <s> (1) and </s> (2)."""
    x = torch.randint(4, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    x[:, 0], x[:, -1] = 1, 2
    return x.to(device)


# --------------------------------------------------------------------------------------- matmul peak
def matmul_rate(m: int, k: int, n: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                min_seconds: float = 0.3, label: str = "") -> dict:
    """GFLOP/s of [m, k] @ [k, n]: the best of repeats (at least 3, and at least `min_seconds` in all)."""
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=gen).to(device, dtype)
    b = torch.randn(k, n, generator=gen).to(device, dtype)
    out = a @ b  # warm-up, and the output buffer
    times: list[float] = []
    while len(times) < 3 or sum(times) < min_seconds:
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync(device)
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"kind": "matmul", "label": label, "m": m, "k": k, "n": n, "dtype": str(dtype).removeprefix("torch."),
            "ms": 1e3 * best, "gflops": matmul_flops(m, k, n) / best / 1e9, "repeats": len(times)}


def matmul_rows(shape_list: Sequence[Shape], device: torch.device, batch: int = BATCH) -> list[dict]:
    """The large square matmul (the peak) and every shape's output projection; bf16 too on a GPU."""
    big = 8192 if device.type == "cuda" else 2048
    dtypes = [torch.float32, torch.bfloat16] if device.type == "cuda" else [torch.float32]
    rows = [matmul_rate(big, big, big, dt, device, label="peak") for dt in dtypes]
    for s in shape_list:
        tokens = batch * (s.seq_len - 1)
        rows += [matmul_rate(tokens, s.backbone.dec_hidden, s.vocab, dt, device, label=f"projection {s.label}")
                 for dt in dtypes]
    return rows


def peak_gflops(rows: list[dict]) -> float:
    return max(r["gflops"] for r in rows if r["kind"] == "matmul" and r["label"] == "peak" and r["dtype"] == "float32")


# --------------------------------------------------------------------------------------- memory
def _reset_high_water_mark() -> bool:
    """Reset the process's peak resident size to its current one (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def peak_memory(fn, device: torch.device) -> tuple[float, str]:
    """Run fn once; the memory its run added at its peak, in MiB, and how that was measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "torch.cuda.max_memory_allocated"
    runtime.trim()
    reset = _reset_high_water_mark()
    before = _maxrss_bytes()
    fn()
    how = ("ru_maxrss growth in one step (high-water mark reset, free memory trimmed)" if reset
           else "ru_maxrss growth (process high-water mark: 0 when an earlier step peaked higher)")
    return (_maxrss_bytes() - before) / 2**20, how


def minor_faults() -> int:
    """The process's minor page faults so far (a fresh page touched, e.g. memory the allocator maps)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# --------------------------------------------------------------------------------------- the machine
def machine_record(device: torch.device, profile: str) -> dict:
    """The first record of `bench perf`: device, torch, threads, cpus and the BENCH_RUNTIME setting."""
    import platform

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"kind": "machine", "device": str(device), "device_name": name, "profile": profile,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "runtime": RUNTIME,
            "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", ""),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "faults_per_mib": runtime.faults_per_mib() if device.type == "cpu" else None}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "cpu")
    except OSError:
        return "cpu"
