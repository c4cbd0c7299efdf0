"""Skip-VAE (Dieng, Kim, Rush & Blei 2019, "Avoiding Latent Variable Collapse with Generative Skip
Models", the skip generative model).

The ELBo is unchanged; the generative model gets a skip connection from z to the output layer: the
vocabulary classifier reads

    o_t = [h_t ; z],   p(x_t | x_<t, z) = softmax(W_out o_t)   (W_out: V x (H + D), no bias)

instead of h_t alone, so z influences every token's distribution directly, not only through the
recurrent state (where a strong LSTM learns to ignore it). This is the `decoder_output` hook of
`bench.model.Method`; nothing else differs from `vae`.
"""

from __future__ import annotations

import torch
from torch import Tensor
from vae_collapse_bench.bench.config import Backbone
from vae_collapse_bench.bench.model import GaussianMethod
from vae_collapse_bench.bench.registry import register


@register("skip-vae")
class SkipVAE(GaussianMethod):
    """ELBo with z also concatenated to the decoder output at the vocabulary classifier."""

    def decoder_output_dim(self, backbone: Backbone) -> int:
        return backbone.dec_hidden + backbone.latent_dim

    def decoder_output(self, h: Tensor, z: Tensor) -> Tensor:
        return torch.cat([h, z.unsqueeze(1).expand(-1, h.shape[1], -1)], -1)
