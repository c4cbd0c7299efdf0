"""Fuzz: whatever a user types, `bench` ends with exit code 0, 1 or 2 and never a traceback.

The bulk calls `bench.cli.main(argv)` in this process: every subcommand, one argument at a time
replaced by each value of VALUES (the rest of the command valid). An exception escaping `main` is
what the user would see as a traceback. A BenchError must be printed as ONE line `error: ...`.
Nothing trains: `Runner` is replaced by one that runs nothing and `Search.run` by one that runs no trial
(every check before training still runs), no worker process is started and this process keeps its
torch threads, and `bench perf` is only given arguments it refuses before timing anything.

A few real processes check the same end to end, and hypothesis drives the pure parsers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import TOY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vae_collapse_bench.bench import cli, registry, search, search_workers, worker
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.runner import expand, parse_overrides, parse_seeds

REPO = Path(__file__).resolve().parents[1]

# The table of odd values. Paths are placeholders filled in per test under its tmp_path: tests run as
# root, so "read-only" is a path whose folder would have to be created under a regular file.
VALUES = {
    "empty": "",
    "long": "v" * 5000,
    "lambda": "λ-vae",
    "cjk": "數據",
    "negative": "-1",
    "nan": "nan",
    "file": "{file}",  # an existing regular file
    "folder": "{folder}",  # an existing empty folder
    "under-file": "{file}/sub",  # a path whose parent is a regular file
    "read-only": "{file}/results/optuna.journal",  # a journal whose folder cannot be created
}

# a runs export of one finished run (bench.export's form)
EXPORT = (json.dumps({"format": "vae-collapse-bench/runs", "version": 1, "dataset": "synthetic", "profile": "smoke",
                      "current_config": "c", "bench_version": "0"}) + "\n"
          + json.dumps({"number": 0, "state": "COMPLETE", "user_attrs": {
              "method": "vae", "seed": 0, "training_key": "t", "eval_key": "e", "metrics": {"priorLL": -30.0}}}) + "\n")
RUN = ["run", "--dataset", "synthetic", "--profile", "smoke", "--methods", "vae", "--seeds", "0", "--quiet"]
BOARD = ["leaderboard", "--dataset", "synthetic"]
EVAL = ["evaluate", "--dataset", "synthetic", "--profile", "smoke"]
PERF = ["perf", "--methods", "vae", "--quick", "--repeats", "1", "--warmup", "0"]
INTERPOLATE = ["interpolate", "--dataset", "synthetic", "--profile", "smoke", "--methods", "vae"]
PLOT_INTERPOLATION = ["plot", "interpolation", "--dataset", "synthetic", "--profile", "smoke"]
PUBLISH = ["leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--publish"]
PLOT_TRADEOFF = ["plot", "tradeoff", "--dataset", "synthetic", "--profile", "smoke"]
PLOT_LATENT = ["plot", "latent", "--dataset", "synthetic", "--profile", "smoke", "--methods", "vae"]
SHOW = ["show", "abcdef123456"]
CLAIMS = ["claims", "--dataset", "synthetic", "--profile", "smoke"]
SEARCH = ["search", "--method", "bn-vae", "--dataset", "synthetic", "--profile", "smoke", "--trials", "1"]
SEARCH_SHOW = ["search", "--method", "bn-vae", "--dataset", "synthetic", "--profile", "smoke", "--show"]
WORKER = ["worker", "--until-empty", "--quiet"]
DATA_ADD = ["data", "add", "mine", "--train", "{corpus}/train.txt", "--valid", "{corpus}/valid.txt", "--test",
            "{corpus}/test.txt"]
# --json is checked before the methods: an unknown method then refuses every value before any timing
PERF_JSON = ["perf", "--methods", "no-such-method", "--repeats", "1", "--warmup", "0", "--json", "{V}"]


def _with(base: list[str], option: str) -> list[str]:
    """base with the value after `option` replaced by the slot {V} (or `option {V}` appended)."""
    argv = list(base)
    if option in argv:
        argv[argv.index(option) + 1] = "{V}"
        return argv
    return argv + [option, "{V}"]


# Every subcommand (as `bench --help` lists them) with each argument in turn made the slot {V}.
TEMPLATES = {
    "methods": ["methods", "{V}"],
    **{f"run{opt}": _with(RUN, opt) for opt in ("--dataset", "--profile", "--methods", "--seeds", "--grid",
                                                 "--set", "--device", "--results", "--storage", "--workers",
                                                 "--threads", "--from-search")},
    "run--retry-failed--seeds": _with(RUN + ["--retry-failed"], "--seeds"),
    "run--pareto--from-search": RUN + ["--pareto", "--from-search", "{V}"],
    "run--enqueue-only--workers": RUN + ["--enqueue-only", "--workers", "{V}"],  # never both: refused
    "run--set-value": RUN[:6] + ["bn-vae"] + RUN[7:] + ["--set", "bn-vae.gamma={V}"],
    "run-positional": ["run", "{V}"],
    **{f"leaderboard{opt}": _with(BOARD, opt) for opt in ("--dataset", "--profile", "--format", "--output",
                                                         "--methods", "--results", "--storage")},
    "leaderboard--include-stale--with-reported--methods": _with(BOARD + ["--include-stale", "--with-reported"],
                                                                "--methods"),
    **{f"evaluate{opt}": _with(EVAL, opt) for opt in ("--dataset", "--profile", "--methods", "--device",
                                                      "--results", "--storage")},
    "evaluate--retry-failed--methods": _with(EVAL + ["--retry-failed"], "--methods"),
    **{f"search{opt}": _with(SEARCH, opt) for opt in ("--method", "--dataset", "--profile", "--trials", "--objective",
                                                      "--pruner", "--seed", "--workers", "--threads", "--device",
                                                      "--results", "--storage")},
    **{f"search-show{opt}": _with(SEARCH_SHOW, opt) for opt in ("--method", "--format", "--top", "--storage")},
    **{f"worker{opt}": _with(WORKER, opt) for opt in ("--max-runs", "--threads", "--study", "--poll", "--device",
                                                      "--results", "--storage")},
    **{f"status{opt}": ["status", opt, "{V}"] for opt in ("--study", "--format", "--results", "--storage")},
    "store-list--results": ["store", "list", "--results", "{V}"],
    "store-list--storage": ["store", "list", "--storage", "{V}"],
    "store-drop-study": ["store", "drop", "{V}", "--yes"],
    "store-drop--storage": ["store", "drop", "runs/synthetic/smoke", "--yes", "--storage", "{V}"],
    "store-drop--results": ["store", "drop", "runs/synthetic/smoke", "--yes", "--results", "{V}"],
    "store-import-file": ["store", "import", "{V}"],
    "store-import--results": ["store", "import", "{export}", "--results", "{V}"],
    "store-import--storage": ["store", "import", "{export}", "--storage", "{V}"],
    "store-repair--results": ["store", "repair", "--results", "{V}"],
    "store-repair--storage": ["store", "repair", "--storage", "{V}"],
    "store-bad-command": ["store", "{V}"],
    **{f"perf{opt}": _with(PERF, opt) for opt in ("--methods", "--baseline", "--repeats", "--warmup", "--device",
                                                            "--interpolation-pairs", "--profile")},
    "perf--json": PERF_JSON,
    **{f"leaderboard-publish{opt}": _with(PUBLISH, opt) for opt in ("--publish-dir", "--from", "--device")},
    "leaderboard--from": BOARD + ["--from", "{V}"],
    **{f"plot-tradeoff{opt}": _with(PLOT_TRADEOFF, opt) for opt in ("--dataset", "--profile", "--methods", "--out",
                                                                    "--results", "--storage")},
    **{f"plot-latent{opt}": _with(PLOT_LATENT, opt) for opt in ("--dataset", "--profile", "--methods", "--seed",
                                                                "--sentences", "--out", "--device", "--results",
                                                                "--storage")},
    **{f"claims{opt}": _with(CLAIMS, opt) for opt in ("--dataset", "--profile", "--format", "--from", "--results",
                                                      "--storage")},
    "show-key": ["show", "{V}"],
    **{f"show{opt}": _with(SHOW, opt) for opt in ("--format", "--from", "--results", "--storage")},
    "data-list": ["data", "list", "{V}"],
    "data-stats": ["data", "stats", "{V}"],
    "data-fetch": ["data", "fetch", "{V}", "--quiet"],
    "data-fetch--archive": ["data", "fetch", "ptb", "--archive", "{V}", "--quiet"],
    "data-add-name": ["data", "add", "{V}", *DATA_ADD[3:]],
    **{f"data-add{opt}": _with(DATA_ADD, opt) for opt in ("--train", "--valid", "--test", "--folder", "--backbone",
                                                          "--description")},
    "data-add--derive-train-from": ["data", "add", "mine", *DATA_ADD[5:], "--derive-train-from", "{V}"],
    "data-add--labelled--replace--backbone": _with(DATA_ADD + ["--labelled", "--replace"], "--backbone"),
    "data-import-name": ["data", "import", "{V}", "{folder}"],
    "data-import-folder": ["data", "import", "ptb", "{V}"],
    **{f"interpolate{opt}": _with(INTERPOLATE, opt) for opt in ("--dataset", "--profile", "--methods", "--pairs",
                                                                "--seed", "--show", "--device", "--results",
                                                                "--storage")},
    **{f"plot-interpolation{opt}": _with(PLOT_INTERPOLATION, opt) for opt in ("--dataset", "--profile", "--methods",
                                                                              "--out", "--results", "--storage")},
}

def _leaf_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(subcommand words, its parser) of every command that takes no further subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaf_parsers(sub, (*path, name))


def test_the_templates_cover_every_subcommand_and_option_of_the_parser():
    missing = []
    for path, parser in _leaf_parsers(cli.build_parser()):
        mine = [t for t in TEMPLATES.values() if tuple(t[: len(path)]) == path]
        if not mine:
            missing.append(" ".join(path))
        for action in parser._actions:  # hidden options (help=SUPPRESS) are internal or older spellings
            if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help" and not any(
                    option in t for t in mine for option in action.option_strings):
                missing.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert missing == [], "add a template for each to TEMPLATES"


# `data import` and `data fetch` write into the data directory: they get an empty one of their own.
WRITES_DATA = ("data-import", "data-fetch", "data-add")


def _cases():
    for template in TEMPLATES:
        for value_id in VALUES:
            yield pytest.param(template, value_id, id=f"{template}-{value_id}")


class NoTraining:
    """Stands in for bench.runner.Runner: everything before it ran (parsing, data, storage)."""

    def __init__(self, *args, **kwargs):
        pass

    def run_all(self, specs):
        return []


@pytest.fixture()
def fuzz_env(bench_env, monkeypatch):
    """bench_env plus the files the path values name; Runner replaced by NoTraining, a search runs no
    trial and starts no process, a worker keeps this process's threads; the working directory is the
    test's own (a relative --results such as `nan` lands there)."""
    monkeypatch.chdir(bench_env)
    (bench_env / "a-file.txt").write_text("not a folder\n")
    (bench_env / "a-folder").mkdir()
    (bench_env / "a-corpus").mkdir()  # split files `bench data add` takes
    for split, text in TOY.items():
        (bench_env / "a-corpus" / f"{split}.txt").write_bytes(text)
    (bench_env / "an-export.jsonl").write_text(EXPORT)  # what `bench store import` takes
    monkeypatch.setattr(cli, "Runner", NoTraining)
    monkeypatch.setattr(search.Search, "run", lambda self, should_stop=None: Counter())
    monkeypatch.setattr(search_workers, "start_workers", lambda *args, **kwargs: [])
    monkeypatch.setattr(worker, "set_threads", lambda threads: None)
    return {"file": str(bench_env / "a-file.txt"), "folder": str(bench_env / "a-folder"),
            "corpus": str(bench_env / "a-corpus"), "export": str(bench_env / "an-export.jsonl")}


