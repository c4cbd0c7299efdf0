"""`bench claims` and the claims section of a published board: the paper's claims read from the data
file claims_dg_vae.toml, judged (bench.claims) on a board's rows, rendered as a table, markdown or JSON.

The rows are the board's (bench.report.Leaderboard: the current config, each training run once, mean
± sample std over seeds per method and setting); D is the board's latent size and N each row's number
of test sentences evaluated, as in the board's bold rule. Deterministic: the same board gives the same
text, so a published README stays byte-identical.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from vae_collapse_bench.bench.claims import (
    FAILS,
    HOLDS,
    MISSING,
    SCALES,
    Bound,
    Claim,
    Context,
    GrowsWith,
    HigherThan,
    Like,
    Ref,
    Row,
    Threshold,
    Verdict,
)
from vae_collapse_bench.bench.errors import BenchError, plain, quote
from vae_collapse_bench.bench.report import METRICS

DATA_FILE = Path(__file__).with_name("claims_dg_vae.toml")
FORMATS = ("table", "markdown", "json")

# Each kind of the data file and how its table builds the check.
KINDS = {
    "at_most": lambda t: Threshold(bound(t, at_most=True)),
    "at_least": lambda t: Threshold(bound(t, at_most=False)),
    "like": lambda t: Like(str(t["metric"]), ref(t["reference"]), float(t.get("within", 1.0))),
    "grows_with": lambda t: GrowsWith(tuple(map(str, t["metrics"])), float(t.get("min_rho", 0.8))),
    "higher_than": lambda t: HigherThan(str(t["metric"]), tuple(ref(r) for r in t["than"]),
                                        bound(t["where"], at_most=False) if "where" in t else None),
}


def ref(table: dict) -> Ref:
    """{method = "bn-vae", params = {gamma = 1.8}} or {method = "bn-vae", any_setting = true}."""
    if not isinstance(table, dict) or not isinstance(table.get("method"), str):
        raise ValueError('a row is a table with a method name, e.g. {method = "vae"}')
    params = table.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"the params of {table['method']} must be a table, e.g. {{gamma = 1.8}}")
    return Ref(table["method"], tuple(sorted(params.items())), bool(table.get("any_setting", False)))


def bound(table: dict, at_most: bool) -> Bound:
    """{metric = "AU", fraction = 0.9, of = "D"}."""
    b = Bound(str(table["metric"]), float(table["fraction"]), str(table.get("of", "D")), at_most)
    if b.of not in SCALES:
        raise ValueError(f"`of` is one of {', '.join(SCALES)}, not {b.of!r}")
    return b


def check(table: dict):
    """One check of the data file, built by its kind; a ValueError names what is wrong."""
    kind = table.get("kind") if isinstance(table, dict) else None
    if kind not in KINDS:
        raise ValueError(f"unknown check kind {kind!r} (known: {', '.join(KINDS)})")
    built = KINDS[kind](table)
    unknown = [m for m in built.metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)} (a board's metrics: {', '.join(METRICS)})")
    return built


def claim(table: dict) -> Claim:
    """One [[claims]] table of the data file: id, paper, rows, checks."""
    return Claim(str(table["id"]), str(table["paper"]), tuple(ref(r) for r in table["rows"]),
                 tuple(check(c) for c in table["checks"]))


@dataclass(frozen=True)
class ClaimSet:
    """The data file: the paper cited, the seeds every row needs, the claims in order, and per claim
    what might change at the paper's profile (`at_scale`, said under a claim that fails at another)."""

    citation: str
    min_seeds: int
    claims: tuple[Claim, ...]
    path: str = ""
    at_scale: tuple[tuple[str, str], ...] = ()
    latent_figure: tuple[Ref, ...] = ()  # the settings of the paper's latent-space figure

    def methods(self) -> list[str]:
        refs = [r for c in self.claims for r in c.rows] + [r for c in self.claims for k in c.checks for r in k.refs]
        return list(dict.fromkeys(r.method for r in refs))


