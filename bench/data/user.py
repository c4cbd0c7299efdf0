"""Users' own corpora: `bench data add NAME --train F --valid F --test F` (or `--folder DIR`).

add_corpus validates the files as an import does (UTF-8, no empty file or line, `label<TAB>text` when
--labelled, splits large enough for a run), installs them into DATA/NAME/ and writes the manifest
DATA/manifests/NAME.toml recording the line counts, the sha256 of every installed file and the paper
backbone (`--backbone snli`: family = "snli", whose manifest's [backbone] is then used; none: the
default). From then on NAME is a dataset like the built-in ones: `bench data stats NAME`,
`bench run --dataset NAME`, `bench data import NAME FOLDER` for new files.

A corpus with only valid and test files gets the *-mini treatment on request:
`--derive-train-from valid:8000` makes train the first 8000 lines of valid and valid the rest, as
[derive] tables of the manifest (line ranges of the installed valid file).
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

from vae_collapse_bench.bench.backbone import DEFAULT_PAPER_BACKBONE
from vae_collapse_bench.bench.data.acquire import rename_into, staged_copies
from vae_collapse_bench.bench.data.files import check_split_sizes, make_dir, sha256_file, unwritable
from vae_collapse_bench.bench.data.manifest import (
    SPLITS,
    USER_MANIFESTS,
    Manifest,
    Take,
    bundled_manifest_dir,
    get_manifest,
    is_builtin,
    manifests,
    resolve_root,
    user_manifest_dir,
)
from vae_collapse_bench.bench.data.status import DatasetStatus, dataset_status
from vae_collapse_bench.bench.errors import BenchError, plain, quote
from vae_collapse_bench.bench.paths import is_dir, is_file

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Names a split's file may have in --folder DIR: SPLIT.txt or NAME.SPLIT.txt (valid also as val, dev);
# failing those, the one file *.SPLIT.txt.
ALIASES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


def toml_str(text: str) -> str:
    """text as a TOML basic string: quotes, backslashes and control characters escaped (a lone
    surrogate, from a file name that is not UTF-8, becomes U+FFFD)."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif (code < 0x20 and ch != "\t") or code == 0x7F:
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def check_name(name: str) -> None:
    """A name for a new dataset: a file name of letters, digits, . _ - (first a letter or digit), not a
    built-in dataset's (in any letter case) and not the manifests folder's."""
    if not NAME.fullmatch(name):
        raise BenchError(f"dataset name {quote(name)}: use 1-64 letters, digits, '.', '_' or '-', "
                         "beginning with a letter or digit")
    builtins = {p.stem.lower(): p.stem for p in bundled_manifest_dir().glob("*.toml")}
    if is_builtin(name) or name.lower() in builtins:
        taken = builtins.get(name.lower(), name)
        raise BenchError(f"{name!r} is the name of the built-in dataset {taken!r}; choose another name for your "
                         f"corpus (built-in: {', '.join(sorted(builtins.values()))})")
    if name.lower() == USER_MANIFESTS:
        raise BenchError(f"{name!r} is the data directory's folder of manifests; choose another name")


def parse_derive(spec: str) -> tuple[str, int]:
    """`valid:8000` -> ("valid", 8000): train is the first 8000 lines of the valid file, valid the rest."""
    split, colon, count = spec.partition(":")
    usage = (f"--derive-train-from {quote(spec)}: expected SPLIT:N, SPLIT valid or test and N the number "
             "of its first lines that become the train split, e.g. valid:8000")
    if not colon or split not in ("valid", "test"):
        raise BenchError(usage)
    try:
        n = int(count)
    except ValueError:
        raise BenchError(usage) from None
    if n < 1:
        raise BenchError(usage)
    return split, n


def backbone_family(name: str, backbone: str | None, root: Path | str | None) -> str:
    """The family recorded for --backbone: the dataset whose manifest holds that paper backbone
    (snli-mini -> snli); the corpus' own name for none or `default` (then the default backbone)."""
    if backbone in (None, "", "default"):
        return name
    holders = [n for n, m in manifests(root).items() if m.backbone is not None]
    choices = f"one of {', '.join(holders)}, or default"
    try:
        m = get_manifest(backbone, root)
    except BenchError:
        raise BenchError(f"--backbone {quote(backbone)}: not a dataset; use {choices}") from None
    seen = {m.name}
    while m.backbone is None and m.family not in seen:
        m = get_manifest(m.family, root)
        seen.add(m.name)
    if m.backbone is None:
        raise BenchError(f"--backbone {quote(backbone)}: that dataset has no paper backbone; use {choices}")
    return m.name


