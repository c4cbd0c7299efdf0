"""Datasets: manifests, fetch/import with integrity checks, Vocab, Corpus, length-bucketed batches.

Every dataset is described by one TOML manifest, `datasets/NAME.toml` (see `Manifest`; an installed
wheel carries them as bench/datasets/*.toml, see bundled_manifest_dir). Its files live
in the data dir (`$BENCH_DATA`, default ~/.cache/vae-collapse-bench) as

    root/NAME/{train,valid,test}.txt      one sentence per line, tokens separated by whitespace;
                                          labelled datasets: `label<TAB>text`

put there by `fetch` (download, checked by sha256 or line counts) or `import_folder` (a folder in any
of the lineage's layouts). Three kinds of manifest:

- plain: the files above;
- derived (`base = "snli"` + `[derive.SPLIT]`): line ranges of the base dataset's files, e.g. the
  *-mini variants that make train out of the part of a split that is public;
- generated (`[generator]`): the synthetic corpus, made from a seed on first use (bench.synthetic).

A Corpus is the three splits as token-id tensors with the vocabulary of its train split and a
checksum of its exact text, which identifies the data in every run key.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import io
import os
import shutil
import statistics
import tarfile
import tempfile
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from bench import synthetic
from bench.errors import BenchError, plain, unknown
from bench.paths import is_dir, is_file

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
SPLITS = ("train", "valid", "test")
FAMILIES = ("yahoo", "yelp", "short-yelp", "snli", "ptb", "synthetic")
DOWNLOAD_DIR = ".download"
BOM = "\ufeff"
# The smallest splits a run can use. Training batches hold sentences of one exact length
# (length_batches), and a batch needs 2 sentences; the evaluation compares test sentences with each
# other (active units: a variance over the test set), so it needs 2; model selection needs 1.
MIN_SENTENCES = {"train": 2, "valid": 1, "test": 2}
MIN_TRAIN_SAME_LENGTH = 2


# --------------------------------------------------------------------------------------------- places


def data_dir() -> Path:
    """Where datasets live: $BENCH_DATA, else ~/.cache/vae-collapse-bench."""
    env = os.environ.get("BENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vae-collapse-bench"


def _root(root: Path | str | None) -> Path:
    """The data directory a call works in: the given one, else data_dir(). An existing path that is not
    a folder is an error (naming BENCH_DATA); a missing one is created by the first write."""
    path = Path(root) if root is not None else data_dir()
    if path.exists() and not path.is_dir():
        raise BenchError(f"the data directory {path} is not a folder; set BENCH_DATA to a folder "
                         "(it is created when missing)")
    return path


def _unwritable(root: Path, exc: OSError) -> BenchError:
    """The error of a failed write into the data directory: it names the directory, why, and the fix."""
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) or (root.exists() and not root.is_dir()):
        why = "a part of that path is a file, not a folder"
    return BenchError(f"cannot write to the data directory {root} ({why}); set BENCH_DATA to a writable folder")


def _mkdir(root: Path, path: Path) -> None:
    """path.mkdir(parents=True, exist_ok=True) inside the data directory root, failing as a BenchError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _unwritable(root, e) from None


def _staging(root: Path, dest: Path, prefix: str) -> Path:
    """A fresh temp folder inside dest (created, with its parents, when missing): the first write of
    an import or fetch, so an unwritable data directory fails here, before anything else happens."""
    _mkdir(root, dest)
    try:
        return Path(tempfile.mkdtemp(dir=dest, prefix=prefix))
    except OSError as e:
        raise _unwritable(root, e) from None


def _generate(m: Manifest, root: Path) -> None:
    """Make the synthetic corpus in root/NAME unless it is there (all its I/O is writing into root)."""
    try:
        synthetic.ensure(synthetic.GeneratorConfig.from_dict(m.generator), root / m.name)
    except OSError as e:
        raise _unwritable(root, e) from None


def bundled_manifest_dir() -> Path:
    """The manifests that come with the code.

    The repository keeps them in its top-level datasets/ (the layout the README promises). A wheel
    cannot install a top-level folder of data, so pyproject.toml maps datasets/ to the package-data
    folder bench/datasets/: an installed copy finds them there, beside this module. A source tree or
    an editable install has no bench/datasets/ and uses the repository's folder. (Installed, the
    folder above the package is site-packages, whose `datasets` may be another project's package:
    the installed location is therefore tried first.)
    """
    installed = Path(__file__).resolve().parent / "datasets"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[1] / "datasets"


