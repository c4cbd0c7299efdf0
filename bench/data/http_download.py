"""Resumable HTTP(S) downloads for `bench data fetch` of a manifest's plain `url` (Google Drive links
go through bench.data.drive instead). Standard library only: urllib with Range / If-Range.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from vae_collapse_bench.bench.errors import BenchError

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


def _download_error(url: str, name: str, why: object) -> BenchError:
    return BenchError(
        f"cannot download {url}: {why}; check the network and run `bench data fetch {name}` again (a "
        f"partial download resumes), or download it yourself and run `bench data fetch {name} --archive FILE`"
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
