"""`bench search` and `bench run --from-search` on the smoke profile and the synthetic corpus: the
objective's constraints, the per-trial seeded sampler, continuing a study, pruning, failed trials,
reused settings, a worker killed mid-trial, local workers, the two-phase protocol up to the board
mark, and every user error (one line, exit code 2)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.pruners import BasePruner
from optuna.trial import TrialState, create_trial
from test_fuzz import VALUES, _with, call, fill
from vae_collapse_bench.bench import data, sampling, search, search_workers
from vae_collapse_bench.bench.cli import main
from vae_collapse_bench.bench.config import PROFILES
from vae_collapse_bench.bench.objectives import constraint_values, get_objective, held_out_likelihoods, is_feasible
from vae_collapse_bench.bench.store import open_storage
from vae_collapse_bench.bench.train import Trainer, TrainingDiverged

SMOKE = ["--dataset", "synthetic", "--profile", "smoke"]
STUDY = "search/bn-vae/synthetic/smoke/priorLL"


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def trials(results: Path, name: str = STUDY):
    storage = open_storage(None, results, read_only=True)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def results_of(env: Path) -> Path:
    return env / "results"


# --- the objective -------------------------------------------------------------------------------
def test_constraints_are_0_9_d_minus_au_and_cu_and_a_missing_cu_is_no_constraint():
    assert constraint_values({"AU": 29.0, "CU": 30.0}, 32) == pytest.approx({"AU": -0.2, "CU": -1.2})
    assert is_feasible(constraint_values({"AU": 29.0, "CU": 30.0}, 32))
    assert not is_feasible(constraint_values({"AU": 28.0, "CU": 32.0}, 32))  # 28.8 active units needed
    assert constraint_values({"AU": 8.0, "CU": math.nan}, 8) == pytest.approx({"AU": -0.8})  # vMF: no CU
    assert get_objective("priorLL").prunable and not get_objective("pareto").prunable
    assert get_objective("pareto").values({"priorLL": -3.0, "postLL": -2.0, "AU": 1}) == [-3.0, -2.0]


def test_a_trial_draws_what_its_seed_and_number_say_whatever_the_process_drew_before():
    def study(sampler):
        s = optuna.create_study(sampler=sampler, direction="maximize")
        return s

    first = study(sampling.TrialSeededSampler(7, n_startup_trials=3))
    for _ in range(3):
        t = first.ask()
        first.tell(t, t.suggest_float("x", 0.0, 1.0))
    # a fresh sampler (another process) that sees the same history draws the same third setting
    other = study(sampling.TrialSeededSampler(7, n_startup_trials=3))
    for t in first.trials[:2]:
        other.add_trial(t)
    third = other.ask()
    assert third.suggest_float("x", 0.0, 1.0) == first.trials[2].params["x"]
    reseeded = study(sampling.TrialSeededSampler(8, n_startup_trials=3))
    assert reseeded.ask().suggest_float("x", 0.0, 1.0) != first.trials[0].params["x"]


def test_a_pruner_judges_a_trial_only_once_it_is_feasible_and_only_against_feasible_ones():
    """Median pruning at epoch 3 among three finished trials: a collapsed one (infeasible, best
    priorLL) is left out of the median; a trial not yet feasible is never pruned."""
    study = optuna.create_study(direction="maximize")

    def trial(value, feasible, state=TrialState.COMPLETE):
        return create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                            intermediate_values={3: value}, params={}, distributions={},
                            user_attrs={"curve": [{"epoch": 3, "priorLL": value, "feasible": feasible}]})

    for value, feasible in ((-40.0, False), (-50.0, True), (-52.0, True)):
        study.add_trial(trial(value, feasible))
    pruner = sampling.FeasibleOnly(optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    assert pruner.prune(study, trial(-51.5, True, TrialState.RUNNING))  # below the feasible median -51
    assert not pruner.prune(study, trial(-50.5, True, TrialState.RUNNING))
    assert not pruner.prune(study, trial(-60.0, False, TrialState.RUNNING))  # may still escape collapse
    plain = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
    assert plain.prune(study, trial(-50.5, True, TrialState.RUNNING))  # the collapsed trial moved the median


def test_shown_settings_round_floats_to_four_significant_digits():
    assert search.setting_text(search.shown({"gamma": 0.873452, "agg": 4, "m": "default"})) == \
        "agg=4,gamma=0.8735,m=default"
    assert search.setting_text({}) == "-"


def test_the_per_epoch_value_leaves_training_untouched(synthetic_root, tmp_path):
    """A trial reports held-out priorLL after every epoch from a generator of its own: the model
    it trains is the one `bench run` trains (same history, same weights)."""
    from vae_collapse_bench.bench import registry

    profile = PROFILES["smoke"]
    corpus = data.load_corpus("synthetic", synthetic_root).truncated(256, 64, 64)
    method = registry.get("bn-vae")

    def train(tmp, probe):
        torch.manual_seed(0)
        model = method.cls(len(corpus.vocab), profile.backbone, method.resolve({}))
        seen = []
        hook = (lambda r: seen.append(held_out_likelihoods(model, corpus.splits["valid"], profile.evaluation, 0))
                ) if probe else None
        state = Trainer(model, corpus, profile.training, 0, tmp, on_epoch=hook).fit()
        return state.history, model.state_dict(), seen

    plain, weights, _ = train(tmp_path / "plain", False)
    probed, probed_weights, values = train(tmp_path / "probed", True)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in plain] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in probed]
    assert all(torch.equal(weights[k], probed_weights[k]) for k in weights)
    assert len(values) == len(plain) and all(v["priorLL"] < 0 and math.isfinite(v["postLL"]) for v in values)


# --- user errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--method", "bn-vae", *SMOKE, "--trials", "0"], "--trials 0: give a whole number from 1"),
        (["search", "--method", "bn-vae", *SMOKE, "--trials", "2", "--workers", "-1"], "--workers -1: give a whole"),
        (["search", "--method", "bn-vae", *SMOKE], "give --trials N"),
        (["search", "--method", "vae", *SMOKE, "--trials", "2"], "vae registers no search space"),
        (["search", "--method", "bn-vea", *SMOKE, "--trials", "2"], "unknown method 'bn-vea'"),
        (["search", "--method", "bn-vae", *SMOKE, "--trials", "2", "--objective", "paretoo"], "unknown objective"),
        (["search", "--method", "bn-vae", *SMOKE, "--trials", "2", "--objective", "pareto", "--pruner", "median"],
         "Optuna's pruners judge one"),
        (["search", "--method", "bn-vae", *SMOKE, "--trials", "2", "--pruner", "hyperband"], "unknown pruner"),
        (["search", "--method", "bn-vae", *SMOKE, "--trials", "2", "--storage", "ftp://x"], "malformed --storage"),
        (["search", "--method", "bn-vae", *SMOKE, "--show"], "no search study search/bn-vae/synthetic/smoke/priorLL"),
        (["run", "--from-search", "bn-vae", *SMOKE, "--quiet"], "no search study search/bn-vae/synthetic/smoke"),
        (["run", "--methods", "vae", *SMOKE, "--pareto"], "--pareto goes with --from-search"),
        (["run", "--from-search", "bn-vae", *SMOKE, "--set", "bn-vae.gamma=1"], "drop --set and --grid"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(bench_env, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2, out + err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


SEARCH = ["search", "--method", "bn-vae", *SMOKE, "--trials", "1"]
FUZZED = {**{f"search{opt}": _with(SEARCH, opt) for opt in (
    "--method", "--dataset", "--trials", "--objective", "--pruner", "--seed", "--workers", "--device", "--results",
    "--storage")},
    **{f"show{opt}": _with([*SEARCH, "--show"], opt) for opt in ("--format", "--top", "--storage")},
    "run--from-search": ["run", *SMOKE, "--from-search", "{V}", "--quiet"]}


@pytest.mark.parametrize("template", list(FUZZED))
def test_odd_values_end_in_one_error_line_never_a_traceback(template, bench_env, monkeypatch, capsys):
    """tests/test_fuzz.py's values through every option of `bench search` (nothing trains)."""
    monkeypatch.chdir(bench_env)
    (bench_env / "a-file.txt").write_text("not a folder\n")
    (bench_env / "a-folder").mkdir()
    paths = {"file": str(bench_env / "a-file.txt"), "folder": str(bench_env / "a-folder")}
    monkeypatch.setattr(search.Search, "run", lambda self, should_stop=None: Counter())
    monkeypatch.setattr(search_workers, "start_workers", lambda *args, **kwargs: [])
    for value in VALUES.values():
        argv = fill(FUZZED[template], value, paths)
        code, _, err, by_argparse = call(argv, capsys)
        assert code in (0, 1, 2) and "Traceback" not in err, (argv, err[-500:])
        if code == 2 and not by_argparse:
            assert err.splitlines()[-1].startswith("error: ") and err.count("error") == 1, err[-500:]


