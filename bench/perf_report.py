"""`bench perf`'s records (bench.perf) as the text it prints: one table per section, 80 columns."""

from __future__ import annotations

import math

import tabulate as tabulate_module


def tabulate(rows, headers, **options) -> str:
    """tabulate's table without its padding of headers (2 spaces more per column), so that the
    training table of 8 columns fits 80 columns."""
    saved = tabulate_module.MIN_PADDING
    tabulate_module.MIN_PADDING = 0
    try:
        return tabulate_module.tabulate(rows, headers=headers, **options)
    finally:
        tabulate_module.MIN_PADDING = saved


def _num(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def _machine(r: dict) -> str:
    thp = r.get("faults_per_mib")
    pages = "" if thp is None else f"; {thp:.1f} page faults per MiB written"
    name, _, detail = r["runtime"].partition(" (")
    return (f"bench perf, profile {r['profile']}, on {r['device']} ({r['device_name']})\n"
            f"torch {r['torch']}, {r['threads']} threads of {r['cpus']} cpus\n"
            f"BENCH_RUNTIME {name}{pages}\n  {detail.rstrip(')')}\ncommand: {r.get('command', 'bench perf')}")


def _matmuls(rows: list[dict]) -> str:
    table = [[r["label"], f"{r['m']}x{r['k']}x{r['n']}", r["dtype"], _num(r["ms"], 2), _num(r["gflops"])]
             for r in rows]
    return ("matmul [m, k] @ [k, n], best of repeats; `of peak` divides by the fp32 peak\n"
            + tabulate(table, headers=["what", "m x k x n", "dtype", "ms", "GFLOP/s"], disable_numparse=True))


def _training(rows: list[dict]) -> str:
    skipped = [r for r in rows if "skipped" in r]
    rows = [r for r in rows if "skipped" not in r]
    r0 = rows[0]
    head = (f"training at {r0['shape']}: {r0['backbone']}, B {r0['B']}, T {r0['T']}, V {r0['V']:,}\n"
            f"{r0['flops_per_step'] / 1e9:,.2f} GFLOP per {r0['method']} step (bench.flops); medians of "
            f"{r0['repeats']} rounds")
    table = [[r["method"], _num(r["ms_per_step"]), _num(r["ratio"], 3), _num(r["tokens_per_s"], 0),
              _num(r["gflops"]), f"{100 * r['fraction_of_peak']:.0f}%" if math.isfinite(r["fraction_of_peak"])
              else "-", _num(r["faults_per_step"], 0), _num(r["peak_MiB"], 0)] for r in rows]
    notes = "".join(f"\nnot timed: {r['method']} ({r['skipped']})" for r in skipped)
    return head + "\n" + tabulate(table, headers=["method", "ms/step", f"x {r0['baseline']}", "tok/s",
                                                  "GFLOP/s", "of peak", "faults", "MiB"],
                                  disable_numparse=True, colalign=("left",) + ("right",) * 7) + notes


def _side(rows: list[dict], title: str, label) -> str:
    parts = []
    for r in rows:
        if "error" in r:
            parts.append(f"{label(r)}: failed ({r['error']})")
        else:
            parts.append(f"{label(r)}: {r['ms_per_step']:,.1f} ms/step, {r['faults_per_step']:,.0f} faults/step")
    return f"{title}\n  " + "\n  ".join(parts)


def _evaluation(rows: list[dict]) -> str:
    r0 = rows[0]
    table = []
    for r in rows:
        share = f", {100 * r['fraction_of_peak']:.0f}% of peak" if math.isfinite(r.get("fraction_of_peak", math.nan)) \
            else ""
        rate = ("-" if "sentences_per_s" not in r and "tokens_per_s" not in r and "pairs_per_s" not in r else
                f"{r['sentences_per_s']:,.1f} sentences/s{share}" if "sentences_per_s" in r else
                f"{r['tokens_per_s']:,.0f} tokens/s" if "tokens_per_s" in r else f"{r['pairs_per_s']:,.1f} pairs/s")
        size = f"{r['N']:,} x K {r['K']}" if "K" in r else f"N {r['N']:,}"
        table.append([r["what"], size, _num(r["seconds"], 2), rate if rate != "-" else r.get("detail", "")])
    return (f"evaluation at {r0['shape']}: {r0['backbone']}, T {r0['T']}, V {r0['V']:,}\n"
            f"(bench.evaluate's code, untrained {r0['method']}, random sentences)\n"
            + tabulate(table, headers=["what", "size", "seconds", "rate"], disable_numparse=True))


def _summary(train: list[dict]) -> str:
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in train):
        rows = [r for r in train if r["shape"] == shape and "skipped" not in r]
        slowest = max(rows, key=lambda r: r["ratio"] if math.isfinite(r["ratio"]) else -1)
        base = next((r for r in rows if r["method"] == r["baseline"]), rows[0])
        lines.append(f"  {shape}: {base['method']} at {100 * base['fraction_of_peak']:.0f}% of the peak; slowest "
                     f"{slowest['method']} at {slowest['ratio']:.3f}x {base['method']}")
    return "ratios (hold on a loaded machine)\n" + "\n".join(lines)


