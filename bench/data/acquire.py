"""Acquiring data: `bench data import` (split files you already have) and `bench data fetch` (download
with resume, checked by sha256 or line counts, extracted from an archive), both installing validated
files into DATA/NAME/ atomically. `bench data add` (bench.data.user) installs through the same steps.
The downloads themselves: bench.data.http_download (plain URLs) and bench.data.drive (Google Drive,
through the optional gdown).
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vae_collapse_bench.bench.data.drive import download_drive, drive_file_id
from vae_collapse_bench.bench.data.files import (
    check_file,
    check_split_sizes,
    generate,
    make_dir,
    sha256_file,
    staging_dir,
    unwritable,
)
from vae_collapse_bench.bench.data.http_download import Progress, download
from vae_collapse_bench.bench.data.manifest import SPLITS, Manifest, get_manifest, import_hint, resolve_root
from vae_collapse_bench.bench.data.status import DatasetStatus, dataset_status
from vae_collapse_bench.bench.errors import BenchError, plain
from vae_collapse_bench.bench.paths import is_dir, is_file

DOWNLOAD_DIR = ".download"


# ----------------------------------------------------------------------------------------- import


def find_split_files(m: Manifest, folder: Path) -> dict[str, Path]:
    """The first file of each split file's accepted names found directly in folder (not in subfolders:
    the lineage keeps subsets like short_yelp.train.1000.txt and debug copies beside the splits).
    Only the files the dataset reads (Manifest.file_splits) are looked for."""
    found = {}
    for s in m.file_splits:
        for fname in m.files.get(s, (f"{s}.txt",)):
            if (folder / fname).is_file():
                found[s] = folder / fname
                break
    return found


@contextmanager
def staged_copies(root: Path, dest: Path, found: dict[str, Path],
                  labelled: bool) -> Iterator[tuple[dict[str, Path], dict[str, list[int]]]]:
    """Copies of the files `found` (split -> file) in a temp folder inside dest, each validated as
    load_corpus would (errors name the original): yields split -> copy and split -> words per
    sentence. The temp folder is removed afterwards; rename_into installs the copies."""
    staging = staging_dir(root, dest, ".import-")
    try:
        staged, lengths = {}, {}
        for s, src in found.items():
            staged[s] = staging / f"{s}.txt"
            try:
                shutil.copyfile(src, staged[s])
            except OSError as e:
                if not os.access(src, os.R_OK):
                    raise BenchError(f"cannot read {plain(str(src))}: {e.strerror or e}") from None
                raise unwritable(root, e) from None
            lengths[s] = check_file(labelled, staged[s], src)  # check the copy, name the original
        yield staged, lengths
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def rename_into(staged: dict[str, Path], dest: Path) -> None:
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
    m = get_manifest(name, root)
    _only_plain(m, "import")
    root = resolve_root(root)
    folder = Path(folder).expanduser()
    if not is_dir(folder):
        raise BenchError(f"{plain(str(folder))} is not a folder; pass the folder that holds the {name} split files")
    found = find_split_files(m, folder)
    if not found:
        wanted = "; ".join(f"{s}: {' / '.join(m.files.get(s, (f'{s}.txt',)))}" for s in m.file_splits)
        raise BenchError(f"{folder} holds none of the {name} split files ({wanted})")
    dest = root / m.name
    with staged_copies(root, dest, found, m.labelled) as (staged, lengths):
        check_split_sizes(name, lengths, {s: str(src) for s, src in found.items()},
                          {s: f"import a folder with a larger {s} split" for s in found})
        rename_into(staged, dest)
    return dataset_status(name, root)


# ----------------------------------------------------------------------------------------- fetch


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


def extract_splits(m: Manifest, archive: Path, kind: str, out: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Write each split's member to out/SPLIT.txt (only those members are read: nothing else of
    the archive touches the disk, so its paths cannot escape `out`). Returns split -> file written
    and split -> the member it came from (for messages)."""
    written: dict[str, Path] = {}
    if kind == "plain":
        picked = _pick_members(m, [archive.name.removesuffix(".part")])
        for s in picked:
            shutil.copyfile(archive, out / f"{s}.txt")
            written[s] = out / f"{s}.txt"
        return written, picked
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                names = [i.filename for i in zf.infolist() if not i.is_dir()]
                picked = _pick_members(m, names)
                for s, member in picked.items():
                    (out / f"{s}.txt").write_bytes(zf.read(member))
                    written[s] = out / f"{s}.txt"
        else:
            with tarfile.open(archive, "r:*") as tf:
                files = {i.name: i for i in tf.getmembers() if i.isfile()}
                picked = _pick_members(m, list(files))
                for s, member in picked.items():
                    with tf.extractfile(files[member]) as src, open(out / f"{s}.txt", "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    written[s] = out / f"{s}.txt"
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, io.UnsupportedOperation, zlib.error) as e:
        raise BenchError(
            f"{archive} is not a readable {kind} archive ({' '.join(str(e).split())}); delete it and run the "
            "fetch again"
        ) from None
    return written, picked


Log = Callable[[str], None]  # one line of what fetch does, for the user


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n:,} bytes ({n / 2**20:.1f} MiB)"


