"""Expands --methods/--grid/--seeds/--set into RunSpecs and runs each one: cached, resumed or new.

One run = build the method from a seed, `Trainer.fit` (resumable), `evaluate` on the test split,
store metrics and provenance as one Optuna trial. A run is identified twice (`bench.identity`): its
training key says what was trained, its eval key what evaluated it; a new evaluator config evaluates
the stored best.pt again and never retrains. A diverging run, or one whose metrics are not finite,
is stored as failed with its reason and the sweep goes on; a finished run is never trained again.
"""

from __future__ import annotations

import dataclasses
import re
import resource
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import Profile
from vae_collapse_bench.bench.data import Corpus
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.evaluate import EvalResult, evaluate, nonfinite_metrics
from vae_collapse_bench.bench.identity import RunIdentity, run_identity
from vae_collapse_bench.bench.model import Method
from vae_collapse_bench.bench.registry import MethodSpec
from vae_collapse_bench.bench.store import RunStore
from vae_collapse_bench.bench.train import NothingToTrain, Trainer, TrainingDiverged, seed_everything


class NonFiniteMetric(RuntimeError):
    """Evaluation produced a NaN or infinite metric; the message names it."""


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
    status: str  # "done" | "evaluated" (stored checkpoint, new evaluator) | "cached" | "failed" | "skipped"
    metrics: dict[str, float] | None = None
    reason: str = ""
    run_key: str = ""


def parse_seeds(text: str, max_count: int = 10_000, max_seed: int = 2**32 - 1) -> list[int]:
    """`0,1,2` or inclusive ranges such as `0-4` -> distinct seeds in order; else a BenchError.
    At most `max_count` seeds (checked before any range is built: `0-999999999` is refused at once),
    each at most `max_seed` (numpy seeds modulo 2**32: a larger seed would repeat a smaller one)."""
    from vae_collapse_bench.bench.errors import quote

    seeds: dict[int, None] = {}
    for part in text.split(","):
        match = re.fullmatch(r"\s*([0-9]+)(?:\s*-\s*([0-9]+))?\s*", part)
        if not match:
            raise BenchError(f"malformed --seeds {quote(text)}: give non-negative integers like 0,1,2 or 0-4")
        bounds = [b.lstrip("0") or "0" for b in (match[1], match[2] or match[1])]
        if any(len(b) > len(str(max_seed)) or int(b) > max_seed for b in bounds):  # no 5,000-digit int()
            raise BenchError(f"--seeds {quote(text)}: seeds are integers from 0 to {max_seed}")
        low, high = map(int, bounds)
        if high < low:
            raise BenchError(f"malformed --seeds {quote(text)}: the range {low}-{high} runs backwards; "
                             f"write {high}-{low}")
        if high - low + 1 <= max_count:  # else refused before the range is built
            seeds.update(dict.fromkeys(range(low, high + 1)))
        if high - low + 1 > max_count or len(seeds) > max_count:
            raise BenchError(f"--seeds {quote(text)} asks for more than {max_count:,} seeds, the most one "
                             f"command runs: give fewer (e.g. 0-{max_count - 1}) or split the sweep")
    return list(seeds)


def parse_overrides(items: list[str]) -> dict[str, dict[str, str]]:
    """`--set bn-vae.gamma=0.9` (repeatable) -> {"bn-vae": {"gamma": "0.9"}}; the method must exist."""
    from vae_collapse_bench.bench.errors import plain

    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name or not value:
            raise BenchError(f"malformed --set {plain(item)}: write METHOD.PARAM=VALUE, e.g. bn-vae.gamma=0.9")
        try:
            registry.get(method)
        except BenchError as exc:
            raise BenchError(f"malformed --set {plain(item)}: {exc}") from None
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
    """methods x settings x seeds. A `--set` value replaces that hyperparameter's grid axis.
    --grid and every --set are checked before anything is expanded; an error names the --set."""
    from vae_collapse_bench.bench.errors import plain

    overrides = overrides or {}
    registry.check_grid(grid)
    unused = set(overrides) - {m.name for m in methods}
    if unused:
        raise BenchError(f"--set names {plain(', '.join(sorted(unused)))}, which --methods does not run")

    def resolve(m: MethodSpec, setting: dict[str, Any], given: dict[str, str]):
        try:
            return m.resolve({**setting, **given})
        except BenchError as exc:
            if not given:
                raise
            sets = " ".join(f"--set {plain(f'{m.name}.{k}={v}')}" for k, v in given.items())
            raise BenchError(f"malformed {sets}: {exc}") from None

    for m in methods:  # each --set alone first, so the error names the one at fault
        for name, value in overrides.get(m.name, {}).items():
            resolve(m, {}, {name: value})
    specs = []
    for m in methods:
        settings, seen = [], set()
        for setting in m.settings(grid):
            params = dataclasses.asdict(resolve(m, setting, overrides.get(m.name, {})))
            frozen = tuple(sorted(params.items()))
            if frozen not in seen:
                seen.add(frozen)
                settings.append(frozen)
        specs += [RunSpec(dataset, profile, m.name, s, seed) for s in settings for seed in seeds]
    return specs


