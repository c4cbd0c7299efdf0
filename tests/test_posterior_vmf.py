import math

import numpy as np
import pytest
import torch
from scipy import stats
from vae_collapse_bench.bench import metrics
from vae_collapse_bench.bench.posterior import UniformSphere, VonMisesFisher, log_sphere_area, vmf_constants


def unit(b, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=dtype), dim=-1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def log_w_density(w, d, kappa):
    """Unnormalised log density of w = mu.z under vMF: kappa w + (d-3)/2 log(1 - w^2)."""
    return kappa * w + 0.5 * (d - 3) * np.log1p(-w * w)


@pytest.mark.parametrize("kappa, kl", [(13, 2.17), (25, 5.76), (50, 12.25), (100, 20.76), (200, 30.37)])
def test_kl_to_uniform_matches_the_paper_constants_at_d32(kappa, kl):
    q = VonMisesFisher(unit(3, 32), kappa)
    assert q.kl_to_prior().shape == (3,)
    assert torch.allclose(q.kl_to_prior(), torch.full((3,), kl), atol=0.01)


def test_uniform_sphere_prior():
    p = UniformSphere(3)
    z = p.sample((5, 4), gen())
    assert z.shape == (5, 4, 3)
    assert torch.allclose(z.norm(dim=-1), torch.ones(5, 4), atol=1e-6)
    assert torch.allclose(p.log_prob(z), torch.full((5, 4), -math.log(4 * math.pi)))
    assert log_sphere_area(2) == pytest.approx(math.log(2 * math.pi))
    with pytest.raises(NotImplementedError):
        p.log_prob_dims(z)
    assert VonMisesFisher(unit(2, 3), 1.0).prior.dim == 3


def test_log_prob_closed_form_at_d3_and_normalisation_at_d32():
    kappa = 5.0
    loc = unit(2, 3)
    q = VonMisesFisher(loc, kappa)
    z = unit(7, 3, seed=1)
    expected = math.log(kappa / (4 * math.pi * math.sinh(kappa))) + kappa * (z @ loc.T)  # [7, 2]
    assert torch.allclose(q.log_prob(z[:, None, :]), expected, atol=1e-5)
    # integral over S^{d-1}: int_{-1}^{1} C_d e^{kappa t} |S^{d-2}| (1 - t^2)^{(d-3)/2} dt = 1
    for d, kappa in [(32, 13.0), (32, 200.0), (5, 0.3)]:
        log_c, _ = vmf_constants(d, kappa)
        t = np.linspace(-1, 1, 200_001)[1:-1]
        dens = np.exp(log_c + log_sphere_area(d - 1) + log_w_density(t, d, kappa))
        assert np.trapezoid(dens, t) == pytest.approx(1.0, rel=1e-4)


def test_shapes_indexing_cat_map():
    q = VonMisesFisher(unit(4, 6), 10)
    assert q.kappa == 10.0 and len(q) == 4
    assert q.log_prob(q.rsample(3, gen())).shape == (3, 4)
    assert q.log_prob(torch.randn(5, 1, 6)).shape == (5, 4)  # every draw against every posterior
    assert q.mean.shape == (4, 6) and q.kl_to_prior().shape == (4,)
    assert q.gaussian_marginals() is None
    sub = q[torch.tensor([0, 2])]
    assert len(sub) == 2 and torch.equal(sub.loc, q.loc[[0, 2]])
    both = VonMisesFisher.cat([q[:1], q[1:]])
    assert torch.equal(both.loc, q.loc) and both.kappa == q.kappa
    assert q.map(lambda t: t.double()).loc.dtype == torch.float64
    assert q.detach().kappa == 10.0
    with pytest.raises(ValueError, match="different kappa"):
        VonMisesFisher.cat([q, VonMisesFisher(unit(1, 6), 11)])
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="kappa"):
            VonMisesFisher(unit(1, 6), bad)


def test_samples_are_unit_reproducible_and_average_to_the_mean():
    loc = unit(3, 32)
    q = VonMisesFisher(loc, 50.0)
    z = q.rsample(20_000, gen(1))
    assert z.shape == (20_000, 3, 32) and z.dtype == torch.float32
    assert torch.allclose(z.norm(dim=-1), torch.ones(20_000, 3), atol=1e-5)
    assert torch.equal(q.rsample(5, gen(1)), q.rsample(5, gen(1)))  # same generator, same draws
    a = q.mean_resultant
    assert a == pytest.approx(0.7348, abs=1e-4)
    proj = (z * loc).sum(-1).mean(0)  # E[mu.z] = A_d(kappa)
    assert torch.allclose(proj, torch.full((3,), a), atol=0.01)
    assert (z.mean(0) - q.mean).abs().max() < 0.01


