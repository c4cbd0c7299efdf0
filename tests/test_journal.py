"""A damaged journal never bricks the results: torn tails, garbage inside, `bench store repair`."""

import json
import random
import shutil
import subprocess
import sys

import pytest
import torch
from vae_collapse_bench.bench.cli import main
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.journal import PLACEHOLDER_REASON, open_journal, repair, scan

SWEEP = ["run", "--methods", "vae,beta-vae", "--grid", "default", "--dataset", "synthetic", "--profile", "smoke",
         "--quiet"]


def board(capsys, results):
    capsys.readouterr()
    assert main(["leaderboard", "--dataset", "synthetic", "--profile", "smoke", "--format", "csv",
                 "--results", str(results)]) == 0
    # the board's reproduce command names its own results folder; the rest must match byte for byte
    return capsys.readouterr().out.replace(str(results), "RESULTS")


@pytest.fixture(scope="module")
def undamaged(synthetic_root, tmp_path_factory):
    """A finished two-run sweep, made by a process that has ended (as after a crash or a reboot)."""
    results = tmp_path_factory.mktemp("undamaged")
    # the same intra-op thread count as this process, whose reruns must reproduce the numbers exactly
    env = {"BENCH_DATA": str(synthetic_root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    done = subprocess.run([sys.executable, "-m", "vae_collapse_bench", *SWEEP, "--results", str(results)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return results


def copy_of(undamaged, tmp_path):
    target = tmp_path / "results"
    shutil.copytree(undamaged, target)
    return target, target / "optuna.journal"


def test_scan_finds_torn_tails_and_bad_lines():
    whole = scan(b'{"op_code":0}\n{"op_code":4}\n')
    assert whole.bad_lines == [] and whole.torn_at is None
    torn = scan(b'{"op_code":0}\n{"op_co')
    assert torn.torn_at == 14 and torn.bad_lines == []
    bad = scan(b'{"op_code":0}\nxx\xff\n{"op_code":4}\n[1]\n{"b":2}\n')
    assert bad.bad_lines == [(14, 2), (32, 4), (36, 5)]  # not JSON; not an object; no op_code


def test_a_torn_tail_at_any_offset_is_set_aside_and_a_rerun_restores_the_board(undamaged, tmp_path, capsys,
                                                                              bench_env):
    expected = board(capsys, undamaged)
    size = (undamaged / "optuna.journal").stat().st_size
    for i, cut in enumerate(sorted(random.Random(0).sample(range(1, size), 10))):
        results, journal = copy_of(undamaged, tmp_path / str(i))
        with open(journal, "r+b") as f:
            f.truncate(cut)
        assert main([*SWEEP, "--results", str(results)]) == 0
        warned = capsys.readouterr().err
        torn = list(results.glob("optuna.journal.torn-*"))
        if journal.read_bytes()[:cut].endswith(b"\n") and not torn:
            assert "torn record" not in warned  # the cut fell on a record boundary: nothing was torn
        else:
            assert len(torn) == 1 and "torn record" in warned and "moved to" in warned
        assert board(capsys, results) == expected, f"cut at byte {cut}"


def test_garbage_inside_is_refused_with_its_offset_and_repair_keeps_every_complete_record(undamaged, tmp_path,
                                                                                         capsys, bench_env):
    expected = board(capsys, undamaged)
    lines = (undamaged / "optuna.journal").read_bytes().split(b"\n")
    creates = [i for i, line in enumerate(lines[:-1]) if json.loads(line)["op_code"] == 4]
    attrs = [i for i, line in enumerate(lines[:-1]) if json.loads(line)["op_code"] == 8]
    # the second trial's creating record (later records name its id), and a record in the middle
    for case, line_no in enumerate([creates[1], attrs[len(attrs) // 2]]):
        results, journal = copy_of(undamaged, tmp_path / str(case))
        offset = sum(len(line) + 1 for line in lines[:line_no]) + 3
        data = bytearray(journal.read_bytes())
        data[offset:offset + 16] = bytes(random.Random(case).randrange(256) for _ in range(16))
        journal.write_bytes(bytes(data))
        with pytest.raises(BenchError, match=rf"damaged at byte {offset - 3:,} \(line {line_no + 1}\).*bench "
                                             r"store repair"):
            open_journal(journal)
        assert main([*SWEEP, "--results", str(results)]) == 2
        assert "bench store repair" in capsys.readouterr().err
        assert main(["store", "repair", "--results", str(results)]) == 0
        assert "kept" in capsys.readouterr().out and list(results.glob("optuna.journal.damaged-*"))
        assert main([*SWEEP, "--results", str(results)]) == 0
        assert board(capsys, results) == expected, f"damage in line {line_no + 1}"


def test_repair_puts_a_failed_placeholder_where_a_creating_record_was_lost(tmp_path):
    journal = tmp_path / "optuna.journal"
    storage = open_journal(journal)
    import optuna

    study = optuna.create_study(storage=storage, study_name="s")
    for value in (1.0, 2.0, 3.0):
        trial = study.ask()
        trial.set_user_attr("value", value)
        study.tell(trial, value)
    lines = journal.read_bytes().split(b"\n")
    second_create = [i for i, line in enumerate(lines[:-1]) if json.loads(line)["op_code"] == 4][1]
    lines[second_create] = b"#garbage#"
    journal.write_bytes(b"\n".join(lines))
    assert "1 placeholder" in repair(journal)
    trials = optuna.load_study(storage=open_journal(journal), study_name="s").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["fail_reason"] == PLACEHOLDER_REASON
    assert [t.user_attrs.get("value") for t in trials] == [1.0, None, 3.0]  # no record moved to another trial


def test_reading_never_writes(tmp_path, bench_env, capsys):
    missing = tmp_path / "never-made"
    assert main(["leaderboard", "--dataset", "synthetic", "--results", str(missing)]) == 2
    assert "no runs stored" in capsys.readouterr().err and not missing.exists()
    storage = open_journal(missing / "optuna.journal", read_only=True)
    with pytest.raises(BenchError, match="opened for reading only"):
        storage._backend.append_logs([{"op_code": 0}])
    assert not missing.exists()
