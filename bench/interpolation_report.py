"""Interpolation from the store: `bench interpolate` (decode stored checkpoints again, any number of
pairs, example sentences) and `bench plot interpolation` (the stored curves as the paper's Figure 5).

Both read the runs of the current config only. The evaluation record of every run already holds its
curve (bench.evaluate, Evaluation.interpolation_pairs pairs): the figure is drawn from those records
and trains or decodes nothing. `bench interpolate` loads each run's best.pt and decodes again, with
the profile's pairs and seed unless --pairs/--seed say otherwise (with the same pairs and seed it
gives the stored record's numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from vae_collapse_bench.bench.config import Profile
from vae_collapse_bench.bench.data import Corpus
from vae_collapse_bench.bench.errors import BenchError, quote
from vae_collapse_bench.bench.interpolate import (
    Interpolation,
    curves_table,
    format_curve,
    format_examples,
    interpolate,
    pairs_or_error,
)
from vae_collapse_bench.bench.runner import Runner, RunSpec, load_model
from vae_collapse_bench.bench.store import RunStore


@dataclass
class StoredRun:
    spec: RunSpec
    checkpoint: Path


def stored_runs(store: RunStore, corpus: Corpus, profile: Profile, methods: list[str], explicit: bool,
                results: Path) -> list[StoredRun]:
    """The finished training runs of the current training config of `methods`, each once, in the
    order of `methods`, then setting and seed. `explicit` (the user named the methods): each must
    have one; else at least one of them must. Missing runs are a BenchError naming the command."""
    runner = Runner(store, corpus, profile, results)
    found: dict[RunSpec, StoredRun] = {}
    for t in store.trials():
        a = t.user_attrs
        if t.state.name != "COMPLETE" or a.get("method") not in methods or "training_key" not in a:
            continue
        spec = RunSpec(corpus.name, profile.name, a["method"], tuple(sorted(a["params"].items())), a["seed"])
        best = Path(a.get("checkpoint_dir", "")) / "best.pt"
        if runner.identity(spec).training_key == a["training_key"] and best.is_file():
            found[spec] = StoredRun(spec, best)
    have = {s.method for s in found}
    missing = [m for m in methods if m not in have]
    if (explicit and missing) or not have:
        names = ", ".join(missing if have else methods)
        raise BenchError(f"no stored checkpoint of {quote(names)} on {corpus.name} / {profile.name} (current config): "
                         f"run `bench run --methods {missing[0] if have else methods[0]} --dataset {corpus.name} "
                         f"--profile {profile.name}` first")
    return sorted(found.values(), key=lambda r: methods.index(r.spec.method))  # stable: stored order within


def interpolate_stored(store: RunStore, corpus: Corpus, profile: Profile, methods: list[str], explicit: bool,
                       results: Path, pairs: int | None = None, seed: int | None = None,
                       device: str = "cpu") -> tuple[list[tuple[StoredRun, Interpolation]], str]:
    """Decode every stored run of `methods` along Eq. 14 on the profile's test split; returns each
    run with its Interpolation, and a note when fewer pairs exist than were asked for."""
    ev = profile.evaluation
    n_pairs = ev.interpolation_pairs if pairs is None else pairs
    seed = ev.interpolation_seed if seed is None else seed
    test = corpus.truncated(max_test=ev.max_test).splits["test"]
    chosen = pairs_or_error(test, n_pairs, seed, corpus.name)
    runs = stored_runs(store, corpus, profile, methods, explicit, results)
    note = (f"note: the test split ({len(test):,} sentences) has {len(chosen):,} pairs of different sentences of "
            f"equal length, fewer than the {n_pairs:,} asked for: all are used") if len(chosen) < n_pairs else ""
    out = []
    for run in runs:
        model = load_model(run.spec.method, run.spec.params_dict, run.checkpoint, corpus, profile, device)
        out.append((run, interpolate(model, test.sentences, chosen, seed, device, ev.max_logits)))
    return out, note


def report(results: list[tuple[StoredRun, Interpolation]], corpus: Corpus, show: int) -> str:
    """Each run's curve, and `show` example interpolations under it."""
    blocks = []
    for run, interp in results:
        text = format_curve(run.spec.label, interp.record())
        if show:
            text += "\n\n" + format_examples(interp, corpus.vocab, show)
        blocks.append(text)
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------------------- the figure
def stored_curves(store: RunStore, current_config: str | None, methods: set[str] | None = None) -> list[dict]:
    """Per (method, setting) of the current config's runs (each training run once, as on the board):
    the mean and sample std over seeds of the stored curve C(lambda) (`curves_table`), and n."""
    from vae_collapse_bench.bench.report import runs_frame, select_runs

    runs, _ = select_runs(runs_frame(store, current_config))
    if runs.empty:
        return []
    attrs = {t.number: t.user_attrs for t in store.trials()}
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in runs.itertuples():
        record = attrs[row.trial].get("interpolation")
        if record and (methods is None or row.method in methods):
            groups.setdefault((row.method, row.setting), []).append(record)
    return [{"method": m, "setting": s, "n": len(records), **curves_table(records)}
            for (m, s), records in groups.items()]


def plot_curves(curves: list[dict], title: str, out_stem: Path) -> list[Path]:
    """Figure 5 of the paper: C(lambda) with seed error bars. One axes when every method shows one
    setting; else one panel per method with its settings. Each curve differs in line style and marker,
    not only in colour (readable in grayscale); the style, palette and byte-stable saving are
    bench.plots' (out_stem.png and out_stem.svg)."""
    import matplotlib
    from matplotlib.figure import Figure
    from vae_collapse_bench.bench.plots import COLOURS, LINESTYLES, MARKERS, RC, save

    if not curves:
        raise BenchError("no interpolation curves to draw")
    methods = list(dict.fromkeys(c["method"] for c in curves))
    panels = [[c for c in curves if c["method"] == m] for m in methods]
    if all(len(p) == 1 for p in panels):
        panels = [curves]
    # y from 0, high enough for the highest error bar and the legend above the curves (at most 1)
    highest = max(float(np.nanmax(np.add(c["mean"], np.nan_to_num(c["std"])))) for c in curves)
    top = min(1.02, max(0.2, 1.6 * highest))
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
        for ax, panel in zip(axes, panels):
            for i, c in enumerate(panel):
                label = c["method"] if len(panels) == 1 else (c["setting"] if c["setting"] != "-" else c["method"])
                ax.errorbar(c["lambdas"], c["mean"], yerr=np.nan_to_num(c["std"]), color=COLOURS[i % len(COLOURS)],
                            linestyle=LINESTYLES[i % len(LINESTYLES)], marker=MARKERS[i % len(MARKERS)],
                            markersize=4, capsize=2, linewidth=1.2, label=f"{label} (n={c['n']})")
            ax.set_title(panel[0]["method"] if len(panels) > 1 else title, fontsize=9)
            ax.set_xlabel("lambda (Eq. 14)")
            ax.set_ylim(0, top)
            ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
            ax.legend(fontsize=7, loc="upper center", ncol=2 if len(panel) > 4 else 1, frameon=False)
        for ax in axes[::cols]:
            ax.set_ylabel("Rouge-L F1 to a and b (mean)")
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        if len(panels) > 1:
            fig.suptitle(title, fontsize=10)
    return save(fig, out_stem)