def build_model(method: str, params: dict[str, Any], corpus: Corpus, profile: Profile) -> Method:
    """An untrained model of `method` with `params` over its defaults, at the profile's backbone for
    the corpus's family and the corpus's vocabulary: what a run of them trains, or what its best.pt fits."""
    spec = registry.get(method)
    return spec.cls(len(corpus.vocab), profile.backbone_for(corpus.family), spec.resolve(params))


def load_model(method: str, params: dict[str, Any], checkpoint: Path, corpus: Corpus, profile: Profile,
               device: torch.device | str = "cpu") -> Method:
    """`build_model` with the weights of `checkpoint` (a run's best.pt), on `device`, in eval mode."""
    model = build_model(method, params, corpus, profile)
    model.load_state_dict(torch.load(checkpoint, map_location=device))
    return model.to(device).eval()


class Reporter:
    """Progress hooks; the CLI supplies a rich display or plain log lines. Silent by default."""

    def run_started(self, spec: RunSpec, index: int, total: int, resumed_epoch: int) -> None:
        """resumed_epoch: finished epochs found in last.pt (0: a fresh run); -1: no training, the
        stored best.pt is evaluated again."""
    def train_step(self, step: int, steps: int) -> None: ...
    def epoch_done(self, record: dict, max_epochs: int) -> None: ...
    def eval_batch(self, batch: int, batches: int) -> None: ...
    def run_finished(self, outcome: RunOutcome) -> None: ...
    def note(self, text: str) -> None:
        """Something the user should know about a run that is neither progress nor its outcome."""


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; process peak


