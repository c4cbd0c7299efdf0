"""`bench`: argument parsing and rich output only; the work is done by the modules it calls.

Longer than the other modules on purpose: every subcommand's arguments are declared here, in one
parser, so that each command is parsed and refused the same way (one `error:` line, exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from vae_collapse_bench.bench import data, registry
from vae_collapse_bench.bench.config import PROFILES, get_profile
from vae_collapse_bench.bench.device import check_device
from vae_collapse_bench.bench.errors import BenchError, plain, quote, unknown
from vae_collapse_bench.bench.paths import is_dir
from vae_collapse_bench.bench.report import fixed
from vae_collapse_bench.bench.runner import Reporter, Runner, RunOutcome, expand, parse_overrides, parse_seeds

from vae_collapse_bench import __version__

# Labels such as `bn-vae[gamma=0.6]` contain brackets: markup is off for everything we print.
# soft_wrap: a plain line is never broken by the console (a pipe is 80 columns wide), so no number or
# label is split across lines; tables still fit the width.
out = Console(highlight=False, markup=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def results_dir(args) -> Path:
    return Path(args.results or os.environ.get("BENCH_HOME") or "results")


# --- progress -------------------------------------------------------------------------------------
class LogReporter(Reporter):
    """One plain line per epoch and per run (for --quiet, CI logs and pipes)."""

    def __init__(self, console: Console):
        self.console = console

    def line(self, text: str) -> None:
        self.console.print(text)

    def run_started(self, spec, index, total, resumed_epoch):
        self.line(f"[{index + 1}/{total}] {started(spec, resumed_epoch)}")

    def epoch_done(self, record, max_epochs):
        self.line(
            f"  epoch {record['epoch']}/{max_epochs}: train {record['train_loss']:.3f} "
            f"valid {record['valid_objective']:.3f} (rec {record['valid_rec']:.3f}, "
            f"KL {record['valid_kl']:.3f}) lr {record['lr']:g} {record['seconds']:.1f}s"
        )

    def run_finished(self, outcome: RunOutcome):
        self.line(describe(outcome))

    def note(self, text):
        err.print(f"note: {text}")


def started(spec, resumed_epoch: int) -> str:
    if resumed_epoch < 0:
        return f"{spec.label}: evaluating its stored checkpoint"
    return f"{spec.label}: training" + (f" (resuming after epoch {resumed_epoch})" if resumed_epoch else "")


class WorkerReporter(LogReporter):
    """A worker's log lines, each led by its pid: several workers may write to one terminal."""

    def line(self, text: str) -> None:
        self.console.print(f"worker {os.getpid()}: {text.strip()}")

    def run_started(self, spec, index, total, resumed_epoch):
        self.line(f"run {index + 1}: {started(spec, resumed_epoch)}")


class RichReporter(LogReporter):
    """Live bars for runs, epochs, steps and evaluation batches, with the log lines above them."""

    def __init__(self, console: Console, total_runs: int):
        super().__init__(console)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.runs = self.progress.add_task("runs", total=total_runs)
        self.epochs = self.steps = self.evals = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)

    def _task(self, current, description, total):
        if current is None:
            return self.progress.add_task(description, total=total)
        self.progress.reset(current, total=total, description=description)
        return current

    def run_started(self, spec, index, total, resumed_epoch):
        super().run_started(spec, index, total, resumed_epoch)
        self.epochs = self._task(self.epochs, "  epochs", None)
        self.progress.update(self.epochs, completed=max(resumed_epoch, 0))

    def train_step(self, step, steps):
        if step == 1:
            self.steps = self._task(self.steps, "  steps", steps)
        self.progress.update(self.steps, completed=step)

    def epoch_done(self, record, max_epochs):
        super().epoch_done(record, max_epochs)
        self.progress.update(self.epochs, completed=record["epoch"], total=max_epochs)

    def eval_batch(self, batch, batches):
        if batch == 1:
            self.evals = self._task(self.evals, "  evaluation", batches)
        self.progress.update(self.evals, completed=batch)

    def run_finished(self, outcome):
        super().run_finished(outcome)
        self.progress.advance(self.runs)


def describe(o: RunOutcome) -> str:
    if o.status in ("done", "evaluated", "cached"):
        m = o.metrics or {}
        shown = ("priorLL", "postLL", "KL", "MI", "AU", "CU")
        figures = ", ".join(f"{k} {fixed(m[k], 0 if k in ('AU', 'CU') else 2)}" for k in shown if k in m)
        verb = {"done": "trained and evaluated", "cached": "cached (not trained again)",
                "evaluated": "evaluated again from its stored checkpoint (not retrained)"}[o.status]
        return f"  {o.spec.label}: {verb}: {figures}"
    return f"  {o.spec.label}: {o.status}: {o.reason}"


# --- commands -------------------------------------------------------------------------------------
def cmd_methods(args) -> int:
    table = Table(title="registered methods")
    names = registry.names()
    table.add_column("name", min_width=max(map(len, names)), no_wrap=True)  # names are never cut
    table.add_column("what it is", overflow="fold")  # long words fold, never end in an ellipsis
    table.add_column("paper grid", min_width=14, overflow="fold")  # a key and its first values on one line
    for col in ("defaults", "search space"):
        table.add_column(col, overflow="fold")
    for name in names:
        spec = registry.get(name)
        grid = "; ".join(f"{k}: {' '.join(map(str, v))}" for k, v in spec.grid.items()) or "-"
        defaults = ", ".join(f"{k}={v}" for k, v in spec.defaults.items()) or "-"
        space = "; ".join(f"{k}: {v}" for k, v in spec.search_space().items()) or "-"
        table.add_row(name, spec.summary, grid, defaults, space)
    out.print(table)
    return 0


def cmd_run(args) -> int:
    from vae_collapse_bench.bench.store import RunStore, open_storage

    profile = get_profile(args.profile)
    check_device(args.device)
    seeds = parse_seeds(args.seeds)
    check_from_search(args)
    methods = registry.select(args.from_search or args.methods)
    specs = [] if args.from_search else expand(methods, args.dataset, profile.name, args.grid, seeds,
                                               parse_overrides(args.set or []))
    check_worker_counts(args)
    corpus = data.load_corpus(args.dataset)
    root = writable_results(results_dir(args))
    store = RunStore(open_storage(args.storage, root), args.dataset, profile.name)
    if args.from_search:
        specs = searched_runs(args, profile, seeds, corpus, store.storage)
    if args.enqueue_only or args.workers is not None:
        return queue_and_work(args, Runner(store, corpus, profile, root, args.device), specs, root)
    console = err if args.quiet else out
    interactive = console.is_terminal and not args.quiet
    reporter = RichReporter(console, len(specs)) if interactive else LogReporter(console)
    runner = Runner(store, corpus, profile, root, args.device, reporter, args.retry_failed)
    if interactive:
        with reporter:
            outcomes = runner.run_all(specs)
    else:
        outcomes = runner.run_all(specs)
    return summarise(outcomes)


def check_from_search(args) -> None:
    """--from-search METHOD trains what a search chose: no grid, no --set; --pareto goes with it."""
    if args.pareto and not args.from_search:
        raise BenchError("--pareto goes with --from-search METHOD (it trains every setting on the Pareto front "
                         "of that method's `bench search --objective pareto`)")
    if args.from_search and (args.set or args.grid != "paper"):
        raise BenchError("--from-search trains the setting its search chose: drop --set and --grid")


