"""`bench claims`: the paper's claims (bench/claims_dg_vae.toml) judged on hand-made boards whose
verdicts are known, each claim made to hold, fail and lack runs; the command's refusals; the claims
section of a published board; the synthetic board's true-MI note."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest
from vae_collapse_bench.bench import cli, data
from vae_collapse_bench.bench.claims import FAILS, HOLDS, MISSING, spearman
from vae_collapse_bench.bench.claims_report import (
    at_scale_lines,
    check_board,
    config_differences,
    figure_settings,
    load_claims,
)
from vae_collapse_bench.bench.export import ExportedStore, export_lines
from vae_collapse_bench.bench.report import Leaderboard

D, N = 10, 100  # thresholds: AU, CU 0.1 D = 1, 0.5 D = 5, 0.9 D = 9; MI 0.1 log N = 0.46
# Two seeds per row: metric -> (seed 0, seed 1). Every claim holds on this board.
PAPER_HOLDS = {
    ("vae", "-"): {"AU": (0, 0), "CU": (0, 0), "MI": (0.01, 0.02), "priorLL": (-30.0, -31.0), "Rouge-L": (0.2, 0.2)},
    ("bn-vae", "gamma=0.6"): {"AU": (3, 3), "CU": (3, 3), "Rouge-L": (0.9, 0.9)},  # AU < 0.9 D: not in C6
    ("bn-vae", "gamma=1.8"): {"AU": (10, 10), "CU": (2, 3), "Rouge-L": (0.30, 0.32)},
    ("fb-vae", "free_bits=49.0"): {"AU": (10, 10), "CU": (4, 4), "Rouge-L": (0.25, 0.27)},
    ("beta-vae", "beta=0.1"): {"AU": (9, 10), "CU": (1, 2), "Rouge-L": (0.30, 0.30)},
    ("dg-vae", "agg=1,m=32"): {"AU": (0, 1), "MI": (0.05, 0.05), "priorLL": (-30.5, -31.5)},
    ("dg-vae", "agg=4,m=32"): {"AU": (5, 6), "MI": (1.0, 1.2)},
    ("dg-vae", "agg=32,m=32"): {"AU": (10, 9), "MI": (2.5, 2.7)},
    ("dg-vae", "agg=default,m=32"): {"AU": (10, 10), "CU": (10, 9), "MI": (3.0, 3.2), "Rouge-L": (0.40, 0.42)},
}
BASE = {"priorLL": -30.0, "postLL": -25.0, "KL": 3.0, "MI": 1.0, "AU": 5.0, "CU": 5.0, "IW-NLL": 29.0, "PPL": 40.0}


def runs(rows: dict) -> pd.DataFrame:
    """One run per seed of every row: the row's metrics, BASE for the rest."""
    out = []
    for (method, setting), metrics in rows.items():
        seeds = len(next(iter(metrics.values())))
        for seed in range(seeds):
            values = {**BASE, **{m: v[seed] for m, v in metrics.items()}}
            out.append({"method": method, "setting": setting, "seed": seed, "run_key": f"{method}{setting}{seed}",
                        "D": D, "N": N, **values})
    return pd.DataFrame(out)


def verdicts(rows: dict) -> dict:
    report = check_board(Leaderboard.from_runs(runs(rows), "synthetic / hand"))
    return {v.id: v for v in report.verdicts}


def changed(**rows) -> dict:
    """PAPER_HOLDS with some rows replaced (a value None drops the row); keys as `method|setting`."""
    board = dict(PAPER_HOLDS)
    for key, metrics in rows.items():
        method, setting = key.split("|")
        if metrics is None:
            board.pop((method, setting))
        else:
            board[(method, setting)] = {**board.get((method, setting), {}), **metrics}
    return board


