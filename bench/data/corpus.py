"""Vocab and Corpus: a dataset's three splits as token-id tensors, with the vocabulary of its train
split and a checksum of its exact text (which identifies the data in every run key), and loading one
from the data directory (load_corpus).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from vae_collapse_bench.bench.data.files import (
    check_split_sizes,
    file_notes,
    generate,
    parse_lines,
    read_lines,
    split_paths,
)
from vae_collapse_bench.bench.data.manifest import (
    SPLITS,
    Manifest,
    derived_from,
    get_manifest,
    import_hint,
    resolve_root,
)
from vae_collapse_bench.bench.errors import BenchError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


@dataclass
class Vocab:
    """Token <-> id. SPECIALS take ids 0..3; unknown tokens encode to UNK."""

    itos: list[str]
    stoi: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.stoi:
            self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return [self.stoi.get(t, UNK) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]

    @classmethod
    def build(cls, sentences_tokens: Iterable[Iterable[str]]) -> Vocab:
        """SPECIALS, then every token in order of first appearance (deterministic, no cut-off).

        A token spelled like a special (PTB's and SNLI's `<unk>`) maps to that special.
        """
        seen = dict.fromkeys(SPECIALS)
        for tokens in sentences_tokens:
            seen.update(dict.fromkeys(tokens))
        return cls(list(seen))


@dataclass
class Split:
    """One split: sentences as 1-D LongTensors [BOS, ids..., EOS]; labels of labelled datasets."""

    name: str
    sentences: list[torch.Tensor]
    labels: list[str] | None = None

    def __len__(self) -> int:
        return len(self.sentences)

    def n_predicted_tokens(self) -> int:
        """Tokens a language model predicts: the words and </s>, not <s> (the PPL denominator)."""
        return sum(len(s) - 1 for s in self.sentences)


@dataclass
class Corpus:
    """A dataset ready for training: vocab of the train split, three Splits, checksum of the text.

    family: its manifest's (the dataset whose paper backbone it uses, bench.data.paper_backbone).
    notes: non-fatal findings about the files it was read from (bench.data.files.file_notes: line
    counts that differ from the manifest's, files changed since they were added), for a run's
    provenance.
    """

    name: str
    family: str
    vocab: Vocab
    splits: dict[str, Split]
    checksum: str
    notes: list[str] = field(default_factory=list)

    def truncated(self, max_train: int | None = None, max_valid: int | None = None,
                  max_test: int | None = None) -> Corpus:
        """The first N sentences of each split (None: all). Vocab and checksum stay those of the
        whole corpus: the truncation is part of the profile, which the run key records separately."""
        limits = {"train": max_train, "valid": max_valid, "test": max_test}
        splits = {}
        for name, split in self.splits.items():
            n = limits.get(name)
            labels = split.labels[:n] if split.labels is not None else None
            splits[name] = Split(name, split.sentences[:n], labels)
        return replace(self, splits=splits)


def encode_split(name: str, tokens: list[list[str]], labels: list[str] | None, vocab: Vocab) -> Split:
    """Encode all sentences into one flat tensor, then view it per sentence (fast for 100k lines)."""
    flat: list[int] = []
    sizes: list[int] = []
    for sentence in tokens:
        flat.append(BOS)
        flat.extend(vocab.encode(sentence))
        flat.append(EOS)
        sizes.append(len(sentence) + 2)
    sentences = list(torch.tensor(flat, dtype=torch.long).split(sizes))
    return Split(name, sentences, labels)


def text_checksum(lines: dict[str, list[str]]) -> str:
    """sha256 over the exact lines (labels included, line ends normalised to "\\n") of train, valid,
    test in this order, each split preceded by `#SPLIT N` so that moving a line between splits or
    swapping splits changes it too."""
    h = hashlib.sha256()
    for split in SPLITS:
        h.update(f"#{split} {len(lines[split])}\n".encode())
        for line in lines[split]:
            h.update(line.encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()


def build_corpus(name: str, family: str, lines: dict[str, list[str]], labelled: bool,
                 sources: dict[str, tuple[Path | str, int]] | None = None) -> Corpus:
    """Corpus from raw lines per split (pure). `sources`: split -> (file, line number of its first
    line), only to name the place of a bad line in errors."""
    sources = sources or {s: (s, 1) for s in SPLITS}
    parsed = {s: parse_lines(lines[s], labelled, *sources[s]) for s in SPLITS}
    vocab = Vocab.build(parsed["train"][0])
    splits = {s: encode_split(s, tokens, labels, vocab) for s, (tokens, labels) in parsed.items()}
    return Corpus(name, family, vocab, splits, text_checksum(lines))


# ---------------------------------------------------------------------------------------- loading


def _missing_error(m: Manifest, root: Path, split: str, path: Path) -> BenchError:
    base = get_manifest(m.base, root) if m.base else m
    if m.base:
        return BenchError(
            f"dataset {m.name!r} is derived from {base.name!r}, whose {m.derive[split].split} split is "
            f"missing ({path}); {import_hint(base, m.derive[split].split)}"
        )
    if not any(p.is_file() for p in split_paths(m, root).values()):
        return BenchError(f"dataset {m.name!r} is not in {root}; {import_hint(m)}")
    minis = derived_from(m.name, root)
    alt = f", or use {' / '.join(minis)}" if minis else ""
    return BenchError(
        f"dataset {m.name!r} has no {split} split ({path} is missing); {import_hint(m, split)}{alt}"
    )


def corpus_lines(m: Manifest, root: Path) -> tuple[dict[str, list[str]], dict[str, tuple[Path, int]]]:
    """Raw lines per split, and per split its file and the line number of its first line."""
    if m.generator:
        generate(m, root)
    paths = split_paths(m, root)
    for s in SPLITS:
        if not paths[s].is_file():
            raise _missing_error(m, root, s, paths[s])
    cache: dict[Path, list[str]] = {}
    lines, where = {}, {}
    for s in SPLITS:
        if paths[s] not in cache:  # snli-mini reads snli's valid split for two of its splits
            cache[paths[s]] = read_lines(paths[s])
        all_lines = cache[paths[s]]
        if not m.derive:
            lines[s], where[s] = all_lines, (paths[s], 1)
            continue
        take = m.derive[s]
        stop = len(all_lines) if take.stop is None else take.stop
        if stop > len(all_lines):
            of = f"the complete {m.base} {take.split} split" if m.base else f"a larger {take.split} file"
            raise BenchError(
                f"dataset {m.name!r} takes lines {take.start + 1}-{stop} of {paths[s]}, which has only "
                f"{len(all_lines)}; import {of}"
            )
        lines[s], where[s] = all_lines[take.start:stop], (paths[s], take.start + 1)
        if not lines[s]:
            raise BenchError(f"dataset {m.name!r}: split {s} (lines {take.start + 1}-{stop} of {paths[s]}) is empty")
    return lines, where


def load_corpus(name: str, root: Path | None = None) -> Corpus:
    """The named dataset as a Corpus (synthetic: generated and cached on first use).

    Derived datasets read their base dataset's files, so `bench data import snli FOLDER` is all
    snli-mini needs. Errors name the fix: unknown dataset, not imported, missing split, bad lines,
    a split too small for a run (check_split_sizes). Corpus.notes: file_notes.
    """
    m = get_manifest(name, root)
    root = resolve_root(root)
    lines, where = corpus_lines(m, root)
    labelled = get_manifest(m.base, root).labelled if m.base else m.labelled  # the files are the base's
    corpus = build_corpus(m.name, m.family, lines, labelled, where)
    check_split_sizes(
        m.name, {s: [len(t) - 2 for t in corpus.splits[s].sentences] for s in SPLITS},
        {s: _place(m, s, where[s][0], len(lines[s])) for s in SPLITS},
        {s: _size_fix(m, s) for s in SPLITS},
    )
    corpus.notes = file_notes(m, root)
    return corpus


def corpus_checksum(name: str, root: Path | None = None) -> str:
    """`load_corpus(name).checksum` from the lines alone, without parsing, building the vocabulary or
    encoding (what a leaderboard needs to know which runs are of the data present here)."""
    m = get_manifest(name, root)
    return text_checksum(corpus_lines(m, resolve_root(root))[0])


def _place(m: Manifest, split: str, path: Path | str, n: int) -> str:
    """Where a split's lines are: its file, or for a derived split the range of the source file."""
    if not m.derive:
        return str(path)
    start = m.derive[split].start
    return f"lines {start + 1}-{start + n} of {path}"


def _size_fix(m: Manifest, split: str) -> str:
    if m.generator:
        return f"raise {split} under [generator] in {m.path}"
    if m.base:
        return f"import the complete {m.base} {m.derive[split].split} split"
    if m.derive:
        return (f"add it again with other files or another --derive-train-from "
                f"(`bench data add {m.name} ... --replace`)")
    return f"import a larger {split} split (`bench data import {m.name} FOLDER`)"