def _regularizers(rows: list[dict]) -> str:
    return (f"regularizer alone, forward + backward, B = {rows[0]['B']}, D = {rows[0]['D']}\n"
            f"peak memory: {rows[0]['measured_by']}\n" + tabulate(
                [[r["method"], r["setting"], f"{r['ms_fwd_bwd']:.2f}", f"{r['peak_MiB_measured']:.2f}"] for r in rows],
                headers=["method", "setting", "ms", "peak MiB"], disable_numparse=True))


def format_report(records: list[dict]) -> str:
    """Every section whose records are present, in the order bench.perf.run makes them."""
    by_kind: dict[str, list[dict]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    parts = [_machine(r) for r in by_kind.get("machine", [])]
    if by_kind.get("matmul"):
        parts.append(_matmuls(by_kind["matmul"]))
    train = by_kind.get("train", [])
    for shape in dict.fromkeys(r["shape"] for r in train):
        parts.append(_training([r for r in train if r["shape"] == shape]))
    if train:
        parts[-1] += f"\nMiB: {train[0]['memory_measured_by']}\nfaults: minor page faults per step"
        train = [r for r in train if "skipped" not in r]
    if by_kind.get("threads"):
        r0 = by_kind["threads"][0]
        parts.append(_side(by_kind["threads"], f"torch threads ({r0['method']})",
                           lambda r: f"{r['shape']}, {r['threads']} thread{'s' * (r['threads'] > 1)}"))
    if by_kind.get("variant"):
        base = {(r["method"], r["shape"]): r for r in train}
        lines = []
        for r in by_kind["variant"]:
            fp32 = base.get((r["method"], r["shape"]))
            vs = f" ({r['ms_per_step'] / fp32['ms_per_step']:.2f}x fp32)" if fp32 else ""
            lines.append(f"{r['shape']}, {r['variant']}: {r['ms_per_step']:,.1f} ms/step{vs}")
        parts.append(f"variants ({by_kind['variant'][0]['method']})\n  " + "\n  ".join(lines))
    if by_kind.get("process"):
        r0 = next((r for r in by_kind["process"] if "shape" in r), None)
        where = f" ({r0['method']} at {r0['shape']})" if r0 else ""
        parts.append(_side(by_kind["process"], f"a fresh process each{where}", lambda r: r["setting"]))
    evals = by_kind.get("eval", [])
    for shape in dict.fromkeys(r["shape"] for r in evals):
        parts.append(_evaluation([r for r in evals if r["shape"] == shape]))
    if train:
        parts.append(_summary(train))
    if by_kind.get("regularizer"):
        parts.append(_regularizers(by_kind["regularizer"]))
    return "\n\n".join(parts)