def searched_runs(args, profile, seeds, corpus, storage) -> list:
    """The runs of --from-search: the chosen setting(s) x --seeds, said where they come from."""
    from vae_collapse_bench.bench.search_results import searched_specs

    specs, lines = searched_specs(storage, args.from_search, args.dataset, profile, corpus.checksum,
                                  corpus.family, seeds, args.pareto)
    for line in lines:
        out.print(line)
    return specs


def check_worker_counts(args) -> None:
    """--workers, --threads (run and worker), --max-runs and --poll (worker): refused before any work."""
    for flag, value in (("--workers", getattr(args, "workers", None)), ("--threads", args.threads),
                        ("--max-runs", getattr(args, "max_runs", None))):
        if value is not None and not 1 <= value <= 10_000:
            raise BenchError(f"{flag} {value}: give a whole number from 1 to 10000")
    if getattr(args, "enqueue_only", False) and args.workers is not None:
        raise BenchError("--enqueue-only queues the runs for workers started elsewhere; --workers starts them "
                         "here: give one of the two")
    poll = getattr(args, "poll", None)
    if poll is not None and not 0 < poll <= 3600:
        raise BenchError(f"--poll {poll:g}: give seconds between 0 and 3600")


def queue_and_work(args, runner: Runner, specs, root: Path) -> int:
    """--enqueue-only: queue the runs and return. --workers K: queue them, start K local workers on
    the same storage and results folder, wait for them and summarise the sweep."""
    from vae_collapse_bench.bench.queue import RunQueue
    from vae_collapse_bench.bench.store import study_name
    from vae_collapse_bench.bench.worker import start_local_workers, sweep_outcomes, wait_workers

    queue = RunQueue(runner.store.storage, args.dataset, runner.profile.name)
    done = queue.enqueue(runner, specs, args.retry_failed)
    cached = sum(o.status == "cached" for o in done.known)
    parts = [f"{len(done.already_queued)} queued before"] if done.already_queued else []
    parts += [f"{cached} cached"] if cached else []
    if failed_before := len(done.known) - cached:
        parts.append(f"{failed_before} failed before (--retry-failed queues them)")
    out.print(f"queued {len(done.queued)} of {len(specs)} runs in {queue.name}"
              + (f" ({', '.join(parts)})" if parts else ""))
    if args.enqueue_only:
        out.print("workers on any machine that reaches this storage take them: bench worker --until-empty "
                  "[--storage URL] [--results DIR]; progress: bench status")
        return 0
    workers = start_local_workers(args.workers, root, args.storage, study_name(args.dataset, runner.profile.name),
                                  args.device, args.threads, args.quiet)
    codes = wait_workers(workers)
    code = summarise(sweep_outcomes(runner, specs, done.known))
    if crashed := [c for c in codes if c not in (0, 1)]:
        err.print(f"error: {len(crashed)} of {len(codes)} workers exited with code {', '.join(map(str, crashed))} "
                  "(see their output above); run the same command again to finish the sweep")
        return 2
    return code


def writable_results(root: Path) -> Path:
    """The results directory, checked before any work: checkpoints are written there even when
    --storage points elsewhere, so a folder that cannot be written is refused up front."""
    probe = root / "checkpoints" / f".probe-{os.getpid()}"
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BenchError(f"cannot write checkpoints under the results directory {plain(str(root))}: "
                         f"{exc.strerror or exc}; choose a writable --results (or $BENCH_HOME)") from None
    return root


def summarise(outcomes: list[RunOutcome]) -> int:
    states = ("done", "evaluated", "cached", "failed", "skipped")
    counts = {s: sum(o.status == s for o in outcomes) for s in states}
    if counts["cached"] == len(outcomes):
        out.print("the run is cached; nothing trained" if len(outcomes) == 1
                  else f"all {len(outcomes)} runs cached; nothing trained")
    else:
        runs = f"{len(outcomes)} run" + ("" if len(outcomes) == 1 else "s")
        evaluated = f"{counts['evaluated']} evaluated again from stored checkpoints, " if counts["evaluated"] else ""
        out.print(f"{runs}: {counts['done']} trained, {evaluated}{counts['cached']} cached, "
                  f"{counts['failed']} failed, {counts['skipped']} running elsewhere")
    for o in outcomes:
        if o.status == "failed":
            err.print(f"failed: {o.spec.label}: {o.reason}")
    return 1 if counts["failed"] else 0


def cmd_leaderboard(args) -> int:
    """One document for every stored profile of the dataset (or the one asked for), or one board's
    folder with --publish. Reading only: the storage is opened read-only, nothing is created, a
    damaged journal is reported; --from reads a runs export instead of the storage."""
    from vae_collapse_bench.bench.report import FORMATS, board_from_store, render_boards

    if args.format not in FORMATS:
        raise BenchError(f"unknown format {quote(args.format)}: use one of {', '.join(FORMATS)}")
    if args.publish and args.include_stale:
        raise BenchError("--publish shows the current config only: drop --include-stale")
    if args.publish and not (args.profile or args.from_file):
        raise BenchError("--publish writes one board: give --profile (e.g. --profile quick)")
    output = checked_output(args.output)
    chosen = {m.name for m in registry.select(args.methods)} if args.methods else None
    reported = reported_rows_and_note() if args.with_reported else None
    boards = {}
    for p, store, current, note in leaderboard_sources(args):
        board, shown, stale = board_from_store(store, f"{args.dataset} / {p}", current, note, chosen,
                                               args.include_stale)
        if board is None:
            older = f" ({stale} of an older config: --include-stale shows them)" if stale else ""
            err.print(f"note: {args.dataset} / {p}: no finished runs of the current config{older}; skipped")
            continue
        board.meta = {"bench_version": __version__, "command": " ".join(["bench", *args.argv])}
        board.mark_searched(searched_rows(store, args.dataset, p))
        if truth := true_mi_note_of(args.dataset, store, shown):
            board.notes.append(truth)
        if reported:
            board.add_reported(*reported)
        boards[p] = (board, shown, stale, store, current)
    if not boards:
        raise BenchError(f"no finished runs to show for dataset {quote(args.dataset)}: run `bench run` first")
    if args.publish:
        return publish_board(args, *next(iter(boards.items())))
    text = render_boards({p: b[0] for p, b in boards.items()}, args.format, args.dataset)
    text = text if text.endswith("\n") else text + "\n"
    if output:
        try:
            output.write_text(text)
        except OSError as exc:
            raise BenchError(f"cannot write --output {output}: {exc.strerror}") from None
        out.print(f"wrote {output}")
    else:
        sys.stdout.write(text)
    return 0


def true_mi_note_of(dataset: str, store, shown) -> str | None:
    """The generator's true I(x; z) as a board footnote, when the dataset is a generated corpus present
    here and every run shown was trained on exactly that corpus (the same data checksum)."""
    from vae_collapse_bench.bench.data.status import generator_mi
    from vae_collapse_bench.bench.report import true_mi_note

    mi = generator_mi(dataset)
    if not mi:
        return None
    trials = set(shown["trial"])
    checksums = {t.user_attrs.get("data_checksum") for t in store.trials() if t.number in trials}
    return true_mi_note(dataset, mi) if checksums == {data.corpus_checksum(dataset)} else None


