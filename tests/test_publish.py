"""Aggregation against hand-made records, and `bench leaderboard --publish` on a smoke store: every
file written, every format parsed back, the same store giving byte-identical files, the export
rebuilding the board, the paper's rows beside ours."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from vae_collapse_bench.bench import cli, reported
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.export import ExportedStore, export_lines, read_export
from vae_collapse_bench.bench.report import board_from_store

METRICS = {"priorLL": -30.0, "postLL": -25.0, "KL": 3.0, "MI": 1.0, "AU": 2.0, "CU": 8.0, "IW-NLL": 29.0,
           "PPL": 40.0}


def trial(number, state, method, setting, seed, config="cfg", **metrics):
    key = f"{method}-{setting}-{seed}-{config}"
    attrs = {"method": method, "setting": setting, "seed": seed, "training_key": key, "run_key": key,
             "eval_key": key + "-e", "config_key": config, "eval_sizes": {"N": 100, "D": 8},
             "config": {"profile": "hand"}, "wall_time_s": 10.0}
    if state == "COMPLETE":
        attrs["metrics"] = {**METRICS, **metrics}
    else:
        attrs.update(diverged=True, fail_reason="training diverged at epoch 2")
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), user_attrs=attrs)


def hand_store() -> ExportedStore:
    records = [
        trial(0, "COMPLETE", "vae", "-", 0, priorLL=-30.0),
        trial(1, "COMPLETE", "vae", "-", 1, priorLL=-33.0),
        trial(2, "COMPLETE", "vae", "-", 2, priorLL=-36.0),
        trial(3, "COMPLETE", "bn-vae", "gamma=0.6", 0, priorLL=-28.0, MI=9.5),
        trial(4, "FAIL", "bn-vae", "gamma=1.8", 0),  # failed for good: left out and named
        trial(5, "COMPLETE", "vae", "-", 3, config="old", priorLL=-99.0),  # stale: left out and counted
        trial(6, "COMPLETE", "vae", "-", 0, priorLL=-31.0),  # the same training run evaluated again
    ]
    records[6].user_attrs["evaluated_from_trial"] = 0
    return ExportedStore("synthetic", "hand", "cfg", "0.0", "hand", records)


def test_aggregation_of_hand_made_records():
    board, shown, stale = board_from_store(hand_store(), "synthetic / hand", "cfg")
    flat = board.flat().set_index("method")
    # vae: seeds 0 (re-evaluated: -31 replaces -30), 1, 2 -> mean -33.33.., sample std of (-31, -33, -36)
    values = [-31.0, -33.0, -36.0]
    mean = sum(values) / 3
    std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
    assert flat.loc["vae", "priorLL_mean"] == pytest.approx(mean)
    assert flat.loc["vae", "priorLL_std"] == pytest.approx(std)  # ddof = 1
    assert flat.loc["vae", "n"] == 3 and flat.loc["vae", "seeds"] == "1 2 0"
    assert flat.loc["bn-vae", "n"] == 1 and pd.isna(flat.loc["bn-vae", "priorLL_std"])
    assert stale == 1 and "1 run of an older config is not shown (--include-stale)." in board.notes
    assert any(n.startswith("Not shown: bn-vae [gamma=1.8]: 1 run failed (training diverged") for n in board.notes)
    assert list(flat.index) == ["vae", "bn-vae"]  # the paper's family order
    assert set(shown["trial"]) == {1, 2, 3, 6}


def test_an_export_reads_back_and_bad_files_are_refused(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(export_lines(hand_store(), "cfg", "0.0"))
    back = read_export(path)
    assert (back.dataset, back.profile, back.current_config) == ("synthetic", "hand", "cfg")
    assert [t.number for t in back.trials()] == list(range(7))
    rebuilt, original = board_from_store(back, "t", "cfg")[0], board_from_store(hand_store(), "t", "cfg")[0]
    assert rebuilt.render("md") == original.render("md")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(BenchError, match="is not a runs export"):
        read_export(tmp_path / "bad.jsonl")
    (tmp_path / "cut.jsonl").write_text(path.read_text().splitlines()[0] + "\n{\"number\": 1\n")
    with pytest.raises(BenchError, match="line 2 is not a run record"):
        read_export(tmp_path / "cut.jsonl")


# --- a smoke store, trained once for the module ---------------------------------------------------
RUNS = [
    ["--methods", "vae", "--seeds", "0,1"],
    ["--methods", "beta-vae", "--set", "beta-vae.beta=0.0", "--seeds", "0,1"],
    ["--methods", "beta-vae", "--set", "beta-vae.beta=0.8", "--seeds", "0,1"],
    ["--methods", "vmf-vae", "--set", "vmf-vae.kappa=13", "--seeds", "0"],
    ["--methods", "bn-vae", "--set", "bn-vae.gamma=1e6", "--seeds", "0"],  # diverges: a failed run
]


@pytest.fixture(scope="module")
def smoke(synthetic_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_DATA", str(synthetic_root))
        mp.setenv("BENCH_HOME", str(root / "results"))
        mp.delenv("BENCH_STORAGE", raising=False)
        mp.chdir(root)
        for extra in RUNS:
            cli.main(["run", "--dataset", "synthetic", "--profile", "smoke", "--quiet", *extra])
        yield root


def bench(capsys, *argv):
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def publish_to(capsys, folder: Path, *extra) -> Path:
    code, out, err = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--publish",
                           "--publish-dir", str(folder), *extra)
    assert code == 0, err
    return folder / "synthetic" / "smoke"


def test_publish_writes_every_file_and_the_same_store_gives_the_same_bytes(smoke, capsys, tmp_path):
    board = publish_to(capsys, tmp_path / "a")
    again = publish_to(capsys, tmp_path / "b")
    names = sorted(p.name for p in board.iterdir())
    assert names == sorted(["README.md", "index.html", "runs.jsonl", "table.csv", "table.json", "table.tex",
                            "tradeoff.png", "tradeoff.svg", "latent.png", "latent.svg"]
                           + [n for n in ("interpolation.png", "interpolation.svg") if (board / n).exists()])
    for name in names:
        assert (board / name).stat().st_size > 0
        assert (board / name).read_bytes() == (again / name).read_bytes(), name
    index = (tmp_path / "a" / "README.md").read_text()
    assert "| [synthetic / smoke](synthetic/smoke/README.md) | 4 | 7 | 0 | 1 |" in index


def test_every_format_parses_back(smoke, capsys, tmp_path):
    board = publish_to(capsys, tmp_path)
    csv = pd.read_csv(board / "table.csv")
    assert list(zip(csv["method"], csv["setting"])) == [("vae", "-"), ("beta-vae", "beta=0.0"),
                                                        ("beta-vae", "beta=0.8"), ("vmf-vae", "kappa=13.0")]
    assert set(csv["command"]) == {"bench leaderboard --dataset synthetic --profile smoke --publish"}
    assert csv["bench_version"].notna().all() and list(csv["seeds"]) == ["0 1"] * 3 + ["0"]
    assert [len(keys.split()) for keys in csv["run_keys"]] == [2, 2, 2, 1]
    assert json.loads(csv["resolved_config"][0])["profile"] == "smoke"
    doc = json.loads((board / "table.json").read_text())
    rows = pd.DataFrame(doc["rows"])
    assert rows["priorLL_mean"].tolist() == pytest.approx(csv["priorLL_mean"].tolist())
    assert doc["counts"]["failed"] == 1 and doc["counts"]["stale"] == 0 and doc["counts"]["runs"] == 7
    assert rows["resolved_config"][0]["training"]["max_epochs"] == 2
    check_latex((board / "table.tex").read_text(), n_rows=4)
    page = TableParser.parse((board / "index.html").read_text())
    assert [(r[0], r[1]) for r in page.rows] == list(zip(csv["method"], csv["setting"]))
    assert page.families == ["vae", "beta-vae", "vmf-vae"] and page.images >= 2 and not page.external
    readme = (board / "README.md").read_text()
    where = "--dataset synthetic --profile smoke"
    for text in ("| vae ", "![tradeoff](tradeoff.png)", "![latent](latent.png)", "Stale: 0 runs",
                 "Failed: 1 run of the current config", f"bench run --methods vae --grid paper {where} --seeds 0,1\n",
                 f"bench run --methods beta-vae --set beta-vae.beta=0.8 {where} --seeds 0,1",
                 f"bench run --methods vmf-vae --set vmf-vae.kappa=13.0 {where} --seeds 0\n",
                 "--from leaderboards/synthetic/smoke/runs.jsonl", "Not shown: bn-vae [gamma=1000000.0]",
                 "Latent picture leaves out 1 method(s)"):
        assert text in readme, text


def check_latex(tex: str, n_rows: int) -> None:
    """booktabs structure: one tabular, rules in order, as many cells in each row as columns; and
    compiled when a TeX is installed."""
    body = tex[tex.index(r"\begin{tabular}"):tex.index(r"\end{tabular}")]
    spec = re.match(r"\\begin\{tabular\}\{([lr]+)\}", body).group(1)
    assert body.index(r"\toprule") < body.index(r"\midrule") < body.index(r"\bottomrule")
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(rows) == n_rows + 1 and all(line.count("&") == len(spec) - 1 for line in rows)
    if shutil.which("pdflatex"):
        document = ("\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=5mm,landscape]{geometry}"
                    f"\\begin{{document}}\\tiny\n{tex}\\end{{document}}\n")
        with pytest.MonkeyPatch.context():
            import tempfile

            with tempfile.TemporaryDirectory() as work:
                (Path(work) / "t.tex").write_text(document)
                proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=work,
                                      capture_output=True, text=True, timeout=120)
                assert proc.returncode == 0, proc.stdout[-2000:]


class TableParser(HTMLParser):
    """Rows (cell texts) of the board tables, family groups, embedded images, external references."""

    def __init__(self):
        super().__init__()
        self.rows, self.families, self.images, self.external = [], [], 0, []
        self._row, self._cell = None, None

    @classmethod
    def parse(cls, text: str) -> TableParser:
        parser = cls()
        parser.feed(text)
        return parser

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if name in attrs and not attrs[name].startswith(("data:", "#")):
                self.external.append(attrs[name])
        if tag == "tbody" and "family" in (attrs.get("class") or ""):
            self.families.append(attrs["data-family"])
        if tag == "tr" and "data-i" in attrs:
            self._row = []
        if tag == "td" and self._row is not None:
            self._cell = StringIO()
        if tag == "img" and attrs.get("src", "").startswith("data:image/png;base64,"):
            self.images += 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.write(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(self._cell.getvalue())
            self._cell = None
        if tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None


def test_the_export_rebuilds_the_board(smoke, capsys, tmp_path):
    board = publish_to(capsys, tmp_path)
    code, from_store, _ = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke")
    assert code == 0
    code, from_export, _ = bench(capsys, "leaderboard", "--dataset", "synthetic", "--from", str(board / "runs.jsonl"))
    assert code == 0 and from_export == from_store
    code, _, err = bench(capsys, "leaderboard", "--dataset", "snli", "--from", str(board / "runs.jsonl"))
    assert code == 2 and "holds synthetic / smoke, not snli" in err
    again = publish_to(capsys, tmp_path / "from-export", "--from", str(board / "runs.jsonl"))
    assert (again / "table.csv").read_bytes() == (board / "table.csv").read_bytes()
    assert not (again / "latent.png").exists()  # no checkpoints in an export: said in the README
    assert "Latent picture not drawn: the board was rebuilt from an export" in (again / "README.md").read_text()


def test_the_index_keeps_its_prose_and_lists_every_board(smoke, capsys, tmp_path):
    (tmp_path / "README.md").write_text("# Boards\n\nProse that stays.\n")
    (tmp_path / "other" / "quick").mkdir(parents=True)
    (tmp_path / "other" / "quick" / "table.json").write_text(json.dumps(
        {"dataset": "other", "profile": "quick", "bench_version": "9", "counts": {
            "rows": 1, "runs": 2, "stale": 3, "failed": 4, "compute_hours_shown": 0.5}}))
    publish_to(capsys, tmp_path)
    publish_to(capsys, tmp_path)
    index = (tmp_path / "README.md").read_text()
    assert index.startswith("# Boards\n\nProse that stays.\n") and index.count("<!-- boards:start -->") == 1
    lines = [line for line in index.splitlines() if line.startswith("| [")]
    assert [line.split("]")[0] for line in lines] == ["| [other / quick", "| [synthetic / smoke"]


def test_publish_refuses_what_it_cannot_do(smoke, capsys, tmp_path):
    code, _, err = bench(capsys, "leaderboard", "--dataset", "synthetic", "--publish")
    assert code == 2 and "give --profile" in err
    code, _, err = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--publish",
                         "--include-stale")
    assert code == 2 and "drop --include-stale" in err
    (tmp_path / "file").write_text("")
    code, _, err = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--publish",
                         "--publish-dir", str(tmp_path / "file"))
    assert code == 2 and err.startswith("error: cannot create")


PAPER = """
[source]
citation = "A test file, not the paper."
table = "Table 2, the Yahoo rows"
[order]
methods = ["vae", "beta-vae"]
[bold]
rule = "MI >= 9.0"
[table2_yahoo]
columns = ["priorLL", "postLL", "MI"]
rows = [
  {paper_name = "VAE", method = "vae", setting = "-", priorLL = -1.5, postLL = -2.5, MI = 0.25},
  {paper_name = "beta 0.8", method = "beta-vae", setting = "beta=0.8", priorLL = -3.0, MI = 9.5, bold = ["MI"]},
]
"""


def test_the_papers_rows_beside_ours(smoke, capsys, tmp_path, monkeypatch):
    code, _, err = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--with-reported")
    if not reported.paper_facts().rows:  # none typed in: said, never made up
        assert code == 2 and "are not typed in yet" in err
    (tmp_path / "paper.toml").write_text(PAPER)
    monkeypatch.setattr(reported, "DATA_FILE", tmp_path / "paper.toml")
    reported.paper_facts.cache_clear()
    try:
        code, md, _ = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--with-reported")
        assert code == 0
        rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
        assert [[cell.strip() for cell in r.split("|")[1:4]] for r in rows] == [
            ["vae", "-", "measured"], ["vae", "-", "reported"], ["beta-vae", "beta=0.0", "measured"],
            ["beta-vae", "beta=0.8", "measured"], ["beta-vae", "beta=0.8", "reported"],
            ["vmf-vae", "kappa=13.0", "measured"]]
        assert "| -1.50 " in rows[1] and "**9.50**" in rows[4] and "| –" in rows[4]
        assert "A test file, not the paper." in md
        code, text, _ = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke",
                              "--with-reported", "--format", "csv")
        csv = pd.read_csv(StringIO(text))
        assert list(csv["source"]) == ["measured"] * 4 + ["reported"] * 2
        board = publish_to(capsys, tmp_path / "boards", "--with-reported")
        page = TableParser.parse((board / "index.html").read_text())
        assert len(page.rows) == 6 and page.rows[1][2] == "reported: VAE"
    finally:
        reported.paper_facts.cache_clear()


def test_plot_commands_write_their_files(smoke, capsys, tmp_path):
    code, out, err = bench(capsys, "plot", "tradeoff", "--dataset", "synthetic", "--profile", "smoke",
                           "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "tradeoff-synthetic-smoke.png").stat().st_size > 0 and "Pareto front (" in out
    code, out, err = bench(capsys, "plot", "latent", "--dataset", "synthetic", "--profile", "smoke",
                           "--methods", "vae,beta-vae[beta=0.8]", "--seed", "1", "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "latent-synthetic-smoke.svg").stat().st_size > 0
    assert "beta-vae [beta=0.8] seed 1: dims" in out and "N = 64" in out
    code, _, err = bench(capsys, "plot", "latent", "--dataset", "synthetic", "--profile", "smoke",
                         "--methods", "vmf-vae", "--out", str(tmp_path))
    assert code == 2 and "no Gaussian marginals" in err


def test_show_prints_one_run_in_full(smoke, capsys, tmp_path):
    code, text, _ = bench(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--format", "csv")
    key = pd.read_csv(StringIO(text)).set_index("setting").loc["beta=0.8", "run_keys"].split()[0]
    code, out, err = bench(capsys, "show", key[:10])
    assert code == 0, err
    assert out.startswith(f"run {key}\n  beta-vae [beta=0.8] seed 0 on synthetic / smoke")
    history = out[out.index("per-epoch history"):].splitlines()
    assert "epoch" in history[1] and "train_loss" in history[1] and "valid_kl" in history[1]
    assert history[2].split()[0] == "1" and history[3].split()[0] == "2"
    for text in ("resolved config:", "evaluation sizes: ", "N=64", "evaluation seconds: ", "versions: bench=",
                 "torch_threads: ", "command: ", "peak_memory_mb: "):
        assert text in out, text
    code, out, _ = bench(capsys, "show", key, "--format", "json")
    doc = json.loads(out)
    assert doc["run_key"] == key and doc["identity"]["seed"] == 0 and len(doc["history"]) == 2
    assert doc["records"][0]["metrics"]["priorLL"] < 0 and doc["config"]["profile"] == "smoke"
    code, _, err = bench(capsys, "show", "abc")
    assert code == 2 and "too short" in err
    code, _, err = bench(capsys, "show", "ffffffffffff")
    assert code == 2 and "no run with key" in err
