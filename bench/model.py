"""The shared LSTM backbone (design.md §6) and the `Method` base every method builds on (§4).

Encoder: own embedding, one LSTM layer over `<s> x </s>`, last hidden state -> Linear (no bias) ->
the posterior's raw parameters. Decoder: own embedding with dropout, z concatenated to every input
step, c0 = W z, h0 = tanh(c0), dropout on the LSTM outputs, Linear -> vocabulary (optionally with z
concatenated there too: the skip connection of skip-VAE). Init: U(-0.01, 0.01), embeddings U(-0.1, 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import schedules
from bench.config import Backbone, Training
from bench.posterior import DiagGaussian, Posterior


def init_uniform(module: nn.Module) -> None:
    for name, p in module.named_parameters():
        bound = 0.1 if "embed" in name else 0.01
        nn.init.uniform_(p, -bound, bound)


class Encoder(nn.Module):
    def __init__(self, vocab_size: int, bb: Backbone, out_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, bb.emb_dim)
        self.lstm = nn.LSTM(bb.emb_dim, bb.enc_hidden, batch_first=True)
        self.out = nn.Linear(bb.enc_hidden, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T] (with <s> and </s>) -> [B, out_dim]."""
        _, (h, _) = self.lstm(self.embed(x))
        return self.out(h[-1])


class Decoder(nn.Module):
    def __init__(self, vocab_size: int, bb: Backbone, skip_z: bool = False):
        super().__init__()
        self.skip_z = skip_z
        self.embed = nn.Embedding(vocab_size, bb.emb_dim)
        self.dropout_in = nn.Dropout(bb.dec_dropout_in)
        self.lstm = nn.LSTM(bb.emb_dim + bb.latent_dim, bb.dec_hidden, batch_first=True)
        self.init_c = nn.Linear(bb.latent_dim, bb.dec_hidden, bias=False)
        self.dropout_out = nn.Dropout(bb.dec_dropout_out)
        self.out = nn.Linear(bb.dec_hidden + (bb.latent_dim if skip_z else 0), vocab_size, bias=False)

    def logits(self, inputs: Tensor, z: Tensor) -> Tensor:
        """Teacher-forced logits: inputs [N, T'] (x without its last token), z [N, D] -> [N, T', V]."""
        emb = self.dropout_in(self.embed(inputs))
        z_steps = z.unsqueeze(1).expand(-1, inputs.shape[1], -1)
        c0 = self.init_c(z).unsqueeze(0)
        out, _ = self.lstm(torch.cat([emb, z_steps], -1), (torch.tanh(c0), c0))
        out = self.dropout_out(out)
        if self.skip_z:
            out = torch.cat([out, z_steps], -1)
        return self.out(out)

    def log_prob(self, x: Tensor, z: Tensor, max_rows: int | None = None) -> Tensor:
        """log p(x|z) per sentence, summed over the predicted tokens (</s> counted, <s> not).

        x [B, T], z [K, B, D] -> [K, B]. All K samples go through the decoder as one batch of K*B
        sequences, cut into passes of at most `max_rows` sequences to bound memory.
        """
        k, b, d = z.shape
        rows = z.reshape(k * b, d)
        inputs, targets = x[:, :-1], x[:, 1:]
        step = max_rows or k * b
        parts = []
        for start in range(0, k * b, step):
            idx = torch.arange(start, min(start + step, k * b), device=x.device) % b
            logits = self.logits(inputs[idx], rows[start : start + step])
            nll = F.cross_entropy(logits.transpose(1, 2), targets[idx], reduction="none")
            parts.append(-nll.sum(-1))
        return torch.cat(parts).view(k, b)


@dataclass
class Reg:
    """A training term of one batch: `value` is a scalar for the optimiser (a batch-level quantity
    such as the density gap or MMD stays batch-level: it is never spread over fake per-sentence
    values); `logs` are named scalars the trainer averages per epoch into the run's history."""

    value: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)