def fill(template: list[str], value: str, paths: dict[str, str]) -> list[str]:
    return [arg.format(V=value.format(**paths), **paths) for arg in template]


def call(argv: list[str], capsys) -> tuple[int, str, str, bool]:
    """bench's exit code, stdout, stderr, and whether argparse exited (SystemExit). Any other
    exception propagates: that is the traceback a user would see."""
    try:
        code, by_argparse = cli.main(argv), False
    except SystemExit as exc:  # argparse: 2 for a usage error, 0 for --help
        code, by_argparse = (exc.code if isinstance(exc.code, int) else 2), True
    captured = capsys.readouterr()
    return code, captured.out, captured.err, by_argparse


@pytest.mark.parametrize(("template", "value_id"), list(_cases()))
def test_every_subcommand_ends_in_0_1_or_2(template, value_id, fuzz_env, tmp_path, monkeypatch, capsys):
    if template.startswith(WRITES_DATA):
        monkeypatch.setenv("BENCH_DATA", str(tmp_path / "own-data"))
    argv = fill(TEMPLATES[template], VALUES[value_id], fuzz_env)
    code, _, err, by_argparse = call(argv, capsys)
    assert code in (0, 1, 2), (argv[:8], code, err[-500:])
    assert "Traceback" not in err
    if code == 2 and not by_argparse:  # a BenchError: it ends in one line naming the fix
        lines = err.splitlines()  # (notes such as a skipped board's may come before it)
        assert lines and lines[-1].startswith("error: "), err[-1000:]
        assert sum(line.startswith("error") for line in lines) == 1, err[-1000:]