def cmd_claims(args) -> int:
    """The paper's claims (bench/claims_dg_vae.toml) judged on the board of one dataset and profile:
    holds, fails or not enough runs, with the means and stds behind each verdict. Reading only."""
    from vae_collapse_bench.bench.claims_report import FORMATS, check_board
    from vae_collapse_bench.bench.report import board_from_store

    if args.format not in FORMATS:
        raise BenchError(f"unknown format {quote(args.format)}: use one of {', '.join(FORMATS)}")
    if not args.from_file:  # an unknown name is refused as such, with close matches
        data.get_manifest(args.dataset)
        get_profile(args.profile)
    ((profile, store, current, _),) = leaderboard_sources(args)
    board, _, stale = board_from_store(store, f"{args.dataset} / {profile}", current)
    if board is None:
        older = f" ({stale} of an older config)" if stale else ""
        raise BenchError(f"no finished runs of the current config for {args.dataset} / {profile}{older}: run "
                         f"`bench run --dataset {args.dataset} --profile {profile}` first")
    sys.stdout.write(check_board(board).render(args.format))
    return 0


def searched_rows(store, dataset: str, profile: str) -> dict:
    """(method, setting) -> the search study and trial `bench run --from-search` took it from
    (an export read with --from has no search studies)."""
    from vae_collapse_bench.bench.search_results import searched_marks

    storage = getattr(store, "storage", None)
    return searched_marks(storage, dataset, profile) if storage is not None else {}


def leaderboard_sources(args) -> list[tuple]:
    """(profile, store, current config key, note) per board: the storage's studies of the dataset
    (the profile asked for, or every profile), or the one study of a --from export."""
    import optuna
    from vae_collapse_bench.bench.store import RunStore, open_storage, study_name

    if args.from_file:
        from vae_collapse_bench.bench.export import read_export

        store = read_export(args.from_file)
        if store.dataset != args.dataset or (args.profile and store.profile != args.profile):
            raise BenchError(f"--from {plain(args.from_file)} holds {store.dataset} / {store.profile}, not "
                             f"{args.dataset}" + (f" / {args.profile}" if args.profile else ""))
        return [(store.profile, store, store.current_config, "")]
    storage = open_storage(args.storage, results_dir(args), read_only=True)
    stored = set(optuna.get_all_study_names(storage))
    profiles = [get_profile(args.profile).name] if args.profile else list(PROFILES)
    profiles = [p for p in profiles if study_name(args.dataset, p) in stored]
    if not profiles:
        raise BenchError(f"no runs stored for dataset {quote(args.dataset)}"
                         + (f" and profile {args.profile!r}" if args.profile else "")
                         + f": run `bench run --dataset {args.dataset}` first (or point --storage/--results "
                           "at the right place)")
    sources = []
    for p in profiles:
        store = RunStore(storage, args.dataset, p, create=False)
        sources.append((p, store, *current_config(args.dataset, get_profile(p), store)))
    return sources


def reported_rows_and_note() -> tuple[list[dict], str]:
    """The paper's Table 2 rows for --with-reported and the footnote that says what they are."""
    from vae_collapse_bench.bench.reported import paper_facts, reported_rows

    rows, facts = reported_rows(), paper_facts()
    return rows, (f"Rows marked reported are the {facts.table} of {facts.citation}, typed in from the paper "
                  f"(dataset {facts.dataset_family}, the paper's protocol): set beside ours, they are comparable "
                  "only on that dataset and profile; their bold is the paper's own.")


def publish_board(args, profile_name: str, entry: tuple) -> int:
    """--publish: the board's folder under --publish-dir and the index there (bench.publish)."""
    from vae_collapse_bench.bench.publish import Publication, publish

    board, shown, stale, store, current = entry
    load = None if args.from_file else (lambda: data.load_corpus(args.dataset))
    pub = Publication(args.dataset, get_profile(profile_name), board, shown, store, current, stale, __version__,
                      load, args.device)
    root = Path(args.publish_dir)
    written = publish(pub, root)
    out.print(f"published {args.dataset} / {profile_name} in {root / args.dataset / profile_name} "
              f"({len(written)} files, index {written[-1]})")
    for note in pub.notes:
        err.print(f"note: {note}")
    return 0


def cmd_show(args) -> int:
    """One training run in full: identity, config, history, evaluations, provenance (bench.show)."""
    import optuna
    from vae_collapse_bench.bench.show import find_run, render, run_document
    from vae_collapse_bench.bench.store import RunStore, open_storage

    if args.format not in ("text", "json"):
        raise BenchError(f"unknown format {quote(args.format)}: use text or json")
    if args.from_file:
        from vae_collapse_bench.bench.export import read_export

        stores = [read_export(args.from_file)]
    else:
        storage = open_storage(args.storage, results_dir(args), read_only=True)
        names = [n.split("/", 2) for n in optuna.get_all_study_names(storage) if n.count("/") == 2]
        stores = [RunStore(storage, d, p, create=False) for kind, d, p in names if kind == "runs"]
    key, records = find_run(stores, args.run_key)
    sys.stdout.write(render(run_document(key, records), args.format))
    return 0


def board_runs(args, profile):
    """The store of args.dataset / profile and the runs its board shows (current config, each
    training run once, --methods applied); a BenchError when there are none."""
    from vae_collapse_bench.bench.report import runs_frame, select_runs

    store = stored_study(args, profile.name)
    current, _ = current_config(args.dataset, profile, store)
    runs, _ = select_runs(runs_frame(store, current))
    if getattr(args, "only", None) and not runs.empty:
        runs = runs[runs["method"].isin({m.name for m in registry.select(args.only)})]
    if runs.empty:
        raise BenchError(f"no finished runs of the current config for {args.dataset} / {profile.name}: run "
                         f"`bench run --dataset {args.dataset} --profile {profile.name}` first")
    return store, runs


def cmd_plot_tradeoff(args) -> int:
    """priorLL against postLL per method across its grid, with the Pareto front (PNG and SVG)."""
    from vae_collapse_bench.bench.plots import save, tradeoff_figure
    from vae_collapse_bench.bench.tradeoff import pareto_front, tradeoff_points

    profile = get_profile(args.profile)
    out_dir = writable_folder(args.out)
    _, runs = board_runs(args, profile)
    points = tradeoff_points(runs)
    title = f"priorLL vs postLL: {args.dataset} / {profile.name}"
    for path in save(tradeoff_figure(points, title), out_dir / f"tradeoff-{args.dataset}-{profile.name}"):
        out.print(f"wrote {path}")
    front = pareto_front(points)
    out.print(f"Pareto front ({len(front)} of {len(points)} settings): "
              + ", ".join(f"{r.method}[{r.setting}]" for r in front.itertuples()))
    return 0


def cmd_plot_latent(args) -> int:
    """The paper's Figure 4 for chosen methods, from their stored checkpoints (PNG and SVG)."""
    from vae_collapse_bench.bench.latent import choose_runs, parse_choices, run_panels
    from vae_collapse_bench.bench.plots import latent_figure, save

    profile = get_profile(args.profile)
    check_device(args.device)
    choices = parse_choices(args.methods)
    if args.sentences is not None and args.sentences < 2:
        raise BenchError(f"--sentences must be at least 2, got {args.sentences}")
    out_dir = writable_folder(args.out)
    store, runs = board_runs(args, profile)
    chosen = choose_runs(runs, choices, args.seed)
    corpus = data.load_corpus(args.dataset)
    attrs = {t.number: t.user_attrs for t in store.trials()}
    panels = run_panels(chosen, attrs, corpus, profile, args.device, args.sentences)
    stem = out_dir / f"latent-{args.dataset}-{profile.name}"
    for path in save(latent_figure(panels, f"{args.dataset} / {profile.name}"), stem):
        out.print(f"wrote {path}")
    for p in panels:
        out.print(f"  {p.title}: dims {p.dims[0]} and {p.dims[1]}, N = {p.n:,}, peak density {p.density.max():.3g}")
    return 0


