"""`bench perf`: how close training and evaluation come to the machine, measured in one process.

What is measured (design.md §11), in this order, every figure from this run:

* **matmul peak**: GFLOP/s of a large fp32 matmul (n = 2048 on a CPU, 8192 on a GPU; bf16 too on a
  GPU), the best of repeats; and of each training shape's output projection (B T' x F) @ (F x V).
  The large fp32 figure is the peak every `fraction_of_peak` divides by.
* **training**, per method (its default setting, its own `training_step`: zero-grad, forward,
  backward, clip at 5, optimizer step; every phase of a multi-step method such as aae) on random
  token batches, B = 32, at the shapes of `perf_tools.shapes`: the quick backbone and the snli backbone
  (128/512/512, V 10,000, T 11); with --profile paper also the Yahoo backbone (512/1024/1024,
  V 20,001, T 82). After one untimed step that measures memory and the warm-up steps, methods are
  timed round-robin (one step of each per repeat, the order rotated every repeat), so a change of
  load hits all alike; medians are reported. Per method: ms/step, tokens/s (predicted tokens
  B (T - 1) per second), GFLOP/s from `bench.flops.model_step_flops`, that over the peak, the ratio
  to the baseline's step (median of the paired ratios of each round), minor page faults per step,
  and peak memory: on a CPU the growth of the process's peak resident size (ru_maxrss) over one step,
  after freed memory was handed back (malloc_trim) and the high-water mark reset
  (/proc/self/clear_refs); on a GPU torch.cuda.max_memory_allocated over one step.
* **threads** (CPU): the baseline's step at the quick and snli shapes with 1 thread and with torch's
  default (small LSTMs are latency-bound: two 1-thread workers may beat one 2-thread process).
* **variants** (GPU): the baseline's step under bf16 autocast and with cuDNN's LSTM off, per shape.
* **fresh processes** (CPU): the baseline's step at the largest shape in a fresh process per
  BENCH_RUNTIME setting (bench.runtime: huge pages, glibc thresholds, OpenMP waiting), with its page
  faults.
* **evaluation** (the evaluator's own code, bench.evaluate, on random sentences of the shape's T at
  the baseline, untrained): sentences/s of priorLL/postLL (K = 16) and of IW-NLL (K = 500); seconds of MI
  (the paper profile's draws per datapoint), AU and CU (4,001-point quadrature) for N = 10,000
  random encodings, D = 32; greedy-decoding tokens/s and interpolation pairs/s from
  `bench.interpolate.speed`.
* **regularizer alone** (forward + backward to the encoder output, B = D = 32): ms and peak memory
  (torch.profiler's operator-level memory timeline on a CPU).

`--json FILE` writes every record (a list of dicts with a `kind`); a training record carries kind
"train", method, backbone ("512/1024/1024/32"), T, V, ms_per_step, tokens_per_s, gflops and
fraction_of_peak among others.

The baseline is --baseline, else the first family of the paper's order (bench.reported) when it is
among the methods timed, else the first of them. This module times the training steps and runs the
whole; bench.perf_tools holds the shapes and the measuring tools every section shares, bench.perf_eval
the evaluation records, bench.perf_report the printed tables.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from vae_collapse_bench.bench import registry, runtime
from vae_collapse_bench.bench.config import PROFILES, Backbone
from vae_collapse_bench.bench.device import check_device
from vae_collapse_bench.bench.errors import BenchError, plain
from vae_collapse_bench.bench.flops import model_step_flops
from vae_collapse_bench.bench.model import StepContext
from vae_collapse_bench.bench.paths import is_dir
from vae_collapse_bench.bench.perf_eval import EVAL_SIZES, eval_rows
from vae_collapse_bench.bench.perf_report import format_report
from vae_collapse_bench.bench.perf_tools import (
    BATCH,
    Shape,
    kineto_quiet,
    machine_record,
    matmul_rows,
    minor_faults,
    peak_gflops,
    peak_memory,
    random_batch,
    shapes,
    sync,
)
from vae_collapse_bench.bench.reported import paper_facts

PROFILE_NAMES = ("quick", "paper")


# --------------------------------------------------------------------------------------- training
def time_steps(methods: Sequence[str], shape: Shape, repeats: int = 5, warmup: int = 2, batch: int = BATCH,
               device: torch.device | str = "cpu", kl_weight: float = 0.5, clip: float = 5.0,
               baseline: str | None = None, peak: float = math.nan, context=contextlib.nullcontext) -> list[dict]:
    """Training records of each method at one shape (module docstring), timed round-robin; every
    step runs inside `context()` (e.g. bf16 autocast)."""
    baseline = baseline or methods[0]
    device = torch.device(device)
    x = random_batch(shape.seq_len, batch, shape.vocab, device=device)
    setups = []
    for name in methods:
        spec = registry.get(name)
        torch.manual_seed(0)
        model = spec.cls(shape.vocab, shape.backbone, spec.resolve()).to(device).train()
        # the method's own optimizers and training_step: a multi-step method (aae) is timed whole
        ctx = StepContext(kl_weight, model.configure_optimizers(PROFILES["paper"].training), clip)
        def first(model=model, ctx=ctx):
            with context():
                model.training_step(x, ctx)

        mib, how = peak_memory(first, device)
        setups.append((name, model, ctx, mib, how))

    def step(model, ctx) -> tuple[float, int]:
        sync(device)
        faults, start = minor_faults(), time.perf_counter()
        with context():
            model.training_step(x, ctx)
        sync(device)
        return time.perf_counter() - start, minor_faults() - faults

    for _ in range(warmup):
        for _, model, ctx, _, _ in setups:
            step(model, ctx)
    times: dict[str, list[float]] = {name: [] for name, *_ in setups}
    faults: dict[str, list[int]] = {name: [] for name, *_ in setups}
    for r in range(repeats):
        for name, model, ctx, _, _ in setups[r % len(setups):] + setups[: r % len(setups)]:  # rotate the order
            seconds, fault = step(model, ctx)
            times[name].append(seconds)
            faults[name].append(fault)
    rows = []
    for name, model, _, mib, how in setups:
        ts = times[name]
        # median over repeats of the paired ratio (both timed in the same round)
        ratio = statistics.median(t / v for t, v in zip(ts, times[baseline])) if baseline in times else math.nan
        seconds = statistics.median(ts)
        flops = model_step_flops(model, batch, shape.seq_len).total
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        rows.append({
            "kind": "train", "method": name, "shape": shape.label, "backbone": shape.sizes, "T": shape.seq_len,
            "V": shape.vocab, "B": batch, "ms_per_step": 1e3 * seconds, "ms_min": 1e3 * min(ts),
            "tokens_per_s": batch * (shape.seq_len - 1) / seconds, "flops_per_step": flops,
            "gflops": flops / seconds / 1e9, "fraction_of_peak": flops / seconds / 1e9 / peak,
            "ratio": ratio, "baseline": baseline, "faults_per_step": statistics.median(faults[name]),
            "peak_MiB": mib, "memory_measured_by": how, "params_MiB": params / 2**20, "repeats": repeats,
            "device": str(device), "threads": torch.get_num_threads(),
        })
    return rows


def thread_rows(method: str, shape: Shape, repeats: int, warmup: int, peak: float) -> list[dict]:
    """`method`'s step with one torch thread and with torch's default count (CPU)."""
    default = torch.get_num_threads()
    rows = []
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        try:
            row = time_steps([method], shape, repeats, warmup, peak=peak)[0]
        finally:
            torch.set_num_threads(default)
        rows.append({**row, "kind": "threads"})
    return rows


def variant_rows(method: str, shape: Shape, repeats: int, warmup: int, device: torch.device,
                 peak: float) -> list[dict]:
    """`method`'s step under bf16 autocast and (CUDA) with cuDNN's LSTM off, beside its fp32 step;
    `fraction_of_peak` stays against the fp32 peak."""
    variants = {"bf16 autocast": lambda: torch.autocast(device.type, dtype=torch.bfloat16)}
    if device.type == "cuda":
        variants["cuDNN off"] = lambda: torch.backends.cudnn.flags(enabled=False)
    rows = []
    for name, context in variants.items():
        row = time_steps([method], shape, repeats, warmup, device=device, peak=peak, context=context)[0]
        rows.append({**row, "kind": "variant", "variant": name})
    return rows


def process_settings() -> dict[str, tuple[dict[str, str], tuple[str, ...]]]:
    """Fresh-process variants, label -> (environment set, environment removed): each BENCH_RUNTIME
    setting, whose effects (huge pages, OpenMP's waiting) only a new process can show; the variables
    the settings would have set are removed first so that each shows its own."""
    own = ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY")
    return {f"{runtime.ENV}={name}": ({runtime.ENV: name}, own) for name in runtime.SETTINGS}


def process_rows(method: str, shape: Shape, repeats: int, warmup: int, profile: str) -> list[dict]:
    """`method`'s step at `shape` in a fresh process per `process_settings` entry (CPU)."""
    code = ("import json, sys, torch\n"
            "from vae_collapse_bench.bench import RUNTIME, perf, perf_tools, runtime\n"
            f"torch.set_num_threads({torch.get_num_threads()})\n"
            f"shape = [s for s in perf_tools.shapes({profile!r}) if s.label == {shape.label!r}][0]\n"
            f"row = perf.time_steps([{method!r}], shape, {repeats}, {warmup})[0]\n"
            "print(json.dumps({**row, 'runtime': RUNTIME, 'faults_per_mib': runtime.faults_per_mib()}))\n")
    rows = []
    for label, (put, drop) in process_settings().items():
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(put)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"kind": "process", "setting": label, "error": tail[:200]})
            continue
        rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "kind": "process", "setting": label})
    return rows