@lru_cache(maxsize=8)
def load_claims(path: str | None = None) -> ClaimSet:
    """The claims data file parsed and checked; a damaged file is a BenchError naming file and claim."""
    source = Path(path) if path else DATA_FILE
    try:
        doc = tomllib.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise BenchError(f"cannot read the paper's claims {plain(str(source))}: {exc}") from None
    where = "[rules]"
    try:
        min_seeds = int(doc["rules"]["min_seeds"])
        claims, at_scale = [], []
        for i, table in enumerate(doc["claims"]):
            where = f"claim {table.get('id', i + 1)}"
            claims.append(claim(table))
            if "at_scale" in table:
                at_scale.append((claims[-1].id, str(table["at_scale"])))
        where = "[figures]"
        figure = tuple(ref(r) for r in doc.get("figures", {}).get("latent", []))
        return ClaimSet(str(doc["source"]["citation"]), max(1, min_seeds), tuple(claims), str(source),
                        tuple(at_scale), figure)
    except KeyError as exc:
        raise BenchError(f"{plain(str(source))}: {where} lacks the field {exc}") from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise BenchError(f"{plain(str(source))}: {where}: {exc}") from None


def method_defaults(claims: ClaimSet) -> dict[str, dict]:
    """The registered defaults of every method the claims name (a method not registered: none)."""
    from vae_collapse_bench.bench import registry

    names = set(registry.names())
    return {m: registry.get(m).defaults for m in claims.methods() if m in names}


def rows_from_board(board) -> list[Row]:
    """The rows of a bench.report.Leaderboard of the current config (rows of stale configs left out)."""
    rows = []
    for key, r in board.table.iterrows():
        if len(key) > 2 and key[2] != "current":
            continue
        n_test = r[("N", "")]
        rows.append(Row(key[0], key[1], int(r[("n", "")]), int(n_test) if n_test == n_test else None,
                        {m: float(r[(m, "mean")]) for m in board.metrics},
                        {m: float(r[(m, "std")]) for m in board.metrics}))
    return rows


@dataclass(frozen=True)
class ClaimsReport:
    """Every claim's verdict on one board, with the sizes its thresholds were scaled to."""

    title: str  # the board's: "dataset / profile"
    latent_dim: int
    test_sizes: tuple[int, ...]
    min_seeds: int
    citation: str
    verdicts: tuple[Verdict, ...] = field(default_factory=tuple)

    @property
    def about(self) -> str:
        sizes = ", ".join(f"{n:,}" for n in self.test_sizes) or "unknown"
        return (f"D = {self.latent_dim}, N = {sizes} test sentences; every row needs n >= {self.min_seeds} "
                "seeds; verdicts compare means over seeds, ± the sample std")

    def lines(self) -> list[str]:
        """One line per claim, then one indented line per row or comparison judged."""
        out = []
        for v in self.verdicts:
            out.append(f"{v.id} {v.verdict}: {v.paper} Rule: {v.rule}.")
            out += [f"  {s}: {verdict}: {'; '.join(details)}" for s, verdict, details in v.subjects()]
        return out

    def counts(self) -> str:
        return ", ".join(f"{w}: {sum(v.verdict == w for v in self.verdicts)}" for w in (HOLDS, FAILS, MISSING))

    def render(self, fmt: str = "table") -> str:
        if fmt not in FORMATS:
            raise BenchError(f"unknown format {quote(fmt)}: use one of {', '.join(FORMATS)}")
        return {"table": self._table, "markdown": self._markdown, "json": self._json}[fmt]()

    def _table(self) -> str:
        out = [f"Claims of the DG-VAE paper on {self.title}: {self.about}", ""]
        for v in self.verdicts:
            out += [f"{v.id:<4}{v.verdict:<17}{v.paper}", f"{'':<4}rule: {v.rule}"]
            out += [f"{'':<4}{w:<17}{s}: {'; '.join(d)}" for s, w, d in v.subjects()] + [""]
        return "\n".join(out + [f"Verdicts: {self.counts()}. The claims are paraphrased from {self.citation}"]) + "\n"

    def _markdown(self) -> str:
        body = [f"- {line}" if not line.startswith("  ") else f"  - {line.strip()}" for line in self.lines()]
        return "\n".join([f"Claims of the DG-VAE paper on {self.title} ({self.about}).", "", *body, "",
                          f"Verdicts: {self.counts()}. The claims are paraphrased from {self.citation}"]) + "\n"

    def _json(self) -> str:
        claims = [{"id": v.id, "paper": v.paper, "rule": v.rule, "verdict": v.verdict,
                   "rows": [{"subject": s, "verdict": w, "numbers": d} for s, w, d in v.subjects()]}
                  for v in self.verdicts]
        return json.dumps({"title": self.title, "latent_dim": self.latent_dim, "test_sentences": list(self.test_sizes),
                           "min_seeds": self.min_seeds, "citation": self.citation, "claims": claims},
                          indent=2) + "\n"