# --- real processes ---------------------------------------------------------------------------------
SUBPROCESS_CASES = {
    "run-seeds-billion": RUN[:8] + ["0-999999999"] + RUN[9:],
    "run-set-not-a-float": RUN[:6] + ["bn-vae"] + RUN[7:] + ["--set", "bn-vae.gamma=abc"],
    "leaderboard-output-under-file": BOARD + ["--output", "{file}/sub/board.md"],
    "perf-device-unicode": PERF + ["--device", "數據"],
}


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_a_real_process_prints_no_traceback(case, fuzz_env):
    argv = fill(SUBPROCESS_CASES[case], "", fuzz_env)
    proc = subprocess.run([sys.executable, "-m", "vae_collapse_bench", *argv], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode in (0, 1, 2), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1


# --- the pure parsers, driven by hypothesis ----------------------------------------------------------
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
# text that looks like the real thing more often than uniform text would
SEEDISH = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789-, ", max_size=30),
    st.lists(st.integers(0, 2**40).map(str), min_size=1, max_size=4).map(",".join),
    st.tuples(st.integers(0, 10**12), st.integers(0, 10**12)).map(lambda t: f"{t[0]}-{t[1]}"),
)
VALUE = st.one_of(st.text(max_size=30), st.sampled_from(["nan", "inf", "-inf", "1e999", "0", "-0", "4", "1" * 400,
                                                        "default", "1_000", " 2 ", "0x10", "v" * 5000]),
                  st.floats(allow_nan=True).map(str), st.integers(-(10**30), 10**30).map(str))


