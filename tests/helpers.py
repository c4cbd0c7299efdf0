"""Plain helpers the tests share: a tiny backbone, random framed sentences, a toy corpus and its archive
(fixtures: conftest.py).

pytest imports conftest.py and the test modules in its default `prepend` mode, which puts tests/ (the
conftest's folder) on sys.path, so every test module, tests/methods/ included, can write
`from helpers import BB, sentences`. (bench/perf_tools.py has its own `random_batch` for the benchmark.)
"""

from __future__ import annotations

import io
import tarfile

import torch
from vae_collapse_bench.bench.config import Backbone


def tiny_backbone(latent_dim: int = 4, hidden: int = 12, **changes) -> Backbone:
    """The unit tests' backbone: embeddings of 8, encoder and decoder LSTMs of `hidden` units;
    `changes` sets any other Backbone field (e.g. dec_dropout_in=0.0)."""
    return Backbone(8, hidden, hidden, latent_dim=latent_dim, **changes)


BB = tiny_backbone()


def sentences(b: int = 4, t: int = 6, vocab: int = 20, seed: int = 0) -> torch.Tensor:
    """b sentences of t tokens, [b, t]: <s> (1), t - 2 tokens drawn uniformly from [4, vocab), </s> (2).
    The same seed gives the same tokens whatever the global RNG."""
    x = torch.randint(4, vocab, (b, t), generator=torch.Generator().manual_seed(seed))
    x[:, 0], x[:, -1] = 1, 2
    return x


# A toy corpus's split files, and a .tar.gz of them as an archive would hold them (the data tests)
TOY = {"train": b"the cat sat\na dog ran\nthe dog sat down\ncats run\n", "valid": b"a cat\nthe dog\n",
       "test": b"dogs sat\na cat ran\n"}


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A gzipped tar archive holding `members` (path inside the archive -> content)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()