def manifest_dir() -> Path:
    """Where the manifests live: $BENCH_MANIFESTS (tests, private datasets), else bundled_manifest_dir().

    A BENCH_MANIFESTS that is not an existing folder is an error, not an empty list of datasets.
    """
    env = os.environ.get("BENCH_MANIFESTS")
    if not env:
        return bundled_manifest_dir()
    path = Path(env).expanduser()
    if not path.is_dir():
        what = "is not a folder" if path.exists() else "does not exist"
        raise BenchError(f"BENCH_MANIFESTS={env}: {path} {what}; point BENCH_MANIFESTS to the folder of "
                         "dataset manifests (NAME.toml files), or unset it to use the bundled ones")
    return path


# ------------------------------------------------------------------------------------------ manifests


@dataclass(frozen=True)
class PaperStats:
    """A dataset's row of the papers' Table 1: split sizes, vocabulary size, and the mean sentence
    length counting <s> and </s> (hence ~2 more than the mean number of words per line)."""

    train: int
    valid: int
    test: int
    vocab: int
    avg_len: float
    source: str = ""


@dataclass(frozen=True)
class Take:
    """One split of a derived dataset: lines [start, stop) of the base dataset's split `split`."""

    split: str
    start: int = 0
    stop: int | None = None


@dataclass(frozen=True)
class Manifest:
    """One dataset, as written in datasets/NAME.toml.

    name, family (the paper backbone it uses: one of FAMILIES), description, labelled (`label<TAB>text`
    lines). source: where the files come from, in words (papers, repositories, manual downloads).
    url: a direct download of an archive (tar.gz, tgz, zip) or a plain file; "" when there is none.
    archive: its kind when the URL's suffix does not say. sha256: of the download; when "" the
    extracted split files are checked against `lines` instead. members: split -> path inside the
    archive; when empty, the archive's files are matched by `files` names. files: split -> accepted
    file names, in order of preference (used by import and the archive search). lines: split ->
    expected line count. base + derive: a derived dataset's source. generator: the synthetic corpus'
    parameters (bench.synthetic.GeneratorConfig). paper: Table-1 statistics.
    """

    name: str
    family: str
    description: str
    labelled: bool = False
    source: str = ""
    url: str = ""
    archive: str = ""
    sha256: str = ""
    members: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    base: str = ""
    derive: dict[str, Take] = field(default_factory=dict)
    generator: dict = field(default_factory=dict)
    paper: PaperStats | None = None

    @property
    def kind(self) -> str:
        return "generated" if self.generator else "derived" if self.base else "plain"

    @property
    def paper_stats(self) -> dict:
        """The Table-1 row as a dict (train, valid, test, vocab, avg_len, source); {} when none."""
        return {} if self.paper is None else {f.name: getattr(self.paper, f.name) for f in fields(self.paper)}


