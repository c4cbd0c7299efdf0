"""The check kinds of `bench claims`: a paper's claims judged on a board's rows. Pure: rows in,
verdicts out. The claims themselves are data (claims_dg_vae.toml, read by bench/claims_report.py);
nothing here names a method.

A claim names board rows (a method and the parameters that differ from its registered defaults) and
checks. The board gives each row the mean m and sample std s (ddof 1) of every metric over its n seeds
and N, the test sentences evaluated; D is the board's latent size. The check kinds, for a row r:

    at_most      holds iff m_r <= f X        X = D, or X = log N_r (natural log) for `of = "log N"`
    at_least     holds iff m_r >= f X
    like         holds iff |m_r - m_ref| <= k max(s_r, s_ref)     (k = `within`, the larger std)
    grows_with   over the claim's rows in their listed order i = 1..K, per metric: Spearman's rho
                 between i and m_i = Pearson's correlation of their ranks (ties: average ranks);
                 holds iff rho >= min_rho for every metric. A metric has no rank order, and does not
                 grow (fails), when max_i m_i - min_i m_i <= max_i s_i: means spread no wider than
                 one seed's noise (all equal, or all collapsed near 0) order the rows by chance
    higher_than  holds iff m_r > m_c for every candidate c: each board row of the `than` methods (any
                 setting with `any_setting`, else the one named) whose `where` bound holds
                 (e.g. m_c(AU) >= 0.9 D); a `than` method without such a row cannot be compared

A row is judged only when it is on the board with n >= min_seeds and a finite mean (like: n >= 2 as
well, for a std); else its finding is "not enough runs". A claim is a conjunction: it fails when any
finding fails (one counterexample refutes it), else has "not enough runs" when any finding lacks
runs, else holds. Verdicts compare means; the std is shown beside every mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from vae_collapse_bench.bench.report import fixed
from vae_collapse_bench.bench.reported import parse_setting

HOLDS, FAILS, MISSING = "holds", "fails", "not enough runs"
SCALES = ("D", "log N")


@dataclass(frozen=True)
class Row:
    """One board row: mean and sample std over its n seeds of each metric; N test sentences."""

    method: str
    setting: str
    n: int
    N: int | None
    mean: dict[str, float]
    std: dict[str, float]

    @property
    def label(self) -> str:
        return f"{self.method} [{self.setting}]"

    @property
    def subject(self) -> str:
        return f"{self.label}, n = {self.n}"

    def shown(self, metric: str, name: bool = True) -> str:
        """`AU 31.0 ± 0.5`: the mean and sample std over seeds (– with one seed)."""
        digits = 1 if metric in ("AU", "CU") else 3 if metric == "Rouge-L" else 2
        mean, std = self.mean.get(metric, math.nan), self.std.get(metric, math.nan)
        text = f"{fixed(mean, digits)} ± {'–' if math.isnan(std) else fixed(std, digits)}"
        return f"{metric} {text}" if name else text


def _equal(a: Any, b: Any) -> bool:
    """A parameter as the data file writes it and as a board's setting does: equal as numbers
    (1.8 and "1.8", 49 and "49.0"), else as text ("default")."""
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


@dataclass(frozen=True)
class Ref:
    """A row a claim names: method + parameters beside its defaults, or any setting of the method."""

    method: str
    params: tuple[tuple[str, Any], ...] = ()
    any_setting: bool = False

    def wanted(self, defaults: dict[str, dict]) -> dict[str, Any]:
        return {**defaults.get(self.method, {}), **dict(self.params)}

    def label(self, defaults: dict[str, dict]) -> str:
        setting = ",".join(f"{k}={v}" for k, v in sorted(self.wanted(defaults).items())) or "-"
        return f"{self.method} [{'any setting' if self.any_setting else setting}]"

    def find(self, rows: list[Row], defaults: dict[str, dict]) -> list[Row]:
        """The board rows this names: every row of the method (any_setting), else the rows whose
        parameters are exactly the wanted ones."""
        wanted = self.wanted(defaults)

        def same(row: Row) -> bool:
            have = parse_setting(row.setting)
            return set(have) == set(wanted) and all(_equal(wanted[k], have[k]) for k in wanted)

        return [r for r in rows if r.method == self.method and (self.any_setting or same(r))]


@dataclass(frozen=True)
class Bound:
    """metric <= (at_most) or >= fraction x D, or x log N."""

    metric: str
    fraction: float
    of: str
    at_most: bool

    @property
    def rule(self) -> str:
        return f"{self.metric} {'<=' if self.at_most else '>='} {self.fraction:g} {self.of}"

    def judge(self, row: Row, latent_dim: int) -> tuple[str, str]:
        """(verdict, the numbers) of this bound on one row."""
        mean = row.mean.get(self.metric, math.nan)
        scale = latent_dim if self.of == "D" else math.log(row.N) if row.N and row.N > 1 else None
        if math.isnan(mean) or scale is None:
            return MISSING, f"{self.metric} not measured" if math.isnan(mean) else "N unknown"
        limit = self.fraction * scale
        ok = mean <= limit if self.at_most else mean >= limit
        relation = ("<=" if ok else ">") if self.at_most else (">=" if ok else "<")  # as the numbers stand
        sizes = f", N = {row.N:,}" if self.of == "log N" else ""
        return (HOLDS if ok else FAILS), (f"{row.shown(self.metric)} {relation} {limit:.4g} "
                                          f"({self.fraction:g} {self.of}{sizes})")


@dataclass(frozen=True)
class Finding:
    subject: str  # the row, or rows, judged
    verdict: str
    detail: str  # the numbers behind the verdict


@dataclass(frozen=True)
class Context:
    """What every check sees: the board's rows, its D, the seeds a row needs, the methods' defaults."""

    rows: list[Row]
    latent_dim: int
    min_seeds: int
    defaults: dict[str, dict]

    def lacking(self, row: Row, metric: str, need_std: bool = False) -> str:
        """Why `row` cannot be judged on `metric` ("" when it can)."""
        need = max(self.min_seeds, 2 if need_std else 1)
        if row.n < need:
            return f"{row.label}: n = {row.n} < {need} seeds"
        if math.isnan(row.mean.get(metric, math.nan)):
            return f"{row.label}: {metric} not measured"
        return ""


# ----------------------------------------------------------------------------------- check kinds
@dataclass(frozen=True)
class Threshold:
    """at_most / at_least: a bound on each of the claim's rows."""

    bound: Bound
    refs = ()

    @property
    def rule(self) -> str:
        return self.bound.rule

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.bound.metric,)

    def judge(self, targets: list[Row], ctx: Context) -> list[Finding]:
        return [Finding(r.subject, MISSING, why) if (why := ctx.lacking(r, self.bound.metric))
                else Finding(r.subject, *self.bound.judge(r, ctx.latent_dim)) for r in targets]