@dataclass
class LossTerms:
    """One training/validation batch. rec and kl are per sentence [B]; reg and loss are scalars.

    loss = mean(rec) + w(t) reg + aux is what is minimised; `objective` = mean(rec) + reg (full weight)
    is the method's own validation objective per sentence; `logs` collects the named logs of the
    regularizer and the auxiliary term.
    """

    loss: Tensor
    rec: Tensor
    kl: Tensor
    reg: Tensor
    logs: dict[str, Tensor | float] = field(default_factory=dict)

    @property
    def objective(self) -> Tensor:
        """mean(rec) + reg: the validation objective per sentence of this batch (a scalar)."""
        return self.rec.mean() + self.reg


@dataclass(frozen=True)
class NoParams:
    """This method has no hyperparameters."""


class Method(nn.Module):
    """A text VAE on the shared backbone. Subclasses override only what differs (design.md §4).

    Override `posterior` (raw encoder output -> Posterior), `regularizer` (replaces ELBo's KL; a
    `Reg`), `auxiliary_loss` (gradient-only extras such as bag-of-words; a `Reg`), `kl_weight`
    (schedule), `min_batch_size` (smaller training batches are skipped), and set `skip_z` and
    `needs_all_epochs`. `Params` is a frozen dataclass of the method's hyperparameters whose
    __post_init__ raises ValueError for values outside their domain.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    skip_z: ClassVar[bool] = False
    # True for schedules that must run to max_epochs (cyclic annealing): the trainer then ignores the
    # stop-after-max_decays rule, so no cycle is cut off half-way.
    needs_all_epochs: ClassVar[bool] = False

    def __init__(self, vocab_size: int, backbone: Backbone, params=None):
        super().__init__()
        self.backbone = backbone
        self.params = params if params is not None else self.Params()
        self.encoder = Encoder(vocab_size, backbone, self.encoder_out_dim(backbone.latent_dim))
        self.decoder = Decoder(vocab_size, backbone, skip_z=self.skip_z)
        self.build_extras(vocab_size, backbone)
        init_uniform(self)

    # --- what methods override -------------------------------------------------------------
    def encoder_out_dim(self, latent_dim: int) -> int:
        return 2 * latent_dim

    def build_extras(self, vocab_size: int, backbone: Backbone) -> None:
        """Create extra modules (before the uniform init runs over all parameters)."""

    def posterior(self, h: Tensor) -> Posterior:
        raise NotImplementedError

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        """The term weighted by the KL schedule, a batch scalar. ELBo: the mean analytic KL(q(z|x)||p(z))."""
        return Reg(q.kl_to_prior().mean())

    def auxiliary_loss(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        """Gradient-only training term (added unweighted, not part of the reported losses)."""
        return Reg(z.new_zeros(()))

    @property
    def min_batch_size(self) -> int:
        """Training batches with fewer sentences are skipped (no step). The trainer never steps on
        fewer than 2 sentences, as the lineage does (BN-VAE's batch statistics need two)."""
        return 2

    def kl_weight(self, step: int, steps_per_epoch: int, training: Training) -> float:
        """Weight of the regularizer at a training step: linear from 0 to 1 over anneal_epochs."""
        return schedules.linear(step, training.anneal_epochs * steps_per_epoch)

    # --- shared machinery --------------------------------------------------------------------
    def encode(self, x: Tensor) -> Posterior:
        return self.posterior(self.encoder(x))

    def log_px_z(self, x: Tensor, z: Tensor, max_rows: int | None = None) -> Tensor:
        return self.decoder.log_prob(x, z, max_rows)

    def loss(self, x: Tensor, kl_weight: float = 1.0) -> LossTerms:
        q = self.encode(x)
        z = q.rsample(1)[0]
        rec = -self.log_px_z(x, z.unsqueeze(0))[0]
        reg = self.regularizer(q, z, x)
        aux = self.auxiliary_loss(q, z, x)
        loss = rec.mean() + kl_weight * reg.value + aux.value
        return LossTerms(loss=loss, rec=rec, kl=q.kl_to_prior(), reg=reg.value, logs={**reg.logs, **aux.logs})


class GaussianMethod(Method):
    """Diagonal-Gaussian posterior: the encoder output splits into mean and log-variance."""

    def posterior(self, h: Tensor) -> Posterior:
        loc, logvar = h.chunk(2, dim=-1)
        return DiagGaussian(loc, logvar)
