"""DG-VAE with a memory bank: the density-gap KL (the DG-VAE paper's Eq. 11, design.md §5) whose
aggregated posterior also holds the posteriors of the last Q training datapoints.

The paper bounds DG-VAE's mutual information by log |b|, with |b| capped by the batch size, and names
a memory bank, as in contrastive learning, as the way past that cap. Here the aggregated posterior of
a batch of B datapoints is the mixture over the batch's own posteriors plus a FIFO bank of the
posterior parameters (mean, sigma) of the n <= Q datapoints trained on before, detached:

    q_bank(z) = 1/(B + n) [ sum_{k in batch} N(z; mu_k, sigma_k^2) + sum_{k in bank} N(z; mu_k, sigma_k^2) ]

and, per dimension i, with S = B M stratified samples from the batch's posteriors only (M per
datapoint, z_s = mu_j + sigma_j eps_s), the regularizer is Eq. 11 with q_bank in place of q_b:

    KL_i = (1/S) sum_s [ log q_bank,i(z_{s,i}) - log N(z_{s,i}; 0, 1) ],   DG = sum_i KL_i.

Gradients reach the batch's posteriors (as samples and as components), never the bank. With Q = 0,
or while the bank is empty (the first step), the term is dg-vae's `density_gap_kl` with the whole
batch as one group, the same draws and the same numbers (agg = default).

What the term estimates. The samples come from the batch's mixture q_b, not from q_bank, so its
expectation per dimension is not KL(q_bank || p) but

    E_{z ~ q_b}[log q_bank(z) - log p(z)] = KL(q_b || p) - KL(q_b || q_bank),

which can be negative: it rewards a batch whose posteriors lie where the (stale, detached) bank has
little mass, by at most log((B + n) / B) per dimension (q_bank holds q_b with weight B / (B + n)).
The history shows it (`train_dg` below 0). Sampling the bank's components too would estimate
KL(q_bank || p) itself; the issue that asked for this method specified batch-only samples.

The bank (`PosteriorBank`, buffers of Q x 2 x D floats plus a fill counter) is filled by training
steps only: after each step the batch's (mean, log sigma) enter it, detached, and the oldest entries
leave it. It is part of the model's state_dict, so last.pt holds it and a resumed run goes on with
the same bank (and a reload of best.pt on an lr decay restores the bank of that epoch, which matches
its weights). Evaluation sees an empty bank: in eval mode the regularizer neither reads nor writes it,
so the validation objective (which selects the checkpoint) and every metric are functions of the
weights alone, the validation objective being dg-vae's (batch-only) objective.

Computation: dg-vae's log-space expression relative to each sample's own component, extended to the
bank's components: for a sample of datapoint j, z = mu_j + sigma_j eps, and a component k of batch or
bank, log N(z; mu_k, sigma_k^2) + log sqrt(2 pi) = [1, eps, eps^2] . [-d^2/2 - log sigma_k, -d r, -r^2/2]
with d = (mu_j - mu_k) / sigma_k and r = sigma_j / sigma_k; one batched matrix product gives the
table of every sample against every component (`_LogMixtureWithBank`). The sample's own component
keeps the sum from underflowing. Cost O(B M (B + Q) D) time and one table of B M (B + Q) D floats for
the backward pass: 0.54 GB at B = M = D = 32, Q = 4096, so the bank's cost grows linearly with Q.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from vae_collapse_bench.bench.config import Backbone
from vae_collapse_bench.bench.model import GaussianMethod, LossTerms, Reg, StepContext, descend
from vae_collapse_bench.bench.posterior import Posterior
from vae_collapse_bench.bench.registry import check_count, register
from vae_collapse_bench.methods.dg_vae import density_gap_kl

MAX_BANK = 2**20


class PosteriorBank(nn.Module):
    """A FIFO memory of the posterior parameters (mean, log sigma) of the last `size` datapoints.

    Buffers: `entries` [size, 2, D] (row r: mean, log sigma; the newest rows last) and `filled`, the
    number of rows in use (the last `filled` rows). Training steps update it, like BatchNorm's running
    statistics (hence `track_running_stats`)."""

    track_running_stats = True

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("entries", torch.zeros(size, 2, dim))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.entries.shape[0]

    def __len__(self) -> int:
        return int(self.filled)

    def contents(self) -> tuple[Tensor, Tensor]:
        """(mean, log sigma), each [n, D], oldest first."""
        rows = self.entries[self.size - len(self):]
        return rows[:, 0], rows[:, 1]

    @torch.no_grad()
    def push(self, loc: Tensor, log_sd: Tensor) -> None:
        """Append the rows of loc, log_sd [B, D] (detached); the oldest rows beyond `size` leave."""
        if self.size == 0:
            return
        new = torch.stack([loc, log_sd], 1).to(self.entries.dtype)[-self.size:]
        self.entries.copy_(torch.cat([self.entries[len(new):], new]))
        self.filled.fill_(min(len(self) + len(new), self.size))


class _LogMixtureWithBank(torch.autograd.Function):
    """log sum_k N(z_jm; mu_k, sigma_k^2) + log sqrt(2 pi) over the components k of batch and bank,
    for every sample z_jm = mu_j + sigma_j eps_jm of the batch.

    Inputs per row n (a dimension): the batch's mu, log_sd [N, g], the bank's bank_mu, bank_log_sd
    [N, b] and the eps-features A = [1, eps, eps^2] as [N g, M, 3]. Output [N g, M]. The coefficient
    tensor C [N, g(j), 3, g + b(k)] (module docstring) times A is the [N g, M, g + b] table,
    exponentiated in place and summed over k; it is kept for the backward pass, which is one more
    batched matrix product and the chain rule on [N, g, g + b] tensors (as dg-vae's `_LogMixture`,
    the components split into the batch's, whose gradients add to the samples', and the bank's).
    Every entry is at most -log sigma_k < 44 while sigma_k^2 is a normal float32, and the sample's own
    component scores -eps^2/2 - log sigma_j, so the sum neither overflows nor underflows.
    """

    @staticmethod
    def forward(ctx, mu: Tensor, log_sd: Tensor, bank_mu: Tensor, bank_log_sd: Tensor, a: Tensor) -> Tensor:
        rows, size = mu.shape
        comp_mu, comp_log_sd = torch.cat([mu, bank_mu], 1), torch.cat([log_sd, bank_log_sd], 1)
        inv = torch.exp(-comp_log_sd).unsqueeze(1)  # 1 / sigma_k, [N, 1, K]
        d = (mu.unsqueeze(2) - comp_mu.unsqueeze(1)) * inv  # (mu_j - mu_k) / sigma_k
        r = torch.exp(log_sd.unsqueeze(2) - comp_log_sd.unsqueeze(1))  # sigma_j / sigma_k
        coef = torch.stack([-0.5 * d * d - comp_log_sd.unsqueeze(1), -d * r, -0.5 * r * r], dim=2)
        table = torch.bmm(a, coef.view(rows * size, 3, -1)).exp_()
        total = table.sum(-1)
        ctx.save_for_backward(a, table, total, inv, d, r)
        return total.log()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        a, table, total, inv, d, r = ctx.saved_tensors
        rows, size, components = d.shape
        scaled = a * (grad / total).unsqueeze(-1)  # softmax over k = table / total
        g0, g1, g2 = torch.bmm(scaled.transpose(1, 2), table).view(rows, size, 3, components).unbind(2)
        grad_d = -(g0 * d + g1 * r)
        grad_r = -(g1 * d + g2 * r)
        grad_d_inv, grad_r_r = grad_d * inv, grad_r * r
        # j (dim 1) is the sample's datapoint, k (dim 2) the component: d depends on mu_j (+1/sigma_k),
        # mu_k (-1/sigma_k), log sigma_k (-d); r on log sigma_j (+r), log sigma_k (-r); the first
        # coefficient on log sigma_k (-1)
        comp_mu = -grad_d_inv.sum(1)
        comp_log_sd = -grad_r_r.sum(1) - (grad_d * d).sum(1) - g0.sum(1)
        grad_mu = grad_d_inv.sum(2) + comp_mu[:, :size]
        grad_log_sd = grad_r_r.sum(2) + comp_log_sd[:, :size]
        bank_mu = comp_mu[:, size:] if ctx.needs_input_grad[2] else None
        bank_log_sd = comp_log_sd[:, size:] if ctx.needs_input_grad[3] else None
        return grad_mu, grad_log_sd, bank_mu, bank_log_sd, None


def bank_density_gap_kl(loc: Tensor, std: Tensor, bank_loc: Tensor, bank_log_sd: Tensor, eps: Tensor) -> Tensor:
    """DG of a batch against the mixture of its posteriors and the bank's (module docstring), a scalar.

    loc, std [B, D]: the batch's Gaussian posteriors; bank_loc, bank_log_sd [n, D]: the bank's means
    and log sigmas (constants); eps [B, M, D]: the standard-normal draws, M per datapoint."""
    batch, samples, dim = eps.shape
    mu, log_sd = loc.t(), std.log().t()  # [D, B]: one row per dimension
    noise = eps.permute(2, 0, 1).reshape(dim * batch, samples)  # row (i, j), column m
    features = torch.stack([torch.ones_like(noise), noise, noise * noise], dim=-1)
    log_mix = _LogMixtureWithBank.apply(mu, log_sd, bank_loc.t(), bank_log_sd.t(), features).view(dim, -1)
    z = (mu.unsqueeze(-1) + log_sd.exp().unsqueeze(-1) * noise.view(dim, batch, samples)).reshape(dim, -1)
    # KL_i = mean_s [log (1/(B + n)) sum_k N(z_s; mu_k, sigma_k^2) - log N(z_s; 0, 1)]; log sqrt(2 pi) cancels
    gap = (log_mix + 0.5 * z * z).mean(-1) - math.log(batch + bank_loc.shape[0])
    return gap.sum()


@dataclass(frozen=True)
class BankParams:
    """bank: Q, the datapoints whose posteriors the bank holds, an integer in [0, 2^20] (default 1024;
    0 is dg-vae with agg = default; the cap is far beyond any memory: the term's table holds
    B M (B + Q) D floats). m: samples per datapoint, an integer >= 1 (default 32, the paper's M)."""

    bank: int = 1024
    m: int = 32

    def __post_init__(self):
        if isinstance(self.bank, bool) or not isinstance(self.bank, int) or not 0 <= self.bank <= MAX_BANK:
            raise ValueError(f"bank must be an integer in [0, {MAX_BANK}], got {self.bank!r}")
        check_count("m", self.m)


@register("dg-vae-bank", grid={"bank": [256, 1024, 4096]},
          search=lambda trial: {"bank": trial.suggest_int("bank", 32, 8192, log=True)})
class DGVAEBank(GaussianMethod):
    """Density-gap KL (Eq. 11) against the batch plus a FIFO bank of the last Q posteriors."""

    Params = BankParams

    def build_extras(self, vocab_size: int, backbone: Backbone) -> None:
        self.bank = PosteriorBank(self.params.bank, backbone.latent_dim)

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        loc, std = q.gaussian_marginals()
        # drawn exactly as density_gap_kl draws them, so an empty bank gives dg-vae's numbers
        eps = torch.randn(loc.shape[0], self.params.m, loc.shape[1], generator=self.noise,
                          device=loc.device, dtype=loc.dtype)
        used = len(self.bank) if self.training else 0
        if used:
            dg = bank_density_gap_kl(loc, std, *self.bank.contents(), eps)
        else:
            dg = density_gap_kl(loc, std, "default", eps=eps)
        return Reg(dg, {"dg": dg.detach(), "bank_fill": float(used)})

    def training_step(self, x: Tensor, ctx: StepContext) -> LossTerms:
        """The default step (dg-vae's), then the batch's posteriors enter the bank."""
        q = self.encode(x)
        terms = self.loss_terms(q, q.rsample(1, self.noise)[0], x, ctx.kl_weight)
        descend(terms.loss, ctx.optimizers, ctx.clip_grad)
        loc, std = q.gaussian_marginals()
        self.bank.push(loc.detach(), std.log().detach())
        return terms