def test_every_claim_holds_on_a_board_that_agrees_with_the_paper():
    found = verdicts(PAPER_HOLDS)
    assert {k: v.verdict for k, v in found.items()} == {f"C{i}": HOLDS for i in range(1, 7)}
    c2 = {s: w for s, w, _ in found["C2"].subjects()}  # a verdict per setting
    assert c2 == {"bn-vae [gamma=1.8], n = 2": HOLDS, "fb-vae [free_bits=49.0], n = 2": HOLDS,
                  "beta-vae [beta=0.1], n = 2": HOLDS}
    (_, _, c1), = found["C1"].subjects()
    assert c1 == ["AU 0.0 ± 0.0 <= 1 (0.1 D)", "MI 0.01 ± 0.01 <= 0.4605 (0.1 log N, N = 100)"]
    # C6 compares with the settings that reach AU >= 0.9 D only: bn-vae gamma=0.6 (Rouge-L 0.9) is left out
    assert not any("gamma=0.6" in s for s, _, _ in found["C6"].subjects())
    assert len(found["C6"].subjects()) == 3
    (_, _, like), = [s for s in found["C4"].subjects()]
    assert like[1] == ("priorLL -31.00 ± 0.71 vs vae [-] (n = 2) -30.50 ± 0.71: |difference| 0.5 <= 0.707 "
                       "(1 x the larger std)")


@pytest.mark.parametrize(("change", "claim", "also"), [
    ({"vae|-": {"MI": (0.5, 0.5)}}, "C1", {}),  # MI 0.50 > 0.1 log N = 0.46
    ({"fb-vae|free_bits=49.0": {"CU": (8, 8)}}, "C2", {}),  # no holes at free bits 49
    ({"beta-vae|beta=0.1": {"AU": (5, 6)}}, "C2", {"C6": MISSING}),  # beta 0.1 collapses: nothing to compare in C6
    ({"dg-vae|agg=default,m=32": {"CU": (4, 5)}}, "C3", {}),  # holes
    ({"dg-vae|agg=1,m=32": {"AU": (3, 3)}}, "C4", {}),  # agg 1 escapes collapse
    ({"dg-vae|agg=1,m=32": {"priorLL": (-40.0, -41.0)}}, "C4", {}),  # 9.5 nats from vae, std 0.71
    ({"dg-vae|agg=4,m=32": {"MI": (3.3, 3.4)}, "dg-vae|agg=32,m=32": {"MI": (0.1, 0.2)}}, "C5", {}),  # rho 0.4
    ({"dg-vae|agg=default,m=32": {"Rouge-L": (0.28, 0.28)}}, "C6", {}),  # below bn-vae gamma 1.8's 0.31
])
def test_a_claim_fails_when_one_of_its_numbers_contradicts_it(change, claim, also):
    found = {k: v.verdict for k, v in verdicts(changed(**change)).items()}
    assert found == {**{f"C{i}": HOLDS for i in range(1, 7)}, claim: FAILS, **also}


def test_c2_has_a_verdict_per_setting():
    found = verdicts(changed(**{"fb-vae|free_bits=49.0": {"CU": (8, 8)}}))
    c2 = {s: (w, d) for s, w, d in found["C2"].subjects()}
    assert c2["fb-vae [free_bits=49.0], n = 2"] == (FAILS, ["AU 10.0 ± 0.0 >= 9 (0.9 D)", "CU 8.0 ± 0.0 > 5 (0.5 D)"])
    assert c2["bn-vae [gamma=1.8], n = 2"][0] == HOLDS and c2["beta-vae [beta=0.1], n = 2"][0] == HOLDS


def test_c5_allows_one_neighbouring_pair_out_of_order_but_not_more():
    one_swap = verdicts(changed(**{"dg-vae|agg=4,m=32": {"MI": (2.6, 2.6)}, "dg-vae|agg=32,m=32": {"MI": (1.1, 1.1)}}))
    assert one_swap["C5"].verdict == HOLDS  # ranks 1 3 2 4: rho = 0.8
    assert "rho = 0.80 >= 0.8" in one_swap["C5"].subjects()[0][2][0]
    flat = verdicts(changed(**{f"dg-vae|{s}": {"AU": (0, 0)} for s in ("agg=1,m=32", "agg=4,m=32", "agg=32,m=32",
                                                                      "agg=default,m=32")}))
    assert flat["C5"].verdict == FAILS and "equal on every row: no rank order" in flat["C5"].subjects()[0][2][1]