def checked_output(path: str | None) -> Path | None:
    """--output FILE: its folder must exist (checked before any work, so nothing is computed in vain)."""
    if not path:
        return None
    target = Path(path)
    if is_dir(target):
        raise BenchError(f"--output {plain(path)} is a folder: give a file name")
    if not is_dir(target.parent):
        raise BenchError(f"--output {plain(path)}: the folder {plain(str(target.parent))} does not exist; "
                         "create it first")
    return target


def cmd_store_list(args) -> int:
    """Every study in the storage with its counts of runs by state."""
    import optuna
    from vae_collapse_bench.bench.store import open_storage

    storage = open_storage(args.storage, results_dir(args), read_only=True)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if not summaries:
        out.print("no studies stored")
        return 0
    table = Table(title="studies")
    for col in ("study", "finished", "failed", "running", "all trials"):
        table.add_column(col)
    for summary in sorted(summaries, key=lambda s: s.study_name):
        trials = storage.get_all_trials(storage.get_study_id_from_name(summary.study_name), deepcopy=False)
        lost = sum(bool(t.user_attrs.get("claim_lost")) for t in trials)
        counts = {state: sum(t.state.name == state for t in trials) for state in ("COMPLETE", "FAIL", "RUNNING")}
        table.add_row(summary.study_name, str(counts["COMPLETE"]), str(counts["FAIL"] - lost),
                      str(counts["RUNNING"]), str(len(trials)))
    out.print(table)
    return 0


