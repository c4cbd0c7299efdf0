"""Latent-space pictures (the DG-VAE paper's Figure 4) from stored checkpoints: the aggregated
posterior's density and the posterior centres on the two dimensions whose posterior means vary most.

For a trained run: rebuild the model from its registry entry and best.pt, encode the evaluated test
split (the profile's max_test sentences) batch by batch, keeping only the posterior means and
standard deviations ([N, D] each: 2.5 MB at N = 10^4, D = 32), pick the two dims of largest
Var_n(E_q[z|x_n]) (`metrics.top_variance_dims`), and evaluate

    q_agg(z_a, z_b) = (1/N) sum_n N(z_a; mu_na, s_na^2) N(z_b; mu_nb, s_nb^2)

on a grid of [-5, 5]^2 in chunks of posteriors (`metrics.latent_density_grid`), so memory stays
bounded whatever N. Only Gaussian posteriors have these marginals; a vMF method is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.data import Split, length_batches
from vae_collapse_bench.bench.errors import BenchError, plain, quote
from vae_collapse_bench.bench.metrics import latent_density_grid, top_variance_dims
from vae_collapse_bench.bench.reported import row_order
from vae_collapse_bench.bench.runner import load_model

GRID_LIMIT = 5.0  # the paper's Figure 4: [-5, 5]^2
GRID_POINTS = 101


@dataclass
class LatentPanel:
    """One method's picture: density [points, points] ("ij": rows index the first dim), the centres
    [N, 2] on the two dims, which dims (by decreasing variance of the means), the grid's half width."""

    title: str
    density: np.ndarray
    centres: np.ndarray
    dims: tuple[int, int]
    limit: float
    n: int


def latent_panel(loc: torch.Tensor, std: torch.Tensor, title: str, limit: float = GRID_LIMIT,
                 points: int = GRID_POINTS, chunk_size: int = 4096) -> LatentPanel:
    """The picture of N Gaussian posteriors (loc, std: [N, D]); pure (no model, no file)."""
    if loc.shape[0] < 2 or loc.shape[-1] < 2:
        raise BenchError(f"{title}: a latent picture needs at least 2 sentences and 2 latent dims, "
                         f"got N = {loc.shape[0]}, D = {loc.shape[-1]}")
    dims = top_variance_dims(loc, 2)
    loc2, std2 = loc[:, dims].to(torch.float64), std[:, dims].to(torch.float64)
    density = latent_density_grid(loc2, std2, limit, points, chunk_size)
    return LatentPanel(title, density.cpu().numpy(), loc2.cpu().numpy(), (int(dims[0]), int(dims[1])),
                       limit, int(loc.shape[0]))


@torch.no_grad()
def encode_gaussian(model, split: Split, batch_size: int, device: str | torch.device = "cpu"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior means and stds [N, D] of a split, in the split's sentence order, one length-bucketed
    batch at a time (only [N, D] is ever kept)."""
    model.eval().to(device)
    lengths = [len(s) for s in split.sentences]
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))  # length_batches' own order
    locs, stds = [], []
    for x in length_batches(split, batch_size):
        marginals = model.encode(x.to(device)).gaussian_marginals()
        if marginals is None:
            raise BenchError(f"{model.name}: its posterior has no Gaussian marginals (e.g. vMF), so it has no "
                             "latent picture; choose Gaussian methods")
        locs.append(marginals[0].float().cpu())
        stds.append(marginals[1].float().cpu())
    loc, std = torch.cat(locs), torch.cat(stds)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return loc[inverse], std[inverse]


# `vae`, `bn-vae[gamma=0.6]`, `dg-vae[agg=default]`: commas inside brackets belong to the setting
_CHOICE = re.compile(r"\s*([^,\[\]]+?)\s*(?:\[([^\]]*)\])?\s*(?:,|$)")


def parse_choices(text: str) -> list[tuple[str, str | None]]:
    """`--methods` of `bench plot latent`: names, each optionally with a setting in brackets."""
    text = text.strip()
    choices, pos = [], 0
    while pos < len(text):
        match = _CHOICE.match(text, pos)
        if not match or match.end() == pos:
            raise BenchError(f"cannot read --methods {quote(text)}: give names such as `vae,bn-vae[gamma=0.6]`")
        choices.append((match.group(1), match.group(2)))
        pos = match.end()
    if not choices:
        raise BenchError("--methods is empty: give names such as `vae,bn-vae,dg-vae`")
    for name, _ in choices:
        registry.get(name)  # unknown names: one line with a suggestion
    return choices


def default_setting(method: str) -> str:
    """The setting string of a method's registered defaults, as the runs store it."""
    params = registry.get(method).defaults
    return ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


def choose_runs(runs: pd.DataFrame, choices: list[tuple[str, str | None]], seed: int | None = None
                ) -> pd.DataFrame:
    """One stored run per choice: the given setting, else the method's default setting, else its first
    setting in the paper's order; the given seed, else the lowest. Unknown ones: a BenchError that
    lists what is stored."""
    chosen = []
    for method, setting in choices:
        mine = runs[runs["method"] == method]
        if mine.empty:
            stored = ", ".join(sorted(runs["method"].unique())) or "none"
            raise BenchError(f"no finished run of {method} in this board (stored: {stored}): run it first")
        settings = sorted(mine["setting"].unique(), key=lambda s: row_order(method, s))
        if setting is None:
            setting = default_setting(method) if default_setting(method) in settings else settings[0]
        if setting not in settings:
            raise BenchError(f"no finished run of {method}[{plain(setting)}]; stored settings: {', '.join(settings)}")
        rows = mine[mine["setting"] == setting]
        if seed is not None:
            rows = rows[rows["seed"] == seed]
            if rows.empty:
                raise BenchError(f"no finished run of {method}[{setting}] with seed {seed}")
        chosen.append(rows.sort_values(["seed", "trial"]).iloc[-1 if seed is not None else 0])
    return pd.DataFrame(chosen)


def load_trained(attrs: dict, corpus, profile, device: str | torch.device = "cpu"):
    """The model of a finished run (its trial's attributes), from its registry entry and best.pt
    (read-only), in eval mode."""
    best = Path(attrs.get("checkpoint_dir", "")) / "best.pt"
    if not best.is_file():
        raise BenchError(f"the checkpoint of {attrs['method']}[{attrs.get('setting')}] seed {attrs.get('seed')} "
                         f"is not here ({plain(str(best))}): point --results at the folder that holds it")
    return load_model(attrs["method"], attrs.get("params", {}), best, corpus, profile, device)


def run_panels(runs: pd.DataFrame, attrs_by_trial: dict[int, dict], corpus, profile,
               device: str | torch.device = "cpu", max_sentences: int | None = None) -> list[LatentPanel]:
    """The panel of each chosen run (rows of a runs frame with a `trial` column), on the test split the
    evaluator used (the profile's max_test sentences, or fewer with max_sentences)."""
    limit = profile.evaluation.max_test
    if max_sentences is not None:
        limit = max_sentences if limit is None else min(limit, max_sentences)
    split = corpus.truncated(max_test=limit).splits["test"]
    panels = []
    for _, row in runs.iterrows():
        attrs = attrs_by_trial[int(row["trial"])]
        model = load_trained(attrs, corpus, profile, device)
        loc, std = encode_gaussian(model, split, profile.evaluation.batch_size, device)
        setting = "" if row["setting"] == "-" else f" [{row['setting']}]"
        panels.append(latent_panel(loc, std, f"{row['method']}{setting} seed {row['seed']}"))
    return panels
