"""Length-bucketed batches: every batch holds sentences of one exact length, so nothing is padded
(design.md §6)."""

from __future__ import annotations

import torch
from vae_collapse_bench.bench.data.corpus import Split
from vae_collapse_bench.bench.errors import BenchError


def length_batch_indices(lengths: list[int], batch_size: int,
                         generator: torch.Generator | None = None) -> list[list[int]]:
    """Indices grouped by exact length, each group cut into chunks of at most batch_size.

    Without a generator: by length, then index. With one: each group's order is shuffled, then the
    order of all chunks; only torch.randperm(..., generator=generator) is drawn, so the result is a
    function of the generator's state.
    """
    if batch_size < 1:
        raise BenchError(f"batch size must be at least 1, got {batch_size}")
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(n, []).append(i)
    chunks: list[list[int]] = []
    for n in sorted(groups):
        idx = groups[n]
        if generator is not None:
            idx = [idx[j] for j in torch.randperm(len(idx), generator=generator).tolist()]
        chunks.extend(idx[k:k + batch_size] for k in range(0, len(idx), batch_size))
    if generator is not None:
        chunks = [chunks[j] for j in torch.randperm(len(chunks), generator=generator).tolist()]
    return chunks


def length_batches(split: Split, batch_size: int,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Batches [B, T] of sentences of one exact length T: no padding anywhere (design.md §6)."""
    lengths = [len(s) for s in split.sentences]
    return [torch.stack([split.sentences[i] for i in chunk])
            for chunk in length_batch_indices(lengths, batch_size, generator)]
