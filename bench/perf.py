"""`bench perf`: training-step throughput of the methods, and ratios measured in one process.

What is measured (design.md §2, §5):

* ms per training step (zero_grad, forward, backward, gradient clipping at 5, SGD step) for vae,
  bn-vae, vmf-vae, dg-vae (default agg: the whole batch is one group) and dg-vmf-vae (each skipped
  when not registered), at the `quick` backbone (64/128/128, D = 32) and at the paper backbone of
  snli / short-yelp (128/512/512, D = 32), batch B = 32, sequence length T = 11 and T = 82 (T counts
  the whole sentence tensor, <s> and </s> included), vocabulary 10,000, random token batches.
  After warm-up, the methods are timed round-robin (one step of each per repeat, the order rotated
  every repeat), so a change of machine load hits every method alike; the median over repeats is
  reported. torch's thread count is left at its default.
* the ratio of every method's step to vae's in the same configuration (the DG regularizer's cost):
  the median over repeats of the paired ratio (the two steps timed in the same round).
* the DG term alone at B = |b| = M = D = 32: ms for forward + backward, and its peak memory, both
  MEASURED (torch.profiler with profile_memory=True: the running sum of every operator's self
  allocation, in start-time order, maximised; operator granularity) and ANALYTIC (its largest
  intermediate, the B |b| M D table of log-densities, float32).

Run: `python -m bench.perf [--repeats N] [--quick] [--device cpu|cuda]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tabulate import tabulate

from bench import registry
from bench.config import Backbone

METHODS = ("vae", "bn-vae", "vmf-vae", "dg-vae", "dg-vmf-vae")
QUICK_BACKBONE = Backbone(64, 128, 128, 32)
PAPER_BACKBONE = Backbone(128, 512, 512, 32)  # snli, short-yelp
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
    out = [PerfConfig("quick", QUICK_BACKBONE, 11), PerfConfig("quick", QUICK_BACKBONE, 82)]
    if not quick:
        out += [PerfConfig("paper-snli", PAPER_BACKBONE, 11), PerfConfig("paper-snli", PAPER_BACKBONE, 82)]
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(seq_len: int, batch: int = BATCH, vocab: int = VOCAB, seed: int = 0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Random tokens [batch, seq_len] framed by <s> (1) and </s> (2)."""
    x = torch.randint(4, vocab, (batch, seq_len), generator=torch.Generator().manual_seed(seed))
    x[:, 0], x[:, -1] = 1, 2
    return x.to(device)


def time_steps(methods: Sequence[str], config: PerfConfig, repeats: int = 5, warmup: int = 2,
               batch: int = BATCH, vocab: int = VOCAB, device: torch.device | str = "cpu",
               kl_weight: float = 0.5, clip: float = 5.0) -> list[dict]:
    """Median ms per training step of each method on one configuration, timed round-robin."""
    device = torch.device(device)
    x = random_batch(config.seq_len, batch, vocab, device=device)
    setups = []
    for name in methods:
        spec = registry.get(name)
        torch.manual_seed(0)
        model = spec.cls(vocab, config.backbone, spec.resolve()).to(device).train()
        setups.append((name, model, torch.optim.SGD(model.parameters(), lr=0.5)))

    def step(model, opt) -> float:
        _sync(device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.loss(x, kl_weight).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        _sync(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        for _, model, opt in setups:
            step(model, opt)
    times: dict[str, list[float]] = {name: [] for name, _, _ in setups}
    for r in range(repeats):
        for name, model, opt in setups[r % len(setups):] + setups[: r % len(setups)]:  # rotate the order
            times[name].append(step(model, opt))
    rows = []
    for name, ts in times.items():
        # the ratio to vae: median over repeats of the paired ratio (both timed in the same round)
        ratio = statistics.median(t / v for t, v in zip(ts, times["vae"])) if "vae" in times else float("nan")
        rows.append({
            "kind": "step", "config": config.label, "backbone": config.sizes, "T": config.seq_len, "B": batch,
            "method": name, "ms_per_step": 1e3 * statistics.median(ts), "ms_min": 1e3 * min(ts),
            "x_vae": ratio, "repeats": repeats,
        })
    return rows


def dg_term(batch: int = 32, agg: int | None = 32, m: int = 32, dim: int = 32, repeats: int = 20,
            device: torch.device | str = "cpu") -> dict:
    """The DG regularizer alone (forward + backward): median ms and peak memory, measured and analytic."""
    from torch.profiler import ProfilerActivity, profile

    from methods.dg_vae import density_gap_kl

    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(batch, dim, generator=gen).to(device).requires_grad_(True)
    logvar = torch.randn(batch, dim, generator=gen).to(device).requires_grad_(True)

    def once():
        density_gap_kl(loc, torch.exp(0.5 * logvar), agg, m).backward()

    for _ in range(3):
        once()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        once()
        _sync(device)
        times.append(time.perf_counter() - start)

    group = batch if agg is None else min(agg, batch)
    analytic = batch * group * m * dim * 4  # the [B/|b|, D, |b| M, |b|] log-density table, float32
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        once()
        torch.cuda.synchronize(device)
        measured, how = torch.cuda.max_memory_allocated(device) - before, "torch.cuda.max_memory_allocated"
    else:
        activities = [ProfilerActivity.CPU]
        with profile(activities=activities, profile_memory=True) as prof:
            once()
        live = peak = 0
        for event in sorted(prof.events(), key=lambda e: e.time_range.start):
            live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
            peak = max(peak, live)
        measured, how = peak, "torch.profiler self-memory timeline (operator granularity)"
    return {
        "kind": "dg-term", "B": batch, "agg": group, "M": m, "D": dim, "ms_fwd_bwd": 1e3 * statistics.median(times),
        "peak_MiB_measured": measured / 2**20, "largest_intermediate_MiB": analytic / 2**20, "measured_by": how,
    }


def run(repeats: int = 5, quick: bool = False, device: str = "cpu", warmup: int = 2,
        methods: Sequence[str] = METHODS) -> list[dict]:
    """Every configuration's step rows, then the DG term's row. Unregistered methods are skipped."""
    known = set(registry.names())
    chosen = [m for m in methods if m in known]
    rows: list[dict] = []
    for config in configs(quick):
        rows += time_steps(chosen, config, repeats=repeats, warmup=warmup, device=device)
    rows.append(dg_term(repeats=max(repeats, 5), device=device))
    skipped = [m for m in methods if m not in known]
    if skipped:
        rows.append({"kind": "skipped", "methods": ", ".join(skipped)})
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
                line.append(f"{r['ms_per_step']:.1f} ({r['x_vae']:.3f}x)" if r else "-")
            table.append(line)
        parts.append("ms per training step, median (ratio to vae), B = 32, V = 10000\n"
                     + tabulate(table, headers=["config", "emb/enc/dec/D", "T", *methods]))
    for r in rows:
        if r["kind"] == "dg-term":
            parts.append(
                f"DG term alone, B = |b| = M = D = {r['B']}: {r['ms_fwd_bwd']:.2f} ms forward + backward; "
                f"peak memory {r['peak_MiB_measured']:.2f} MiB measured ({r['measured_by']}), "
                f"largest intermediate {r['largest_intermediate_MiB']:.2f} MiB (analytic)")
        elif r["kind"] == "skipped":
            parts.append(f"not registered, skipped: {r['methods']}")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench perf", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per method and config (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method and config")
    parser.add_argument("--quick", action="store_true", help="the quick backbone only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    rows = run(repeats=args.repeats, quick=args.quick, device=args.device, warmup=args.warmup)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