# --------------------------------------------------------------------------------------- regularizer
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
        sync(device)
        start = time.perf_counter()
        once()
        sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        measured, how = peak_memory(once, device)
    else:
        with kineto_quiet():
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                once()
            events = prof.events()
        live = measured = 0
        for event in sorted(events, key=lambda e: e.time_range.start):
            live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
            measured = max(measured, live)
        measured, how = measured / 2**20, "torch.profiler self-memory timeline (operator granularity)"
    setting = ",".join(f"{k}={v}" for k, v in spec.defaults.items()) or "-"
    return {"kind": "regularizer", "method": method, "setting": setting, "B": batch, "D": dim,
            "ms_fwd_bwd": 1e3 * statistics.median(times), "peak_MiB_measured": measured, "measured_by": how}


# --------------------------------------------------------------------------------------- the run
# A method whose step costs more than this many baseline steps at one shape (aggressive-vae's encoder
# loop: ~100) is not timed at the larger shapes unless --methods names it: at the Yahoo backbone one
# of its steps takes minutes on a CPU.
MAX_RATIO = 20.0


def train_records(methods: Sequence[str], shape_list: Sequence[Shape], repeats: int, warmup: int,
                  device: torch.device, baseline: str, peak: float, named: Sequence[str] = (), log=None,
                  batch: int = BATCH) -> list[dict]:
    """`time_steps` at every shape in turn; a method over MAX_RATIO x the baseline at one shape gets a
    `skipped` record at the later ones unless it is in `named`."""
    records: list[dict] = []
    slow: dict[str, dict] = {}
    for shape in shape_list:
        if log:
            log(f"training at {shape.label} ({shape.sizes}, T {shape.seq_len}, V {shape.vocab:,})")
        timed = [m for m in methods if m not in slow]
        rows = time_steps(timed, shape, repeats, warmup, batch, device=device, baseline=baseline, peak=peak)
        records += rows + [{"kind": "train", "method": m, "shape": shape.label, "backbone": shape.sizes,
                            "T": shape.seq_len, "V": shape.vocab, "B": batch,
                            "skipped": f"{r['ratio']:.0f}x {baseline} at {r['shape']}; name it in --methods "
                                       "to time it"} for m, r in slow.items()]
        slow.update({r["method"]: r for r in rows
                     if r["ratio"] > MAX_RATIO and r["method"] not in (*named, baseline)})
    return records