@FUZZ
@given(SEEDISH)
def test_parse_seeds_returns_seeds_or_a_bench_error(text):
    try:
        seeds = parse_seeds(text)
    except BenchError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 300
        return
    assert 1 <= len(seeds) <= 10_000 and len(set(seeds)) == len(seeds)
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=30),
                          st.builds("{}.{}={}".format, st.sampled_from(registry.names() + ["", "x"]),
                                    st.sampled_from(["gamma", "agg", "m", "lam", "", "x"]), VALUE)),
                max_size=3),
       st.sampled_from(["paper", "default", "", "foo"]))
def test_overrides_expand_to_run_specs_or_a_bench_error(items, grid):
    methods = [registry.get(m) for m in ("bn-vae", "dg-vae", "wae", "vae")]
    try:
        specs = expand(methods, "synthetic", "smoke", grid, [0], parse_overrides(items))
    except BenchError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
        return
    assert specs and all(s.method in {"bn-vae", "dg-vae", "wae", "vae"} for s in specs)


@FUZZ
@given(st.sampled_from(registry.names()), st.dictionaries(st.sampled_from(["gamma", "agg", "m", "lam", "kappa",
                                                                           "beta", "free_bits", "delta", "bank",
                                                                           "max_inner", "window", "pretrain", "zz"]),
                                                          VALUE, max_size=2))
def test_registry_resolve_returns_params_or_a_bench_error(name, overrides):
    spec = registry.get(name)
    try:
        params = spec.resolve(overrides)
    except BenchError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 1000
        return
    assert isinstance(params, spec.cls.Params)


@FUZZ
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(registry.names() + ["all", " ", "λ"]),
                                                max_size=4).map(",".join)))
def test_registry_select_returns_methods_or_a_bench_error(text):
    try:
        chosen = registry.select(text)
    except BenchError as exc:
        assert "\n" not in str(exc)
        return
    assert chosen and all(isinstance(m, registry.MethodSpec) for m in chosen)