def cmd_store_drop(args) -> int:
    import optuna
    from vae_collapse_bench.bench.store import open_storage

    storage = open_storage(args.storage, results_dir(args))
    names = optuna.get_all_study_names(storage)
    if args.study not in names:
        raise unknown("study", args.study, names)
    if not args.yes:
        if not sys.stdin.isatty():
            raise BenchError(f"dropping {args.study!r} deletes its records: confirm with --yes")
        answer = input(f"drop study {args.study!r} and all its records? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.print("nothing dropped")
            return 0
    optuna.delete_study(study_name=args.study, storage=storage)
    out.print(f"dropped {args.study} (its checkpoints stay under the results directory)")
    return 0


def cmd_store_import(args) -> int:
    """Add the runs of exports (a published board's runs.jsonl) to the storage (bench.import_runs)."""
    from vae_collapse_bench.bench.export import read_export
    from vae_collapse_bench.bench.import_runs import import_runs
    from vae_collapse_bench.bench.store import RunStore, open_storage

    exports = [read_export(path) for path in args.files]  # every file checked before any is imported
    for export in exports:
        if not export.dataset or not export.profile:
            raise BenchError(f"{plain(export.path)}: its header names no dataset or profile")
    storage = open_storage(args.storage, results_dir(args))
    for export in exports:
        report = import_runs(export, RunStore(storage, export.dataset, export.profile))
        out.print(f"{plain(export.path)}:")
        for line in report.lines():
            out.print(f"  {plain(line, 10_000)}")
    return 0


def cmd_store_repair(args) -> int:
    from vae_collapse_bench.bench.journal import repair

    target = args.storage or os.environ.get("BENCH_STORAGE") or str(results_dir(args) / "optuna.journal")
    if "://" in target:
        raise BenchError(f"bench store repair mends journal files; {target.split('://')[0]} storages are "
                         "repaired with the database's own tools")
    out.print(repair(Path(target.removeprefix("journal:"))))
    return 0


def cmd_worker(args) -> int:
    """Take queued runs from the storage (bench.worker) until none is left (--until-empty), --max-runs
    are taken, or forever."""
    import signal
    import socket

    import optuna
    from vae_collapse_bench.bench.queue import queue_of
    from vae_collapse_bench.bench.store import open_storage
    from vae_collapse_bench.bench.worker import Worker, WorkerOptions, die_with_parent, set_threads

    check_device(args.device)
    check_worker_counts(args)
    parent = os.environ.get("BENCH_WORKER_PARENT", "")
    if parent.isdigit():  # started by `bench run --workers K`: it dies with that process
        die_with_parent(int(parent))
    root = writable_results(results_dir(args))
    storage = open_storage(args.storage, root)
    queues = None
    if args.study is not None:
        names = optuna.get_all_study_names(storage)
        if args.study not in names and queue_of(args.study) not in names:
            raise unknown("study", args.study, [n for n in names if n.startswith(("runs/", "queue/"))])
        queues = (queue_of(args.study),)
    set_threads(args.threads)
    console = err if args.quiet else out
    options = WorkerOptions(root, args.device, args.max_runs, args.until_empty, args.poll, queues)
    previous = signal.signal(signal.SIGTERM, _interrupted)  # a batch system's stop: the run goes back
    try:
        outcomes = Worker(storage, options, WorkerReporter(console)).serve()
    finally:
        signal.signal(signal.SIGTERM, previous)
    failed = sum(o.status == "failed" for o in outcomes)
    trained = sum(o.status in ("done", "evaluated") for o in outcomes)
    out.print(f"worker {socket.gethostname()} pid {os.getpid()}: took {len(outcomes)} runs: {trained} trained, "
              f"{len(outcomes) - trained - failed} cached, {failed} failed")
    return 1 if failed else 0


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def cmd_status(args) -> int:
    """Queued, running, finished, failed and pruned runs per study; reads only."""
    import json

    from vae_collapse_bench.bench.status import storage_status
    from vae_collapse_bench.bench.store import open_storage

    if args.format not in ("table", "json"):
        raise BenchError(f"unknown format {quote(args.format)}: use table or json")
    rows = storage_status(open_storage(args.storage, results_dir(args), read_only=True), args.study)
    if args.format == "json":
        sys.stdout.write(json.dumps({"studies": [r.as_dict() for r in rows]}, indent=2) + "\n")
        return 0
    if not rows:
        out.print("no studies stored")
        return 0
    table = Table(title="studies", box=box.SIMPLE_HEAD)
    table.add_column("study", overflow="fold")
    for col in ("queued", "running", "finished", "failed", "pruned"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r.study, *(str(v) for v in (r.queued, r.running, r.finished, r.failed, r.pruned)))
    out.print(table)
    running = [(r.study, x) for r in rows for x in r.running_runs]
    if running:
        table = Table(title="running", box=box.SIMPLE_HEAD)
        for col in ("study", "run", "host", "pid", "epoch", "last heartbeat"):
            table.add_column(col, overflow="fold")
        for study, x in running:
            beat = "-" if x.heartbeat_age_s is None else f"{x.heartbeat_age_s:.0f} s ago"
            table.add_row(study, x.run, str(x.host or "-"), str(x.pid or "-"),
                          "-" if x.epoch is None else str(x.epoch), beat)
        out.print(table)
    for r in rows:
        for f in r.failures[:20]:
            out.print(f"failed: {r.study}: {f['run']}: {f['reason']}")
        if len(r.failures) > 20:
            out.print(f"failed: {r.study}: ... and {len(r.failures) - 20} more (--format json lists all)")
    return 0


def current_config(dataset: str, profile, store) -> tuple[str, str]:
    """The config key a board of this dataset and profile shows, and a note when it is not the data
    present here (the dataset's files are gone: the runs of the newest stored data checksum)."""
    from vae_collapse_bench.bench.identity import config_key

    family = data.get_manifest(dataset).family
    if not data.dataset_status(dataset).missing:  # present (a board never generates or fetches data)
        return config_key(data.corpus_checksum(dataset), profile, family), ""
    stored = [t.user_attrs["data_checksum"] for t in store.trials() if t.user_attrs.get("data_checksum")]
    if not stored:
        return "", ""
    return (config_key(stored[-1], profile, family),
            f"The data of {dataset} is not present here: runs on its newest stored version "
            f"(checksum {stored[-1][:12]}) are shown.")


def cmd_evaluate(args) -> int:
    """Evaluate every stored checkpoint of the current training config under the current evaluator."""
    from vae_collapse_bench.bench.runner import RunSpec
    from vae_collapse_bench.bench.store import RunStore, open_storage

    profile = get_profile(args.profile)
    check_device(args.device)
    corpus = data.load_corpus(args.dataset)
    root = results_dir(args)
    store = RunStore(open_storage(args.storage, root), args.dataset, profile.name)
    chosen = {m.name for m in registry.select(args.methods)}
    runner = Runner(store, corpus, profile, root, args.device, LogReporter(err), args.retry_failed)
    specs, seen, elsewhere = [], set(), set()
    for t in store.trials():
        a = t.user_attrs
        if t.state.name != "COMPLETE" or a.get("method") not in chosen or "training_key" not in a:
            continue
        spec = RunSpec(args.dataset, profile.name, a["method"], tuple(sorted(a["params"].items())), a["seed"])
        if runner.identity(spec).training_key != a["training_key"] or spec in seen:
            continue
        if store.trained(a["training_key"]) is None:  # imported, or its folder deleted: never retrained here
            elsewhere.add(spec)
            continue
        seen.add(spec)
        specs.append(spec)
    if elsewhere - seen:
        err.print(f"note: {len(elsewhere - seen)} stored run(s) have no checkpoint that can be reached from here "
                  "(imported from an export, or deleted) and are not evaluated; `bench run` trains them again")
    if not specs:
        out.print(f"no stored checkpoints of the current {profile.name} training config on {args.dataset}")
        return 0
    return summarise(runner.run_all(specs))


# --- search ---------------------------------------------------------------------------------------
class SearchLog:
    """One line per trial of `bench search` (a bench.search.SearchReporter), prefixed by the worker."""

    def __init__(self, console: Console, prefix: str = ""):
        self.console, self.prefix = console, prefix

    def trial_started(self, number, setting, resumed_epoch):
        resumed = f" (resuming after epoch {resumed_epoch})" if resumed_epoch else ""
        self.console.print(f"{self.prefix}trial {number}: {setting}: training{resumed}")

    def epoch_done(self, number, record): ...

    def trial_finished(self, number, setting, outcome, detail):
        self.console.print(f"{self.prefix}trial {number}: {setting}: {outcome}: {detail}")

    def note(self, text):
        err.print(f"{self.prefix}note: {text}")


def cmd_search(args) -> int:
    """Search a method's registered space on the validation split (bench.search); --show prints a
    stored search. With --workers K, K local processes work on the one study."""
    from vae_collapse_bench.bench import sampling, search, search_workers
    from vae_collapse_bench.bench.objectives import get_objective
    from vae_collapse_bench.bench.store import open_storage
    from vae_collapse_bench.bench.worker import wait_workers

    profile = get_profile(args.profile)
    objective = get_objective(args.objective)
    method = registry.get(args.method)
    if args.show:
        return show_search(args, profile.name, objective.name)
    search.searchable(method)
    if args.trials is None:
        raise BenchError("give --trials N, the number of finished trials the study should reach (e.g. --trials 20); "
                         "--show prints a stored search")
    for flag, value in (("--trials", args.trials), ("--workers", args.workers), ("--threads", args.threads)):
        if not 1 <= value <= 100_000:
            raise BenchError(f"{flag} {value}: give a whole number from 1 to 100000")
    if not 0 <= args.seed < 2**32:
        raise BenchError(f"--seed {args.seed}: give an integer from 0 to {2**32 - 1}")
    pruner = sampling.resolve_pruner(args.pruner, objective)
    check_device(args.device)
    corpus = data.load_corpus(args.dataset)
    root = writable_results(results_dir(args))
    storage = open_storage(args.storage, root)
    settings = search.SearchSettings(method.name, args.dataset, profile.name, args.trials, objective.name,
                                     args.seed, pruner)
    prefix = f"[worker {args.worker_index}] " if args.worker_index is not None else ""
    study = search.Search(settings, storage, corpus, profile, root, args.device, SearchLog(out, prefix))
    if args.workers > 1:
        out.print(f"{settings.study_name}: {args.workers} workers, {args.threads} torch thread(s) each")
        codes = wait_workers(search_workers.start_workers(
            args.workers, settings, root, args.storage, args.device, args.threads))
        if crashed := [c for c in codes if c not in (0, 1)]:
            err.print(f"error: {len(crashed)} of {len(codes)} search workers exited with code "
                      f"{', '.join(map(str, crashed))} (see their output above); the same command continues")
    else:
        with search_workers.torch_threads(args.threads):
            tally = study.run(search_workers.orphan_check() if args.worker_index is not None else lambda: False)
        if args.worker_index is not None:
            done = ", ".join(f"{n} {k}" for k, n in sorted(tally.items())) or "nothing left to do"
            out.print(f"{prefix}done: {done}")
            return 1 if tally.get("gave_up") else 0
    return print_search(search_summary(study.study, args.top), settings.trials)


def search_summary(study, top: int):
    from vae_collapse_bench.bench.search_results import summarise

    if top < 0:
        raise BenchError(f"--top {top}: give 0 or more")
    return summarise(study, top)


def show_search(args, profile: str, objective: str) -> int:
    """`bench search --show`: a stored search study, read-only."""
    import json

    from vae_collapse_bench.bench.search_results import check_show_format, load
    from vae_collapse_bench.bench.store import open_storage

    fmt = check_show_format(args.format)
    storage = open_storage(args.storage, results_dir(args), read_only=True)
    study = load(storage, args.method, args.dataset, profile, objective,
                 f": run `bench search --method {args.method} --dataset {args.dataset} --profile {profile} "
                 f"--objective {objective} --trials N` first")
    summary = search_summary(study, args.top)
    if fmt == "json":
        sys.stdout.write(json.dumps(summary.as_dict(), indent=2) + "\n")
        return 0
    print_search(summary)
    return 0


def print_search(summary, target: int | None = None) -> int:
    """The headline, the constraints and the table of chosen and best trials; exit code 1 while the
    study has fewer finished trials than `target`."""
    out.print(summary.headline(target))
    n_valid = summary.attrs.get("valid_sentences")
    out.print(f"scored on the validation split ({n_valid:,} sentences); constraints: {summary.constraints}"
              if n_valid else f"constraints: {summary.constraints}")
    if summary.chosen:
        what = ("the best feasible trial" if summary.objective == "priorLL"
                else f"the feasible Pareto front of priorLL and postLL ({len(summary.chosen)} "
                     f"trial{'s' if len(summary.chosen) != 1 else ''})")
        out.print(f"chosen: {what}; `bench run --from-search` trains it with fixed seeds on test")
    else:
        out.print("no complete trial meets the constraints yet")
    if summary.rows:
        mark = "best" if summary.objective == "priorLL" else "front"
        rows = [[str(r.number), r.setting,
                 *(fixed(r.metrics.get(k, float("nan")), 0 if k in ("AU", "CU") else 2)
                   for k in ("priorLL", "postLL", "AU", "CU")),
                 {True: "yes", False: "no", None: "-"}[r.feasible],
                 ", ".join(filter(None, [mark if r.chosen else "", r.note]))] for r in summary.rows]
        table = Table(box=box.SIMPLE_HEAD)
        for i, col in enumerate(("trial", "setting", "priorLL", "postLL", "AU", "CU", "feasible", "note")):
            widest = max(len(col), *(len(row[i]) for row in rows))
            # numbers are never cut; a long setting or note folds onto the next line
            table.add_column(col, justify="right" if col in ("trial", "priorLL", "postLL", "AU", "CU") else "left",
                             no_wrap=col not in ("setting", "note"), overflow="fold",
                             min_width=widest if col not in ("setting", "note") else min(widest, 12))
        for row in rows:
            table.add_row(*row)
        out.print(table)
    c = summary.counts
    return 1 if target is not None and c["complete"] + c["pruned"] < target else 0


def cmd_perf(args) -> int:
    import torch
    from vae_collapse_bench.bench import perf

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    profile = "quick" if args.quick else args.profile
    out.print(perf.benchmark(args.methods, args.baseline, args.repeats, args.warmup, profile, device, args.json,
                             command=" ".join(["bench", *sys.argv[1:]]), log=lambda text: err.print(f"perf: {text}"),
                             interpolation_pairs=args.interpolation_pairs))
    return 0


def cmd_interpolate(args) -> int:
    """Decode stored checkpoints along DG-VAE Eq. 14 and print each run's Rouge-L curve (and examples)."""
    from vae_collapse_bench.bench.interpolation_report import interpolate_stored, report

    profile = get_profile(args.profile)
    check_device(args.device)
    if args.pairs is not None and args.pairs < 1:
        raise BenchError(f"--pairs must be at least 1, got {args.pairs}")
    if args.show < 0:
        raise BenchError(f"--show must be 0 or more, got {args.show}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise BenchError(f"--seed must be an integer from 0 to 2**63 - 1, got {plain(str(args.seed))}")
    methods = [m.name for m in registry.select(args.methods)]
    corpus = data.load_corpus(args.dataset)
    store = stored_study(args, profile.name)
    results, note = interpolate_stored(store, corpus, profile, methods, args.methods.strip() != "all",
                                       results_dir(args), args.pairs, args.seed, args.device)
    if note:
        err.print(note)
    out.print(report(results, corpus, args.show))
    return 0


def stored_study(args, profile: str):
    """The RunStore of args.dataset / profile, opened read-only; a BenchError when nothing is stored."""
    import optuna
    from vae_collapse_bench.bench.store import RunStore, open_storage, study_name

    storage = open_storage(args.storage, results_dir(args), read_only=True)
    if study_name(args.dataset, profile) not in optuna.get_all_study_names(storage):
        raise BenchError(f"no runs stored for dataset {quote(args.dataset)} and profile {profile!r}: run "
                         f"`bench run --dataset {args.dataset} --profile {profile}` first (or point "
                         "--storage/--results at the right place)")
    return RunStore(storage, args.dataset, profile, create=False)


def cmd_plot_interpolation(args) -> int:
    """The stored interpolation curves as the paper's Figure 5 (PNG and SVG); decodes nothing."""
    from vae_collapse_bench.bench.interpolation_report import plot_curves, stored_curves

    profile = get_profile(args.profile)
    chosen = {m.name for m in registry.select(args.methods)} if args.methods else None
    out_dir = writable_folder(args.out)
    store = stored_study(args, profile.name)
    current, _ = current_config(args.dataset, profile, store)
    curves = stored_curves(store, current, chosen)
    if not curves:
        raise BenchError(f"no interpolation curves stored for {args.dataset} / {profile.name} (current config): "
                         f"run `bench evaluate --dataset {args.dataset} --profile {profile.name}` (stored "
                         "checkpoints are evaluated again, nothing is retrained)")
    title = f"Interpolation (Eq. 14): {args.dataset} / {profile.name}"
    for path in plot_curves(curves, title, out_dir / f"interpolation-{args.dataset}-{profile.name}"):
        out.print(f"wrote {path}")
    return 0


def writable_folder(path: str) -> Path:
    """--out DIR: created if missing; refused up front (before any work) when it cannot be."""
    target = Path(path)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create --out {plain(path)}: {exc.strerror or exc}") from None
    return target


def cmd_data_list(args) -> int:
    table = Table(title=f"datasets (data directory: {data.data_dir()})", box=box.SIMPLE_HEAD,
                  caption="vocab, avg len: the papers' Table 1")
    # names and numbers are never cut or wrapped; only the words of the status may wrap
    table.add_column("name", no_wrap=True)
    table.add_column("status", overflow="fold", min_width=9)
    table.add_column("lines train/valid/test", no_wrap=True)
    table.add_column("vocab", no_wrap=True, justify="right")
    table.add_column("avg len", no_wrap=True, justify="right")
    added = False
    for name in data.manifests():
        st = data.dataset_status(name)
        status = st.summary
        added |= st.added
        paper = data.get_manifest(name).paper_stats
        # expected lines: the manifest's own counts (derived datasets), else the paper's Table 1
        sizes = "/".join(_fmt(st.expected_lines.get(k, paper.get(k))) for k in ("train", "valid", "test"))
        table.add_row(name + (" *" if st.added else ""), status, sizes, _fmt(paper.get("vocab")),
                      _fmt(paper.get("avg_len")))
    if added:
        table.caption += f"; *: your own corpus (bench data add; manifests in {data.user_manifest_dir()})"
    out.print(table)
    return 0


def _fmt(value) -> str:
    if value is None:
        return "?"
    return f"{value:,}" if isinstance(value, int) else str(value)


def cmd_data_fetch(args) -> int:
    from rich.progress import DownloadColumn, TransferSpeedColumn

    # What it downloads, from where to where, the size, the sha256 and the line counts: on stderr
    # (the console of the bar, so the two do not garble), the status table on stdout. The bar starts
    # with the first bytes: nothing of it when nothing is downloaded.
    bar = Progress(TextColumn(f"fetching {args.name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                   console=err, disable=args.quiet)
    tasks = []

    def advance(done: int, total: int | None) -> None:
        if not tasks:
            bar.start()
            tasks.append(bar.add_task("download", total=total))
        bar.update(tasks[0], completed=done, total=total)

    try:
        st = data.fetch(args.name, archive=args.archive, progress=advance,
                        log=lambda line: err.print(line, markup=False, highlight=False))
    finally:
        if tasks:
            bar.stop()
    return _print_status(st)


def cmd_data_import(args) -> int:
    return _print_status(data.import_folder(args.name, Path(args.folder)))


def cmd_data_add(args) -> int:
    st = data.add_corpus(args.name, train=args.train, valid=args.valid, test=args.test, folder=args.folder,
                         labelled=args.labelled, backbone=args.backbone, derive_train_from=args.derive_train_from,
                         description=args.description, replace=args.replace)
    b = data.paper_backbone(st.name)
    sizes = "/".join(f"{st.lines[s]:,}" for s in ("train", "valid", "test") if s in st.lines)
    out.print(f"added {st.name}: {sizes} sentences (train/valid/test); manifest {st.manifest}")
    out.print(f"{st.name}: paper backbone {b.emb_dim}/{b.enc_hidden}/{b.dec_hidden}, D = {b.latent_dim} "
              f"({'that of ' + st.family if st.family != st.name else 'the default'}); "
              f"next: `bench run --dataset {st.name}`")
    return _print_status(st)


def _print_status(st) -> int:
    out.print(f"{st.name}: present: {', '.join(st.present) or 'none'}")
    if st.missing:
        out.print(f"{st.name}: missing: {', '.join(st.missing)} (runs on {st.name} need all three splits)")
    for note in st.notes:
        err.print(f"{st.name}: warning: {note}")
    return 0


def cmd_data_stats(args) -> int:
    stats = data.corpus_stats(args.name)
    table = Table(title=f"{args.name}: vocabulary {stats['vocab_size']:,} (train, with specials)")
    for col in ("split", "sentences", "tokens", "length (with <s> </s>)"):
        table.add_column(col)
    for split in ("train", "valid", "test"):
        s = stats["splits"][split]
        table.add_row(split, f"{s['sentences']:,}", f"{s['tokens']:,}",
                      f"{s['mean_length']:.2f} ± {s['std_length']:.2f}")
    out.print(table)
    out.print(f"checksum: {stats['checksum']}")
    for note in stats.get("notes") or []:
        err.print(f"warning: {note}")
    if stats.get("paper"):
        p = stats["paper"]
        out.print(f"paper (Table 1): {p['train']:,}/{p['valid']:,}/{p['test']:,} sentences, vocabulary "
                  f"{p['vocab']:,}, mean length {p['avg_len']}")
    mi = (stats.get("generator") or {}).get("mutual_information_nats")
    if mi:
        out.print(f"generator's true I(x; z) in nats: {mi['infonce_lower']:.2f} ± {mi['infonce_lower_stderr']:.2f} "
                  f"(InfoNCE lower bound, K = {mi['K']}, log K = {mi['log_K']:.2f}) to {mi['prior_is_upper']:.2f} "
                  f"± {mi['prior_is_upper_stderr']:.2f} (prior importance-sampling estimate, an upper bound "
                  f"in expectation), over {mi['N']} sentences")
    return 0


# --- parser ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def storage_options(p):
        p.add_argument("--results", help="results directory (default: $BENCH_HOME or ./results)")
        p.add_argument("--storage", help="journal file or RDB URL (default: $BENCH_STORAGE or "
                                         "<results>/optuna.journal)")

    p = sub.add_parser("methods", help="list registered methods, grids and defaults")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("run", help="train and evaluate methods x settings x seeds")
    p.add_argument("--methods", default="all", help="`all` or comma-separated names")
    p.add_argument("--dataset", required=True)
    p.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--seeds", default="0", help="e.g. 0,1,2 or 0-4")
    p.add_argument("--grid", default="paper", help="paper (each method's grid) or default")
    p.add_argument("--set", action="append", metavar="METHOD.PARAM=VALUE", help="override a hyperparameter")
    p.add_argument("--device", default="cpu")
    p.add_argument("--retry-failed", action="store_true", help="run again runs that diverged before")
    p.add_argument("--quiet", action="store_true", help="plain log lines instead of progress bars")
    p.add_argument("--enqueue-only", action="store_true",
                   help="queue the runs in the storage and return; `bench worker` takes them on any machine")
    p.add_argument("--workers", type=int, metavar="K", help="queue the runs and start K local workers on them")
    p.add_argument("--threads", type=int, default=1, metavar="T",
                   help="torch threads per worker with --workers (default 1)")
    p.add_argument("--from-search", metavar="METHOD", help="train the best feasible setting of METHOD's "
                   "`bench search` (validation split) with --seeds, evaluated on test")
    p.add_argument("--pareto", action="store_true", help="with --from-search: every setting on the feasible "
                   "Pareto front of the method's `bench search --objective pareto`")
    storage_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("search", help="Optuna search of a method's space on the validation split (never test)")
    p.add_argument("--method", required=True, help="a method that registers a search space (see `bench methods`)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--trials", type=int, metavar="N", help="finished trials the study should reach in total; "
                   "running the command again continues the same study")
    p.add_argument("--objective", default="priorLL", help="priorLL (maximised subject to AU, CU >= 0.9 D) or "
                   "pareto (priorLL and postLL, same constraints)")
    p.add_argument("--pruner", help="median, halving (successive halving) or none (default: median; none for pareto)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial's training (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="K local processes on the same study")
    p.add_argument("--threads", type=int, default=1, metavar="T", help="torch threads per process (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--show", action="store_true", help="print the stored study: the best feasible trial or the "
                   "Pareto front, and the best trials; trains nothing")
    p.add_argument("--format", default="table", help="--show as a table or json")
    p.add_argument("--top", type=int, default=10, help="--show: rows besides the chosen trials (default 10)")
    p.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its processes
    storage_options(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("worker", help="take queued runs from the storage (bench run --enqueue-only) and run them")
    p.add_argument("--until-empty", action="store_true", help="stop once no run is queued or in flight "
                                                              "(default: wait for more)")
    p.add_argument("--max-runs", type=int, metavar="N", help="stop after taking N runs")
    p.add_argument("--threads", type=int, default=1, metavar="T", help="torch threads of this process (default 1: "
                                                                       "workers sharing cores slow each other)")
    p.add_argument("--study", help="serve only this study's queue, e.g. runs/synthetic/quick (default: every queue)")
    p.add_argument("--poll", type=float, default=5.0, metavar="S", help="seconds between looks at an empty queue")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true", help="log lines on stderr")
    storage_options(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="queued, running, finished, failed and pruned runs per study")
    p.add_argument("--study", help="one study (see `bench store list`)")
    p.add_argument("--format", default="table", help="table or json")
    storage_options(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("leaderboard", help="mean ± std over seeds per (method, setting)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--profile")
    p.add_argument("--format", default="md", help="md, csv, json, latex or html")
    p.add_argument("--output", help="write to this file instead of stdout")
    p.add_argument("--methods", help="only these methods (comma-separated names or `all`)")
    p.add_argument("--include-stale", action="store_true",
                   help="also show runs of older configs, each config in rows of its own")
    p.add_argument("--with-reported", action="store_true",
                   help="show the DG-VAE paper's Table 2 Yahoo rows beside ours, marked reported")
    p.add_argument("--publish", action="store_true",
                   help="write the board's folder <publish-dir>/<dataset>/<profile>/ (README, csv, json, tex, "
                        "html, figures, runs export) and update the index")
    p.add_argument("--publish-dir", default="leaderboards", help="root of published boards (default: ./leaderboards)")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="aggregate a runs export (runs.jsonl of a published board) instead of the storage")
    p.add_argument("--device", default="cpu", help="for the latent pictures of --publish")
    storage_options(p)
    p.set_defaults(func=cmd_leaderboard)

    p = sub.add_parser("claims", help="the DG-VAE paper's claims on one board: holds, fails or not enough runs, "
                                      "with the means and stds over seeds behind each verdict")
    p.add_argument("--dataset", required=True)
    p.add_argument("--profile", required=True, help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--format", default="table", help="table, markdown or json")
    p.add_argument("--from", dest="from_file", metavar="FILE",
                   help="judge a runs export (runs.jsonl of a published board) instead of the storage")
    storage_options(p)
    p.set_defaults(func=cmd_claims)

    p = sub.add_parser("evaluate", help="evaluate stored checkpoints again under the current evaluator "
                                        "(after a change of K or of a metric; never retrains)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--methods", default="all", help="`all` or comma-separated names")
    p.add_argument("--device", default="cpu")
    p.add_argument("--retry-failed", action="store_true", help="evaluate again runs whose metrics failed")
    storage_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("store", help="the results storage: list, drop, import and repair studies")
    ssub = p.add_subparsers(dest="store_command", required=True)
    q = ssub.add_parser("list", help="every study with its counts of runs")
    storage_options(q)
    q.set_defaults(func=cmd_store_list)
    q = ssub.add_parser("drop", help="delete one study's records (asks first; --yes to skip)")
    q.add_argument("study", help="e.g. runs/synthetic/smoke (see `bench store list`)")
    q.add_argument("--yes", action="store_true", help="do not ask")
    storage_options(q)
    q.set_defaults(func=cmd_store_drop)
    q = ssub.add_parser("import", help="add the runs of published boards' runs.jsonl exports, so a sweep goes on "
                                       "from them and a board is republished with them")
    q.add_argument("files", nargs="+", metavar="FILE",
                   help="a runs export (leaderboards/<dataset>/<profile>/runs.jsonl)")
    storage_options(q)
    q.set_defaults(func=cmd_store_import)
    q = ssub.add_parser("repair", help="keep every complete record of a damaged journal, set the rest aside")
    storage_options(q)
    q.set_defaults(func=cmd_store_repair)

    p = sub.add_parser("perf", help="matmul peak, training and evaluation throughput, against the peak")
    p.add_argument("--methods", default="all", help="`all` or comma-separated names (default setting each)")
    p.add_argument("--baseline", help="ratios are to this method's step, and evaluation is timed on it (default: "
                   "the paper's first family, vae, when among --methods, else the first of them)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per method and shape (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method and shape")
    p.add_argument("--profile", choices=["quick", "paper"], default="quick",
                   help="quick: the quick and snli backbones (minutes on a CPU); paper: the Yahoo backbone too")
    p.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # older spelling of --profile quick
    p.add_argument("--json", metavar="FILE", help="also write every record to FILE (a JSON list)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda when visible, else cpu)")
    p.add_argument("--interpolation-pairs", type=int, default=None, metavar="N",
                   help="time greedy decoding and Rouge-L for N interpolation pairs (default: 100, "
                        "1,000 with --profile paper; 0: none)")
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser("interpolate", help="decode stored checkpoints along z = (1-lambda) mu_a + lambda mu_b "
                                           "(DG-VAE Eq. 14): Rouge-L curves and example sentences")
    p.add_argument("--dataset", required=True)
    p.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    p.add_argument("--methods", default="all", help="`all` or comma-separated names (each must have a stored run)")
    p.add_argument("--pairs", type=int, help="pairs of equal-length test sentences (default: the profile's)")
    p.add_argument("--seed", type=int, help="seed of the pair selection (default: the profile's)")
    p.add_argument("--show", type=int, default=0, metavar="K", help="print K example interpolations per run")
    p.add_argument("--device", default="cpu")
    storage_options(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("plot", help="figures from stored results (PNG and SVG)")
    psub = p.add_subparsers(dest="plot_command", required=True)
    q = psub.add_parser("interpolation", help="Rouge-L along the interpolation path (the paper's Figure 5)")
    q.add_argument("--dataset", required=True)
    q.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    q.add_argument("--methods", help="only these methods (comma-separated names or `all`)")
    q.add_argument("--out", default="plots", help="folder for the figure files (default: ./plots)")
    storage_options(q)
    q.set_defaults(func=cmd_plot_interpolation)
    q = psub.add_parser("tradeoff", help="priorLL against postLL, a curve per method across its grid, with "
                                         "the Pareto front (the paper's Figures 2 and 3)")
    q.add_argument("--dataset", required=True)
    q.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    q.add_argument("--methods", dest="only", help="only these methods (comma-separated names or `all`)")
    q.add_argument("--out", default="plots", help="folder for the figure files (default: ./plots)")
    storage_options(q)
    q.set_defaults(func=cmd_plot_tradeoff)
    q = psub.add_parser("latent", help="aggregated posterior density and posterior centres on the two dims of "
                                       "largest variance (the paper's Figure 4), from stored checkpoints")
    q.add_argument("--dataset", required=True)
    q.add_argument("--profile", default="paper", help=f"one of {', '.join(PROFILES)}")
    q.add_argument("--methods", required=True, help="comma-separated names, each optionally with a setting: "
                                                    "vae,bn-vae[gamma=0.6],dg-vae (default setting, lowest seed)")
    q.add_argument("--seed", type=int, help="the seed of each run (default: the lowest stored)")
    q.add_argument("--sentences", type=int, help="encode at most this many test sentences (default: the "
                                                 "profile's evaluated test split)")
    q.add_argument("--out", default="plots", help="folder for the figure files (default: ./plots)")
    q.add_argument("--device", default="cpu")
    storage_options(q)
    q.set_defaults(func=cmd_plot_latent)

    p = sub.add_parser("show", help="one run in full: identity, config, per-epoch history, evaluations, "
                                    "provenance")
    p.add_argument("run_key", help="a training key (or 6+ leading characters) from a board's run_keys")
    p.add_argument("--format", default="text", help="text or json")
    p.add_argument("--from", dest="from_file", metavar="FILE", help="read a runs export instead of the storage")
    storage_options(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("data", help="dataset manifests: list, fetch, import, add, stats")
    dsub = p.add_subparsers(dest="data_command", required=True)
    dsub.add_parser("list", help="every manifest with its status").set_defaults(func=cmd_data_list)
    q = dsub.add_parser("fetch", help="download, verify and unpack a dataset (Google Drive sources need "
                                      "the drive extra: pip install 'vae-collapse-bench[drive]')")
    q.add_argument("name")
    q.add_argument("--archive", metavar="FILE", help="an archive you downloaded yourself (e.g. in a browser "
                                                     "when Google Drive refuses): verified and unpacked")
    q.add_argument("--quiet", action="store_true", help="log lines without the progress bar")
    q.set_defaults(func=cmd_data_fetch)
    q = dsub.add_parser("import", help="take split files you already have")
    q.add_argument("name")
    q.add_argument("folder")
    q.set_defaults(func=cmd_data_import)
    q = dsub.add_parser("add", help="add your own corpus: its files installed, a manifest written to "
                                    "<data dir>/manifests/NAME.toml")
    q.add_argument("name", help="a new dataset name (letters, digits, . _ -), not a built-in one")
    for split in ("train", "valid", "test"):
        q.add_argument(f"--{split}", metavar="FILE", help=f"the {split} split: one sentence per line")
    q.add_argument("--folder", metavar="DIR", help="a folder holding train.txt, valid.txt (or val.txt, dev.txt) "
                                                   "and test.txt; --train/--valid/--test take precedence")
    q.add_argument("--labelled", action="store_true", help="lines are `label<TAB>text`")
    q.add_argument("--backbone", metavar="DATASET", help="use this dataset's paper backbone under --profile paper "
                                                         "(e.g. yahoo, snli, ptb; default: the default one)")
    q.add_argument("--derive-train-from", metavar="SPLIT:N", help="without a train file: train = the first N "
                                                                  "lines of SPLIT (valid or test), SPLIT = the rest")
    q.add_argument("--description", help="one line for `bench data list`")
    q.add_argument("--replace", action="store_true", help="add again a corpus added before, with these files")
    q.set_defaults(func=cmd_data_add)
    q = dsub.add_parser("stats", help="split sizes, vocabulary, lengths")
    q.add_argument("name")
    q.set_defaults(func=cmd_data_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(argv)
        return args.func(args)
    except BenchError as exc:
        err.print(f"error: {exc}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted: finished runs are stored; run the same command again to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
