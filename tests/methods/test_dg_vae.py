"""dg-vae: the density-gap KL (Eq. 11) against a naive loop, its limits, its grouping rule (rows that
do not fill a group stay out; batches smaller than a group are skipped in training)."""

import math

import pytest
import torch
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.config import Backbone
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.posterior import DiagGaussian
from vae_collapse_bench.methods.dg_vae import DGVAE, DGParams, aggregation_groups, density_gap_kl


def naive_density_gap(loc, std, agg, m, seed):
    """Deliberately naive: Python loops over groups, samples, datapoints and dimensions."""
    b, d = loc.shape
    eps = torch.randn(b, m, d, generator=torch.Generator().manual_seed(seed), dtype=loc.dtype)
    size = b if agg is None or b < agg else agg
    groups = [list(range(s, s + size)) for s in range(0, b - b % size, size)]  # the remainder stays out
    gaps = []
    for group in groups:
        gap = 0.0
        for i in range(d):
            total, count = 0.0, 0
            for k_src in group:
                for j in range(m):
                    z = float(loc[k_src, i] + std[k_src, i] * eps[k_src, j, i])
                    dens = 0.0
                    for k in group:
                        mu, sd = float(loc[k, i]), float(std[k, i])
                        dens += math.exp(-0.5 * ((z - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))
                    log_q = math.log(dens / len(group))
                    log_p = -0.5 * z * z - 0.5 * math.log(2 * math.pi)
                    total += log_q - log_p
                    count += 1
            gap += total / count
        gaps.append(gap)
    return sum(gaps) / len(gaps)


def random_posteriors(b, d, seed=0, dtype=torch.float64, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    loc = spread * torch.randn(b, d, generator=g, dtype=dtype)
    std = torch.exp(0.5 * torch.randn(b, d, generator=g, dtype=dtype))
    return loc, std


@pytest.mark.parametrize("b,agg", [(5, 2), (6, 3), (4, None), (3, 8), (7, 1)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_a_naive_triple_loop(b, agg, dtype):
    loc, std = random_posteriors(b, 3)
    loc, std = loc.to(dtype), std.to(dtype)
    fast = density_gap_kl(loc, std, agg, m=4, generator=torch.Generator().manual_seed(7))
    slow = naive_density_gap(loc, std, agg, 4, seed=7)  # the same eps (drawn in the same dtype)
    assert abs(fast.item() - slow) < 1e-5 * max(1.0, abs(slow))


def test_default_agg_is_the_whole_batch():
    loc, std = random_posteriors(6, 4)
    one = density_gap_kl(loc, std, "default", 8, torch.Generator().manual_seed(0))
    assert torch.equal(one, density_gap_kl(loc, std, None, 8, torch.Generator().manual_seed(0)))
    assert torch.equal(one, density_gap_kl(loc, std, 6, 8, torch.Generator().manual_seed(0)))


def test_zero_when_every_posterior_is_the_prior():
    loc, std = torch.zeros(16, 5, dtype=torch.float64), torch.ones(16, 5, dtype=torch.float64)
    assert abs(density_gap_kl(loc, std, 4, m=256).item()) < 1e-10
    loc32, std32 = torch.zeros(16, 5), torch.ones(16, 5)
    assert abs(density_gap_kl(loc32, std32, None, m=256).item()) < 1e-4


def test_agg_one_with_large_m_approaches_the_analytic_kl():
    loc, std = random_posteriors(8, 4, seed=3)
    analytic = DiagGaussian(loc, 2 * std.log()).kl_to_prior().mean().item()
    estimate = density_gap_kl(loc, std, 1, m=20000, generator=torch.Generator().manual_seed(1)).item()
    assert abs(estimate - analytic) < 0.03 * analytic + 0.02


def test_aggregating_lowers_the_gap_below_the_mean_kl():
    # KL(q_b || p) <= mean_k KL(q_k || p) (convexity); larger groups aggregate more
    loc, std = random_posteriors(8, 4, seed=6)
    mean_kl = DiagGaussian(loc, 2 * std.log()).kl_to_prior().mean().item()
    gaps = [density_gap_kl(loc, std, agg, m=4000, generator=torch.Generator().manual_seed(2)).item()
            for agg in (1, 2, 8)]
    assert gaps[0] == pytest.approx(mean_kl, rel=0.03)
    assert gaps[2] < gaps[1] < gaps[0]


def draws(b, m, d, seed, dtype=torch.float64):
    return torch.randn(b, m, d, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_invariant_to_permuting_rows_within_a_group():
    loc, std = random_posteriors(8, 3, seed=5)
    eps = draws(8, 6, 3, seed=11)
    base = density_gap_kl(loc, std, 4, eps=eps)
    within = torch.tensor([2, 0, 3, 1, 7, 5, 4, 6])  # rows (with their draws) stay in their group
    assert abs(base - density_gap_kl(loc[within], std[within], 4, eps=eps[within])) < 1e-12
    across = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])  # other groups: another value
    assert abs(base - density_gap_kl(loc[across], std[across], 4, eps=eps[across])) > 1e-6


@pytest.mark.parametrize("batch,agg,expected", [
    (70, 32, (32, 64)), (64, 32, (32, 64)), (20, 32, (20, 20)), (10, 4, (4, 8)), (7, 1, (1, 7)),
    (5, "default", (5, 5)), (70, None, (70, 70)),
])
def test_aggregation_groups_by_hand(batch, agg, expected):
    assert aggregation_groups(batch, agg) == expected


def test_remainder_rows_stay_out_of_the_term():
    loc, std = random_posteriors(10, 3, seed=2)
    eps = draws(10, 5, 3, seed=4)
    assert torch.equal(density_gap_kl(loc, std, 4, eps=eps),
                       density_gap_kl(loc, std, 4, 5, torch.Generator().manual_seed(4)))

    def one_group(rows):
        return density_gap_kl(loc[rows], std[rows], None, eps=eps[rows])

    value = density_gap_kl(loc, std, 4, eps=eps)  # groups rows 0-3 and 4-7; rows 8, 9 left out
    assert abs(value - (one_group(slice(0, 4)) + one_group(slice(4, 8))) / 2) < 1e-12
    moved_loc, moved_std = loc.clone(), std.clone()
    moved_loc[8:] += 5.0
    moved_std[8:] *= 3.0
    assert torch.equal(density_gap_kl(moved_loc, moved_std, 4, eps=eps), value)
    moved_loc[7] += 5.0  # a row inside a group does count
    assert abs(density_gap_kl(moved_loc, std, 4, eps=eps) - value) > 1e-3
    # a batch smaller than agg is one group (validation scores every sentence)
    assert torch.equal(density_gap_kl(loc[:3], std[:3], 8, eps=eps[:3]),
                       density_gap_kl(loc[:3], std[:3], None, eps=eps[:3]))


def test_min_batch_size_is_one_group():
    bb = Backbone(8, 12, 12, latent_dim=4)
    assert DGVAE(20, bb, DGParams(agg=32)).min_batch_size == 32
    assert DGVAE(20, bb, DGParams(agg=4)).min_batch_size == 4
    assert DGVAE(20, bb, DGParams(agg=1)).min_batch_size == 2  # the trainer's floor
    assert DGVAE(20, bb).min_batch_size == 2


def test_gradients_match_autograd_through_a_direct_formula():
    loc, std = random_posteriors(6, 3, seed=9)
    loc.requires_grad_(True)
    log_sd = std.log().detach().requires_grad_(True)
    eps = draws(6, 5, 3, seed=3)
    fast = density_gap_kl(loc, log_sd.exp(), 4, eps=eps)
    g_fast = torch.autograd.grad(fast, [loc, log_sd])
    sd = log_sd.exp()
    mu, s, e = loc[:4], sd[:4], eps[:4]  # one group of 4; rows 4, 5 stay out
    z = (mu[:, None] + s[:, None] * e).reshape(-1, 3)  # [S, D]
    log_n = -0.5 * ((z[:, None] - mu[None]) / s[None]) ** 2 - s.log()[None]  # [S, g, D]
    slow = (torch.logsumexp(log_n, 1) - math.log(4) + 0.5 * z * z).mean(0).sum()
    g_slow = torch.autograd.grad(slow, [loc, log_sd])
    assert torch.allclose(fast, slow, atol=1e-10)
    for a, b in zip(g_fast, g_slow):
        assert torch.allclose(a, b, atol=1e-9)
    assert (g_fast[0][4:] == 0).all() and (g_fast[1][4:] == 0).all() and (g_fast[0][:4] != 0).all()


@pytest.mark.parametrize("sigma", [1e-2, 1e-4, 1e-6])
def test_float32_is_accurate_for_narrow_posteriors(sigma):
    # well-separated narrow posteriors (the "holes" regime): means spread over +-9, sigma tiny
    loc, std = random_posteriors(32, 8, seed=1, spread=3.0)
    loc, std = loc.float(), (std * sigma).float()
    eps = draws(32, 32, 8, seed=0, dtype=torch.float32)
    fast = density_gap_kl(loc, std, None, eps=eps)
    exact = density_gap_kl(loc.double(), std.double(), None, eps=eps.double())
    assert torch.isfinite(fast)
    assert abs(fast.item() - exact.item()) < 1e-5 * abs(exact.item())


def test_method_uses_the_gap_as_regularizer_and_logs_it():
    torch.manual_seed(0)
    model = DGVAE(30, Backbone(8, 12, 12, latent_dim=4), registry.get("dg-vae").resolve({"agg": "2"}))
    assert model.params.agg == 2
    x = torch.randint(4, 30, (5, 6))
    terms = model.loss(x, kl_weight=0.5)
    assert terms.reg.shape == () and terms.reg.requires_grad
    assert torch.equal(terms.logs["dg"], terms.reg.detach())
    q = model.encode(x)
    assert torch.allclose(terms.kl, q.kl_to_prior())  # the reported KL is the analytic one
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.5 * terms.reg)
    assert torch.allclose(terms.objective, terms.rec.mean() + terms.reg)


@pytest.mark.parametrize("setting,message", [
    ({"agg": "0"}, "agg must be an integer >= 1 or 'default'"),
    ({"agg": "-3"}, "agg must be"),
    ({"agg": "2.5"}, "agg must be"),
    ({"agg": "all"}, "agg must be"),
    ({"m": "0"}, "m must be an integer >= 1"),
    ({"m": "1.5"}, "m must be"),
])
def test_domain(setting, message):
    with pytest.raises(BenchError, match=message):
        registry.get("dg-vae").resolve(setting)
