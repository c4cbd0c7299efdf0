"""The journal file storage, guarded: nothing finished is lost to a damaged file.

Optuna's journal is one JSON record per line, appended under a file lock. Two kinds of damage:

- A **torn last record** (power loss or a full disk during an append): bytes after the last newline.
  Optuna skips them on reading, but the next append would glue a new record onto them and from then
  on every read fails. On a writable open the torn bytes are moved aside to
  `<journal>.torn-<time>` (under the journal's lock, so no live append is mistaken for one) with a
  one-line warning; every record before them is kept. The runs they described are simply not
  finished as far as the store knows: they run again, and their checkpoints make that cheap.
- **Garbage inside** (a bad disk, an editor): a complete line that is not a JSON record. Opening
  refuses with one line naming the byte offset and `bench store repair`, which keeps every complete
  record, sets the damaged lines aside in `<journal>.damaged-<time>`, and puts an inert failed
  placeholder wherever a trial-creating record was lost. Optuna numbers trials by the order of
  their creating records, so without the placeholder every later record would land on the wrong trial.

Reading (`read_only=True`) never writes: no file, folder or study is created, a torn tail is only
reported, and a missing journal reads as empty.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState
from vae_collapse_bench.bench.errors import BenchError, plain
from vae_collapse_bench.bench.paths import is_file

PLACEHOLDER_REASON = "its creating record was damaged; `bench store repair` kept its place (the run runs again)"


@dataclass
class JournalScan:
    """Where a journal file is whole and where it is not."""

    size: int
    bad_lines: list[tuple[int, int]] = field(default_factory=list)  # (byte offset, line number), 1-based
    torn_at: int | None = None  # byte offset of a last record without its newline

    @property
    def first_damage(self) -> tuple[int, int] | None:
        return self.bad_lines[0] if self.bad_lines else None


def scan(data: bytes) -> JournalScan:
    """Check every line of a journal's bytes: complete lines must be journal records (`_is_record`);
    bytes after the last newline are a torn record."""
    result = JournalScan(size=len(data))
    offset = 0
    lines = data.split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):
        if not _is_record(line):
            result.bad_lines.append((offset, number))
        offset += len(line) + 1
    if lines[-1]:
        result.torn_at = offset
    return result


def _is_record(line: bytes) -> bool:
    """A JSON object with an integer op_code: what Optuna's replay needs of every line."""
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and type(record.get("op_code")) is int


def _damaged(path: Path, at: tuple[int, int]) -> BenchError:
    offset, number = at
    return BenchError(f"the journal {path} is damaged at byte {offset:,} (line {number}): "
                      "run `bench store repair` to keep every complete record and set the rest aside")


class ReadOnlyJournalBackend(JournalFileBackend):
    """A journal file opened for reading only: it creates nothing and refuses to append."""

    def __init__(self, file_path: str) -> None:  # the base class would create the file
        self._file_path = file_path
        self._log_number_offset = {0: 0}

    def read_logs(self, log_number_from: int):
        if not is_file(self._file_path):  # no journal yet: an empty storage, not an error
            return iter(())
        return super().read_logs(log_number_from)

    def append_logs(self, logs) -> None:
        raise BenchError(f"the journal {self._file_path} was opened for reading only")


def open_journal(path: Path, read_only: bool = False) -> JournalStorage:
    """A JournalStorage on `path` after checking the file (module docstring). BenchError when it is
    damaged inside, or cannot be written when writing is wanted."""
    if read_only:
        data = path.read_bytes() if is_file(path) else b""
        result = scan(data)
        if result.first_damage:
            raise _damaged(path, result.first_damage)
        if result.torn_at is not None:
            _warn(f"the journal {path} ends in a torn record ({result.size - result.torn_at} bytes); it is "
                  "ignored here and set aside by the next `bench run`")
        return JournalStorage(ReadOnlyJournalBackend(str(path)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise BenchError(f"cannot write the journal storage {plain(str(path))}: {exc.strerror}; "
                         "choose a writable --results directory or --storage path") from None
    with _locked(path):
        data = path.read_bytes()
        result = scan(data)
        if result.first_damage:
            raise _damaged(path, result.first_damage)
        if result.torn_at is not None:
            aside = _set_aside(path, "torn", data[result.torn_at:])
            with open(path, "r+b") as f:
                f.truncate(result.torn_at)
            _warn(f"the journal {path} ended in a torn record (an interrupted write): moved to {aside.name}; "
                  "the runs it described run again")
    return JournalStorage(JournalFileBackend(str(path)))


def repair(path: Path) -> str:
    """Keep every complete record of the journal, set the rest aside; returns what was done."""
    if not is_file(path):
        raise BenchError(f"no journal at {plain(str(path))}: nothing to repair")
    with _locked(path):
        data = path.read_bytes()
        result = scan(data)
        if not result.bad_lines and result.torn_at is None:
            records = data.count(b"\n")
            return f"{path}: {records:,} records, no damage found"
        kept, removed, placeholders = _rebuild(data.split(b"\n"), {n for _, n in result.bad_lines})
        if result.torn_at is not None:
            removed.append(data[result.torn_at:])
        aside = _set_aside(path, "damaged", b"\n".join(removed) + b"\n")
        tmp = path.with_name(f".{path.name}.repair")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        tmp.replace(path)
    return (f"{path}: kept {len(kept) - placeholders:,} records, set {len(removed)} damaged aside in "
            f"{aside.name}" + (f", {placeholders} placeholder trial(s) keep later records on their trials"
                               if placeholders else "") + "; the runs they described run again")


def _rebuild(lines: list[bytes], bad: set[int]) -> tuple[list[bytes], list[bytes], int]:
    """(kept lines with placeholders, removed lines, placeholder count). Trial ids are the count of
    trial-creating records before them: a record naming a trial id that no kept record created
    gets failed placeholders inserted before it, so it and every later record keep their trial."""
    kept, removed, created, placeholders, study = [], [], 0, 0, 0
    for number, line in enumerate(lines[:-1], start=1):
        if number in bad:
            removed.append(line)
            continue
        record = json.loads(line)
        op = record.get("op_code")
        if op == JournalOperation.CREATE_TRIAL:
            study = record.get("study_id", study)
        trial_id = record.get("trial_id")
        while isinstance(trial_id, int) and trial_id >= created:
            kept.append(json.dumps(_placeholder(study), separators=(",", ":")).encode())
            created += 1
            placeholders += 1
        if op == JournalOperation.CREATE_TRIAL:
            created += 1
        kept.append(line)
    return kept, removed, placeholders


def _placeholder(study_id: int) -> dict:
    """A trial-creating record for a lost one: already failed, so no later record can change it."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000+00:00", time.gmtime())
    return {"op_code": int(JournalOperation.CREATE_TRIAL), "worker_id": "bench-store-repair",
            "study_id": study_id, "datetime_start": now, "datetime_complete": now,
            "state": int(TrialState.FAIL), "value": None, "values": None, "distributions": {}, "params": {},
            "user_attrs": {"fail_reason": PLACEHOLDER_REASON, "repair_placeholder": True},
            "system_attrs": {}, "intermediate_values": {}}


class _locked:
    """The journal's own lock (the one Optuna appends under), as a context manager."""

    def __init__(self, path: Path):
        self.lock = JournalFileSymlinkLock(str(path))

    def __enter__(self):
        self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


def _set_aside(path: Path, kind: str, data: bytes) -> Path:
    aside = path.with_name(f"{path.name}.{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}")
    aside.write_bytes(data)
    return aside


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)
