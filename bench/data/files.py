"""Corpus files: where a dataset's split files are, reading and validating them, and checking them
against their manifest.

The files of dataset NAME are DATA/NAME/{train,valid,test}.txt: one sentence per line, tokens separated
by whitespace; labelled datasets: `label<TAB>text`. A derived dataset reads line ranges of its base's
files (or of its own: a corpus added with --derive-train-from); the synthetic corpus is generated into
DATA/synthetic on first use. Writing into the data directory fails as one BenchError naming it.
"""

from __future__ import annotations

import errno
import hashlib
import tempfile
from collections import Counter
from pathlib import Path

from vae_collapse_bench.bench import synthetic
from vae_collapse_bench.bench.data.manifest import SPLITS, Manifest, get_manifest
from vae_collapse_bench.bench.errors import BenchError

BOM = "\ufeff"
# The smallest splits a run can use. Training batches hold sentences of one exact length
# (length_batches), and a batch needs 2 sentences; the evaluation compares test sentences with each
# other (active units: a variance over the test set), so it needs 2; model selection needs 1.
MIN_SENTENCES = {"train": 2, "valid": 1, "test": 2}
MIN_TRAIN_SAME_LENGTH = 2


# ------------------------------------------------------------------------------ writing, generating


def unwritable(root: Path, exc: OSError) -> BenchError:
    """The error of a failed write into the data directory: it names the directory, why, and the fix."""
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) or (root.exists() and not root.is_dir()):
        why = "a part of that path is a file, not a folder"
    return BenchError(f"cannot write to the data directory {root} ({why}); set BENCH_DATA to a writable folder")


def make_dir(root: Path, path: Path) -> None:
    """path.mkdir(parents=True, exist_ok=True) inside the data directory root, failing as a BenchError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise unwritable(root, e) from None


def staging_dir(root: Path, dest: Path, prefix: str) -> Path:
    """A fresh temp folder inside dest (created, with its parents, when missing): the first write of
    an import or fetch, so an unwritable data directory fails here, before anything else happens."""
    make_dir(root, dest)
    try:
        return Path(tempfile.mkdtemp(dir=dest, prefix=prefix))
    except OSError as e:
        raise unwritable(root, e) from None


def generate(m: Manifest, root: Path) -> None:
    """Make the synthetic corpus in root/NAME unless it is there (all its I/O is writing into root)."""
    try:
        synthetic.ensure(synthetic.GeneratorConfig.from_dict(m.generator), root / m.name)
    except OSError as e:
        raise unwritable(root, e) from None


def split_paths(m: Manifest, root: Path) -> dict[str, Path]:
    """Where each split's lines come from (derived splits: the file of their Take, e.g. the base's)."""
    return {s: root / m.source_name / f"{m.file_split(s)}.txt" for s in SPLITS}


# ---------------------------------------------------------------------------------------- reading


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


def check_file(labelled: bool, path: Path, where: Path | str | None = None) -> list[int]:
    """Validate one split file as load_corpus would, naming it `where` in errors; returns the number
    of words of each of its sentences (labels not counted)."""
    try:
        lines = read_lines(path)
    except BenchError as e:
        raise BenchError(str(e).replace(str(path), str(where)) if where else str(e)) from None
    tokens, _ = parse_lines(lines, labelled, where or path)
    return [len(t) for t in tokens]


def count_lines(path: Path) -> int:
    """Lines as read_lines counts them (a last line without "\\n" counts), without decoding."""
    data = path.read_bytes()
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


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


# ------------------------------------------------------------------------- files vs the manifest


def expected_lines(m: Manifest) -> dict[str, int]:
    if m.generator:
        return synthetic.GeneratorConfig.from_dict(m.generator).sizes()
    return dict(m.lines)


def present_lines(m: Manifest, root: Path) -> dict[str, int]:
    """Line counts of the splits whose file exists (derived splits: of the range taken), without
    decoding the files."""
    paths = split_paths(m, root)
    counted: dict[Path, int] = {}
    lines = {}
    for s in SPLITS:
        if not paths[s].is_file():
            continue
        if paths[s] not in counted:
            counted[paths[s]] = count_lines(paths[s])
        n = counted[paths[s]]
        if m.derive:
            take = m.derive[s]
            n = max(0, min(n, take.stop if take.stop is not None else n) - take.start)
        lines[s] = n
    return lines


def line_mismatches(m: Manifest, root: Path, lines: dict[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """{split: (lines, expected)} where a present file's line count differs from the manifest's; a
    derived dataset also gets its base's, as {"BASE SPLIT": ...} (its line ranges can match while the
    base's files are another release, e.g. a sentence-split Yahoo). lines: present_lines, if known."""
    lines = present_lines(m, root) if lines is None else lines
    expected = expected_lines(m)
    mismatches = {s: (n, expected[s]) for s, n in lines.items() if s in expected and n != expected[s]}
    if m.base:  # the base's files: the cause, also of a whole split taken (then said once, as the base's)
        base = line_mismatches(get_manifest(m.base, root), root)
        for s, take in m.derive.items():
            if take.stop is None and take.split in base:
                mismatches.pop(s, None)
        mismatches.update({f"{m.base} {s}": counts for s, counts in base.items()})
    return mismatches


def mismatch_note(where: str, n: int, expected: int) -> str:
    return (f"{where}: {n} lines, the manifest expects {expected} (another release or preprocessing? "
            "results on it are not comparable with those on the expected files)")


def changed_files(m: Manifest, root: Path) -> list[str]:
    """The file splits whose installed file differs from the sha256 its manifest records ([file_sha256],
    written by `bench data add`); absent files are not listed (they are missing, not changed)."""
    return [s for s, digest in m.file_sha256.items()
            if (path := root / m.name / f"{s}.txt").is_file() and sha256_file(path) != digest]


def changed_note(m: Manifest, root: Path, split: str) -> str:
    return (f"{root / m.name / (split + '.txt')}: its sha256 differs from the one recorded when it was added "
            f"(the file changed since; results on it are not comparable with earlier ones; "
            f"`bench data add {m.name} ... --replace` records the new files)")


def file_notes(m: Manifest, root: Path, lines: dict[str, int] | None = None) -> list[str]:
    """Non-fatal findings about a dataset's files, in words: line counts that differ from the
    manifest's (line_mismatches) and files changed since `bench data add` (changed_files)."""
    return ([mismatch_note(where, n, e) for where, (n, e) in line_mismatches(m, root, lines).items()]
            + [changed_note(m, root, s) for s in changed_files(m, root)])
