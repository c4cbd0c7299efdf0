"""`bench leaderboard --publish`: one board written as a folder `<root>/<dataset>/<profile>/`, and the
index of every published board in `<root>/README.md`.

The folder holds README.md (the table, the figures inline, the paper's claims judged on the rows when
the board has rows they are about, profile, hardware, compute, the commands that reproduce it, stale
and failed runs counted), table.csv, table.json, table.tex (booktabs),
index.html (self-contained: sortable, grouped by family, figures embedded), the figures (PNG and
SVG: trade-off curves, latent pictures, interpolation curves when stored) and runs.jsonl, the compact
export of the study (bench.export) that `bench leaderboard --from` rebuilds the board from.

Deterministic: nothing depends on the clock, the machine publishing or the command's spelling (the
command written is the canonical one), so the same store gives byte-identical files.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError, plain
from vae_collapse_bench.bench.export import export_lines
from vae_collapse_bench.bench.webpage import Figure, page

# Every file a publication writes: files of these names left from an earlier publication and not
# written this time (a figure that could not be drawn now) are removed, nothing else is touched.
OWNED = ("README.md", "table.csv", "table.json", "table.tex", "index.html", "runs.jsonl", "tradeoff.png",
         "tradeoff.svg", "latent.png", "latent.svg", "interpolation.png", "interpolation.svg")
INDEX_START, INDEX_END = "<!-- boards:start -->", "<!-- boards:end -->"


@dataclass
class Publication:
    """What one board's folder is made from (the CLI fills it; tests build it from a smoke store)."""

    dataset: str
    profile: object  # bench.config.Profile
    board: object  # bench.report.Leaderboard
    shown: pd.DataFrame  # the runs the board aggregates (report.select_runs)
    store: object  # RunStore or bench.export.ExportedStore
    current_config: str
    stale: int
    bench_version: str
    load_corpus: Callable[[], object] | None = None  # for the latent pictures (None: not drawn)
    device: str = "cpu"
    notes: list[str] = field(default_factory=list)  # figures not drawn, and why

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.profile.name}"

    @property
    def command(self) -> str:
        return f"bench leaderboard --dataset {self.dataset} --profile {self.profile.name} --publish"


def publish(pub: Publication, root: Path) -> list[Path]:
    """Write the board's folder and update the index; returns the files written."""
    folder = root / pub.dataset / pub.profile.name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create {plain(str(folder))}: {exc.strerror or exc}") from None
    pub.board.meta = {"bench_version": pub.bench_version, "command": pub.command}
    figures = draw_figures(pub, folder)
    counts = run_counts(pub)
    files = {
        "table.csv": pub.board.render("csv"),
        "table.json": _table_json(pub, counts),
        "table.tex": _latex(pub),
        "runs.jsonl": export_lines(pub.store, pub.current_config, pub.bench_version),
    }
    sections = summary_sections(pub, counts)
    files["README.md"] = _readme(pub, figures, sections)
    pictures = [Figure(stem, caption, (folder / f"{stem}.png").read_bytes()) for stem, caption in figures]
    files["index.html"] = page(f"Leaderboard: {pub.title}", [pub.board], pictures, _html_preamble(pub, sections))
    written = [folder / f"{stem}.{ext}" for stem, _ in figures for ext in ("png", "svg")]
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8", newline="\n")
        written.append(folder / name)
    for name in OWNED:
        if (folder / name) not in written and (folder / name).exists():
            (folder / name).unlink()
    written.append(update_index(root))
    return written


# --------------------------------------------------------------------------------------- figures
def draw_figures(pub: Publication, folder: Path) -> list[tuple[str, str]]:
    """(file stem, caption) of each figure drawn into folder; a figure that cannot be drawn adds a note
    saying why (the board is published all the same)."""
    from vae_collapse_bench.bench.plots import latent_figure, save, tradeoff_figure
    from vae_collapse_bench.bench.tradeoff import tradeoff_points

    drawn = []
    points = tradeoff_points(pub.shown)
    save(tradeoff_figure(points, f"priorLL vs postLL: {pub.title}"), folder / "tradeoff")
    front = int(points["pareto"].sum())
    drawn.append(("tradeoff", f"Trade-off: priorLL (holes) against postLL (collapse), a curve per method across "
                              f"its grid, mean ± std over seeds; ringed: the Pareto front ({front} of {len(points)} "
                              "settings)."))
    panels, skipped = latent_panels(pub)
    if panels:
        save(latent_figure(panels, pub.title), folder / "latent")
        drawn.append(("latent", "Latent space (the paper's Figure 4): aggregated posterior density on [-5, 5]^2 "
                                "over the two dims of largest variance of the posterior means, one shared colour "
                                "scale; dots: posterior means. Each method at the setting the paper's Figure 1 "
                                f"draws where the board has it ({_figure_names()}), else at its default setting "
                                "(else its first); lowest seed."))
    pub.notes += skipped
    interpolation = _interpolation_figure(pub, folder)
    if interpolation:
        drawn.append(interpolation)
    return drawn


