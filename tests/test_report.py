import json

import pandas as pd
import pytest

from bench.errors import BenchError
from bench.report import METRICS, Leaderboard


def frame():
    rows = []
    for seed, (prior, mi, au) in enumerate([(-30.0, 9.5, 31), (-32.0, 8.5, 31)]):
        rows.append({"method": "vae", "setting": "-", "seed": seed, "run_key": f"a{seed}", "priorLL": prior,
                     "postLL": prior + 5, "KL": 3.0, "MI": mi, "AU": au, "CU": 32, "IW-NLL": -prior,
                     "PPL": 40.0, "D": 32})
    rows.append({"method": "bn-vae", "setting": "gamma=0.6", "seed": 0, "run_key": "b0", "priorLL": -29.0,
                 "postLL": -20.0, "KL": 9.0, "MI": 9.2, "AU": 32, "CU": 10, "IW-NLL": 29.0, "PPL": 38.0,
                 "D": 32})
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
    assert "-31.00 ± 1.41" in vae_row
    assert "**9.00 ± 0.71**" in vae_row  # MI mean 9.0 >= 9.0: bold (the rule is >=)
    bn_row = next(line for line in md.splitlines() if "bn-vae" in line)
    assert "**9.20 ± –**" in bn_row and "**32.0 ± –**" in bn_row and "**10.0" not in bn_row


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
