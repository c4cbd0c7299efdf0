"""bench perf and the speed paths it measures: the loss layout, the FLOP count, the fast CU and MI
kernels against their exact forms, the records and the report (no timing assertions: timings depend
on the machine)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from vae_collapse_bench.bench import metrics, perf, perf_eval, perf_tools, registry, runtime
from vae_collapse_bench.bench.config import Backbone
from vae_collapse_bench.bench.data import PAD
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.flops import matmul_flops, model_step_flops, step_flops
from vae_collapse_bench.bench.model import sequence_log_prob, token_nll
from vae_collapse_bench.bench.perf_report import format_report

REPO = Path(__file__).resolve().parents[1]
TINY = perf_tools.Shape("tiny", Backbone(8, 12, 12, 4), 6, 50)


# --------------------------------------------------------------------------- the loss layout
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_nll_equals_the_strided_layout_per_token_and_summed_with_padding_masked(dtype):
    gen = torch.Generator().manual_seed(0)
    n, t, v = 5, 7, 31
    logits = (3 * torch.randn(n, t, v, generator=gen)).to(dtype)
    targets = torch.randint(1, v, (n, t), generator=gen)
    targets[0, 4:] = PAD  # a padded row and a padded column
    targets[:, -1] = PAD
    strided = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD, reduction="none")
    ours = token_nll(logits, targets, pad=PAD)
    tol = {"rtol": 1e-6, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(ours, strided, **tol)
    assert (ours[targets == PAD] == 0).all() and (ours[targets != PAD] > 0).all()
    torch.testing.assert_close(ours.sum(), F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD,
                                                           reduction="sum"), **tol)
    # by hand: -log softmax at the target, over the unpadded tokens only
    by_hand = -(logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0] * (targets != PAD))
    torch.testing.assert_close(ours, by_hand, **tol)
    # and the gradients of the summed loss
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    token_nll(a, targets, pad=PAD).sum().backward()
    F.cross_entropy(b.transpose(1, 2), targets, ignore_index=PAD, reduction="sum").backward()
    torch.testing.assert_close(a.grad, b.grad, **tol)


def test_token_nll_counts_every_target_without_a_pad():
    gen = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(3, 4, 9, generator=gen), torch.randint(0, 9, (3, 4), generator=gen)
    targets[0, 0] = PAD  # a word spelled `<pad>` still counts when batches are never padded
    torch.testing.assert_close(token_nll(logits, targets),
                               F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"))


def test_sequence_log_prob_keeps_its_value_on_the_contiguous_layout():
    gen = torch.Generator().manual_seed(2)
    words, codes = torch.randn(11, 11, generator=gen), torch.randn(4, 11, generator=gen)

    def logits(inputs, z):  # a toy decoder: [N, T'] tokens and [N, D] codes -> [N, T', V]
        return F.one_hot(inputs, 11).float() @ words + (z @ codes)[:, None, :]

    x = torch.randint(1, 11, (3, 6), generator=gen)
    z = torch.randn(2, 3, 4, generator=gen)
    out = logits(x[:, :-1].repeat(2, 1), z.reshape(6, 4))
    strided = -F.cross_entropy(out.transpose(1, 2), x[:, 1:].repeat(2, 1), reduction="none").sum(-1).view(2, 3)
    torch.testing.assert_close(sequence_log_prob(logits, x, z), strided)
    torch.testing.assert_close(sequence_log_prob(logits, x, z, max_rows=4), strided)


def test_blocked_projection_without_gradients_equals_the_whole(monkeypatch):
    from vae_collapse_bench.bench import model as model_module

    gen = torch.Generator().manual_seed(6)
    project = torch.nn.Linear(8, 37, bias=False)
    features, targets = torch.randn(5, 7, 8, generator=gen), torch.randint(0, 37, (5, 7), generator=gen)
    whole = token_nll(project(features), targets)
    assert torch.equal(model_module.projected_nll(features, targets, project), whole)  # gradients: one block
    monkeypatch.setattr(model_module, "LOGIT_BLOCK", 37 * 3)  # blocks of max(3, F = 8) = 8 tokens
    with torch.no_grad():
        torch.testing.assert_close(model_module.projected_nll(features, targets, project), whole)
        vae = registry.get("vae").cls(37, Backbone(8, 12, 8, 4)).eval()
        x = torch.randint(1, 37, (3, 6), generator=gen)
        z = torch.randn(4, 3, 4, generator=gen)
        by_logits = sequence_log_prob(vae.decoder_logits, x, z)
        torch.testing.assert_close(vae.log_px_z(x, z), by_logits)
        torch.testing.assert_close(vae.log_px_z(x, z, max_rows=5), by_logits)


# --------------------------------------------------------------------------- FLOPs
def test_step_flops_by_hand():
    # B 2, T 3 (T' 2), V 5, E 4, H_e 6, H_d 7, D 2 (C 2, F 7, P 4):
    f = step_flops(2, 3, 5, 4, 6, 7, 2)
    assert f.embedding == 2 * 3 * 4 + 2 * 2 * 4 == 40
    assert f.encoder_lstm == 2 * 6 * 4 * 6 * (4 + 6) == 2880
    assert f.decoder_lstm == 2 * 4 * 4 * 7 * (4 + 2 + 7) == 2912
    assert f.output_projection == 2 * 4 * 7 * 5 == 280
    assert f.latent_layers == 2 * 2 * 6 * 4 + 2 * 2 * 2 * 7 == 152
    assert f.forward == 6264 and f.total == 3 * 6264
    assert math.isclose(sum(f.shares().values()), 1.0)
    assert matmul_flops(2, 3, 4) == 48


def test_step_flops_at_the_yahoo_backbone_matches_the_issues_yardstick():
    # issue #11: the public code's 4.35 s per step ran at about 120 GFLOP/s, i.e. ~522 GFLOP per step
    total = step_flops(32, 82, 20_001, 512, 1024, 1024, 32).total
    assert total == 517_483_610_112 and abs(total / (4.35 * 120e9) - 1) < 0.02


def test_log_px_z_flops_by_hand():
    from vae_collapse_bench.bench.flops import log_px_z_flops

    vae = registry.get("vae").cls(5, Backbone(4, 6, 7, 2))  # V 5, E 4, H_e 6, H_d 7, D 2; T 3 (T' 2)
    assert log_px_z_flops(vae, 3) == 2 * 2 * 4 * 7 * (4 + 2 + 7) + 2 * 2 * 7 * 5 + 2 * 2 * 7 == 1624


def test_model_step_flops_reads_the_methods_own_widths():
    bb = Backbone(8, 12, 12, 4)
    vae = registry.get("vae").cls(50, bb)
    assert model_step_flops(vae, 3, 6) == step_flops(3, 6, 50, 8, 12, 12, 4)
    skip = registry.get("skip-vae").cls(50, bb)  # the projection reads [h ; z]
    assert model_step_flops(skip, 3, 6).output_projection == 2 * 3 * 5 * (12 + 4) * 50
    with pytest.raises(ValueError):
        step_flops(1, 1, 5, 4, 6, 7, 2)


# --------------------------------------------------------------------------- CU and MI fast paths
def test_log_agg_grid_equals_the_exact_broadcast():
    gen = torch.Generator().manual_seed(3)
    n, d = 40, 6
    loc = torch.randn(n, d, generator=gen, dtype=torch.float64)
    std = 0.2 + torch.rand(n, d, generator=gen, dtype=torch.float64)
    loc[:, 1], std[:, 1] = 9.5, 0.05  # q_agg underflows far from 9.5: those rows go to log space
    std[:, 2] = 1e-7  # the expansion would round too coarsely: the exact path
    std[0, 3] = 0.0  # degenerate: the exact path, non-finite as before
    z = torch.linspace(-10, 10, 401, dtype=torch.float64)
    exact = metrics._log_agg_1d(z[:, None], loc, std, 7)
    fast = metrics._log_agg_grid(z, loc, std, 7)
    assert torch.equal(torch.isfinite(fast), torch.isfinite(exact))
    ok = torch.isfinite(exact)
    torch.testing.assert_close(fast[ok], exact[ok], rtol=1e-12, atol=1e-9)
    assert (exact[:, 1] < -1000).any()  # the underflowing rows were exercised
    for blocks in (1, 7):  # block size changes nothing
        metrics_blocks = metrics.GRID_BLOCK_ELEMENTS
        try:
            metrics.GRID_BLOCK_ELEMENTS = blocks
            again = metrics._log_agg_grid(z, loc, std, 7)
        finally:
            metrics.GRID_BLOCK_ELEMENTS = metrics_blocks
        torch.testing.assert_close(again[ok], fast[ok], rtol=1e-11, atol=1e-11)


def test_log_prob_cross_one_product_equals_per_pair_log_prob():
    from vae_collapse_bench.bench.posterior import DiagGaussian

    gen = torch.Generator().manual_seed(4)
    f64 = torch.float64
    q = DiagGaussian(torch.randn(30, 5, generator=gen, dtype=f64), -3 * torch.rand(30, 5, generator=gen, dtype=f64))
    z = torch.randn(17, 5, generator=gen, dtype=f64)
    per_pair = q.log_prob(z[:, None].expand(17, 30, 5))
    torch.testing.assert_close(q.log_prob_cross(z), per_pair, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("logvar", [0.0, -50.0, 40.0])  # plain; exp overflows; exp underflows
def test_mutual_information_sums_exponentials_like_logsumexp(logvar):
    from vae_collapse_bench.bench.posterior import DiagGaussian

    gen = torch.Generator().manual_seed(7)
    f64 = torch.float64
    loc = torch.randn(20, 32, generator=gen, dtype=f64)
    lv = torch.full((20, 32), logvar, dtype=f64) + 0.5 * torch.rand(20, 32, generator=gen, dtype=f64)
    q = DiagGaussian(loc, lv)
    mi = metrics.mutual_information(q, n_samples=3, chunk_size=7, generator=torch.Generator().manual_seed(1))
    z = q.rsample(3, generator=torch.Generator().manual_seed(1))  # the same draws, by hand
    own = q.log_prob(z).double().mean()
    cross = torch.logsumexp(q.log_prob_cross(z.reshape(-1, 32)), dim=1).mean() - math.log(20)
    assert mi == pytest.approx(float(own - cross), rel=1e-12, abs=1e-9)
    assert math.isfinite(mi)


# --------------------------------------------------------------------------- records
def test_training_records_carry_the_fields_scripts_compare():
    rows = perf.time_steps(["vae", "dg-vae"], TINY, repeats=2, warmup=0, batch=4, peak=10.0)
    assert [r["method"] for r in rows] == ["vae", "dg-vae"]
    for r in rows:
        assert r["kind"] == "train" and r["backbone"] == "8/12/12/4" and (r["T"], r["V"]) == (6, 50)
        assert r["ms_per_step"] > 0 and r["tokens_per_s"] == pytest.approx(4 * 5 / (r["ms_per_step"] / 1e3))
        assert r["gflops"] == pytest.approx(r["flops_per_step"] / (r["ms_per_step"] / 1e3) / 1e9)
        assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / 10.0)
        assert r["peak_MiB"] >= 0 and r["memory_measured_by"] and r["faults_per_step"] >= 0
    assert rows[0]["ratio"] == 1.0 and math.isfinite(rows[1]["ratio"]) and rows[1]["baseline"] == "vae"


def test_a_method_far_slower_than_the_baseline_is_not_timed_at_larger_shapes(monkeypatch):
    monkeypatch.setattr(perf, "MAX_RATIO", 0.0)  # every method counts as slow after the first shape
    two = [TINY, perf_tools.Shape("tiny2", Backbone(8, 12, 12, 4), 7, 50)]
    rows = perf.train_records(["vae", "dg-vae"], two, 1, 0, torch.device("cpu"), "vae", 1.0, batch=4)
    assert [(r["shape"], r["method"], "skipped" in r) for r in rows] == [
        ("tiny", "vae", False), ("tiny", "dg-vae", False), ("tiny2", "vae", False), ("tiny2", "dg-vae", True)]
    named = perf.train_records(["vae", "dg-vae"], two, 1, 0, torch.device("cpu"), "vae", 1.0, ["dg-vae"], batch=4)
    assert not any("skipped" in r for r in named)
    assert "not timed: dg-vae" in format_report(rows)


def test_variant_rows_time_the_step_under_autocast():
    rows = perf.variant_rows("vae", TINY, 1, 0, torch.device("cpu"), 1.0)  # cuDNN only on a GPU
    assert [(r["kind"], r["variant"], r["method"]) for r in rows] == [("variant", "bf16 autocast", "vae")]
    train = perf.time_steps(["vae"], TINY, repeats=1, warmup=0, batch=32)
    assert "tiny, bf16 autocast" in format_report(train + rows)


def test_peak_memory_sees_a_step_that_allocates():
    mib, how = perf_tools.peak_memory(lambda: torch.ones(16 * 2**20).sum(), torch.device("cpu"))  # 64 MiB
    assert "ru_maxrss" in how
    if "reset" in how:  # the high-water mark could be reset: the step's own peak
        assert 32 <= mib <= 200


def test_matmul_rows_and_the_peak():
    rows = perf_tools.matmul_rows([TINY], torch.device("cpu"))
    assert [r["label"] for r in rows] == ["peak", "projection tiny"]
    assert rows[1]["m"] == 32 * 5 and rows[1]["k"] == 12 and rows[1]["n"] == 50
    assert perf_tools.peak_gflops(rows) == rows[0]["gflops"] > 0


def test_eval_rows_time_the_evaluator_and_the_latent_statistics():
    rows = perf_eval.eval_rows("bn-vae", TINY, torch.device("cpu"), ll_sentences=3, iw_sentences=2, n_encodings=50,
                               interp_pairs=2)
    what = [r["what"] for r in rows]
    assert what == ["priorLL/postLL", "IW-NLL", "MI", "AU", "CU", "greedy decoding", "interpolation"]
    assert {r["method"] for r in rows} == {"bn-vae"}  # the method timed is the caller's (bench perf: its baseline)
    assert rows[0]["K"] == 16 and rows[1]["K"] == 500 and rows[2]["N"] == 50
    assert rows[0]["gflops"] > 0 and math.isnan(rows[0]["fraction_of_peak"])  # no peak given
    assert all(r["seconds"] > 0 for r in rows[:5]) and rows[0]["sentences_per_s"] > 0


def test_the_report_has_every_section():
    records = [perf_tools.machine_record(torch.device("cpu"), "quick")]
    records += perf_tools.matmul_rows([TINY], torch.device("cpu"))
    records += perf.time_steps(["vae", "dg-vae"], TINY, repeats=1, warmup=0, batch=4,
                               peak=perf_tools.peak_gflops(records))
    records += perf_eval.eval_rows("vae", TINY, torch.device("cpu"), 2, 2, n_encodings=20)
    records.append(perf.regularizer_term("dg-vae", batch=8, dim=4, repeats=1))
    records.append({"kind": "process", "setting": "BENCH_RUNTIME=system", "error": "boom"})
    text = format_report(records)
    for part in ("matmul", "training at tiny", "x vae", "of peak", "evaluation at tiny", "untrained vae", "IW-NLL",
                 "CU", "ratios", "regularizer alone", "BENCH_RUNTIME=system: failed (boom)"):
        assert part in text, part
    json.dumps(records)  # every record is JSON


def test_regularizer_term():
    reg = perf.regularizer_term("dg-vae", batch=8, dim=4, repeats=1)
    assert reg["peak_MiB_measured"] > 0 and reg["ms_fwd_bwd"] > 0
    constant = perf.regularizer_term("vmf-vae", batch=8, dim=4, repeats=1)  # no gradient to take
    assert constant["ms_fwd_bwd"] > 0


def test_the_demo_profile_keeps_the_quick_schedule_shape():
    from vae_collapse_bench.bench.config import PROFILES

    demo, quick = PROFILES["demo"], PROFILES["quick"]
    assert demo.backbone == quick.backbone and demo.training.batch_size == quick.training.batch_size
    for name in ("lr", "anneal_epochs", "decay_from_epoch", "patience"):
        assert getattr(demo.training, name) == getattr(quick.training, name), name
    # dg-vae escapes collapse at epochs 19-24 of this schedule: the demo must run past them
    assert demo.training.max_epochs >= 28


def test_shapes():
    assert [s.label for s in perf_tools.shapes("quick")] == ["quick", "snli"]
    paper = perf_tools.shapes("paper")
    assert [(s.label, s.sizes, s.seq_len, s.vocab) for s in paper[1:]] == [
        ("snli", "128/512/512/32", 11, 10_000), ("yahoo", "512/1024/1024/32", 82, 20_001)]


# --------------------------------------------------------------------------- the command
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": "vea"}, "unknown method 'vea'"),
    ({"device": "λ"}, "unknown --device λ"), ({"device": ""}, "unknown --device"),
    ({"device": "meta"}, "runs on cpu or cuda"),
    ({"json_path": "/no/such/folder/p.json"}, "does not exist"), ({"json_path": ""}, "give a file name"),
    ({"repeats": 0}, "--repeats must be >= 1"), ({"profile": "smoke"}, "bench perf knows quick and paper"),
    ({"interpolation_pairs": -1}, "--interpolation-pairs"),
])
def test_refusals_come_before_any_timing(kwargs, message):
    with pytest.raises(BenchError, match=message):
        perf.benchmark(**{"methods": "vae", **kwargs})


@pytest.mark.parametrize(("methods", "baseline", "first"), [
    ("all", None, "vae"), ("bn-vae,vae", None, "vae"), ("fb-vae,bn-vae", None, "fb-vae"),
    ("vae,bn-vae", "bn-vae", "bn-vae"),
])
def test_the_baseline_is_the_papers_first_family_when_timed_else_the_first_named(methods, baseline, first,
                                                                                  monkeypatch):
    seen = []

    def run(names, profile, repeats, warmup, device, chosen, *rest):
        seen.append((names, chosen))
        return [{"kind": "nothing timed"}]

    monkeypatch.setattr(perf, "run", run)
    perf.benchmark(methods, baseline)
    (names, chosen), = seen
    assert chosen == first and names[0] == first


def test_perf_arguments_are_parsed_by_the_one_cli_parser(capsys):
    from vae_collapse_bench.bench.cli import build_parser, main

    args = build_parser().parse_args(["perf", "--methods", "vae", "--repeats", "3", "--profile", "paper",
                                      "--json", "p.json"])
    assert (args.methods, args.repeats, args.warmup, args.profile, args.json) == ("vae", 3, 2, "paper", "p.json")
    assert build_parser().parse_args(["perf", "--quick"]).quick  # the older spelling still parses
    assert main(["perf", "--repeats", "0"]) == 2 and "--repeats must be >= 1" in capsys.readouterr().err


def test_runtime_settings_in_a_fresh_process():
    code = ("import os; from vae_collapse_bench.bench import RUNTIME, runtime; print(RUNTIME); "
            "print(os.environ.get('THP_MEM_ALLOC_ENABLE')); print(os.environ.get('OMP_WAIT_POLICY')); "
            "print(runtime.faults_per_mib())")
    env = {k: v for k, v in os.environ.items()
           if k not in ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY") and not k.startswith("MALLOC_")}
    outs = {}
    for setting in runtime.SETTINGS + ("tuned-but-mine",):
        extra = {runtime.ENV: setting}
        if setting == "tuned-but-mine":  # what the user set wins
            extra = {runtime.ENV: "tuned", "OMP_WAIT_POLICY": "ACTIVE", "THP_MEM_ALLOC_ENABLE": "0"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                              env={**env, **extra, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr
        outs[setting] = done.stdout.split("\n")
    assert outs["tuned"][0].startswith("tuned (THP_MEM_ALLOC_ENABLE=1, glibc mmap 32 MiB")
    assert outs["tuned"][0].endswith("OMP_WAIT_POLICY=PASSIVE)") and outs["tuned"][1:3] == ["1", "PASSIVE"]
    assert outs["memory"][1:3] == ["1", "None"] and "OMP_WAIT_POLICY" not in outs["memory"][0]
    assert outs["system"][0].startswith("system") and outs["system"][1:3] == ["None", "None"]
    assert outs["tuned-but-mine"][1:3] == ["0", "ACTIVE"]
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[never]" not in thp.read_text():  # huge pages: far fewer faults per MiB
        assert float(outs["tuned"][3]) < float(outs["system"][3]) / 4


def test_process_rows_run_each_setting_in_a_fresh_process(monkeypatch):
    quick = perf_tools.shapes("quick")[0]
    settings = {"BENCH_RUNTIME=system": ({runtime.ENV: "system"}, ("THP_MEM_ALLOC_ENABLE", "OMP_WAIT_POLICY"))}
    monkeypatch.setattr(perf, "process_settings", lambda: settings)
    ok = perf.process_rows("vae", quick, 1, 0, "quick")[0]
    assert ok["kind"] == "process" and ok["setting"] == "BENCH_RUNTIME=system"
    assert ok["runtime"].startswith("system") and ok["ms_per_step"] > 0 and ok["faults_per_mib"] > 0
    (missing,) = perf.process_rows("vae", perf_tools.Shape("nowhere", quick.backbone, 6, 50), 1, 0, "quick")
    assert "error" in missing  # a child that fails (no shape "nowhere" there) is a record, not an exception


@pytest.mark.slow
def test_main_quick_end_to_end(capsys, tmp_path):
    from vae_collapse_bench.bench.cli import main

    path = tmp_path / "perf.json"
    assert main(["perf", "--methods", "vae,dg-vae", "--repeats", "1", "--warmup", "0", "--json", str(path)]) == 0
    assert "training at snli" in capsys.readouterr().out
    records = json.loads(path.read_text())
    assert {r["kind"] for r in records} >= {"machine", "matmul", "train", "eval", "regularizer"}


def test_the_profiler_leaves_no_kineto_lines_on_stderr():
    """Kineto writes `USDT:... profiler_start` to file descriptor 2 itself: only a real process shows it."""
    code = ("from vae_collapse_bench.bench import perf; "
            "perf.regularizer_term('vae', batch=8, dim=4, repeats=1); print('measured')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "measured" in done.stdout, done.stderr
    for noise in ("USDT", "profiler_start", "profiler_stop", "SyncActivityProfilerHandler"):
        assert noise not in done.stderr


def test_kineto_quiet_passes_every_other_line_on(capfd):
    with perf_tools.kineto_quiet():
        os.write(2, b"USDT:2026-01-01 12:00:00 1:1 SyncActivityProfilerHandler.cpp:52] profiler_start\n")
        os.write(2, b"STAGE:2026-01-01 12:00:00 1:1 SyncActivityProfilerHandler.cpp:51] Completed Stage: Warm Up\n")
        os.write(2, b"ERROR:2026-01-01 12:00:00 1:1 Something.cpp:1] kept\n")
        print("a warning of our own", file=sys.stderr)
    err = capfd.readouterr().err
    assert "profiler_start" not in err and "Warm Up" not in err
    assert "ERROR:" in err and "a warning of our own" in err
