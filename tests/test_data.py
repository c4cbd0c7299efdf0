"""bench.data: manifests, import of the shared corpora, *-mini variants, bad input, batching, stats,
and fetch (resume, checksum, line counts) against a local HTTP server started by the test."""

from __future__ import annotations

import hashlib
import math
import re
import socket
import statistics
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from helpers import TOY, tar_gz
from vae_collapse_bench.bench import data
from vae_collapse_bench.bench.backbone import DEFAULT_PAPER_BACKBONE
from vae_collapse_bench.bench.data import BOS, EOS, SPECIALS, UNK, Split, Vocab
from vae_collapse_bench.bench.errors import BenchError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is absent")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def tiny_folder(folder: Path, train: str = "a b c\nb c\nd\ne f\n", valid: str = "a d\n",
                test: str = "z a\nb\n") -> Path:
    """The smallest corpus a run accepts: 2 train sentences of one length, 1 valid, 2 test."""
    write(folder / "train.txt", train)
    write(folder / "valid.txt", valid)
    write(folder / "test.txt", test)
    return folder


# ------------------------------------------------------------------------------------- manifests


def test_repo_manifests_parse_and_describe_the_paper_datasets():
    ms = data.manifests()
    assert {"yahoo", "yelp", "short-yelp", "snli", "ptb", "synthetic",
            "snli-mini", "yahoo-mini", "short-yelp-mini"} <= set(ms)
    for name in ("yahoo", "yelp", "short-yelp", "snli", "ptb"):
        assert ms[name].paper is not None and ms[name].paper.train > 0 and ms[name].files
        assert ms[name].paper_stats["vocab"] == ms[name].paper.vocab
    assert ms["yelp"].labelled and ms["short-yelp"].labelled and not ms["yahoo"].labelled
    assert ms["ptb"].url and ms["ptb"].lines == {"train": 42068, "valid": 3370, "test": 3761}
    for mini in ("snli-mini", "yahoo-mini", "short-yelp-mini"):
        m = ms[mini]
        assert m.base == mini.removesuffix("-mini") and m.family == ms[m.base].family
        assert m.derive["train"] == data.Take("valid", 0, 8000) and m.derive["test"].split == "test"


def test_unknown_dataset_suggests_close_match():
    with pytest.raises(BenchError, match=r"unknown dataset 'snil'.*did you mean 'snli'"):
        data.get_manifest("snil")
    with pytest.raises(BenchError, match="did you mean"):
        data.load_corpus("yaho", Path("/nonexistent"))


def test_bad_manifest_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_MANIFESTS", str(tmp_path))
    head = 'name = "odd"\nfamily = "odd"\ndescription = "x"\n[backbone]\n'
    sizes = "emb_dim = 8\nenc_hidden = 8\ndec_hidden = 8\n"
    for table, message in [
        (sizes, "needs latent_dim"),
        (sizes + "latent_dim = 0\n", "latent_dim must be a positive integer, got 0"),
        (sizes + "latent_dim = 2\ndec_dropout_in = 1.5\n", r"dec_dropout_in must be a number in \[0, 1\)"),
        (sizes + "latent_dim = 2\nwidth = 3\n", r"has unknown key\(s\) \['width'\]"),
    ]:
        write(tmp_path / "odd.toml", head + table)
        with pytest.raises(BenchError, match=r"odd\.toml: \[backbone\] " + message):
            data.get_manifest("odd")
    # a family is resolved when its backbone is needed: one that names no manifest is named then
    write(tmp_path / "odd.toml", 'name = "odd"\nfamily = "imdb"\ndescription = "x"\n')
    assert data.get_manifest("odd").family == "imdb"
    with pytest.raises(BenchError, match=r"odd\.toml: family 'imdb' names no dataset manifest"):
        data.paper_backbone("odd")


# ----------------------------------------------------------------------------- shared corpora


@needs_shared
def test_import_ptb_has_all_splits(tmp_path):
    status = data.import_folder("ptb", SHARED / "ptb", tmp_path)
    assert status.present == ["train", "valid", "test"] and status.missing == []
    assert status.lines == {"train": 42068, "valid": 3370, "test": 3761}
    assert status.notes == []
    assert (tmp_path / "ptb" / "train.txt").read_bytes() == (SHARED / "ptb" / "ptb.train.txt").read_bytes()
    assert not [p for p in (tmp_path / "ptb").iterdir() if p.name.startswith(".")]  # no temp leftovers


@needs_shared
def test_import_snli_reports_missing_train_and_snli_mini_loads(tmp_path):
    status = data.import_folder("snli", SHARED / "snli", tmp_path)
    assert status.present == ["valid", "test"] and status.missing == ["train"]
    with pytest.raises(BenchError, match=r"no train split.*bench data import snli FOLDER.*snli-mini"):
        data.load_corpus("snli", tmp_path)

    corpus = data.load_corpus("snli-mini", tmp_path)
    assert {s: len(corpus.splits[s]) for s in data.SPLITS} == {"train": 8000, "valid": 2000, "test": 10000}
    assert corpus.family == "snli" and corpus.splits["train"].labels is None
    valid_lines = (SHARED / "snli" / "snli.valid.txt").read_text().split("\n")
    first = corpus.vocab.decode(corpus.splits["train"].sentences[0][1:-1])
    assert first == valid_lines[0].split()
    assert corpus.vocab.decode(corpus.splits["valid"].sentences[0][1:-1]) == [
        corpus.vocab.itos[i] for i in corpus.vocab.encode(valid_lines[8000].split())
    ]
    assert data.dataset_status("snli-mini", tmp_path).lines == {"train": 8000, "valid": 2000, "test": 10000}


