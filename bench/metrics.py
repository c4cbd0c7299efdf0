"""Estimators for the benchmark's metrics (design.md §7), as pure functions on tensors.

Nothing here knows about models: the caller evaluates log p(x|z), log p(z), log q(z|x) or hands over a
`Posterior` / posterior parameters, and gets numbers back. All quantities are in nats per sentence.
Large N is handled by chunking over one axis with tensor operations (never a Python loop over
sentences), accumulating in log space with logsumexp so that nothing under- or overflows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from vae_collapse_bench.bench.posterior import Posterior

LOG_2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """log (1/n) sum_i exp(x_i) along `dim`, computed as logsumexp(x) - log n (n = x.shape[dim])."""
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


# --------------------------------------------------------------------------- likelihoods (§7)


def mixture_proposal_log_likelihoods(log_px_z: Tensor, log_prior: Tensor, log_post: Tensor
                                     ) -> tuple[Tensor, Tensor]:
    """priorLL and postLL per sentence by importance sampling with Q(z) = (p(z) + q(z|x)) / 2.

    Inputs are [K, B]: log p(x|z_k), log p(z_k), log q(z_k|x) at K samples, of which the caller drew
    K/2 from p(z) and K/2 from q(z|x) (the paper protocol uses 8 + 8). With
    log Q = logaddexp(log p, log q) - log 2:

        priorLL = log (1/K) sum_k p(x|z_k) p(z_k)   / Q(z_k)     (estimates log p(x) = log E_p p(x|z))
        postLL  = log (1/K) sum_k p(x|z_k) q(z_k|x) / Q(z_k)     (estimates log E_q p(x|z))

    Returns (priorLL [B], postLL [B]).

    Why stratified equal halves keep it unbiased: for f = p(x|z) p(z) (or p(x|z) q(z|x)),
    E[(1/K) sum_k f/Q] = (1/K) [(K/2) E_p f/Q + (K/2) E_q f/Q] = int f (p + q)/2 / Q dz = int f dz,
    because the sampling proportions (1/2, 1/2) are exactly the mixture weights of Q. So the average
    of the weights is unbiased for the likelihood (and has no more variance than drawing each z_k
    from Q itself, since the random choice of component is removed); its log, reported here, is a
    stochastic lower bound by Jensen, as every importance-sampled log-likelihood is. An odd K cannot
    be split into equal halves, so it is refused.
    """
    k = log_px_z.shape[0]
    if k % 2:
        raise ValueError(f"the mixture proposal needs K/2 prior and K/2 posterior samples; got K={k}")
    log_q_mix = torch.logaddexp(log_prior, log_post) - LOG_2
    prior_ll = log_mean_exp(log_px_z + log_prior - log_q_mix, dim=0)
    post_ll = log_mean_exp(log_px_z + log_post - log_q_mix, dim=0)
    return prior_ll, post_ll


def iw_nll(log_px_z: Tensor, log_prior: Tensor, log_post: Tensor) -> Tensor:
    """Importance-weighted NLL bound of He et al. (2019), per sentence [B], from [K, B] inputs:

        IW-NLL = -log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x).

    An upper bound on -log p(x) that tightens as K grows (Burda et al., 2016); K = 500 in the paper
    profile (design.md §7).
    """
    return -log_mean_exp(log_px_z + log_prior - log_post, dim=0)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """PPL = exp(total NLL / total predicted tokens) (design.md §7: `</s>` counted, `<s>` not).

    Never raises for a large NLL: a per-token NLL above ~709.78 nats overflows float64 and gives
    inf (the caller treats a non-finite metric as a failed run), and a nan NLL gives nan.
    """
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs a positive token count; got {total_tokens}")
    try:
        return math.exp(float(total_nll) / total_tokens)
    except OverflowError:
        return math.inf


# --------------------------------------------------------------------------- latent usage (§7)


def _mean_variance(means: Tensor) -> Tensor:
    """Unbiased sample variance of the posterior means over the N sentences, per dim [D]."""
    if means.shape[0] < 2:
        raise ValueError(f"the variance of posterior means needs at least 2 sentences; got {means.shape[0]}")
    return means.detach().to(torch.float64).var(dim=0, correction=1)


def active_units(means: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """AU (Burda et al., 2016; design.md §7): dims i with A_i = Var_n(E_q[z_i | x_n]) >= threshold
    (a dim whose variance equals the threshold counts).

    `means` is [N, D], the posterior means E_q[z|x_n] of the evaluated split (`Posterior.mean`).
    Burda et al. write Cov_x without fixing the estimator; we follow He et al. (2019)'s public code,
    which divides the sum of squared deviations by N - 1 (the unbiased sample variance).
    Returns (count, A [D], float64).

    vMF posteriors: this project applies Burda's definition as written, with the true mean
    E_q[z] = A_d(kappa) mu (`VonMisesFisher.mean`). The DG-VAE public code uses the unit mean
    direction mu instead, which multiplies every A_i by 1 / A_d(kappa)^2; the two can disagree
    completely: at d = 32, kappa = 13 (A_d = 0.357) with the directions spread evenly (the 64
    directions +-e_i: A_i = 2/63 on mu, 0.0040 on A_d mu) they give AU = 32 on mu and AU = 0 here.
    The paper calls AU inappropriate for vMF; `Posterior.au_comparable` is False for that family,
    so its AU is reported but never compared with the Gaussian methods' (nor with the papers').
    """
    var = _mean_variance(means)
    return int((var >= threshold).sum()), var


def top_variance_dims(means: Tensor, k: int = 2) -> Tensor:
    """Indices of the k dims with the largest Var_n(E_q[z|x_n]) (same estimator as `active_units`),
    in decreasing order of variance: the dims pictured in design.md §7's Figure 4."""
    return torch.topk(_mean_variance(means), k).indices


