"""The priorLL / postLL trade-off (the DG-VAE paper's Figures 2 and 3), as pure functions of a runs
frame: the points of each method's curve across its grid and the Pareto front over all of them.

priorLL = log E_{p(z)} p(x|z) measures the hole problem (how well the prior's samples decode), postLL
= log E_{q(z|x)} p(x|z) posterior collapse (how much the posterior says about x); design.md §7. A
remedy that trades one for the other moves along a curve; a point no other point beats in both is on
the Pareto front. Drawing is bench.plots' job.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from vae_collapse_bench.bench.reported import parse_setting, row_order, setting_value

AXES = ("priorLL", "postLL")


def tradeoff_points(runs: pd.DataFrame) -> pd.DataFrame:
    """One point per (method, setting): the mean of priorLL and postLL over seeds, their sample std
    (ddof = 1; NaN with one seed) and n, the label drawn beside it, the parameter it varies, and
    whether it is on the Pareto front. Rows come in the paper's family order, each method's settings
    in its grid's order, so a method's points read as its curve.
    """
    if runs.empty:
        return pd.DataFrame(columns=["method", "setting", "label", "parameter", *[f"{a}_{s}" for a in AXES
                                                                                 for s in ("mean", "std")],
                                     "n", "pareto"])
    grouped = runs.groupby(["method", "setting"], sort=False)
    stats = grouped[list(AXES)].agg(["mean", "std"])
    stats.columns = [f"{a}_{s}" for a, s in stats.columns]
    points = stats.assign(n=grouped.size()).reset_index()
    points["label"] = [setting_value(s) for s in points["setting"]]
    points["parameter"] = [",".join(sorted(parse_setting(s))) for s in points["setting"]]
    order = sorted(range(len(points)), key=lambda i: row_order(points["method"][i], points["setting"][i]))
    points = points.iloc[order].reset_index(drop=True)
    points["pareto"] = pareto_mask(points["priorLL_mean"].to_numpy(), points["postLL_mean"].to_numpy())
    return points


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """True where no other point is at least as good in both x and y and better in one (both
    maximised). Equal points do not dominate each other, so both stay on the front; NaN points are
    never on it and never dominate. O(n^2) on the few dozen points of a board."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    finite = np.isfinite(x) & np.isfinite(y)
    ge = (x[None, :] >= x[:, None]) & (y[None, :] >= y[:, None])  # [i, j]: j at least as good as i
    gt = (x[None, :] > x[:, None]) | (y[None, :] > y[:, None])
    dominated = (ge & gt & finite[None, :]).any(axis=1)
    return finite & ~dominated


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """The front's points sorted by priorLL: the staircase drawn through them."""
    return points[points["pareto"]].sort_values(["priorLL_mean", "postLL_mean"])


def curves(points: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(method, its points) per method in the board's order; a method with one setting is one marker."""
    return [(method, group) for method, group in points.groupby("method", sort=False)]
