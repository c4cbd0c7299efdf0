"""vae-collapse-bench: a benchmark harness for posterior collapse and holes in text VAEs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vae-collapse-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.3.0"