@torch.no_grad()
def mutual_information(posterior: Posterior, n_samples: int = 1, chunk_size: int = 1024,
                       generator: torch.Generator | None = None) -> float:
    """I_q(x; z) by Hoffman & Johnson (2016), with q_agg over all N posteriors given (design.md §7):

        I = E_n[-H(q(z|x_n))] - E_n E_{z ~ q(z|x_n)} log q_agg(z),   q_agg(z) = (1/N) sum_m q(z|x_m)
          = E_n E_{z ~ q(z|x_n)} [log q(z|x_n) - log q_agg(z)].

    Both terms are estimated from the same `n_samples` draws per posterior (the second form). The
    analytic entropy of He et al.'s code is unbiased too, but pairing it with a Monte-Carlo cross term
    leaves noise of order sqrt(D / (N n_samples)) nats exactly where collapse makes I ~ 0 (identical
    posteriors give exactly 0 here, and e.g. -0.3 nats there at N = 64, D = 8). Paired, every draw's
    term is at most log N, because q_agg(z) >= q(z|x_n)/N: the estimate never exceeds log N (report N).

    Each of the n_samples * N draws is scored against all N posteriors with
    `Posterior.log_prob_cross`, `chunk_size` draws at a time ([chunk, N] scores; families without a
    matrix-product form, and Gaussians with some logvar < -20, use a memory-bounded broadcast).
    Only `rsample`, `log_prob` and `log_prob_cross` are used, so any Posterior family works.
    """
    n = len(posterior)
    z = posterior.rsample(n_samples, generator=generator)  # [S, N, D]
    own = posterior.log_prob(z).double().mean()  # E_n E_z log q(z|x_n)
    z = z.reshape(-1, z.shape[-1])  # every draw against every posterior
    cross = torch.zeros((), dtype=torch.float64, device=z.device)
    for start in range(0, z.shape[0], chunk_size):
        part = z[start:start + chunk_size]
        # sum of exp straight away, 3.5x faster than torch.logsumexp in float64; rows whose sum
        # under- or overflows (or is nan) are scored again and summed in log space
        sums = posterior.log_prob_cross(part).exp_().sum(dim=1)  # [chunk], float64
        redo = ~((sums >= LINEAR_MIN_SUM) & torch.isfinite(sums))
        logs = sums.log_()
        if bool(redo.any()):
            logs[redo] = torch.logsumexp(posterior.log_prob_cross(part[redo]), dim=1)
        cross += logs.sum()
    mean_log_q_agg = cross / z.shape[0] - math.log(n)
    return float(own - mean_log_q_agg)