def test_show_names_the_stored_search_studies_when_the_one_asked_for_is_missing(bench_env, capsys):
    _stored_search(results_of(bench_env), "priorLL", [(0.7, -45.0, -40.0, True)])
    code, _, err = run(capsys, "search", "--method", "fb-vae", *SMOKE, "--show")
    assert code == 2 and "unknown search study" in err and STUDY in err


# --- searching -------------------------------------------------------------------------------------
def test_a_search_continues_its_study_up_to_n_trials_and_is_reproducible(bench_env, capsys, tmp_path):
    argv = ["search", "--method", "bn-vae", *SMOKE, "--trials", "2"]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and f"{STUDY}: 2 of 2 trials finished (2 complete, 0 pruned); 0 failed" in out
    first = trials(results_of(bench_env))
    assert [t.state for t in first] == [TrialState.COMPLETE] * 2
    a = first[0].user_attrs
    assert a["split"] == "valid" and a["torch_threads"] == 1 and set(a["metrics"]) >= {"priorLL", "AU", "CU"}
    assert [c["epoch"] for c in a["curve"]] == [1, 2] and first[0].intermediate_values  # reported per epoch
    assert a["epoch"] == 2  # `bench status` shows it while the trial runs
    assert set(first[0].constraints) == {"AU", "CU"} and a["feasible"] == is_feasible(first[0].constraints)

    code, out, _ = run(capsys, *argv)  # nothing left to do
    assert code == 0 and "training" not in out and len(trials(results_of(bench_env))) == 2
    code, out, _ = run(capsys, *argv[:-1], "3")  # one more
    assert code == 0 and out.count(": training") == 1 and len(trials(results_of(bench_env))) == 3

    code, out, _ = run(capsys, *argv[:-1], "1", "--results", str(tmp_path / "elsewhere"))
    again = trials(tmp_path / "elsewhere")[0]
    assert again.params == first[0].params and again.user_attrs["metrics"] == a["metrics"]

    code, out, _ = run(capsys, "search", "--method", "bn-vae", *SMOKE, "--show")
    assert code == 0 and "3 of" not in out and "3 trials finished" in out and "constraints: AU >= 7.2" in out
    code, _, err = run(capsys, *argv, "--seed", "1")
    assert code == 2 and "was started with --seed 0" in err