def parse_manifest(path: Path) -> Manifest:
    """Read and check one manifest; every problem is a BenchError naming the file."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"cannot read dataset manifest {path}: {e}") from None

    def bad(msg: str) -> BenchError:
        return BenchError(f"dataset manifest {path}: {msg}")

    known = {f.name for f in fields(Manifest)}
    extra = sorted(set(table) - known)
    if extra:
        raise bad(f"unknown key(s) {extra}; known: {sorted(known)}")
    for key in ("name", "family", "description"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise bad(f"needs a non-empty string {key!r}")
    if table["name"] != path.stem:
        raise bad(f"name {table['name']!r} must equal the file name {path.stem!r}")
    if not isinstance(table.get("labelled", False), bool):
        raise bad("labelled must be true or false")
    if not all(isinstance(n, int) and n > 0 for n in table.get("lines", {}).values()):
        raise bad("[lines] values must be positive integers")
    if table["family"] not in FAMILIES:
        raise bad(f"family {table['family']!r} is not one of {', '.join(FAMILIES)}")
    for key in ("members", "files", "lines", "derive"):
        unknown_splits = sorted(set(table.get(key, {})) - set(SPLITS))
        if unknown_splits:
            raise bad(f"[{key}] has unknown split(s) {unknown_splits}; splits are {', '.join(SPLITS)}")
    try:
        m = Manifest(
            **{k: v for k, v in table.items() if k not in ("files", "derive", "paper")},
            files={s: tuple(names) for s, names in table.get("files", {}).items()},
            derive={s: Take(**t) for s, t in table.get("derive", {}).items()},
            paper=PaperStats(**table["paper"]) if "paper" in table else None,
        )
    except TypeError as e:
        raise bad(str(e)) from None
    if m.base and set(m.derive) != set(SPLITS):
        raise bad("a derived dataset needs [derive.train], [derive.valid] and [derive.test]")
    for s, take in m.derive.items():
        if take.split not in SPLITS or take.start < 0 or (take.stop is not None and take.stop <= take.start):
            raise bad(f"[derive.{s}] needs split in {SPLITS} and 0 <= start < stop")
    if m.url and not (m.sha256 or len(m.lines) == len(SPLITS)):
        raise bad("a download needs sha256 or the line count of every split ([lines]) to check it")
    if m.generator:
        try:
            synthetic.GeneratorConfig.from_dict(m.generator)
        except ValueError as e:
            raise bad(f"[generator]: {e}") from None
    return m


def manifests() -> dict[str, Manifest]:
    """All manifests of manifest_dir(), keyed by name (sorted)."""
    return {p.stem: parse_manifest(p) for p in sorted(manifest_dir().glob("*.toml"))}


def get_manifest(name: str) -> Manifest:
    path = manifest_dir() / f"{name}.toml"
    if is_file(path):
        return parse_manifest(path)
    raise unknown("dataset", name, sorted(p.stem for p in manifest_dir().glob("*.toml")))


def derived_from(name: str) -> list[str]:
    """Names of the datasets derived from `name` (e.g. snli -> [snli-mini])."""
    return [n for n, m in manifests().items() if m.base == name]


# ------------------------------------------------------------------------------------ reading files


def read_lines(path: Path) -> list[str]:
    """The lines of a corpus file, without their line ends ("\\n" or "\\r\\n").

    Only "\\n" ends a line (str.splitlines would also split at \\x85, \\u2028, ...). A UTF-8 byte
    order mark at the start of the file (Windows editors write one) is dropped, so it never becomes
    part of the first token. Rejects bytes that are not UTF-8, an empty file and empty (or
    whitespace-only) lines, naming file and line.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BenchError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line_no = data.count(b"\n", 0, e.start) + 1
        raise BenchError(
            f"{path}: line {line_no} is not valid UTF-8 (byte {data[e.start]:#04x}); "
            "re-encode the file as UTF-8"
        ) from None
    text = text.removeprefix(BOM)
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final line end
    if not lines:
        raise BenchError(f"{path} is empty; a split needs at least one sentence")
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    for i, line in enumerate(lines, 1):
        if not line.strip():
            raise BenchError(f"{path}: line {i} is empty; remove empty lines (one sentence per line)")
    return lines


def parse_lines(lines: list[str], labelled: bool, path: Path | str,
                first: int = 1) -> tuple[list[list[str]], list[str] | None]:
    """Token lists (whitespace split) and, for labelled data, the labels of `label<TAB>text` lines.

    `first` is the file line number of lines[0] (a derived split is a slice of a file).
    """
    if not labelled:
        return [line.split() for line in lines], None
    tokens, labels = [], []
    for i, line in enumerate(lines, first):
        label, tab, text = line.partition("\t")
        if not tab:
            raise BenchError(
                f"{path}: line {i} has no TAB; this dataset is labelled, every line must be `label<TAB>text`"
            )
        if not label.strip() or not text.strip():
            raise BenchError(f"{path}: line {i} needs both a label and text around its TAB (`label<TAB>text`)")
        tokens.append(text.split())
        labels.append(label.strip())
    return tokens, labels


def count_lines(path: Path) -> int:
    """Lines as read_lines counts them (a last line without "\\n" counts), without decoding."""
    data = path.read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


