"""Datasets: manifests, fetch/import/add with integrity checks, Vocab, Corpus, length-bucketed batches.

Every dataset is described by one TOML manifest `NAME.toml`: the bundled ones in the repository's
datasets/ (an installed wheel carries them as bench/datasets/*.toml, see bundled_manifest_dir), the
user's own in DATA/manifests/ (`bench data add`), or all of them in $BENCH_MANIFESTS. Its files live in
the data dir DATA (`$BENCH_DATA`, default ~/.cache/vae-collapse-bench) as

    DATA/NAME/{train,valid,test}.txt      one sentence per line, tokens separated by whitespace;
                                          labelled datasets: `label<TAB>text`

put there by `fetch` (download, checked by sha256 or line counts), `import_folder` (a folder in any
of the lineage's layouts) or `add_corpus` (the user's own files). Three kinds of manifest:

- plain: the files above;
- derived (`base = "snli"` + `[derive.SPLIT]`): line ranges of the base dataset's files, e.g. the
  *-mini variants that make train out of the part of a split that is public (a user corpus added
  with --derive-train-from takes [derive] ranges of its own files);
- generated (`[generator]`): the synthetic corpus, made from a seed on first use (bench.synthetic).

A manifest's `[backbone]` table is the paper backbone of its family (paper_backbone; the `paper`
profile uses it). A Corpus is the three splits as token-id tensors with the vocabulary of its train
split and a checksum of its exact text, which identifies the data in every run key.

One job per module, each importing only those before it:

    manifest   schema, lookup (bundled, user, $BENCH_MANIFESTS), paper backbones
    files      where the split files are, reading and validating them, checks against the manifest
    corpus     Vocab, Split, Corpus, load_corpus, corpus_checksum
    batches    length-bucketed batches
    status     what is on disk (dataset_status) and statistics (corpus_stats)
    http_download, drive   downloads: resumable HTTP; Google Drive through the optional gdown
    acquire    import, download, verify, extract (import_folder, fetch)
    user       the user's own corpora (add_corpus)
"""

from vae_collapse_bench.bench.data.acquire import (
    DOWNLOAD_DIR,
    archive_kind,
    extract_splits,
    fetch,
    find_split_files,
    import_folder,
)
from vae_collapse_bench.bench.data.batches import length_batch_indices, length_batches
from vae_collapse_bench.bench.data.corpus import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    Corpus,
    Split,
    Vocab,
    build_corpus,
    corpus_checksum,
    corpus_lines,
    encode_split,
    load_corpus,
    text_checksum,
)
from vae_collapse_bench.bench.data.files import (
    BOM,
    MIN_SENTENCES,
    MIN_TRAIN_SAME_LENGTH,
    check_split_sizes,
    count_lines,
    parse_lines,
    read_lines,
    sha256_file,
    split_paths,
)
from vae_collapse_bench.bench.data.http_download import Progress, download
from vae_collapse_bench.bench.data.manifest import (
    SPLITS,
    Manifest,
    PaperStats,
    Take,
    bundled_manifest_dir,
    data_dir,
    derived_from,
    get_manifest,
    manifest_dir,
    manifest_dirs,
    manifest_paths,
    manifests,
    paper_backbone,
    parse_manifest,
    user_manifest_dir,
)
from vae_collapse_bench.bench.data.status import (
    DatasetStatus,
    corpus_stats,
    dataset_status,
    line_count_notes,
    split_stats,
)
from vae_collapse_bench.bench.data.user import add_corpus

__all__ = [
    "PAD", "BOS", "EOS", "UNK", "SPECIALS", "SPLITS", "BOM", "DOWNLOAD_DIR",
    "data_dir", "manifest_dir", "manifest_dirs", "manifest_paths", "user_manifest_dir", "bundled_manifest_dir",
    "Manifest", "PaperStats", "Take", "manifests", "get_manifest", "parse_manifest", "derived_from",
    "paper_backbone",
    "Vocab", "Split", "Corpus", "load_corpus", "corpus_checksum", "build_corpus", "encode_split", "corpus_lines",
    "text_checksum",
    "length_batches", "length_batch_indices",
    "DatasetStatus", "dataset_status", "line_count_notes", "corpus_stats", "split_stats",
    "fetch", "import_folder", "add_corpus", "download", "extract_splits", "archive_kind", "find_split_files",
    "Progress",
    "read_lines", "parse_lines", "count_lines", "sha256_file", "split_paths", "check_split_sizes",
    "MIN_SENTENCES", "MIN_TRAIN_SAME_LENGTH",
]
