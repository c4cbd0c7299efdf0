"""vae-collapse-bench, imported as `vae_collapse_bench`.

The repository keeps the layout that tells the architecture (`bench/` the harness, `methods/` one file
per method family, `datasets/` manifests), but the installed code lives under this one import name:
`vae_collapse_bench.bench`, `vae_collapse_bench.methods`. Top-level `bench` and `methods` are generic
names that other installed projects use too; two wheels with a top-level `methods` overwrite each
other's files. pyproject.toml maps the folders into this package (`package-dir`).

A method outside this repository needs only the names below::

    from vae_collapse_bench import GaussianMethod, Reg, register
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vae-collapse-bench")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0.3.0"

# The public API of a method file, imported on first use so that `bench --help` does not load torch.
_API = {
    "Method": "bench.model",
    "GaussianMethod": "bench.model",
    "Reg": "bench.model",
    "LossTerms": "bench.model",
    "StepContext": "bench.model",
    "EpochContext": "bench.model",
    "EpochEnd": "bench.model",
    "descend": "bench.model",
    "Posterior": "bench.posterior",
    "DiagGaussian": "bench.posterior",
    "VonMisesFisher": "bench.posterior",
    "register": "bench.registry",
    "check_number": "bench.registry",
    "check_count": "bench.registry",
    "Backbone": "bench.config",
    "Training": "bench.config",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