@dataclass(frozen=True)
class Like:
    """like: each row's mean within `within` stds (the larger of the two) of the reference row's."""

    metric: str
    reference: Ref
    within: float

    @property
    def rule(self) -> str:
        return (f"{self.metric} within {self.within:g} std of {self.reference.method}'s (std: the larger of "
                "the two sample stds over seeds)")

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    @property
    def refs(self) -> tuple[Ref, ...]:
        return (self.reference,)

    def judge(self, targets: list[Row], ctx: Context) -> list[Finding]:
        found = self.reference.find(ctx.rows, ctx.defaults)
        out = []
        for row in targets:
            if not found:
                out.append(Finding(row.subject, MISSING, f"no row {self.reference.label(ctx.defaults)} on the board"))
                continue
            ref, m = found[0], self.metric
            why = ctx.lacking(row, m, need_std=True) or ctx.lacking(ref, m, need_std=True)
            if why:
                out.append(Finding(row.subject, MISSING, why))
                continue
            gap, spread = abs(row.mean[m] - ref.mean[m]), self.within * max(row.std[m], ref.std[m])
            ok = gap <= spread
            out.append(Finding(row.subject, HOLDS if ok else FAILS,
                               f"{row.shown(m)} vs {ref.label} (n = {ref.n}) {ref.shown(m, False)}: |difference| "
                               f"{gap:.3g} {'<=' if ok else '>'} {spread:.3g} ({self.within:g} x the larger std)"))
        return out


