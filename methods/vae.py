"""The vanilla text VAE (Bowman et al. 2016): ELBo with linear KL annealing.

loss = E_q[-log p(x|z)] + w(t) KL(q(z|x) || p(z)),  w(t) linear from 0 to 1 over 10 epochs.
"""

from bench.model import GaussianMethod
from bench.registry import register


@register("vae")
class VAE(GaussianMethod):
    """ELBo with analytic KL and linear KL annealing."""
