"""Dataset manifests: where they are, their schema, and the paper backbone each one names.

Every dataset is one TOML file `NAME.toml` (see `Manifest`). Lookup: $BENCH_MANIFESTS when set (it
replaces everything else: tests, private collections); else the bundled manifests (the repository's
datasets/, shipped in the wheel as bench/datasets/, see bundled_manifest_dir) and then the user's own,
`DATA/manifests/NAME.toml` (written by `bench data add`, bench.data.user). A user manifest named like a
bundled one is never used: a built-in dataset cannot be shadowed.

The data directory DATA ($BENCH_DATA, default ~/.cache/vae-collapse-bench) also holds the files,
DATA/NAME/{train,valid,test}.txt (bench.data.files).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from vae_collapse_bench.bench import synthetic
from vae_collapse_bench.bench.backbone import DEFAULT_PAPER_BACKBONE, Backbone
from vae_collapse_bench.bench.errors import BenchError, unknown
from vae_collapse_bench.bench.paths import is_dir, is_file

SPLITS = ("train", "valid", "test")
USER_MANIFESTS = "manifests"  # DATA/manifests/: the manifests of the user's own corpora
# The sizes a [backbone] table must give; the dropouts have Backbone's defaults.
BACKBONE_REQUIRED = ("emb_dim", "enc_hidden", "dec_hidden", "latent_dim")


# --------------------------------------------------------------------------------------------- places


def data_dir() -> Path:
    """Where datasets live: $BENCH_DATA, else ~/.cache/vae-collapse-bench."""
    env = os.environ.get("BENCH_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vae-collapse-bench"


def resolve_root(root: Path | str | None) -> Path:
    """The data directory a call works in: the given one, else data_dir(). An existing path that is not
    a folder is an error (naming BENCH_DATA); a missing one is created by the first write."""
    path = Path(root) if root is not None else data_dir()
    if path.exists() and not path.is_dir():
        raise BenchError(f"the data directory {path} is not a folder; set BENCH_DATA to a folder "
                         "(it is created when missing)")
    return path


def bundled_manifest_dir() -> Path:
    """The manifests that come with the code.

    The repository keeps them in its top-level datasets/ (the layout the README promises). A wheel
    cannot install a top-level folder of data, so pyproject.toml maps datasets/ to the package-data
    folder bench/datasets/: an installed copy finds them there, beside this package (bench/data/). A
    source tree or an editable install has no bench/datasets/ and uses the repository's folder.
    (Installed, the folder above `bench` is the vae_collapse_bench package; the installed location is
    tried first all the same.)
    """
    bench_dir = Path(__file__).resolve().parents[1]
    installed = bench_dir / "datasets"
    return installed if installed.is_dir() else bench_dir.parent / "datasets"


def _override_dir() -> Path | None:
    """$BENCH_MANIFESTS as a folder, None when unset; one that is not an existing folder is an error."""
    env = os.environ.get("BENCH_MANIFESTS")
    if not env:
        return None
    path = Path(env).expanduser()
    if not is_dir(path):
        what = "is not a folder" if path.exists() else "does not exist"
        raise BenchError(f"BENCH_MANIFESTS={env}: {path} {what}; point BENCH_MANIFESTS to the folder of "
                         "dataset manifests (NAME.toml files), or unset it to use the bundled ones")
    return path


def manifest_dir() -> Path:
    """Where the built-in manifests live: $BENCH_MANIFESTS (tests, private datasets), else
    bundled_manifest_dir(). A BENCH_MANIFESTS that is not an existing folder is an error."""
    return _override_dir() or bundled_manifest_dir()


def user_manifest_dir(root: Path | str | None = None) -> Path:
    """DATA/manifests: the manifests `bench data add` writes (root: the data directory, else data_dir())."""
    return (Path(root) if root is not None else data_dir()) / USER_MANIFESTS


def manifest_dirs(root: Path | str | None = None) -> list[Path]:
    """The folders searched, in order: [$BENCH_MANIFESTS], else [bundled, DATA/manifests]."""
    override = _override_dir()
    return [override] if override is not None else [bundled_manifest_dir(), user_manifest_dir(root)]


# ------------------------------------------------------------------------------------------ schema


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
    """One split of a derived dataset: lines [start, stop) of the source file of split `split`."""

    split: str
    start: int = 0
    stop: int | None = None


@dataclass(frozen=True)
class Manifest:
    """One dataset, as written in NAME.toml.

    name, description, labelled (`label<TAB>text` lines). family: the dataset whose [backbone] this
    one uses when it has none of its own (its own name: none, the default; see paper_backbone).
    backbone: the [backbone] table, the paper backbone (emb_dim, enc_hidden, dec_hidden, latent_dim,
    optional dropouts). source: where the files come from, in words. url: a direct download of an
    archive (tar.gz, tgz, zip) or a plain file; "" when there is none. archive: its kind when the URL's
    suffix does not say. sha256: of the download; when "" the extracted split files are checked
    against `lines` instead. members: split -> path inside the archive; when empty, the archive's
    files are matched by `files` names. files: split -> accepted file names, in order of preference
    (used by import and the archive search). lines: split -> expected line count (of the split as a
    run sees it). base + derive: a derived dataset's splits as line ranges of the base dataset's
    files; derive without base: line ranges of this dataset's own files (a corpus added with
    --derive-train-from). generator: the synthetic corpus' parameters
    (bench.synthetic.GeneratorConfig). paper: Table-1 statistics. file_sha256: file split -> sha256
    of DATA/NAME/SPLIT.txt as installed (`bench data add` records it). path: the file it was read
    from (not a TOML key).
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
    backbone: Backbone | None = None
    file_sha256: dict[str, str] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def kind(self) -> str:
        return "generated" if self.generator else "derived" if self.base else "plain"

    @property
    def paper_stats(self) -> dict:
        """The Table-1 row as a dict (train, valid, test, vocab, avg_len, source); {} when none."""
        return {} if self.paper is None else {f.name: getattr(self.paper, f.name) for f in fields(self.paper)}

    @property
    def source_name(self) -> str:
        """The dataset whose folder DATA/NAME/ holds the files (a derived one reads its base's)."""
        return self.base or self.name

    def file_split(self, split: str) -> str:
        """The file a split's lines come from: SPLIT.txt, or for a derived split its Take's."""
        return self.derive[split].split if self.derive else split

    @property
    def file_splits(self) -> list[str]:
        """The split files the dataset reads, in SPLITS order (snli-mini: valid, test)."""
        used = {self.file_split(s) for s in SPLITS}
        return [s for s in SPLITS if s in used]


