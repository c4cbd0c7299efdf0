"""VAE with a bag-of-words loss on z (Zhao, Zhao & Eskenazi 2017, "Learning Discourse-level
Diversity for Neural Dialog Models using Conditional VAEs", the bag-of-words loss of Sec. 3).

An auxiliary network f predicts, from z alone and without word order, every target token:

    f(z) = W2 sigmoid(W1 z + b1) + b2  in R^V,      L_bow = -(1/T) sum_t log softmax(f(z))[x_t]

over the T target tokens x_1..x_T (`</s>` included, `<s>` excluded, as in the reconstruction term).
Because the decoder cannot help with this loss, z must carry the sentence's content, which counters
posterior collapse. L_bow is a gradient-only term (`auxiliary_loss`): it is added to the training
loss unweighted and never enters the reported losses or the validation objective. The hidden layer
(D units, sigmoid) follows this benchmark's specification; the mean over tokens (rather than Zhao et al.'s
sum) keeps the term's scale independent of sentence length.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from vae_collapse_bench.bench.config import Backbone
from vae_collapse_bench.bench.model import GaussianMethod, Reg
from vae_collapse_bench.bench.posterior import Posterior
from vae_collapse_bench.bench.registry import register


@register("bow-vae")
class BoWVAE(GaussianMethod):
    """ELBo + bag-of-words loss on z (gradient only, mean over target tokens)."""

    def build_extras(self, vocab_size: int, backbone: Backbone) -> None:
        d = backbone.latent_dim
        self.bow = nn.Sequential(nn.Linear(d, d), nn.Sigmoid(), nn.Linear(d, vocab_size))

    def bow_log_prob(self, z: Tensor, x: Tensor) -> Tensor:
        """log softmax(f(z))[x_t] for every target token: z [B, D], x [B, T] -> [B, T - 1]."""
        log_probs = F.log_softmax(self.bow(z), dim=-1)
        return log_probs.gather(1, x[:, 1:])

    def auxiliary_loss(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        bow = -self.bow_log_prob(z, x).mean()
        return Reg(bow, {"bow": bow.detach()})
