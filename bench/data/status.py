"""What is on disk for a dataset beside what its manifest promises (`bench data list`, the import and
fetch reports), and the statistics of a loaded corpus beside the paper's (`bench data stats`)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from vae_collapse_bench.bench import synthetic
from vae_collapse_bench.bench.data.corpus import Split, load_corpus
from vae_collapse_bench.bench.data.files import (
    changed_files,
    changed_note,
    expected_lines,
    line_mismatches,
    mismatch_note,
    present_lines,
    split_paths,
)
from vae_collapse_bench.bench.data.manifest import SPLITS, PaperStats, get_manifest, resolve_root, user_manifest_dir
from vae_collapse_bench.bench.errors import BenchError


@dataclass(frozen=True)
class DatasetStatus:
    """What is on disk for a dataset, beside what its manifest promises.

    present/missing: splits whose source file exists or not (derived datasets: the base's files).
    paths: each split's source file. lines: line counts of present splits (derived: of the range
    taken). expected_lines: the manifest's. generated: synthetic (made on first use, so usable even
    when missing). line_mismatches: where a present file's line count differs from its manifest's,
    as {split: (lines, expected)}; a derived dataset also gets its base's, as {"BASE SPLIT": ...}
    (its line ranges can match while the base's files are another release, e.g. a sentence-split
    Yahoo). changed: file splits whose file differs from the sha256 `bench data add` recorded.
    notes: non-fatal findings in words (the mismatches and changes, see bench.data.files.file_notes).
    manifest: the manifest's file; added: a corpus of the user's (`bench data add`).
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
    changed: list[str] = field(default_factory=list)
    manifest: Path | None = None
    added: bool = False

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
        if self.changed:
            state += f"; changed since added: {', '.join(self.changed)}"
        return state


def dataset_status(name: str, root: Path | None = None) -> DatasetStatus:
    """What `bench data list/status` shows: files on disk vs the manifest, plus its Table-1 row."""
    m = get_manifest(name, root)
    root = resolve_root(root)
    paths = split_paths(m, root)
    present = [s for s in SPLITS if paths[s].is_file()]
    lines = present_lines(m, root)
    mismatches = line_mismatches(m, root, lines)
    changed = changed_files(m, root)
    return DatasetStatus(
        name=m.name, family=m.family, kind=m.kind, description=m.description, present=present,
        missing=[s for s in SPLITS if s not in present], paths=paths, lines=lines,
        expected_lines=expected_lines(m), paper=m.paper, source=m.source, fetchable=bool(m.url),
        base=m.base, generated=bool(m.generator),
        notes=[mismatch_note(where, n, e) for where, (n, e) in mismatches.items()]
        + [changed_note(m, root, s) for s in changed],
        line_mismatches=mismatches, changed=changed, manifest=m.path,
        added=m.path is not None and m.path.parent == user_manifest_dir(root),
    )


def line_count_notes(name: str, root: Path | None = None) -> list[str]:
    """The line-count mismatches of a dataset's files against its manifest (and, for a derived one,
    its base's), in words: [] when every present file has the expected count. load_corpus puts them
    in Corpus.notes; a run records them as provenance. Counting reads the files, not decoding them."""
    m = get_manifest(name, root)
    return [mismatch_note(where, n, e) for where, (n, e) in line_mismatches(m, resolve_root(root)).items()]


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
    (train tokens + the 4 specials), the checksum, notes (file_notes); for synthetic also the
    generator's MI bounds."""
    m = get_manifest(name, root)
    root = resolve_root(root)
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


def generator_mi(name: str, root: Path | None = None) -> dict | None:
    """The true I(x; z) bracket of a generated corpus (bench.synthetic.mi_bounds, kept in its
    generator.json) when that corpus is here with its manifest's config; None for any other dataset,
    or when it is not generated here (a board never generates data)."""
    try:
        m = get_manifest(name, root)
    except BenchError:
        return None
    if not m.generator:
        return None
    directory = resolve_root(root) / m.name
    if not synthetic.is_current(synthetic.GeneratorConfig.from_dict(m.generator), directory):
        return None
    return (synthetic.read_info(directory) or {}).get("mutual_information_nats")
