"""`bench show` on hand-made records read from an export: the training run and its re-evaluation in
one document, the per-epoch history with the regularizer's logged terms, keys found by prefix."""

import json
from types import SimpleNamespace

import pytest
from vae_collapse_bench.bench import cli
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.export import ExportedStore, export_lines
from vae_collapse_bench.bench.show import find_run, run_document

HISTORY = [{"epoch": 1, "lr": 0.5, "train_loss": 60.5, "train_dg": 1.25, "valid_objective": 58.0, "valid_kl": 2.0},
           {"epoch": 2, "lr": 0.25, "train_loss": 55.0, "train_dg": 0.75, "valid_objective": 57.0, "valid_kl": 3.0}]


def record(number, training_key, eval_key, **extra):
    attrs = {"method": "dg-vae", "setting": "agg=4", "params": {"agg": 4}, "seed": 3, "dataset": "synthetic",
             "profile": "smoke", "training_key": training_key, "eval_key": eval_key, "config_key": "cfg",
             "data_checksum": "abc123", "config": {"profile": "smoke"}, "metrics": {"priorLL": -60.0, "AU": 4.0},
             "eval_sizes": {"N": 64, "D": 8}, "eval_seconds": {"mi": 0.5}, "host": "h", "command": "bench run",
             "versions": {"bench": "0.3.0"}, "torch_threads": 1, **extra}
    return SimpleNamespace(number=number, state=SimpleNamespace(name="COMPLETE"), user_attrs=attrs)


@pytest.fixture()
def export(tmp_path):
    store = ExportedStore("synthetic", "smoke", "cfg", "0.3.0", "x", [
        record(0, "aaaaaa111111", "e0", history=HISTORY, wall_time_s=12.0),
        record(1, "aaaaaa111111", "e1", evaluated_from_trial=0, eval_wall_time_s=2.0),
        record(2, "aaaaaa222222", "e2", history=HISTORY),
    ])
    path = tmp_path / "runs.jsonl"
    path.write_text(export_lines(store, "cfg", "0.3.0"))
    return store, path


def test_one_run_with_its_reevaluation(export):
    store, _ = export
    key, records = find_run([store], "aaaaaa111")
    doc = run_document(key, records)
    assert key == "aaaaaa111111" and [r["trial"] for r in doc["records"]] == [0, 1]
    assert doc["history"] == HISTORY and doc["identity"]["params"] == {"agg": 4}
    assert doc["records"][1]["provenance"]["evaluated_from_trial"] == 0
    with pytest.raises(BenchError, match="ambiguous"):
        find_run([store], "aaaaaa")
    with pytest.raises(BenchError, match="too short"):
        find_run([store], "aaa")


def test_the_command_shows_history_and_provenance(export, capsys):
    _, path = export
    assert cli.main(["show", "aaaaaa2222", "--from", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("per-epoch history"))
    assert lines[header + 1].split() == ["epoch", "lr", "train_dg", "train_loss", "valid_kl", "valid_objective"]
    assert lines[header + 2].split() == ["1", "0.5000", "1.2500", "60.5000", "2.0000", "58.0000"]
    for text in ("dg-vae [agg=4] seed 3 on synthetic / smoke", "data_checksum: abc123", "evaluation sizes: D=8, N=64",
                 "evaluation seconds: mi 0.50", "versions: bench=0.3.0", "command: bench run"):
        assert text in out, text
    assert cli.main(["show", "aaaaaa1111", "--from", str(path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["records"]) == 2 and doc["config"] == {"profile": "smoke"}
    assert cli.main(["show", "aaaaaa1111", "--from", str(path), "--format", "xml"]) == 2
    assert "use text or json" in capsys.readouterr().err
