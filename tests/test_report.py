import json
import math

import pandas as pd
import pytest
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.report import METRICS, Leaderboard, fixed, select_runs


def frame():
    rows = []
    for seed, (prior, mi, au) in enumerate([(-30.0, 9.5, 31), (-32.0, 8.5, 31)]):
        rows.append({"method": "vae", "setting": "-", "seed": seed, "run_key": f"a{seed}", "priorLL": prior,
                     "postLL": prior + 5, "KL": 3.0, "MI": mi, "AU": au, "CU": 32, "IW-NLL": -prior,
                     "PPL": 40.0, "Rouge-L": 0.3 + 0.1 * seed, "D": 32})
    rows.append({"method": "bn-vae", "setting": "gamma=0.6", "seed": 0, "run_key": "b0", "priorLL": -29.0,
                 "postLL": -20.0, "KL": 9.0, "MI": 9.2, "AU": 32, "CU": 10, "IW-NLL": 29.0, "PPL": 38.0,
                 "Rouge-L": 0.2, "D": 32})
    return pd.DataFrame(rows)


def test_mean_std_n_per_method_and_setting():
    board = Leaderboard.from_runs(frame(), "synthetic / smoke")
    flat = board.flat().set_index("method")
    assert flat.loc["vae", "priorLL_mean"] == -31.0
    assert flat.loc["vae", "priorLL_std"] == pytest.approx(2**0.5)  # sample std of -30, -32
    assert flat.loc["vae", "n"] == 2 and flat.loc["bn-vae", "n"] == 1
    assert flat.loc["vae", "run_keys"] == "a0 a1"


def test_markdown_has_every_metric_and_the_paper_bold_rules():
    md = Leaderboard.from_runs(frame()).render("md")
    header = md.splitlines()[0]
    for m in METRICS + ["n"]:
        assert m in header
    vae_row = next(line for line in md.splitlines() if line.startswith("| vae"))
    assert "-31.00 ± 1.41" in vae_row and "0.35 ± 0.07" in vae_row  # Rouge-L 0.3, 0.4: no bold rule
    assert "**9.00 ± 0.71**" in vae_row  # MI mean 9.0 >= 9.0: bold (the rule is >=)
    bn_row = next(line for line in md.splitlines() if "bn-vae" in line)
    assert "**9.20 ± –**" in bn_row and "**32 ± –**" in bn_row and "**10" not in bn_row


def test_a_metric_the_method_does_not_define_shows_a_dash():
    runs = frame()
    runs.loc[runs["method"] == "bn-vae", "CU"] = float("nan")  # as a vMF posterior's CU
    bn_row = next(line for line in Leaderboard.from_runs(runs).render("md").splitlines() if "bn-vae" in line)
    assert "nan" not in bn_row and [c.strip() for c in bn_row.split("|")][8] == "–"


def test_bold_rule_scales_with_latent_dim():
    board = Leaderboard.from_runs(frame().assign(D=8))
    assert board.is_bold("AU", 7.5) and not board.is_bold("AU", 7.4)
    assert not board.is_bold("KL", 100)


@pytest.mark.parametrize("fmt", ["csv", "json", "latex", "html"])
def test_other_formats(fmt):
    text = Leaderboard.from_runs(frame(), "t").render(fmt)
    assert "bn-vae" in text
    if fmt == "json":
        rows = json.loads(text)["rows"]
        assert {r["method"] for r in rows} == {"vae", "bn-vae"}
    if fmt == "latex":
        assert r"\textbf{9.20 $\pm$ --}" in text and text.count(r"\\") == 3
    if fmt == "html":
        assert text.startswith("<!DOCTYPE html>") and "<b>9.20 ± –</b>" in text


def test_errors():
    with pytest.raises(BenchError, match="no finished runs"):
        Leaderboard.from_runs(pd.DataFrame())
    with pytest.raises(BenchError, match="unknown format 'xml'"):
        Leaderboard.from_runs(frame()).render("xml")


def test_mi_threshold_scales_with_log_n_and_vmf_au_is_never_bold():
    board = Leaderboard.from_runs(frame().assign(N=64))
    limit = 9.0 * math.log(64) / math.log(10_000)  # 4.06 nats: MI can never exceed log 64 = 4.16
    assert board.threshold("MI", 64) == pytest.approx(limit)
    assert board.is_bold("MI", limit, 64) and not board.is_bold("MI", limit - 1e-9, 64)
    assert board.is_bold("AU", 32, 64) and not board.is_bold("AU", 32, 64, au_comparable=False)
    vmf = frame().assign(au_comparable=[True, True, False])
    md = Leaderboard.from_runs(vmf).render("md")
    bn_row = next(line for line in md.splitlines() if "bn-vae" in line)
    assert "**32 ± –**" not in bn_row and "| 32 ± –" in bn_row
    assert "never bold: the paper calls AU inappropriate for vMF" in md


def test_coinciding_rows_are_explained_in_a_footnote():
    runs = frame()
    twin = runs[runs["method"] == "vae"].assign(method="cyclic-vae", run_key=["c0", "c1"])
    near = runs[runs["method"] == "vae"].assign(method="beta-vae", run_key=["d0", "d1"], KL=3.0 + 1e-9)
    board = Leaderboard.from_runs(pd.concat([runs.assign(history="h"), twin.assign(history="h"),
                                             near.assign(history="g")]))
    same, near_only = [n for n in board.notes if n.startswith("Rows")]
    assert same.startswith("Rows vae [-], cyclic-vae [-] are the same computation")
    assert near_only.startswith("Rows vae [-], cyclic-vae [-], beta-vae [-] agree to the digits shown, not "
                                "exactly (largest difference 1e-09)")
    other_history = Leaderboard.from_runs(pd.concat([runs.assign(history="h"), twin.assign(history="g")]))
    (note,) = [n for n in other_history.notes if n.startswith("Rows")]
    assert "identical metrics although their training differs" in note
    assert not any(n.startswith("Rows") for n in Leaderboard.from_runs(runs).notes)


def test_select_runs_counts_each_training_run_once_and_stale_runs_apart():
    runs = frame().assign(trial=[0, 1, 2], current=[True, True, False], config_key=["new", "new", "old"])
    again = runs.iloc[[0]].assign(trial=3, priorLL=-99.0)  # the same training run evaluated again
    shown, stale = select_runs(pd.concat([runs, again]))
    assert sorted(shown["run_key"]) == ["a0", "a1"] and stale == 1
    assert shown.set_index("run_key").loc["a0", "priorLL"] == -99.0  # the latest record counts
    shown, stale = select_runs(pd.concat([runs, again]), include_stale=True)
    assert stale == 0 and set(shown["config"]) == {"current", "old"}
    board = Leaderboard.from_runs(runs[runs["current"]], stale=1)
    assert "1 run of an older config is not shown (--include-stale)." in board.notes


def test_counts_are_integers_and_no_metric_shows_minus_zero():
    assert fixed(-0.001, 2) == "0.00" and fixed(-0.01, 2) == "-0.01" and fixed(float("nan"), 2) == "nan"
    runs = frame().assign(MI=[-0.001, -0.002, 0.5], AU=[3, 4, 32])
    md = Leaderboard.from_runs(runs).render("md")
    vae_row = next(line for line in md.splitlines() if line.startswith("| vae"))
    assert "0.00 ± 0.00" in vae_row and "-0.00" not in md
    assert "3.5 ± 0.7" in vae_row and "**32 ± –**" in md  # a fractional mean keeps one decimal
