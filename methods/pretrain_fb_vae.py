"""Autoencoder pretraining, decoder reset and free bits (Li, He, Neubig, Berg-Kirkpatrick & Yang
2019, "A Surprisingly Effective Fix for Deep Latent Variable Modeling of Text").

Two phases in one run:

1. Pretraining: the encoder and decoder train as an autoencoder, beta = 0:
       loss = mean_n -log p(x_n | z_n),  z_n ~ q(z|x_n)
   (the regularizer is 0, so the validation objective, which selects the checkpoint, is the
   reconstruction alone, as in the public code when the KL weight is 0 throughout).
2. Free bits: the best pretrained weights are reloaded, the decoder is re-initialised (the
   backbone's init: U(-0.01, 0.01), embeddings U(-0.1, 0.1)) and the encoder kept; then fb-vae's
   objective (design.md §4, free bits per sample and dimension):
       loss = mean(rec) + w(t) mean_n sum_i max(KL_{n,i}, lambda / D)
   trained as a fresh run: lr, optimizer, the KL annealing from 0 (the public code's kl_start 0,
   warm_up 10), the decay rule (from epoch `decay_from_epoch` of the phase) and the checkpoint
   selection all start over (the trainer's restarting phase, `bench.model.EpochEnd`). The run's
   result is the best checkpoint of this phase.

The public code (bohanli/vae-pretraining-encoder) runs the phases as two trainings, each to its own
convergence. One benchmark run has one epoch budget (max_epochs), so pretraining takes at most a
share `pretrain` of it: it ends after round(pretrain x max_epochs) epochs (at least 1, and at least
one epoch is left for free bits), or earlier when the trainer's own rule would stop it (max_decays).
Each epoch's history record names its phase (`phase`: "pretrain" or "free-bits"); the last
pretraining epoch records the epoch whose weights the free-bits phase starts from
(`pretrain_best_epoch`).

The public code masks the KL below the target (its fb = 2: kl_i counts only where kl_i > lambda / D),
which has fb-vae's gradient; the value here is fb-vae's clamp, so the two methods' validation
objectives are the same quantity.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from vae_collapse_bench.bench.model import EpochContext, EpochEnd, Reg, init_uniform
from vae_collapse_bench.bench.posterior import Posterior
from vae_collapse_bench.bench.registry import check_number, register
from vae_collapse_bench.methods.fb_vae import FreeBitsVAE

PRETRAIN, FREE_BITS = 0, 1


def pretrain_epochs(share: float, max_epochs: int) -> int:
    """Epochs of the pretraining phase at most: round(share x max_epochs), at least 1 and at most
    max_epochs - 1 (so free bits trains at least one epoch whenever max_epochs >= 2)."""
    return max(1, min(round(share * max_epochs), max_epochs - 1))


@dataclass(frozen=True)
class PretrainFBParams:
    """free_bits: lambda, total free KL in nats per sentence (lambda / D per dimension), a finite
    number >= 0 (default 4, fb-vae's). pretrain: the share of max_epochs the autoencoder phase may
    take, a number in (0, 1] (default 0.5)."""

    free_bits: float = 4.0
    pretrain: float = 0.5

    def __post_init__(self):
        check_number("free_bits (lambda)", self.free_bits, 0, low_inclusive=True)
        check_number("pretrain", self.pretrain, 0, 1)
        object.__setattr__(self, "free_bits", float(self.free_bits))  # 4 and 4.0 are one run
        object.__setattr__(self, "pretrain", float(self.pretrain))


@register("pretrain-fb-vae", grid={"free_bits": [4, 9, 16]},
          search=lambda trial: {"free_bits": trial.suggest_float("free_bits", 0.0, 64.0),
                                "pretrain": trial.suggest_float("pretrain", 0.1, 0.9)})
class PretrainFBVAE(FreeBitsVAE):
    """Autoencoder pretraining, decoder reset, then free bits from the pretrained encoder."""

    Params = PretrainFBParams

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        if self.phase == PRETRAIN:  # beta = 0
            return Reg(z.new_zeros(()))
        return super().regularizer(q, z, x)

    def end_epoch(self, ctx: EpochContext) -> EpochEnd:
        if ctx.phase != PRETRAIN:
            return EpochEnd({"phase": "free-bits"})
        if not (ctx.stopping or ctx.phase_epochs >= pretrain_epochs(self.params.pretrain, ctx.training.max_epochs)):
            return EpochEnd({"phase": "pretrain"})
        # the trainer keeps the first of equal objectives (strict improvement): so does min
        phase = [*ctx.history[len(ctx.history) - ctx.phase_epochs + 1:], ctx.record]
        best = min(phase, key=lambda r: r["valid_objective"])
        return EpochEnd({"phase": "pretrain", "pretrain_best_epoch": best["epoch"]}, next_phase=True, restart=True)

    def begin_phase(self, phase: int) -> None:
        """Free bits begins: re-initialise the decoder (the pretrained encoder stays)."""
        init_uniform(self.decoder)
