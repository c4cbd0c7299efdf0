"""dg-vmf-vae: the density gap of Eq. 9 against a naive loop, its grouping rule, and the method's loss."""

import math

import pytest
import torch
from helpers import sentences, tiny_backbone
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.posterior import VonMisesFisher, log_sphere_area, vmf_constants
from vae_collapse_bench.methods.dg_vmf_vae import DGVMFVAE, DGVMFParams, density_gap_kl_vmf

BB = tiny_backbone(latent_dim=5)


def unit(b, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)


def naive_dg(z, loc, kappa, groups):
    """Eq. 9 by explicit loops: z [M, B, D] (draw m of datapoint s), groups: lists of row indices."""
    m, b, d = z.shape
    log_c, _ = vmf_constants(d, kappa)
    log_p = -log_sphere_area(d)
    total, count = 0.0, 0
    for group in groups:
        for s in group:
            for j in range(m):
                dens = sum(math.exp(log_c + kappa * float(loc[k] @ z[j, s])) for k in group) / len(group)
                total += math.log(dens) - log_p
                count += 1
    return total / count


@pytest.mark.parametrize("agg, groups", [("default", [[0, 1, 2, 3, 4]]), (2, [[0, 1], [2, 3]]),
                                         (3, [[0, 1, 2]]), (8, [[0, 1, 2, 3, 4]])])
def test_matches_a_naive_loop_on_the_same_samples(agg, groups):
    loc, kappa, m = unit(5, 4), 3.0, 3
    z = VonMisesFisher(loc, kappa).rsample(m, torch.Generator().manual_seed(1))
    dg = density_gap_kl_vmf(loc, kappa, m, torch.Generator().manual_seed(1), agg=agg)
    assert dg.shape == ()
    assert float(dg) == pytest.approx(naive_dg(z, loc, kappa, groups), abs=1e-5)


def test_rows_outside_every_group_do_not_change_the_gap():
    loc, kappa = unit(7, 4, seed=5), 4.0
    value = density_gap_kl_vmf(loc, kappa, 3, torch.Generator().manual_seed(2), agg=3)  # rows 0-5; row 6 out
    moved = loc.clone()
    moved[6] = -moved[6]
    assert torch.equal(density_gap_kl_vmf(moved, kappa, 3, torch.Generator().manual_seed(2), agg=3), value)
    moved[5] = -moved[5]  # a row inside a group does count
    assert abs(float(density_gap_kl_vmf(moved, kappa, 3, torch.Generator().manual_seed(2), agg=3) - value)) > 1e-3


def test_min_batch_size_is_one_group():
    assert DGVMFVAE(20, BB, DGVMFParams(agg=32)).min_batch_size == 32
    assert DGVMFVAE(20, BB, DGVMFParams(agg=1)).min_batch_size == 2
    assert DGVMFVAE(20, BB).min_batch_size == 2


def test_near_zero_for_spread_means_and_large_for_clustered_means():
    g = torch.Generator().manual_seed(2)
    spread = unit(1024, 32, seed=3)
    clustered = torch.nn.functional.normalize(0.1 * spread + torch.ones(32, dtype=torch.float64), dim=-1)
    for kappa in (5.0, 13.0):
        dg_spread = float(density_gap_kl_vmf(spread, kappa, 1, g))
        dg_clustered = float(density_gap_kl_vmf(clustered, kappa, 1, g))
        kl_single = float(VonMisesFisher(spread[:1], kappa).kl_to_prior())
        assert abs(dg_spread) < 0.05
        assert dg_clustered > 0.8 * kl_single and dg_clustered > 0.3
    # |b| = 1: a Monte-Carlo estimate of the ordinary (analytic) KL
    dg_one = float(density_gap_kl_vmf(spread[:64], 25.0, 16, g, agg=1))
    assert dg_one == pytest.approx(float(VonMisesFisher(spread[:1], 25.0).kl_to_prior()), abs=0.3)


def test_gradient_reaches_loc():
    p = torch.randn(6, 8, generator=torch.Generator().manual_seed(4), requires_grad=True)
    dg = density_gap_kl_vmf(torch.nn.functional.normalize(p, dim=-1), 10.0, 4)
    dg.backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_registered_params_and_domain():
    spec = registry.get("dg-vmf-vae")
    assert spec.cls is DGVMFVAE
    assert spec.settings("paper") == [{"kappa": k} for k in (13, 25, 50, 100, 200)]
    assert spec.defaults == {"kappa": 50.0, "m": 32, "agg": "default"}
    assert spec.resolve({"m": "4", "agg": "8", "kappa": "100"}) == DGVMFParams(kappa=100.0, m=4, agg=8)
    for bad in ({"m": "0"}, {"m": "1.5"}, {"agg": "0"}, {"agg": "all"}, {"kappa": "-1"}):
        with pytest.raises(BenchError):
            spec.resolve(bad)


def test_loss_uses_dg_as_regularizer_and_reports_the_analytic_kl():
    torch.manual_seed(0)
    model = DGVMFVAE(20, BB, DGVMFParams(kappa=13, m=4))
    x = sentences(6, t=7)
    terms = model.loss(x, kl_weight=0.5)
    assert torch.isfinite(terms.loss)
    assert terms.reg.shape == () and terms.reg.requires_grad
    assert torch.equal(terms.logs["dg"], terms.reg.detach())
    assert torch.allclose(terms.kl, torch.full((6,), float(VonMisesFisher(torch.eye(5)[:1], 13).kl_to_prior())))
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.5 * terms.reg)
    # the regularizer alone reaches the encoder
    q = model.encode(x)
    model.regularizer(q, None, x).value.backward()
    assert model.encoder.out.weight.grad.abs().sum() > 0
    assert model.encoder.lstm.weight_ih_l0.grad.abs().sum() > 0