def spearman(values: list[float]) -> float:
    """Spearman's rho between the positions 1..K and `values`: Pearson's correlation of the ranks,
    ties given their average rank; nan when the values are all equal (no rank order)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):  # a run of ties shares the mean of ranks i+1 .. j+1
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    positions = [float(p + 1) for p in range(len(values))]
    mx, my = sum(positions) / len(values), sum(ranks) / len(values)
    cov = sum((x - mx) * (y - my) for x, y in zip(positions, ranks))
    vx, vy = sum((x - mx) ** 2 for x in positions), sum((y - my) ** 2 for y in ranks)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan


@dataclass(frozen=True)
class GrowsWith:
    """grows_with: every metric rises along the claim's rows, in the order listed (Spearman's rho).
    Judged on all the rows together, so only when every row is on the board."""

    metrics: tuple[str, ...]
    min_rho: float
    refs = ()
    needs_every_row = True

    @property
    def rule(self) -> str:
        return (f"Spearman's rho of the rows' order with the mean of {' and of '.join(self.metrics)} "
                f">= {self.min_rho:g} (each), the means spread wider than the largest std over seeds")

    def judge(self, targets: list[Row], ctx: Context) -> list[Finding]:
        who = " < ".join(r.label for r in targets)
        lacking = [why for r in targets for m in self.metrics if (why := ctx.lacking(r, m))]
        if lacking:
            return [Finding(who, MISSING, "; ".join(dict.fromkeys(lacking)))]
        out = []
        for m in self.metrics:
            means = [r.mean[m] for r in targets]
            spread = max(means) - min(means)
            noise = max((r.std[m] for r in targets if not math.isnan(r.std[m])), default=0.0)
            rho, ok = spearman(means), False
            if math.isnan(rho):  # all means equal: the seed-noise case with nothing to rank
                verdict = "equal on every row: no rank order"
            elif spread <= noise:
                verdict = (f"means spread {spread:.2g} <= {noise:.2g}, the largest std over seeds: no rank "
                           f"order beyond seed noise (rho = {rho:.2f} is chance)")
            else:
                ok = rho >= self.min_rho
                verdict = f"rho = {rho:.2f} {'>=' if ok else '<'} {self.min_rho:g}"
            values = ", ".join(f"{r.shown(m, False)} (n = {r.n})" for r in targets)
            out.append(Finding(who, HOLDS if ok else FAILS, f"{m} {values}: {verdict}"))
        return out


@dataclass(frozen=True)
class HigherThan:
    """higher_than: each row's mean above that of every candidate row (see the module docstring)."""

    metric: str
    than: tuple[Ref, ...]
    where: Bound | None

    @property
    def rule(self) -> str:
        names = ", ".join(r.method for r in self.than)
        return f"{self.metric} higher than {names}" + (f" at each setting with {self.where.rule}" if self.where else "")

    @property
    def metrics(self) -> tuple[str, ...]:
        return (self.metric,) + ((self.where.metric,) if self.where else ())

    @property
    def refs(self) -> tuple[Ref, ...]:
        return self.than

    def judge(self, targets: list[Row], ctx: Context) -> list[Finding]:
        m, out = self.metric, []
        for row in targets:
            for ref in self.than:
                found = ref.find(ctx.rows, ctx.defaults)
                met = [(c, self.where.judge(c, ctx.latent_dim) if self.where else (HOLDS, "")) for c in found]
                chosen = [(c, why) for c, (verdict, why) in met if verdict == HOLDS]
                if not chosen:
                    what = f"{ref.method} row" if ref.any_setting else ref.label(ctx.defaults)
                    cond = f" with {self.where.rule}" if self.where else ""
                    out.append(Finding(f"{row.label} vs {ref.method}", MISSING,
                                       f"no {what}{cond} ({len(found)} row{'s' if len(found) != 1 else ''} of "
                                       f"{ref.method} on the board)"))
                for c, because in chosen:
                    who = f"{row.label} vs {c.label}"
                    why = ctx.lacking(row, m) or ctx.lacking(c, m)
                    if why:
                        out.append(Finding(who, MISSING, why))
                        continue
                    ok = row.mean[m] > c.mean[m]
                    out.append(Finding(who, HOLDS if ok else FAILS,
                                       f"{row.shown(m)} (n = {row.n}) {'>' if ok else '<='} {c.shown(m, False)} "
                                       f"(n = {c.n}" + (f"; {because})" if because else ")")))
        return out


# ----------------------------------------------------------------------------------- claims
def combine(verdicts) -> str:
    """fails if any fails; else not enough runs if any lacks runs (or there is nothing); else holds."""
    verdicts = list(verdicts)
    return FAILS if FAILS in verdicts else MISSING if MISSING in verdicts or not verdicts else HOLDS


@dataclass(frozen=True)
class Verdict:
    id: str
    paper: str
    rule: str
    verdict: str
    findings: tuple[Finding, ...]

    def subjects(self) -> list[tuple[str, str, list[str]]]:
        """(subject, its verdict, its details) in order: a verdict per row or comparison."""
        grouped: dict[str, list[Finding]] = {}
        for f in self.findings:
            grouped.setdefault(f.subject, []).append(f)
        return [(s, combine(f.verdict for f in fs), list(dict.fromkeys(f.detail for f in fs)))
                for s, fs in grouped.items()]


@dataclass(frozen=True)
class Claim:
    """A claim of the paper: its id, its words (paraphrased), the rows it is about and its checks."""

    id: str
    paper: str
    rows: tuple[Ref, ...]
    checks: tuple = ()

    @property
    def rule(self) -> str:
        per_row = len(self.rows) > 1 and not any(getattr(c, "needs_every_row", False) for c in self.checks)
        return ("each row: " if per_row else "") + "; ".join(c.rule for c in self.checks)

    def judge(self, ctx: Context) -> Verdict:
        """Row by row in the claim's order (the per-row checks), then the checks of all rows together."""
        targets, findings = [], []
        together = [c for c in self.checks if getattr(c, "needs_every_row", False)]
        per_row = [c for c in self.checks if c not in together]
        for r in self.rows:
            found = r.find(ctx.rows, ctx.defaults)
            if not found:
                findings.append(Finding(r.label(ctx.defaults), MISSING, "no such row on the board"))
                continue
            targets.append(found[0])
            for c in per_row:
                findings += c.judge([found[0]], ctx)
        if len(targets) == len(self.rows):  # a missing row is already a finding of its own
            for c in together:
                findings += c.judge(targets, ctx)
        return Verdict(self.id, self.paper, self.rule, combine(f.verdict for f in findings), tuple(findings))