class PruneEverything(BasePruner):
    def prune(self, study, trial) -> bool:
        return True


def test_pruned_trials_are_counted_and_their_checkpoints_deleted(bench_env, capsys, monkeypatch):
    monkeypatch.setitem(sampling.PRUNERS, "median", lambda training: PruneEverything())
    code, out, _ = run(capsys, "search", "--method", "bn-vae", *SMOKE, "--trials", "2")
    assert code == 0 and "2 of 2 trials finished (0 complete, 2 pruned)" in out
    assert out.count("pruned: at epoch 1 (validation priorLL") == 2
    done = trials(results_of(bench_env))
    assert [t.state for t in done] == [TrialState.PRUNED] * 2
    assert all(t.constraints and "latent_use" in t.user_attrs for t in done)  # judged feasible or not
    assert not any(Path(t.user_attrs["checkpoint_dir"]).exists() for t in done)


def test_a_trial_that_raises_or_diverges_fails_and_the_search_goes_on(bench_env, capsys, monkeypatch):
    fit, calls = Trainer.fit, []

    def flaky(self):
        calls.append(1)
        if len(calls) == 1:
            raise TrainingDiverged("training loss became nan at epoch 1, step 3 (lr 0.5)")
        if len(calls) == 2:
            raise RuntimeError("a bug in one setting")
        return fit(self)

    monkeypatch.setattr(Trainer, "fit", flaky)
    code, out, _ = run(capsys, "search", "--method", "bn-vae", *SMOKE, "--trials", "1")
    assert code == 0 and "1 of 1 trials finished (1 complete, 0 pruned); 2 failed" in out
    assert "failed: training loss became nan" in out
    assert "failed: the trial raised RuntimeError at test_search.py" in out
    states = [t.state for t in trials(results_of(bench_env))]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]