def find_in_folder(name: str, folder: Path) -> dict[str, Path]:
    """split -> file of --folder DIR: SPLIT.txt, NAME.SPLIT.txt (valid: also val, dev), else the
    single *.SPLIT.txt; two such files are ambiguous (pass that split's file by its option)."""
    if not is_dir(folder):
        raise BenchError(f"--folder {plain(str(folder))} is not a folder")
    found = {}
    for s, aliases in ALIASES.items():
        names = [f"{a}.txt" for a in aliases] + [f"{name}.{a}.txt" for a in aliases]
        hit = next((folder / n for n in names if (folder / n).is_file()), None)
        if hit is None:
            hits = sorted({p for a in aliases for p in folder.glob(f"*.{a}.txt") if p.is_file()})
            if len(hits) > 1:
                raise BenchError(f"--folder {plain(str(folder))} holds {len(hits)} {s} files "
                                 f"({', '.join(p.name for p in hits[:4])}); pass the one to use as --{s} FILE")
            hit = hits[0] if hits else None
        if hit is not None:
            found[s] = hit
    return found


def _source_files(name: str, given: dict[str, str | None], folder: str | None,
                  derive: tuple[str, int] | None) -> dict[str, Path]:
    """The files to install, split -> path: --train/--valid/--test over those found in --folder."""
    files = find_in_folder(name, Path(folder).expanduser()) if folder else {}
    files.update({s: Path(p).expanduser() for s, p in given.items() if p})
    if derive and "train" in files:
        raise BenchError(f"both a train file ({plain(str(files['train']))}) and --derive-train-from were "
                         "given; pass one of them")
    for s in SPLITS:
        if s in files:
            path = files[s]
            if not is_file(path):
                what = "is a folder, not a file" if is_dir(path) else "does not exist"
                raise BenchError(f"the {s} file {plain(str(path))} {what}")
        elif s == "train" and not derive:
            raise BenchError("no train file: pass --train FILE, or --derive-train-from valid:N to make train "
                             "of the first N lines of the valid file")
        elif s != "train":
            where = f" ({plain(str(folder))} holds no {s}.txt)" if folder else ""
            raise BenchError(f"no {s} file{where}: pass --{s} FILE")
    return files


