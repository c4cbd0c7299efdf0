"""The harness: data, backbone, trainer, evaluator, run store, reports. Installed as
`vae_collapse_bench.bench` (see vae_collapse_bench/__init__.py for why)."""

from vae_collapse_bench.bench import runtime

from vae_collapse_bench import __version__

# Before any harness module imports torch: huge pages, glibc thresholds and OpenMP's waiting
# (bench/runtime.py; BENCH_RUNTIME=system leaves all of them alone).
RUNTIME = runtime.configure()

__all__ = ["__version__", "RUNTIME"]