def test_a_setting_that_completed_before_is_reused_not_trained_again(bench_env, capsys, monkeypatch):
    fits = []
    fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: fits.append(1) or fit(self))
    storage = open_storage(None, results_of(bench_env))
    settings = search.SearchSettings("bn-vae", "synthetic", "smoke", trials=2)
    s = search.Search(settings, storage, data.load_corpus("synthetic"), PROFILES["smoke"], results_of(bench_env))
    for _ in range(2):
        s.study.enqueue_trial({"gamma": 0.9})
    assert s.run() == {"complete": 1, "reused": 1}
    first, second = trials(results_of(bench_env))
    assert len(fits) == 1 and second.user_attrs["same_as"] == "trial 0" and second.values == first.values
    assert second.constraints == first.constraints
    # the pareto search of the method trains the same runs: it reuses them too
    pareto = search.Search(dataclasses.replace(settings, objective="pareto", trials=1), storage,
                           data.load_corpus("synthetic"), PROFILES["smoke"], results_of(bench_env))
    pareto.study.enqueue_trial({"gamma": 0.9})
    assert pareto.run() == {"reused": 1} and len(fits) == 1
    (reused,) = trials(results_of(bench_env), STUDY.replace("priorLL", "pareto"))
    assert reused.user_attrs["same_as"] == f"{STUDY} trial 0" and reused.constraints == first.constraints
    m = first.user_attrs["metrics"]
    assert reused.values == [m["priorLL"], m["postLL"]]


def test_a_trial_waits_for_an_earlier_trial_of_the_same_setting_and_reuses_its_result(bench_env, capsys,
                                                                                      monkeypatch):
    import threading

    monkeypatch.setattr(search, "SAME_SETTING_POLL_S", 0.05)
    monkeypatch.setattr(Trainer, "fit", lambda self: pytest.fail("the same setting was trained twice"))
    storage = open_storage(None, results_of(bench_env))
    settings = search.SearchSettings("bn-vae", "synthetic", "smoke", trials=2)
    s = search.Search(settings, storage, data.load_corpus("synthetic"), PROFILES["smoke"], results_of(bench_env))
    other = s.study.ask()  # trained by another live process (this one's pid)
    other.suggest_float("gamma", 0.3, 2.0)
    params = s.method.resolve({"gamma": other.params["gamma"]})
    for name, value in {"host": os.uname().nodename, "pid": os.getpid(), "params": dataclasses.asdict(params),
                        "metrics": {"priorLL": -50.0, "postLL": -49.0, "AU": 8.0, "CU": 8.0}}.items():
        other.set_user_attr(name, value)
    s.study.enqueue_trial(other.params)
    threading.Timer(0.5, lambda: s.study.tell(other, -50.0)).start()
    assert s.run() == {"reused": 1}
    assert trials(results_of(bench_env))[1].user_attrs["same_as"] == "trial 0"


