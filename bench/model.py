"""The shared LSTM backbone (design.md §6) and the `Method` base every method builds on (§4).

Encoder: own embedding, one LSTM layer over `<s> x </s>`, last hidden state -> Linear (no bias) ->
the posterior's raw parameters. Decoder, for a conditioning vector c (by default c = z): own
embedding with dropout, c concatenated to every input step, c0 = W c, h0 = tanh(c0), dropout on the
LSTM outputs h_t, then logits = W_out o_t (no bias) with o_t = h_t by default; a method may
condition on another c (`Method.decoder_input`) or let the vocabulary projection read other
features o_t (`Method.decoder_output`, e.g. skip-VAE's [h_t ; z]). Init: U(-0.01, 0.01),
embeddings U(-0.1, 0.1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vae_collapse_bench.bench import schedules
from vae_collapse_bench.bench.config import Backbone, Training
from vae_collapse_bench.bench.posterior import DiagGaussian, Posterior


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
    """The backbone decoder for a conditioning vector of `cond_dim` numbers (default: the latent
    dimension) and a vocabulary projection that reads `out_dim` features (default: the hidden size)."""

    def __init__(self, vocab_size: int, bb: Backbone, cond_dim: int | None = None, out_dim: int | None = None):
        super().__init__()
        cond_dim = bb.latent_dim if cond_dim is None else cond_dim
        self.embed = nn.Embedding(vocab_size, bb.emb_dim)
        self.dropout_in = nn.Dropout(bb.dec_dropout_in)
        self.lstm = nn.LSTM(bb.emb_dim + cond_dim, bb.dec_hidden, batch_first=True)
        self.init_c = nn.Linear(cond_dim, bb.dec_hidden, bias=False)
        self.dropout_out = nn.Dropout(bb.dec_dropout_out)
        self.out = nn.Linear(bb.dec_hidden if out_dim is None else out_dim, vocab_size, bias=False)

    def hidden(self, inputs: Tensor, c: Tensor) -> Tensor:
        """Teacher-forced LSTM outputs (after dropout): inputs [N, T'] (x without its last token),
        c [N, cond_dim] -> [N, T', dec_hidden]."""
        emb = self.dropout_in(self.embed(inputs))
        c_steps = c.unsqueeze(1).expand(-1, inputs.shape[1], -1)
        c0 = self.init_c(c).unsqueeze(0)
        out, _ = self.lstm(torch.cat([emb, c_steps], -1), (torch.tanh(c0), c0))
        return self.dropout_out(out)


def sequence_log_prob(logits: Callable[[Tensor, Tensor], Tensor], x: Tensor, z: Tensor,
                      max_rows: int | None = None, project: nn.Linear | None = None) -> Tensor:
    """log p(x|z) per sentence, summed over the predicted tokens (</s> counted, <s> not).

    `logits(inputs [N, T'], z [N, D]) -> [N, T', V]` is the teacher-forced decoder; with `project`
    (the vocabulary projection) it returns the projection's input features [N, T', F] instead, and
    `projected_nll` applies the projection. x [B, T], z [K, B, D] -> [K, B]. All K samples go
    through the decoder as one batch of K*B sequences, cut into passes of at most `max_rows`
    sequences to bound memory.
    """
    k, b, d = z.shape
    rows = z.reshape(k * b, d)
    inputs, targets = x[:, :-1], x[:, 1:]
    step = max_rows or k * b
    parts = []
    for start in range(0, k * b, step):
        idx = torch.arange(start, min(start + step, k * b), device=x.device) % b
        out = logits(inputs[idx], rows[start : start + step])
        nll = token_nll(out, targets[idx]) if project is None else projected_nll(out, targets[idx], project)
        parts.append(-nll.sum(-1))
    return torch.cat(parts).view(k, b)


# Without gradients (evaluation, validation) the projection and its cross-entropy run over blocks of
# max(LOGIT_BLOCK / V, F) tokens: a block's logits stay in cache between the product that writes them
# and the log-softmax that reads them. One CPU thread, 13,200 tokens: 2.0x faster at F 128, V 4,770
# (blocks of 219 tokens), 1.15x at F 512, V 10,000; at F 1,024 the product dominates and blocks of
# F tokens cost nothing. With gradients one block (every logit is kept for the backward pass anyway,
# and split weight gradients would be summed block by block).
LOGIT_BLOCK = 2**20


def projected_nll(features: Tensor, targets: Tensor, project: nn.Linear) -> Tensor:
    """`token_nll(project(features), targets)`: features [N, T', F] -> [N, T'], blocked without
    gradients (LOGIT_BLOCK)."""
    n, t, f = features.shape
    if torch.is_grad_enabled():
        return token_nll(project(features), targets)
    flat, goal = features.reshape(n * t, f), targets.reshape(n * t)
    step = max(LOGIT_BLOCK // project.out_features, f)
    return torch.cat([F.cross_entropy(project(flat[s:s + step]), goal[s:s + step], reduction="none")
                      for s in range(0, n * t, step)]).view(n, t)


def token_nll(logits: Tensor, targets: Tensor, pad: int | None = None) -> Tensor:
    """-log softmax(logits)[target] per token: logits [N, T', V], targets [N, T'] -> [N, T'], 0 where
    the target is `pad` (None: every target counts; the trainer's and evaluator's batches hold
    sentences of one length, never padding, and a corpus may spell a word `<pad>`).

    Cross-entropy on the logits themselves (no separate log-softmax tensor) over the contiguous
    [N*T', V] rows. The same value as `F.cross_entropy(logits.transpose(1, 2), targets)`, whose
    log-softmax runs over the strided [N, V, T'] view: 2.6x slower forward and backward at
    [32, 81, 20,001] on a CPU (tests/test_perf.py checks that both layouts agree)."""
    n, t, v = logits.shape
    return F.cross_entropy(logits.reshape(n * t, v), targets.reshape(n * t),
                           ignore_index=-100 if pad is None else pad, reduction="none").view(n, t)


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


@dataclass
class StepContext:
    """What the trainer hands one training step: the regularizer weight w(t) of this step, the
    optimizers `Method.configure_optimizers` made (in its order, state restored on resume), the
    gradient-norm clip, and where training stands: `step` training steps taken before this one
    (the schedule's t) during `epoch` (1-based). `sample_batch`, when the trainer gives one, returns
    another training batch of this epoch (uniform over the batches the method accepts, drawn from
    the trainer's checkpointed noise generator, on the device): for methods that step on more
    batches than x (aggressive-vae's encoder loop)."""

    kl_weight: float
    optimizers: list[torch.optim.Optimizer]
    clip_grad: float
    step: int = 0
    epoch: int = 1
    sample_batch: Callable[[], Tensor] | None = None


@dataclass
class EpochContext:
    """What the trainer hands `Method.end_epoch` after an epoch's validation (eval mode, no grad):
    `epoch` finished epochs (this one included), the method's training `phase` during it and the
    epochs of that phase so far (`phase_epochs`, this one included), whether the trainer's own rule
    ends training after it (`stopping`: max_decays or max_epochs), the `training` config, this
    epoch's history `record` so far and the earlier records (`history`), and `held_out()`, which
    yields the validation batches on the device."""

    epoch: int
    phase: int
    phase_epochs: int
    stopping: bool
    training: Training
    record: dict
    history: list[dict]
    held_out: Callable[[], Iterator[Tensor]]


@dataclass
class EpochEnd:
    """What `Method.end_epoch` returns: `record`, fields added to the epoch's history record (facts
    such as a held-out check or the phase; numbers, bools or short strings), and whether training
    moves to the next phase. `next_phase` increments the trainer's phase (checkpointed in last.pt,
    never reverted by reloading best.pt) and calls `Method.begin_phase`; with `restart` the next phase
    is a fresh training from the best weights of the phase that ends: they are reloaded before
    `begin_phase`, and lr, optimizers, the schedule's step, the decay rule and the checkpoint
    selection start over. A phase change is ignored once max_epochs is reached."""

    record: dict = field(default_factory=dict)
    next_phase: bool = False
    restart: bool = False


def descend(loss: Tensor, optimizers: Sequence[torch.optim.Optimizer], clip_grad: float) -> None:
    """One clipped gradient step of `loss` on the parameters P that `optimizers` hold:

        g = d loss / d P,   g <- g min(1, clip_grad / ||g||_2)  (one norm over all of P),

    then every optimizer steps. Only P receives gradients (backward stops at them), so a loss whose
    graph passes through another player's parameters (a GAN's generator term through the critic)
    neither trains nor leaves stale gradients on them."""
    params = [p for opt in optimizers for group in opt.param_groups for p in group["params"] if p.requires_grad]
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward(inputs=params)
    torch.nn.utils.clip_grad_norm_(params, clip_grad)
    for opt in optimizers:
        opt.step()


@dataclass(frozen=True)
class NoParams:
    """This method has no hyperparameters."""


class Method(nn.Module):
    """A text VAE on the shared backbone. Subclasses override only what differs (design.md §4).

    What a batch costs: `posterior` (raw encoder output -> Posterior), `regularizer` (replaces ELBo's
    KL; a `Reg`), `auxiliary_loss` (gradient-only extras such as bag-of-words; a `Reg`), `kl_weight`
    (schedule). What the decoder sees: `decoder_input` (what it conditions on, default z; width
    `decoder_input_dim`) and `decoder_output` (what the vocabulary projection reads, default the LSTM
    output h; width `decoder_output_dim`). How training runs: `configure_optimizers` (default one SGD
    over every parameter) and `training_step` (default one clipped step on `loss`), `min_batch_size`
    (smaller training batches are skipped), `needs_all_epochs`, and for methods that train in
    phases, `end_epoch` (per-epoch facts for the history; moves to the next phase) and `begin_phase`.
    `Params` is a frozen dataclass of the method's hyperparameters whose __post_init__ raises
    ValueError for values outside their domain.

    Randomness: every draw a method makes in a training step (z ~ q, a regularizer's noise, prior
    samples) passes `generator=self.noise`: the trainer's generator (seeded from the run seed,
    checkpointed) during training steps, None (the global RNG) otherwise. Dropout, inside torch's
    modules, draws from the global RNG, whose state last.pt holds as well.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    # True for schedules that must run to max_epochs (cyclic annealing): the trainer then ignores the
    # stop-after-max_decays rule, so no cycle is cut off half-way.
    needs_all_epochs: ClassVar[bool] = False
    noise: torch.Generator | None = None
    # The training phase (0 first), set by the trainer from its checkpointed state (EpochEnd); read
    # by methods whose steps or objective differ by phase, in training and validation alike.
    phase: int = 0

    def __init__(self, vocab_size: int, backbone: Backbone, params=None):
        super().__init__()
        self.backbone = backbone
        self.params = params if params is not None else self.Params()
        self.encoder = Encoder(vocab_size, backbone, self.encoder_out_dim(backbone.latent_dim))
        self.decoder = Decoder(vocab_size, backbone, self.decoder_input_dim(backbone),
                               self.decoder_output_dim(backbone))
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

    def decoder_input_dim(self, backbone: Backbone) -> int:
        """Width of `decoder_input`'s result."""
        return backbone.latent_dim

    def decoder_input(self, z: Tensor) -> Tensor:
        """c: what the decoder conditions on (every input step and its initial state), [N, D] -> [N, C]."""
        return z

    def decoder_output_dim(self, backbone: Backbone) -> int:
        """Width of `decoder_output`'s result (the vocabulary projection's input)."""
        return backbone.dec_hidden

    def decoder_output(self, h: Tensor, z: Tensor) -> Tensor:
        """o_t: the features the vocabulary projection reads, from the LSTM outputs h [N, T', H] and
        z [N, D] -> [N, T', decoder_output_dim]."""
        return h

    def configure_optimizers(self, training: Training) -> list[torch.optim.Optimizer]:
        """The optimizers `training_step` receives: one SGD(lr) over every parameter. The trainer
        saves and restores their state and halves every param group's lr on a plateau."""
        return [torch.optim.SGD(self.parameters(), lr=training.lr)]

    def training_step(self, x: Tensor, ctx: StepContext) -> LossTerms:
        """Train on one batch x [B, T]; returns its LossTerms (the trainer stops on a non-finite
        `loss` and averages `loss`, kl, reg and the logs per epoch). Default: one clipped step
        (`descend`) of loss = mean(rec) + w(t) reg + aux on every optimizer."""
        terms = self.loss(x, ctx.kl_weight)
        descend(terms.loss, ctx.optimizers, ctx.clip_grad)
        return terms

    def end_epoch(self, ctx: EpochContext) -> EpochEnd:
        """After each epoch's validation: facts for the epoch's history record and whether training
        moves to the next phase (`EpochEnd`). Default: nothing."""
        return EpochEnd()

    def begin_phase(self, phase: int) -> None:
        """Called when phase `phase` (>= 1) begins, after the best weights were reloaded if the
        phase restarts training (e.g. re-initialise a module). Default: nothing."""

    # --- shared machinery --------------------------------------------------------------------
    def encode(self, x: Tensor) -> Posterior:
        return self.posterior(self.encoder(x))

    def decoder_features(self, inputs: Tensor, z: Tensor) -> Tensor:
        """o_t = decoder_output(h, z), h the decoder run on decoder_input(z): what the vocabulary
        projection reads, inputs [N, T'], z [N, D] -> [N, T', decoder_output_dim]."""
        return self.decoder_output(self.decoder.hidden(inputs, self.decoder_input(z)), z)

    def decoder_logits(self, inputs: Tensor, z: Tensor) -> Tensor:
        """Teacher-forced logits W_out decoder_output(h, z), h the decoder run on decoder_input(z):
        inputs [N, T'], z [N, D] -> [N, T', V]."""
        return self.decoder.out(self.decoder_features(inputs, z))

    def log_px_z(self, x: Tensor, z: Tensor, max_rows: int | None = None) -> Tensor:
        """log p(x|z): x [B, T], z [K, B, D] -> [K, B] (`sequence_log_prob`; the projection applied
        by `projected_nll`)."""
        return sequence_log_prob(self.decoder_features, x, z, max_rows, project=self.decoder.out)

    def loss(self, x: Tensor, kl_weight: float = 1.0) -> LossTerms:
        """LossTerms of a batch with one draw z ~ q(z|x) (from `noise`)."""
        q = self.encode(x)
        z = q.rsample(1, self.noise)[0]
        return self.loss_terms(q, z, x, kl_weight)

    def loss_terms(self, q: Posterior, z: Tensor, x: Tensor, kl_weight: float = 1.0) -> LossTerms:
        """loss = mean(rec) + w reg + aux for a batch x with posterior q and its draw z [B, D]."""
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
