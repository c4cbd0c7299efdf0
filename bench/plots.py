"""Figures with matplotlib: the trade-off curves (paper Figures 2 and 3) and the latent pictures
(Figure 4). The data comes from pure functions (bench.tradeoff, bench.latent); this module only
draws and saves.

Readable in grayscale: each method differs in marker and line style, not in colour alone. Saved
deterministically: no pyplot state, fixed fonts, no date or software version in the files, a fixed
SVG hash salt, so the same data gives byte-identical PNG and SVG files (a diff shows real changes).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from vae_collapse_bench.bench.latent import LatentPanel
from vae_collapse_bench.bench.tradeoff import curves, pareto_front

RC = {"svg.hashsalt": "vae-collapse-bench", "font.family": "DejaVu Sans", "font.size": 9,
      "svg.fonttype": "path", "axes.grid": True, "grid.color": "0.88", "grid.linewidth": 0.5}
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8"]
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 2))]
# dark-to-mid shades of a colour-blind-safe palette; each also differs in marker and line style
COLOURS = ["#000000", "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#555555"]


def save(fig, stem: Path) -> list[Path]:
    """stem.png (150 dpi) and stem.svg, without dates or versions inside."""
    import matplotlib

    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    with matplotlib.rc_context(RC):
        fig.savefig(paths[0], dpi=150, metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    return paths


def tradeoff_figure(points: pd.DataFrame, title: str):
    """priorLL (x) against postLL (y): a curve per method across its grid, each point labelled with
    its setting and carrying its seed std as error bars; the Pareto front over all points drawn as a
    staircase with ringed points."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(8.0, 6.0), layout="constrained")
        ax = fig.subplots()
        for i, (method, group) in enumerate(curves(points)):
            style = LINESTYLES[i % len(LINESTYLES)] if len(group) > 1 else "none"
            param = group["parameter"].iloc[0]
            label = f"{method} ({param})" if len(group) > 1 and param else method
            ax.errorbar(group["priorLL_mean"], group["postLL_mean"], xerr=np.nan_to_num(group["priorLL_std"]),
                        yerr=np.nan_to_num(group["postLL_std"]), color=COLOURS[i % len(COLOURS)],
                        linestyle=style, marker=MARKERS[i % len(MARKERS)], markersize=5, capsize=2,
                        linewidth=1.1, elinewidth=0.7, label=label,
                        markerfacecolor="white" if (i // len(COLOURS)) % 2 else COLOURS[i % len(COLOURS)])
            if len(group) > 1:
                for j, (_, p) in enumerate(group.iterrows()):  # alternate sides: neighbours' labels overlap less
                    ax.annotate(p["label"], (p["priorLL_mean"], p["postLL_mean"]), textcoords="offset points",
                                xytext=(4, 3) if j % 2 == 0 else (4, -9), fontsize=6.5, color="0.15")
        front = pareto_front(points)
        if not front.empty:
            ax.step(front["priorLL_mean"], front["postLL_mean"], where="post", color="0.45", linewidth=0.9,
                    linestyle=(0, (2, 2)), zorder=0)
            ax.scatter(front["priorLL_mean"], front["postLL_mean"], s=150, facecolors="none", edgecolors="0.2",
                       linewidths=0.9, label=f"Pareto front ({len(front)} of {len(points)})", zorder=3)
        ax.set_xlabel("priorLL = log E_p(z) p(x|z)  (nats/sentence; higher: fewer holes)")
        ax.set_ylabel("postLL = log E_q(z|x) p(x|z)  (nats/sentence; higher: less collapse)")
        ax.set_title(title, fontsize=10)
        n = points["n"]
        seeds = f"{int(n.min())}" if n.min() == n.max() else f"{int(n.min())}-{int(n.max())}"
        ax.legend(fontsize=7, loc="best", frameon=True, framealpha=0.9,
                  title=f"mean ± std over {seeds} seed(s)", title_fontsize=7)
    return fig


def latent_figure(panels: list[LatentPanel], title: str):
    """One panel per method: the aggregated posterior's density on its two dims of largest variance of
    the posterior means, with one colour scale shared by all panels, and the posterior centres."""
    import matplotlib
    from matplotlib.figure import Figure

    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    vmax = max(float(p.density.max()) for p in panels) or 1.0
    with matplotlib.rc_context({**RC, "axes.grid": False}):
        fig = Figure(figsize=(3.2 * cols + 0.8, 3.1 * rows + 0.5), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        image = None
        for ax, panel in zip(axes, panels):
            lim = panel.limit
            image = ax.imshow(panel.density.T, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis",
                              vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
            ax.scatter(panel.centres[:, 0], panel.centres[:, 1], s=1.5, c="white", edgecolors="none", alpha=0.6,
                       rasterized=True)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_title(panel.title, fontsize=8)
            ax.set_xlabel(f"z[{panel.dims[0]}]", fontsize=8)
            ax.set_ylabel(f"z[{panel.dims[1]}]", fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        bar = fig.colorbar(image, ax=axes[: len(panels)].tolist(), shrink=0.85)
        bar.set_label("aggregated posterior density (shared scale)", fontsize=8)
        fig.suptitle(f"{title}: density of q(z) on the 2 dims of largest Var(E[z|x]); dots: posterior means "
                     f"(N = {panels[0].n:,})", fontsize=9)
    return fig
