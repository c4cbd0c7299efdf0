"""`bench perf`: training-step throughput of the methods, and ratios measured in one process.

What is measured (design.md §2, §5):

* ms per training step (the method's own `training_step` with its own optimizers: zero_grad, forward,
  backward, gradient clipping at 5, SGD step; every phase of a multi-step method such as aae) of the
  methods named by --methods (default: every registered method; each at its default setting), at
  the `quick` backbone (64/128/128, D = 32) and at the paper backbone of
  snli / short-yelp (128/512/512, D = 32), batch B = 32, sequence length T = 11 and T = 82 (T counts
  the whole sentence tensor, <s> and </s> included), vocabulary 10,000, random token batches.
  After warm-up, the methods are timed round-robin (one step of each per repeat, the order rotated
  every repeat), so a change of machine load hits every method alike; the median over repeats is
  reported. torch's thread count is left at its default.
* the ratio of every method's step to the --baseline method's (default: the first of --methods) in
  the same configuration: the median over repeats of the paired ratio (both timed in one round).
* each method's regularizer alone (forward + backward through the posterior parameters) at B = 32,
  D = 32 on random encoder outputs: ms, and its peak memory MEASURED (torch.profiler with
  profile_memory=True: the running sum of every operator's self allocation, in start-time order,
  maximised; operator granularity; on CUDA max_memory_allocated). For dg-vae at its defaults this is
  the DG term at B = |b| = M = D = 32.

Run: `bench perf --methods vae,bn-vae,vmf-vae,dg-vae,dg-vmf-vae [--repeats N] [--quick] [--device cuda]`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from tabulate import tabulate
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import PROFILES, Backbone
from vae_collapse_bench.bench.device import check_device
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.model import StepContext

VOCAB = 10_000
BATCH = 32


@dataclass(frozen=True)
class PerfConfig:
    label: str
    backbone: Backbone
    seq_len: int

    @property
    def sizes(self) -> str:
        b = self.backbone
        return f"{b.emb_dim}/{b.enc_hidden}/{b.dec_hidden}/{b.latent_dim}"


def configs(quick: bool = False) -> list[PerfConfig]:
    """The quick backbone at T = 11 and 82; without `quick`, the paper backbone too."""
    from vae_collapse_bench.bench.data import paper_backbone

    small, paper = PROFILES["quick"].backbone, paper_backbone("snli")  # one source for each
    out = [PerfConfig("quick", small, 11), PerfConfig("quick", small, 82)]
    if not quick:
        out += [PerfConfig("paper-snli", paper, 11), PerfConfig("paper-snli", paper, 82)]
    return out


def _sync(device: torch.device) -> None:
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


def random_batch(seq_len: int, batch: int = BATCH, vocab: int = VOCAB, seed: int = 0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Random tokens [batch, seq_len] framed by <s> (1) and </s> (2)."""
    x = torch.randint(4, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    x[:, 0], x[:, -1] = 1, 2
    return x.to(device)


def time_steps(methods: Sequence[str], config: PerfConfig, repeats: int = 5, warmup: int = 2,
               batch: int = BATCH, vocab: int = VOCAB, device: torch.device | str = "cpu",
               kl_weight: float = 0.5, clip: float = 5.0, baseline: str | None = None) -> list[dict]:
    """Median ms per training step of each method on one configuration, timed round-robin."""
    baseline = baseline or methods[0]
    device = torch.device(device)
    x = random_batch(config.seq_len, batch, vocab, device=device)
    setups = []
    for name in methods:
        spec = registry.get(name)
        torch.manual_seed(0)
        model = spec.cls(vocab, config.backbone, spec.resolve()).to(device).train()
        # the method's own optimizers and training_step: a multi-step method (aae) is timed whole
        optimizers = model.configure_optimizers(PROFILES["paper"].training)
        setups.append((name, model, StepContext(kl_weight, optimizers, clip)))

    def step(model, ctx) -> float:
        _sync(device)
        start = time.perf_counter()
        model.training_step(x, ctx)
        _sync(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        for _, model, ctx in setups:
            step(model, ctx)
    times: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    for r in range(repeats):
        for name, model, ctx in setups[r % len(setups):] + setups[: r % len(setups)]:  # rotate the order
            times[name].append(step(model, ctx))
    rows = []
    for name, ts in times.items():
        # median over repeats of the paired ratio (both timed in the same round)
        ratio = statistics.median(t / v for t, v in zip(ts, times[baseline])) if baseline in times else math.nan
        rows.append({
            "kind": "step", "config": config.label, "backbone": config.sizes, "T": config.seq_len, "B": batch,
            "method": name, "ms_per_step": 1e3 * statistics.median(ts), "ms_min": 1e3 * min(ts),
            "ratio": ratio, "baseline": baseline, "repeats": repeats,
        })
    return rows


def regularizer_term(method: str, batch: int = BATCH, dim: int = 32, repeats: int = 20,
                     device: torch.device | str = "cpu") -> dict:
    """One method's regularizer alone, forward + backward to the encoder output: median ms and
    measured peak memory, on random encoder outputs h ~ N(0, 1) of a batch of `batch`."""
    from torch.profiler import ProfilerActivity, profile

    device = torch.device(device)
    spec = registry.get(method)
    torch.manual_seed(0)
    model = spec.cls(50, Backbone(8, 8, 8, dim), spec.resolve()).to(device).train()
    x = random_batch(5, batch, 50, device=device)
    h = torch.randn(batch, model.encoder_out_dim(dim), generator=torch.Generator().manual_seed(0))
    h = h.to(device).requires_grad_(True)

    def once():
        q = model.posterior(h)
        reg = model.regularizer(q, q.rsample(1)[0], x).value
        if reg.requires_grad:  # a constant regularizer (vMF's KL) has nothing to differentiate
            reg.backward()

    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        once()
        _sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        once()
        torch.cuda.synchronize(device)
        measured, how = torch.cuda.max_memory_allocated(device) - before, "torch.cuda.max_memory_allocated"
    else:
        with kineto_quiet():
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                once()
            events = prof.events()
        live = measured = 0
        for event in sorted(events, key=lambda e: e.time_range.start):
            live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
            measured = max(measured, live)
        how = "torch.profiler self-memory timeline (operator granularity)"
    setting = ",".join(f"{k}={v}" for k, v in spec.defaults.items()) or "-"
    return {"kind": "regularizer", "method": method, "setting": setting, "B": batch, "D": dim,
            "ms_fwd_bwd": 1e3 * statistics.median(times), "peak_MiB_measured": measured / 2**20,
            "measured_by": how}


def run(methods: Sequence[str], repeats: int = 5, quick: bool = False, device: str = "cpu", warmup: int = 2,
        baseline: str | None = None) -> list[dict]:
    """Every configuration's step rows, then each method's regularizer row."""
    rows: list[dict] = []
    for config in configs(quick):
        rows += time_steps(methods, config, repeats=repeats, warmup=warmup, device=device, baseline=baseline)
    rows += [regularizer_term(m, repeats=max(repeats, 5), device=device) for m in methods]
    return rows


def format_table(rows: list[dict]) -> str:
    steps = [r for r in rows if r["kind"] == "step"]
    parts = []
    if steps:
        methods = list(dict.fromkeys(r["method"] for r in steps))
        keys = list(dict.fromkeys((r["config"], r["backbone"], r["T"]) for r in steps))
        table = []
        for key in keys:
            cells = {r["method"]: r for r in steps if (r["config"], r["backbone"], r["T"]) == key}
            line = [key[0], key[1], key[2]]
            for name in methods:
                r = cells.get(name)
                line.append(f"{r['ms_per_step']:.1f} ({r['ratio']:.3f}x)" if r else "-")
            table.append(line)
        parts.append(f"ms per training step, median (ratio to {steps[0]['baseline']}), B = 32, V = {VOCAB}\n"
                     + tabulate(table, headers=["config", "emb/enc/dec/D", "T", *methods]))
    regs = [r for r in rows if r["kind"] == "regularizer"]
    if regs:
        parts.append(f"regularizer alone, forward + backward, B = {regs[0]['B']}, D = {regs[0]['D']} "
                     f"(peak memory: {regs[0]['measured_by']})\n" + tabulate(
                         [[r["method"], r["setting"], f"{r['ms_fwd_bwd']:.2f}", f"{r['peak_MiB_measured']:.2f}"]
                          for r in regs], headers=["method", "setting", "ms", "peak MiB"]))
    return "\n\n".join(parts)


def benchmark(methods: str = "all", baseline: str | None = None, repeats: int = 5, warmup: int = 2,
              quick: bool = False, device: str = "cpu", command: str = "") -> str:
    """`bench perf` (its arguments are parsed in bench.cli): the report, ready to print."""
    if repeats < 1 or warmup < 0:
        raise BenchError(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {warmup}")
    check_device(device)
    names = [m.name for m in registry.select(methods)]
    if baseline is not None:  # `--baseline ""` is an unknown method, not "no baseline"
        registry.get(baseline)
        names = [baseline] + [m for m in names if m != baseline]
    rows = run(names, repeats=repeats, quick=quick, device=device, warmup=warmup)
    return (f"bench perf on {device}: torch {torch.__version__}, {torch.get_num_threads()} threads; "
            f"command: {command or 'bench perf'}\n{format_table(rows)}")