def test_a_study_searched_again_after_a_drop_never_finds_the_old_trial_folders(bench_env):
    storage = open_storage(None, results_of(bench_env))
    settings = search.SearchSettings("bn-vae", "synthetic", "smoke", trials=1)

    def folder():
        return search.Search(settings, storage, data.load_corpus("synthetic"), PROFILES["smoke"],
                             results_of(bench_env)).trial_dir(0)

    before = folder()
    optuna.delete_study(study_name=STUDY, storage=storage)
    assert folder() != before and folder().parent.parent == before.parent.parent


KILLED_CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from vae_collapse_bench.bench import data, sampling, search, search_workers
    from vae_collapse_bench.bench.config import PROFILES
    from vae_collapse_bench.bench.store import open_storage

    results = Path(sys.argv[1])

    class DieInTrial1(search.SearchReporter):
        def epoch_done(self, number, record):
            if number == 1 and record["epoch"] == 1:  # epoch 1 checkpointed and reported
                os.kill(os.getpid(), signal.SIGKILL)

    settings = search.SearchSettings("bn-vae", "synthetic", "smoke", trials=2)
    search.Search(settings, open_storage(None, results), data.load_corpus("synthetic"), PROFILES["smoke"],
                  results, reporter=DieInTrial1()).run()
""")


def test_a_search_killed_mid_trial_continues_and_the_dead_trial_resumes_from_its_checkpoint(bench_env, capsys):
    results = results_of(bench_env)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-c", KILLED_CHILD, str(results)], env=env, capture_output=True,
                           text=True, timeout=300)
    assert child.returncode == -9, child.stderr
    before = trials(results)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]
    dead_dir = Path(before[1].user_attrs["checkpoint_dir"])
    assert (dead_dir / "last.pt").exists()

    code, out, err = run(capsys, "search", "--method", "bn-vae", *SMOKE, "--trials", "2")
    assert code == 0, err
    assert "trial 1 (gamma=" in err and "died; marked failed, and tried again from its checkpoint" in err
    assert "trial 2: gamma=" in out and "training (resuming after epoch 1)" in out
    after = trials(results)
    assert [t.state for t in after] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    dead, retry = after[1], after[2]
    assert "died" in dead.user_attrs["fail_reason"] and retry.params == dead.params
    assert retry.user_attrs["retry_of"] == 1 and retry.user_attrs["resumed_from"] == 1
    assert sorted(retry.intermediate_values) == [1, 2] and [c["epoch"] for c in retry.user_attrs["curve"]] == [1, 2]
    assert not dead_dir.exists() and (Path(retry.user_attrs["checkpoint_dir"]) / "best.pt").exists()
    assert "2 of 2 trials finished (2 complete, 0 pruned); 1 failed" in out


def test_two_local_workers_share_one_study(bench_env, capfd):
    code = main(["search", "--method", "bn-vae", *SMOKE, "--trials", "2", "--workers", "2"])
    out, err = capfd.readouterr()  # the workers write to the file descriptors, not to sys.stdout
    assert code == 0, err
    done = trials(results_of(bench_env))
    finished = [t for t in done if t.state == TrialState.COMPLETE]
    assert len(finished) == 2 and all(t.user_attrs["torch_threads"] == 1 for t in finished)
    assert "2 of 2 trials finished" in out and "[worker 0] done" in out and "[worker 1] done" in out
    # every trial that gave itself up says why; none trained twice
    assert all("abandoned" in t.user_attrs for t in done if t.state == TrialState.FAIL)


# --- the two-phase protocol --------------------------------------------------------------------------
def _stored_search(results: Path, objective: str, rows: list[tuple[float, float, float, bool]]) -> optuna.Study:
    """A search study as `bench search` leaves it, with complete trials (gamma, priorLL, postLL,
    feasible) in place of trained ones."""
    storage = open_storage(None, results)
    settings = search.SearchSettings("bn-vae", "synthetic", "smoke", trials=len(rows), objective=objective,
                                     pruner="none")
    study = search.Search(settings, storage, data.load_corpus("synthetic"), PROFILES["smoke"], results).study
    for gamma, prior, post, feasible in rows:
        use = -0.8 if feasible else 3.2
        metrics = {"priorLL": prior, "postLL": post, "AU": 8.0 if feasible else 4.0, "CU": 8.0}
        study.add_trial(create_trial(
            params={"gamma": gamma}, distributions={"gamma": FloatDistribution(0.3, 2.0)},
            values=[prior] if objective == "priorLL" else [prior, post], constraints={"AU": use, "CU": -0.8},
            user_attrs={"params": {"gamma": gamma}, "metrics": metrics}))
    return study


def test_from_search_trains_the_best_feasible_setting_on_test_and_the_board_marks_it(bench_env, capsys):
    _stored_search(results_of(bench_env), "priorLL",
                   [(0.612345, -50.0, -49.0, True), (0.873452, -45.0, -44.0, True), (1.5, -40.0, -39.0, False)])
    code, out, _ = run(capsys, "search", "--method", "bn-vae", *SMOKE, "--show")
    assert code == 0 and "best" in out.split("gamma=0.8735")[1].splitlines()[0]
    code, out, err = run(capsys, "run", "--from-search", "bn-vae", *SMOKE, "--seeds", "0", "--quiet")
    assert code == 0, err
    assert "trial 1, the best feasible trial (validation priorLL -45.00): gamma=0.8735" in out
    assert "1 run: 1 trained" in out
    code, out, _ = run(capsys, "leaderboard", *SMOKE)
    assert code == 0 and "gamma=0.8735 (searched)" in out
    assert "(searched): the setting was chosen by `bench search` on the validation split" in out and STUDY in out
    code, out, _ = run(capsys, "run", "--from-search", "bn-vae", *SMOKE, "--seeds", "0", "--quiet")
    assert code == 0 and "the run is cached" in out


def test_from_search_pareto_trains_every_feasible_setting_on_the_front(bench_env, capsys):
    _stored_search(results_of(bench_env), "pareto",
                   [(0.7, -45.0, -40.0, True), (0.9, -44.0, -42.0, True), (1.1, -46.0, -43.0, True),
                    (1.3, -40.0, -30.0, False)])
    code, out, err = run(capsys, "run", "--from-search", "bn-vae", *SMOKE, "--pareto", "--seeds", "0", "--quiet")
    assert code == 0, err
    assert "gamma=0.9" in out and "gamma=0.7" in out and "gamma=1.1\n" not in out and "gamma=1.3" not in out
    assert "2 runs: 2 trained" in out
    code, out, _ = run(capsys, "search", "--method", "bn-vae", *SMOKE, "--objective", "pareto", "--show")
    assert code == 0 and "feasible Pareto front of priorLL and postLL (2 trials)" in out


def test_from_search_without_a_feasible_trial_says_which_came_nearest(bench_env, capsys):
    _stored_search(results_of(bench_env), "priorLL", [(0.7, -45.0, -40.0, False)])
    code, _, err = run(capsys, "run", "--from-search", "bn-vae", *SMOKE, "--quiet")
    assert code == 2 and "no complete trial of search/bn-vae/synthetic/smoke/priorLL meets AU >= 7.2" in err
    assert "the nearest is trial 0 (gamma=0.7: AU 4, CU 8)" in err
