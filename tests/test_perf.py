"""bench.perf runs and reports (no timing assertions: timings depend on the machine)."""

import math

import pytest
from vae_collapse_bench.bench import perf
from vae_collapse_bench.bench.config import Backbone


def test_step_rows_ratio_and_regularizer_on_a_tiny_config():
    config = perf.PerfConfig("tiny", Backbone(8, 12, 12, 4), 6)
    rows = perf.time_steps(["vae", "dg-vae"], config, repeats=2, warmup=0, batch=4, vocab=50)
    assert [r["method"] for r in rows] == ["vae", "dg-vae"]
    assert all(r["kind"] == "step" and r["ms_per_step"] > 0 and r["T"] == 6 for r in rows)
    assert rows[0]["ratio"] == 1.0 and math.isfinite(rows[1]["ratio"]) and rows[1]["baseline"] == "vae"
    reg = perf.regularizer_term("dg-vae", batch=8, dim=4, repeats=1)
    assert reg["peak_MiB_measured"] > 0 and reg["ms_fwd_bwd"] > 0
    constant = perf.regularizer_term("vmf-vae", batch=8, dim=4, repeats=1)  # no gradient to take
    assert constant["ms_fwd_bwd"] > 0
    table = perf.format_table(rows + [reg, constant])
    assert "dg-vae" in table and "regularizer alone" in table


def test_configs():
    assert [(c.label, c.seq_len) for c in perf.configs(quick=True)] == [("quick", 11), ("quick", 82)]
    assert len(perf.configs()) == 4 and perf.configs()[-1].backbone == Backbone(128, 512, 512, 32)


def test_unknown_method_is_a_clear_error():
    from vae_collapse_bench.bench.errors import BenchError

    with pytest.raises(BenchError, match="unknown method 'vea'"):
        perf.benchmark("vea")


@pytest.mark.slow
def test_main_quick(capsys):
    from vae_collapse_bench.bench.cli import main

    assert main(["perf", "--methods", "vae,dg-vae", "--quick", "--repeats", "1", "--warmup", "0"]) == 0
    assert "ms per training step" in capsys.readouterr().out


def test_the_profiler_leaves_no_kineto_lines_on_stderr():
    """Kineto writes `USDT:... profiler_start` to file descriptor 2 itself: only a real process shows it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("from vae_collapse_bench.bench import perf; "
            "perf.regularizer_term('vae', batch=8, dim=4, repeats=1); print('measured')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "measured" in done.stdout, done.stderr
    for noise in ("USDT", "profiler_start", "profiler_stop", "SyncActivityProfilerHandler"):
        assert noise not in done.stderr


def test_kineto_quiet_passes_every_other_line_on(capfd):
    import os
    import sys

    with perf.kineto_quiet():
        os.write(2, b"USDT:2026-01-01 12:00:00 1:1 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"STAGE:2026-01-01 12:00:00 1:1 SyncActivityProfilerHandler.cpp:51] Completed Stage: Warm Up\n")
        os.write(2, b"ERROR:2026-01-01 12:00:00 1:1 Something.cpp:1] kept\n")
        print("a warning of our own", file=sys.stderr)
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "Warm Up" not in err
    assert "ERROR:" in err and "a warning of our own" in err


@pytest.mark.parametrize(("device", "message"), [("λ", "unknown --device λ"), ("", "unknown --device"),
                                                 ("meta", "runs on cpu or cuda")])
def test_a_bad_device_is_a_clear_error(device, message):
    from vae_collapse_bench.bench.errors import BenchError

    with pytest.raises(BenchError, match=message):
        perf.benchmark("vae", device=device, repeats=1, warmup=0)


def test_perf_arguments_are_parsed_by_the_one_cli_parser(capsys):
    from vae_collapse_bench.bench.cli import build_parser, main

    args = build_parser().parse_args(["perf", "--methods", "vae", "--repeats", "3", "--quick"])
    assert (args.methods, args.repeats, args.warmup, args.quick) == ("vae", 3, 2, True)
    assert main(["perf", "--repeats", "0"]) == 2 and "--repeats must be >= 1" in capsys.readouterr().err
