"""The command line end to end on the smoke profile, and every user error: one line, exit code 2."""

import io
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from vae_collapse_bench.bench.cli import main

METRIC_COLUMNS = ["priorLL", "postLL", "KL", "MI", "AU", "CU", "IW-NLL", "PPL"]


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_run_twice_then_leaderboard(bench_env, capsys):
    argv = ["run", "--methods", "vae", "--dataset", "synthetic", "--profile", "smoke", "--seeds", "0,1", "--quiet"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "2 runs: 2 trained" in out
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "all 2 runs cached; nothing trained" in out
    code, out, _ = run(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--format", "md")
    assert code == 0
    header, _, row = out.splitlines()[:3]
    for column in METRIC_COLUMNS + ["n"]:
        assert column in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "vae" and cells[-1] == "2"
    assert all("±" in c for c in cells[2:-1])
    for fmt in ("csv", "json", "latex", "html"):
        code, out, _ = run(capsys, "leaderboard", "--dataset", "synthetic", "--format", fmt)
        assert code == 0 and "vae" in out


def test_methods_lists_every_registered_method_with_its_grid(capsys):
    from vae_collapse_bench.bench import registry

    code, out, _ = run(capsys, "methods")
    first_column = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert code == 0 and [name for name in first_column if name] == registry.names()
    assert "gamma: 0.6 0.7" in out and "lam: 1 10 100" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "--methods", "vea", "--dataset", "synthetic"], "unknown method 'vea'; did you mean 'vae'"),
        (["run", "--methods", "vae", "--dataset", "yahooo"], "unknown dataset 'yahooo'; did you mean 'yahoo'"),
        (["run", "--methods", "vae", "--dataset", "synthetic", "--profile", "quik"],
         "unknown profile 'quik'; did you mean 'quick'"),
        (["run", "--methods", "vae", "--dataset", "synthetic", "--seeds", "0,x"], "malformed --seeds '0,x'"),
        (["run", "--methods", "vae", "--dataset", "synthetic", "--profile", "smoke", "--storage", "ftp://x"],
         "malformed --storage"),
        (["run", "--methods", "vae", "--dataset", "synthetic", "--profile", "smoke", "--storage",
          "sqlite:////no/such/dir/bench.db"], "cannot reach storage"),
        (["run", "--methods", "vae", "--dataset", "synthetic", "--set", "vae.beta=1"],
         "unknown hyperparameter of vae 'beta'"),
        (["run", "--methods", "bn-vae", "--dataset", "synthetic", "--set", "bn-vae.gamma=-1"],
         "bad hyperparameter for bn-vae: gamma must be a finite number > 0, got -1"),
        (["run", "--methods", "dg-vae", "--dataset", "synthetic", "--set", "dg-vae.agg=0"],
         "bad hyperparameter for dg-vae: agg must be an integer >= 1 or 'default', got 0"),
        (["run", "--methods", "vae", "--dataset", "synthetic", "--set", "bn-vae.gamma=1"],
         "--set names bn-vae, which --methods does not run"),
        (["run", "--methods", "vae", "--dataset", "ptb", "--profile", "smoke"], "bench data import ptb"),
        (["leaderboard", "--dataset", "synthetic", "--format", "md"], "no runs stored"),
        (["run", "--methods", "vae", "--dataset", "synthetic", "--device", "gpu0"], "unknown --device gpu0"),
        (["data", "import", "ptb", "/no/such/folder"], "/no/such/folder"),
        (["data", "stats", "nope"], "unknown dataset 'nope'"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(bench_env, tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "empty-data")) if "ptb" in argv else None
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_a_user_error_prints_no_traceback_in_a_real_process(bench_env):
    proc = subprocess.run([sys.executable, "-m", "vae_collapse_bench", "run", "--methods", "nope",
                           "--dataset", "synthetic"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: unknown method 'nope'")


def test_import_real_ptb_then_run_smoke(tmp_path, monkeypatch, capsys, shared_datasets):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "results"))
    code, out, _ = run(capsys, "data", "import", "ptb", str(shared_datasets / "ptb"))
    assert code == 0 and "present: train, valid, test" in out
    code, out, err = run(capsys, "run", "--methods", "vae", "--dataset", "ptb", "--profile", "smoke", "--quiet")
    assert code == 0, err
    assert "1 run: 1 trained" in out


def test_import_snli_reports_missing_train(tmp_path, monkeypatch, capsys, shared_datasets):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    code, out, _ = run(capsys, "data", "import", "snli", str(shared_datasets / "snli"))
    assert code == 0
    assert "present: valid, test" in out and "missing: train" in out
    code, out, _ = run(capsys, "data", "list")
    assert code == 0 and "snli-mini" in out


