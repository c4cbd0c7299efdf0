"""Expands --methods/--grid/--seeds/--set into RunSpecs and runs each one: cached, resumed or new.

One run = build the method from a seed, `Trainer.fit` (resumable), `evaluate` on the test split,
store metrics and provenance as one Optuna trial. A diverging run is stored as failed with its
reason and the sweep goes on; a finished run is never trained again.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import registry
from bench.config import Profile
from bench.data import Corpus
from bench.errors import BenchError
from bench.evaluate import evaluate
from bench.registry import MethodSpec
from bench.store import RunStore, run_key
from bench.train import Trainer, TrainingDiverged, seed_everything


@dataclass(frozen=True)
class RunSpec:
    """One run: a method with resolved hyperparameters, on a dataset and profile, with one seed."""

    dataset: str
    profile: str
    method: str
    params: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def params_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def setting(self) -> str:
        """`gamma=0.6,...` or `-` for a method without hyperparameters."""
        return ",".join(f"{k}={v}" for k, v in self.params) or "-"

    @property
    def label(self) -> str:
        return f"{self.method}[{self.setting}] seed {self.seed}"


@dataclass
class RunOutcome:
    spec: RunSpec
    status: str  # "done" | "cached" | "failed" | "skipped"
    metrics: dict[str, float] | None = None
    reason: str = ""
    run_key: str = ""


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` or inclusive ranges such as `0-4` -> distinct seeds in order; else a BenchError."""
    seeds: list[int] = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\s*-\s*(\d+))?\s*", part)
        if not match or (match[2] and int(match[2]) < int(match[1])):
            raise BenchError(f"malformed --seeds {text!r}: give non-negative integers like 0,1,2 or 0-4")
        seeds.extend(range(int(match[1]), int(match[2] or match[1]) + 1))
    return list(dict.fromkeys(seeds))


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """`--set bn-vae.gamma=0.9` (repeatable) -> {"bn-vae": {"gamma": "0.9"}}; the method must exist."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name or not value:
            raise BenchError(f"malformed --set {item!r}: write METHOD.PARAM=VALUE, e.g. bn-vae.gamma=0.9")
        registry.get(method)
        out.setdefault(method, {})[name] = value
    return out


def expand(
    methods: list[MethodSpec],
    dataset: str,
    profile: str,
    grid: str,
    seeds: list[int],
    overrides: dict[str, dict[str, str]] | None = None,
) -> list[RunSpec]:
    """methods x settings x seeds. A `--set` value replaces that hyperparameter's grid axis."""
    overrides = overrides or {}
    unused = set(overrides) - {m.name for m in methods}
    if unused:
        raise BenchError(f"--set names {', '.join(sorted(unused))}, which --methods does not run")
    specs = []
    for m in methods:
        settings, seen = [], set()
        for setting in m.settings(grid):
            params = dataclasses.asdict(m.resolve({**setting, **overrides.get(m.name, {})}))
            frozen = tuple(sorted(params.items()))
            if frozen not in seen:
                seen.add(frozen)
                settings.append(frozen)
        specs += [RunSpec(dataset, profile, m.name, s, seed) for s in settings for seed in seeds]
    return specs


class Reporter:
    """Progress hooks; the CLI supplies a rich display or plain log lines. Silent by default."""

    def run_started(self, spec: RunSpec, index: int, total: int, resumed_epoch: int) -> None: ...
    def train_step(self, step: int, steps: int) -> None: ...
    def epoch_done(self, record: dict, max_epochs: int) -> None: ...
    def eval_batch(self, batch: int, batches: int) -> None: ...
    def run_finished(self, outcome: RunOutcome) -> None: ...


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; process peak


