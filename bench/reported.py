"""What the DG-VAE paper reports, beside our numbers: its family order, its bold rule and its Table 2
Yahoo rows, read from the data file `paper_dg_vae.toml` (typed in by hand, with its source).

The order of a board's rows comes from here (`row_order`): families (methods) in the paper's order,
then any other registered method in registry order; within a family, settings in the order of the
method's registered grid (the paper's grid order: agg 1, 2, ..., 32, default), then any other setting
by value. Nothing here names a method: the names are data.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError, plain

DATA_FILE = Path(__file__).with_name("paper_dg_vae.toml")


@dataclass(frozen=True)
class PaperFacts:
    citation: str
    table: str
    order: tuple[str, ...]
    bold_rule: str
    columns: tuple[str, ...]
    rows: tuple[dict, ...] = field(default_factory=tuple)
    dataset_family: str = ""
    profile: str = ""
    path: str = ""


@lru_cache(maxsize=8)
def paper_facts(path: str | None = None) -> PaperFacts:
    """The data file parsed and checked (a damaged file is a BenchError naming the file and field)."""
    source = Path(path) if path else DATA_FILE
    try:
        doc = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"cannot read the paper's reported numbers {plain(str(source))}: {exc}") from None
    try:
        table = doc["table2_yahoo"]
        columns = tuple(table["columns"])
        rows = tuple(dict(r) for r in table["rows"])
        facts = PaperFacts(doc["source"]["citation"], doc["source"]["table"], tuple(doc["order"]["methods"]),
                           doc["bold"]["rule"], columns, rows, table.get("dataset_family", ""),
                           table.get("profile", ""), str(source))
    except (KeyError, TypeError) as exc:
        raise BenchError(f"{plain(str(source))} lacks the field {exc}: see the comments of "
                         f"{DATA_FILE.name} for its form") from None
    for i, row in enumerate(rows):
        missing = {"paper_name", "method", "setting"} - set(row)
        bad = [c for c in columns if c in row and not isinstance(row[c], int | float)]
        if missing or bad:
            raise BenchError(f"{plain(str(source))}: row {i + 1} lacks {sorted(missing)} or has non-numbers "
                             f"in {bad}")
    return facts


def reported_rows(path: str | None = None) -> list[dict]:
    """The paper's Table 2 Yahoo rows: dicts with paper_name, method, setting and the numbers printed.
    A BenchError while none are typed in: no number is ever made up."""
    facts = paper_facts(path)
    if not facts.rows:
        raise BenchError(f"the paper's {facts.table} are not typed in yet ({Path(facts.path).name} holds none): "
                         "add them from the paper to that file before using --with-reported")
    return [dict(r) for r in facts.rows]


def parse_setting(setting: str) -> dict[str, str]:
    """`gamma=0.6,agg=4` -> {"gamma": "0.6", "agg": "4"}; `-` (no hyperparameters) -> {}."""
    if setting in ("", "-"):
        return {}
    pairs = (part.split("=", 1) for part in setting.split(",") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs}


def _same(a, b) -> bool:
    """A grid value and a value as written in a setting: equal as numbers, or as text."""
    try:
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        return math.inf
    return value if value == value else math.inf


def row_order(method: str, setting: str, paper_path: str | None = None) -> tuple:
    """Sort key of a board row: (family rank, setting rank in the grid, value, text)."""
    order = paper_facts(paper_path).order
    names = registry.names()
    family = (order.index(method) if method in order
              else len(order) + (names.index(method) if method in names else len(names)))
    params = parse_setting(setting)
    grid = registry.get(method).grid if method in names else {}
    ranks = []
    for key in sorted(params):
        values = grid.get(key, [])
        rank = next((i for i, v in enumerate(values) if _same(v, params[key])), len(values))
        ranks.append((rank, _number(params[key]), params[key]))
    return (family, method, tuple(ranks), setting)


def setting_value(setting: str) -> str:
    """The short label of a setting on a curve: the value of a one-parameter setting (`0.6`), the whole
    setting otherwise (`-` for none)."""
    params = parse_setting(setting)
    if len(params) != 1:
        return setting
    value = next(iter(params.values()))
    number = _number(value)
    return str(int(number)) if number != math.inf and number.is_integer() and abs(number) < 1e15 else value
