"""Posterior families q(z|x) and their priors. Metrics touch the latent space only through these.

Shapes: a Posterior holds B distributions over R^D (params [B, D]). `rsample(n)` gives [n, B, D].
`log_prob(z)` broadcasts z [..., B, D] against the B distributions and returns [..., B]; to score
samples against *every* posterior (aggregated posterior, MI), pass z of shape [S, 1, D] -> [S, B].

Over the ~400 lines of the other modules on purpose: the one interface every metric relies on and its
two implementations, each beside the derivations that make it numerically safe (the Gaussian density
from the log-variance, the vMF normaliser and Wood's sampler), so a formula and its code are read
together. With a third family, each family gets a module of its own (the von Mises-Fisher one is
everything from `log_sphere_area` on).
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)
# Elements of one [rows, B, D] block of the exact broadcast in `Posterior.log_prob_cross` (128 MiB of
# float64): large enough for a fast pass, small enough for any device.
CROSS_CHUNK_ELEMENTS = 2**24


class Prior(ABC):
    @abstractmethod
    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        """Draws of shape [*shape, D]."""

    @abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z), summed over D: [..., D] -> [...]."""

    def log_prob_dims(self, z: Tensor) -> Tensor:
        """Per-dimension marginal log densities [..., D] (families with a factorised prior only)."""
        raise NotImplementedError(f"{type(self).__name__} has no factorised marginals")