# ----------------------------------------------------------------------------------- vocab & corpus


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

    notes: non-fatal findings about the files it was read from (line_count_notes: line counts that
    differ from the manifest's), for a run's provenance.
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


def split_paths(m: Manifest, root: Path) -> dict[str, Path]:
    """Where each split's lines come from (derived datasets: the base dataset's file)."""
    if m.base:
        return {s: root / m.base / f"{m.derive[s].split}.txt" for s in SPLITS}
    return {s: root / m.name / f"{s}.txt" for s in SPLITS}


def _import_hint(m: Manifest, split: str | None = None) -> str:
    """`run bench data import NAME FOLDER (FOLDER holding a.train.txt, ...)`, one name per split."""
    names = ", ".join(m.files.get(s, (f"{s}.txt",))[0] for s in ([split] if split else SPLITS))
    fetch = f"`bench data fetch {m.name}` or " if m.url else ""
    return (f"run {fetch}`bench data import {m.name} FOLDER` (FOLDER holding {names}, "
            f"or another name its manifest lists under [files])")


def _missing_error(m: Manifest, root: Path, split: str, path: Path) -> BenchError:
    base = get_manifest(m.base) if m.base else m
    present = [s for s in SPLITS if (root / base.name / f"{s}.txt").is_file()]
    if m.base:
        return BenchError(
            f"dataset {m.name!r} is derived from {base.name!r}, whose {m.derive[split].split} split is "
            f"missing ({path}); {_import_hint(base, m.derive[split].split)}"
        )
    if not present:
        return BenchError(f"dataset {m.name!r} is not in {root}; {_import_hint(m)}")
    minis = derived_from(m.name)
    alt = f", or use {' / '.join(minis)}" if minis else ""
    return BenchError(
        f"dataset {m.name!r} has no {split} split ({path} is missing); {_import_hint(m, split)}{alt}"
    )


def corpus_lines(m: Manifest, root: Path) -> tuple[dict[str, list[str]], dict[str, tuple[Path, int]]]:
    """Raw lines per split, and per split its file and the line number of its first line."""
    if m.generator:
        _generate(m, root)
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
        if not m.base:
            lines[s], where[s] = all_lines, (paths[s], 1)
            continue
        take = m.derive[s]
        stop = len(all_lines) if take.stop is None else take.stop
        if stop > len(all_lines):
            raise BenchError(
                f"dataset {m.name!r} takes lines {take.start + 1}-{stop} of {paths[s]}, which has only "
                f"{len(all_lines)}; import the complete {m.base} {take.split} split"
            )
        lines[s], where[s] = all_lines[take.start:stop], (paths[s], take.start + 1)
        if not lines[s]:
            raise BenchError(f"dataset {m.name!r}: split {s} (lines {take.start + 1}-{stop} of {paths[s]}) is empty")
    return lines, where


def load_corpus(name: str, root: Path | None = None) -> Corpus:
    """The named dataset as a Corpus (synthetic: generated and cached on first use).

    Derived datasets read their base dataset's files, so `bench data import snli FOLDER` is all
    snli-mini needs. Errors name the fix: unknown dataset, not imported, missing split, bad lines,
    a split too small for a run (check_split_sizes). Corpus.notes: line_count_notes.
    """
    m = get_manifest(name)
    root = _root(root)
    lines, where = corpus_lines(m, root)
    labelled = get_manifest(m.base).labelled if m.base else m.labelled  # the files are the base's
    corpus = build_corpus(m.name, m.family, lines, labelled, where)
    check_split_sizes(
        m.name, {s: [len(t) - 2 for t in corpus.splits[s].sentences] for s in SPLITS},
        {s: _place(m, s, where[s][0], len(lines[s])) for s in SPLITS},
        {s: _size_fix(m, s) for s in SPLITS},
    )
    corpus.notes = line_count_notes(name, root)
    return corpus


def _place(m: Manifest, split: str, path: Path | str, n: int) -> str:
    """Where a split's lines are: its file, or for a derived dataset the range of the base's file."""
    if not m.base:
        return str(path)
    start = m.derive[split].start
    return f"lines {start + 1}-{start + n} of {path}"


def _size_fix(m: Manifest, split: str) -> str:
    if m.generator:
        return f"raise {split} under [generator] in {manifest_dir() / (m.name + '.toml')}"
    if m.base:
        return f"import the complete {m.base} {m.derive[split].split} split"
    return f"import a larger {split} split (`bench data import {m.name} FOLDER`)"


def check_split_sizes(name: str, lengths: dict[str, list[int]], where: dict[str, str] | None = None,
                      fix: dict[str, str] | None = None) -> None:
    """Refuse splits too small for a run: fewer than MIN_SENTENCES sentences, or a train split without
    MIN_TRAIN_SAME_LENGTH sentences of one length (a training batch holds sentences of one exact
    length, so nothing could be trained). lengths: split -> words of each sentence, for the splits
    to check (an import checks those it installs); where, fix: split -> its place and the remedy,
    for the message."""
    for split, sizes in lengths.items():
        at = f" ({where[split]})" if where and split in where else ""
        remedy = f"; {fix[split]}" if fix and split in fix else ""
        need, n = MIN_SENTENCES[split], len(sizes)
        why = {"train": "a training batch holds at least 2 sentences of one exact length",
               "valid": "model selection evaluates it",
               "test": "the evaluation compares test sentences with each other"}[split]
        if n < need:
            raise BenchError(f"dataset {name!r}: the {split} split{at} has {n} sentence{'s' * (n != 1)}, "
                             f"fewer than the {need} a run needs ({why}){remedy}")
        if split == "train" and max(Counter(sizes).values()) < MIN_TRAIN_SAME_LENGTH:
            raise BenchError(
                f"dataset {name!r}: the train split{at} has {n} sentences but no {MIN_TRAIN_SAME_LENGTH} of "
                f"one length; a run needs at least {MIN_TRAIN_SAME_LENGTH} training sentences of one length "
                f"(a training batch holds sentences of one exact length){remedy}"
            )


# ---------------------------------------------------------------------------------------- batches


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


# --------------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class DatasetStatus:
    """What is on disk for a dataset, beside what its manifest promises.

    present/missing: splits whose source file exists or not (derived datasets: the base's files).
    paths: each split's source file. lines: line counts of present splits (derived: of the range
    taken). expected_lines: the manifest's. generated: synthetic (made on first use, so usable even
    when missing). line_mismatches: where a present file's line count differs from its manifest's,
    as {split: (lines, expected)}; a derived dataset also gets its base's, as {"BASE SPLIT": ...}
    (its line ranges can match while the base's files are another release, e.g. a sentence-split
    Yahoo). notes: non-fatal findings in words (the mismatches, see line_count_notes).
    summary: the one-line state `bench data list` shows.
    """

    name: str
    family: str
    kind: str
    description: str
    present: list[str]
    missing: list[str]
    paths: dict[str, Path]
    lines: dict[str, int]
    expected_lines: dict[str, int]
    paper: PaperStats | None
    source: str
    fetchable: bool
    base: str = ""
    generated: bool = False
    notes: list[str] = field(default_factory=list)
    line_mismatches: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """load_corpus can succeed without a fetch or import."""
        return self.generated or not self.missing

    @property
    def summary(self) -> str:
        """present / missing SPLITS / generated on first use, then any line-count mismatch, e.g.
        `present; lines differ from the manifest: valid 46,454 (expects 10,000)`."""
        if self.generated and self.missing:
            state = "generated on first use"
        elif not self.missing:
            state = "present"
        else:
            state = "missing" if not self.present else f"missing {', '.join(self.missing)}"
        if self.line_mismatches:
            state += "; lines differ from the manifest: " + ", ".join(
                f"{where} {n:,} (expects {e:,})" for where, (n, e) in self.line_mismatches.items())
        return state


def _mismatch_note(where: str, n: int, expected: int) -> str:
    return (f"{where}: {n} lines, the manifest expects {expected} (another release or preprocessing? "
            "results on it are not comparable with those on the expected files)")


def _expected_lines(m: Manifest) -> dict[str, int]:
    if m.generator:
        return synthetic.GeneratorConfig.from_dict(m.generator).sizes()
    return dict(m.lines)


def dataset_status(name: str, root: Path | None = None) -> DatasetStatus:
    """What `bench data list/status` shows: files on disk vs the manifest, plus its Table-1 row."""
    m = get_manifest(name)
    root = _root(root)
    paths = split_paths(m, root)
    present = [s for s in SPLITS if paths[s].is_file()]
    lines: dict[str, int] = {}
    for s in present:
        n = count_lines(paths[s])
        if m.base:
            take = m.derive[s]
            n = max(0, min(n, take.stop if take.stop is not None else n) - take.start)
        lines[s] = n
    expected = _expected_lines(m)
    mismatches = {s: (lines[s], expected[s]) for s in present if s in expected and lines[s] != expected[s]}
    if m.base:  # the base's files: the cause, also of a whole split taken (then said once, as the base's)
        base = dataset_status(m.base, root)
        for s, take in m.derive.items():
            if take.stop is None and take.split in base.line_mismatches:
                mismatches.pop(s, None)
        mismatches.update({f"{m.base} {s}": counts for s, counts in base.line_mismatches.items()})
    return DatasetStatus(
        name=m.name, family=m.family, kind=m.kind, description=m.description, present=present,
        missing=[s for s in SPLITS if s not in present], paths=paths, lines=lines,
        expected_lines=expected, paper=m.paper, source=m.source, fetchable=bool(m.url),
        base=m.base, generated=bool(m.generator),
        notes=[_mismatch_note(where, n, e) for where, (n, e) in mismatches.items()],
        line_mismatches=mismatches,
    )


def line_count_notes(name: str, root: Path | None = None) -> list[str]:
    """The line-count mismatches of a dataset's files against its manifest (and, for a derived one,
    its base's), in words: [] when every present file has the expected count. load_corpus puts them
    in Corpus.notes; a run records them as provenance. Counting reads the files, not decoding them."""
    st = dataset_status(name, root)
    return [_mismatch_note(where, n, e) for where, (n, e) in st.line_mismatches.items()]


# ---------------------------------------------------------------------------------------- import


def find_split_files(m: Manifest, folder: Path) -> dict[str, Path]:
    """The first file of each split's accepted names found directly in folder (not in subfolders:
    the lineage keeps subsets like short_yelp.train.1000.txt and debug copies beside the splits)."""
    found = {}
    for s in SPLITS:
        for fname in m.files.get(s, (f"{s}.txt",)):
            if (folder / fname).is_file():
                found[s] = folder / fname
                break
    return found


def _check_file(m: Manifest, path: Path, where: Path | str | None = None) -> list[int]:
    """Validate one split file as load_corpus would, naming it `where` in errors; returns the number
    of words of each of its sentences (labels not counted)."""
    try:
        lines = read_lines(path)
    except BenchError as e:
        raise BenchError(str(e).replace(str(path), str(where)) if where else str(e)) from None
    tokens, _ = parse_lines(lines, m.labelled, where or path)
    return [len(t) for t in tokens]


def _rename_into(staged: dict[str, Path], dest: Path) -> None:
    """Rename staged split files (already inside dest, so on its filesystem) to dest/SPLIT.txt.

    Each rename is atomic: a reader sees the old file or the complete new one, never a part.
    """
    for s, path in staged.items():
        os.replace(path, dest / f"{s}.txt")


def _only_plain(m: Manifest, verb: str) -> None:
    if m.base:
        raise BenchError(
            f"dataset {m.name!r} is derived from {m.base!r}; {verb} that instead "
            f"(`bench data {verb} {m.base}{' FOLDER' if verb == 'import' else ''}`)"
        )
    if m.generator and verb == "import":
        raise BenchError(f"dataset {m.name!r} is generated from a seed on first use; nothing to import")


def import_folder(name: str, folder: Path, root: Path | None = None) -> DatasetStatus:
    """Copy the split files found in folder (any layout of the lineage, see the manifest's [files])
    to root/NAME/{train,valid,test}.txt, after validating all of them.

    A split absent from the folder is reported (DatasetStatus.missing), not an error; a folder with
    none of them is, and so is a split too small for a run (check_split_sizes). Splits imported
    earlier and absent from this folder are kept. A line count that differs from the manifest's is
    accepted with a note (DatasetStatus.notes).
    """
    m = get_manifest(name)
    _only_plain(m, "import")
    root = _root(root)
    folder = Path(folder).expanduser()
    if not is_dir(folder):
        raise BenchError(f"{plain(str(folder))} is not a folder; pass the folder that holds the {name} split files")
    found = find_split_files(m, folder)
    if not found:
        wanted = "; ".join(f"{s}: {' / '.join(m.files.get(s, (f'{s}.txt',)))}" for s in SPLITS)
        raise BenchError(f"{folder} holds none of the {name} split files ({wanted})")
    dest = root / m.name
    staging = _staging(root, dest, ".import-")
    try:
        staged = {s: staging / f"{s}.txt" for s in found}
        lengths = {}
        for s, src in found.items():
            shutil.copyfile(src, staged[s])
            lengths[s] = _check_file(m, staged[s], src)  # check the copy, name the original
        check_split_sizes(name, lengths, {s: str(src) for s, src in found.items()},
                          {s: f"import a folder with a larger {s} split" for s in found})
        _rename_into(staged, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataset_status(name, root)


# ----------------------------------------------------------------------------------------- fetch


Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def _download_error(url: str, name: str, why: object) -> BenchError:
    return BenchError(
        f"cannot download {url}: {why}; check the network and retry (a partial download resumes), "
        f"or download it yourself and run `bench data import {name} FOLDER`"
    )


def _content_range_start(value: str | None) -> int | None:
    """The first byte of `Content-Range: bytes START-END/TOTAL`, or None."""
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def download(url: str, part: Path, name: str, progress: Progress | None = None,
             timeout: float = 60.0) -> Path:
    """Download url into `part`, resuming from the bytes already there.

    With N bytes on disk, asks for `Range: bytes=N-` (plus If-Range with the validator the server
    gave before, so a changed file restarts instead of splicing). 206 from N: append. 200: the
    server ignored the range (or the file changed): start over. 416: the part is already complete.
    A short body (connection dropped) keeps what arrived and asks to run again.
    """
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BenchError(f"cannot write to {part.parent} ({e.strerror or e}); set BENCH_DATA to a writable "
                         "folder") from None
    meta = part.with_name(part.name + ".validator")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "vae-collapse-bench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
        if meta.exists():
            request.add_header("If-Range", meta.read_text(encoding="utf-8").strip())
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:
            return part
        raise _download_error(url, name, f"HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise _download_error(url, name, getattr(e, "reason", e)) from None
    with response:
        if response.status == 206 and _content_range_start(response.headers.get("Content-Range")) == have:
            mode = "ab"
        elif response.status == 206:  # a range we did not ask for: unusable, start over next time
            part.unlink(missing_ok=True)
            raise _download_error(url, name, "the server answered a different byte range")
        else:
            mode, have = "wb", 0
            validator = response.headers.get("ETag") or response.headers.get("Last-Modified")
            if validator:
                meta.write_text(validator, encoding="utf-8")
            else:
                meta.unlink(missing_ok=True)
        length = response.headers.get("Content-Length")
        total = have + int(length) if length and length.isdigit() else None
        broken = False
        with open(part, mode) as out:
            try:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    have += len(chunk)
                    if progress:
                        progress(have, total)
            except http.client.IncompleteRead as e:  # keep what arrived: the next run resumes there
                out.write(e.partial)
                have, broken = have + len(e.partial), True
            except (OSError, http.client.HTTPException):
                broken = True
    # http.client returns a short body without an error when the peer closes early: compare sizes.
    if broken or (total is not None and have < total):
        of = f" of {total}" if total is not None else ""
        raise _download_error(url, name, f"the connection closed after {have}{of} bytes "
                                         f"(kept in {part}; run the same command again to resume)")
    return part


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def archive_kind(m: Manifest, filename: str) -> str:
    if m.archive:
        return {"tgz": "tar.gz"}.get(m.archive, m.archive)
    lower = filename.lower()
    if lower.endswith((".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")):
        return "tar.gz"
    return "zip" if lower.endswith(".zip") else "plain"


def _norm(member: str) -> str:
    """Archive member name without leading ./ or / (tar files often store ./dir/file)."""
    name = member.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _pick_members(m: Manifest, names: list[str]) -> dict[str, str]:
    """split -> archive member: the manifest's [members], else a file with an accepted name
    (preferring the manifest's order, then the shallowest path)."""
    if m.members:
        wanted = {s: _norm(p) for s, p in m.members.items()}
        return {s: n for s, p in wanted.items() for n in names if _norm(n) == p}
    picked = {}
    for s in SPLITS:
        for fname in m.files.get(s, (f"{s}.txt",)):
            hits = sorted((n for n in names if n.rsplit("/", 1)[-1] == fname), key=lambda n: (n.count("/"), n))
            if hits:
                picked[s] = hits[0]
                break
    return picked


def extract_splits(m: Manifest, archive: Path, kind: str, out: Path) -> dict[str, Path]:
    """Write each split's member to out/SPLIT.txt (only those members are read: nothing else of
    the archive touches the disk, so its paths cannot escape `out`)."""
    written = {}
    if kind == "plain":
        names = [archive.name.removesuffix(".part")]
        picked = _pick_members(m, names)
        for s in picked:
            shutil.copyfile(archive, out / f"{s}.txt")
            written[s] = out / f"{s}.txt"
        return written
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
                for s, member in _pick_members(m, names).items():
                    (out / f"{s}.txt").write_bytes(zf.read(member))
                    written[s] = out / f"{s}.txt"
        else:
            with tarfile.open(archive, "r:*") as tf:
                files = {i.name: i for i in tf.getmembers() if i.isfile()}
                for s, member in _pick_members(m, list(files)).items():
                    with tf.extractfile(files[member]) as src, open(out / f"{s}.txt", "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written[s] = out / f"{s}.txt"
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, io.UnsupportedOperation) as e:
        raise BenchError(
            f"{archive} is not a readable {kind} archive ({e}); delete it and run the fetch again"
        ) from None
    return written


def fetch(name: str, root: Path | None = None, progress: Progress | None = None) -> DatasetStatus:
    """Download, check and install a dataset (`bench data fetch NAME`).

    Already complete: nothing is downloaded. Synthetic: generated. The download resumes from
    root/NAME/.download/FILE.part; it is checked by the manifest's sha256, else by the expected line
    count of every extracted split; the splits are validated like an import, then renamed into place.
    On success the download folder is removed.
    """
    m = get_manifest(name)
    _only_plain(m, "fetch")
    root = _root(root)
    if m.generator:
        _generate(m, root)
        return dataset_status(name, root)
    status = dataset_status(name, root)
    if not status.missing:
        return status
    if not m.url:
        raise BenchError(
            f"dataset {name!r} has no direct download (where to get it: `source` in "
            f"{manifest_dir() / (name + '.toml')}); get the files by hand and {_import_hint(m)}"
        )
    dest = root / m.name
    _mkdir(root, dest / DOWNLOAD_DIR)
    filename = Path(urllib.parse.urlparse(m.url).path).name or f"{m.name}.download"
    part = download(m.url, dest / DOWNLOAD_DIR / f"{filename}.part", m.name, progress)
    retry = f"delete {part} and run `bench data fetch {name}` again, or use `bench data import {name} FOLDER`"
    if m.sha256:
        got = sha256_file(part)
        if got != m.sha256.lower():
            raise BenchError(f"checksum mismatch for {m.url}: expected sha256 {m.sha256}, got {got}; {retry}")
    staging = _staging(root, dest, ".fetch-")
    try:
        written = extract_splits(m, part, archive_kind(m, filename), staging)
        absent = [s for s in SPLITS if s not in written]
        if absent:
            raise BenchError(f"{m.url} lacks the {', '.join(absent)} split(s) named in {name}.toml; {retry}")
        lengths = {}
        for s, path in written.items():
            lengths[s] = _check_file(m, path, f"{m.url} ({s} split)")
            n = len(lengths[s])
            if not m.sha256 and n != m.lines[s]:
                raise BenchError(
                    f"{m.url}: the {s} split has {n} lines, expected {m.lines[s]}; the download is not "
                    f"the expected release; {retry}"
                )
        check_split_sizes(name, lengths, {s: f"{m.url}, {s} split" for s in written},
                          {s: "the download is not a usable release" for s in written})
        _rename_into(written, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(dest / DOWNLOAD_DIR, ignore_errors=True)
    return dataset_status(name, root)


# ----------------------------------------------------------------------------------------- stats


def split_stats(split: Split) -> dict:
    """sentences; tokens (the words of the text, without <s> </s>); predicted_tokens (words + </s>,
    the PPL denominator); mean, population standard deviation, min and max of the length counting
    <s> and </s> (Table 1's convention)."""
    lengths = [len(s) for s in split.sentences]
    return {
        "sentences": len(lengths),
        "tokens": sum(lengths) - 2 * len(lengths),
        "predicted_tokens": split.n_predicted_tokens(),
        "mean_length": statistics.fmean(lengths) if lengths else 0.0,
        "std_length": statistics.pstdev(lengths) if lengths else 0.0,
        "min_length": min(lengths, default=0),
        "max_length": max(lengths, default=0),
    }


def corpus_stats(name: str, root: Path | None = None) -> dict:
    """Statistics of a loaded corpus beside the paper's: per split (split_stats), the vocabulary size
    (train tokens + the 4 specials), the checksum, notes (line_count_notes); for synthetic also the
    generator's MI bounds."""
    m = get_manifest(name)
    root = _root(root)
    corpus = load_corpus(name, root)
    stats = {
        "name": corpus.name,
        "family": corpus.family,
        "checksum": corpus.checksum,
        "vocab_size": len(corpus.vocab),
        "splits": {s: split_stats(corpus.splits[s]) for s in SPLITS},
        "paper": m.paper_stats or None,
        "notes": corpus.notes,
    }
    if m.generator:
        info = synthetic.read_info(root / m.name) or {}
        stats["generator"] = {
            "mutual_information_nats": info.get("mutual_information_nats"),
            "config": info.get("config"),
        }
    return stats


__all__ = [
    "PAD", "BOS", "EOS", "UNK", "SPECIALS", "SPLITS", "FAMILIES",
    "data_dir", "manifest_dir", "Manifest", "PaperStats", "Take", "manifests", "get_manifest",
    "Vocab", "Split", "Corpus", "load_corpus", "build_corpus", "length_batches", "length_batch_indices",
    "DatasetStatus", "dataset_status", "fetch", "import_folder", "corpus_stats", "split_stats",
    "read_lines", "parse_lines", "text_checksum", "bundled_manifest_dir", "line_count_notes",
    "check_split_sizes", "MIN_SENTENCES", "MIN_TRAIN_SAME_LENGTH",
]
