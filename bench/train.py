"""Trainer: seeds, KL schedule, the method's training steps, decay on plateau, atomic per-epoch
checkpoints, NaN guard.

Protocol (design.md §6): SGD (lr 0.5), gradient-norm clip 5, length-bucketed batches. Per training
batch the trainer computes the schedule's weight w(t) and calls `method.training_step(x, ctx)`
(`bench.model.StepContext`: w(t), the method's optimizers from `configure_optimizers`, the clip, step
and epoch); by default one clipped SGD step on mean(rec) + w(t) reg + aux, but a method may take
several steps or phases (aae: critic, then autoencoder). A non-finite returned loss stops the run
(TrainingDiverged). During training steps `method.noise` is the trainer's own generator, seeded
from the run seed, so the draws of training (z ~ q, a regularizer's noise, prior samples) form one
checkpointed stream; validation draws from the global RNG, whose state is checkpointed as well.

After every epoch the validation objective (the method's own: reconstruction + regularizer at full
weight, per sentence) is measured; the best epoch's weights are kept in `best.pt`. When it has not
improved for `patience` epochs (counted from `decay_from_epoch` on), lr is halved (in every param
group of every optimizer) and the best weights reloaded; training stops after `max_decays` halvings
or `max_epochs` (a method with `needs_all_epochs`, such as a cyclic schedule, always runs
`max_epochs`: stopping would cut a cycle). Training batches of fewer than `max(2,
method.min_batch_size)` sentences are skipped and counted in the history.

Phases: after each epoch's validation the method's `end_epoch` adds its facts to the history record
and may move training to its next phase (`bench.model.EpochEnd`); the phase lives in the trainer's
state (last.pt), so reloading best.pt never reverts it. A restarting phase is a fresh training from
the best weights of the phase before (lr, optimizers, schedule, decay rule, checkpoint selection).

Resumption: `last.pt` holds weights, every optimizer's state (a list, in `configure_optimizers`'
order), trainer state and every RNG state (the training noise generator included) at the end of the
last finished epoch, written atomically; a run killed at any moment restarts from it and produces the
same numbers as an uninterrupted run. Once training has finished, `last.pt` shrinks to the final
trainer state alone (best.pt holds the weights): a run whose stored record was lost (a damaged
storage) is then evaluated again from best.pt instead of being trained again.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from vae_collapse_bench.bench.config import Training
from vae_collapse_bench.bench.data import Corpus, Split, length_batch_indices, length_batches
from vae_collapse_bench.bench.model import EpochContext, Method, StepContext


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message says where."""


class NothingToTrain(RuntimeError):
    """Every training batch is smaller than the method accepts, so not one step would be taken."""


@dataclass
class TrainState:
    epoch: int = 0  # finished epochs
    step: int = 0
    lr: float = 0.0
    best_objective: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    decays: int = 0
    finished: bool = False
    history: list[dict] = field(default_factory=list)
    # the method's training phase (Method.end_epoch -> EpochEnd) and where the current one began: a
    # restarting phase counts its schedule steps and its decay_from_epoch from there
    phase: int = 0
    phase_start_epoch: int = 0
    phase_start_step: int = 0


def atomic_save(obj, path: Path) -> None:
    """torch.save to a temporary file in the same directory, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def noise_seed(seed: int) -> int:
    """The seed of a run's training-noise generator: a stream of its own (SeedSequence of (seed, 1)),
    not the data order's generator seeded with the same number."""
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])


def _rng_state(data_rng: torch.Generator, noise: torch.Generator) -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "data": data_rng.get_state(),
        "noise": noise.get_state(),
    }


def _set_rng_state(state: dict, data_rng: torch.Generator, noise: torch.Generator) -> None:
    # RNG states are CPU byte tensors whatever generator they belong to; last.pt is loaded with
    # map_location=device, which would have moved them to the accelerator
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    data_rng.set_state(state["data"].cpu())
    noise.set_state(state["noise"].cpu())