@needs_shared
def test_short_yelp_mini_strips_labels(tmp_path):
    status = data.import_folder("short-yelp", SHARED / "short_yelp", tmp_path)
    assert status.missing == ["train"]  # short_yelp.train.10000.txt is a subset, not the train split
    corpus = data.load_corpus("short-yelp-mini", tmp_path)
    train = corpus.splits["train"]
    assert len(train.labels) == len(train) == 8000 and set(train.labels) == {"0", "1"}
    first = (SHARED / "short_yelp" / "short_yelp.valid.txt").read_text().split("\n")[0]
    assert corpus.vocab.decode(train.sentences[0][1:-1]) == first.split("\t", 1)[1].split()


def test_mini_without_base_names_the_import(tmp_path):
    with pytest.raises(BenchError, match=r"derived from 'snli'.*bench data import snli FOLDER"):
        data.load_corpus("snli-mini", tmp_path)


def test_bad_line_in_a_derived_split_names_the_base_file_line(tmp_path):
    root = tmp_path / "root"
    valid = ["1\tfine text"] * 10000
    valid[8001] = "no tab here"
    write(root / "short-yelp" / "valid.txt", "\n".join(valid) + "\n")
    write(root / "short-yelp" / "test.txt", "0\tok\n")
    with pytest.raises(BenchError, match=r"short-yelp/valid\.txt: line 8002 has no TAB"):
        data.load_corpus("short-yelp-mini", root)


def test_mini_with_short_base_split_is_an_error(tmp_path):
    tiny_folder(tmp_path / "in")
    data.import_folder("snli", tmp_path / "in", tmp_path / "root")
    with pytest.raises(BenchError, match="has only 1"):
        data.load_corpus("snli-mini", tmp_path / "root")


# -------------------------------------------------------------------------------------- bad input


def test_invalid_utf8_names_file_and_line(tmp_path):
    folder = tiny_folder(tmp_path / "in")
    write(folder / "train.txt", b"a b\nc d\ne \xff f\ng\n")
    with pytest.raises(BenchError, match=r"train\.txt: line 3 is not valid UTF-8"):
        data.import_folder("ptb", folder, tmp_path / "root")
    assert not (tmp_path / "root" / "ptb" / "valid.txt").exists()  # nothing installed from a bad folder


def test_bad_file_in_data_dir_is_reported_on_load(tmp_path):
    root = tmp_path / "root"
    tiny_folder(root / "ptb")
    write(root / "ptb" / "test.txt", "ok\n\nstill ok\n")
    with pytest.raises(BenchError, match=r"ptb/test\.txt: line 2 is empty"):
        data.load_corpus("ptb", root)


def test_labelled_line_without_tab(tmp_path):
    folder = tmp_path / "in"
    write(folder / "short_yelp.valid.txt", "1\tgood food\n0 bad food\n")
    with pytest.raises(BenchError, match=r"short_yelp\.valid\.txt: line 2 has no TAB.*label<TAB>text"):
        data.import_folder("short-yelp", folder, tmp_path / "root")


def test_empty_file_and_empty_line(tmp_path):
    folder = tiny_folder(tmp_path / "in", valid="")
    with pytest.raises(BenchError, match=r"valid\.txt is empty"):
        data.import_folder("ptb", folder, tmp_path / "root")
    tiny_folder(folder, test="a\n   \nb\n")
    with pytest.raises(BenchError, match=r"test\.txt: line 2 is empty"):
        data.import_folder("ptb", folder, tmp_path / "root")


def test_folder_without_splits_and_not_imported(tmp_path):
    write(tmp_path / "in" / "notes.txt", "hello\n")
    with pytest.raises(BenchError, match="holds none of the ptb split files"):
        data.import_folder("ptb", tmp_path / "in", tmp_path / "root")
    with pytest.raises(BenchError, match=r"'ptb' is not in .*bench data fetch ptb.*bench data import ptb FOLDER"):
        data.load_corpus("ptb", tmp_path / "root")


def test_missing_split_on_load(tmp_path):
    write(tmp_path / "in" / "ptb.train.txt", "a b\nc d\n")
    write(tmp_path / "in" / "ptb.test.txt", "a\nb\n")
    status = data.import_folder("ptb", tmp_path / "in", tmp_path / "root")
    assert status.missing == ["valid"]
    with pytest.raises(BenchError, match=r"no valid split .*valid\.txt is missing"):
        data.load_corpus("ptb", tmp_path / "root")


def test_import_keeps_line_ends_exact_and_notes_odd_counts(tmp_path):
    folder = tiny_folder(tmp_path / "in", train="a b\r\nc d\n")
    status = data.import_folder("ptb", folder, tmp_path / "root")
    assert status.notes[0].startswith("train: 2 lines, the manifest expects 42068")
    corpus = data.load_corpus("ptb", tmp_path / "root")
    assert corpus.vocab.decode(corpus.splits["train"].sentences[0]) == ["<s>", "a", "b", "</s>"]


# ----------------------------------------------------------------------------- vocab, corpus, batches


def test_vocab_round_trip_and_specials():
    vocab = Vocab.build([["the", "cat"], ["a", "<unk>", "the"]])
    assert vocab.itos[:4] == SPECIALS and vocab.itos[4:] == ["the", "cat", "a"]
    assert len(vocab) == 7 and vocab.encode(["cat", "dog", "<unk>"]) == [5, UNK, UNK]
    assert vocab.decode(vocab.encode(["a", "the", "cat"])) == ["a", "the", "cat"]
    assert vocab.decode(torch.tensor([BOS, 4, EOS])) == ["<s>", "the", "</s>"]


