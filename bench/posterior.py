"""Posterior families q(z|x) and their priors. Metrics touch the latent space only through these.

Shapes: a Posterior holds B distributions over R^D (params [B, D]). `rsample(n)` gives [n, B, D].
`log_prob(z)` broadcasts z [..., B, D] against the B distributions and returns [..., B]; to score
samples against *every* posterior (aggregated posterior, MI), pass z of shape [S, 1, D] -> [S, B].
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


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
    """A batch of B posteriors q(z|x_b). Subclasses store tensors of leading dim B."""

    @property
    @abstractmethod
    def mean(self) -> Tensor:
        """E_q[z], [B, D]."""

    @property
    @abstractmethod
    def prior(self) -> Prior: ...

    @abstractmethod
    def rsample(self, n: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draws [n, B, D]."""

    @abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x_b), z [..., B, D] (or broadcastable) -> [..., B]."""

    @abstractmethod
    def kl_to_prior(self) -> Tensor:
        """Analytic KL(q(z|x_b) || p(z)) per datapoint, [B]."""

    @abstractmethod
    def entropy(self) -> Tensor:
        """H(q(z|x_b)), [B]."""

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


class DiagGaussian(Posterior):
    """q(z|x) = N(mu, diag(sigma^2)) with p(z) = N(0, I).

    KL = 1/2 sum_i (mu_i^2 + sigma_i^2 - log sigma_i^2 - 1);  H = 1/2 sum_i (log sigma_i^2 + log 2 pi + 1).
    """

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
        return -0.5 * ((z - self.loc) ** 2 * torch.exp(-self.logvar) + self.logvar + LOG_2PI)

    def log_prob(self, z):
        return self.log_prob_dims(z).sum(-1)

    def gaussian_marginals(self):
        return self.loc, self.std

    def kl_to_prior_dims(self) -> Tensor:
        """Per-dimension KL [B, D]."""
        return 0.5 * (self.loc**2 + self.logvar.exp() - self.logvar - 1)

    def kl_to_prior(self):
        return self.kl_to_prior_dims().sum(-1)

    def entropy(self):
        return 0.5 * (self.logvar + LOG_2PI + 1).sum(-1)

    def __getitem__(self, index):
        return DiagGaussian(self.loc[index], self.logvar[index])

    def __len__(self):
        return self.loc.shape[0]

    @classmethod
    def cat(cls, parts):
        return cls(torch.cat([p.loc for p in parts]), torch.cat([p.logvar for p in parts]))

    def map(self, fn):
        return DiagGaussian(fn(self.loc), fn(self.logvar))