def _expected(m: Manifest, split: str) -> str:
    """Where a split's expected line count comes from, in words."""
    table = m.paper is not None and getattr(m.paper, split) == m.lines[split]
    return f"the papers' Table 1, as {m.name}.toml records" if table else f"{m.name}.toml [lines]"


def download_to(m: Manifest, folder: Path, progress: Progress | None, say: Log) -> tuple[Path, str]:
    """Download the manifest's url into `folder` (resuming an earlier partial download): a Google
    Drive link through gdown (bench.data.drive), any other URL through the resumable HTTP path.
    Returns the downloaded file and its name as the archive kind is judged by."""
    file_id = drive_file_id(m.url)
    if file_id:
        kind = archive_kind(m, "")
        filename = m.name + {"tar.gz": ".tar.gz", "zip": ".zip"}.get(kind, ".download")
        say(f"downloading {m.url} (Google Drive file {file_id}, through gdown) to {folder / filename}")
        return download_drive(file_id, folder / filename, m.name, progress), filename
    filename = Path(urllib.parse.urlparse(m.url).path).name or f"{m.name}.download"
    say(f"downloading {m.url} to {folder / filename}.part")
    return download(m.url, folder / f"{filename}.part", m.name, progress), filename


def install_archive(m: Manifest, root: Path, archive: Path, kind: str, label: str, retry: str,
                    say: Log) -> None:
    """Verify `archive` and install its splits into root/NAME/: its sha256 against the manifest's,
    else every extracted split's line count against the manifest's [lines] (the papers' Table 1 for
    the lineage's datasets); each split validated like an import, then renamed into place. Nothing
    is installed unless every check passes. label names the archive's origin in messages."""
    got = sha256_file(archive)
    if m.sha256:
        if got != m.sha256.lower():
            raise BenchError(f"checksum mismatch for {label}: expected sha256 {m.sha256}, got {got}; {retry}")
        say(f"sha256 {got}: as {m.name}.toml records")
    else:
        say(f"sha256 {got} (no published checksum: the splits are checked by their line counts)")
    dest = root / m.name
    staging = staging_dir(root, dest, ".fetch-")
    try:
        written, members = extract_splits(m, archive, kind, staging)
        absent = [s for s in SPLITS if s not in written]
        if absent:
            raise BenchError(f"{label} lacks the {', '.join(absent)} split(s) named in {m.name}.toml; {retry}")
        lengths = {}
        for s, path in written.items():
            where = f"{members[s]} in {archive}"
            lengths[s] = check_file(m.labelled, path, where)
            n = len(lengths[s])
            if not m.sha256 and n != m.lines[s]:
                raise BenchError(
                    f"{where}: the {s} split has {n:,} lines, expected {m.lines[s]:,} ({_expected(m, s)}); "
                    f"the download is not the expected release; {retry}"
                )
            say(f"{s}: {n:,} lines ({members[s]})" + ("" if m.sha256 else f", as {_expected(m, s)}"))
        check_split_sizes(m.name, lengths, {s: f"{label}, {s} split" for s in written},
                          {s: "the download is not a usable release" for s in written})
        rename_into(written, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(name: str, root: Path | None = None, progress: Progress | None = None, log: Log | None = None,
          archive: Path | str | None = None) -> DatasetStatus:
    """Download, check and install a dataset (`bench data fetch NAME`).

    Already complete: nothing is downloaded (unless `archive` is given). Synthetic: generated. The
    download resumes from root/NAME/.download/ (a Google Drive link through gdown, see
    bench.data.drive; any other URL through the resumable HTTP path); `archive`: a file the user
    downloaded, used instead. Then install_archive verifies and installs it; on success the
    download folder is removed. A download that fails verification stays where it is, never
    installed, and the message says to delete it. log: called with one line per step (what is
    downloaded from where to where, its size, the sha256, each split's line count).
    """
    m = get_manifest(name, root)
    _only_plain(m, "fetch")
    root = resolve_root(root)
    say = log or (lambda _line: None)
    if m.generator:
        generate(m, root)
        return dataset_status(name, root)
    status = dataset_status(name, root)
    if not status.missing and archive is None:
        say(f"{name} is already installed in {root / m.name}; nothing to download")
        return status
    dest = root / m.name
    if archive is not None:
        path = Path(archive).expanduser()
        if not is_file(path):
            raise BenchError(f"--archive {plain(str(archive))} is not a file; pass the archive you downloaded "
                             f"({m.url or 'see source in ' + str(m.path)})")
        say(f"using {path}, {_size(path)}")
        install_archive(m, root, path, archive_kind(m, path.name), str(path),
                        f"check that {path} is the archive of {m.url or name}", say)
        return dataset_status(name, root)
    if not m.url:
        raise BenchError(
            f"dataset {name!r} has no direct download (where to get it: `source` in "
            f"{m.path}); get the files by hand and {import_hint(m)}"
        )
    make_dir(root, dest / DOWNLOAD_DIR)
    path, filename = download_to(m, dest / DOWNLOAD_DIR, progress, say)
    say(f"downloaded {_size(path)}")
    retry = f"delete {path} and run `bench data fetch {name}` again, or use `bench data import {name} FOLDER`"
    install_archive(m, root, path, archive_kind(m, filename), m.url, retry, say)
    shutil.rmtree(dest / DOWNLOAD_DIR, ignore_errors=True)
    return dataset_status(name, root)
