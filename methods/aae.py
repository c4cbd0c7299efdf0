"""Adversarial autoencoder (Makhzani, Shlens, Jaitly, Goodfellow & Frey 2016, "Adversarial
Autoencoders", Sec. 2): the KL term is replaced by a GAN game that matches the aggregated posterior
q(z) = E_x q(z|x) to the prior p(z) = N(0, I) (at the optimum, a Jensen-Shannon match).

A discriminator T (MLP D -> D -> D -> 2, LeakyReLU(0.2)) classifies latent codes as "prior" (class
0) or "posterior" (class 1). With z ~ q(z|x) the reparameterised posterior sample and z_p ~ N(0, I):

    discriminator loss (the critic's own step, on detached codes, unweighted):
        L_T = mean over the 2B codes of CE(T(z_p), prior) and CE(T(z.detach()), posterior)
    generator term (the regularizer, weighted by the KL schedule w(t)):
        reg = lambda G,   G = mean_n -log softmax(T(z_n))[prior]        (non-saturating GAN loss)
    autoencoder loss:
        L_AE = mean(rec) + w(t) lambda G

G and L_T are logged as `adv` and `disc` in the run's per-epoch history; the validation objective is
mean(rec) + lambda G, as for every method rec + reg.

Training (`training_step`): two players, two SGD optimisers (`configure_optimizers`: the
autoencoder's parameters, the discriminator's; same lr and schedule, each clipped on its own). Per
batch, one encoder pass and one draw z; then the discriminator takes a step on L_T, then the
autoencoder a step on L_AE against the updated T: Makhzani et al.'s alternating scheme with one step
each (their reconstruction and regularisation phases merged into one autoencoder step). Each step
reaches only its own player's parameters (`bench.model.descend`), so G's gradient through T moves
the encoder, never T.

Weights. lambda (`lam`, default 1: Makhzani et al. weight the adversarial term 1, as does Tolstikhin
et al.'s WAE-GAN, lambda = 1 on MNIST; paper grid 1 10 100) scales the generator term against a
reconstruction term of hundreds of nats. The generator term is annealed by the same schedule w(t) as
the KL of the other methods: early on the encoder is free to become informative. The discriminator
loss is not: the critic must track q(z) from the first step, so that when w(t) rises its signal
describes the current aggregated posterior rather than a stale one. LeakyReLU rather than ReLU keeps
gradients alive through units that the uniform U(-0.01, 0.01) initialisation would otherwise leave
dead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vae_collapse_bench.bench.config import Backbone, Training
from vae_collapse_bench.bench.model import GaussianMethod, LossTerms, Reg, StepContext, descend
from vae_collapse_bench.bench.posterior import Posterior
from vae_collapse_bench.bench.registry import check_number, register

PRIOR, POSTERIOR = 0, 1


@dataclass(frozen=True)
class AAEParams:
    """lam: lambda, the weight of the generator's adversarial term, a finite float >= 0 (default 1.0,
    Makhzani et al.'s unit weight; paper grid 1 10 100)."""

    lam: float = 1.0

    def __post_init__(self):
        check_number("lam", self.lam, 0, low_inclusive=True)
        object.__setattr__(self, "lam", float(self.lam))  # 1 and 1.0 resolve to the same run


@register("aae", grid={"lam": [1, 10, 100]},
          search=lambda trial: {"lam": trial.suggest_float("lam", 0.1, 1000.0, log=True)})
class AAE(GaussianMethod):
    """Adversarial match of the aggregated posterior to the prior (JS, via a discriminator)."""

    Params = AAEParams

    def build_extras(self, vocab_size: int, backbone: Backbone) -> None:
        d = backbone.latent_dim
        self.discriminator = nn.Sequential(
            nn.Linear(d, d), nn.LeakyReLU(0.2), nn.Linear(d, d), nn.LeakyReLU(0.2), nn.Linear(d, 2)
        )

    def generator_loss(self, z: Tensor) -> Tensor:
        """-log T(prior | z) per code, [B]."""
        labels = torch.full(z.shape[:1], PRIOR, dtype=torch.long, device=z.device)
        return F.cross_entropy(self.discriminator(z), labels, reduction="none")

    def discriminator_loss(self, z: Tensor, z_prior: Tensor) -> Tensor:
        """Mean cross-entropy of T on prior codes (label prior) and detached posterior codes."""
        codes = torch.cat([z_prior, z.detach()])
        labels = torch.cat([
            torch.full(z_prior.shape[:1], PRIOR, dtype=torch.long, device=z.device),
            torch.full(z.shape[:1], POSTERIOR, dtype=torch.long, device=z.device),
        ])
        return F.cross_entropy(self.discriminator(codes), labels)

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        adv = self.generator_loss(z).mean()
        return Reg(self.params.lam * adv, {"adv": adv.detach()})

    def configure_optimizers(self, training: Training) -> list[torch.optim.Optimizer]:
        """[autoencoder SGD, discriminator SGD], both at lr (the trainer decays both alike)."""
        critic = list(self.discriminator.parameters())
        own = {id(p) for p in critic}
        autoencoder = [p for p in self.parameters() if id(p) not in own]
        return [torch.optim.SGD(autoencoder, lr=training.lr), torch.optim.SGD(critic, lr=training.lr)]

    def training_step(self, x: Tensor, ctx: StepContext) -> LossTerms:
        """A step of T on L_T, then a step of the autoencoder on L_AE (module docstring)."""
        autoencoder, critic = ctx.optimizers
        q = self.encode(x)
        z = q.rsample(1, self.noise)[0]
        disc = self.discriminator_loss(z, q.prior.sample(z.shape[:1], self.noise))
        descend(disc, [critic], ctx.clip_grad)
        terms = self.loss_terms(q, z, x, ctx.kl_weight)  # G against the critic just updated
        descend(terms.loss, [autoencoder], ctx.clip_grad)
        terms.logs["disc"] = disc.detach()
        return terms
