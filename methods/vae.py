"""The vanilla text VAE and its two schedule/weight variants.

- `vae` (Bowman et al. 2016): loss = E_q[-log p(x|z)] + w(t) KL(q(z|x) || p(z)), w(t) rising
  linearly from 0 to 1 over the first `anneal_epochs` epochs (10 in the paper profile).
- `cyclic-vae` (the cyclical schedule of Fu et al. 2019, "Cyclical Annealing Schedule", with ramp
  ratio R = 0.5): the same ELBo, but w(t) restarts every cycle: it rises linearly for half a cycle
  and is held at 1 for the other half. The cycle is the DG-VAE paper's baseline setting, a period of
  20 epochs with ramp ratio 0.5 (rise 10, hold 10), not Fu et al.'s fixed count of 4 cycles over
  the whole run; it scales with the profile's `anneal_epochs` (rise = anneal_epochs epochs, period =
  2 anneal_epochs epochs). A cyclic run always trains for max_epochs (`needs_all_epochs`): the
  lineage's code disables the stop-after-max-decays rule for cyclic schedules, so no cycle is cut.
- `beta-vae` (Higgins et al. 2017, the beta-VAE objective): the KL term weighted by beta; with beta < 1 the
  encoder is allowed more rate. The regularizer *is* beta * KL, so the method's own validation
  objective is rec + beta KL. KL annealing applies on top, as for every method.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor
from vae_collapse_bench.bench import schedules
from vae_collapse_bench.bench.config import Training
from vae_collapse_bench.bench.model import GaussianMethod, Reg
from vae_collapse_bench.bench.posterior import Posterior
from vae_collapse_bench.bench.registry import check_number, register


@register("vae")
class VAE(GaussianMethod):
    """ELBo with analytic KL and linear KL annealing."""


@register("cyclic-vae")
class CyclicVAE(GaussianMethod):
    """ELBo with cyclical KL annealing: rise over anneal_epochs, hold for as long, restart."""

    needs_all_epochs = True

    def kl_weight(self, step: int, steps_per_epoch: int, training: Training) -> float:
        rise = training.anneal_epochs * steps_per_epoch
        if rise <= 0:  # no annealing configured: the weight is always 1, as for `vae`
            return 1.0
        return schedules.cyclic(step, period_steps=2 * rise, rise_steps=rise)


@dataclass(frozen=True)
class BetaParams:
    """beta: weight of the KL term, >= 0 (default 0.2, the middle of the paper grid)."""

    beta: float = 0.2

    def __post_init__(self):
        check_number("beta", self.beta, 0, low_inclusive=True)


@register("beta-vae", grid={"beta": [0.0, 0.1, 0.2, 0.4, 0.8]},
          search=lambda trial: {"beta": trial.suggest_float("beta", 0.0, 1.0)})
class BetaVAE(GaussianMethod):
    """ELBo with the KL term weighted by beta."""

    Params = BetaParams

    def regularizer(self, q: Posterior, z: Tensor, x: Tensor) -> Reg:
        return Reg(self.params.beta * q.kl_to_prior().mean())