def latent_panels(pub: Publication) -> tuple[list, list[str]]:
    """The latent picture of every Gaussian method of the board; notes for what was left out."""
    from vae_collapse_bench.bench.latent import choose_runs, run_panels

    if pub.load_corpus is None:
        return [], ["Latent picture not drawn: the board was rebuilt from an export, without checkpoints."]
    try:
        corpus = pub.load_corpus()
    except BenchError as exc:
        return [], [f"Latent picture not drawn: {exc}"]
    attrs = {t.number: t.user_attrs for t in pub.store.trials()}
    methods = list(dict.fromkeys(pub.shown["method"]))
    figure = _figure_settings(pub)
    chosen = choose_runs(pub.shown, [(m, figure.get(m)) for m in methods])
    panels, skipped = [], []
    for _, row in chosen.iterrows():
        try:
            panels += run_panels(pd.DataFrame([row]), attrs, corpus, pub.profile, pub.device)
        except BenchError as exc:
            skipped.append(str(exc))
    notes = [f"Latent picture leaves out {len(skipped)} method(s): " + "; ".join(skipped)] if skipped else []
    return panels, notes


def _figure_settings(pub: Publication) -> dict:
    """{method: setting} of the paper's Figure 1 settings on this board (none where D differs)."""
    from vae_collapse_bench.bench.claims_report import figure_settings

    return figure_settings(pub.board) if pub.board.latent_dim is not None else {}


def _figure_names() -> str:
    from vae_collapse_bench.bench.claims_report import load_claims

    return ", ".join(f"{r.method}{''.join(f' {k} {v}' for k, v in r.params)}" for r in load_claims().latent_figure)


def _interpolation_figure(pub: Publication, folder: Path) -> tuple[str, str] | None:
    """The interpolation curves (paper Figure 5) when the evaluation records hold them (drawn by
    bench.interpolation_report, which owns `bench plot interpolation`)."""
    try:
        from vae_collapse_bench.bench.interpolation_report import plot_curves, stored_curves
    except ImportError:
        return None
    curves = stored_curves(pub.store, pub.current_config)
    if not curves:
        pub.notes.append("Interpolation curves not drawn: no evaluation record holds one (bench evaluate).")
        return None
    plot_curves(curves, f"Interpolation (Eq. 14): {pub.title}", folder / "interpolation")
    return ("interpolation", "Interpolation (the paper's Eq. 14 and Figure 5): Rouge-L F1 of the sentence decoded "
                             "from (1 - lambda) mu_a + lambda mu_b to the endpoints, mean ± std over seeds.")


# --------------------------------------------------------------------------------------- numbers
def run_counts(pub: Publication) -> dict:
    """Runs shown, stale, failed for good (current config, no finished record), compute in hours."""
    records = [t for t in pub.store.trials() if t.state.name in ("COMPLETE", "FAIL")
               and not t.user_attrs.get("claim_lost")]
    done = {t.user_attrs.get("training_key") for t in records if t.state.name == "COMPLETE"}
    failed = {t.user_attrs.get("training_key") for t in records if t.state.name == "FAIL"
              and t.user_attrs.get("diverged") and t.user_attrs.get("config_key") == pub.current_config} - done
    shown = set(pub.shown["trial"])
    seconds = [_record_seconds(t.user_attrs) for t in records]
    shown_seconds = [_record_seconds(t.user_attrs, carried=True) for t in records if t.number in shown]
    return {"rows": len(pub.board.table), "runs": len(pub.shown), "stale": pub.stale, "failed": len(failed),
            "records": len(records), "compute_hours_shown": round(sum(shown_seconds) / 3600, 3),
            "compute_hours_all": round(sum(seconds) / 3600, 3)}


def _record_seconds(a: dict, carried: bool = False) -> float:
    """The wall time a record cost: training + evaluation for a trained run, the evaluation alone
    for a re-evaluation (whose wall_time_s is carried over from the training record)."""
    if "evaluated_from_trial" in a:
        return float(a.get("eval_wall_time_s") or 0.0) + (float(a.get("wall_time_s") or 0.0) if carried else 0.0)
    return float(a.get("wall_time_s") or 0.0)


