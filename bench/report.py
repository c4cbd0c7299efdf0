"""Stored runs -> pandas frames -> leaderboards (markdown, csv, json, latex, html).

A leaderboard has one row per (method, setting): mean ± sample std over seeds, and n. It is built
from the runs of the current config only (`select_runs`: each training run once; runs of an older
config are counted in a footnote, or shown apart with --include-stale). The paper's bold rules mark
rows whose MI >= 9.0, AU >= 30 and CU >= 30 at D = 32 and N = 10^4, scaled to the board's D and N.
Every row keeps the run keys it aggregates, so each number traces back to its trials.

A little over 400 lines on purpose: the five formats render one list of cells (`Leaderboard.cells`:
the bold rule, the paper's rows, the searched marks), kept beside the aggregation that makes them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from vae_collapse_bench.bench.errors import BenchError, quote
from vae_collapse_bench.bench.store import RunStore

# Rouge-L: the minimum over lambda of the interpolation curve (bench.interpolate; DG-VAE Eq. 14, Fig. 5)
METRICS = ["priorLL", "postLL", "KL", "MI", "AU", "CU", "IW-NLL", "PPL", "Rouge-L"]
META_COLUMNS = ("bench_version", "command")  # Leaderboard.meta entries the csv and json formats carry
FORMATS = ("md", "csv", "json", "latex", "html")
# The paper's thresholds (DG-VAE, Table 2 caption) at D = 32 and N = 10^4 test sentences. AU and CU
# count dimensions: scaled by D / 32. MI is bounded by log N, not by D (the paper's 9.0 is
# log 10^4 = 9.21 minus a margin): scaled by log N / log 10^4.
BOLD_AT_32 = {"MI": 9.0, "AU": 30.0, "CU": 30.0}
PAPER_TEST_N = 10_000


def runs_frame(store: RunStore, current_config: str | None = None) -> pd.DataFrame:
    """One row per finished evaluation record: identity, metrics, provenance summary.

    `current` says whether the record's config key equals `current_config` (None: every record is
    current). Columns: method, setting, seed, run_key (= training key), eval/config keys, the
    metrics, D, N, whether AU is comparable, a fingerprint of the training history.
    """
    rows = []
    for t in store.trials():
        a = t.user_attrs
        if t.state.name != "COMPLETE" or "metrics" not in a:
            continue
        sizes = a.get("eval_sizes", {})
        rows.append({
            "method": a["method"], "setting": a.get("setting", "-"), "seed": a["seed"],
            "run_key": a.get("training_key", a.get("run_key")), "eval_key": a.get("eval_key", ""),
            "config_key": a.get("config_key", ""), **a["metrics"], "D": sizes.get("D"), "N": sizes.get("N"),
            "au_comparable": a.get("au_comparable", True),
            "history": _fingerprint(a.get("history", [])),
            "wall_time_s": a.get("wall_time_s"), "trial": t.number,
            "resolved_config": json.dumps(a.get("config", {}), sort_keys=True),
        })
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["current"] = True if current_config is None else frame["config_key"] == current_config
    return frame


def board_from_store(store, title: str, current_config: str | None, note: str = "",
                     methods: set[str] | None = None, include_stale: bool = False
                     ) -> tuple[Leaderboard | None, pd.DataFrame, int]:
    """(the board of a store's current-config runs or None when it has none, the runs it shows, the
    number of stale runs left out). `store` is a RunStore or an export read back (bench.export)."""
    runs = runs_frame(store, current_config)
    if methods is not None and not runs.empty:
        runs = runs[runs["method"].isin(methods)]
    shown, stale = select_runs(runs, include_stale)
    if shown.empty:
        return None, shown, stale
    board = Leaderboard.from_runs(shown, title, stale)
    board.notes += failed_notes(store, current_config, methods) + ([note] if note else [])
    return board, shown, stale


def failed_notes(store: RunStore, current_config: str | None, methods: set[str] | None = None) -> list[str]:
    """Footnotes for the (method, setting) rows of the current config whose runs failed for good
    (diverged, nothing to train, a non-finite metric), with how many and the first reason."""
    done = {t.user_attrs.get("training_key") for t in store.trials() if t.state.name == "COMPLETE"}
    failed: dict[tuple[str, str], list[str]] = {}
    for t in store.trials():
        a = t.user_attrs
        if (t.state.name != "FAIL" or not a.get("diverged") or a.get("training_key") in done
                or (current_config is not None and a.get("config_key") != current_config)
                or (methods is not None and a.get("method") not in methods)):
            continue
        failed.setdefault((a["method"], a.get("setting", "-")), []).append(a.get("fail_reason", ""))
    return [f"Not shown: {method} [{setting}]: {len(reasons)} run{'s' if len(reasons) != 1 else ''} "
            f"failed ({reasons[0]})." for (method, setting), reasons in failed.items()]


def true_mi_note(dataset: str, mi: dict) -> str:
    """The footnote of a board on a generated corpus: the generator's true I(x; z), bracketed by
    bench.synthetic.mi_bounds (InfoNCE lower bound <= log K; prior importance-sampling estimate, an
    upper bound in expectation), beside which the MI column reads. No MI / truth ratio: a model's
    I_q(x; z) is not bounded by the generator's I(x; z) (an encoder can also keep the sample's
    word-level noise), so a ratio would not be a share of the information recovered."""
    return (f"True I(x; z) of the {dataset} generator: {mi['infonce_lower']:.2f} ± {mi['infonce_lower_stderr']:.2f} "
            f"to {mi['prior_is_upper']:.2f} ± {mi['prior_is_upper_stderr']:.2f} nats (InfoNCE lower bound, K = "
            f"{mi['K']}, at most log K = {mi['log_K']:.2f}; prior importance-sampling estimate, an upper bound in "
            f"expectation; ± one standard error over {mi['N']} sentences). The MI column is each model's own "
            "I_q(x; z) (at most log N): below this bracket a model leaves part of the information the generator's "
            "z puts into the sentences unused; it can also exceed it, since an encoder may keep the sample's "
            "word-level noise too, so MI over the true value is not a share recovered.")


def _fingerprint(history: list[dict]) -> str:
    """What the trained model was, epoch by epoch: validation reconstruction and KL (the logged
    training terms are left out: a constant offset such as free bits' floor changes them alone)."""
    return json.dumps([(r.get("valid_rec"), r.get("valid_kl")) for r in history])


def select_runs(runs: pd.DataFrame, include_stale: bool = False) -> tuple[pd.DataFrame, int]:
    """The runs a board shows, each training run once, and the number of stale runs left out.

    Current runs (`current` column) count once per training key (the latest record). A stale run,
    one of another config, is left out unless include_stale, and counted when its training key has
    no current record. With include_stale each stale config gets its own rows (column `config`).
    """
    if runs.empty:
        return runs, 0
    runs = runs.sort_values("trial")
    current = runs[runs["current"]].drop_duplicates("run_key", keep="last")
    stale = runs[~runs["current"] & ~runs["run_key"].isin(current["run_key"])]
    stale = stale.drop_duplicates(["run_key", "config_key"], keep="last")
    if not include_stale:
        return current.assign(config="current"), stale["run_key"].nunique()
    shown = pd.concat([current.assign(config="current"), stale.assign(config=stale["config_key"].str[:8])])
    return shown, 0


def fixed(value: float, digits: int) -> str:
    """`value` with `digits` decimals, "nan" for nan, and never "-0.00": a tiny negative estimate
    (MI of a collapsed model) that rounds to zero is shown as zero."""
    if value != value:
        return "nan"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _labels(cells: list[dict]) -> str:
    return ", ".join(f"{c['method']} [{c['setting']}]" for c in cells)


def in_paper_order(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs sorted so that rows come grouped by family, families in the paper's order and settings in
    their grid's order (`bench.reported.row_order`); stable, so seeds keep their order."""
    from vae_collapse_bench.bench.reported import row_order

    keys = [row_order(m, s) for m, s in zip(runs["method"], runs["setting"])]
    return runs.iloc[sorted(range(len(runs)), key=keys.__getitem__)]


@dataclass
class Leaderboard:
    """Aggregated results: `table` has columns (metric, "mean"|"std") plus n, N, run_keys, seeds
    and the config (key and resolved) of each row.

    `notes` are the board's footnotes: the bold rules as applied, caveats of some rows (vMF AU),
    rows whose metrics coincide and why, and the runs of other configs that are not shown. `meta`
    (bench_version, command) goes into the csv and json formats; `reported` holds the paper's rows
    shown beside ours (`add_reported`).
    """

    table: pd.DataFrame
    latent_dim: int | None
    title: str = ""
    notes: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    reported: list[dict] = field(default_factory=list)
    searched: dict = field(default_factory=dict)  # (method, setting) -> the search that chose it

    @classmethod
    def from_runs(cls, runs: pd.DataFrame, title: str = "", stale: int = 0) -> Leaderboard:
        if runs.empty:
            raise BenchError(f"no finished runs for {title or 'this selection'}: run `bench run` first")
        runs = runs.copy()
        for column, default in (("au_comparable", True), ("N", PAPER_TEST_N), ("history", "")):
            if column not in runs.columns:
                runs[column] = default
        keys = ["method", "setting"] + (["config"] if "config" in runs.columns
                                        and runs["config"].nunique() > 1 else [])
        metrics = [m for m in METRICS if m in runs.columns]
        runs = in_paper_order(runs)
        grouped = runs.groupby(keys, sort=False)
        table = grouped[metrics].agg(["mean", "std"])
        table[("n", "")] = grouped.size()
        table[("N", "")] = grouped["N"].min()
        table[("au_comparable", "")] = grouped["au_comparable"].all()
        table[("run_keys", "")] = grouped["run_key"].agg(lambda s: " ".join(s))
        if "seed" in runs.columns:
            table[("seeds", "")] = grouped["seed"].agg(lambda s: " ".join(map(str, s)))
        for column in ("config_key", "resolved_config"):
            if column in runs.columns:
                table[(column, "")] = grouped[column].agg(lambda s: " ".join(dict.fromkeys(s)))
        dims = runs["D"].dropna().unique()
        board = cls(table, int(dims[0]) if len(dims) == 1 else None, title)
        board.notes = board._footnotes(runs, grouped, stale)
        return board

    @property
    def metrics(self) -> list[str]:
        return [m for m in METRICS if (m, "mean") in self.table.columns]

    def threshold(self, metric: str, n_test: int | None = None) -> float | None:
        """The paper's bold threshold for `metric`, scaled to this board's D (AU, CU) or to the
        evaluated split's size N (MI: log N / log 10^4); None where no rule applies."""
        if metric not in BOLD_AT_32:
            return None
        if metric == "MI":
            n = n_test or PAPER_TEST_N
            return BOLD_AT_32["MI"] * math.log(n) / math.log(PAPER_TEST_N) if n > 1 else None
        return None if self.latent_dim is None else BOLD_AT_32[metric] * self.latent_dim / 32

    def is_bold(self, metric: str, value: float, n_test: int | None = None, au_comparable: bool = True) -> bool:
        if metric == "AU" and not au_comparable:  # the paper calls AU inappropriate for vMF
            return False
        limit = self.threshold(metric, n_test)
        return limit is not None and not math.isnan(value) and value >= limit

    def _footnotes(self, runs: pd.DataFrame, grouped, stale: int) -> list[str]:
        notes = ["Mean ± sample std over n seeds (– with one seed); every training run is counted once."]
        n_values = sorted({int(n) for n in runs["N"].dropna()})
        rules = []
        for n in n_values or [PAPER_TEST_N]:
            if (mi := self.threshold("MI", n)) is not None:
                rules.append(f"MI >= {mi:.2f} (9.0 x log N / log 10^4, N = {n:,} test sentences)")
        for metric in ("AU", "CU"):
            if (limit := self.threshold(metric)) is not None:
                rules.append(f"{metric} >= {limit:g} (30 x D / 32, D = {self.latent_dim})")
        from vae_collapse_bench.bench.reported import paper_facts

        notes.append("Bold: the paper's rules scaled to this board: " + "; ".join(rules)
                     + f" (the paper's rule: {paper_facts().bold_rule}).")
        if not runs["au_comparable"].all():
            notes.append("AU of vMF rows follows Burda et al. (Var over x of E_q[z], with E_q[z] = "
                         "A_d(kappa) mu, not the unit mean direction mu of the public DG-VAE code) and is "
                         "never bold: the paper calls AU inappropriate for vMF. CU is undefined (nan) for "
                         "vMF, which has no per-dimension marginals.")
        notes += self._coinciding_rows(grouped)
        if stale:
            notes.append(f"{stale} run{'s' if stale != 1 else ''} of an older config "
                         f"{'are' if stale != 1 else 'is'} not shown (--include-stale).")
        return notes

    def _coinciding_rows(self, grouped) -> list[str]:
        """Rows that show the same figures in every metric, and why: rows whose runs trained the same
        models (equal validation reconstruction and KL at every epoch, equal metrics to the last bit)
        are one computation; others agree only to the digits shown, and the note says by how much."""
        by_text: dict[tuple, list] = {}
        for cells in self.cells():
            by_text.setdefault(tuple(cells[m][0] for m in self.metrics), []).append(cells)
        notes = []
        for same in (rows for rows in by_text.values() if len(rows) > 1):
            clusters: dict[tuple, list] = {}
            for c in same:
                runs = grouped.get_group(c["key"]).sort_values("seed")
                exact = tuple(map(repr, runs[self.metrics].to_numpy(dtype=float).ravel()))
                clusters.setdefault((exact, tuple(runs["history"])), []).append(c)
            for cluster in (c for c in clusters.values() if len(c) > 1):
                notes.append(f"Rows {_labels(cluster)} are the same computation: their runs trained identical "
                             "models (validation reconstruction and KL equal at every epoch) and have identical "
                             "metrics: what tells them apart has no effect at this size.")
            if len(clusters) > 1:
                values = [grouped.get_group(c[0]["key"]).sort_values("seed")[self.metrics].to_numpy(dtype=float)
                          for c in clusters.values()]
                gap = max(float(np.nanmax(np.abs(v - values[0]), initial=0.0)) if v.shape == values[0].shape
                          else math.inf for v in values)
                why = (f"agree to the digits shown, not exactly (largest difference {gap:.2g})" if gap
                       else "have identical metrics although their training differs")
                notes.append(f"Rows {_labels(same)} {why}.")
        return notes

    def mark_searched(self, marks: dict[tuple[str, str], str]) -> None:
        """Mark the rows whose setting `bench run --from-search` took from a search study (`marks`:
        (method, setting) -> the study and trial), with a note on the two-phase protocol."""
        rows = {(key[0], key[1]) for key in self.table.index}
        self.searched = {row: source for row, source in marks.items() if row in rows}
        if self.searched:
            sources = "; ".join(f"{m} [{s}]: {source}" for (m, s), source in self.searched.items())
            self.notes.append("(searched): the setting was chosen by `bench search` on the validation split, "
                              f"then trained with fixed seeds and evaluated on test ({sources}).")

    def add_reported(self, rows: list[dict], note: str) -> None:
        """Show the paper's rows (dicts: paper_name, method, setting, the numbers as printed, and
        optionally `bold`, the metrics the paper set in bold) beside ours, marked "reported"."""
        self.reported = [dict(r) for r in rows]
        self.notes.append(note)

    def cells(self, reported: bool = True) -> list[dict]:
        """`mean ± std` strings per row (std shown as – with a single seed), with their bold flags;
        each reported row follows the measured rows of its method and setting (`source`)."""
        out = self._measured_cells()
        return self._with_reported(out) if reported and self.reported else out

    def _with_reported(self, measured: list[dict]) -> list[dict]:
        from vae_collapse_bench.bench.reported import row_order

        entries = [((row_order(c["method"], c["key"][1]), 0, i), c) for i, c in enumerate(measured)]
        for j, row in enumerate(self.reported):
            cells = {"method": row["method"], "setting": row["setting"], "key": None, "source": "reported",
                     "paper_name": row.get("paper_name", "")}
            bold = set(row.get("bold", []))
            for m in self.metrics:
                value = row.get(m)
                digits = 0 if m in ("AU", "CU") and value is not None and float(value).is_integer() else 2
                cells[m] = ("–" if value is None else fixed(float(value), digits), m in bold)
            cells["n"] = ("–", False)
            entries.append(((row_order(row["method"], row["setting"]), 1, j), cells))
        return [c for _, c in sorted(entries, key=lambda e: e[0])]

    def _measured_cells(self) -> list[dict]:
        out = []
        for key, row in self.table.iterrows():
            method, setting = key[0], key[1]
            if len(key) > 2 and key[2] != "current":
                setting = f"{setting} (config {key[2]})"
            if (method, key[1]) in self.searched:
                setting = f"{setting} (searched)"
            cells = {"method": method, "setting": setting, "key": key, "source": "measured"}
            n_test, comparable = int(row[("N", "")]), bool(row[("au_comparable", "")])
            for m in self.metrics:
                mean, std = row[(m, "mean")], row[(m, "std")]
                digits = 2
                if m in ("AU", "CU"):  # counts: integers unless seeds disagree
                    digits = 0 if float(mean).is_integer() and (pd.isna(std) or float(std).is_integer()) else 1
                if pd.isna(mean):  # not defined for this method (CU of a vMF posterior)
                    text = "–"
                else:
                    text = fixed(mean, digits) + (" ± –" if pd.isna(std) else f" ± {fixed(std, digits)}")
                cells[m] = (text, self.is_bold(m, mean, n_test, comparable))
            cells["n"] = (str(int(row[("n", "")])), False)
            out.append(cells)
        return out

    def flat(self) -> pd.DataFrame:
        """Machine-readable: one column per metric mean and std, plus n, N, run_keys, seeds, config_key
        and resolved_config (JSON); with reported rows, a `source` column tells them apart."""
        flat = self.table.copy()
        flat.columns = [f"{m}_{s}" if s else m for m, s in flat.columns]
        flat = flat.reset_index()
        if not self.reported:
            return flat
        paper = pd.DataFrame([{"method": r["method"], "setting": r["setting"], "source": "reported",
                               "paper_name": r.get("paper_name", ""),
                               **{f"{m}_mean": r[m] for m in self.metrics if m in r}} for r in self.reported])
        return pd.concat([flat.assign(source="measured"), paper], ignore_index=True)

    def render(self, fmt: str = "md") -> str:
        if fmt not in FORMATS:
            raise BenchError(f"unknown format {quote(fmt)}: use one of {', '.join(FORMATS)}")
        if fmt == "csv":
            return self.flat().assign(**{k: self.meta[k] for k in META_COLUMNS if k in self.meta}).to_csv(index=False)
        if fmt == "json":
            records = json.loads(self.flat().to_json(orient="records"))
            for record in records:
                if isinstance(record.get("resolved_config"), str):
                    record["resolved_config"] = json.loads(record["resolved_config"])
            return json.dumps({"title": self.title, "latent_dim": self.latent_dim,
                               **{k: self.meta[k] for k in META_COLUMNS if k in self.meta},
                               "rows": records, "notes": self.notes}, indent=2)
        return {"md": self._markdown, "latex": self._latex, "html": self._html}[fmt]()

    def _header(self) -> list[str]:
        return ["method", "setting", *(["source"] if self.reported else []), *self.metrics, "n"]

    def _rows(self, bold, escape=lambda text: text) -> list[list[str]]:
        """Cells as text; `bold(escaped_text, is_bold)` marks the paper's bold rule."""
        return [[escape(c["method"]), escape(c["setting"]), *([c["source"]] if self.reported else []),
                 *[bold(escape(c[m][0]), c[m][1]) for m in self.metrics], c["n"][0]]
                for c in self.cells()]

    def _markdown(self) -> str:
        from tabulate import tabulate

        rows = self._rows(lambda text, b: f"**{text}**" if b else text)
        table = tabulate(rows, headers=self._header(), tablefmt="github", disable_numparse=True)
        notes = "".join(f"\n{i}. {note}" for i, note in enumerate(self.notes, 1))
        return table + ("\n\nNotes:\n" + notes.lstrip("\n") + "\n" if notes else "\n")

    def _latex(self) -> str:
        def esc(text: str) -> str:
            return text.replace("±", r"$\pm$").replace("_", r"\_").replace("–", "--")

        rows = self._rows(lambda text, b: rf"\textbf{{{text}}}" if b else text, esc)
        lines = [r"\begin{tabular}{ll" + "r" * (len(self._header()) - 2) + "}", r"\toprule",
                 " & ".join(esc(h) for h in self._header()) + r" \\", r"\midrule"]
        for i, r in enumerate(rows):  # a rule between families
            lines += [r"\midrule"] if i and r[0] != rows[i - 1][0] else []
            lines.append(" & ".join(r) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        lines += [r"\par\noindent\footnotesize " + esc(note) for note in self.notes]
        return "\n".join(lines) + "\n"

    def _html(self) -> str:
        return html_page(self.title, [self])

    def html_section(self, heading: str = "h1") -> str:
        """The board as an HTML heading, sortable table (rows grouped by family) and numbered notes."""
        from vae_collapse_bench.bench.webpage import board_section

        return board_section(self, heading)


def html_page(title: str, boards: list[Leaderboard]) -> str:
    """One self-contained page (bench.webpage): sortable tables, rows grouped by family, no network."""
    from vae_collapse_bench.bench.webpage import page

    return page(title, boards)


def render_boards(boards: dict[str, Leaderboard], fmt: str, title: str) -> str:
    """Several boards (one per profile) as ONE document of the format: a CSV with a `profile`
    column, one JSON object holding every board, one HTML page, one markdown file with a heading per
    board, one LaTeX fragment with a commented heading per tabular. One board renders as itself."""
    if fmt not in FORMATS:
        raise BenchError(f"unknown format {quote(fmt)}: use one of {', '.join(FORMATS)}")
    if len(boards) == 1:
        return next(iter(boards.values())).render(fmt)
    if fmt == "csv":
        frames = [b.flat().assign(profile=p) for p, b in boards.items()]
        flat = pd.concat(frames, ignore_index=True)
        return flat[["profile", *[c for c in flat.columns if c != "profile"]]].to_csv(index=False)
    if fmt == "json":
        return json.dumps({"title": title, "boards": [{"profile": p, **json.loads(b.render("json"))}
                                                      for p, b in boards.items()]}, indent=2)
    if fmt == "html":
        return html_page(title, list(boards.values()))
    if fmt == "latex":
        return "\n".join(f"% {b.title}\n{b.render('latex')}" for b in boards.values())
    return "\n".join(f"### {b.title}\n\n{b.render('md')}" for b in boards.values())