def render_manifest(m: Manifest, sources: dict[str, Path], backbone: str | None, derive: tuple[str, int] | None,
                    total: int) -> str:
    """The TOML text of a user corpus' manifest (comments say where each part came from)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    b = DEFAULT_PAPER_BACKBONE
    default = f"{b.emb_dim}/{b.enc_hidden}/{b.dec_hidden}, D = {b.latent_dim}"
    from_ = ", ".join(f"{plain(str(p.resolve()), 300)} ({s})" for s, p in sources.items())
    fam = (f"the paper backbone of {m.family}'s manifest (--backbone {backbone})" if m.family != m.name
           else f"this corpus' own: none, so the default paper backbone ({default})")
    lines = [
        f"# Your own corpus, added by `bench data add` on {when}; its files are in DATA/{m.name}/.",
        "# `bench data add ... --replace` records other files; description may be edited freely.",
        f"name = {toml_str(m.name)}",
        f"family = {toml_str(m.family)}  # backbone for --profile paper: {fam}",
        f"description = {toml_str(m.description)}",
        f"labelled = {'true' if m.labelled else 'false'}",
        f"source = {toml_str('added by bench data add from ' + from_)}",
        "",
        "[files]  # accepted names of each split's file for `bench data import NAME FOLDER`",
    ]
    lines += [f"{s} = [{', '.join(toml_str(n) for n in names)}]" for s, names in m.files.items()]
    if derive:
        src, n = derive
        lines += ["", f"# --derive-train-from {src}:{n}: train = lines 1-{n} of the {src} file, "
                      f"{src} = lines {n + 1}-{total} of it"]
        for i, (s, take) in enumerate(m.derive.items()):
            lines += [""] * (i > 0) + [f"[derive.{s}]", f"split = {toml_str(take.split)}", f"start = {take.start}"]
            lines += [f"stop = {take.stop}"] if take.stop is not None else []
    lines += ["", "[lines]  # sentences of each split as a run sees it"]
    lines += [f"{s} = {n}" for s, n in m.lines.items()]
    lines += ["", f"[file_sha256]  # of the installed files DATA/{m.name}/SPLIT.txt"]
    lines += [f"{s} = {toml_str(h)}" for s, h in m.file_sha256.items()]
    return "\n".join(lines) + "\n"


def add_corpus(name: str, *, train: str | None = None, valid: str | None = None, test: str | None = None,
               folder: str | None = None, labelled: bool = False, backbone: str | None = None,
               derive_train_from: str | None = None, description: str | None = None, replace: bool = False,
               root: Path | str | None = None) -> DatasetStatus:
    """Validate, install and describe the user's corpus NAME (module docstring); its DatasetStatus.

    Every problem is one BenchError, raised before anything is installed: a bad name (one of a
    built-in dataset, or one already added without `replace`), a missing file, an empty file or
    line, bytes that are not UTF-8 (file and line), a labelled line without TAB, a split too small
    for a run, $BENCH_MANIFESTS set (it replaces the lookup of DATA/manifests).
    """
    check_name(name)
    if os.environ.get("BENCH_MANIFESTS"):
        raise BenchError(f"BENCH_MANIFESTS is set, so manifests are read only from {os.environ['BENCH_MANIFESTS']} "
                         f"and a corpus added to the data directory would not be found; unset BENCH_MANIFESTS "
                         f"to add {name!r}")
    root = resolve_root(root)
    target = user_manifest_dir(root) / f"{name}.toml"
    if is_file(target) and not replace:
        raise BenchError(f"dataset {name!r} was added before ({target}); pass --replace to add it again "
                         "with these files, or choose another name")
    family = backbone_family(name, backbone, root)
    derive = parse_derive(derive_train_from) if derive_train_from else None
    files = _source_files(name, {"train": train, "valid": valid, "test": test}, folder, derive)
    dest = root / name
    with staged_copies(root, dest, files, labelled) as (staged, lengths):
        counts = {s: len(n) for s, n in lengths.items()}
        where = {s: plain(str(p), 300) for s, p in files.items()}
        fix = {s: f"pass a larger {s} file" for s in files}
        takes, split_lengths = {}, dict(lengths)
        if derive:
            src, n = derive
            if n >= counts[src]:
                raise BenchError(f"--derive-train-from {src}:{n} takes all {counts[src]} lines of {where[src]}, "
                                 f"leaving no {src} sentences; use N below {counts[src]}")
            other = "test" if src == "valid" else "valid"
            takes = {"train": (src, 0, n), src: (src, n, None), other: (other, 0, None)}
            split_lengths = {"train": lengths[src][:n], src: lengths[src][n:], other: lengths[other]}
            where = {"train": f"lines 1-{n} of {where[src]}", src: f"lines {n + 1}-{counts[src]} of {where[src]}",
                     other: where[other]}
            fix = {"train": f"take more lines for train (a larger N in --derive-train-from {src}:N)",
                   src: f"take fewer lines for train (a smaller N in --derive-train-from {src}:N) or pass a "
                        f"larger {src} file", other: f"pass a larger {other} file"}
        check_split_sizes(name, {s: split_lengths[s] for s in SPLITS}, where, fix)
        m = Manifest(
            name=name, family=family, labelled=labelled,
            description=description or f"{name}: your own corpus (bench data add)",
            files={s: tuple(dict.fromkeys((p.name, f"{s}.txt"))) for s, p in files.items()},
            derive={s: Take(*t) for s, t in takes.items()},
            lines={s: len(split_lengths[s]) for s in SPLITS},
            file_sha256={s: sha256_file(staged[s]) for s in SPLITS if s in staged},
        )
        text = render_manifest(m, files, backbone, derive, counts[derive[0]] if derive else 0)
        make_dir(root, target.parent)
        tmp = target.with_name(f".{name}.toml.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            if replace:  # files of an earlier add that this one does not install
                for s in SPLITS:
                    if s not in staged:
                        (dest / f"{s}.txt").unlink(missing_ok=True)
            rename_into(staged, dest)
            os.replace(tmp, target)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise unwritable(root, e) from None
    return dataset_status(name, root)
