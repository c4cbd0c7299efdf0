"""Skip-VAE (Dieng, Kim, Rush & Blei 2019, "Avoiding Latent Variable Collapse with Generative Skip
Models", the skip generative model).

The ELBo is unchanged; the generative model gets a skip connection from z to the output layer: the
vocabulary classifier reads [h_t ; z] instead of h_t, so z influences every token's distribution
directly, not only through the recurrent state (where a strong LSTM learns to ignore it). This is the
backbone's `skip_z` switch (bench.model.Decoder); nothing else differs from `vae`.
"""

from bench.model import GaussianMethod
from bench.registry import register


@register("skip-vae")
class SkipVAE(GaussianMethod):
    """ELBo with z also concatenated to the decoder output at the vocabulary classifier."""

    skip_z = True