def run(methods: Sequence[str], profile: str = "quick", repeats: int = 5, warmup: int = 2,
        device: str = "cpu", baseline: str | None = None, log=None, interpolation_pairs: int | None = None,
        named: Sequence[str] = ()) -> list[dict]:
    """Every record of `bench perf` (module docstring), in the order they are printed.
    `interpolation_pairs`: None for the profile's number (perf_eval.EVAL_SIZES), 0 for none. `named`:
    methods timed at every shape whatever their cost (MAX_RATIO)."""
    log = log or (lambda text: None)
    device = torch.device(device)
    baseline = baseline or methods[0]
    shape_list = shapes(profile)
    records: list[dict] = [machine_record(device, profile)]
    log("matmul peak")
    records += matmul_rows(shape_list, device)
    peak = peak_gflops(records)
    records += train_records(methods, shape_list, repeats, warmup, device, baseline, peak, named, log)
    if device.type == "cuda":
        log("bf16 autocast and cuDNN")
        for shape in shape_list:
            records += variant_rows(baseline, shape, repeats, warmup, device, peak)
    if device.type == "cpu":
        log("threads")
        for shape in shape_list[:2]:  # the quick and snli backbones
            records += thread_rows(baseline, shape, repeats, warmup, peak)
        log("BENCH_RUNTIME settings (fresh processes)")
        records += process_rows(baseline, shape_list[-1], max(2, repeats // 2), 1, profile)
    for shape in shape_list[1:]:  # the paper backbones
        log(f"evaluation at {shape.label}")
        sizes = EVAL_SIZES["yahoo" if shape.label == "yahoo" else profile]
        pairs = sizes["interp_pairs"] if interpolation_pairs is None else interpolation_pairs
        records += eval_rows(baseline, shape, device, sizes["ll_sentences"], sizes["iw_sentences"],
                             interp_pairs=pairs, peak=peak)
    log("regularizers")
    records += [regularizer_term(m, repeats=max(repeats, 5), device=device) for m in methods]
    return records


def checked_json(path: str | None) -> Path | None:
    """--json FILE: its folder must exist (checked before anything is timed)."""
    if path is None:
        return None
    target = Path(path)
    if not path or is_dir(target):
        raise BenchError(f"--json {plain(path)}: give a file name")
    if not is_dir(target.parent):
        raise BenchError(f"--json {plain(path)}: the folder {plain(str(target.parent))} does not exist; "
                         "create it first")
    return target


def benchmark(methods: str = "all", baseline: str | None = None, repeats: int = 5, warmup: int = 2,
              profile: str = "quick", device: str = "cpu", json_path: str | None = None, command: str = "",
              log=None, interpolation_pairs: int | None = None) -> str:
    """`bench perf` (its arguments are parsed in bench.cli): the report, ready to print; the records
    also go to `json_path` when given."""
    if repeats < 1 or warmup < 0:
        raise BenchError(f"--repeats must be >= 1 and --warmup >= 0, got {repeats} and {warmup}")
    if profile not in PROFILE_NAMES:
        raise BenchError(f"--profile {plain(profile)}: bench perf knows {' and '.join(PROFILE_NAMES)}")
    check_device(device)
    target = checked_json(json_path)
    names = [m.name for m in registry.select(methods)]
    if baseline is not None:  # `--baseline ""` is an unknown method, not "no baseline"
        registry.get(baseline)
    else:
        first = paper_facts().order[0]  # the paper's first family, its plain baseline
        baseline = first if first in names else names[0]
    names = [baseline] + [m for m in names if m != baseline]
    if interpolation_pairs is not None and not 0 <= interpolation_pairs <= 100_000:
        raise BenchError(f"--interpolation-pairs must be from 0 to 100,000, got {interpolation_pairs}")
    named = names if methods.strip().lower() != "all" else []
    records = run(names, profile, repeats, warmup, device, baseline, log, interpolation_pairs, named)
    records[0]["command"] = command or "bench perf"
    if target is not None:
        try:
            target.write_text(json.dumps(records, indent=1, default=str) + "\n")
        except OSError as exc:
            raise BenchError(f"cannot write --json {plain(str(target))}: {exc.strerror}") from None
    return format_report(records)