@pytest.mark.parametrize("d, kappa", [(32, 13.0), (32, 200.0), (3, 2.0), (2, 0.5), (32, 0.5)])
def test_w_matches_the_vmf_marginal_density(d, kappa):
    q = VonMisesFisher(unit(1, d), kappa)
    n = 20_000
    w = q.sample_w(n, gen(2)).numpy()
    assert np.all(np.abs(w) <= 1)
    # exact mean of w is A_d(kappa); its standard error is at most 1/sqrt(n)
    assert w.mean() == pytest.approx(q.mean_resultant, abs=4 / math.sqrt(n))
    t = np.linspace(-1, 1, 400_001)[1:-1]
    logp = log_w_density(t, d, kappa)
    p = np.exp(logp - logp.max())
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(t))])
    cdf /= cdf[-1]
    ks = stats.kstest(w, lambda x: np.interp(x, t, cdf))
    assert ks.pvalue > 1e-3, ks


def test_kl_matches_monte_carlo():
    q = VonMisesFisher(unit(2, 32), 25.0)
    z = q.rsample(20_000, gen(3))
    # KL(q || uniform) = E_q[log q(z)] + log |S^{d-1}|; the standard error of the mean of log q is ~0.01
    mc = q.log_prob(z).mean(0) + log_sphere_area(32)
    assert torch.allclose(q.kl_to_prior(), mc, atol=0.05)
    assert float(q.kl_to_prior()[0]) == pytest.approx(5.76, abs=0.005)  # the docstring's d = 32, kappa = 25


def test_gradient_flows_to_loc_through_rsample_and_is_unbiased():
    d, kappa = 8, 20.0
    p = torch.randn(1, d, generator=gen(4), requires_grad=True)
    c = torch.randn(d, generator=gen(5))
    loc = torch.nn.functional.normalize(p, dim=-1)
    q = VonMisesFisher(loc, kappa)
    (q.rsample(20_000, gen(6)) @ c).mean().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    # E[c.z] = A c.mu, so d/dp = A (I - mu mu^T) c / |p|
    mu = loc.detach()[0]
    expected = q.mean_resultant * (c - (mu @ c) * mu) / p.detach().norm()
    assert torch.allclose(p.grad[0], expected, atol=0.05 * expected.norm())


def test_householder_edge_cases_e1_and_minus_e1():
    loc = torch.zeros(2, 4)
    loc[0, 0], loc[1, 0] = 1.0, -1.0
    q = VonMisesFisher(loc, 30.0)
    z = q.rsample(2000, gen(7))
    assert torch.isfinite(z).all()
    assert torch.allclose((z * loc).sum(-1).mean(0), torch.full((2,), q.mean_resultant), atol=0.02)


def test_mutual_information_works_on_vmf():
    loc = unit(64, 16)
    q = VonMisesFisher(loc, 50.0)
    mi = metrics.mutual_information(q, n_samples=4, generator=gen(8))
    assert 0 < mi <= math.log(64) + 1e-9  # the paired estimator never exceeds log N
    same = VonMisesFisher(loc[:1].expand(64, -1), 50.0)
    # identical posteriors: MI = 0 up to the Monte-Carlo error of E log q (kappa std(w) / sqrt(1024) ~ 0.09)
    assert abs(metrics.mutual_information(same, n_samples=16, generator=gen(8))) < 0.35


def test_active_units_on_vmf_use_the_true_mean_not_the_direction():
    # Pins the project's choice (metrics.active_units): Burda's AU on E_q[z] = A_d(kappa) mu, not on
    # the unit direction mu as the DG-VAE public code does. 64 directions +-e_i spread evenly over
    # S^31: every coordinate takes +-1 once each and 0 otherwise, unbiased variance 2/63 = 0.0317 on
    # mu (AU 32) but A_d(13)^2 2/63 = 0.0040 on A_d mu (AU 0).
    d, kappa = 32, 13.0
    eye = torch.eye(d, dtype=torch.float64)
    loc = torch.cat([eye, -eye])
    q = VonMisesFisher(loc, kappa)
    a_d = vmf_constants(d, kappa)[1]
    assert a_d == pytest.approx(0.356931, abs=1e-6)
    au, var = metrics.active_units(q.mean)
    au_true, var_true = metrics.active_units(a_d * loc)
    au_dir, var_dir = metrics.active_units(loc)
    torch.testing.assert_close(var_dir, torch.full((d,), 2 / 63, dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(var, torch.full((d,), a_d**2 * 2 / 63, dtype=torch.float64), rtol=1e-12, atol=0)
    torch.testing.assert_close(var, var_true, rtol=0, atol=0)
    assert (au, au_true, au_dir) == (0, 0, 32)
    assert not VonMisesFisher.au_comparable  # and the report is told not to compare it
