"""bench.perf runs and reports (no timing assertions: timings depend on the machine)."""

import math

import pytest

from bench import perf, registry
from bench.config import Backbone


def test_step_rows_ratio_and_dg_term_on_a_tiny_config():
    config = perf.PerfConfig("tiny", Backbone(8, 12, 12, 4), 6)
    rows = perf.time_steps(["vae", "dg-vae"], config, repeats=2, warmup=0, batch=4, vocab=50)
    assert [r["method"] for r in rows] == ["vae", "dg-vae"]
    assert all(r["kind"] == "step" and r["ms_per_step"] > 0 and r["T"] == 6 for r in rows)
    assert rows[0]["x_vae"] == 1.0 and math.isfinite(rows[1]["x_vae"])
    dg = perf.dg_term(batch=8, agg=4, m=4, dim=4, repeats=1)
    assert dg["largest_intermediate_MiB"] == 8 * 4 * 4 * 4 * 4 / 2**20
    assert dg["peak_MiB_measured"] > 0 and dg["ms_fwd_bwd"] > 0
    table = perf.format_table(rows + [dg, {"kind": "skipped", "methods": "nope"}])
    assert "dg-vae" in table and "DG term alone" in table and "skipped: nope" in table


def test_configs_and_unregistered_methods_are_skipped(monkeypatch):
    assert [(c.label, c.seq_len) for c in perf.configs(quick=True)] == [("quick", 11), ("quick", 82)]
    assert len(perf.configs()) == 4 and perf.configs()[-1].backbone == Backbone(128, 512, 512, 32)
    monkeypatch.setattr(perf, "configs", lambda quick: [perf.PerfConfig("tiny", Backbone(8, 12, 12, 4), 5)])
    monkeypatch.setattr(perf, "dg_term", lambda **kw: {"kind": "dg-term"})
    rows = perf.run(repeats=1, warmup=0, methods=("vae", "no-such-method"))
    assert "no-such-method" not in registry.names()
    assert [r.get("method") for r in rows if r["kind"] == "step"] == ["vae"]
    assert rows[-1] == {"kind": "skipped", "methods": "no-such-method"}


@pytest.mark.slow
def test_main_quick(capsys):
    assert perf.main(["--quick", "--repeats", "1", "--warmup", "0"]) == 0
    assert "ms per training step" in capsys.readouterr().out
