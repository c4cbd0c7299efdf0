"""Method registry: `@register`, lookup with close-match suggestions, entry-point discovery,
hyperparameter resolution with domain checks, paper grids and Optuna search spaces.

A method is found by name only through this registry; nothing in `bench/` names a method.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from vae_collapse_bench.bench.errors import BenchError, quote, unknown

ENTRY_POINT_GROUP = "vae_collapse_bench.methods"
GRIDS = ("paper", "default")  # --grid: each method's paper grid, or each method's defaults alone


def check_grid(grid: str) -> None:
    """A BenchError unless `grid` is one of GRIDS (whatever the methods: one without a grid too)."""
    if grid not in GRIDS:
        raise BenchError(f"unknown grid {quote(grid)}: use --grid paper or --grid default")


@dataclass(frozen=True)
class MethodSpec:
    """What the registry knows of a method: its class, hyperparameters, paper grid and search space."""

    name: str
    cls: type
    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: Callable | None = None
    summary: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cls.Params())

    def resolve(self, overrides: dict[str, Any] | None = None):
        """Defaults + overrides -> a validated Params instance; unknown names or bad values raise."""
        overrides = dict(overrides or {})
        fields = {f.name: f for f in dataclasses.fields(self.cls.Params)}
        for key in overrides:
            if key not in fields:
                raise unknown(f"hyperparameter of {self.name}", key, list(fields) or ["(none)"])
        defaults = self.defaults
        values = {k: _coerce(v, type(defaults[k])) for k, v in overrides.items()}
        try:
            return self.cls.Params(**values)
        except (ValueError, TypeError) as exc:
            raise BenchError(f"bad hyperparameter for {self.name}: {exc}") from None

    def search_space(self) -> dict[str, str]:
        """The Optuna search space, described: {"gamma": "float in [0.3, 2.0]", ...}."""
        if self.search is None:
            return {}
        recorder = _SpaceRecorder()
        self.search(recorder)
        return recorder.space

    def settings(self, grid: str = "paper") -> list[dict[str, Any]]:
        """The hyperparameter settings to run: the cartesian product of the paper grid, or defaults."""
        check_grid(grid)
        if grid == "default" or not self.grid:
            return [{}]
        keys = sorted(self.grid)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(self.grid[k] for k in keys))]


def check_number(name: str, value: Any, low: float, high: float = math.inf, *,
                 low_inclusive: bool = False) -> None:
    """Raise ValueError unless value is a real number (not a bool) in the domain: finite, above `low`
    (or equal with low_inclusive) and at most `high`. The message names the field and the domain."""
    # an int is finite however large (math.isfinite would overflow converting it to a float)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (isinstance(value, int) or math.isfinite(value))
    ok = ok and (value >= low if low_inclusive else value > low) and value <= high
    if not ok:
        if math.isinf(high):
            domain = f"a finite number {'>=' if low_inclusive else '>'} {low:g}"
        else:
            domain = f"a number in {'[' if low_inclusive else '('}{low:g}, {high:g}]"
        raise ValueError(f"{name} must be {domain}, got {_shown(value)}")


def check_count(name: str, value: Any, *, or_default: bool = False) -> None:
    """Raise ValueError unless value is an integer >= 1 (or the string "default" with or_default)."""
    if or_default and value == "default":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        alternative = " or 'default'" if or_default else ""
        raise ValueError(f"{name} must be an integer >= 1{alternative}, got {_shown(value)}")


def _shown(value: Any) -> str:
    return quote(value) if isinstance(value, str) else repr(value)


def _coerce(value: Any, target: type) -> Any:
    """Command-line strings and grid values -> the type of the field's default (a str default accepts
    numbers too). A float field takes 4 as 4.0, so `--set fb-vae.free_bits=4`, the grid's 4 and the
    default 4.0 are one run: one training key, one leaderboard row."""
    if isinstance(value, str):
        value = _parse(value, target)
    if target is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer beyond every float: no domain check could take it
            raise BenchError(f"cannot read an integer of {value.bit_length()} bits as float: too large") from None
    return value


def _parse(value: str, target: type) -> Any:
    for cast in (int, float) if target in (int, float) else (int, float, str):
        try:
            return cast(value)
        except ValueError:
            continue
    raise BenchError(f"cannot read {quote(value)} as {target.__name__}")


class _SpaceRecorder:
    """Stands in for an optuna.Trial to read a search-space function without running a study."""

    def __init__(self):
        self.space: dict[str, str] = {}

    def _range(self, kind, name, low, high, step, log):
        self.space[name] = f"{kind} in [{low}, {high}]" + (" (log)" if log else "") + (f" step {step}" if step else "")
        return low

    def suggest_float(self, name, low, high, *, step=None, log=False):
        return self._range("float", name, low, high, step, log)

    def suggest_int(self, name, low, high, *, step=1, log=False):
        return self._range("int", name, low, high, None if step == 1 else step, log)

    def suggest_categorical(self, name, choices):
        self.space[name] = "one of " + " ".join(map(str, choices))
        return choices[0]


_REGISTRY: dict[str, MethodSpec] = {}
_discovered = False


def register(name: str, grid: dict[str, list[Any]] | None = None, search: Callable | None = None):
    """Class decorator: `@register("bn-vae", grid={"gamma": [...]}, search=lambda trial: {...})`."""

    def wrap(cls):
        if name in _REGISTRY and _REGISTRY[name].cls is not cls:
            raise BenchError(f"two methods registered as {name!r}: {_REGISTRY[name].cls} and {cls}")
        cls.name = name
        doc = (cls.__doc__ or "").strip().splitlines()
        spec = MethodSpec(name, cls, dict(grid or {}), search, doc[0] if doc else "")
        for setting in spec.settings("paper"):  # the paper grid must itself pass the domain checks
            spec.resolve(setting)
        _REGISTRY[name] = spec
        return cls

    return wrap


def discover() -> None:
    """Import the built-in `methods` package and every module of the entry-point group."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    _import_package("vae_collapse_bench.methods")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            module = ep.load()
        except Exception as exc:  # a broken plug-in must say which one
            raise BenchError(f"cannot load method plug-in {ep.name!r} ({ep.value}): {exc}") from exc
        if hasattr(module, "__path__"):
            _import_package(module.__name__)


def _import_package(package: str) -> None:
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)


def get(name: str) -> MethodSpec:
    discover()
    if name not in _REGISTRY:
        raise unknown("method", name, list(_REGISTRY))
    return _REGISTRY[name]


def names() -> list[str]:
    discover()
    return list(_REGISTRY)


def select(methods: str) -> list[MethodSpec]:
    """`all` or a comma-separated list of names -> specs, in registry order for `all`."""
    discover()
    if methods.strip() == "all":
        return list(_REGISTRY.values())
    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    if not chosen:
        raise BenchError("--methods is empty: give `all` or names such as `vae,bn-vae`")
    return [get(m) for m in dict.fromkeys(chosen)]
