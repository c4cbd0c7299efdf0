"""Google Drive downloads (`bench data fetch yahoo|yelp|short-yelp|snli`) through the maintained gdown
library, an optional extra: `pip install 'vae-collapse-bench[drive]'`.

Google Drive does not serve a large file at its download link: it answers with an HTML page ("Google
Drive can't scan this file for viruses") whose form carries a confirmation token, and only the
confirmed request gets the file. That page changes now and then, so this module does not parse it
itself: gdown (maintained for exactly this) does, and this module turns gdown's outcomes into one-line
BenchErrors. gdown resumes a partial download (`NAME.tar.gzXXXXXXXX.part` beside the output, asking for
the rest with Range and If-Range) and retries a dropped transfer a few times before giving up.

gdown goes through `requests`, so the standard variables HTTPS_PROXY / NO_PROXY (a proxy) and
REQUESTS_CA_BUNDLE (the certificates trusted) apply: the tests point them at a local imitation of
Drive, and nothing here knows about tests.
"""

from __future__ import annotations

import importlib
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from vae_collapse_bench.bench.errors import BenchError

EXTRA = "drive"  # the optional dependency group of pyproject.toml that installs gdown
DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
RETRIES = 3  # gdown's in-call retries of a failed transfer (it resumes from the bytes received)
TIMEOUT = (30.0, 60.0)  # seconds: to connect, and between two reads


def drive_file_id(url: str) -> str | None:
    """The file id of a Google Drive link (`https://drive.google.com/uc?id=ID`, `.../open?id=ID`,
    `.../file/d/ID/view`), None for any other URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.hostname not in DRIVE_HOSTS:
        return None
    ids = urllib.parse.parse_qs(parsed.query).get("id", [])
    if len(ids) == 1 and ids[0]:
        return ids[0]
    parts = [p for p in parsed.path.split("/") if p]
    if "d" in parts[:-1]:
        return parts[parts.index("d") + 1]
    return None


def drive_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?id={file_id}"


def _gdown(name: str, file_id: str):
    try:
        return importlib.import_module("gdown")
    except ImportError:
        raise BenchError(
            f"dataset {name!r} downloads from Google Drive, which needs the gdown package: "
            f"pip install 'vae-collapse-bench[{EXTRA}]' (or download {drive_url(file_id)} in a browser "
            f"and run `bench data fetch {name} --archive FILE`)"
        ) from None


def partial_files(output: Path) -> list[Path]:
    """gdown's partial downloads of `output` (OUTPUT + 8 random characters + .part)."""
    if not output.parent.is_dir():
        return []
    return [p for p in output.parent.iterdir()
            if p.name.startswith(output.name) and p.name.endswith(".part")
            and len(p.name) == len(output.name) + 8 + len(".part")]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _network_reason(e: Exception) -> str:
    """The root of a requests error in a few words ("Connection refused", "Temporary failure in name
    resolution", "ReadTimeout"): its message nests urllib3's, which nests the socket's."""
    errno_text = re.findall(r"\[Errno -?\d+\] ([^'\")\]]+)", str(e))
    return errno_text[-1].strip() if errno_text else type(e).__name__


def _refusal(text: str) -> str:
    """What Drive said, from gdown's FileURLRetrievalError (which wraps it in advice about gdown's own
    command line): the part between "Failed to retrieve file url:" and "You may still be able"."""
    text = str(text)
    head, _, rest = text.partition("Failed to retrieve file url:")
    said = (rest or head).split("You may still be able", 1)[0]
    return _one_line(said) or _one_line(text)


def download_drive(file_id: str, output: Path, name: str,
                   progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download Drive file `file_id` to `output` (its folder must exist), resuming a partial download
    left by an earlier call. An `output` already there is returned as it is: it is complete (gdown
    renames a partial file to it only at the end); the caller verifies it.

    Failures are BenchErrors: gdown missing (naming the extra), Drive refusing the file (its quota
    page, "too many users", or a file that is not public), an HTTP error, no network, a transfer that
    broke off (the bytes stay for the next call to resume).
    """
    if output.is_file():
        return output
    gdown = _gdown(name, file_id)
    import requests  # a dependency of gdown: importable once gdown is

    url = drive_url(file_id)
    retry = f"run `bench data fetch {name}` again"
    by_hand = f"download {url} in a browser and run `bench data fetch {name} --archive FILE`"

    def unreachable(e: Exception) -> BenchError:
        return BenchError(f"cannot reach Google Drive for {url} ({_network_reason(e)}); check the network "
                          f"and {retry} (a partial download resumes), or {by_hand}")
    try:
        gdown.download(url=url, output=str(output), quiet=True, use_cookies=False, resume=True,
                       progress=progress, timeout=TIMEOUT, retries=RETRIES)
    except gdown.exceptions.FileURLRetrievalError as e:
        said = _refusal(e).rstrip(".")
        if "too many users" in said.lower():  # Drive's download quota for the file
            advice = f"Drive lifts the quota within 24 hours: {retry} then, or {by_hand}"
        else:
            advice = (f"the file may have moved or stopped being public (see `source` in {name}.toml); "
                      f"{retry} later, or {by_hand}")
        raise BenchError(f"Google Drive did not serve file {file_id} of dataset {name!r}: {said}; {advice}") from None
    except gdown.exceptions.DownloadError as e:
        said = _one_line(str(e).split("\n", 1)[0]).rstrip(".")
        if isinstance(e.__cause__, requests.RequestException) and not said.startswith("Download is incomplete"):
            raise unreachable(e.__cause__) from None  # gdown's retries ran out before any byte came
        if "byte range" in said:  # the server cannot resume: only a fresh start can succeed
            for part in partial_files(output):
                part.unlink(missing_ok=True)
            raise BenchError(f"cannot resume the download of {url} (the server did not send the byte range "
                             f"asked for); the partial download was removed: {retry} to start over") from None
        raise BenchError(f"the download of {url} broke off ({said}); the bytes received are kept in "
                         f"{output.parent}: {retry} to resume") from None
    except requests.HTTPError as e:
        status = e.response.status_code if e.response is not None else "?"
        reason = e.response.reason if e.response is not None else ""
        raise BenchError(f"cannot download {url}: HTTP {status} {reason}".rstrip()
                         + f"; {retry} later, or {by_hand}") from None
    except requests.RequestException as e:  # before OSError: requests' errors are OSErrors too
        raise unreachable(e) from None
    except OSError as e:
        raise BenchError(f"cannot write the download to {output.parent} ({e.strerror or e}); set "
                         "BENCH_DATA to a writable folder with room for it") from None
    return output