TOML_KEYS = frozenset(f.name for f in fields(Manifest)) - {"path"}


def _parse_backbone(table: object, bad) -> Backbone:
    if not isinstance(table, dict):
        raise bad("[backbone] must be a table")
    known = [f.name for f in fields(Backbone)]
    extra = sorted(set(table) - set(known))
    if extra:
        raise bad(f"[backbone] has unknown key(s) {extra}; known: {known}")
    missing = [k for k in BACKBONE_REQUIRED if k not in table]
    if missing:
        raise bad(f"[backbone] needs {', '.join(missing)}")
    for key, value in table.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if isinstance(getattr(DEFAULT_PAPER_BACKBONE, key), int):
            if not (number and isinstance(value, int) and value > 0):
                raise bad(f"[backbone] {key} must be a positive integer, got {value!r}")
        elif not (number and 0 <= value < 1):
            raise bad(f"[backbone] {key} must be a number in [0, 1), got {value!r}")
    return Backbone(**table)


def parse_manifest(path: Path) -> Manifest:
    """Read and check one manifest; every problem is a BenchError naming the file."""
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise BenchError(f"cannot read dataset manifest {path}: {e}") from None

    def bad(msg: str) -> BenchError:
        return BenchError(f"dataset manifest {path}: {msg}")

    extra = sorted(set(table) - TOML_KEYS)
    if extra:
        raise bad(f"unknown key(s) {extra}; known: {sorted(TOML_KEYS)}")
    for key in ("name", "family", "description"):
        if not isinstance(table.get(key), str) or not table[key]:
            raise bad(f"needs a non-empty string {key!r}")
    if table["name"] != path.stem:
        raise bad(f"name {table['name']!r} must equal the file name {path.stem!r}")
    if not isinstance(table.get("labelled", False), bool):
        raise bad("labelled must be true or false")
    for key in ("members", "files", "lines", "derive", "file_sha256"):
        if not isinstance(table.get(key, {}), dict):
            raise bad(f"{key} must be a table ([{key}])")
        unknown_splits = sorted(set(table.get(key, {})) - set(SPLITS))
        if unknown_splits:
            raise bad(f"[{key}] has unknown split(s) {unknown_splits}; splits are {', '.join(SPLITS)}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in table.get("lines", {}).values()):
        raise bad("[lines] values must be positive integers")
    if not all(isinstance(h, str) and len(h) == 64 and set(h) <= set("0123456789abcdef")
               for h in table.get("file_sha256", {}).values()):
        raise bad("[file_sha256] values must be sha256 digests (64 lowercase hex digits)")
    try:
        m = Manifest(
            **{k: v for k, v in table.items() if k not in ("files", "derive", "paper", "backbone")},
            files={s: tuple(names) for s, names in table.get("files", {}).items()},
            derive={s: Take(**t) for s, t in table.get("derive", {}).items()},
            paper=PaperStats(**table["paper"]) if "paper" in table else None,
            backbone=_parse_backbone(table["backbone"], bad) if "backbone" in table else None,
            path=path,
        )
    except TypeError as e:
        raise bad(str(e)) from None
    if m.base == m.name:
        raise bad("base names the dataset itself; [derive] without base takes lines of its own files")
    if (m.base or m.derive) and set(m.derive) != set(SPLITS):
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


# ------------------------------------------------------------------------------------------ lookup


def _names(folder: Path) -> list[str]:
    if not is_dir(folder):
        return []
    try:
        return sorted(p.stem for p in folder.glob("*.toml") if p.is_file())
    except OSError:
        return []


def manifest_paths(root: Path | str | None = None) -> dict[str, Path]:
    """name -> manifest file of every dataset (sorted by name), the first folder of manifest_dirs()
    winning: a user manifest named like a bundled one is ignored."""
    found: dict[str, Path] = {}
    for folder in manifest_dirs(root):
        for name in _names(folder):
            found.setdefault(name, folder / f"{name}.toml")
    return dict(sorted(found.items()))


def manifests(root: Path | str | None = None) -> dict[str, Manifest]:
    """Every manifest (bundled and the user's, or $BENCH_MANIFESTS'), keyed by name (sorted)."""
    return {name: parse_manifest(path) for name, path in manifest_paths(root).items()}


def is_builtin(name: str) -> bool:
    """A dataset bundled with the code (a user's own corpus cannot take its name)."""
    return name in _names(bundled_manifest_dir())


def _lookup_name(name: str) -> bool:
    """A name that can be a manifest's file name (no folder part: `../x` never leaves the folder)."""
    return bool(name) and "\0" not in name and Path(name).name == name and not name.startswith(".")


def get_manifest(name: str, root: Path | str | None = None) -> Manifest:
    """The manifest of dataset `name` (root: the data directory whose manifests/ to search too)."""
    if _lookup_name(name):
        for folder in manifest_dirs(root):
            path = folder / f"{name}.toml"
            if is_file(path):
                return parse_manifest(path)
    raise unknown("dataset", name, list(manifest_paths(root)))


def derived_from(name: str, root: Path | str | None = None) -> list[str]:
    """Names of the datasets derived from `name` (e.g. snli -> [snli-mini])."""
    return [n for n, m in manifests(root).items() if m.base == name]


def paper_backbone(dataset: str | Manifest, root: Path | str | None = None) -> Backbone:
    """The paper backbone of a dataset (a Manifest or a dataset name): its manifest's [backbone];
    else that of its family's manifest (snli-mini -> snli; a corpus added with `--backbone snli`),
    following family names; else DEFAULT_PAPER_BACKBONE (a family that is the dataset itself).

    Every family name is the name of the dataset whose manifest holds the family's backbone, so a
    family name (Corpus.family) may be passed for `dataset` too.
    """
    m = dataset if isinstance(dataset, Manifest) else get_manifest(dataset, root)
    seen = {m.name}
    while m.backbone is None and m.family not in seen:
        try:
            family = get_manifest(m.family, root)
        except BenchError:
            raise BenchError(
                f"dataset manifest {m.path or m.name}: family {m.family!r} names no dataset manifest; set "
                "family to a dataset whose manifest has a [backbone] table (e.g. snli), or give this one a "
                "[backbone] table"
            ) from None
        seen.add(family.name)
        m = family
    return m.backbone or DEFAULT_PAPER_BACKBONE


def import_hint(m: Manifest, split: str | None = None) -> str:
    """`run bench data import NAME FOLDER (FOLDER holding a.train.txt, ...)`, one name per file split."""
    splits = [m.file_split(split)] if split else m.file_splits
    names = ", ".join(m.files.get(s, (f"{s}.txt",))[0] for s in splits)
    fetch = f"`bench data fetch {m.name}` or " if m.url else ""
    return (f"run {fetch}`bench data import {m.name} FOLDER` (FOLDER holding {names}, "
            f"or another name its manifest lists under [files])")
