"""The harness: data, backbone, trainer, evaluator, run store, reports. Installed as
`vae_collapse_bench.bench` (see vae_collapse_bench/__init__.py for why)."""

from vae_collapse_bench import __version__

__all__ = ["__version__"]