class Trainer:
    """Fits one Method on one Corpus; `fit()` resumes from `workdir/last.pt` when it exists."""

    def __init__(
        self,
        model: Method,
        corpus: Corpus,
        training: Training,
        seed: int,
        workdir: Path,
        device: torch.device | str = "cpu",
        on_step: Callable[[int, int], None] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
    ):
        self.model, self.corpus, self.training, self.seed = model, corpus, training, seed
        self.workdir, self.device = Path(workdir), torch.device(device)
        self.on_step, self.on_epoch = on_step, on_epoch
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.optimizers = model.configure_optimizers(training)
        self.data_rng = torch.Generator().manual_seed(seed)
        self.noise = torch.Generator(device=self.device).manual_seed(noise_seed(seed))
        self.state = TrainState(lr=training.lr)
        self._resumed = False

    @property
    def last_path(self) -> Path:
        return self.workdir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.workdir / "best.pt"

    def resume(self) -> int:
        """Restore weights, optimizers, trainer state and RNG states from `last.pt` if it exists;
        returns the number of finished epochs (0 for a fresh run). `fit` calls it when needed."""
        self._resumed = True
        if not self.last_path.exists():
            return 0
        ckpt = torch.load(self.last_path, map_location=self.device, weights_only=False)
        self.state = TrainState(**ckpt["state"])
        self.model.phase = self.state.phase
        if "model" in ckpt:  # an unfinished run: everything needed to go on exactly
            self.model.load_state_dict(ckpt["model"])
            if len(ckpt["optimizers"]) != len(self.optimizers):
                raise RuntimeError(f"{self.last_path} holds the state of {len(ckpt['optimizers'])} "
                                   f"optimizers; the method has {len(self.optimizers)}")
            for optimizer, state in zip(self.optimizers, ckpt["optimizers"]):
                optimizer.load_state_dict(state)
            _set_rng_state(ckpt["rng"], self.data_rng, self.noise)
        return self.state.epoch

    @property
    def smallest_batch(self) -> int:
        return max(2, self.model.min_batch_size)

    def steps_per_epoch(self) -> int:
        """Training steps per epoch: the training batches that are not skipped (the batch sizes do
        not depend on the shuffle, so this is the same every epoch); schedules count these steps."""
        lengths = [len(s) for s in self.corpus.splits["train"].sentences]
        chunks = length_batch_indices(lengths, self.training.batch_size)
        return sum(len(c) >= self.smallest_batch for c in chunks)

    def fit(self) -> TrainState:
        self.model.to(self.device)
        if not self._resumed:
            self.resume()
        steps_per_epoch = self.steps_per_epoch()
        if steps_per_epoch == 0:  # evaluating the untrained initialisation would pass for a result
            lengths = [len(s) for s in self.corpus.splits["train"].sentences]
            largest = max(map(len, length_batch_indices(lengths, self.training.batch_size)), default=0)
            raise NothingToTrain(
                f"no training batch has {self.smallest_batch} or more sentences (the method's smallest "
                f"batch); the largest of this corpus's length-bucketed batches has {largest}")
        while not self.state.finished:
            started = time.perf_counter()
            record = {"epoch": self.state.epoch + 1, "lr": self.state.lr}
            record.update(self._train_epoch(steps_per_epoch))
            record.update(self.validate(self.corpus.splits["valid"]))
            record["seconds"] = time.perf_counter() - started
            self._end_epoch(record)
            if self.on_epoch:
                self.on_epoch(record)
        self.model.load_state_dict(torch.load(self.best_path, map_location=self.device))
        return self.state

    def _train_epoch(self, steps_per_epoch: int) -> dict:
        """One pass over the training batches; returns the epoch's training record: mean loss per
        sentence, the per-sentence means of the method's named logs, and the skipped batches."""
        self.model.train()
        batches = length_batches(self.corpus.splits["train"], self.training.batch_size, self.data_rng)
        smallest = self.smallest_batch
        total, count, steps, skipped_batches, skipped_sentences = 0.0, 0, 0, 0, 0
        logs: dict[str, float] = defaultdict(float)
        self.model.noise = self.noise
        accepted = [x for x in batches if len(x) >= smallest]

        def sample_batch() -> torch.Tensor:
            pick = torch.randint(len(accepted), (1,), generator=self.noise, device=self.noise.device)
            return accepted[int(pick)].to(self.device)

        try:
            for x in batches:
                if len(x) < smallest:  # too few sentences for the method's batch statistics or groups
                    skipped_batches += 1
                    skipped_sentences += len(x)
                    continue
                x = x.to(self.device)
                schedule_step = self.state.step - self.state.phase_start_step
                ctx = StepContext(kl_weight=self.model.kl_weight(schedule_step, steps_per_epoch, self.training),
                                  optimizers=self.optimizers, clip_grad=self.training.clip_grad,
                                  step=self.state.step, epoch=self.state.epoch + 1, sample_batch=sample_batch)
                terms = self.model.training_step(x, ctx)
                if not torch.isfinite(terms.loss):
                    raise TrainingDiverged(
                        f"training loss became {terms.loss.item()} at epoch {self.state.epoch + 1}, "
                        f"step {self.state.step} (lr {self.state.lr:g})"
                    )
                self.state.step += 1
                steps += 1
                total += terms.loss.item() * len(x)
                count += len(x)
                logs["kl"] += terms.kl.sum().item()
                logs["reg"] += terms.reg.item() * len(x)
                for name, value in terms.logs.items():
                    logs[name] += float(value) * len(x)
                if self.on_step:
                    self.on_step(steps, steps_per_epoch)
        finally:  # validation and evaluation draw from the global RNG
            self.model.noise = None
        record = {"train_loss": total / max(count, 1)}
        record.update({f"train_{name}": value / max(count, 1) for name, value in logs.items()})
        record.update({"skipped_batches": skipped_batches, "skipped_sentences": skipped_sentences})
        return record

    @torch.no_grad()
    def validate(self, split: Split) -> dict:
        """Mean per-sentence validation objective (rec + regularizer at full weight), reconstruction
        and KL over every sentence of the split (no batch is skipped here)."""
        self.model.eval()
        sums = {"objective": 0.0, "rec": 0.0, "kl": 0.0}
        n = 0
        for x in length_batches(split, self.training.batch_size):
            terms = self.model.loss(x.to(self.device))
            sums["objective"] += terms.objective.item() * len(x)
            sums["rec"] += terms.rec.sum().item()
            sums["kl"] += terms.kl.sum().item()
            n += len(x)
        out = {f"valid_{k}": v / max(n, 1) for k, v in sums.items()}
        if not math.isfinite(out["valid_objective"]):
            raise TrainingDiverged(f"validation objective became {out['valid_objective']} "
                                   f"at epoch {self.state.epoch + 1}")
        return out

    def _end_epoch(self, record: dict) -> None:
        s, t = self.state, self.training
        s.epoch += 1
        if record["valid_objective"] < s.best_objective:
            s.best_objective, s.best_epoch, s.bad_epochs = record["valid_objective"], s.epoch, 0
            atomic_save(self.model.state_dict(), self.best_path)
        else:
            s.bad_epochs += 1
        if s.epoch - s.phase_start_epoch >= t.decay_from_epoch and s.bad_epochs >= t.patience:
            s.decays += 1
            s.lr *= t.lr_decay
            s.bad_epochs = 0
            self.model.load_state_dict(torch.load(self.best_path, map_location=self.device))
            for optimizer in self.optimizers:  # a method's own lr ratios (a faster critic) are kept
                for group in optimizer.param_groups:
                    group["lr"] *= t.lr_decay
            record["decayed_to"] = s.lr
            s.finished = s.decays >= t.max_decays and not self.model.needs_all_epochs
        self._method_end_epoch(record)
        s.finished = s.finished or s.epoch >= t.max_epochs
        s.history.append(record)
        if s.finished:  # best.pt holds the weights that count; the state alone marks the run trained
            atomic_save({"state": dataclasses.asdict(s)}, self.last_path)
            return
        atomic_save(
            {
                "model": self.model.state_dict(),
                "optimizers": [optimizer.state_dict() for optimizer in self.optimizers],
                "state": dataclasses.asdict(s),
                "rng": _rng_state(self.data_rng, self.noise),
            },
            self.last_path,
        )

    @torch.no_grad()
    def _method_end_epoch(self, record: dict) -> None:
        """The method's end-of-epoch hook: its facts join the record; on its request the next phase
        begins (bench.model.EpochEnd), unless max_epochs is reached."""
        s, t = self.state, self.training
        valid = self.corpus.splits["valid"]
        ctx = EpochContext(epoch=s.epoch, phase=s.phase, phase_epochs=s.epoch - s.phase_start_epoch,
                           stopping=s.finished or s.epoch >= t.max_epochs, training=t, record=record,
                           history=s.history,
                           held_out=lambda: (x.to(self.device) for x in length_batches(valid, t.batch_size)))
        outcome = self.model.end_epoch(ctx)
        record.update(outcome.record)
        if not outcome.next_phase or s.epoch >= t.max_epochs:
            return
        s.phase += 1
        self.model.phase = s.phase
        if outcome.restart:  # a fresh training from this phase's best weights
            self.model.load_state_dict(torch.load(self.best_path, map_location=self.device))
            s.phase_start_epoch, s.phase_start_step = s.epoch, s.step
            s.best_objective, s.best_epoch, s.bad_epochs, s.decays = math.inf, 0, 0, 0
            s.lr, s.finished = t.lr, False
        self.model.begin_phase(s.phase)
        if outcome.restart:
            self.optimizers = self.model.configure_optimizers(t)
