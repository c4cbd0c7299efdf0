"""The LSTM backbone's sizes, and the paper backbone of a dataset whose manifest names none.

A module of its own so that the run configuration (bench.config) and the dataset manifests
(bench.data, whose `[backbone]` tables are the one source of the papers' backbones) both use it
without importing each other. bench.config re-exports Backbone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    """LSTM encoder/decoder sizes. latent_dim is D of the paper (32 everywhere in the paper)."""

    emb_dim: int = 512
    enc_hidden: int = 1024
    dec_hidden: int = 1024
    latent_dim: int = 32
    dec_dropout_in: float = 0.5
    dec_dropout_out: float = 0.5


# The paper backbone of a dataset without a [backbone] table of its own or of its family
# (bench.data.paper_backbone), e.g. a corpus added by `bench data add` without --backbone.
DEFAULT_PAPER_BACKBONE = Backbone(256, 256, 256, latent_dim=32)

__all__ = ["Backbone", "DEFAULT_PAPER_BACKBONE"]
