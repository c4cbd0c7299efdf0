"""Acquiring data: `bench data import` (split files you already have) and `bench data fetch` (download
with resume, checked by sha256 or line counts, extracted from an archive), both installing validated
files into DATA/NAME/ atomically. `bench data add` (bench.data.user) installs through the same steps.
"""

from __future__ import annotations

import http.client
import io
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vae_collapse_bench.bench.data.files import (
    check_file,
    check_split_sizes,
    generate,
    make_dir,
    sha256_file,
    staging_dir,
    unwritable,
)
from vae_collapse_bench.bench.data.manifest import SPLITS, Manifest, get_manifest, import_hint, resolve_root
from vae_collapse_bench.bench.data.status import DatasetStatus, dataset_status
from vae_collapse_bench.bench.errors import BenchError, plain
from vae_collapse_bench.bench.paths import is_dir

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
    m = get_manifest(name, root)
    _only_plain(m, "fetch")
    root = resolve_root(root)
    if m.generator:
        generate(m, root)
        return dataset_status(name, root)
    status = dataset_status(name, root)
    if not status.missing:
        return status
    if not m.url:
        raise BenchError(
            f"dataset {name!r} has no direct download (where to get it: `source` in "
            f"{m.path}); get the files by hand and {import_hint(m)}"
        )
    dest = root / m.name
    make_dir(root, dest / DOWNLOAD_DIR)
    filename = Path(urllib.parse.urlparse(m.url).path).name or f"{m.name}.download"
    part = download(m.url, dest / DOWNLOAD_DIR / f"{filename}.part", m.name, progress)
    retry = f"delete {part} and run `bench data fetch {name}` again, or use `bench data import {name} FOLDER`"
    if m.sha256:
        got = sha256_file(part)
        if got != m.sha256.lower():
            raise BenchError(f"checksum mismatch for {m.url}: expected sha256 {m.sha256}, got {got}; {retry}")
    staging = staging_dir(root, dest, ".fetch-")
    try:
        written = extract_splits(m, part, archive_kind(m, filename), staging)
        absent = [s for s in SPLITS if s not in written]
        if absent:
            raise BenchError(f"{m.url} lacks the {', '.join(absent)} split(s) named in {name}.toml; {retry}")
        lengths = {}
        for s, path in written.items():
            lengths[s] = check_file(m.labelled, path, f"{m.url} ({s} split)")
            n = len(lengths[s])
            if not m.sha256 and n != m.lines[s]:
                raise BenchError(
                    f"{m.url}: the {s} split has {n} lines, expected {m.lines[s]}; the download is not "
                    f"the expected release; {retry}"
                )
        check_split_sizes(name, lengths, {s: f"{m.url}, {s} split" for s in written},
                          {s: "the download is not a usable release" for s in written})
        rename_into(written, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(dest / DOWNLOAD_DIR, ignore_errors=True)
    return dataset_status(name, root)