def tiny_corpus() -> data.Corpus:
    lines = {"train": ["a b", "c", "a b c d e", "b", "c d e", "a a a"], "valid": ["a x"], "test": ["b"]}
    return data.build_corpus("tiny", "ptb", lines, labelled=False)


def test_corpus_tensors_checksum_and_truncation():
    corpus = tiny_corpus()
    assert corpus.splits["train"].sentences[0].tolist() == [BOS, 4, 5, EOS]
    assert corpus.splits["valid"].sentences[0].tolist() == [BOS, 4, UNK, EOS]
    assert corpus.splits["train"].n_predicted_tokens() == (2 + 1 + 5 + 1 + 3 + 3) + 6
    small = corpus.truncated(max_train=2, max_test=0)
    assert len(small.splits["train"]) == 2 and len(small.splits["test"]) == 0 and len(small.splits["valid"]) == 1
    assert small.checksum == corpus.checksum and small.vocab is corpus.vocab
    assert len(corpus.splits["train"]) == 6  # the original is untouched


def test_checksum_depends_on_split_membership():
    a = {"train": ["x", "y"], "valid": ["z"], "test": ["w"]}
    b = {"train": ["x"], "valid": ["y", "z"], "test": ["w"]}
    assert data.text_checksum(a) != data.text_checksum(b)
    assert data.text_checksum(a) == data.text_checksum({k: list(v) for k, v in a.items()})
    want = hashlib.sha256(b"#train 2\nx\ny\n#valid 1\nz\n#test 1\nw\n").hexdigest()
    assert data.text_checksum(a) == want


def random_split(n: int = 200, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 9, (n,), generator=g).tolist()
    return Split("train", [torch.full((t,), i, dtype=torch.long) for i, t in enumerate(lengths)])


def test_length_batches_cover_once_without_padding():
    split = random_split()
    for gen in (None, torch.Generator().manual_seed(1)):
        batches = data.length_batches(split, 7, gen)
        assert all(b.dim() == 2 and 1 <= b.shape[0] <= 7 for b in batches)
        seen = sorted(int(b[r, 0]) for b in batches for r in range(b.shape[0]))
        assert seen == list(range(len(split)))  # each sentence exactly once (row value = its index)
        for b in batches:  # uniform length: every row is its sentence, unpadded
            assert all(len(split.sentences[int(row[0])]) == b.shape[1] for row in b)
    plain = data.length_batches(split, 7)
    assert [b.shape[1] for b in plain] == sorted(b.shape[1] for b in plain)
    assert [int(b[0, 0]) for b in plain][:1] == [min(i for i, s in enumerate(split.sentences) if len(s) == 3)]


def test_length_batches_reproducible_from_generator():
    split = random_split()

    def order(seed):
        return [b[:, 0].tolist() for b in data.length_batches(split, 5, torch.Generator().manual_seed(seed))]

    assert order(3) == order(3)
    assert order(3) != order(4)
    with pytest.raises(BenchError, match="batch size"):
        data.length_batches(split, 0)


# ------------------------------------------------------------------------------------------ stats


def test_corpus_stats_by_hand(tmp_path):
    # train: 1, 1, 3 and 5 words -> lengths with <s> </s> 3, 3, 5, 7: mean 4.5, population std sqrt(11/4)
    folder = tiny_folder(tmp_path / "in", train="a\nc\na b c\nb c d a e\n", valid="a b\nc\n", test="q\nq\n")
    data.import_folder("ptb", folder, tmp_path / "root")
    stats = data.corpus_stats("ptb", tmp_path / "root")
    train = stats["splits"]["train"]
    assert (train["sentences"], train["tokens"], train["predicted_tokens"]) == (4, 10, 14)
    assert train["mean_length"] == pytest.approx(4.5) and train["std_length"] == pytest.approx(math.sqrt(11 / 4))
    assert (train["min_length"], train["max_length"]) == (3, 7)
    valid = stats["splits"]["valid"]
    assert valid["mean_length"] == pytest.approx(3.5) and valid["std_length"] == pytest.approx(0.5)
    assert stats["vocab_size"] == 4 + 5 and stats["paper"]["train"] == 42068
    assert train["std_length"] == pytest.approx(statistics.pstdev([3, 3, 5, 7]))


# ------------------------------------------------------------------------------------------ fetch


class RangeServer(ThreadingHTTPServer):
    payload = b""
    honour_range = True
    drop_next = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.requests: list[dict] = []


