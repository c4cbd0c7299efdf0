"""`bench perf`'s evaluation records: the evaluator's own code (bench.evaluate, bench.metrics) timed on
random sentences at an untrained model of the baseline method, and the interpolation module's speed.

Per shape: sentences/s of priorLL/postLL (K = 16) and IW-NLL (K = 500); seconds of MI (the paper
profile's draws per datapoint), AU and CU (its quadrature) for N = 10,000 random encodings, D = 32;
greedy-decoding tokens/s and interpolation pairs/s (`bench.interpolate.speed`).
"""

from __future__ import annotations

import math
import time
from dataclasses import fields, replace

import torch
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import PROFILES, Evaluation
from vae_collapse_bench.bench.flops import log_px_z_flops
from vae_collapse_bench.bench.perf_tools import Shape, random_batch, sync

# Evaluation sizes per profile: sentences timed for priorLL/postLL and IW-NLL, interpolation pairs.
# At the Yahoo backbone IW-NLL (K = 500, T 82, V 20,001) costs ~1.7 TFLOP per sentence.
EVAL_SIZES = {"quick": {"ll_sentences": 64, "iw_sentences": 8, "interp_pairs": 100},
              "paper": {"ll_sentences": 256, "iw_sentences": 32, "interp_pairs": 1000},
              "yahoo": {"ll_sentences": 16, "iw_sentences": 2, "interp_pairs": 100}}


def _eval_config(**sizes) -> Evaluation:
    """The paper profile's evaluator with `sizes` replaced and the interpolation curve off (timed on
    its own), whichever of those fields this version's Evaluation has."""
    names = {f.name for f in fields(Evaluation)}
    return replace(PROFILES["paper"].evaluation, **{k: v for k, v in
                                                    {**sizes, "interpolation_pairs": 0}.items() if k in names})


def eval_rows(method: str, shape: Shape, device: torch.device, ll_sentences: int, iw_sentences: int,
              n_encodings: int = 10_000, interp_pairs: int = 0, peak: float = math.nan) -> list[dict]:
    """Evaluation records of an untrained `method` at one shape (module docstring); the likelihoods'
    GFLOP/s count K decoder passes per sentence (`bench.flops.log_px_z_flops`) against the matmul `peak`."""
    from vae_collapse_bench.bench import metrics
    from vae_collapse_bench.bench.data import Split
    from vae_collapse_bench.bench.evaluate import evaluate
    from vae_collapse_bench.bench.posterior import DiagGaussian

    torch.manual_seed(0)
    spec = registry.get(method)
    model = spec.cls(shape.vocab, shape.backbone, spec.resolve()).to(device).eval()
    base = {"kind": "eval", "method": method, "shape": shape.label, "backbone": shape.sizes, "T": shape.seq_len,
            "V": shape.vocab, "device": str(device)}

    def timed(name: str, n: int, **sizes) -> float:
        split = Split("perf", list(random_batch(shape.seq_len, n, shape.vocab, seed=1)))
        return evaluate(model, split, _eval_config(**sizes), seed=0, device=device).timings[name]

    timed("prior_post_ll", 2, ll_samples_per_component=1, iw_samples=2)  # warm-up
    rows = []
    per_sample = log_px_z_flops(model, shape.seq_len)
    for what, name, k, n, sizes in [
        ("priorLL/postLL", "prior_post_ll", 16, ll_sentences, {"ll_samples_per_component": 8, "iw_samples": 2}),
        ("IW-NLL", "iw_nll", 500, iw_sentences, {"ll_samples_per_component": 1, "iw_samples": 500}),
    ]:
        seconds = timed(name, n, batch_size=64, **sizes)
        gflops = n * k * per_sample / seconds / 1e9
        rows.append({**base, "what": what, "K": k, "N": n, "seconds": seconds, "sentences_per_s": n / seconds,
                     "gflops": gflops, "fraction_of_peak": gflops / peak})

    ev = PROFILES["paper"].evaluation
    gen = torch.Generator(device=device).manual_seed(0)
    d = shape.backbone.latent_dim
    loc = torch.randn(n_encodings, d, generator=gen, device=device)
    logvar = -2 * torch.rand(n_encodings, d, generator=gen, device=device)
    q = DiagGaussian(loc, logvar)
    for what, fn, detail in [
        ("MI", lambda: metrics.mutual_information(q, n_samples=ev.mi_samples, generator=gen),
         f"{ev.mi_samples} draws each"),
        ("AU", lambda: metrics.active_units(q.mean, ev.au_threshold), ""),
        ("CU", lambda: metrics.consistent_units(loc, q.std, ev.cu_threshold, ev.cu_grid_points, ev.cu_grid_limit),
         f"{ev.cu_grid_points:,}-point quadrature"),
    ]:
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        rows.append({**base, "what": what, "N": n_encodings, "D": d, "detail": detail,
                     "seconds": time.perf_counter() - start})
    if interp_pairs:
        rows += interpolation_rows(method, shape, device, interp_pairs, base)
    return rows


def interpolation_rows(method: str, shape: Shape, device: torch.device, pairs: int, base: dict) -> list[dict]:
    """Greedy decoding and interpolation of an untrained `method` (bench.interpolate.speed)."""
    from vae_collapse_bench.bench.interpolate import speed

    r = speed(method, n_pairs=pairs, backbone=shape.backbone, vocab=shape.vocab, words=shape.seq_len - 2,
              device=str(device))
    return [{**base, "what": "greedy decoding", "N": r["rows"], "seconds": r["decode_s"],
             "tokens_per_s": r["tokens_per_s"], "detail": f"{r['row_steps']:,} tokens"},
            {**base, "what": "interpolation", "N": r["pairs"], "seconds": r["total_s"],
             "pairs_per_s": r["pairs"] / r["total_s"], "detail": "11 lambdas, Rouge-L"}]
