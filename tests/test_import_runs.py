"""`bench store import`: which records of an export enter a storage, what a second import adds
(nothing), how a run stored on both sides is compared, bad files refused whole, and, end to end on a
smoke run, a sweep that goes on from an imported board without retraining what it holds."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from optuna.trial import TrialState
from vae_collapse_bench.bench import cli
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.export import ExportedStore, export_lines, read_export
from vae_collapse_bench.bench.import_runs import IMPORTED_FROM, import_runs, metric_differences
from vae_collapse_bench.bench.store import RunStore, open_storage


def record(number, state, method, seed, priorLL=-30.0, **attrs):
    key = f"{method}-{seed}"
    a = {"method": method, "setting": "-", "seed": seed, "training_key": key, "eval_key": key + "-e",
         "config_key": "cfg", **attrs}
    if state == "COMPLETE":
        a["metrics"] = {"priorLL": priorLL, "postLL": -25.0, "MI": 1.5}
    return SimpleNamespace(number=number, state=SimpleNamespace(name=state), user_attrs=a)


def export_of(*records, dataset="synthetic", profile="hand") -> ExportedStore:
    return ExportedStore(dataset, profile, "cfg", "0.0", "board/runs.jsonl", list(records))


def store_at(tmp_path, dataset="synthetic", profile="hand") -> RunStore:
    return RunStore(open_storage(None, tmp_path), dataset, profile)


def test_finished_runs_and_failures_for_good_enter_once(tmp_path):
    export = export_of(
        record(0, "COMPLETE", "vae", 0, priorLL=-31.0),
        record(1, "COMPLETE", "vae", 1, priorLL=-32.0),
        record(2, "FAIL", "bn-vae", 0, diverged=True, fail_reason="training diverged at epoch 2"),
        record(3, "FAIL", "dg-vae", 0, diverged=False, epoch=3, fail_reason="worker process died"),  # interrupted
        record(4, "FAIL", "fb-vae", 0, diverged=True, fail_reason="NaN"),
        record(5, "COMPLETE", "fb-vae", 0),  # retried and finished: supersedes record 4
    )
    store = store_at(tmp_path)
    report = import_runs(export, store)
    assert (report.finished, report.failed, report.present, report.left_out) == (3, 1, 1, 1)
    done = store.trials((TrialState.COMPLETE,))
    assert sorted(t.value for t in done) == [-32.0, -31.0, -30.0]  # the value is priorLL, as bench run stores it
    assert all(t.user_attrs[IMPORTED_FROM] == "board/runs.jsonl" for t in store.trials())
    assert store.evaluated("vae-0-e").user_attrs["metrics"]["priorLL"] == -31.0
    assert store.failed("bn-vae-0", "bn-vae-0-e") is not None  # `bench run` leaves it alone, as before
    assert store.interrupted("dg-vae-0") is None

    again = import_runs(export, store)  # a second import adds nothing
    assert (again.finished, again.failed, len(again.reproduced), again.present) == (0, 0, 3, 2)
    assert len(store.trials()) == 4
    assert "0 finished and 0 failed runs added" in again.lines()[0]


def test_a_run_stored_on_both_sides_is_compared_and_the_stored_record_kept(tmp_path):
    store = store_at(tmp_path)
    import_runs(export_of(record(0, "COMPLETE", "vae", 0, priorLL=-31.0)), store)
    other = export_of(record(0, "COMPLETE", "vae", 0, priorLL=-31.5), record(1, "COMPLETE", "vae", 1))
    report = import_runs(other, store)
    assert report.finished == 1 and report.reproduced == []
    assert [(m.label, m.metrics) for m in report.mismatched] == [("vae seed 0", {"priorLL": (-31.0, -31.5)})]
    assert "vae seed 0: priorLL -31 here, -31.5 in the file" in "\n".join(report.lines())
    assert store.evaluated("vae-0-e").user_attrs["metrics"]["priorLL"] == -31.0


def test_metric_differences_are_exact_and_nan_equals_nan():
    nan = float("nan")
    assert metric_differences({"a": 1.0, "b": nan}, {"a": 1.0, "b": nan}) == {}
    assert metric_differences({"a": 1.0}, {"a": 1.0 + 1e-15, "c": 2.0}) == {"a": (1.0, 1.0 + 1e-15), "c": (None, 2.0)}


def test_bad_records_and_other_studies_import_nothing(tmp_path):
    store = store_at(tmp_path)
    broken = record(1, "COMPLETE", "vae", 1)
    del broken.user_attrs["metrics"]["priorLL"]
    with pytest.raises(BenchError, match="record 1 is finished but has no finite priorLL among its metrics; nothing"):
        import_runs(export_of(record(0, "COMPLETE", "vae", 0), broken), store)
    no_key = record(0, "COMPLETE", "vae", 0)
    del no_key.user_attrs["eval_key"]
    with pytest.raises(BenchError, match="lacks 'eval_key'"):
        import_runs(export_of(no_key), store)
    with pytest.raises(BenchError, match="holds snli / hand, not the study synthetic / hand"):
        import_runs(export_of(record(0, "COMPLETE", "vae", 0), dataset="snli"), store)
    assert store.trials() == []


def test_the_cli_refuses_a_file_that_is_not_an_export_before_importing_any(bench_env, capsys, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(export_lines(export_of(record(0, "COMPLETE", "vae", 0)), "cfg", "0.0"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{}\n")
    assert cli.main(["store", "import", str(good), str(bad)]) == 2
    assert "bad.jsonl is not a runs export" in capsys.readouterr().err
    assert cli.main(["store", "import", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read the runs export" in capsys.readouterr().err
    assert cli.main(["store", "list"]) == 0 and "no studies stored" in capsys.readouterr().out


def test_a_sweep_goes_on_from_an_imported_board(bench_env, capsys, tmp_path):
    """Machine A runs and publishes; machine B (another results folder) imports the board's export,
    then asks for the same run and one more: the imported run is not trained again, and B's board
    shows both."""
    run = ["run", "--dataset", "synthetic", "--profile", "smoke", "--quiet", "--methods", "vae"]
    assert cli.main([*run, "--seeds", "0", "--results", str(tmp_path / "a")]) == 0
    assert cli.main(["leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--publish",
                     "--results", str(tmp_path / "a"), "--publish-dir", str(tmp_path / "boards")]) == 0
    export = tmp_path / "boards" / "synthetic" / "smoke" / "runs.jsonl"
    capsys.readouterr()

    b = ["--results", str(tmp_path / "b")]
    assert cli.main(["store", "import", str(export), *b]) == 0
    assert "runs/synthetic/smoke: 1 finished and 0 failed run added" in capsys.readouterr().out
    assert cli.main([*run, "--seeds", "0,1", *b]) == 0
    out = capsys.readouterr()
    assert "seed 0: cached" in out.out + out.err and "seed 1: trained" in out.out + out.err
    assert not (tmp_path / "b" / "checkpoints").exists() or len(list((tmp_path / "b" / "checkpoints").iterdir())) == 1

    shutil.rmtree(tmp_path / "a" / "checkpoints")  # machine A's folder is out of reach from B
    assert cli.main(["evaluate", "--dataset", "synthetic", "--profile", "smoke", *b]) == 0
    out = capsys.readouterr()
    assert "1 stored run(s) have no checkpoint that can be reached from here" in out.err  # seed 0: not retrained
    assert "seed 1: cached" in out.out + out.err

    # the run done on both sides reproduces exactly (same seed, same machine, same thread count)
    assert cli.main(["store", "import", str(export), "--results", str(tmp_path / "a")]) == 0
    assert ("1 run(s) were stored here already: 1 with the same metrics, 0 with other metrics (the stored record "
            "is kept)") in capsys.readouterr().out

    store = RunStore(open_storage(None, tmp_path / "b"), "synthetic", "smoke")
    seeds = sorted((t.user_attrs["seed"], IMPORTED_FROM in t.user_attrs) for t in store.trials((TrialState.COMPLETE,)))
    assert seeds == [(0, True), (1, False)]
    republished = export_lines(store, "cfg", "0.0").splitlines()[1:]
    assert [json.loads(line)["user_attrs"].get(IMPORTED_FROM) for line in republished] == [str(export), None]
    original = read_export(export).records[0].user_attrs
    assert store.evaluated(original["eval_key"]).user_attrs["metrics"] == original["metrics"]