class RangeHandler(BaseHTTPRequestHandler):
    server: RangeServer

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append(dict(self.headers))
        data_, start = srv.payload, 0
        asked = self.headers.get("Range")
        if asked and srv.honour_range:
            start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(data_):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data_)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data_) - 1}/{len(data_)}")
        else:
            self.send_response(200)
        body = data_[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if srv.drop_next:  # half the body, then the connection goes away
            srv.drop_next = False
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = RangeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def toy_manifest(folder: Path, url: str, extra: str = "", members: bool = True) -> None:
    where = ("[members]\n" + "".join(f'{s} = "./toy/data/toy.{s}.txt"\n' for s in data.SPLITS)) if members else (
        "[files]\n" + "".join(f'{s} = ["toy.{s}.txt"]\n' for s in data.SPLITS))
    lines = "[lines]\ntrain = 4\nvalid = 2\ntest = 2\n"
    write(folder / "toy.toml", f'name = "toy"\nfamily = "ptb"\ndescription = "test corpus"\nurl = "{url}"\n'
                               f"{extra}{where}{lines}")


@pytest.fixture
def toy(tmp_path, monkeypatch, server):
    server.payload = tar_gz({f"./toy/data/toy.{s}.txt": TOY[s] for s in data.SPLITS} | {"./toy/README": b"x\n"})
    monkeypatch.setenv("BENCH_MANIFESTS", str(tmp_path / "manifests"))
    url = f"http://127.0.0.1:{server.server_address[1]}/toy.tar.gz"
    toy_manifest(tmp_path / "manifests", url)
    return url


def test_fetch_resumes_after_dropped_connection(tmp_path, server, toy):
    root = tmp_path / "root"
    server.drop_next = True
    with pytest.raises(BenchError, match=r"connection closed after .* run the same command again to resume"):
        data.fetch("toy", root)
    part = root / "toy" / ".download" / "toy.tar.gz.part"
    half = len(server.payload) // 2
    assert part.stat().st_size == half

    seen = []
    status = data.fetch("toy", root, progress=lambda done, total: seen.append((done, total)))
    assert server.requests[-1]["Range"] == f"bytes={half}-" and server.requests[-1]["If-Range"] == '"v1"'
    assert seen[-1] == (len(server.payload), len(server.payload))
    assert status.present == list(data.SPLITS) and status.lines == {"train": 4, "valid": 2, "test": 2}
    assert not (root / "toy" / ".download").exists()
    corpus = data.load_corpus("toy", root)
    assert len(corpus.splits["train"]) == 4 and corpus.vocab.decode(corpus.splits["test"].sentences[0]) == [
        "<s>", "<unk>", "sat", "</s>"]  # "dogs" is not in train
    n_requests = len(server.requests)
    data.fetch("toy", root)  # complete: nothing downloaded
    assert len(server.requests) == n_requests


def test_fetch_restarts_when_server_ignores_range(tmp_path, server, toy, monkeypatch):
    toy_manifest(tmp_path / "manifests", toy, members=False)  # found by file name this time
    server.honour_range = False
    part = write(tmp_path / "root" / "toy" / ".download" / "toy.tar.gz.part", b"garbage-from-another-file")
    data.fetch("toy", tmp_path / "root")
    assert server.requests[-1].get("Range") == f"bytes={len(b'garbage-from-another-file')}-"
    assert not part.exists() and data.dataset_status("toy", tmp_path / "root").missing == []


def test_fetch_checksum_mismatch(tmp_path, server, toy):
    toy_manifest(tmp_path / "manifests", toy, extra=f'sha256 = "{"0" * 64}"\n')
    got = hashlib.sha256(server.payload).hexdigest()
    with pytest.raises(BenchError, match=rf"expected sha256 {'0' * 64}, got {got}; delete .*toy\.tar\.gz\.part"):
        data.fetch("toy", tmp_path / "root")
    assert data.dataset_status("toy", tmp_path / "root").present == []  # nothing installed


def test_fetch_line_count_mismatch(tmp_path, server, toy):
    server.payload = tar_gz({f"./toy/data/toy.{s}.txt": TOY[s] + b"one more\n" for s in data.SPLITS})
    with pytest.raises(BenchError, match=r"train split has 5 lines, expected 4"):
        data.fetch("toy", tmp_path / "root")


def test_fetch_unreachable_and_no_url(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_MANIFESTS", str(tmp_path / "m"))
    port = free_port()
    toy_manifest(tmp_path / "m", f"http://127.0.0.1:{port}/toy.tar.gz")
    with pytest.raises(BenchError, match=rf"cannot download http://127.0.0.1:{port}/toy.tar.gz.*fetch toy --archive"):
        data.fetch("toy", tmp_path / "root")
    toy_manifest(tmp_path / "m", "")
    with pytest.raises(BenchError, match=r"'toy' has no direct download.*bench data import toy FOLDER"):
        data.fetch("toy", tmp_path / "root")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@needs_shared
def test_ptb_manifest_members_match_the_release_layout(tmp_path, monkeypatch, server):
    """The real ptb.toml (URL pointed at the local server) finds its files in a simple-examples.tgz."""
    members = {f"./simple-examples/data/ptb.{s}.txt": (SHARED / "ptb" / f"ptb.{s}.txt").read_bytes()
               for s in data.SPLITS}
    server.payload = tar_gz(members | {"./simple-examples/data/ptb.char.train.txt": b"a _ b\n"})
    text = (data.manifest_dir() / "ptb.toml").read_text()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple-examples.tgz"
    text = text.replace("http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz", url)
    write(tmp_path / "m" / "ptb.toml", text)
    monkeypatch.setenv("BENCH_MANIFESTS", str(tmp_path / "m"))
    status = data.fetch("ptb", tmp_path / "root")
    assert status.lines == {"train": 42068, "valid": 3370, "test": 3761} and status.notes == []


# ------------------------------------------------------------------------------ robustness (issue)


def test_bundled_manifests_are_the_repositorys_in_a_source_tree():
    assert data.bundled_manifest_dir() == Path(__file__).resolve().parents[1] / "datasets"
    assert data.manifest_dir() == data.bundled_manifest_dir()


def test_bench_manifests_must_be_an_existing_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_MANIFESTS", str(tmp_path / "nope"))
    with pytest.raises(BenchError, match=rf"BENCH_MANIFESTS={tmp_path / 'nope'}: .* does not exist; point "):
        data.manifests()
    with pytest.raises(BenchError, match="BENCH_MANIFESTS"):
        data.get_manifest("synthetic")
    monkeypatch.setenv("BENCH_MANIFESTS", str(write(tmp_path / "file.toml", "")))
    with pytest.raises(BenchError, match=r"BENCH_MANIFESTS=.*file\.toml is not a folder"):
        data.manifests()


def test_utf8_bom_is_stripped(tmp_path):
    plain = tiny_folder(tmp_path / "plain", train="ab c\nd e\n")
    bom = tiny_folder(tmp_path / "bom", train="\ufeffab c\nd e\n", test="\ufeffz a\nb\n")
    data.import_folder("ptb", plain, tmp_path / "r1")
    data.import_folder("ptb", bom, tmp_path / "r2")
    c1, c2 = data.load_corpus("ptb", tmp_path / "r1"), data.load_corpus("ptb", tmp_path / "r2")
    assert c2.vocab.decode(c2.splits["train"].sentences[0]) == ["<s>", "ab", "c", "</s>"]
    assert "\ufeffab" not in c2.vocab.stoi and c2.vocab.itos == c1.vocab.itos
    assert c2.checksum == c1.checksum  # the BOM is not part of the text
    write(tmp_path / "in" / "short_yelp.valid.txt", "\ufeff1\tgood food\n")  # labelled: the label is clean
    data.import_folder("short-yelp", tmp_path / "in", tmp_path / "r3")
    assert data.read_lines(tmp_path / "r3" / "short-yelp" / "valid.txt") == ["1\tgood food"]


@pytest.mark.parametrize(
    ("split", "text", "message"),
    [
        ("test", "z a\n", r"the test split \(.*test\.txt\) has 1 sentence, fewer than the 2 a run needs"),
        ("train", "a b\n", r"the train split \(.*train\.txt\) has 1 sentence, fewer than the 2 a run needs"),
        ("train", "a\na b\na b c\n", r"train split \(.*\) has 3 sentences but no 2 of one length; a run needs "
                                     r"at least 2 training sentences of one length"),
    ],
)
def test_too_small_splits_are_refused_at_import_and_load(tmp_path, split, text, message):
    folder = tiny_folder(tmp_path / "in", **{split: text})
    with pytest.raises(BenchError, match=message + r".*import a folder with a larger " + split):
        data.import_folder("ptb", folder, tmp_path / "root")
    assert not (tmp_path / "root" / "ptb" / f"{split}.txt").exists()  # nothing installed
    tiny_folder(tmp_path / "root" / "ptb", **{split: text})  # put there by hand: refused at load (run start)
    with pytest.raises(BenchError, match=message + r".*bench data import ptb FOLDER"):
        data.load_corpus("ptb", tmp_path / "root")


def test_smallest_corpus_is_accepted_and_a_derived_split_too_small_is_named(tmp_path):
    data.import_folder("ptb", tiny_folder(tmp_path / "in"), tmp_path / "root")
    assert len(data.load_corpus("ptb", tmp_path / "root").splits["test"]) == 2
    write(tmp_path / "root" / "snli" / "valid.txt", "".join(f"w{i % 5} x\n" for i in range(10000)))
    write(tmp_path / "root" / "snli" / "test.txt", "one line\n")
    with pytest.raises(BenchError, match=r"'snli-mini': the test split \(lines 1-1 of .*snli/test\.txt\) has 1 "
                                         r"sentence, fewer than the 2 .*import the complete snli test split"):
        data.load_corpus("snli-mini", tmp_path / "root")


def test_a_one_line_corpus_ends_the_run_with_a_one_line_error(tmp_path, monkeypatch, capsys):
    from vae_collapse_bench.bench.cli import main

    tiny_folder(tmp_path / "data" / "ptb", train="a b\n", valid="a\n", test="a b\n")
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "results"))
    monkeypatch.delenv("BENCH_STORAGE", raising=False)
    assert main(["run", "--methods", "vae", "--dataset", "ptb", "--profile", "smoke", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset 'ptb': the train split") and len(err.strip().splitlines()) == 1, err


def test_line_count_mismatch_is_noted_listed_and_kept_with_the_corpus(tmp_path):
    folder = tiny_folder(tmp_path / "in", train="a b\r\nc d\n")
    status = data.import_folder("ptb", folder, tmp_path / "root")
    assert status.line_mismatches == {"train": (2, 42068), "valid": (1, 3370), "test": (2, 3761)}
    assert len(status.notes) == 3 and "the manifest expects 42068" in status.notes[0]
    assert status.summary == ("present; lines differ from the manifest: train 2 (expects 42,068), "
                              "valid 1 (expects 3,370), test 2 (expects 3,761)")
    assert data.load_corpus("ptb", tmp_path / "root").notes == data.line_count_notes("ptb", tmp_path / "root")
    assert data.line_count_notes("ptb", tmp_path / "root") == status.notes


@needs_shared
def test_sentence_split_yahoo_is_flagged_and_the_real_one_is_not(tmp_path):
    """The brief's case: Yahoo split into sentences (one line per sentence) imported as `yahoo`."""
    status = data.import_folder("yahoo", SHARED / "yahoo", tmp_path / "real")
    assert status.notes == [] and data.line_count_notes("yahoo-mini", tmp_path / "real") == []
    assert data.dataset_status("yahoo", tmp_path / "real").summary == "missing train"

    def sentences(path: Path) -> str:
        lines = path.read_text(encoding="utf-8").splitlines()
        return "".join(part.strip() + " .\n" for line in lines for part in line.split(" . ") if part.strip(" ."))

    write(tmp_path / "split" / "valid.txt", sentences(SHARED / "yahoo" / "val.txt"))
    write(tmp_path / "split" / "test.txt", sentences(SHARED / "yahoo" / "test.txt"))
    status = data.import_folder("yahoo", tmp_path / "split", tmp_path / "root")
    n_valid = status.lines["valid"]
    assert n_valid > 30000 and status.line_mismatches["valid"] == (n_valid, 10000)
    assert any(note.startswith(f"valid: {n_valid} lines, the manifest expects 10000") for note in status.notes)
    assert f"valid {n_valid:,} (expects 10,000)" in status.summary
    mini = data.dataset_status("yahoo-mini", tmp_path / "root")  # its ranges match; its base does not
    n_test = status.lines["test"]
    assert mini.line_mismatches == {"yahoo valid": (n_valid, 10000), "yahoo test": (n_test, 10000)}
    corpus = data.load_corpus("yahoo-mini", tmp_path / "root")
    assert any(note.startswith(f"yahoo valid: {n_valid} lines") for note in corpus.notes)


def _probe_writable(folder: Path) -> bool:
    try:
        (folder / ".probe").write_text("x")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


def test_bench_data_a_file_or_under_a_file_is_one_error_naming_it(tmp_path, monkeypatch, capsys):
    from vae_collapse_bench.bench.cli import main

    folder = tiny_folder(tmp_path / "in")
    a_file = write(tmp_path / "a-file", "not a folder\n")
    monkeypatch.setenv("BENCH_DATA", str(a_file))
    for call in (lambda: data.import_folder("ptb", folder), lambda: data.load_corpus("synthetic"),
                 lambda: data.fetch("synthetic"), lambda: data.dataset_status("ptb")):
        with pytest.raises(BenchError, match=rf"data directory {a_file} is not a folder; set BENCH_DATA to a folder"):
            call()
    monkeypatch.setenv("BENCH_DATA", str(a_file / "data"))  # fails to be created, even for root
    for call in (lambda: data.import_folder("ptb", folder), lambda: data.load_corpus("synthetic"),
                 lambda: data.fetch("synthetic")):
        with pytest.raises(BenchError, match=rf"cannot write to the data directory {a_file / 'data'} \(a part of "
                                             r"that path is a file, not a folder\); set BENCH_DATA to a writable"):
            call()
    assert data.dataset_status("ptb").missing == list(data.SPLITS)  # reading an absent folder is fine
    assert main(["data", "import", "ptb", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write to the data directory") and len(err.strip().splitlines()) == 1


def test_bench_data_read_only_is_one_error_naming_it(tmp_path, monkeypatch):
    """chmod 0o500; as root, where permissions do not stop writes, os.mkdir inside it fails as they would."""
    import errno
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if _probe_writable(ro):
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if Path(path) != ro and Path(path).is_relative_to(ro):  # creating in it, as EACCES would
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setenv("BENCH_DATA", str(ro))
    try:
        with pytest.raises(BenchError, match=rf"cannot write to the data directory {ro} \(Permission denied\); "
                                             "set BENCH_DATA to a writable folder"):
            data.load_corpus("synthetic")
        with pytest.raises(BenchError, match="set BENCH_DATA to a writable folder"):
            data.import_folder("ptb", tiny_folder(tmp_path / "in"))
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------------------ users' own corpora


def own_corpus(folder: Path) -> dict[str, Path]:
    """A two-file corpus (valid + test), a few dozen lines: the first 40 valid lines (train after
    --derive-train-from valid:40) hold 36 sentences of 4 words, so even dg-vae's largest aggregation
    group (32) finds a length-bucketed batch."""
    words = ["the", "cat", "dog", "sat", "ran", "a", "on", "mat", "big", "red"]
    line = lambda i, n: " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(n))  # noqa: E731
    valid = [line(i, 4) for i in range(36)] + [line(i, 3) for i in range(4)] + [line(i, 2 + i % 4) for i in range(12)]
    test = [line(i + 5, 2 + i % 5) for i in range(24)]
    return {"valid": write(folder / "v.txt", "\n".join(valid) + "\n"),
            "test": write(folder / "t.txt", "\n".join(test) + "\n")}


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    """BENCH_DATA and BENCH_HOME under tmp_path, no BENCH_MANIFESTS: the lookup a user has."""
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_HOME", str(tmp_path / "results"))
    for var in ("BENCH_MANIFESTS", "BENCH_STORAGE"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "data"


def test_two_commands_bring_your_own_two_file_corpus(tmp_path, data_env, capsys):
    """The story: valid + test files, `bench data add ... --derive-train-from valid:N`, then `bench run`."""
    from vae_collapse_bench.bench.cli import main

    files = own_corpus(tmp_path / "mine")
    assert main(["data", "add", "mycorpus", "--valid", str(files["valid"]), "--test", str(files["test"]),
                 "--derive-train-from", "valid:40"]) == 0
    out = capsys.readouterr().out
    assert "added mycorpus: 40/12/24 sentences" in out and "256/256/256, D = 32 (the default)" in out
    assert main(["run", "--methods", "vae,dg-vae", "--dataset", "mycorpus", "--profile", "smoke", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert " 0 failed" in out and "trained" in out

    m = data.get_manifest("mycorpus")
    assert m.path == data_env / "manifests" / "mycorpus.toml" and m.kind == "plain" and m.family == "mycorpus"
    assert m.derive == {"train": data.Take("valid", 0, 40), "valid": data.Take("valid", 40, None),
                        "test": data.Take("test", 0, None)}
    assert m.lines == {"train": 40, "valid": 12, "test": 24}
    assert m.file_sha256 == {s: hashlib.sha256(files[s].read_bytes()).hexdigest() for s in ("valid", "test")}
    assert sorted(p.name for p in (data_env / "mycorpus").iterdir()) == ["test.txt", "valid.txt"]
    corpus = data.load_corpus("mycorpus")
    valid_lines = files["valid"].read_text().splitlines()
    assert corpus.vocab.decode(corpus.splits["valid"].sentences[0][1:-1]) == valid_lines[40].split()
    assert corpus.notes == [] and data.paper_backbone("mycorpus") == DEFAULT_PAPER_BACKBONE
    st = data.dataset_status("mycorpus")
    assert st.added and st.notes == [] and st.summary == "present"
    assert data.corpus_stats("mycorpus")["splits"]["train"]["sentences"] == 40
    assert main(["data", "stats", "mycorpus"]) == 0 and "checksum:" in capsys.readouterr().out
    assert main(["data", "list"]) == 0 and "mycorpus *" in capsys.readouterr().out


def test_add_three_files_labelled_with_a_paper_backbone_and_from_a_folder(tmp_path, data_env):
    from vae_collapse_bench.bench.config import get_profile

    folder = tmp_path / "in"
    write(folder / "train.txt", "1\ta b\n0\tc d\n1\te f g\n")
    write(folder / "val.txt", "0\ta c\n")
    write(folder / "mine.test.txt", "1\tb d\n0\ta\n")
    status = data.add_corpus("labelled-one", folder=str(folder), labelled=True, backbone="yahoo-mini",
                             description='quotes " and \\ and a\nnewline')
    assert status.present == list(data.SPLITS) and status.lines == {"train": 3, "valid": 1, "test": 2}
    m = data.get_manifest("labelled-one")
    assert m.labelled and m.family == "yahoo" and m.description == 'quotes " and \\ and a\nnewline'
    assert m.files == {"train": ("train.txt",), "valid": ("val.txt", "valid.txt"),
                       "test": ("mine.test.txt", "test.txt")}
    assert data.load_corpus("labelled-one").splits["train"].labels == ["1", "0", "1"]
    paper = get_profile("paper")
    assert paper.backbone_for("labelled-one") == paper.backbone_for(m.family) == data.paper_backbone("yahoo")
    assert paper.resolved(m)["backbone"]["emb_dim"] == 512
    # explicit files win over the folder's; --replace installs them and drops files no longer used
    write(tmp_path / "other-test.txt", "1\tz z\n0\ty\n")
    data.add_corpus("labelled-one", folder=str(folder), test=str(tmp_path / "other-test.txt"), labelled=True,
                    replace=True)
    assert data.load_corpus("labelled-one").splits["test"].labels == ["1", "0"]
    assert data.get_manifest("labelled-one").family == "labelled-one"  # no --backbone this time: the default


def test_add_records_sha256_and_notes_a_changed_file(tmp_path, data_env):
    files = own_corpus(tmp_path / "mine")
    data.add_corpus("mine", valid=str(files["valid"]), test=str(files["test"]), derive_train_from="valid:40")
    installed = data_env / "mine" / "test.txt"
    installed.write_text(installed.read_text().replace("the", "teh", 1))  # same line count
    st = data.dataset_status("mine")
    assert st.changed == ["test"] and "changed since added: test" in st.summary
    assert any("sha256 differs" in note for note in st.notes)
    assert data.load_corpus("mine").notes == st.notes


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["snli", "--train", "{tr}", "--valid", "{v}", "--test", "{t}"], r"'snli' is the name of the built-in dataset"),
        (["PTB", "--train", "{tr}", "--valid", "{v}", "--test", "{t}"], r"built-in dataset 'ptb'"),
        (["../up", "--train", "{tr}", "--valid", "{v}", "--test", "{t}"], r"dataset name '../up': use 1-64 letters"),
        (["manifests", "--train", "{tr}", "--valid", "{v}", "--test", "{t}"], r"folder of manifests"),
        (["mine", "--train", "{tr}", "--valid", "{nope}", "--test", "{t}"],
         r"the valid file .*nope\.txt does not exist"),
        (["mine", "--train", "{tr}", "--valid", "{dir}", "--test", "{t}"], r"the valid file .* is a folder"),
        (["mine", "--train", "{tr}", "--valid", "{empty}", "--test", "{t}"], r"empty\.txt is empty; a split needs"),
        (["mine", "--train", "{tr}", "--valid", "{v}", "--test", "{latin1}"],
         r"latin1\.txt: line 2 is not valid UTF-8 \(byte 0xe9\)"),
        (["mine", "--train", "{tr}", "--valid", "{v}", "--test", "{gap}"], r"gap\.txt: line 2 is empty"),
        (["mine", "--train", "{tr}", "--valid", "{v}", "--test", "{one}"],
         r"'mine': the test split \(.*one\.txt\) has 1 sentence, fewer than the 2 .*pass a larger test file"),
        (["mine", "--train", "{one}", "--valid", "{v}", "--test", "{t}"], r"the train split \(.*one\.txt\) has 1"),
        (["mine", "--valid", "{v}", "--test", "{t}"], r"no train file: pass --train FILE, or --derive-train-from"),
        (["mine", "--train", "{tr}", "--test", "{t}"], r"no valid file: pass --valid FILE"),
        (["mine", "--train", "{tr}", "--valid", "{v}", "--test", "{t}", "--derive-train-from", "valid:3"],
         r"both a train file .* and --derive-train-from"),
        (["mine", "--valid", "{v}", "--test", "{t}", "--derive-train-from", "valid:52"],
         r"valid:52 takes all 52 lines of .*v\.txt, leaving no valid sentences; use N below 52"),
        (["mine", "--valid", "{v}", "--test", "{t}", "--derive-train-from", "valid:1"],
         r"train split \(lines 1-1 of .*v\.txt\) has 1 sentence.*a larger N in --derive-train-from valid:N"),
        (["mine", "--valid", "{v}", "--test", "{t}", "--derive-train-from", "train:5"], r"expected SPLIT:N"),
        (["mine", "--valid", "{v}", "--test", "{t}", "--derive-train-from", "valid:x"], r"expected SPLIT:N"),
        (["mine", "--train", "{tr}", "--valid", "{v}", "--test", "{t}", "--backbone", "imdb"],
         r"--backbone 'imdb': not a dataset; use one of .*snli.*, or default"),
        (["mine", "--train", "{tr}", "--valid", "{v}", "--test", "{t}", "--labelled"], r"tr\.txt: line 1 has no TAB"),
        (["mine", "--folder", "{nope}"], r"--folder .*nope\.txt is not a folder"),
    ],
)
def test_add_refuses_bad_input_in_one_line_and_installs_nothing(argv, message, tmp_path, data_env, capsys):
    from vae_collapse_bench.bench.cli import main

    files = own_corpus(tmp_path / "in")
    paths = {"v": files["valid"], "t": files["test"], "tr": write(tmp_path / "in" / "tr.txt", "a b\nc d\ne\n"),
             "nope": tmp_path / "nope.txt", "dir": tmp_path / "in", "empty": write(tmp_path / "empty.txt", ""),
             "latin1": write(tmp_path / "latin1.txt", "fine\ncaf\xe9 au lait\n".encode("latin-1")),
             "gap": write(tmp_path / "gap.txt", "a\n\nb\n"), "one": write(tmp_path / "one.txt", "a b\n")}
    assert main(["data", "add", *(a.format(**paths) for a in argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (data_env / "manifests").exists() or not list((data_env / "manifests").iterdir())
    assert not (data_env / "mine").exists() or not list((data_env / "mine").iterdir())


def test_add_twice_needs_replace_and_bench_manifests_excludes_user_ones(tmp_path, data_env, monkeypatch):
    files = own_corpus(tmp_path / "in")
    args = {"valid": str(files["valid"]), "test": str(files["test"]), "derive_train_from": "valid:40"}
    data.add_corpus("mine", **args)
    with pytest.raises(BenchError, match=r"'mine' was added before .*pass --replace"):
        data.add_corpus("mine", **args)
    monkeypatch.setenv("BENCH_MANIFESTS", str(data.bundled_manifest_dir()))
    with pytest.raises(BenchError, match=r"unknown dataset 'mine'"):  # BENCH_MANIFESTS replaces the lookup
        data.get_manifest("mine")
    with pytest.raises(BenchError, match="BENCH_MANIFESTS is set.*unset BENCH_MANIFESTS"):
        data.add_corpus("other", **args)


def test_a_user_manifest_cannot_shadow_a_built_in_one(data_env):
    text = (data.bundled_manifest_dir() / "ptb.toml").read_text().replace("Penn Treebank", "an impostor")
    write(data_env / "manifests" / "ptb.toml", text)
    write(data_env / "manifests" / "extra.toml", 'name = "extra"\nfamily = "snli"\ndescription = "x"\n')
    assert "impostor" not in data.get_manifest("ptb").description
    ms = data.manifests()
    assert "impostor" not in ms["ptb"].description and ms["extra"].path == data_env / "manifests" / "extra.toml"
    assert data.manifest_paths()["ptb"] == data.bundled_manifest_dir() / "ptb.toml"
    assert data.paper_backbone("extra") == data.paper_backbone("snli")


def test_toml_strings_round_trip():
    import tomllib

    from vae_collapse_bench.bench.data.user import toml_str

    for text in ['plain', 'a "quote" and \\ back', "new\nline\ttab\x7f\x01", "數據 λ", "lone \udcff surrogate"]:
        got = tomllib.loads(f"x = {toml_str(text)}\n")["x"]
        assert got == text.replace("\udcff", "\ufffd")


ODD = ["", "v" * 5000, "λ-vae", "數據", "-1", "nan", "{file}", "{folder}", "{file}/sub", "valid:" + "1" * 5000,
       "valid:-3", "../../etc", "default"]


@pytest.mark.parametrize("option", ["name", "--train", "--valid", "--test", "--folder", "--backbone",
                                    "--derive-train-from", "--description"])
def test_add_ends_in_0_or_one_error_line_whatever_is_typed(option, tmp_path, data_env, capsys):
    from vae_collapse_bench.bench.cli import main

    files = own_corpus(tmp_path / "in")
    places = {"file": str(write(tmp_path / "a-file.txt", "x\n")), "folder": str(tmp_path / "in")}
    for i, value in enumerate(ODD):
        value = value.format(**places)
        args = {"name": f"c{i}", "--valid": str(files["valid"]), "--test": str(files["test"]),
                "--derive-train-from": "valid:40"}
        if option == "--train":
            args.pop("--derive-train-from")
        args[option] = value
        argv = ["data", "add", args.pop("name")] + [x for kv in args.items() for x in kv]
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: a value it cannot take as an option's
            code = exc.code
        err = capsys.readouterr().err
        assert code in (0, 2) and "Traceback" not in err, (option, value[:40], err[-500:])
        if code == 2 and err.startswith("error: "):
            assert len(err.strip().splitlines()) == 1, err


def test_corpus_checksum_is_the_loaded_corpus_checksum(synthetic_root):
    assert data.corpus_checksum("synthetic", synthetic_root) == data.load_corpus("synthetic", synthetic_root).checksum