class StandardNormal(Prior):
    """p(z) = N(0, I_D)."""

    def __init__(self, dim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.dim, self.device, self.dtype = dim, torch.device(device), dtype

    def sample(self, shape, generator=None):
        return torch.randn(*shape, self.dim, generator=generator, device=self.device, dtype=self.dtype)

    def log_prob_dims(self, z):
        return -0.5 * (z * z + LOG_2PI)

    def log_prob(self, z):
        return self.log_prob_dims(z).sum(-1)


class Posterior(ABC):
    """A batch of B posteriors q(z|x_b). Subclasses store tensors of leading dim B.

    `au_comparable`: whether the family's AU can be set against the papers' AU columns (and their
    bold rule). False for vMF, for which the DG-VAE paper calls AU inappropriate: its E_q[z] has
    the fixed length A_d(kappa) and its variance across sentences measures the spread of the mean
    directions scaled by A_d(kappa)^2, not the use of a coordinate (see `metrics.active_units`).
    """

    au_comparable: ClassVar[bool] = True

    @property
    @abstractmethod
    def mean(self) -> Tensor:
        """E_q[z], [B, D]."""

    @property
    def mode(self) -> Tensor:
        """argmax_z q(z|x), [B, D]: the posterior's centre mu that interpolation (DG-VAE Eq. 14)
        moves between. The mean unless a family says otherwise (vMF: the unit direction)."""
        return self.mean

    @property
    @abstractmethod
    def prior(self) -> Prior: ...

    @abstractmethod
    def rsample(self, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draws [n, B, D]."""

    @abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x_b), z [..., B, D] (or broadcastable) -> [..., B]."""

    def log_prob_cross(self, z: Tensor) -> Tensor:
        """log q(z_s|x_b) of every draw against every posterior: z [S, D] -> [S, B], in float64.

        The aggregated posterior (MI, DG) needs all S x B pairs. This generic form broadcasts
        `log_prob` over blocks of at most CROSS_CHUNK_ELEMENTS entries of [S, B, D] (memory-bounded;
        exact wherever `log_prob` is); families override it with a matrix product.
        """
        return self._broadcast_cross(z)

    def _broadcast_cross(self, z: Tensor) -> Tensor:
        """`log_prob` of every (draw, posterior) pair by broadcasting, blocked over S and B so that
        no block holds more than CROSS_CHUNK_ELEMENTS elements of [S, B, D]. Returns float64 [S, B]."""
        s, d, b = z.shape[0], z.shape[-1], len(self)
        cols = min(b, max(1, CROSS_CHUNK_ELEMENTS // d))
        rows = max(1, CROSS_CHUNK_ELEMENTS // (cols * d))
        out = torch.empty(s, b, dtype=torch.float64, device=z.device)
        for c0 in range(0, b, cols):
            part = self if cols == b else self[c0:c0 + cols]
            for r0 in range(0, s, rows):
                out[r0:r0 + rows, c0:c0 + cols] = part.log_prob(z[r0:r0 + rows, None]).double()
        return out

    @abstractmethod
    def kl_to_prior(self) -> Tensor:
        """Analytic KL(q(z|x_b) || p(z)) per datapoint, [B]."""

    @abstractmethod
    def __getitem__(self, index) -> Posterior:
        """The posteriors of a subset of the batch (slice, index tensor or mask)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @classmethod
    @abstractmethod
    def cat(cls, parts: list[Posterior]) -> Posterior:
        """Concatenate along the batch dimension."""

    def detach(self) -> Posterior:
        return self.map(lambda t: t.detach())

    @abstractmethod
    def map(self, fn) -> Posterior:
        """Apply fn to every parameter tensor (detach, .to(device), ...)."""

    def log_prob_dims(self, z: Tensor) -> Tensor:
        """Per-dimension marginal log densities [..., B, D] (factorised families only)."""
        raise NotImplementedError(f"{type(self).__name__} has no factorised marginals")

    def gaussian_marginals(self) -> tuple[Tensor, Tensor] | None:
        """(loc, std) [B, D] of Gaussian per-dimension marginals, or None. CU needs them (§7)."""
        return None


def standardized_square(diff: Tensor, logvar: Tensor) -> Tensor:
    """diff^2 / exp(logvar), elementwise, finite wherever the true value is, with finite gradients.

    The direct product diff^2 * exp(-logvar) breaks down once exp(-logvar) overflows (logvar below
    about -88 in float32, -709 in float64; posteriors of WAE, AAE or beta = 0 get there): a draw that
    rounds onto its mean (diff == 0, common when the std underflows) gives 0 * inf = nan, and a
    whole run ends with nan metrics. Below LIM = -log(max float)/2 (-44 in float32, -354 in float64)
    this works from logvar instead and never forms exp(-logvar):

        diff^2 / exp(logvar) = exp(2 log|diff| - logvar),   with an exact hit (diff == 0) scoring 0.

    Above LIM the product is kept: exp(-logvar) <= sqrt(max float) there leaves room for diff^2, and
    it is more precise (a few ulp, against ~eps |logvar| relative for the log form). Every branch that
    torch.where discards is also made finite *inside* (the double-where trick: exponent 0 for the
    discarded entries of the log form, logvar clamped to LIM in the product), because where passes a
    zero gradient to the discarded branch and 0 * inf = nan would otherwise reach the gradients of
    diff and logvar. Where the true value overflows (diff far from a tiny-variance mean) the result is
    +inf and the log-density -inf, as it should be. When no logvar is below LIM (one check on logvar)
    only the product is formed.
    """
    lim = -0.5 * math.log(torch.finfo(logvar.dtype).max)
    tiny = logvar < lim
    if not bool(tiny.any()):  # the common case (one check on the [B, D] logvar): the product alone
        return diff * diff * torch.exp(-logvar)
    direct = diff * diff * torch.exp(-logvar.clamp_min(lim))
    use_log = tiny & (diff != 0)
    safe_abs = torch.where(use_log, diff.abs(), torch.ones_like(diff))
    log_form = torch.exp(torch.where(use_log, 2.0 * torch.log(safe_abs) - logvar, torch.zeros_like(diff)))
    return torch.where(tiny, torch.where(use_log, log_form, torch.zeros_like(log_form)), direct)


class DiagGaussian(Posterior):
    """q(z|x) = N(mu, diag(sigma^2)) with p(z) = N(0, I).

    KL = 1/2 sum_i (mu_i^2 + sigma_i^2 - log sigma_i^2 - 1).
    Log-densities work from logvar (`standardized_square`), so sigma may underflow to 0.
    """

    # log_prob_cross's expanded matrix product cancels terms of size z^2 exp(-logvar) in float64, so
    # below this logvar it falls back to the exact broadcast. Measured worst error of the expansion on
    # the pairs that dominate the aggregated posterior (a draw against its own posterior; loc ~ N(0, 1),
    # logvar uniform in [min, 2]): 3e-12 nats at min -10, 2e-7 at -20, 1e-5 at -25, 9e-3 at -30,
    # 1e2 at -40. Hence -20, not -30.
    CROSS_EXPANSION_MIN_LOGVAR: ClassVar[float] = -20.0

    def __init__(self, loc: Tensor, logvar: Tensor):
        self.loc, self.logvar = loc, logvar

    @property
    def mean(self):
        return self.loc

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def prior(self):
        return StandardNormal(self.loc.shape[-1], self.loc.device, self.loc.dtype)

    def rsample(self, n=1, generator=None):
        eps = torch.randn(n, *self.loc.shape, generator=generator, device=self.loc.device,
                          dtype=self.loc.dtype)
        return self.loc + self.std * eps

    def log_prob_dims(self, z):
        return -0.5 * (standardized_square(z - self.loc, self.logvar) + self.logvar + LOG_2PI)

    def log_prob(self, z):
        return self.log_prob_dims(z).sum(-1)

    def log_prob_cross(self, z):
        """-1/2 sum_i (z_i - mu_i)^2 / s_i^2 + const, expanded into two matrix products in float64.

        The expansion z^2/s^2 - 2 z mu/s^2 + mu^2/s^2 cancels terms of size z^2 exp(-logvar), so
        when some logvar < CROSS_EXPANSION_MIN_LOGVAR this returns the exact broadcast of the stable
        per-pair `log_prob` instead (in float64, blocked to CROSS_CHUNK_ELEMENTS elements per pass).
        """
        z, loc, logvar = z.double(), self.loc.double(), self.logvar.double()
        if logvar.numel() and float(logvar.min()) < self.CROSS_EXPANSION_MIN_LOGVAR:
            return DiagGaussian(loc, logvar)._broadcast_cross(z)
        # one product [z^2, z, 1] @ [-prec/2, mu prec, c]^T writes the [S, B] result once: 2.6x faster
        # than three products and their sums over [S, B] (MI scores N x N pairs this way)
        prec = torch.exp(-logvar)
        const = -0.5 * ((loc * loc * prec).sum(-1) + logvar.sum(-1) + loc.shape[-1] * LOG_2PI)
        weights = torch.cat([-0.5 * prec, loc * prec, const[:, None]], -1)
        return torch.cat([z * z, z, torch.ones_like(z[:, :1])], -1) @ weights.T

    def gaussian_marginals(self):
        return self.loc, self.std

    def kl_to_prior_dims(self) -> Tensor:
        """Per-dimension KL [B, D]."""
        return 0.5 * (self.loc**2 + self.logvar.exp() - self.logvar - 1)

    def kl_to_prior(self):
        return self.kl_to_prior_dims().sum(-1)

    def __getitem__(self, index):
        return DiagGaussian(self.loc[index], self.logvar[index])

    def __len__(self):
        return self.loc.shape[0]

    @classmethod
    def cat(cls, parts):
        return cls(torch.cat([p.loc for p in parts]), torch.cat([p.logvar for p in parts]))

    def map(self, fn):
        return DiagGaussian(fn(self.loc), fn(self.logvar))


# --------------------------------------------------------------------------- von Mises-Fisher family


def log_sphere_area(d: int) -> float:
    """log |S^{d-1}| = log 2 + (d/2) log pi - lgamma(d/2): the surface area of the unit sphere in R^d."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


@functools.lru_cache(maxsize=256)
def vmf_constants(d: int, kappa: float) -> tuple[float, float]:
    """(log C_d(kappa), A_d(kappa)) of the vMF density C_d(kappa) exp(kappa mu.z) on S^{d-1}.

        log C_d(kappa) = (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)
        A_d(kappa)     = I_{d/2}(kappa) / I_{d/2-1}(kappa)             (= E[mu.z])

    computed stably with the exponentially scaled Bessel function ive(v, k) = I_v(k) e^{-k}:
    log I_v(k) = log ive(v, k) + k, and the ratio A_d is a ratio of ive values (the e^{-k} cancels).
    kappa is a fixed Python float, so this is evaluated once (and cached) in float64 by scipy.
    """
    from scipy.special import ive  # lazy: only vMF users pay for the import

    v = 0.5 * d - 1.0
    ive_v, ive_v1 = float(ive(v, kappa)), float(ive(v + 1.0, kappa))
    if not (ive_v > 0.0 and math.isfinite(ive_v) and math.isfinite(ive_v1)):
        raise ValueError(f"cannot evaluate the vMF normaliser for d={d}, kappa={kappa}")
    log_c = v * math.log(kappa) - 0.5 * d * LOG_2PI - (math.log(ive_v) + kappa)
    return log_c, ive_v1 / ive_v


class UniformSphere(Prior):
    """p(z) = Uniform(S^{d-1}) on the unit vectors of R^d: log p(z) = -log |S^{d-1}|
    = -(log 2 + (d/2) log pi - lgamma(d/2)). Draws are normalised standard Gaussians.

    Not factorised over dimensions, so `log_prob_dims` raises NotImplementedError. `log_prob` does not
    check that z lies on the sphere: the density is constant there.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        if dim < 2:
            raise ValueError(f"the sphere S^(d-1) needs d >= 2; got d={dim}")
        self.dim, self.device, self.dtype = dim, torch.device(device), dtype
        self.log_density = -log_sphere_area(dim)

    def sample(self, shape, generator=None):
        g = torch.randn(*shape, self.dim, generator=generator, device=self.device, dtype=self.dtype)
        return g / g.norm(dim=-1, keepdim=True)

    def log_prob(self, z):
        return torch.full(z.shape[:-1], self.log_density, device=z.device, dtype=z.dtype)


class VonMisesFisher(Posterior):
    """q(z|x) = vMF(mu, kappa) on S^{d-1}, density C_d(kappa) exp(kappa mu.z), with a fixed concentration
    kappa shared by the batch (Xu & Durrett 2018) and the prior p(z) = Uniform(S^{d-1}).

    `loc` [B, d] holds the unit mean directions mu (the caller normalises; nothing here does), `kappa`
    is a positive Python float. With log C_d and A_d from `vmf_constants`:

        log q(z)  = log C_d(kappa) + kappa mu.z
        E_q[z]    = A_d(kappa) mu,             A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa)
        KL(q||p)  = E_q[log q(z) - log p(z)] = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}|
                    (the same for every datapoint)

    (d = 32: KL = 2.17, 5.76, 12.25, 20.76, 30.37 nats at kappa = 13, 25, 50, 100, 200.)

    `rsample` draws w = mu.z by Wood's (1994) rejection sampler, v uniform on the sphere orthogonal to
    e1, forms z' = [w, sqrt(1 - w^2) v] (a draw from vMF(e1, kappa)), and applies the Householder
    reflection that maps e1 to mu. w does not depend on mu, so z is reparameterised through mu only.
    There are no per-dimension Gaussian marginals: `gaussian_marginals()` is None and CU is undefined.
    AU is computed (on `mean`) but `au_comparable` is False: the DG-VAE paper calls AU inappropriate
    for vMF posteriors, so the report must not set it against Gaussian methods' AU.
    """

    au_comparable: ClassVar[bool] = False

    def __init__(self, loc: Tensor, kappa: float):
        kappa = float(kappa)
        if not (math.isfinite(kappa) and kappa > 0):
            raise ValueError(f"kappa must be a finite number > 0; got {kappa}")
        if loc.shape[-1] < 2:
            raise ValueError(f"the sphere S^(d-1) needs d >= 2; got d={loc.shape[-1]}")
        self.loc, self.kappa = loc, kappa
        self.log_c, self.mean_resultant = vmf_constants(loc.shape[-1], kappa)

    @property
    def dim(self) -> int:
        return self.loc.shape[-1]

    @property
    def mean(self):
        """E_q[z] = A_d(kappa) mu, [B, d]: the true mean, which lies inside the ball (|E z| = A_d < 1).

        This is what `metrics.active_units` sees, i.e. Burda et al.'s definition applied as written.
        The DG-VAE public code takes the unit direction mu instead; the two differ by the factor
        A_d(kappa)^2 in every variance: at d = 32, kappa = 13 (A_d = 0.357) with mean directions spread
        evenly over the sphere (per-coordinate variance about 1/32), AU is 32 on mu and 0 on A_d mu.
        """
        return self.mean_resultant * self.loc

    @property
    def mode(self):
        """The unit mean direction mu: where the density is highest and the decoder's codes lie (on
        the sphere); `mean` = A_d(kappa) mu lies inside the ball."""
        return self.loc

    @property
    def prior(self):
        return UniformSphere(self.dim, self.loc.device, self.loc.dtype)

    def sample_w(self, count: int, generator: torch.Generator | None = None) -> Tensor:
        """`count` draws of w = mu.z, density prop. to exp(kappa w) (1 - w^2)^((d-3)/2) on [-1, 1], float64.

        Wood (1994), with m = d:  b = (m-1) / (2 kappa + sqrt(4 kappa^2 + (m-1)^2)),  x0 = (1-b)/(1+b),
        c = kappa x0 + (m-1) log(1 - x0^2); propose Z ~ Beta((m-1)/2, (m-1)/2), U ~ U(0, 1),
        W = (1 - (1+b) Z) / (1 - (1-b) Z); accept if kappa W + (m-1) log(1 - x0 W) - c >= log U.
        Z is drawn as (1 + g_1/|g|)/2 with g ~ N(0, I_m) (the first coordinate of a uniform point on
        S^{m-1} has density prop. to (1 - t^2)^((m-3)/2)), so every draw comes from `generator`.
        Rejection rounds redraw only the still-unaccepted entries (vectorised; no loop over samples).
        """
        m, kappa = self.dim, self.kappa
        dev, f64 = self.loc.device, torch.float64
        b = (m - 1) / (2.0 * kappa + math.sqrt(4.0 * kappa**2 + (m - 1) ** 2))
        x0 = (1.0 - b) / (1.0 + b)
        c = kappa * x0 + (m - 1) * math.log1p(-x0 * x0)
        w = torch.empty(count, dtype=f64, device=dev)
        todo = torch.arange(count, device=dev)
        for _ in range(10_000):
            k = todo.numel()
            if k == 0:
                return w
            g = torch.randn(k, m, generator=generator, device=dev, dtype=f64)
            z = 0.5 * (1.0 + g[:, 0] / g.norm(dim=1))
            u = torch.rand(k, generator=generator, device=dev, dtype=f64)
            prop = (1.0 - (1.0 + b) * z) / (1.0 - (1.0 - b) * z)
            ok = kappa * prop + (m - 1) * torch.log1p(-x0 * prop) - c >= torch.log(u)
            w[todo[ok]] = prop[ok]
            todo = todo[~ok]
        raise RuntimeError(f"vMF rejection sampler did not finish (d={m}, kappa={kappa})")

    def rsample(self, n=1, generator=None):
        bsz, d = self.loc.shape
        w = self.sample_w(n * bsz, generator).view(n, bsz, 1)
        v = torch.randn(n, bsz, d - 1, generator=generator, device=self.loc.device, dtype=torch.float64)
        v = v / v.norm(dim=-1, keepdim=True)
        z0 = torch.cat([w, torch.sqrt((1.0 - w * w).clamp_min(0.0)) * v], -1).to(self.loc.dtype)
        # Householder reflection H = I - 2 u u^T, u = (e1 - mu)/|e1 - mu|, maps e1 to mu (|mu| = 1).
        # Where mu = e1 already, H is replaced by the identity (u is undefined there).
        u = -self.loc.clone()
        u[..., 0] = u[..., 0] + 1.0
        nsq = (u * u).sum(-1, keepdim=True)
        defined = nsq > 1e-12
        u = u / torch.sqrt(torch.where(defined, nsq, torch.ones_like(nsq)))
        reflected = z0 - 2.0 * (z0 * u).sum(-1, keepdim=True) * u
        return torch.where(defined, reflected, z0)

    def log_prob(self, z):
        return self.log_c + self.kappa * (z * self.loc).sum(-1)

    def log_prob_cross(self, z):
        return self.log_c + self.kappa * (z.double() @ self.loc.double().T)

    def kl_to_prior(self):
        kl = self.kappa * self.mean_resultant + self.log_c + log_sphere_area(self.dim)
        return self.loc.new_full(self.loc.shape[:1], kl)

    def __getitem__(self, index):
        return VonMisesFisher(self.loc[index], self.kappa)

    def __len__(self):
        return self.loc.shape[0]

    @classmethod
    def cat(cls, parts):
        kappas = {p.kappa for p in parts}
        if len(kappas) != 1:
            raise ValueError(f"cannot concatenate vMF posteriors with different kappa: {sorted(kappas)}")
        return cls(torch.cat([p.loc for p in parts]), parts[0].kappa)

    def map(self, fn):
        return VonMisesFisher(fn(self.loc), self.kappa)