def check_board(board, claims: ClaimSet | None = None, defaults: dict[str, dict] | None = None) -> ClaimsReport:
    """Judge every claim on a bench.report.Leaderboard (one latent size D: thresholds scale with it)."""
    claims = claims or load_claims()
    if board.latent_dim is None:
        raise BenchError(f"the runs of {board.title or 'this board'} differ in latent size D (or lack it): "
                         "the claims' thresholds are fractions of one D")
    defaults = method_defaults(claims) if defaults is None else defaults
    for c in claims.claims:  # a misspelt parameter would match no row and pass for missing runs
        for r in [*c.rows, *(x for k in c.checks for x in k.refs)]:
            if r.method in defaults and (bad := sorted(set(dict(r.params)) - set(defaults[r.method]))):
                raise BenchError(f"{plain(claims.path)}: claim {c.id} names {', '.join(bad)}, not a parameter of "
                                 f"{r.method} (its parameters: {', '.join(defaults[r.method]) or 'none'})")
    rows = rows_from_board(board)
    ctx = Context(rows, board.latent_dim, claims.min_seeds, defaults)
    sizes = tuple(sorted({r.N for r in rows if r.N}))
    return ClaimsReport(board.title, board.latent_dim, sizes, claims.min_seeds, claims.citation,
                        tuple(c.judge(ctx) for c in claims.claims))


def figure_settings(board, claims: ClaimSet | None = None, defaults: dict[str, dict] | None = None) -> dict:
    """{method: setting} of the paper's latent-figure settings (the data file's [figures]) on the board."""
    claims = claims or load_claims()
    defaults = method_defaults(claims) if defaults is None else defaults
    rows = rows_from_board(board)
    return {r.method: found[0].setting for r in claims.latent_figure if (found := r.find(rows, defaults))}


def config_differences(ours: dict, theirs: dict, prefix: str = "") -> list[str]:
    """"key ours -> theirs" for every leaf of two resolved configs (bench.config.Profile.resolved) that
    differs, in the configs' order; None (no cap) reads "all". The profile's name is left out."""
    out = []
    for key in dict.fromkeys([*ours, *theirs]):
        a, b = ours.get(key), theirs.get(key)
        if key == "profile" and not prefix:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} {_setting(a)} -> {_setting(b)}")
    return out


def _setting(value) -> str:
    if value is None:
        return "all"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def at_scale_lines(report: ClaimsReport, claims: ClaimSet, profile: str, differences: list[str]) -> list[str]:
    """Under a board of a profile other than the paper's whose claims fail: that the verdict is this
    profile's, how the paper's profile differs (`differences`, from config_differences), and per failing
    claim what might change there (the data file's `at_scale`). No lines when nothing fails."""
    failing = [v.id for v in report.verdicts if v.verdict == FAILS]
    if profile == "paper" or not failing:
        return []
    notes = dict(claims.at_scale)
    out = [f"{', '.join(failing)} {'fails' if len(failing) == 1 else 'fail'} at the {profile} profile, which "
           f"is not the paper's; the paper profile differs in: {'; '.join(differences) or 'nothing stored'}. "
           "What might change there:"]
    out += [f"  {cid}: {notes[cid]}" for cid in failing if cid in notes]
    return out


def board_names_claim_rows(board, claims: ClaimSet | None = None, defaults: dict[str, dict] | None = None) -> bool:
    """Whether any row a claim is about is on the board (a published README then lists the claims)."""
    claims = claims or load_claims()
    defaults = method_defaults(claims) if defaults is None else defaults
    rows = rows_from_board(board)
    return any(r.find(rows, defaults) for c in claims.claims for r in c.rows)