class Runner:
    """Runs RunSpecs on one corpus and profile against one RunStore (module docstring).

    Per spec: a finished evaluation record with the same eval key -> cached; a deterministic failure
    -> reported, not retried (unless retry_failed); a finished training run whose best.pt exists ->
    evaluated again under the current evaluator, never retrained; otherwise trained (resuming from
    last.pt) and evaluated. Work starts only after `RunStore.claim` succeeded.
    """

    def __init__(self, store: RunStore, corpus: Corpus, profile: Profile, results_dir: Path,
                 device: str = "cpu", reporter: Reporter | None = None, retry_failed: bool = False):
        self.store, self.profile = store, profile
        self.full_corpus = corpus
        t = profile.training
        self.corpus = corpus.truncated(t.max_train, t.max_valid, profile.evaluation.max_test)
        self.results_dir, self.device = Path(results_dir), torch.device(device)
        self.reporter = reporter or Reporter()
        self.retry_failed = retry_failed

    def identity(self, spec: RunSpec) -> RunIdentity:
        return run_identity(spec.dataset, self.full_corpus.checksum, self.profile, self.corpus.family,
                            spec.method, spec.params_dict, spec.seed)

    def run_all(self, specs: list[RunSpec]) -> list[RunOutcome]:
        return [self.run(spec, i, len(specs)) for i, spec in enumerate(specs)]

    def run(self, spec: RunSpec, index: int = 0, total: int = 1) -> RunOutcome:
        ident = self.identity(spec)
        outcome = self._known(spec, ident)
        if outcome is None:
            outcome = self._claim_and_work(spec, ident, index, total)
        self.reporter.run_finished(outcome)
        return outcome

    def known(self, spec: RunSpec) -> RunOutcome | None:
        """The outcome of `spec` without any work: cached, or failed before (without retry_failed);
        None when it has to run (what `bench run --enqueue-only` queues)."""
        return self._known(spec, self.identity(spec))

    def _known(self, spec: RunSpec, ident: RunIdentity) -> RunOutcome | None:
        if (done := self.store.evaluated(ident.eval_key)) is not None:
            return RunOutcome(spec, "cached", done.user_attrs.get("metrics"), run_key=ident.training_key)
        if not self.retry_failed and (failed := self.store.failed(ident.training_key, ident.eval_key)):
            return RunOutcome(spec, "failed", reason="failed before: " + failed.user_attrs["fail_reason"]
                              + " (--retry-failed runs it again)", run_key=ident.training_key)
        return None

    def _claim_and_work(self, spec: RunSpec, ident: RunIdentity, index: int, total: int) -> RunOutcome:
        trained = self.store.trained(ident.training_key)
        workdir = self.results_dir / "checkpoints" / ident.training_key
        attrs = {
            "training_key": ident.training_key, "eval_key": ident.eval_key, "config_key": ident.config_key,
            "run_key": ident.training_key, "identity": ident.as_dict(), "method": spec.method,
            "params": spec.params_dict, "setting": spec.setting, "seed": spec.seed, "dataset": spec.dataset,
            "profile": spec.profile, "data_checksum": self.full_corpus.checksum,
            "data_notes": list(self.full_corpus.notes),
            "config": self.profile.resolved(self.corpus.family), "device": str(self.device),
            "checkpoint_dir": str(trained.user_attrs["checkpoint_dir"] if trained else workdir),
        }
        # Evaluating a stored checkpoint only reads it; training writes the folder, so it is
        # claimed by training key: two evaluator configs never train the same run twice.
        claim = self.store.claim(ident.eval_key if trained else ident.training_key, attrs)
        if not isinstance(claim, optuna.Trial):
            where = f"{claim.user_attrs.get('host')} pid {claim.user_attrs.get('pid')}"
            return RunOutcome(spec, "skipped", reason=f"already running on {where}", run_key=ident.training_key)
        if (done := self.store.evaluated(ident.eval_key)) is not None:  # finished while we claimed
            self.store.release(claim)
            return RunOutcome(spec, "cached", done.user_attrs.get("metrics"), run_key=ident.training_key)
        with self.store.heartbeat(claim):
            try:
                if trained:
                    return self._evaluate_stored(spec, ident, claim, trained, index, total)
                return self._train_and_evaluate(spec, ident, claim, workdir, index, total)
            except BaseException as exc:  # interrupted: keep the checkpoint, record why, stop the sweep
                self.store.fail(claim, f"{type(exc).__name__}: {exc}")
                raise

    def _failed(self, spec: RunSpec, ident: RunIdentity, claim: optuna.Trial, exc: Exception,
                stage: str) -> RunOutcome:
        """Anything that goes wrong inside one run fails that run, for good (not retried without
        --retry-failed), with its reason; the sweep goes on."""
        reason = str(exc) if isinstance(exc, RUN_FAILURES) else _describe_exception(exc, stage)
        self.store.fail(claim, reason, diverged=True, stage=stage)
        return RunOutcome(spec, "failed", reason=reason, run_key=ident.training_key)

    def _build(self, spec: RunSpec) -> Method:
        seed_everything(spec.seed)
        return build_model(spec.method, spec.params_dict, self.corpus, self.profile)

    def _evaluate(self, model: Method, spec: RunSpec) -> EvalResult:
        result = evaluate(model, self.corpus.splits["test"], self.profile.evaluation, spec.seed,
                          self.device, on_batch=self.reporter.eval_batch)
        if bad := nonfinite_metrics(result):
            values = ", ".join(f"{name} = {result.metrics[name]}" for name in bad)
            raise NonFiniteMetric(f"evaluation gave a non-finite {values}")
        return result

    def _from_scratch(self, spec: RunSpec, claim: optuna.Trial, dead: FrozenTrial, workdir: Path) -> None:
        """An earlier claim of this run died after epoch E, and its checkpoint is not in this
        machine's results folder (not shared): the run trains again from scratch, and says so."""
        a = dead.user_attrs
        where = {"host": a.get("host"), "pid": a.get("pid"), "epoch": a.get("epoch")}
        claim.set_user_attr("restarted_from_scratch", where)
        self.reporter.note(f"{spec.label}: its run on {where['host']} pid {where['pid']} stopped after epoch "
                           f"{where['epoch']}, but its checkpoint is not under {workdir} on this machine: "
                           "training from scratch (share the results folder between machines to resume)")

    def _evaluate_stored(self, spec, ident, claim, trained: FrozenTrial, index, total) -> RunOutcome:
        """Re-evaluate the best.pt of a finished training run under the current evaluator."""
        started = time.perf_counter()
        self.reporter.run_started(spec, index, total, -1)
        try:
            seed_everything(spec.seed)
            best = Path(trained.user_attrs["checkpoint_dir"]) / "best.pt"
            model = load_model(spec.method, spec.params_dict, best, self.corpus, self.profile, self.device)
            result = self._evaluate(model, spec)
        except Exception as exc:
            return self._failed(spec, ident, claim, exc, "evaluation")
        carried = {k: trained.user_attrs[k] for k in TRAINING_ATTRS if k in trained.user_attrs}
        self.store.complete(claim, result.metrics["priorLL"], {
            **carried, **_eval_attrs(result), "evaluated_from_trial": trained.number,
            "eval_wall_time_s": time.perf_counter() - started,
        })
        return RunOutcome(spec, "evaluated", result.metrics, run_key=ident.training_key)

    def _train_and_evaluate(self, spec, ident, claim, workdir: Path, index, total) -> RunOutcome:
        started = time.perf_counter()
        stage = "training"
        try:
            model = self._build(spec)
            max_epochs = self.profile.training.max_epochs

            def on_epoch(record: dict) -> None:
                claim.set_user_attr("epoch", record["epoch"])  # `bench status`; a dead run's progress
                self.reporter.epoch_done(record, max_epochs)

            trainer = Trainer(model, self.corpus, self.profile.training, spec.seed, workdir, self.device,
                              on_step=self.reporter.train_step, on_epoch=on_epoch)
            model.to(self.device)
            resumed = trainer.resume()
            if resumed:
                claim.set_user_attr("epoch", resumed)
            elif (dead := self.store.interrupted(ident.training_key)) is not None:
                self._from_scratch(spec, claim, dead, workdir)
            self.reporter.run_started(spec, index, total, -1 if trainer.state.finished else resumed)
            state = trainer.fit()
            train_seconds = time.perf_counter() - started
            stage = "evaluation"
            result = self._evaluate(model, spec)
        except Exception as exc:
            return self._failed(spec, ident, claim, exc, stage)
        self.store.complete(claim, result.metrics["priorLL"], {
            **_eval_attrs(result),
            "epochs": state.epoch, "best_epoch": state.best_epoch, "decays": state.decays,
            "best_valid_objective": state.best_objective, "history": state.history,
            "skipped_batches": sum(r.get("skipped_batches", 0) for r in state.history),
            "skipped_sentences": sum(r.get("skipped_sentences", 0) for r in state.history),
            "train_wall_time_s": train_seconds, "wall_time_s": time.perf_counter() - started,
            "peak_memory_mb": _peak_memory_mb(self.device),
        })
        return RunOutcome(spec, "done", result.metrics, run_key=ident.training_key)


# Failures whose own message says everything: shown as they are. Any other exception is described
# with its type and innermost frame (`_describe_exception`).
RUN_FAILURES = (TrainingDiverged, NothingToTrain, NonFiniteMetric)


def _describe_exception(exc: Exception, stage: str) -> str:
    """One line for a run that failed with an unexpected exception: where, what, and the innermost
    frame of the traceback (enough to find it; the trial keeps it as its fail reason)."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" at {Path(frame.filename).name}:{frame.lineno}" if frame else ""
    text = " ".join(str(exc).split())[:300]
    return f"{stage} raised {type(exc).__name__}{where}: {text}"


# What a re-evaluation record carries over from the record of the training run it evaluates.
TRAINING_ATTRS = ("epochs", "best_epoch", "decays", "best_valid_objective", "history", "skipped_batches",
                  "skipped_sentences", "train_wall_time_s", "wall_time_s", "peak_memory_mb")


def _eval_attrs(result: EvalResult) -> dict[str, Any]:
    return {"metrics": result.metrics, "eval_seconds": result.timings, "eval_sizes": result.sizes,
            "posterior_family": result.family, "au_comparable": result.au_comparable,
            "interpolation": result.interpolation}
