"""Aggressive training of the inference network (He, Spokoyny, Neubig & Berg-Kirkpatrick 2019,
"Lagging Inference Networks and Posterior Collapse in Variational Autoencoders", Algorithm 1).

The objective is the ELBo of `vae` (analytic KL, linear KL annealing); what changes is how it is
optimised. While the aggressive phase lasts, every training step on a batch x is

    repeat   (inner loop, the encoder phi only)
        one clipped SGD step of phi on loss(x') = mean(rec) + w(t) KL, x' = x first, then a training
        batch drawn uniformly at random (the trainer's `StepContext.sample_batch`)
    until the loss stops improving, or `max_inner` steps (default 100)
    one clipped SGD step of the decoder theta on loss(x)

so the encoder approximates the current model's posterior before the decoder moves (the lagging
encoder catches up). The inner loop's stopping rule (`InnerLoopRule`, the public code's): every
`window` (default 15) encoder steps, the loss per predicted token averaged over those steps is
compared with the previous window's; the loop stops as soon as it is higher. The first window is
compared with +inf and never stops it, so a batch gets at least min(2 window, max_inner) encoder
steps (30 by default) and at most max_inner.

The aggressive phase ends at the first epoch whose held-out mutual information is lower than the
previous epoch's (the first epoch's is compared with 0, as the public code starts from 0). MI is the
benchmark's estimator (Hoffman & Johnson 2016, `bench.metrics.mutual_information`, q_agg over the
posteriors of the whole validation split, one draw per posterior, the same draws every epoch so that
the comparison follows the encoder, not the noise). From the next epoch on, training is plain VAE
training: one clipped step of encoder and decoder together, exactly vae's step. Each epoch's history
record says whether it was aggressive (`aggressive`) and, while it was, its held-out MI
(`held_out_mi`) and the mean number of encoder steps per batch (`train_inner_steps`); the epoch
whose check ended the phase has `aggressive_ended`. The phase lives in the trainer's state, so an lr
decay that reloads an earlier best.pt does not bring the aggressive phase back (the public code's
flag is a variable of the training loop, untouched by its reloads).

Differences from the public code (jxhe/vae-lagging-encoder, text.py), all in the benchmark's
protocol: the inner loop takes at most `max_inner` = 100 steps (the public loop stops at 99); each
player's gradient is clipped on its own parameters (the public code clips encoder and decoder
gradients together, then steps one of them); SGD at the benchmark's lr 0.5, not 1.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from vae_collapse_bench.bench import metrics
from vae_collapse_bench.bench.config import Training
from vae_collapse_bench.bench.model import EpochContext, EpochEnd, GaussianMethod, LossTerms, StepContext, descend
from vae_collapse_bench.bench.registry import check_count, register

AGGRESSIVE, PLAIN = 0, 1
MI_SEED = 0  # the held-out MI check's draws: the same every epoch


class InnerLoopRule:
    """The inner loop's stopping rule: `update(loss_sum, tokens)` after each encoder step (the summed
    per-sentence loss of its batch and the batch's predicted tokens) returns True when the loop must
    stop: at every `window`-th step, when the window's loss per token, sum(loss_sum) / sum(tokens),
    is above the previous window's (the first window is compared with +inf)."""

    def __init__(self, window: int):
        self.window = window
        self.previous = math.inf
        self.steps, self.loss, self.tokens = 0, 0.0, 0

    def update(self, loss_sum: float, tokens: int) -> bool:
        self.steps += 1
        self.loss += loss_sum
        self.tokens += tokens
        if self.steps % self.window:
            return False
        current = self.loss / self.tokens
        worse = current > self.previous
        self.previous, self.loss, self.tokens = current, 0.0, 0
        return worse


@dataclass(frozen=True)
class AggressiveParams:
    """max_inner: the most encoder steps per batch, an integer >= 1 (default 100). window: encoder
    steps per comparison of the stopping rule, an integer >= 1 (default 15, the public code's)."""

    max_inner: int = 100
    window: int = 15

    def __post_init__(self):
        check_count("max_inner", self.max_inner)
        check_count("window", self.window)


@register("aggressive-vae",
          search=lambda trial: {"max_inner": trial.suggest_int("max_inner", 10, 200, log=True),
                                "window": trial.suggest_int("window", 5, 30)})
class AggressiveVAE(GaussianMethod):
    """ELBo trained with He et al.'s aggressive encoder updates until held-out MI stops rising."""

    Params = AggressiveParams

    def configure_optimizers(self, training: Training) -> list[torch.optim.Optimizer]:
        """[encoder SGD, decoder SGD] at lr; together they hold every parameter, in self.parameters()'
        order, so a plain step on both is vae's step."""
        encoder = list(self.encoder.parameters())
        own = {id(p) for p in encoder}
        rest = [p for p in self.parameters() if id(p) not in own]
        return [torch.optim.SGD(encoder, lr=training.lr), torch.optim.SGD(rest, lr=training.lr)]

    def training_step(self, x: Tensor, ctx: StepContext) -> LossTerms:
        if self.phase != AGGRESSIVE:
            return super().training_step(x, ctx)
        encoder, decoder = ctx.optimizers
        steps = self.train_encoder(x, ctx, encoder)
        terms = self.loss(x, ctx.kl_weight)  # with the encoder just trained
        descend(terms.loss, [decoder], ctx.clip_grad)
        terms.logs["inner_steps"] = float(steps)
        return terms

    def train_encoder(self, x: Tensor, ctx: StepContext, optimizer: torch.optim.Optimizer) -> int:
        """The inner loop (module docstring); returns the encoder steps taken. Without a sampler in
        ctx (a bare StepContext), every inner step uses x."""
        rule, batch = InnerLoopRule(self.params.window), x
        for step in range(1, self.params.max_inner + 1):
            if step > 1 and ctx.sample_batch is not None:
                batch = ctx.sample_batch()
            terms = self.loss(batch, ctx.kl_weight)
            descend(terms.loss, [optimizer], ctx.clip_grad)
            tokens = batch.shape[0] * (batch.shape[1] - 1)  # predicted tokens: </s> counted, <s> not
            if rule.update(terms.loss.item() * batch.shape[0], tokens):
                break
        return step

    def held_out_mi(self, batches) -> float:
        """I_q(x; z) over the held-out batches (module docstring)."""
        posteriors = [self.encode(x) for x in batches]
        q = type(posteriors[0]).cat(posteriors)
        generator = torch.Generator(device=q.mean.device).manual_seed(MI_SEED)
        return metrics.mutual_information(q, n_samples=1, generator=generator)

    def end_epoch(self, ctx: EpochContext) -> EpochEnd:
        if ctx.phase != AGGRESSIVE:
            return EpochEnd({"aggressive": False})
        mi = self.held_out_mi(ctx.held_out())
        previous = next((r["held_out_mi"] for r in reversed(ctx.history) if "held_out_mi" in r), 0.0)
        record = {"aggressive": True, "held_out_mi": mi}
        if mi < previous:
            record["aggressive_ended"] = True
        return EpochEnd(record, next_phase=mi < previous)
