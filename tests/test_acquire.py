"""`bench data fetch` from Google Drive, through the real gdown, against a local imitation of Drive.

FakeDrive listens on 127.0.0.1 as an HTTPS proxy: the test points HTTPS_PROXY at it and
REQUESTS_CA_BUNDLE at a certificate for drive.google.com and drive.usercontent.google.com
(tests/fixtures/fake-drive.pem, made once with `openssl ca -selfsign`, valid 2000-2100), so gdown's
own requests to https://drive.google.com/uc?id=ID arrive here over TLS. The imitation answers as Drive
does for a large file: /uc redirects to drive.usercontent.google.com/download, which serves an HTML
"can't scan this file for viruses" page whose form carries a confirm token and a uuid; only a request
with both gets the file (with Range support, for resume). It can also answer with the quota page,
a missing file, a connection dropped halfway, or bytes that are no archive.
"""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import TOY, tar_gz
from vae_collapse_bench.bench import cli, data
from vae_collapse_bench.bench.data import drive
from vae_collapse_bench.bench.errors import BenchError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
FILE_ID = "1FakeDriveFileIdForTheTests_x"
UUID = "5b1d2c3e-test-uuid"
ETAG = '"drive-v1"'

VIRUS_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>
<body><div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can't scan this file for \
viruses.</p><p class="uc-warning-subcaption">{name} is too large for a virus scan. Download it anyway?</p>\
<form id="download-form" action="https://drive.usercontent.google.com/download" method="get">\
<input type="submit" id="uc-download-link" value="Download anyway"/><input type="hidden" name="id" value="{id}">\
<input type="hidden" name="export" value="download"><input type="hidden" name="confirm" value="t">\
<input type="hidden" name="uuid" value="{uuid}"></form></div></div></body></html>
"""
QUOTA_PAGE = """<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>
<div class="uc-main"><div id="uc-text"><p class="uc-error-caption">Sorry, you can't view or download this file now.</p>
<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Try again later.</p>
</div></div></body></html>
"""
MISSING_PAGE = "<!DOCTYPE html><html><head><title>Not Found</title></head><body>No such file.</body></html>\n"


class FakeDrive(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(FIXTURES / "fake-drive.pem", FIXTURES / "fake-drive.key")
        self.files: dict[str, tuple[str, bytes]] = {}  # file id -> (file name, bytes)
        self.mode = "ok"  # or "quota", "missing"
        self.drop_next = False  # send half the file, then close the connection
        self.requests: list[tuple[str, str, dict]] = []  # (host, path with query, headers)
        self.connects: list[str] = []  # CONNECT targets

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(BaseHTTPRequestHandler):
    """The proxy: CONNECT opens a tunnel that ends here, in TLS, at DriveHandler."""

    server: FakeDrive

    def do_CONNECT(self):  # noqa: N802 (http.server's naming)
        self.server.connects.append(self.path)
        self.send_response(200, "Connection established")
        self.end_headers()
        try:
            tls = self.server.tls.wrap_socket(self.connection, server_side=True)
        except OSError:  # the client gave up on the handshake
            self.close_connection = True
            return
        try:
            DriveHandler(tls, self.client_address, self.server)
        except OSError:  # the client closed the tunnel mid-answer (gdown does, to resume with Range)
            pass
        finally:
            tls.close()
        self.close_connection = True

    def log_message(self, *args):
        pass


class DriveHandler(BaseHTTPRequestHandler):
    """Drive itself, as seen through the tunnel."""

    server: FakeDrive
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        srv = self.server
        host = self.headers.get("Host", "").split(":")[0]
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        srv.requests.append((host, self.path, dict(self.headers)))
        file_id = query.get("id", [""])[0]
        if host == "drive.google.com" and url.path == "/uc":
            if srv.mode == "quota":
                return self.html(200, QUOTA_PAGE)
            if srv.mode == "missing" or file_id not in srv.files:
                return self.html(404, MISSING_PAGE)
            return self.redirect(f"https://drive.usercontent.google.com/download?id={file_id}&export=download")
        if host == "drive.usercontent.google.com" and url.path == "/download" and file_id in srv.files:
            if query.get("confirm") != ["t"] or query.get("uuid") != [UUID]:
                return self.html(200, VIRUS_PAGE.format(name=srv.files[file_id][0], id=file_id, uuid=UUID))
            return self.file(*srv.files[file_id])
        return self.html(404, MISSING_PAGE)

    def html(self, status: int, page: str):
        body = page.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def redirect(self, location: str):
        self.send_response(303)
        self.send_header("Location", location)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def file(self, name: str, body: bytes):
        start, asked = 0, self.headers.get("Range")
        if asked and self.headers.get("If-Range", ETAG) == ETAG:
            start = int(asked.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        rest = body[start:]
        self.send_header("Content-Type", "application/x-gzip")
        self.send_header("Content-Disposition", f'attachment; filename="{name}"')
        self.send_header("Content-Length", str(len(rest)))
        self.send_header("ETag", ETAG)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.server.drop_next:
            self.server.drop_next = False
            self.wfile.write(rest[: len(rest) // 2])
            self.close_connection = True
            return
        self.wfile.write(rest)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def route_https_to(monkeypatch, proxy: str) -> None:
    """requests (inside gdown) sends every https request through `proxy` and trusts only the fake
    Drive certificate."""
    for var in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    monkeypatch.setenv("https_proxy", proxy)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(FIXTURES / "fake-drive.pem"))


@pytest.fixture
def fake_drive(monkeypatch):
    srv = FakeDrive()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    route_https_to(monkeypatch, srv.proxy)
    monkeypatch.setattr(drive, "RETRIES", 0)  # a dropped transfer ends the call: resume is the next one's
    yield srv
    srv.shutdown()
    srv.server_close()


# the layout of the lineage's archives: a folder per dataset, beside decoys with similar names
TOY_ARCHIVE = {f"toyd_data/toyd.{s}.txt": TOY[s] for s in data.SPLITS} | {
    "toyd_data/toyd.train.100.txt": b"a subset\n", "toyd_data/vocab.txt": b"the\ncat\n"}


def write_manifest(folder: Path, url: str, extra: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = "".join(f'{s} = ["toyd.{s}.txt", "{s}.txt"]\n' for s in data.SPLITS)
    (folder / "toyd.toml").write_text(
        f'name = "toyd"\nfamily = "ptb"\ndescription = "a Drive test corpus"\nurl = "{url}"\narchive = "tar.gz"\n'
        f"{extra}[files]\n{files}[lines]\ntrain = 4\nvalid = 2\ntest = 2\n")


@pytest.fixture
def toyd(tmp_path, monkeypatch, fake_drive):
    """Dataset toyd: a manifest whose url is Drive file FILE_ID, served by fake_drive."""
    fake_drive.files[FILE_ID] = ("datasets.tar.gz", tar_gz(TOY_ARCHIVE))
    monkeypatch.setenv("BENCH_MANIFESTS", str(tmp_path / "manifests"))
    write_manifest(tmp_path / "manifests", drive.drive_url(FILE_ID))
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "root"))  # the data directory of the CLI too
    return tmp_path / "root"


def part_files(root: Path) -> list[Path]:
    return sorted((root / "toyd" / data.DOWNLOAD_DIR).glob("*.part"))


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(("url", "file_id"), [
    ("https://drive.google.com/uc?id=1yH3Ufj20R06OX1prPMPS6E3fKSG_2MqN", "1yH3Ufj20R06OX1prPMPS6E3fKSG_2MqN"),
    ("https://drive.google.com/uc?export=download&id=abc-_1", "abc-_1"),
    ("https://drive.google.com/file/d/abc123/view?usp=sharing", "abc123"),
    ("https://docs.google.com/uc?id=xyz", "xyz"),
    ("http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz", None),
    ("https://example.org/uc?id=abc", None),
    ("https://drive.google.com/drive/folders", None),
])
def test_drive_file_id(url, file_id):
    assert drive.drive_file_id(url) == file_id


def test_the_lineage_drive_datasets_name_their_drive_files():
    """The ids the papers' prepare_data.py scripts download (He et al. 2019: yahoo and yelp share one
    archive; Li et al. 2019: short-yelp, snli); every one is a tar.gz checked by Table-1 line counts."""
    ids = {"yahoo": "1yH3Ufj20R06OX1prPMPS6E3fKSG_2MqN", "yelp": "1yH3Ufj20R06OX1prPMPS6E3fKSG_2MqN",
           "short-yelp": "18h8UYr801qr-USCYRzZySi_DSbUkHW71", "snli": "11NHEPxV7OrqmODozxQGezSU8093iUlUx"}
    for name, file_id in ids.items():
        m = data.get_manifest(name)
        assert drive.drive_file_id(m.url) == file_id and file_id in m.source
        assert data.archive_kind(m, "") == "tar.gz"
        assert m.sha256 or m.lines == {s: getattr(m.paper, s) for s in data.SPLITS}


def test_drive_fetch_passes_the_confirmation_page_verifies_and_imports(toyd, fake_drive):
    said: list[str] = []
    seen: list[tuple[int, int | None]] = []
    status = data.fetch("toyd", toyd, progress=lambda done, total: seen.append((done, total)), log=said.append)

    payload = fake_drive.files[FILE_ID][1]
    # Drive's dance: /uc -> redirect -> the virus-scan page -> the confirmed request gets the file
    hosts_paths = [(host, urllib.parse.urlsplit(path).path) for host, path, _ in fake_drive.requests]
    assert hosts_paths == [("drive.google.com", "/uc"), ("drive.usercontent.google.com", "/download"),
                           ("drive.usercontent.google.com", "/download")]
    confirmed = urllib.parse.parse_qs(urllib.parse.urlsplit(fake_drive.requests[-1][1]).query)
    assert confirmed["confirm"] == ["t"] and confirmed["uuid"] == [UUID] and confirmed["id"] == [FILE_ID]
    assert set(fake_drive.connects) == {"drive.google.com:443", "drive.usercontent.google.com:443"}

    assert status.present == list(data.SPLITS) and status.lines == {"train": 4, "valid": 2, "test": 2}
    for s in data.SPLITS:  # the splits, not the decoys beside them
        assert (toyd / "toyd" / f"{s}.txt").read_bytes() == TOY[s]
    corpus = data.load_corpus("toyd", toyd)
    assert corpus.vocab.decode(corpus.splits["test"].sentences[0]) == ["<s>", "<unk>", "sat", "</s>"]
    assert not (toyd / "toyd" / data.DOWNLOAD_DIR).exists()
    assert seen[-1] == (len(payload), len(payload))

    log = "\n".join(said)
    target = toyd / "toyd" / data.DOWNLOAD_DIR / "toyd.tar.gz"
    assert f"downloading https://drive.google.com/uc?id={FILE_ID} (Google Drive file {FILE_ID}" in log
    assert f"to {target}" in log and f"downloaded {len(payload):,} bytes" in log
    assert f"sha256 {hashlib.sha256(payload).hexdigest()} (no published checksum" in log
    assert "train: 4 lines (toyd_data/toyd.train.txt), as toyd.toml [lines]" in log

    n = len(fake_drive.requests)
    data.fetch("toyd", toyd, log=said.append)  # complete: nothing downloaded
    assert len(fake_drive.requests) == n and said[-1].startswith("toyd is already installed")


@pytest.mark.parametrize("right", [True, False])
def test_drive_fetch_checks_the_manifest_sha256(toyd, fake_drive, tmp_path, right):
    payload = fake_drive.files[FILE_ID][1]
    digest = hashlib.sha256(payload).hexdigest() if right else "0" * 64
    write_manifest(tmp_path / "manifests", drive.drive_url(FILE_ID), extra=f'sha256 = "{digest}"\n')
    said: list[str] = []
    if right:
        assert data.fetch("toyd", toyd, log=said.append).present == list(data.SPLITS)
        assert f"sha256 {digest}: as toyd.toml records" in said
        return
    target = toyd / "toyd" / data.DOWNLOAD_DIR / "toyd.tar.gz"
    message = (rf"checksum mismatch for https://drive.google.com/uc\?id={FILE_ID}: expected sha256 0{{64}}, "
               rf"got {hashlib.sha256(payload).hexdigest()}; delete {target}")
    with pytest.raises(BenchError, match=message):
        data.fetch("toyd", toyd)
    assert data.dataset_status("toyd", toyd).present == [] and target.read_bytes() == payload  # kept, not installed
    n = len(fake_drive.requests)
    with pytest.raises(BenchError, match="checksum mismatch"):  # the same verdict, without downloading again
        data.fetch("toyd", toyd)
    assert len(fake_drive.requests) == n


def test_drive_fetch_resumes_a_dropped_download(toyd, fake_drive):
    # gdown writes whole chunks of 512 KiB: the archive must be larger for a partial file to have bytes
    noise = random.Random(0).randbytes(1_500_000)
    payload = tar_gz(TOY_ARCHIVE | {"toyd_data/noise.bin": noise})
    fake_drive.files[FILE_ID] = ("datasets.tar.gz", payload)
    fake_drive.drop_next = True
    with pytest.raises(BenchError, match=r"broke off \(Download is incomplete.*\); the bytes received are kept in "
                                         r".*run `bench data fetch toyd` again to resume"):
        data.fetch("toyd", toyd)
    [part] = part_files(toyd)
    kept = part.stat().st_size
    assert 0 < kept <= len(payload) // 2 and part.read_bytes() == payload[:kept]
    assert data.dataset_status("toyd", toyd).present == []  # a partial download is never imported

    status = data.fetch("toyd", toyd)
    ranged = [headers for _, _, headers in fake_drive.requests if "Range" in headers]
    assert [h["Range"] for h in ranged] == [f"bytes={kept}-"] and ranged[0]["If-Range"] == ETAG
    assert status.present == list(data.SPLITS) and not (toyd / "toyd" / data.DOWNLOAD_DIR).exists()


def test_drive_fetch_retries_a_dropped_transfer_within_one_call(toyd, fake_drive, monkeypatch):
    monkeypatch.setattr(drive, "RETRIES", 2)
    monkeypatch.setattr(sys.modules["gdown.download"].random, "uniform", lambda a, b: 0.0)  # no back-off wait
    fake_drive.files[FILE_ID] = ("datasets.tar.gz", tar_gz(TOY_ARCHIVE | {"toyd_data/noise.bin":
                                                                          random.Random(1).randbytes(1_500_000)}))
    fake_drive.drop_next = True
    assert data.fetch("toyd", toyd).present == list(data.SPLITS)
    assert [h["Range"] for _, _, h in fake_drive.requests if "Range" in h] == ["bytes=524288-"]  # one 512-KiB chunk


def test_drive_quota_page_is_one_line_naming_the_way_out(toyd, fake_drive):
    fake_drive.mode = "quota"
    with pytest.raises(BenchError) as err:
        data.fetch("toyd", toyd)
    message = str(err.value)
    assert "\n" not in message
    assert f"Google Drive did not serve file {FILE_ID} of dataset 'toyd': Too many users have viewed" in message
    assert "Drive lifts the quota within 24 hours" in message
    assert f"download https://drive.google.com/uc?id={FILE_ID} in a browser" in message
    assert "bench data fetch toyd --archive FILE" in message
    assert data.dataset_status("toyd", toyd).present == []


def test_drive_missing_file_is_one_line(toyd, fake_drive):
    fake_drive.mode = "missing"
    with pytest.raises(BenchError, match=rf"Google Drive did not serve file {FILE_ID} of dataset 'toyd': .+; the "
                                         r"file may have moved or stopped being public.*--archive FILE") as err:
        data.fetch("toyd", toyd)
    assert "\n" not in str(err.value)


def test_drive_corrupt_archive_is_refused_and_nothing_installed(toyd, fake_drive):
    fake_drive.files[FILE_ID] = ("datasets.tar.gz", b"<html>not an archive</html>" * 50)
    target = toyd / "toyd" / data.DOWNLOAD_DIR / "toyd.tar.gz"
    with pytest.raises(BenchError, match=rf"{target} is not a readable tar.gz archive .*delete it"):
        data.fetch("toyd", toyd)
    assert data.dataset_status("toyd", toyd).present == []
    assert not [p for p in (toyd / "toyd").iterdir() if p.name.startswith(".fetch-")]  # no staging leftovers


def test_drive_line_count_mismatch_names_the_file_expected_and_found(toyd, fake_drive):
    fake_drive.files[FILE_ID] = ("datasets.tar.gz", tar_gz(TOY_ARCHIVE | {"toyd_data/toyd.train.txt": TOY["train"]
                                                                          + b"one more\n"}))
    target = toyd / "toyd" / data.DOWNLOAD_DIR / "toyd.tar.gz"
    with pytest.raises(BenchError, match=rf"toyd_data/toyd.train.txt in {target}: the train split has 5 lines, "
                                         r"expected 4 \(toyd.toml \[lines\]\)"):
        data.fetch("toyd", toyd)
    assert data.dataset_status("toyd", toyd).present == []


def test_drive_unreachable_is_one_line(toyd, monkeypatch):
    route_https_to(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(BenchError, match=rf"cannot reach Google Drive for https://drive.google.com/uc\?id={FILE_ID} "
                                         r"\(.+\); check the network") as err:
        data.fetch("toyd", toyd)
    assert "\n" not in str(err.value)


def test_drive_without_gdown_names_the_extra(toyd, fake_drive, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    with pytest.raises(BenchError, match=r"'toyd' downloads from Google Drive, which needs the gdown package: "
                                         r"pip install 'vae-collapse-bench\[drive\]'"):
        data.fetch("toyd", toyd)
    assert fake_drive.requests == []


def test_an_archive_downloaded_by_hand_is_verified_and_installed(toyd, fake_drive, tmp_path):
    archive = tmp_path / "Downloads" / "datasets.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(tar_gz(TOY_ARCHIVE))
    said: list[str] = []
    assert data.fetch("toyd", toyd, archive=archive, log=said.append).present == list(data.SPLITS)
    assert fake_drive.requests == [] and archive.exists()  # no download; the user's file left alone
    assert said[0].startswith(f"using {archive}, ")
    with pytest.raises(BenchError, match=r"--archive .*nowhere.tar.gz is not a file"):
        data.fetch("toyd", toyd, archive=tmp_path / "nowhere.tar.gz")
    (tmp_path / "bad.tar.gz").write_bytes(tar_gz({"toyd_data/toyd.valid.txt": TOY["valid"]}))
    with pytest.raises(BenchError, match=r"lacks the train, test split\(s\).*check that .*bad.tar.gz is the archive"):
        data.fetch("toyd", toyd, archive=tmp_path / "bad.tar.gz")


def test_bench_data_fetch_prints_source_destination_size_and_sha256(toyd, fake_drive, capsys):
    assert cli.main(["data", "fetch", "toyd", "--quiet"]) == 0
    out, err = capsys.readouterr()
    payload = fake_drive.files[FILE_ID][1]
    assert f"downloading https://drive.google.com/uc?id={FILE_ID}" in err
    assert f"downloaded {len(payload):,} bytes" in err and hashlib.sha256(payload).hexdigest() in err
    assert "toyd" in out and "present" in out

    fake_drive.mode = "quota"
    assert cli.main(["data", "fetch", "toyd", "--archive", str(toyd / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --archive") and len(err.strip().splitlines()) == 1


def test_the_shipped_yahoo_and_yelp_manifests_fetch_he_et_al_s_archive(tmp_path, fake_drive, monkeypatch):
    """yahoo.toml and yelp.toml as shipped, against an archive in the layout of He et al.'s
    datasets.tar.gz (one archive, both corpora; yelp labelled): each picks its own files, and the
    Table-1 counts (100k/10k/10k) are what is checked."""
    monkeypatch.delenv("BENCH_MANIFESTS", raising=False)

    def lines(n: int, label: bool) -> bytes:
        return b"".join(b"%s%s w%d end\n" % (b"%d\t" % (i % 5) if label else b"", b"word", i % 7) for i in range(n))

    sizes = {"train": 100_000, "valid": 10_000, "test": 10_000}
    members = {f"datasets/{name}_data/{name}.{s}.txt": lines(n, name == "yelp")
               for name in ("yahoo", "yelp") for s, n in sizes.items()}
    fake_drive.files["1yH3Ufj20R06OX1prPMPS6E3fKSG_2MqN"] = ("datasets.tar.gz", tar_gz(members))
    root = tmp_path / "root"
    for name in ("yahoo", "yelp"):
        status = data.fetch(name, root)
        assert status.lines == sizes and status.notes == []
        assert (root / name / "valid.txt").read_bytes() == members[f"datasets/{name}_data/{name}.valid.txt"]
    assert data.load_corpus("yelp", root).splits["test"].labels is not None


def _raising(exc: BaseException):
    def download(**kwargs):
        raise exc
    return download


def _with_cause(exc: BaseException, cause: BaseException) -> BaseException:
    exc.__cause__ = cause
    return exc


def _http_error(status: int, reason: str):
    import requests

    response = requests.Response()
    response.status_code, response.reason = status, reason
    return requests.HTTPError(f"{status} {reason}", response=response)


@pytest.mark.parametrize(("make", "message"), [
    (lambda g, r: _with_cause(g.exceptions.DownloadError("Download failed after 3 retries: x"),
                              r.ConnectionError("Failed to resolve ([Errno -3] Temporary failure in name resolution)")),
     r"cannot reach Google Drive for .*\(Temporary failure in name resolution\); check the network"),
    (lambda g, r: g.exceptions.DownloadError("Server did not honor the requested byte range; the partial file is "
                                             "preserved."),
     r"cannot resume the download .*byte range asked for\); the partial download was removed: run .* start over"),
    (lambda g, r: _http_error(403, "Forbidden"), r"cannot download https://drive.google.com/uc\?id=\S+: HTTP 403 "
                                                 r"Forbidden; run `bench data fetch toyd` again later"),
    (lambda g, r: OSError(28, "No space left on device"), r"cannot write the download to .*No space left on device"),
])
def test_drive_failures_gdown_reports_become_one_line(make, message, toyd, monkeypatch):
    """What gdown raises for the failures the imitation cannot stage (retries exhausted, a server
    without ranges, an HTTP error on the file, a full disk) ends as one BenchError line."""
    import gdown
    import requests

    folder = toyd / "toyd" / data.DOWNLOAD_DIR
    folder.mkdir(parents=True)
    stale = folder / "toyd.tar.gzabcd1234.part"
    stale.write_bytes(b"x")
    monkeypatch.setattr(gdown, "download", _raising(make(gdown, requests)))
    with pytest.raises(BenchError, match=message) as err:
        data.fetch("toyd", toyd)
    assert "\n" not in str(err.value)
    assert stale.exists() == ("byte range" not in message)  # only an unresumable partial is removed