# --------------------------------------------------------------------------- holes: CU (§7)


def _log_normal(z: Tensor, loc: Tensor, std: Tensor) -> Tensor:
    """log N(z; loc, std^2), broadcasting."""
    return -0.5 * ((z - loc) / std) ** 2 - torch.log(std) - 0.5 * LOG_2PI


def _log_agg_1d(z: Tensor, loc: Tensor, std: Tensor, chunk_size: int) -> Tensor:
    """log q_agg(z_g) per dim for the 1-D aggregated posteriors (1/N) sum_n N(z_gi; loc_ni, std_ni^2).

    z is [G, D] (each dim its own points) or [G, 1] (shared points); returns [G, D]. Chunks over N,
    merged with logaddexp, so q_agg may underflow without harm. Work is laid out [D, G, chunk] with
    the reduced axis last and updated in place: about twice as fast on CPU as the naive broadcast,
    and small chunks (a few MB per step) stay in cache, which matters more than the loop count.
    """
    n = loc.shape[0]
    points = z.T[:, :, None]  # [D|1, G, 1]
    loc_t = loc.T.contiguous()[:, None, :]  # [D, 1, N]
    inv_std_t = std.reciprocal().T.contiguous()[:, None, :]
    const_t = (-torch.log(std) - 0.5 * LOG_2PI).T.contiguous()[:, None, :]
    acc = torch.full((loc.shape[1], z.shape[0]), -math.inf, dtype=z.dtype, device=z.device)
    for start in range(0, n, chunk_size):
        part = slice(start, start + chunk_size)
        u = points - loc_t[..., part]  # fresh [D, G, chunk], so the in-place steps below are safe
        u.mul_(inv_std_t[..., part]).square_().mul_(-0.5).add_(const_t[..., part])
        acc = torch.logaddexp(acc, torch.logsumexp(u, dim=-1))
    return acc.T - math.log(n)


# `_log_agg_grid` expands (z - loc)^2 / std^2 into z^2/std^2 - 2 z loc/std^2 + loc^2/std^2, whose float64
# rounding is about 1.1e-16 (z^2 + loc^2) / std^2 nats: dims where that scale exceeds 1e10 (error above
# ~1e-6 nats) take the exact `_log_agg_1d` instead.
EXPANSION_MAX_SCALE = 1e10
GRID_BLOCK_ELEMENTS = 2**20  # one [D, rows, N] float64 block: 8 MiB
# Every density is at most 1 / (sqrt(2 pi) std) < 4e4 on the expanded dims, so exp never overflows; a
# row whose sum of densities falls below this has lost precision to underflow and is summed in log space.
LINEAR_MIN_SUM = 1e-280


