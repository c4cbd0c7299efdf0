"""Trade-off points, Pareto front and latent pictures through the pure functions that compute them
(hand-computed values), then the figures: produced, non-empty and byte-identical when drawn again."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.latent import (
    choose_runs,
    default_setting,
    encode_gaussian,
    latent_panel,
    parse_choices,
)
from vae_collapse_bench.bench.plots import latent_figure, save, tradeoff_figure
from vae_collapse_bench.bench.reported import row_order, setting_value
from vae_collapse_bench.bench.tradeoff import pareto_front, pareto_mask, tradeoff_points


def test_pareto_mask_by_hand():
    # (1, 1) is beaten by (2, 2); (3, 0) and (0, 3) beat nothing and nothing beats them; the two equal
    # points (2, 2) do not dominate each other; NaN is never on the front
    x = np.array([1.0, 2.0, 3.0, 0.0, 2.0, math.nan])
    y = np.array([1.0, 2.0, 0.0, 3.0, 2.0, 5.0])
    assert pareto_mask(x, y).tolist() == [False, True, True, True, True, False]
    # a point equal in x and better in y dominates
    assert pareto_mask([1.0, 1.0], [0.0, 1.0]).tolist() == [False, True]
    assert pareto_mask([], []).tolist() == []


def runs_frame():
    rows = []
    # bn-vae at three settings in scrambled order, two seeds each; vae with one seed
    for gamma, prior, post in [(1.2, -30.0, -20.0), (0.6, -28.0, -25.0), (0.9, -29.0, -22.0)]:
        for seed, shift in ((0, -1.0), (1, 1.0)):
            rows.append({"method": "bn-vae", "setting": f"gamma={gamma}", "seed": seed,
                         "priorLL": prior + shift, "postLL": post + 2 * shift})
    rows.append({"method": "vae", "setting": "-", "seed": 0, "priorLL": -27.0, "postLL": -27.5})
    return pd.DataFrame(rows)


def test_tradeoff_points_by_hand():
    points = tradeoff_points(runs_frame())
    # families in the paper's order (vae first), bn-vae's settings in its grid's order
    assert list(zip(points["method"], points["setting"])) == [
        ("vae", "-"), ("bn-vae", "gamma=0.6"), ("bn-vae", "gamma=0.9"), ("bn-vae", "gamma=1.2")]
    bn = points.set_index("setting").loc["gamma=0.6"]
    assert bn["priorLL_mean"] == -28.0 and bn["postLL_mean"] == -25.0
    assert bn["priorLL_std"] == pytest.approx(math.sqrt(2))  # -29, -27: sample std (ddof = 1)
    assert bn["postLL_std"] == pytest.approx(math.sqrt(8))  # -27, -23
    assert bn["n"] == 2 and bn["label"] == "0.6" and bn["parameter"] == "gamma"
    assert math.isnan(points.set_index("method").loc["vae", "priorLL_std"])  # one seed: no error bar
    # vae (-27, -27.5) has the best priorLL, gamma=1.2 (-30, -20) the best postLL, and 0.6 (-28, -25) and
    # 0.9 (-29, -22) each give up priorLL for postLL: no point beats another in both, all four are on it
    assert points["pareto"].tolist() == [True, True, True, True]
    worse = pd.concat([runs_frame(), pd.DataFrame([{"method": "beta-vae", "setting": "beta=0.1", "seed": 0,
                                                     "priorLL": -31.0, "postLL": -26.0}])])
    points = tradeoff_points(worse)
    assert not points.set_index("method").loc["beta-vae", "pareto"]
    assert list(pareto_front(points)["priorLL_mean"]) == [-30.0, -29.0, -28.0, -27.0]


def test_setting_order_and_labels():
    assert row_order("dg-vae", "agg=2") < row_order("dg-vae", "agg=16") < row_order("dg-vae", "agg=default")
    assert row_order("vae", "-") < row_order("bn-vae", "gamma=0.6") < row_order("dg-vae", "agg=1")
    assert setting_value("kappa=13.0") == "13" and setting_value("beta=0.1") == "0.1"
    assert setting_value("agg=default") == "default" and setting_value("-") == "-"


def test_latent_panel_by_hand():
    # dim 2 varies most, then dim 0; dim 1 is constant
    loc = torch.tensor([[0.5, 0.0, 2.0], [-0.5, 0.0, -2.0], [0.0, 0.0, 0.0]])
    std = torch.tensor([[0.5, 1.0, 0.3], [0.5, 1.0, 0.3], [0.4, 1.0, 0.6]])
    panel = latent_panel(loc, std, "t", limit=5.0, points=201)
    assert panel.dims == (2, 0) and panel.n == 3
    assert panel.centres.tolist() == [[2.0, 0.5], [-2.0, -0.5], [0.0, 0.0]]
    grid = np.linspace(-5, 5, 201)

    def normal(v, mu, s):
        return math.exp(-0.5 * ((v - mu) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    def direct(a, b):  # (1/N) sum_n N(a; mu_n2, s_n2^2) N(b; mu_n0, s_n0^2)
        m, s = loc.tolist(), std.tolist()
        return sum(normal(a, m[n][2], s[n][2]) * normal(b, m[n][0], s[n][0]) for n in range(3)) / 3

    assert panel.density[140, 110] == pytest.approx(direct(grid[140], grid[110]), rel=1e-9)
    cell = (grid[1] - grid[0]) ** 2
    assert panel.density.sum() * cell == pytest.approx(1.0, abs=1e-3)  # all mass inside [-5, 5]^2
    with pytest.raises(BenchError, match="at least 2 sentences"):
        latent_panel(loc[:1], std[:1], "t")


def test_encode_gaussian_keeps_the_split_order():
    from vae_collapse_bench.bench.config import Backbone
    from vae_collapse_bench.bench.data import Split
    from vae_collapse_bench.methods.vae import VAE

    torch.manual_seed(0)
    model = VAE(12, Backbone(8, 16, 16, latent_dim=4)).eval()
    g = torch.Generator().manual_seed(1)
    sentences = [torch.randint(3, 12, (n,), generator=g) for n in (5, 3, 5, 4, 3)]
    loc, std = encode_gaussian(model, Split("test", sentences), batch_size=2)
    for i, s in enumerate(sentences):
        q = model.encode(s[None])
        assert torch.allclose(loc[i], q.loc[0], atol=1e-6) and torch.allclose(std[i], q.std[0], atol=1e-6)


def test_choosing_runs_for_the_latent_picture():
    assert parse_choices("vae, bn-vae[gamma=0.6],dg-vae[agg=default]") == [
        ("vae", None), ("bn-vae", "gamma=0.6"), ("dg-vae", "agg=default")]
    with pytest.raises(BenchError, match="unknown method 'nope'"):
        parse_choices("vae,nope")
    runs = runs_frame().assign(trial=range(7))
    chosen = choose_runs(runs, [("bn-vae", None), ("vae", None)])
    default = default_setting("bn-vae")  # the registered default, if it was run, else the grid's first
    expected = default if default in set(runs["setting"]) else "gamma=0.6"
    assert list(chosen["setting"]) == [expected, "-"] and list(chosen["seed"]) == [0, 0]
    assert choose_runs(runs, [("bn-vae", "gamma=1.2")], seed=1)["seed"].tolist() == [1]
    with pytest.raises(BenchError, match="stored settings: gamma=0.6, gamma=0.9, gamma=1.2"):
        choose_runs(runs, [("bn-vae", "gamma=9")])
    with pytest.raises(BenchError, match="no finished run of dg-vae"):
        choose_runs(runs, [("dg-vae", None)])


def test_figures_are_written_non_empty_and_byte_identical(tmp_path):
    points = tradeoff_points(runs_frame())
    first = save(tradeoff_figure(points, "t"), tmp_path / "a" / "tradeoff")
    again = save(tradeoff_figure(points, "t"), tmp_path / "b" / "tradeoff")
    for a, b in zip(first, again):
        assert a.stat().st_size > 1000 and a.read_bytes() == b.read_bytes()
    assert first[0].read_bytes().startswith(b"\x89PNG") and b"<svg" in first[1].read_bytes()
    assert b"Date" not in first[1].read_bytes()  # no timestamp inside
    loc = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    panels = [latent_panel(loc, torch.full_like(loc, 0.5), "a"), latent_panel(loc * 2, torch.full_like(loc, 0.3), "b")]
    latent = save(latent_figure(panels, "t"), tmp_path / "latent")
    assert all(p.stat().st_size > 1000 for p in latent)
    assert save(latent_figure(panels, "t"), tmp_path / "c" / "latent")[0].read_bytes() == latent[0].read_bytes()
