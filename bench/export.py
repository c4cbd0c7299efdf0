"""A compact, committed export of one study (dataset / profile) that a board can be rebuilt from:
`bench leaderboard --from FILE` re-aggregates it, `bench show KEY --from FILE` shows its runs, and
`bench store import FILE` adds its runs to a storage (bench.import_runs) for a sweep to go on from.

Form (JSON Lines, so a diff shows one line per changed run): the first line is a header
{"format": "vae-collapse-bench/runs", "version": 1, "dataset", "profile", "current_config",
"bench_version"}, then one line per finished or failed trial {"number", "state", "user_attrs"},
sorted by trial number, keys sorted. Lost claims (a race that someone else won) and running trials
are left out; nothing else is dropped, so every number of the board traces back to its record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from vae_collapse_bench.bench.errors import BenchError, plain

FORMAT = "vae-collapse-bench/runs"
VERSION = 1
EXPORTED_STATES = ("COMPLETE", "FAIL")


def export_lines(store, current_config: str, bench_version: str) -> str:
    """The export of `store` (a RunStore or ExportedStore) as text."""
    header = {"format": FORMAT, "version": VERSION, "dataset": store.dataset, "profile": store.profile,
              "current_config": current_config, "bench_version": bench_version}
    lines = [json.dumps(header, sort_keys=True)]
    for t in sorted(store.trials(), key=lambda t: t.number):
        if t.state.name not in EXPORTED_STATES or t.user_attrs.get("claim_lost"):
            continue
        lines.append(json.dumps({"number": t.number, "state": t.state.name, "user_attrs": dict(t.user_attrs)},
                                sort_keys=True, allow_nan=True))
    return "\n".join(lines) + "\n"


@dataclass
class ExportedStore:
    """An export read back: the part of RunStore's interface that boards, plots and `show` read."""

    dataset: str
    profile: str
    current_config: str
    bench_version: str
    path: str
    records: list[SimpleNamespace] = field(default_factory=list)

    def trials(self, states=None) -> list[SimpleNamespace]:
        if states is None:
            return list(self.records)
        names = {s.name for s in states}
        return [t for t in self.records if t.state.name in names]


def read_export(path: str | Path) -> ExportedStore:
    """An export file, checked; a BenchError naming the file and line where it is not one."""
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BenchError(f"cannot read the runs export {plain(str(path))}: {reason}") from None
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise BenchError(f"{plain(str(path))} is not a runs export (its first line must be the header "
                         f"written by `bench leaderboard --publish`, format {FORMAT!r})")
    if header.get("version") != VERSION:
        raise BenchError(f"{plain(str(path))} is a version {header.get('version')!r} export; this bench "
                         f"reads version {VERSION}")
    store = ExportedStore(str(header.get("dataset", "")), str(header.get("profile", "")),
                          str(header.get("current_config", "")), str(header.get("bench_version", "")), str(source))
    for i, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            store.records.append(SimpleNamespace(number=int(item["number"]), state=SimpleNamespace(name=item["state"]),
                                                 user_attrs=dict(item["user_attrs"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise BenchError(f"{plain(str(path))}: line {i} is not a run record") from None
    return store