def _log_agg_grid(z: Tensor, loc: Tensor, std: Tensor, chunk_size: int) -> Tensor:
    """log q_agg(z_g) on points z [G] shared by every dim, [G, D]: `_log_agg_1d`'s value, faster.

    Per dim, log N(z; loc_n, std_n^2) = a_n z^2 + b_n z + c_n, so one batched product
    [z^2, z, 1] @ [a; b; c] gives a [D, rows, N] block of log-densities; their exponentials are
    summed directly (one pass instead of logsumexp's max, subtract, exp and sum), and the few rows
    whose sum underflows (q_agg far below every density's scale) are summed in log space. 2.5-3.5x
    faster than `_log_agg_1d` at N = 10,000, D = 32, 4,001 points on one CPU thread (5.5 s against
    12-20 s; exp in float64 is most of what is left). Dims whose expansion would round too coarsely
    (EXPANSION_MAX_SCALE), or with a zero or non-finite std or loc, use `_log_agg_1d` (chunks of
    `chunk_size` posteriors).
    """
    n, d = loc.shape
    scale = ((z.abs().max() ** 2 + loc * loc) / (std * std)).amax(0)
    fine = torch.isfinite(scale) & (scale <= EXPANSION_MAX_SCALE) & (std > 0).all(0)
    out = torch.empty(z.shape[0], d, dtype=z.dtype, device=z.device)
    if not bool(fine.all()):
        rest = ~fine
        out[:, rest] = _log_agg_1d(z[:, None], loc[:, rest], std[:, rest], chunk_size)
    if bool(fine.any()):
        loc_f, std_f = loc[:, fine], std[:, fine]
        prec = std_f.reciprocal().square()
        coef = torch.stack([-0.5 * prec, loc_f * prec, -0.5 * loc_f * loc_f * prec - torch.log(std_f) - 0.5 * LOG_2PI])
        coef = coef.permute(2, 0, 1).contiguous()  # [D', 3, N]
        feats = torch.stack([z * z, z, torch.ones_like(z)], -1)  # [G, 3]
        rows = max(1, GRID_BLOCK_ELEMENTS // (n * coef.shape[0]))
        part = torch.empty(z.shape[0], coef.shape[0], dtype=z.dtype, device=z.device)
        for start in range(0, z.shape[0], rows):
            points = feats[start:start + rows]
            sums = torch.matmul(points, coef).exp_().sum(-1)  # [D', rows]: exp of the log-densities
            low = sums < LINEAR_MIN_SUM
            logs = sums.log_()
            if bool(low.any()):  # the same block again, summed in log space
                logs = torch.where(low, torch.logsumexp(torch.matmul(points, coef), -1), logs)
            part[start:start + rows] = logs.T
        out[:, fine] = part - math.log(n)
    return out


def _count_consistent(kl: Tensor, threshold: float) -> int:
    # A nan (degenerate input such as std = 0) or inf KL compares False anyway; the explicit
    # isfinite keeps that guarantee visible rather than resting on IEEE comparison rules.
    return int((torch.isfinite(kl) & (kl < threshold)).sum())


@torch.no_grad()
def consistent_units(loc: Tensor, std: Tensor, threshold: float = 0.03, grid_points: int = 4001,
                     grid_limit: float = 10.0, chunk_size: int = 16) -> tuple[int, Tensor]:
    """CU, the DG-VAE paper's hole measure (design.md §7): dims i with KL(p(z_i) || q_agg(z_i)) < threshold,

        KL_i = int N(z; 0, 1) [log N(z; 0, 1) - log q_agg,i(z)] dz,
        q_agg,i(z) = (1/N) sum_n N(z; loc_ni, std_ni^2),

    by deterministic quadrature: the trapezoid rule on `grid_points` uniform points of
    [-grid_limit, grid_limit]. The integrand is smooth and decays like a Gaussian, so the trapezoid
    rule converges far faster than its nominal O(h^2) (endpoint corrections vanish); mass of p outside
    +-10 is ~1e-23. log q_agg is accumulated over N in chunks of `chunk_size` with logsumexp in
    float64, so a q_agg that underflows where p has mass gives a large finite (or +inf) KL, never a
    spurious small one; grid points where p itself underflows to 0 contribute 0 (0 * log 0 := 0).
    A non-finite KL (inf, or nan from degenerate input such as std = 0) never counts as consistent.

    loc, std: [N, D]. Returns (count, KL [D], float64). Cost O(grid_points * N * D), computed by
    `_log_agg_grid` in 8 MiB blocks (dims it cannot expand precisely: `_log_agg_1d`, whose steps hold
    grid_points * chunk_size * D doubles, 16 MB at the defaults and D = 32).
    """
    loc, std = loc.to(torch.float64), std.to(torch.float64)
    z = torch.linspace(-grid_limit, grid_limit, grid_points, dtype=torch.float64, device=loc.device)
    h = 2.0 * grid_limit / (grid_points - 1)
    w = torch.full_like(z, h)
    w[0] = w[-1] = 0.5 * h
    log_p = -0.5 * (z * z + LOG_2PI)
    p_w = (w * torch.exp(log_p))[:, None]  # [G, 1]
    log_q = _log_agg_grid(z, loc, std, chunk_size)  # [G, D]
    terms = torch.where(p_w > 0, p_w * (log_p[:, None] - log_q), torch.zeros_like(log_q))
    kl = terms.sum(dim=0)
    return _count_consistent(kl, threshold), kl


@torch.no_grad()
def consistent_units_mc(loc: Tensor, std: Tensor, threshold: float = 0.03, n_samples: int = 128000,
                        generator: torch.Generator | None = None, chunk_size: int = 32
                        ) -> tuple[int, Tensor]:
    """CU as the DG-VAE public code computes it: the same KL_i as `consistent_units`, estimated by
    Monte Carlo, KL_i ~= (1/S) sum_s [log N(z_si; 0, 1) - log q_agg,i(z_si)], z_si ~ N(0, 1) iid
    (S = n_samples, 128,000 in the public code; each dim its own draws).

    Kept as the reference that the quadrature is checked against (design.md §7). Chunks over the S
    draws ([chunk, N, D] per step); float64 throughout. Returns (count, KL [D]).
    """
    loc, std = loc.to(torch.float64), std.to(torch.float64)
    z = torch.randn(n_samples, loc.shape[1], generator=generator, dtype=torch.float64, device=loc.device)
    total = torch.zeros(loc.shape[1], dtype=torch.float64, device=loc.device)
    for start in range(0, n_samples, chunk_size):
        zc = z[start:start + chunk_size]
        log_q = _log_agg_1d(zc, loc, std, chunk_size=loc.shape[0])  # [chunk, D]
        total += (-0.5 * (zc * zc + LOG_2PI) - log_q).sum(dim=0)
    kl = total / n_samples
    return _count_consistent(kl, threshold), kl


# --------------------------------------------------------------------------- Figure 4 pictures (§7)


@torch.no_grad()
def latent_density_grid(loc2: Tensor, std2: Tensor, limit: float = 5.0, points: int = 101,
                        chunk_size: int = 4096) -> Tensor:
    """Aggregated posterior density of two chosen dims on a uniform grid of [-limit, limit]^2:

        out[i, j] = (1/N) sum_n N(g_i; loc_n0, std_n0^2) N(g_j; loc_n1, std_n1^2),
        g = linspace(-limit, limit, points),

    so rows index the first dim ("ij" indexing; transpose for imshow, whose rows are y). Because each
    posterior factorises over the two dims the double sum is a matrix product A B^T / N with
    A[i, n], B[j, n] the 1-D densities; chunks of `chunk_size` posteriors bound A and B to
    [points, chunk]. Densities (not logs) are wanted here, so underflow to 0 far from every posterior
    is harmless. loc2, std2: [N, 2] (e.g. the columns picked by `top_variance_dims`). Returns float64.
    """
    loc2, std2 = loc2.to(torch.float64), std2.to(torch.float64)
    g = torch.linspace(-limit, limit, points, dtype=torch.float64, device=loc2.device)
    out = torch.zeros(points, points, dtype=torch.float64, device=loc2.device)
    for start in range(0, loc2.shape[0], chunk_size):
        dens = torch.exp(_log_normal(g[:, None, None], loc2[None, start:start + chunk_size],
                                     std2[None, start:start + chunk_size]))  # [points, chunk, 2]
        out += dens[:, :, 0] @ dens[:, :, 1].T
    return out / loc2.shape[0]
