"""Stored runs -> pandas frames -> leaderboards (markdown, csv, json, latex, html).

A leaderboard has one row per (method, setting): mean ± sample std over seeds, and n. The paper's
bold rules mark rows whose MI >= 9.0, AU >= 30 and CU >= 30 at D = 32, scaled to the run's D.
Every row keeps the run keys it aggregates, so each number traces back to its trials.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass

import pandas as pd

from bench.errors import BenchError
from bench.store import RunStore

METRICS = ["priorLL", "postLL", "KL", "MI", "AU", "CU", "IW-NLL", "PPL"]
FORMATS = ("md", "csv", "json", "latex", "html")
# The paper's thresholds at D = 32 (DG-VAE, Table 2 caption); scaled linearly with D.
BOLD_AT_32 = {"MI": 9.0, "AU": 30.0, "CU": 30.0}


def runs_frame(store: RunStore) -> pd.DataFrame:
    """One row per completed run: identity, metrics, provenance summary."""
    rows = []
    for t in store.trials():
        a = t.user_attrs
        if t.state.name != "COMPLETE" or "metrics" not in a:
            continue
        rows.append({
            "method": a["method"], "setting": a.get("setting", "-"), "seed": a["seed"],
            "run_key": a["run_key"], **a["metrics"], "D": a.get("eval_sizes", {}).get("D"),
            "N": a.get("eval_sizes", {}).get("N"), "wall_time_s": a.get("wall_time_s"),
            "trial": t.number,
        })
    return pd.DataFrame(rows)


@dataclass
class Leaderboard:
    """Aggregated results: `table` has columns (metric, "mean"|"std") plus n and run_keys."""

    table: pd.DataFrame
    latent_dim: int | None
    title: str = ""

    @classmethod
    def from_runs(cls, runs: pd.DataFrame, title: str = "") -> Leaderboard:
        if runs.empty:
            raise BenchError(f"no finished runs for {title or 'this selection'}: run `bench run` first")
        metrics = [m for m in METRICS if m in runs.columns]
        grouped = runs.groupby(["method", "setting"], sort=False)
        table = grouped[metrics].agg(["mean", "std"])
        table[("n", "")] = grouped.size()
        table[("run_keys", "")] = grouped["run_key"].agg(lambda s: " ".join(s))
        dims = runs["D"].dropna().unique()
        return cls(table, int(dims[0]) if len(dims) == 1 else None, title)

    @property
    def metrics(self) -> list[str]:
        return [m for m in METRICS if (m, "mean") in self.table.columns]

    def is_bold(self, metric: str, value: float) -> bool:
        if metric not in BOLD_AT_32 or self.latent_dim is None or math.isnan(value):
            return False
        return value >= BOLD_AT_32[metric] * self.latent_dim / 32

    def cells(self) -> list[dict[str, str]]:
        """`mean ± std` strings per row (std shown as – with a single seed)."""
        out = []
        for (method, setting), row in self.table.iterrows():
            cells = {"method": method, "setting": setting}
            for m in self.metrics:
                mean, std = row[(m, "mean")], row[(m, "std")]
                digits = 1 if m in ("AU", "CU") else 2
                text = "nan" if pd.isna(mean) else f"{mean:.{digits}f}"
                text += " ± –" if pd.isna(std) else f" ± {std:.{digits}f}"
                cells[m] = (text, self.is_bold(m, mean))
            cells["n"] = (str(int(row[("n", "")])), False)
            out.append(cells)
        return out

    def flat(self) -> pd.DataFrame:
        """Machine-readable: one column per metric mean and std, plus n and run_keys."""
        flat = self.table.copy()
        flat.columns = [f"{m}_{s}" if s else m for m, s in flat.columns]
        return flat.reset_index()

    def render(self, fmt: str = "md") -> str:
        if fmt not in FORMATS:
            raise BenchError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
        if fmt == "csv":
            return self.flat().to_csv(index=False)
        if fmt == "json":
            records = json.loads(self.flat().to_json(orient="records"))
            return json.dumps({"title": self.title, "latent_dim": self.latent_dim, "rows": records}, indent=2)
        return {"md": self._markdown, "latex": self._latex, "html": self._html}[fmt]()

    def _header(self) -> list[str]:
        return ["method", "setting", *self.metrics, "n"]

    def _rows(self, bold, escape=lambda text: text) -> list[list[str]]:
        """Cells as text; `bold(escaped_text, is_bold)` marks the paper's bold rule."""
        return [[escape(c["method"]), escape(c["setting"]),
                 *[bold(escape(c[m][0]), c[m][1]) for m in self.metrics], c["n"][0]]
                for c in self.cells()]

    def _markdown(self) -> str:
        from tabulate import tabulate

        rows = self._rows(lambda text, b: f"**{text}**" if b else text)
        return tabulate(rows, headers=self._header(), tablefmt="github", disable_numparse=True)

    def _latex(self) -> str:
        def esc(text: str) -> str:
            return text.replace("±", r"$\pm$").replace("_", r"\_").replace("–", "--")

        rows = self._rows(lambda text, b: rf"\textbf{{{text}}}" if b else text, esc)
        lines = [r"\begin{tabular}{ll" + "r" * (len(self._header()) - 2) + "}", r"\toprule",
                 " & ".join(esc(h) for h in self._header()) + r" \\", r"\midrule"]
        lines += [" & ".join(r) + r" \\" for r in rows]
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"

    def _html(self) -> str:
        rows = self._rows(lambda text, b: f"<b>{text}</b>" if b else text, html.escape)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self._header())
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
        return (
            "<!DOCTYPE html><html><head><meta charset='utf-8'><title>"
            f"{html.escape(self.title)}</title><style>body{{font-family:sans-serif}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:right}td:first-child,td:nth-child(2){text-align:left}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></body></html>\n"
        )
