"""`bench search`: Optuna searches of a method's registered space on the validation split
(design.md §8, "Search"). The storage is the run store's (journal file or RDB); Optuna is the
engine, nothing here schedules anything.

A search is one Optuna study, `search/<method>/<dataset>/<profile>/<objective>`, apart from the
leaderboard's `runs/...` studies. Each trial samples the method's space (`@register(search=...)`),
trains on the train split exactly as `bench run` would (same Trainer, same seed for every trial:
trials compare settings, not seeds), and is scored on the validation split by the evaluator
(`bench.objectives`): never on test. Per epoch it reports validation priorLL, so a single-objective
search prunes (`PRUNERS`); a pruned trial's checkpoint is deleted. Constraints (AU, CU >= 0.9 D) go
through `Trial.set_constraint` (Optuna 5's constraints support; the sampler's `constraints_func` is
deprecated there): an infeasible trial is kept and marked.

The study grows to N finished (complete or pruned) trials in total: running the command again
continues it, and any number of processes (`--workers K`, or `bench search` on several machines)
may work on it at once. Each process, before asking for a trial:

- fails the RUNNING trials whose worker is gone (a dead pid on this host; on RDB storages a stale
  heartbeat, through Optuna's `fail_stale_trials`) and enqueues each such trial again with its
  parameters; the retry takes over the dead trial's checkpoint folder (an atomic rename) and resumes
  training from its last epoch, with the dead trial's per-epoch values;
- stops when N trials have finished. After `ask`, a trial numbered past N - 1 live or finished
  trials gives itself up (FAIL, `abandoned`): two processes that ask at once never overshoot N.

A trial whose setting equals a completed trial's (a categorical space offers few) reuses its result
instead of training the same run again. Any exception inside a trial, divergence included, fails
that trial with its reason and the search goes on; MAX_FAILURES_IN_A_ROW failures in a row stop
this process (the space fails everywhere; the message says so).

The sampler is TPE, seeded per trial from (--seed, trial number) (`bench.sampling`): one process
reproduces its searches, and processes sharing a study never draw the same random settings.

A little over 400 lines on purpose: the whole life of a trial (budget, take-over, reuse, training,
pruning, failure) reads in one place; how trials are sampled and pruned, and the local worker
processes, live in bench.sampling and bench.search_workers.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import Profile
from vae_collapse_bench.bench.data import Corpus
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.evaluate import evaluate, nonfinite_metrics
from vae_collapse_bench.bench.identity import config_identity, identity_key
from vae_collapse_bench.bench.objectives import (
    OBJECTIVES,
    constraint_values,
    get_objective,
    held_out_likelihoods,
    is_feasible,
    latent_use,
)
from vae_collapse_bench.bench.registry import MethodSpec
from vae_collapse_bench.bench.runner import RUN_FAILURES, NonFiniteMetric, _describe_exception, build_model
from vae_collapse_bench.bench.sampling import PRUNERS, TrialSeededSampler, resolve_pruner, startup_trials
from vae_collapse_bench.bench.store import Heartbeat, _process_alive, package_versions
from vae_collapse_bench.bench.train import Trainer, seed_everything

PREFIX = "search/"
MAX_FAILURES_IN_A_ROW = 5
SAME_SETTING_POLL_S = 10.0  # how often a trial waiting for an equal setting's result looks again
SHOWN_DIGITS = 4  # significant digits of a float hyperparameter in labels and in `--from-search`


def study_name(method: str, dataset: str, profile: str, objective: str) -> str:
    return f"{PREFIX}{method}/{dataset}/{profile}/{objective}"


def searchable(method: MethodSpec) -> MethodSpec:
    """The method, if it registered a search space; else a BenchError naming those that did."""
    if method.search is None:
        have = [name for name in registry.names() if registry.get(name).search is not None]
        raise BenchError(f"{method.name} registers no search space (its hyperparameters are fixed): search one of "
                         f"{', '.join(have)}, or add `search=lambda trial: {{...}}` to its @register")
    return method


def shown(params: dict[str, Any]) -> dict[str, Any]:
    """Float hyperparameters to SHOWN_DIGITS significant digits (labels, `--from-search`)."""
    return {k: float(f"{v:.{SHOWN_DIGITS}g}") if isinstance(v, float) else v for k, v in params.items()}


def setting_text(params: dict[str, Any]) -> str:
    """`gamma=0.8735,...` as `bench run` labels a setting (RunSpec.setting), or `-`."""
    return ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "-"


@dataclass(frozen=True)
class SearchSettings:
    method: str
    dataset: str
    profile: str
    trials: int
    objective: str = "priorLL"
    seed: int = 0
    pruner: str | None = None

    @property
    def study_name(self) -> str:
        return study_name(self.method, self.dataset, self.profile, self.objective)


class SearchReporter:
    """Progress hooks; the CLI prints lines. Silent by default."""

    def trial_started(self, number: int, setting: str, resumed_epoch: int) -> None: ...
    def epoch_done(self, number: int, record: dict) -> None: ...
    def trial_finished(self, number: int, setting: str, outcome: str, detail: str) -> None: ...
    def note(self, text: str) -> None: ...


FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Search:
    """One search study (module docstring): created or continued on construction, after every check
    (search space, objective and pruner, the study's config and seed); `run` works on it."""

    def __init__(self, settings: SearchSettings, storage: optuna.storages.BaseStorage, corpus: Corpus,
                 profile: Profile, results_dir: Path, device: str = "cpu", reporter: SearchReporter | None = None):
        if settings.trials < 1:
            raise BenchError(f"--trials must be at least 1, got {settings.trials}")
        self.settings, self.profile, self.device = settings, profile, torch.device(device)
        self.method = searchable(registry.get(settings.method))
        self.objective = get_objective(settings.objective)
        self.pruner = resolve_pruner(settings.pruner, self.objective)
        self.reporter = reporter or SearchReporter()
        t = profile.training
        self.corpus = corpus.truncated(t.max_train, t.max_valid, profile.evaluation.max_test)
        self.valid = self.corpus.splits["valid"]
        self.latent_dim = profile.backbone_for(corpus.family).latent_dim
        self.folder = Path(results_dir) / settings.study_name
        self.config = config_identity(corpus.checksum, profile, corpus.family)
        self.storage = storage
        self.study = optuna.create_study(
            storage=storage, study_name=settings.study_name, directions=self.objective.directions,
            sampler=TrialSeededSampler(settings.seed, startup_trials(settings.trials)),
            pruner=PRUNERS[self.pruner](t), load_if_exists=True)
        self._check_or_record_identity()

    # --- the study's identity ------------------------------------------------------------------
    def _check_or_record_identity(self) -> None:
        """A new study records what it searches under; a continued one must match it: trials of
        another data version, profile config or seed cannot be compared with new ones."""
        s = self.settings
        key = identity_key(self.config)
        stored = self.study.user_attrs
        if "config_key" not in stored:
            # uid: the study's checkpoint folder, so that a study dropped and searched again, or one of
            # the same name in another storage, never finds the trial folders of another
            for name, value in {"kind": "search", "method": s.method, "dataset": s.dataset, "profile": s.profile,
                                "objective": s.objective, "seed": s.seed, "config_key": key, "config": self.config,
                                "latent_dim": self.latent_dim, "valid_sentences": len(self.valid),
                                "uid": uuid.uuid4().hex[:12]}.items():
                self.study.set_user_attr(name, value)
            return
        if stored["config_key"] != key:
            changed = [k for k in self.config if stored.get("config", {}).get(k) != self.config[k]]
            raise BenchError(f"the study {s.study_name} was searched under another {', '.join(changed) or 'config'} "
                             f"than this {s.dataset}/{s.profile} now has; its trials cannot be compared with new "
                             f"ones: drop it (bench store drop {s.study_name}) or search with --storage elsewhere")
        if stored.get("seed") != s.seed:
            raise BenchError(f"the study {s.study_name} was started with --seed {stored.get('seed')}: continue it "
                             f"with that seed, or drop it first (bench store drop {s.study_name})")

    # --- the loop --------------------------------------------------------------------------------
    def trial_dir(self, number: int) -> Path:
        """<results>/search/<method>/<dataset>/<profile>/<objective>/<study uid>/trial-<number>; the
        uid is read each time: of two processes that created the study at once, the last write counts."""
        return self.folder / self.study.user_attrs.get("uid", "") / f"trial-{number}"

    def finished(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def _live(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING)))

    def run(self, should_stop: Callable[[], bool] = lambda: False) -> Counter:
        """Trials until the study has N finished ones (or this process gives up or is told to
        stop); returns this process's outcomes counted: complete, pruned, failed, reused, abandoned,
        and gave_up (1 after MAX_FAILURES_IN_A_ROW failed trials in a row)."""
        tally: Counter = Counter()
        in_a_row = 0
        while not should_stop():
            self.fail_dead_trials()
            if self._live() >= self.settings.trials:  # finished, or running in other processes
                break
            self.enqueue_retries()
            trial = self.study.ask()
            if self._over_budget(trial):
                self._abandon(trial, f"the study already had {self.settings.trials} live or finished trials")
                tally["abandoned"] += 1
                break
            outcome = self._trial(trial)
            tally[outcome] += 1
            in_a_row = in_a_row + 1 if outcome == "failed" else 0
            if in_a_row >= MAX_FAILURES_IN_A_ROW:
                tally["gave_up"] = 1
                self.reporter.note(f"{in_a_row} trials in a row failed: this process stops (see their reasons above; "
                                   "the same command continues the study)")
                break
        return tally

    def _over_budget(self, trial: optuna.Trial) -> bool:
        before = [t for t in self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
                  if t.number < trial.number]
        return len(before) >= self.settings.trials

    def _abandon(self, trial: optuna.Trial, reason: str) -> None:
        trial.set_user_attr("abandoned", reason)
        self.study.tell(trial, state=TrialState.FAIL)

    def _fail(self, trial: optuna.Trial, reason: str, **attrs) -> str:
        for name, value in {"fail_reason": reason, **attrs}.items():
            trial.set_user_attr(name, value)
        self.study.tell(trial, state=TrialState.FAIL)
        return "failed"

    # --- dead workers ------------------------------------------------------------------------------
    def fail_dead_trials(self) -> None:
        """Fail the RUNNING trials whose worker is gone: stale heartbeats (RDB storages) and dead
        pids on this host. Of several processes doing this at once, one fails each trial."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            fail_stale_trials(self.study)
        host = socket.gethostname()
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            a = t.user_attrs
            if a.get("host") != host or "pid" not in a or _process_alive(int(a["pid"])):
                continue
            try:
                self.storage.set_trial_user_attr(t._trial_id, "fail_reason", f"its worker (pid {a['pid']}) died")
                self.storage.set_trial_user_attr(t._trial_id, "worker_died", True)
                self.storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue  # another process failed it first (or its worker finished it after all)
            self.reporter.note(f"trial {t.number} ({a.get('setting', '?')}): its worker, pid {a['pid']}, died; "
                               "marked failed, and tried again from its checkpoint")

    @staticmethod
    def _died(t: FrozenTrial) -> bool:
        # fail_stale_trials (RDB) sets no reason; every failure of this module does
        a = t.user_attrs
        return t.state == TrialState.FAIL and (a.get("worker_died") or not ("fail_reason" in a or "abandoned" in a))

    def enqueue_retries(self) -> None:
        """Enqueue each trial whose worker died, once, with its parameters (`retry_of`)."""
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs.get("retry_of") for t in trials}
        for t in trials:
            if self._died(t) and t.params and t.number not in retried:
                self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})

    def _duplicate_retry(self, trial: optuna.Trial, dead: int) -> bool:
        """Two processes may enqueue the same retry; the earlier trial runs it."""
        return any(t.user_attrs.get("retry_of") == dead and t.number < trial.number and "abandoned" not in t.user_attrs
                   for t in self.study.get_trials(deepcopy=False))

    def _take_over(self, trial: optuna.Trial, dead: int, workdir: Path) -> FrozenTrial | None:
        """Move the dead trial's checkpoint folder to this trial's (atomic; of two retries one
        gets it). Returns the dead trial when its folder was found here."""
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == dead)
        source = frozen.user_attrs.get("checkpoint_dir", "")
        try:
            workdir.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, workdir)
        except OSError:
            self.reporter.note(f"trial {trial.number}: the checkpoint of trial {dead} ({source or 'none recorded'}) "
                               "is not on this machine (a results folder that is not shared?): training from scratch")
            return None
        return frozen

    # --- one trial ---------------------------------------------------------------------------------
    def _trial(self, trial: optuna.Trial) -> str:
        started = time.perf_counter()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        dead = trial.user_attrs.get("retry_of")
        if dead is not None and self._duplicate_retry(trial, dead):
            self._abandon(trial, f"another process retries trial {dead}")
            return "abandoned"
        try:
            params = dataclasses.asdict(self.method.resolve(self.method.search(trial)))
        except Exception as exc:  # a region of the space the method refuses, or a broken search lambda
            reason = str(exc) if isinstance(exc, BenchError) else _describe_exception(exc, "sampling")
            self.reporter.trial_finished(trial.number, setting_text(trial.params), "failed", reason)
            return self._fail(trial, reason)
        s = self.settings
        label = setting_text(shown(params))
        attrs = {"method": s.method, "params": params, "setting": label, "seed": s.seed, "dataset": s.dataset,
                 "profile": s.profile, "split": "valid", "config_key": self.study.user_attrs["config_key"],
                 "data_checksum": self.config["data_checksum"], "versions": package_versions(),
                 "torch_threads": torch.get_num_threads(), "device": str(self.device), "command": " ".join(sys.argv)}
        for name, value in attrs.items():
            trial.set_user_attr(name, value)
        if dead is None:
            with Heartbeat(self.storage, trial._trial_id):
                self._await_same_setting(trial, params, label)
        if (earlier := self._same_setting(params, trial.number)) is not None:
            return self._reuse(trial, earlier, label)
        workdir = self.trial_dir(trial.number)
        taken = self._take_over(trial, dead, workdir) if dead is not None else None
        trial.set_user_attr("checkpoint_dir", str(workdir))
        with Heartbeat(self.storage, trial._trial_id):
            try:
                outcome, detail = self._train(trial, params, label, workdir, taken, started)
            except BaseException as exc:  # interrupted: the checkpoint stays, the trial says why
                self._fail(trial, f"interrupted ({type(exc).__name__})", worker_died=True)
                raise
        self.reporter.trial_finished(trial.number, label, outcome, detail)
        return outcome

    def _same_runs(self) -> list[optuna.Study]:
        """This study, then the searches of the method under the other objectives with the same
        config and seed: their trials trained exactly the runs this one would."""
        s, names = self.settings, set(optuna.get_all_study_names(self.storage))
        studies = [self.study]
        for other in OBJECTIVES:
            name = study_name(s.method, s.dataset, s.profile, other)
            if other == s.objective or name not in names:
                continue
            attrs = self.storage.get_study_user_attrs(self.storage.get_study_id_from_name(name))
            if attrs.get("config_key") == self.study.user_attrs["config_key"] and attrs.get("seed") == s.seed:
                studies.append(optuna.load_study(study_name=name, storage=self.storage))
        return studies

    def _same_setting(self, params: dict, number: int) -> tuple[str, FrozenTrial] | None:
        """A complete trial of the same setting: (how to name it, the trial), or None."""
        for study in self._same_runs():
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                if study is self.study and t.number == number:
                    continue
                if t.user_attrs.get("params") == params and "metrics" in t.user_attrs:
                    return (f"trial {t.number}" if study is self.study else f"{study.study_name} trial {t.number}"), t
        return None

    def _await_same_setting(self, trial: optuna.Trial, params: dict, label: str) -> None:
        """While an earlier trial of this study trains the same setting in a live process (TPE
        proposes a categorical value again before its result is in), wait for it instead of training
        the same run twice; its result is then reused. Only earlier trials: no two trials wait on
        each other. A worker that dies is noticed by the pid check here or the heartbeat elsewhere."""
        said = False
        while True:
            self.fail_dead_trials()  # what stays RUNNING has a live worker (or one on another host)
            same = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                    if t.number < trial.number and t.user_attrs.get("params") == params]
            if not same:
                return
            if not said:
                self.reporter.note(f"trial {trial.number}: {label} is being trained as trial {same[0].number}: "
                                   "waiting for its result instead of training it twice")
                said = True
            time.sleep(SAME_SETTING_POLL_S)

    def _reuse(self, trial: optuna.Trial, earlier: tuple[str, FrozenTrial], label: str) -> str:
        """The same setting, seed and config trains the same model: its result, not a second run
        (the values and constraints of this objective, from its validation metrics)."""
        name, t = earlier
        metrics = t.user_attrs["metrics"]
        constraints = constraint_values(metrics, self.latent_dim)
        for attr, value in {"same_as": name, "metrics": metrics, "feasible": is_feasible(constraints),
                            "epochs": t.user_attrs.get("epochs"), "best_epoch": t.user_attrs.get("best_epoch")}.items():
            trial.set_user_attr(attr, value)
        for attr, value in constraints.items():
            trial.set_constraint(attr, value)
        self.study.tell(trial, self.objective.values(metrics))
        self.reporter.trial_finished(trial.number, label, "reused", f"the setting of {name}: its result is "
                                     "reused, nothing trained")
        return "reused"

    def _build(self, params: dict):
        seed_everything(self.settings.seed)
        return build_model(self.method.name, params, self.corpus, self.profile)

    def _train(self, trial: optuna.Trial, params: dict, label: str, workdir: Path, taken: FrozenTrial | None,
               started: float) -> tuple[str, str]:
        seed, ev = self.settings.seed, self.profile.evaluation
        curve: list[dict] = []
        model = None
        try:
            model = self._build(params)

            def on_epoch(record: dict) -> None:
                values = held_out_likelihoods(model, self.valid, ev, seed, self.device)
                values.update(latent_use(model, self.valid, ev, self.device))
                feasible = is_feasible(constraint_values(values, self.latent_dim))
                curve.append({"epoch": record["epoch"], **values, "feasible": feasible})
                trial.set_user_attr("curve", curve)
                trial.set_user_attr("epoch", record["epoch"])  # what `bench status` shows of a running trial
                if self.objective.prunable:
                    trial.report(values["priorLL"], record["epoch"])
                self.reporter.epoch_done(trial.number, {**record, **values})
                if self.objective.prunable and trial.should_prune():
                    raise optuna.TrialPruned()

            trainer = Trainer(model, self.corpus, self.profile.training, seed, workdir, self.device, on_epoch=on_epoch)
            model.to(self.device)
            resumed = trainer.resume()
            if taken is not None and resumed:
                curve += [c for c in taken.user_attrs.get("curve", []) if c["epoch"] <= resumed]
                if self.objective.prunable:
                    for step, value in sorted(taken.intermediate_values.items()):
                        if step <= resumed:
                            trial.report(value, step)
            self.reporter.trial_started(trial.number, label, resumed)
            state = trainer.fit()
            result = evaluate(model, self.valid, ev, seed, self.device)
            if bad := nonfinite_metrics(result):
                raise NonFiniteMetric("evaluation gave a non-finite " + ", ".join(
                    f"{name} = {result.metrics[name]}" for name in bad))
        except optuna.TrialPruned:
            epoch = curve[-1]["epoch"]
            use = {name: curve[-1][name] for name in ("AU", "CU")}
            constraints = constraint_values(use, self.latent_dim)
            for name, value in constraints.items():
                trial.set_constraint(name, value)
            for name, value in {"pruned_at_epoch": epoch, "latent_use": use, "feasible": is_feasible(constraints),
                                "wall_time_s": time.perf_counter() - started}.items():
                trial.set_user_attr(name, value)
            self.study.tell(trial, state=TrialState.PRUNED)
            shutil.rmtree(workdir, ignore_errors=True)
            return "pruned", f"at epoch {epoch} (validation priorLL {curve[-1]['priorLL']:.2f})"
        except Exception as exc:
            reason = str(exc) if isinstance(exc, RUN_FAILURES) else _describe_exception(exc, "the trial")
            self._fail(trial, reason)
            return "failed", reason
        constraints = constraint_values(result.metrics, self.latent_dim)
        for name, value in constraints.items():
            trial.set_constraint(name, value)
        for name, value in {"metrics": result.metrics, "feasible": is_feasible(constraints), "epochs": state.epoch,
                            "best_epoch": state.best_epoch, "history": state.history,
                            "resumed_from": taken.number if taken is not None else None,
                            "wall_time_s": time.perf_counter() - started}.items():
            trial.set_user_attr(name, value)
        self.study.tell(trial, self.objective.values(result.metrics))
        m = result.metrics
        return "complete", (", ".join(f"{k} {m[k]:.{0 if k in ('AU', 'CU') else 2}f}" for k in
                                      ("priorLL", "postLL", "AU", "CU")) +
                            (" (feasible)" if is_feasible(constraints) else " (infeasible)"))