def _hardware(pub: Publication) -> list[str]:
    shown = set(pub.shown["trial"])
    attrs = [t.user_attrs for t in pub.store.trials() if t.number in shown]
    devices = Counter(a.get("device", "?") for a in attrs)
    threads = Counter(str(a.get("torch_threads", "?")) for a in attrs)
    versions = Counter(", ".join(f"{k} {v}" for k, v in sorted((a.get("versions") or {}).items())
                                 if k in ("python", "torch")) for a in attrs)
    hosts = len({a.get("host") for a in attrs})
    peak = max((float(a.get("peak_memory_mb") or 0) for a in attrs), default=0.0)
    return [f"device: {_counted(devices)}; torch intra-op threads: {_counted(threads)}",
            f"{hosts} host{'s' if hosts != 1 else ''}; {_counted(versions)}",
            f"largest peak memory of a run: {peak:,.0f} MB"]


def _counted(counter: Counter) -> str:
    return ", ".join(f"{k} ({n} run{'s' if n != 1 else ''})" for k, n in sorted(counter.items()))


def reproduce_commands(pub: Publication) -> list[str]:
    """The commands that train these runs again and publish them: one `bench run` per group of methods
    shown at their whole paper grid (or their default setting) with the same seeds, and one per other
    setting (--set), then the publishing command."""
    from vae_collapse_bench.bench.reported import parse_setting
    from vae_collapse_bench.bench.runner import expand

    tail = f"--dataset {pub.dataset} --profile {pub.profile.name}"
    grouped: dict[tuple[str, str], list[str]] = {}
    singles = []
    for method, runs in pub.shown.groupby("method", sort=False):
        shown = set(runs["setting"])
        seeds = ",".join(str(s) for s in sorted({int(s) for s in runs["seed"]}))
        grid = None
        if method in registry.names():
            spec = registry.get(method)
            for name in ("paper", "default"):
                if shown == {r.setting for r in expand([spec], pub.dataset, pub.profile.name, name, [0])}:
                    grid = name
                    break
        if grid:
            grouped.setdefault((grid, seeds), []).append(method)
            continue
        for setting in dict.fromkeys(runs["setting"]):
            sets = "".join(f" --set {method}.{k}={v}" for k, v in parse_setting(setting).items())
            seeds_here = ",".join(str(s) for s in sorted({int(s) for s in runs[runs["setting"] == setting]["seed"]}))
            singles.append(f"bench run --methods {method}{sets} {tail} --seeds {seeds_here}")
    every = set(registry.names())
    commands = [f"bench run --methods {'all' if set(methods) == every else ','.join(methods)} --grid {grid} "
                f"{tail} --seeds {seeds}" for (grid, seeds), methods in grouped.items()]
    return commands + singles + [pub.command]


def summary_sections(pub: Publication, counts: dict) -> list[tuple[str, list[str], bool]]:
    """(heading, lines, is_code) of the README and the page, in order."""
    config = {}
    if "resolved_config" in pub.shown.columns and len(pub.shown):
        config = json.loads(pub.shown["resolved_config"].iloc[0] or "{}")
    described = [f"{pub.profile.name}: {pub.profile.description}"] if getattr(pub.profile, "description", "") \
        else [pub.profile.name]
    described += [f"{k}: {json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v}"
                  for k, v in config.items()]
    runs = [f"{counts['runs']} runs in {counts['rows']} rows (each training run once, the current config only).",
            f"Stale: {counts['stale']} run{'s' if counts['stale'] != 1 else ''} of an older config not shown.",
            f"Failed: {counts['failed']} run{'s' if counts['failed'] != 1 else ''} of the current config failed for "
            "good (named in the notes)."] + pub.notes
    compute = [f"Total compute of the runs shown: {counts['compute_hours_shown']:.3f} h wall time (training and "
               f"evaluation); of all {counts['records']} stored records: {counts['compute_hours_all']:.3f} h."]
    export = f"leaderboards/{pub.dataset}/{pub.profile.name}/runs.jsonl"
    rebuild = [f"bench leaderboard --dataset {pub.dataset} --from {export}   # the table again from the export, "
               "without training",
               f"bench store import {export}   # or: these runs into your storage, then `bench run` adds "
               "only what they lack"]
    return claims_section(pub) + [
        ("Runs", runs, False), ("Profile", described, False), ("Hardware", _hardware(pub), False),
        ("Compute", compute, False), ("Reproduce", reproduce_commands(pub) + rebuild, True)]


