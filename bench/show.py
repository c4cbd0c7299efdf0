"""`bench show RUN_KEY`: one training run in full, from its records in the storage (or an export).

A run key is a training key (the one a board's `run_keys` column lists; any unique prefix of 6 or
more characters will do). Its records are the trial that trained it and any later re-evaluation of
its checkpoint; the document shows the identity, the resolved config, the per-epoch history with the
regularizer's logged terms, every evaluation (metrics, sizes, seconds per metric) and provenance
(versions, host, device, threads, command, wall time, peak memory).
"""

from __future__ import annotations

import json
import math

from vae_collapse_bench.bench.errors import BenchError, quote
from vae_collapse_bench.bench.report import fixed

MIN_PREFIX = 6
PROVENANCE = ("host", "pid", "device", "torch_threads", "versions", "command", "wall_time_s", "train_wall_time_s",
              "eval_wall_time_s", "peak_memory_mb", "checkpoint_dir", "evaluated_from_trial")


def find_run(stores: list, key: str) -> tuple[str, list]:
    """(the full training key, its records as (store, trial) sorted by trial number) for a key or a
    unique prefix; a BenchError naming the fix otherwise."""
    key = key.strip()
    if len(key) < MIN_PREFIX:
        raise BenchError(f"run key {quote(key)} is too short: give at least {MIN_PREFIX} characters of a key "
                         "from a board's run_keys column")
    found: dict[str, list] = {}
    for store in stores:
        for t in store.trials():
            a = t.user_attrs
            training = a.get("training_key") or a.get("run_key")
            if training and (training.startswith(key) or a.get("eval_key", "").startswith(key)) \
                    and not a.get("claim_lost"):
                found.setdefault(training, []).append((store, t))
    if not found:
        raise BenchError(f"no run with key {quote(key)} in this storage: keys are listed in a board's run_keys "
                         "column (bench leaderboard --format csv); check --results/--storage")
    if len(found) > 1:
        raise BenchError(f"run key {quote(key)} is ambiguous ({len(found)} runs: "
                         f"{', '.join(sorted(k[:12] for k in found))}): give more characters")
    (training, records), = found.items()
    return training, sorted(records, key=lambda r: r[1].number)


def run_document(training_key: str, records: list) -> dict:
    """Everything stored about one training run, as plain data (the json format)."""
    first = records[0][1].user_attrs
    trained = next((t.user_attrs for _, t in records if t.user_attrs.get("history")), first)
    return {
        "run_key": training_key,
        "identity": {k: first.get(k) for k in ("dataset", "profile", "method", "setting", "params", "seed",
                                               "data_checksum", "training_key", "config_key")}
                    | {"identity": first.get("identity")},
        "config": trained.get("config", first.get("config")),
        "training": {k: trained.get(k) for k in ("epochs", "best_epoch", "decays", "best_valid_objective",
                                                 "skipped_batches", "skipped_sentences")},
        "history": trained.get("history", []),
        "data_notes": first.get("data_notes", []),
        "records": [{"study": f"runs/{store.dataset}/{store.profile}", "trial": t.number, "state": t.state.name,
                     "eval_key": t.user_attrs.get("eval_key"), "metrics": t.user_attrs.get("metrics"),
                     "eval_sizes": t.user_attrs.get("eval_sizes"), "eval_seconds": t.user_attrs.get("eval_seconds"),
                     "posterior_family": t.user_attrs.get("posterior_family"),
                     "fail_reason": t.user_attrs.get("fail_reason"),
                     "provenance": {k: t.user_attrs[k] for k in PROVENANCE if k in t.user_attrs}}
                    for store, t in records],
    }


def _value(v) -> str:
    if isinstance(v, float):
        return fixed(v, 4) if math.isfinite(v) and abs(v) < 1e6 else f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_value(x)}" for k, x in v.items()) or "-"
    return "-" if v is None else str(v)


def _history_table(history: list[dict]) -> list[str]:
    if not history:
        return ["  (no per-epoch history: the run was not trained by this record)"]
    keys = {k for record in history for k in record}  # one order whatever the store kept: epoch, then by name
    columns = ["epoch"] * ("epoch" in keys) + sorted(keys - {"epoch"})
    cells = [[_value(r.get(c)) for c in columns] for r in history]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  " + "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    return [line] + ["  " + "  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]


def render_text(doc: dict) -> str:
    ident = doc["identity"]
    lines = [f"run {doc['run_key']}",
             f"  {ident['method']} [{ident['setting']}] seed {ident['seed']} on "
             f"{ident['dataset']} / {ident['profile']}",
             "", "identity:"]
    lines += [f"  {k}: {_value(ident[k])}" for k in ("params", "data_checksum", "training_key", "config_key")]
    lines += ["", "resolved config:"]
    lines += [f"  {k}: {_value(v)}" for k, v in (doc["config"] or {}).items()]
    lines += ["", "training: " + _value(doc["training"]), "", "per-epoch history (train_* include the "
              "regularizer's logged terms):"]
    lines += _history_table(doc["history"])
    for note in doc["data_notes"]:
        lines.append(f"data note: {note}")
    for r in doc["records"]:
        lines += ["", f"record {r['study']} trial {r['trial']}: {r['state']}"
                  + (f" ({r['fail_reason']})" if r["fail_reason"] else "")]
        if r["metrics"]:
            lines.append("  metrics: " + ", ".join(f"{k} {fixed(v, 0 if k in ('AU', 'CU') else 3)}"
                                                   for k, v in r["metrics"].items()
                                                   if isinstance(v, int | float)))
        lines.append(f"  eval key: {r['eval_key']}; posterior: {r['posterior_family'] or '-'}")
        if r["eval_sizes"]:
            lines.append("  evaluation sizes: " + _value(r["eval_sizes"]))
        if r["eval_seconds"]:
            lines.append("  evaluation seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in r["eval_seconds"].items()))
        lines += [f"  {k}: {_value(v)}" for k, v in r["provenance"].items()]
    return "\n".join(lines) + "\n"


def render(doc: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"
    if fmt == "text":
        return render_text(doc)
    raise BenchError(f"unknown format {quote(fmt)}: use text or json")