class Runner:
    def __init__(self, store: RunStore, corpus: Corpus, profile: Profile, results_dir: Path,
                 device: str = "cpu", reporter: Reporter | None = None, retry_failed: bool = False):
        self.store, self.profile = store, profile
        self.full_corpus = corpus
        t = profile.training
        self.corpus = corpus.truncated(t.max_train, t.max_valid, profile.evaluation.max_test)
        self.results_dir, self.device = Path(results_dir), torch.device(device)
        self.reporter = reporter or Reporter()
        self.retry_failed = retry_failed

    def identity(self, spec: RunSpec) -> dict[str, Any]:
        return {
            "dataset": spec.dataset,
            "data_checksum": self.full_corpus.checksum,
            "config": self.profile.resolved(self.corpus.family),
            "method": spec.method,
            "params": spec.params_dict,
            "seed": spec.seed,
        }

    def run_all(self, specs: list[RunSpec]) -> list[RunOutcome]:
        return [self.run(spec, i, len(specs)) for i, spec in enumerate(specs)]

    def run(self, spec: RunSpec, index: int = 0, total: int = 1) -> RunOutcome:
        identity = self.identity(spec)
        key = run_key(identity)
        outcome = self._cached(spec, key)
        if outcome is None:
            outcome = self._train_and_evaluate(spec, key, identity, index, total)
        self.reporter.run_finished(outcome)
        return outcome

    def _cached(self, spec: RunSpec, key: str) -> RunOutcome | None:
        if (done := self.store.completed(key)) is not None:
            return RunOutcome(spec, "cached", done.user_attrs.get("metrics"), run_key=key)
        if not self.retry_failed and (failed := self.store.failed(key)) is not None:
            return RunOutcome(spec, "failed", reason="failed before: " + failed.user_attrs["fail_reason"]
                              + " (--retry-failed runs it again)", run_key=key)
        if (other := self.store.running_elsewhere(key)) is not None:
            where = f"{other.user_attrs.get('host')} pid {other.user_attrs.get('pid')}"
            return RunOutcome(spec, "skipped", reason=f"already running on {where}", run_key=key)
        return None

    def _train_and_evaluate(self, spec, key, identity, index, total) -> RunOutcome:
        workdir = self.results_dir / "checkpoints" / key
        trial = self.store.begin({
            "run_key": key, "method": spec.method, "params": spec.params_dict, "setting": spec.setting,
            "seed": spec.seed, "dataset": spec.dataset, "profile": spec.profile,
            "data_checksum": identity["data_checksum"], "config": identity["config"],
            "device": str(self.device), "checkpoint_dir": str(workdir),
        })
        started = time.perf_counter()
        try:
            method = registry.get(spec.method)
            seed_everything(spec.seed)
            model = method.cls(len(self.corpus.vocab), self.profile.backbone_for(self.corpus.family),
                               method.resolve(spec.params_dict))
            max_epochs = self.profile.training.max_epochs
            trainer = Trainer(model, self.corpus, self.profile.training, spec.seed, workdir, self.device,
                              on_step=self.reporter.train_step,
                              on_epoch=lambda record: self.reporter.epoch_done(record, max_epochs))
            model.to(self.device)
            resumed = trainer.resume()
            self.reporter.run_started(spec, index, total, resumed)
            state = trainer.fit()
            result = evaluate(model, self.corpus.splits["test"], self.profile.evaluation, spec.seed,
                              self.device, on_batch=self.reporter.eval_batch)
        except TrainingDiverged as exc:
            self.store.fail(trial, str(exc), diverged=True)
            return RunOutcome(spec, "failed", reason=str(exc), run_key=key)
        except BaseException as exc:  # interrupted or a bug: keep the checkpoint, record why
            self.store.fail(trial, f"{type(exc).__name__}: {exc}")
            raise
        self.store.complete(trial, result.metrics["priorLL"], {
            "metrics": result.metrics, "eval_seconds": result.timings, "eval_sizes": result.sizes,
            "epochs": state.epoch, "best_epoch": state.best_epoch, "decays": state.decays,
            "best_valid_objective": state.best_objective, "history": state.history,
            "wall_time_s": time.perf_counter() - started,
            "peak_memory_mb": _peak_memory_mb(self.device),
        })
        (workdir / "last.pt").unlink(missing_ok=True)  # best.pt stays for plots and re-evaluation
        return RunOutcome(spec, "done", result.metrics, run_key=key)