def claims_section(pub: Publication) -> list[tuple[str, list[str], bool]]:
    """The paper's claims judged on this board (bench.claims_report), when a row a claim is about is on
    it and its runs share one latent size D; else no section."""
    from vae_collapse_bench.bench.claims_report import at_scale_lines, board_names_claim_rows, check_board, load_claims

    if pub.board.latent_dim is None or not board_names_claim_rows(pub.board):
        return []
    claims = load_claims()
    report = check_board(pub.board, claims)
    head = (f"Judged by `bench claims --dataset {pub.dataset} --profile {pub.profile.name}` on the measured rows "
            f"above ({report.about}): {report.counts()}. The claims are paraphrased from the paper.")
    scale = at_scale_lines(report, claims, pub.profile.name, _paper_differences(pub))
    return [("Claims of the paper", [head, *report.lines(), *scale], False)]


def _paper_differences(pub: Publication) -> list[str]:
    """How the paper profile's resolved config on this dataset differs from the board's."""
    from vae_collapse_bench.bench.claims_report import config_differences
    from vae_collapse_bench.bench.config import get_profile

    try:
        return config_differences(pub.profile.resolved(pub.dataset), get_profile("paper").resolved(pub.dataset))
    except BenchError:  # a dataset without a manifest here (a board rebuilt from an export)
        return []


# --------------------------------------------------------------------------------------- files
def _table_json(pub: Publication, counts: dict) -> str:
    doc = json.loads(pub.board.render("json"))
    return json.dumps({"dataset": pub.dataset, "profile": pub.profile.name, "counts": counts, **doc},
                      indent=2) + "\n"


def _latex(pub: Publication) -> str:
    return (f"% {pub.title}: generated by `{pub.command}` (bench {pub.bench_version}).\n"
            "% Needs \\usepackage{booktabs}.\n" + pub.board.render("latex"))


def _readme(pub: Publication, figures: list[tuple[str, str]], sections) -> str:
    lines = [f"# Leaderboard: {pub.title}", "",
             f"Generated by `{pub.command}` (bench {pub.bench_version}); every file here is rewritten by that "
             "command, so nothing is edited by hand. The same table as [index.html](index.html) (sortable), "
             "[table.csv](table.csv), [table.json](table.json) and [table.tex](table.tex).", "",
             pub.board.render("md").rstrip("\n"), ""]
    for stem, caption in figures:
        lines += [f"![{stem}]({stem}.png)", "", f"{caption} ([SVG]({stem}.svg))", ""]
    for heading, body, code in sections:
        lines += [f"## {heading}", ""]
        # an indented line (a claim's rows) is an item of the line before it
        lines += (["```", *body, "```"] if code
                  else [f"  - {line.strip()}" if line.startswith("  ") else f"- {line}" for line in body]) + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _html_preamble(pub: Publication, sections) -> str:
    parts = [f"<p class='meta'>Generated by <code>{html.escape(pub.command)}</code> (bench "
             f"{html.escape(pub.bench_version)}). Click a column header to sort.</p>"]
    for heading, body, code in sections:
        inner = (f"<pre>{html.escape(chr(10).join(body))}</pre>" if code
                 else "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in body) + "</ul>")
        parts.append(f"<details class='meta'><summary>{html.escape(heading)}</summary>{inner}</details>")
    return "".join(parts)


def update_index(root: Path) -> Path:
    """Rewrite the generated part of <root>/README.md: one line per published board (every
    <dataset>/<profile>/table.json under root), sorted; the prose around the markers stays."""
    rows = []
    for table in sorted(root.glob("*/*/table.json")):
        try:
            doc = json.loads(table.read_text(encoding="utf-8"))
            c = doc["counts"]
            rows.append(f"| [{doc['dataset']} / {doc['profile']}]({table.parent.relative_to(root).as_posix()}/"
                        f"README.md) | {c['rows']} | {c['runs']} | {c['stale']} | {c['failed']} | "
                        f"{c['compute_hours_shown']:.2f} | {doc.get('bench_version', '?')} |")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a board this command wrote
    block = "\n".join([INDEX_START, "| board | rows | runs | stale | failed | compute (h) | bench |",
                       "|---|---:|---:|---:|---:|---:|---|", *rows, INDEX_END])
    index = root / "README.md"
    text = index.read_text(encoding="utf-8") if index.exists() else "# Published leaderboards\n"
    if INDEX_START in text and INDEX_END in text:
        text = re.sub(re.escape(INDEX_START) + ".*?" + re.escape(INDEX_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    index.write_text(text, encoding="utf-8", newline="\n")
    return index