def test_two_processes_on_one_journal_train_every_run_exactly_once(bench_env, capsys):
    cmd = [sys.executable, "-m", "vae_collapse_bench", "run", "--methods", "vae,beta-vae", "--grid", "default",
           "--dataset", "synthetic", "--profile", "smoke", "--seeds", "0,1", "--quiet"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    from vae_collapse_bench.bench.store import RunStore, open_storage

    store = RunStore(open_storage(None, bench_env / "results"), "synthetic", "smoke")
    done = [t for t in store.trials() if t.state.name == "COMPLETE"]
    keys = [t.user_attrs["training_key"] for t in done]
    assert len(keys) == len(set(keys)) == 4  # 2 methods x 2 seeds, each trained by one process only
    assert {t.user_attrs["pid"] for t in done} <= {p.pid for p in procs}
    trained = [int(re.search(r"(\d+) trained", out)[1]) if "trained," in out else 0 for out, _ in outs]
    assert sum(trained) == 4  # the other process skipped or found cached what one trained
    code = main(["leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--format", "csv"])
    board = capsys.readouterr().out
    assert code == 0 and list(pd.read_csv(io.StringIO(board))["n"]) == [2, 2]  # n = seeds, not 2 x seeds


def test_leaderboard_shows_only_the_current_config_and_counts_stale_runs(bench_env, capsys, monkeypatch):
    from dataclasses import replace

    from vae_collapse_bench.bench import config

    argv = ["run", "--methods", "vae", "--dataset", "synthetic", "--profile", "smoke", "--quiet"]
    assert run(capsys, *argv, "--seeds", "0,1")[0] == 0
    smoke = config.PROFILES["smoke"]
    monkeypatch.setitem(config.PROFILES, "smoke", replace(smoke, training=replace(smoke.training, max_epochs=3)))
    assert run(capsys, *argv, "--seeds", "0")[0] == 0
    code, out, _ = run(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("| vae"))
    assert row.rstrip(" |").endswith("1")  # n = 1: the two runs of the older config are not averaged in
    assert "2 runs of an older config are not shown (--include-stale)" in out
    code, out, _ = run(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--include-stale")
    rows = [line for line in out.splitlines() if line.startswith("| vae")]
    assert len(rows) == 2 and any("(config " in r and r.rstrip(" |").endswith("2") for r in rows)


def test_evaluate_command_re_evaluates_stored_checkpoints(bench_env, capsys, monkeypatch):
    from dataclasses import replace

    from vae_collapse_bench.bench import config

    argv = ["--dataset", "synthetic", "--profile", "smoke"]
    assert run(capsys, "run", "--methods", "vae", *argv, "--seeds", "0,1", "--quiet")[0] == 0
    smoke = config.PROFILES["smoke"]
    monkeypatch.setitem(config.PROFILES, "smoke", replace(smoke, evaluation=replace(smoke.evaluation, iw_samples=4)))
    code, out, _ = run(capsys, "evaluate", *argv)
    assert code == 0 and "2 runs: 0 trained, 2 evaluated again from stored checkpoints" in out
    code, out, _ = run(capsys, "leaderboard", *argv)
    assert "| vae" in out and "2 runs of an older config" not in out  # re-evaluated: nothing stale
    code, out, _ = run(capsys, "evaluate", *argv)
    assert "all 2 runs cached" in out


def test_the_board_names_rows_whose_runs_failed(bench_env, capsys):
    argv = ["--dataset", "synthetic", "--profile", "smoke"]
    code, _, _ = run(capsys, "run", "--methods", "vae,dg-vae", "--set", "dg-vae.agg=32", *argv, "--quiet")
    assert code == 1  # a failed run makes the sweep's exit code 1; the other run is stored
    code, out, _ = run(capsys, "leaderboard", *argv)
    assert code == 0 and "| vae" in out and "| dg-vae" not in out
    assert "Not shown: dg-vae [agg=32,m=32]: 1 run failed (no training batch has 32 or more sentences" in out


def test_an_exception_inside_one_run_fails_that_run_and_the_sweep_goes_on(bench_env, capsys, monkeypatch):
    from vae_collapse_bench.methods.vae import BetaVAE

    def broken(self, q, z, x):
        raise RuntimeError("a bug in one method")

    original = BetaVAE.regularizer
    monkeypatch.setattr(BetaVAE, "regularizer", broken)
    argv = ["run", "--methods", "beta-vae,vae", "--grid", "default", "--dataset", "synthetic", "--profile",
            "smoke", "--quiet"]
    code, out, err = run(capsys, *argv)
    assert code == 1 and "2 runs: 1 trained, 0 cached, 1 failed" in out
    assert "training raised RuntimeError at test_cli.py" in err and "a bug in one method" in err
    code, out, err = run(capsys, *argv)  # not retried without --retry-failed
    assert code == 1 and "failed before" in err
    monkeypatch.setattr(BetaVAE, "regularizer", original)  # (undo() would also drop bench_env's variables)
    code, out, _ = run(capsys, *argv, "--retry-failed")
    assert code == 0 and "1 trained, 1 cached" in out


def test_store_list_and_drop(bench_env, capsys):
    assert run(capsys, "run", "--methods", "vae", "--dataset", "synthetic", "--profile", "smoke", "--quiet")[0] == 0
    code, out, _ = run(capsys, "store", "list")
    row = next(line for line in out.splitlines() if "runs/synthetic/smoke" in line)
    assert code == 0 and [c.strip() for c in row.strip("│ ").split("│")][1:] == ["1", "0", "0", "1"]
    code, _, err = run(capsys, "store", "drop", "runs/synthetic/smoke")  # no terminal to confirm on
    assert code == 2 and "confirm with --yes" in err
    code, _, err = run(capsys, "store", "drop", "runs/synthetic/smok", "--yes")
    assert code == 2 and "did you mean 'runs/synthetic/smoke'" in err
    assert run(capsys, "store", "drop", "runs/synthetic/smoke", "--yes")[0] == 0
    assert "no studies stored" in run(capsys, "store", "list")[1]


def test_a_leaderboard_over_several_profiles_is_one_document(bench_env, capsys, monkeypatch):
    import json
    from dataclasses import replace

    from vae_collapse_bench.bench import config

    for profile in ("smoke", "smoke2"):
        monkeypatch.setitem(config.PROFILES, profile, replace(config.PROFILES["smoke"], name=profile))
        assert run(capsys, "run", "--methods", "vae", "--dataset", "synthetic", "--profile", profile,
                   "--quiet")[0] == 0
    monkeypatch.setitem(config.PROFILES, "empty", replace(config.PROFILES["smoke"], name="empty"))
    code, out, err = run(capsys, "leaderboard", "--dataset", "synthetic", "--format", "json")
    document = json.loads(out)  # one JSON document, not two back to back
    assert code == 0 and [b["profile"] for b in document["boards"]] == ["smoke", "smoke2"]
    code, out, _ = run(capsys, "leaderboard", "--dataset", "synthetic", "--format", "csv")
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame["profile"]) == ["smoke", "smoke2"] and out.count("method") == 1
    code, out, _ = run(capsys, "leaderboard", "--dataset", "synthetic", "--format", "html")
    assert out.count("<html") == 1 and out.count("<table") == 2


def test_an_unwritable_results_folder_is_refused_before_any_work(bench_env, capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _, err = run(capsys, "run", "--methods", "vae", "--dataset", "synthetic", "--profile", "smoke",
                       "--results", str(blocker / "results"), "--storage", str(tmp_path / "ok.journal"))
    assert code == 2 and err.startswith("error: cannot write checkpoints under the results directory")
    assert not (tmp_path / "ok.journal").exists()  # refused before the storage was touched


def test_a_diverging_setting_fails_its_run_and_the_sweep_goes_on(bench_env, capsys):
    argv = ["run", "--methods", "bn-vae,vae", "--grid", "default", "--set", "bn-vae.gamma=1e6", "--dataset",
            "synthetic", "--profile", "smoke", "--quiet"]
    code, out, err = run(capsys, *argv)
    assert code == 1 and "2 runs: 1 trained, 0 cached, 1 failed" in out
    assert "bn-vae[gamma=1000000.0] seed 0: failed" in err and "non-finite" in err
    code, out, _ = run(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke")
    assert code == 0 and "Not shown: bn-vae [gamma=1000000.0]: 1 run failed" in out
    code, out, err = run(capsys, "leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--methods", "bn-vae")
    assert code == 2 and "no finished runs of the current config; skipped" in err


def test_plain_output_fits_a_pipe_without_breaking_numbers_or_names(bench_env):
    env = {**os.environ, "COLUMNS": "80"}
    listing = subprocess.run([sys.executable, "-m", "vae_collapse_bench", "data", "list"], capture_output=True,
                             text=True, timeout=120, env=env)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    for name in ("short-yelp-mini", "yahoo-mini", "snli-mini", "synthetic"):
        assert any(line.split()[:1] == [name] for line in lines if line.strip()), name
    cmd = [sys.executable, "-m", "vae_collapse_bench", "run", "--methods", "vae", "--dataset", "synthetic", "--profile",
           "smoke"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    summary = next(line for line in first.stdout.splitlines() if "trained and evaluated" in line)
    assert re.search(r"priorLL -?\d+\.\d\d, postLL -?\d+\.\d\d, KL \d+\.\d\d, MI \d+\.\d\d, AU \d+, CU \d+$",
                     summary), summary  # one line; AU and CU as integers; MI never "-0.00"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert "the run is cached; nothing trained" in again.stdout and "all 1 runs" not in again.stdout