def test_c5_finds_no_order_in_means_that_differ_less_than_the_seed_noise():
    # every agg collapsed: MI's means rise 0.0000 < 0.0001 < 0.0002 < 0.0003 (rho 1), but within each row
    # the two seeds differ by 0.0006 (std 0.00042), more than the means do; AU still grows, so MI alone
    # refutes the claim
    settings, means = ("agg=1,m=32", "agg=4,m=32", "agg=32,m=32", "agg=default,m=32"), (0.0, 0.0001, 0.0002, 0.0003)

    def c5(half_gap: float):
        rows = {f"dg-vae|{s}": {"MI": (v - half_gap, v + half_gap)} for s, v in zip(settings, means)}
        return verdicts(changed(**rows))["C5"]

    noisy = c5(0.0003)
    (_, verdict, (mi, au)), = noisy.subjects()
    assert noisy.verdict == FAILS and verdict == FAILS
    assert mi.endswith("means spread 0.0003 <= 0.00042, the largest std over seeds: no rank order beyond "
                       "seed noise (rho = 1.00 is chance)")
    assert au.endswith("rho = 1.00 >= 0.8")
    assert c5(0.0001).verdict == HOLDS  # the same means, seeds that agree (std 0.00014): a real order


def test_spearman_uses_average_ranks_for_ties():
    assert spearman([1.0, 2.0, 3.0, 4.0]) == pytest.approx(1.0)
    assert spearman([4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)
    assert spearman([0.0, 10.0, 32.0, 32.0]) == pytest.approx(4.5 / math.sqrt(5 * 4.5))
    assert math.isnan(spearman([5.0, 5.0, 5.0, 5.0]))


def test_missing_rows_and_single_seeds_give_not_enough_runs():
    no_beta = verdicts(changed(**{"beta-vae|beta=0.1": None}))
    assert no_beta["C2"].verdict == MISSING and no_beta["C6"].verdict == MISSING
    assert no_beta["C2"].subjects() == [  # in the claim's order, a verdict per setting
        ("bn-vae [gamma=1.8], n = 2", HOLDS, ["AU 10.0 ± 0.0 >= 9 (0.9 D)", "CU 2.5 ± 0.7 <= 5 (0.5 D)"]),
        ("fb-vae [free_bits=49.0], n = 2", HOLDS, ["AU 10.0 ± 0.0 >= 9 (0.9 D)", "CU 4.0 ± 0.0 <= 5 (0.5 D)"]),
        ("beta-vae [beta=0.1]", MISSING, ["no such row on the board"])]
    assert any(s == "dg-vae [agg=default,m=32] vs beta-vae" and "no beta-vae row with AU >= 0.9 D (0 rows" in d[0]
               for s, _, d in no_beta["C6"].subjects())
    assert verdicts(changed(**{"dg-vae|agg=4,m=32": None}))["C5"].verdict == MISSING  # rho needs every row
    one_seed = dict(PAPER_HOLDS)
    one_seed[("vae", "-")] = {m: v[:1] for m, v in PAPER_HOLDS[("vae", "-")].items()}
    found = verdicts(one_seed)
    assert found["C1"].verdict == MISSING and found["C4"].verdict == MISSING  # C4's `like` needs vae's std
    assert found["C1"].subjects()[0][2] == ["vae [-]: n = 1 < 2 seeds"]
    no_rouge = dict(PAPER_HOLDS)
    no_rouge[("dg-vae", "agg=default,m=32")] = {k: v for k, v in PAPER_HOLDS[("dg-vae", "agg=default,m=32")].items()
                                                if k != "Rouge-L"}
    assert verdicts(no_rouge)["C6"].verdict == MISSING
    # a failing finding outweighs a missing one: one counterexample refutes a conjunction
    both = verdicts(changed(**{"beta-vae|beta=0.1": None, "fb-vae|free_bits=49.0": {"CU": (8, 8)}}))
    assert both["C2"].verdict == FAILS


def test_every_format_renders():
    report = check_board(Leaderboard.from_runs(runs(changed(**{"vae|-": {"MI": (0.5, 0.5)}})), "synthetic / hand"))
    table = report.render("table")
    assert table.splitlines()[0].startswith("Claims of the DG-VAE paper on synthetic / hand: D = 10, N = 100")
    assert "C1  fails" in table and "holds: 5, fails: 1, not enough runs: 0" in table
    md = report.render("markdown")
    assert "- C1 fails: The vanilla VAE collapses" in md and "\n  - vae [-], n = 2: fails: " in md
    doc = json.loads(report.render("json"))
    assert doc["latent_dim"] == D and doc["test_sentences"] == [N] and doc["min_seeds"] == 2
    assert [c["verdict"] for c in doc["claims"]] == [FAILS] + [HOLDS] * 5
    assert doc["claims"][1]["rows"][0]["subject"] == "bn-vae [gamma=1.8], n = 2"


def test_the_data_file_keeps_thresholds_beside_the_papers_words():
    claims = load_claims()
    assert [c.id for c in claims.claims] == [f"C{i}" for i in range(1, 7)] and claims.min_seeds == 2
    assert [c.rule for c in claims.claims][:3] == [
        "AU <= 0.1 D; MI <= 0.1 log N", "each row: AU >= 0.9 D; CU <= 0.5 D", "AU >= 0.9 D; CU >= 0.9 D"]
    assert all(c.paper for c in claims.claims)


def test_config_differences_list_every_differing_leaf_in_order():
    ours = {"profile": "quick", "backbone": {"emb_dim": 64, "latent_dim": 32}, "training": {"max_train": 5000}}
    paper = {"profile": "paper", "backbone": {"emb_dim": 512, "latent_dim": 32}, "training": {"max_train": None}}
    assert config_differences(ours, paper) == ["backbone.emb_dim 64 -> 512", "training.max_train 5,000 -> all"]
    assert config_differences(ours, ours) == []


def test_a_failing_claim_says_what_might_change_at_the_paper_profile():
    claims = load_claims()
    assert [cid for cid, _ in claims.at_scale] == [f"C{i}" for i in range(1, 7)]
    report = check_board(Leaderboard.from_runs(runs(changed(**{"dg-vae|agg=default,m=32": {"CU": (0, 0)}})), "t"))
    lines = at_scale_lines(report, claims, "quick", ["backbone.emb_dim 64 -> 512"])
    assert lines[0].startswith("C3 fails at the quick profile, which is not the paper's; the paper profile differs "
                               "in: backbone.emb_dim 64 -> 512.")
    assert len(lines) == 2 and lines[1] == "  C3: " + dict(claims.at_scale)["C3"]
    assert at_scale_lines(report, claims, "paper", []) == []  # the paper profile's verdict is the verdict
    holds = check_board(Leaderboard.from_runs(runs(PAPER_HOLDS), "t"))
    assert at_scale_lines(holds, claims, "quick", []) == []


def test_the_latent_picture_takes_the_papers_figure_settings_the_board_has():
    rows = changed(**{"bn-vae|gamma=1.2": {"AU": (5, 5)}, "fb-vae|free_bits=36.0": {"AU": (1, 1)}})
    board = Leaderboard.from_runs(runs(rows), "t")
    # bn-vae 1.2 and fb-vae 36 among other settings; vae and dg-vae at their defaults; no beta-vae 0.4
    assert figure_settings(board) == {"vae": "-", "bn-vae": "gamma=1.2", "fb-vae": "free_bits=36.0",
                                      "dg-vae": "agg=default,m=32"}


def test_a_damaged_data_file_is_named(tmp_path):
    from vae_collapse_bench.bench.errors import BenchError

    bad = tmp_path / "claims.toml"
    bad.write_text('[source]\ncitation = "x"\n[rules]\nmin_seeds = 2\n[[claims]]\nid = "C9"\npaper = "p"\n'
                   'rows = [{method = "vae"}]\nchecks = [{kind = "at_most", metric = "XX", fraction = 0.1}]\n')
    with pytest.raises(BenchError, match="claim C9: unknown metric"):
        load_claims(str(bad))
    bad.write_text(bad.read_text().replace('metric = "XX"', 'metric = "AU"').replace("at_most", "lower"))
    with pytest.raises(BenchError, match="claim C9: unknown check kind 'lower'"):
        load_claims(str(bad))


# --- the command ---------------------------------------------------------------------------------------
def trials(rows: dict, checksum: str = "") -> list:
    """The runs of `rows` as stored records (as an export reads them back)."""
    out = []
    for i, r in runs(rows).iterrows():
        metrics = {m: r[m] for m in [*BASE, "Rouge-L"] if m in r and r[m] == r[m]}
        attrs = {"method": r["method"], "setting": r["setting"], "seed": int(r["seed"]), "training_key": r["run_key"],
                 "run_key": r["run_key"], "eval_key": r["run_key"] + "-e", "config_key": "cfg", "metrics": metrics,
                 "eval_sizes": {"N": N, "D": D}, "config": {"profile": "smoke"}, "wall_time_s": 1.0}
        if checksum:
            attrs["data_checksum"] = checksum
        out.append(SimpleNamespace(number=i, state=SimpleNamespace(name="COMPLETE"), user_attrs=attrs))
    return out


def export(tmp_path, rows: dict, checksum: str = "") -> str:
    path = tmp_path / "runs.jsonl"
    path.write_text(export_lines(ExportedStore("synthetic", "smoke", "cfg", "0.0", "hand", trials(rows, checksum)),
                                 "cfg", "0.0"))
    return str(path)


def bench(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_judges_a_runs_export(bench_env, capsys, tmp_path):
    code, out, err = bench(capsys, "claims", "--dataset", "synthetic", "--profile", "smoke",
                           "--from", export(tmp_path, changed(**{"vae|-": {"MI": (0.5, 0.5)}})), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["title"] == "synthetic / smoke" and [c["verdict"] for c in doc["claims"]] == [FAILS] + [HOLDS] * 5
    code, out, _ = bench(capsys, "claims", "--dataset", "synthetic", "--profile", "smoke", "--from",
                         export(tmp_path, PAPER_HOLDS))
    assert code == 0 and "holds: 6, fails: 0, not enough runs: 0" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--dataset", "nope", "--profile", "smoke"], "error: unknown dataset 'nope'"),
    (["--dataset", "synthetic", "--profile", "huge"], "error: unknown profile 'huge'"),
    (["--dataset", "synthetic", "--profile", "smoke"], "error: no runs stored for dataset 'synthetic' and profile"),
    (["--dataset", "synthetic", "--profile", "smoke", "--format", "xml"], "error: unknown format 'xml'"),
    (["--dataset", "snli", "--profile", "smoke", "--from", "{export}"], "error: --from"),
])
def test_the_command_refuses_bad_input_in_one_line(argv, message, bench_env, capsys, tmp_path):
    path = export(tmp_path, PAPER_HOLDS)
    code, out, err = bench(capsys, "claims", *[a.replace("{export}", path) for a in argv])
    assert code == 2 and out == ""
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_the_published_readme_lists_the_claims_and_the_true_mi(bench_env, capsys, tmp_path):
    path = export(tmp_path, PAPER_HOLDS, data.corpus_checksum("synthetic"))
    readmes = []
    for folder in ("a", "b"):
        code, _, err = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--publish",
                             "--publish-dir", str(tmp_path / folder), "--from", path)
        assert code == 0, err
        readmes.append((tmp_path / folder / "synthetic" / "smoke" / "README.md").read_bytes())
    assert readmes[0] == readmes[1]  # deterministic
    readme = readmes[0].decode()
    section = readme[readme.index("## Claims of the paper"):readme.index("## Runs")]
    assert "- Judged by `bench claims --dataset synthetic --profile smoke`" in section
    assert "- C1 holds: The vanilla VAE collapses" in section and "\n  - vae [-], n = 2: holds: AU 0.0" in section
    assert section.count("\n- C") == 6
    assert "at the smoke profile, which is not the paper's" not in section  # nothing fails on this board
    assert "True I(x; z) of the synthetic generator: " in readme  # a board note, above the figures


def test_the_true_mi_note_needs_the_runs_of_the_corpus_present(bench_env, capsys, tmp_path):
    code, md, _ = bench(capsys, "leaderboard", "--dataset", "synthetic", "--from",
                        export(tmp_path, PAPER_HOLDS, data.corpus_checksum("synthetic")))
    assert code == 0
    info = data.corpus_stats("synthetic")["generator"]["mutual_information_nats"]
    assert f"True I(x; z) of the synthetic generator: {info['infonce_lower']:.2f} ± " in md
    assert f"to {info['prior_is_upper']:.2f} ± " in md and "not a share recovered" in md
    code, md, _ = bench(capsys, "leaderboard", "--dataset", "synthetic", "--from",
                        export(tmp_path, PAPER_HOLDS, "another-corpus"))
    assert code == 0 and "True I(x; z)" not in md  # runs of other data: their truth is not this one
