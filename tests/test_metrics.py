"""bench.metrics against closed forms, hand computations and brute-force loops on tiny cases."""

import math

import pytest
import torch
from vae_collapse_bench.bench.metrics import (
    active_units,
    consistent_units,
    consistent_units_mc,
    iw_nll,
    latent_density_grid,
    log_mean_exp,
    mixture_proposal_log_likelihoods,
    mutual_information,
    perplexity,
    top_variance_dims,
)
from vae_collapse_bench.bench.posterior import DiagGaussian, Posterior

F64 = torch.float64


def log_normal(x, mean, var):
    return -0.5 * (math.log(2 * math.pi * var) + (x - mean) ** 2 / var)


def log_normal_t(x, mean, var):
    var = torch.as_tensor(var, dtype=F64)
    return -0.5 * (torch.log(2 * math.pi * var) + (x - mean) ** 2 / var)


# --------------------------------------------------------------------------- log_mean_exp, PPL


def test_log_mean_exp_matches_naive_and_is_stable():
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=F64)
    for dim in (0, 1):
        naive = torch.log(torch.exp(x).mean(dim=dim))
        torch.testing.assert_close(log_mean_exp(x, dim=dim), naive, rtol=0, atol=1e-12)
    # exp(1000) overflows; the shifted answer must still be exact.
    torch.testing.assert_close(log_mean_exp(x + 1000.0, 0), torch.log(torch.exp(x).mean(0)) + 1000.0,
                               rtol=0, atol=1e-9)


def test_perplexity():
    assert perplexity(10.0, 5) == pytest.approx(math.exp(2.0), rel=1e-15)
    with pytest.raises(ValueError):
        perplexity(1.0, 0)


def test_perplexity_overflows_to_inf_instead_of_raising():
    # math.exp raises OverflowError above ~709.78; a diverged model must give inf (a failed run).
    assert perplexity(709.0 * 3, 3) == pytest.approx(math.exp(709.0), rel=1e-12)
    assert perplexity(710.0 * 3, 3) == math.inf
    assert perplexity(1e300, 7) == math.inf
    assert perplexity(math.inf, 7) == math.inf
    assert math.isnan(perplexity(math.nan, 7))


# --------------------------------------------------------------------------- priorLL, postLL, IW-NLL
# Linear-Gaussian model: z ~ N(0,1), x|z ~ N(a z, s^2). Then p(x) = N(x; 0, a^2 + s^2), the exact
# posterior is N(mu, v) with mu = a x / (a^2 + s^2), v = s^2 / (a^2 + s^2), and for q = N(m, w):
# E_q p(x|z) = N(x; a m, s^2 + a^2 w).

A, S = 1.5, 0.7
X = torch.tensor([-2.0, -0.3, 0.0, 1.1, 3.0], dtype=F64)


def exact_posterior(x, a=A, s=S):
    return a * x / (a * a + s * s), s * s / (a * a + s * s)


def log_px(x, a=A, s=S):
    return log_normal_t(x, 0.0, a * a + s * s)


def log_post_lik(x, m, w, a=A, s=S):
    """Closed-form log E_{N(m, w)} p(x|z)."""
    return log_normal_t(x, a * m, s * s + a * a * w)


def lg_terms(z, x, m, w, a=A, s=S):
    """[K, B] log p(x|z), log p(z), log q(z|x) for the linear-Gaussian model."""
    return log_normal_t(x, a * z, s * s), log_normal_t(z, 0.0, 1.0), log_normal_t(z, m, w)


def mixture_draws(k, m, w, gen):
    """K/2 draws from the prior stacked on K/2 from q = N(m, w): the stratified proposal."""
    b = m.shape[0]
    z_prior = torch.randn(k // 2, b, generator=gen, dtype=F64)
    z_post = m + math.sqrt(w) * torch.randn(k // 2, b, generator=gen, dtype=F64) if isinstance(w, float) \
        else m + w.sqrt() * torch.randn(k // 2, b, generator=gen, dtype=F64)
    return torch.cat([z_prior, z_post])


def test_mixture_proposal_by_hand_k2():
    log_px_z = torch.tensor([[-1.0], [-3.0]], dtype=F64)
    log_p = torch.tensor([[-0.5], [-2.0]], dtype=F64)
    log_q = torch.tensor([[-1.5], [-0.2]], dtype=F64)
    prior_ll, post_ll = mixture_proposal_log_likelihoods(log_px_z, log_p, log_q)
    w_prior = [math.exp(a + b) / ((math.exp(b) + math.exp(c)) / 2)
               for a, b, c in [(-1.0, -0.5, -1.5), (-3.0, -2.0, -0.2)]]
    w_post = [math.exp(a + c) / ((math.exp(b) + math.exp(c)) / 2)
              for a, b, c in [(-1.0, -0.5, -1.5), (-3.0, -2.0, -0.2)]]
    assert prior_ll.item() == pytest.approx(math.log(sum(w_prior) / 2), abs=1e-12)
    assert post_ll.item() == pytest.approx(math.log(sum(w_post) / 2), abs=1e-12)


def test_mixture_proposal_refuses_odd_k():
    t = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="K=3"):
        mixture_proposal_log_likelihoods(t, t, t)


def test_iw_nll_exact_with_true_posterior_for_any_k():
    # With q the exact posterior every weight p(x|z)p(z)/q(z|x) equals p(x): zero variance.
    gen = torch.Generator().manual_seed(1)
    mu, v = exact_posterior(X)
    for k in (1, 3, 16):
        z = mu + math.sqrt(v) * torch.randn(k, X.shape[0], generator=gen, dtype=F64)
        torch.testing.assert_close(-iw_nll(*lg_terms(z, X, mu, v)), log_px(X), rtol=0, atol=1e-10)


def test_mixture_exact_when_posterior_equals_prior():
    # a = 0: z carries nothing, q = p = Q and p(x|z) = N(x; 0, s^2) for every z, so both estimates are
    # exact for any K. (With q the exact posterior but q != p the mixture weights p(x) q/Q still vary
    # with z, so the mixture estimator is exact only in expectation: see the next test.)
    gen = torch.Generator().manual_seed(2)
    m, w = torch.zeros_like(X), 1.0
    z = mixture_draws(4, m, w, gen)
    prior_ll, post_ll = mixture_proposal_log_likelihoods(*lg_terms(z, X, m, w, a=0.0))
    torch.testing.assert_close(prior_ll, log_normal_t(X, 0.0, S * S), rtol=0, atol=1e-12)
    torch.testing.assert_close(post_ll, log_normal_t(X, 0.0, S * S), rtol=0, atol=1e-12)


def test_mixture_stratified_estimator_is_unbiased_in_likelihood():
    # R independent replicates of the paper protocol (8 + 8 draws) for one x, as R columns: the mean
    # of exp(priorLL) must be p(x) and the mean of exp(postLL) must be E_q p(x|z), within 4 SE.
    gen = torch.Generator().manual_seed(3)
    r, x = 20000, torch.tensor(1.1, dtype=F64)
    mu, v = exact_posterior(x)
    m, w = torch.full((r,), mu.item(), dtype=F64) + 0.4, 1.6 * v  # a deliberately wrong q
    z = mixture_draws(16, m, w, gen)
    prior_ll, post_ll = mixture_proposal_log_likelihoods(*lg_terms(z, x, m, w))
    for est, target in ((prior_ll, log_px(x)), (post_ll, log_post_lik(x, m[0], w))):
        ratio = torch.exp(est - target)
        assert abs(ratio.mean().item() - 1.0) < 4 * ratio.std().item() / math.sqrt(r)


def test_all_estimators_converge_with_wrong_q_and_large_k():
    gen = torch.Generator().manual_seed(4)
    mu, v = exact_posterior(X)
    m, w = mu + 0.5, 2.0 * v  # deliberately wrong q
    k = 200000  # relative SE of the weights' mean ~2e-3, so 1e-2 is ~4-5 SE
    prior_ll, post_ll = mixture_proposal_log_likelihoods(*lg_terms(mixture_draws(k, m, w, gen), X, m, w))
    z_q = m + math.sqrt(w) * torch.randn(k, X.shape[0], generator=gen, dtype=F64)
    neg_iw = -iw_nll(*lg_terms(z_q, X, m, w))
    torch.testing.assert_close(prior_ll, log_px(X), rtol=0, atol=1e-2)
    torch.testing.assert_close(neg_iw, log_px(X), rtol=0, atol=1e-2)
    torch.testing.assert_close(post_ll, log_post_lik(X, m, w), rtol=0, atol=1e-2)


def test_post_ll_with_exact_posterior_matches_closed_form():
    gen = torch.Generator().manual_seed(5)
    mu, v = exact_posterior(X)
    _, post_ll = mixture_proposal_log_likelihoods(*lg_terms(mixture_draws(200000, mu, v, gen), X, mu, v))
    torch.testing.assert_close(post_ll, log_post_lik(X, mu, v), rtol=0, atol=1e-2)


# --------------------------------------------------------------------------- MI


def gaussians(loc, std):
    loc = torch.as_tensor(loc, dtype=F64)
    return DiagGaussian(loc, torch.log(torch.as_tensor(std, dtype=F64) ** 2 * torch.ones_like(loc)))


def test_mi_two_separated_posteriors_is_log_2():
    q = gaussians([[20.0], [-20.0]], 1.0)
    mi = mutual_information(q, n_samples=20000, generator=torch.Generator().manual_seed(0))
    assert mi == pytest.approx(math.log(2), abs=0.02)


def test_mi_identical_posteriors_is_zero_even_with_one_draw():
    # the collapse regime: paired draws make the estimate exactly 0, not 0 +- Monte-Carlo noise
    q = gaussians(torch.tensor([[0.3, -1.0, 2.0]]).repeat(64, 1), 0.5)
    mi = mutual_information(q, n_samples=1, generator=torch.Generator().manual_seed(0))
    assert mi == pytest.approx(0.0, abs=1e-9)


def test_mi_never_exceeds_log_n():
    gen = torch.Generator().manual_seed(3)
    q = gaussians(5 * torch.randn(16, 4, generator=gen, dtype=F64), 0.05)
    mi = mutual_information(q, n_samples=2, generator=torch.Generator().manual_seed(1))
    assert mi <= math.log(16) + 1e-9
    assert mi == pytest.approx(math.log(16), abs=1e-3)  # far-apart posteriors: I = log N


def brute_force_mi(loc, std, z):
    """Double loop over draws and posteriors with scalar math: z [S, N, D]."""
    n_s, n, d = len(z), len(z[0]), len(z[0][0])
    total = 0.0
    for s in range(n_s):
        for i in range(n):
            own = sum(log_normal(z[s][i][j], loc[i][j], std[i][j] ** 2) for j in range(d))
            dens = sum(math.exp(sum(log_normal(z[s][i][j], loc[m][j], std[m][j] ** 2) for j in range(d)))
                       for m in range(n))
            total += own - math.log(dens / n)
    return total / (n_s * n)


def test_mi_matches_brute_force_and_is_chunk_invariant():
    gen = torch.Generator().manual_seed(7)
    loc = torch.randn(5, 2, generator=gen, dtype=F64)
    std = 0.3 + torch.rand(5, 2, generator=gen, dtype=F64)
    q = gaussians(loc, std)
    z = q.rsample(3, generator=torch.Generator().manual_seed(11))
    expected = brute_force_mi(loc.tolist(), std.tolist(), z.tolist())
    for chunk in (1, 7, 15):
        mi = mutual_information(q, n_samples=3, chunk_size=chunk, generator=torch.Generator().manual_seed(11))
        assert mi == pytest.approx(expected, abs=1e-10)


class JointOnlyGaussian(DiagGaussian):
    """A posterior that scores jointly only, as a vMF would: no per-dim marginals."""

    def log_prob_dims(self, z):
        raise NotImplementedError("joint density only")

    def log_prob(self, z):
        diff = (z - self.loc) * torch.exp(-0.5 * self.logvar)
        log_det = self.logvar.sum(-1) + self.loc.shape[-1] * math.log(2 * math.pi)
        return -0.5 * ((diff * diff).sum(-1) + log_det)

    # no matrix-product form either: the generic broadcast of log_prob, as for any new family
    log_prob_cross = Posterior.log_prob_cross

    def __getitem__(self, index):
        return JointOnlyGaussian(self.loc[index], self.logvar[index])


def test_mi_needs_only_joint_log_prob():
    gen = torch.Generator().manual_seed(8)
    loc, logvar = torch.randn(9, 3, generator=gen, dtype=F64), torch.randn(9, 3, generator=gen, dtype=F64)
    a = mutual_information(DiagGaussian(loc, logvar), 4, 5, torch.Generator().manual_seed(1))
    b = mutual_information(JointOnlyGaussian(loc, logvar), 4, 5, torch.Generator().manual_seed(1))
    assert a == pytest.approx(b, abs=1e-10)
    assert a <= math.log(9) + 1e-12


def test_diag_matrix_product_cross_matches_the_generic_broadcast(monkeypatch):
    # DiagGaussian.log_prob_cross (expanded matrix products) against the base class's broadcast of
    # log_prob on the same tensors, logvar in [-15, 2] so that the matrix form is the one used.
    gen = torch.Generator().manual_seed(9)
    loc = 2 * torch.randn(40, 5, generator=gen, dtype=F64)
    logvar = -17 * torch.rand(40, 5, generator=gen, dtype=F64) + 2
    assert logvar.min() > DiagGaussian.CROSS_EXPANSION_MIN_LOGVAR
    q = DiagGaussian(loc, logvar)
    z = torch.cat([q.rsample(2, gen).reshape(-1, 5), 3 * torch.randn(20, 5, generator=gen, dtype=F64)])
    generic = Posterior.log_prob_cross(q, z)
    matrix = q.log_prob_cross(z)
    assert generic.shape == matrix.shape == (100, 40) and generic.dtype == matrix.dtype == F64
    torch.testing.assert_close(matrix, generic, rtol=1e-12, atol=1e-6)
    # the draws against their own posteriors (the terms that dominate q_agg) to 1e-6 nats
    own = torch.arange(80) % 40
    torch.testing.assert_close(matrix[torch.arange(80), own], generic[torch.arange(80), own], rtol=0, atol=1e-6)
    # the broadcast is blocked over draws and posteriors: any block size gives the same numbers
    for elements in (5, 7 * 5, 13 * 40 * 5):
        monkeypatch.setattr("vae_collapse_bench.bench.posterior.CROSS_CHUNK_ELEMENTS", elements)
        torch.testing.assert_close(Posterior.log_prob_cross(q, z), generic, rtol=0, atol=0)


# --------------------------------------------------------------------------- AU, top dims


def test_active_units_uses_unbiased_variance():
    # Over N = 4, values +-c have population variance c^2 and unbiased variance 4 c^2 / 3.
    col = torch.tensor([1.0, -1.0, 1.0, -1.0])
    means = torch.stack([
        0.0 * col,             # var 0                      -> inactive
        math.sqrt(0.009) * col,  # pop 0.009, unbiased 0.012 -> active (unbiased rule)
        math.sqrt(0.006) * col,  # pop 0.006, unbiased 0.008 -> inactive
        2.0 + 0.5 * col,       # unbiased 1/3               -> active
    ], dim=1)
    count, var = active_units(means)
    assert count == 2
    torch.testing.assert_close(var, torch.tensor([0.0, 0.012, 0.008, 1 / 3], dtype=F64), rtol=0, atol=1e-7)
    assert active_units(means, threshold=0.5)[0] == 0
    with pytest.raises(ValueError):
        active_units(means[:1])


def test_active_units_threshold_is_inclusive():
    # A dim whose variance equals the threshold counts (>=); one ulp above it, it does not.
    gen = torch.Generator().manual_seed(12)
    means = torch.randn(30, 6, generator=gen, dtype=F64) * torch.tensor([0.05, 0.3, 1.0, 0.02, 2.0, 0.6],
                                                                         dtype=F64)
    _, var = active_units(means)
    rank = torch.argsort(var, descending=True)
    for k, dim in enumerate(rank.tolist(), start=1):  # the k-th largest variance
        t = var[dim].item()
        assert active_units(means, threshold=t)[0] == k
        assert active_units(means, threshold=math.nextafter(t, math.inf))[0] == k - 1
    # and the variance the threshold is compared with is the unbiased one, recomputed by hand
    col = means[:, 2]
    by_hand = ((col - col.mean()) ** 2).sum() / (len(col) - 1)
    assert var[2].item() == pytest.approx(by_hand.item(), rel=1e-14)


def test_top_variance_dims():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([1.0, 5.0, 0.1, 3.0, 0.5])
    means = torch.randn(400, 5, generator=gen) * scales
    assert top_variance_dims(means).tolist() == [1, 3]
    assert top_variance_dims(means, k=3).tolist() == [1, 3, 0]


# --------------------------------------------------------------------------- CU


def test_cu_standard_normal_aggregate_is_consistent():
    loc, std = torch.zeros(10, 3), torch.ones(10, 3)
    count, kl = consistent_units(loc, std)
    assert count == 3
    torch.testing.assert_close(kl, torch.zeros(3, dtype=F64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("m,s", [(0.0, 1.0), (0.7, 1.3), (-1.0, 0.6), (0.1, 0.95), (3.0, 0.2), (0.0, 5.0)])
def test_cu_single_gaussian_matches_closed_form(m, s):
    # KL(N(0,1) || N(m, s^2)) = log s + (1 + m^2) / (2 s^2) - 1/2; N identical posteriors. float64
    # inputs, so the only error is the quadrature's (~1e-14 here; float32 inputs would add their own
    # rounding of m and s, up to a few 1e-6 for the narrow case).
    loc, std = torch.full((6, 1), m, dtype=F64), torch.full((6, 1), s, dtype=F64)
    _, kl = consistent_units(loc, std)
    assert kl.item() == pytest.approx(math.log(s) + (1 + m * m) / (2 * s * s) - 0.5, abs=1e-9)


def test_cu_threshold_is_strict():
    # A dim whose KL equals the threshold is not consistent (<); one ulp above the KL, it is.
    loc, std = random_mixture(12, 5, seed=6)
    _, kl = consistent_units(loc, std)
    assert len(set(kl.tolist())) == 5 and torch.isfinite(kl).all()
    order = torch.argsort(kl)
    for k, dim in enumerate(order.tolist()):  # k dims have a smaller KL
        t = kl[dim].item()
        assert consistent_units(loc, std, threshold=t)[0] == k
        assert consistent_units(loc, std, threshold=math.nextafter(t, math.inf))[0] == k + 1


@pytest.mark.parametrize("m,s", [(0.0, 1.0), (0.5, 1.0), (0.0, 0.5), (-1.2, 2.0), (2.0, 0.3), (0.05, 1.02)])
def test_cu_identical_posteriors_give_the_analytic_kl_per_dim(m, s):
    # All N posteriors of a dim equal N(m, s^2): q_agg = N(m, s^2) and
    # KL(N(0,1) || N(m, s^2)) = log s + (1 + m^2) / (2 s^2) - 1/2. Several dims at once, each its own
    # (m, s) (scaled copies), float32 inputs as the evaluator passes them: to 1e-6.
    ms = torch.tensor([m, m / 2, -m], dtype=torch.float32)
    ss = torch.tensor([s, s * 1.1, s / 1.1], dtype=torch.float32)
    count, kl = consistent_units(ms.expand(9, 3), ss.expand(9, 3))
    m64, s64 = ms.double(), ss.double()  # the float32 values, exactly
    expected = torch.log(s64) + (1 + m64 * m64) / (2 * s64 * s64) - 0.5
    torch.testing.assert_close(kl, expected, rtol=0, atol=1e-6)
    assert count == int((expected < 0.03).sum())


def test_cu_hole_dim_is_not_consistent():
    # dim 0: N(0,1) aggregate; dim 1: posteriors N(+-3, 0.1^2), a hole-ridden aggregate.
    loc = torch.tensor([[0.0, 3.0], [0.0, -3.0]] * 5)
    std = torch.tensor([[1.0, 0.1]] * 10)
    count, kl = consistent_units(loc, std)
    assert count == 1
    assert kl[0] < 1e-10 and 10.0 < kl[1] < math.inf


def test_cu_non_finite_never_counts():
    # dim 0: std 0 (nan densities); dim 1: q_agg underflows in linear space (huge, finite KL);
    # dim 2: fine.
    loc = torch.tensor([[0.0, 1e3, 0.0]] * 3)
    std = torch.tensor([[0.0, 1e-3, 1.0]] * 3)
    count, kl = consistent_units(loc, std)
    assert count == 1
    assert not torch.isfinite(kl[0])
    assert torch.isfinite(kl[1]) and kl[1] > 1e6
    gen = torch.Generator().manual_seed(0)
    count_mc, kl_mc = consistent_units_mc(loc, std, n_samples=1000, generator=gen)
    assert count_mc == 1 and not torch.isfinite(kl_mc[0])


def random_mixture(n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    loc = 0.8 * torch.randn(n, d, generator=gen, dtype=F64)
    std = 0.3 + 0.7 * torch.rand(n, d, generator=gen, dtype=F64)
    return loc, std


def test_cu_quadrature_agrees_with_monte_carlo():
    loc, std = random_mixture(50, 4, seed=0)
    _, kl = consistent_units(loc, std)
    _, kl_mc = consistent_units_mc(loc, std, n_samples=128000, generator=torch.Generator().manual_seed(1),
                                    chunk_size=1024)
    torch.testing.assert_close(kl_mc, kl, rtol=0, atol=5e-3)


def test_cu_chunk_invariance():
    loc, std = random_mixture(23, 3, seed=2)
    ref_count, ref = consistent_units(loc, std, chunk_size=23)
    ref_mc = consistent_units_mc(loc, std, n_samples=500, generator=torch.Generator().manual_seed(0),
                                 chunk_size=500)[1]
    for chunk in (1, 7):
        count, kl = consistent_units(loc, std, chunk_size=chunk)
        assert count == ref_count
        torch.testing.assert_close(kl, ref, rtol=0, atol=1e-10)
        kl_mc = consistent_units_mc(loc, std, n_samples=500, generator=torch.Generator().manual_seed(0),
                                    chunk_size=chunk)[1]
        torch.testing.assert_close(kl_mc, ref_mc, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------- Figure 4 density grid


def test_latent_density_grid_integrates_to_one_and_matches_pointwise():
    loc, std = random_mixture(20, 2, seed=3)
    limit, points = 9.0, 181
    dens = latent_density_grid(loc, std, limit=limit, points=points)
    h = 2 * limit / (points - 1)
    w = torch.full((points,), h, dtype=F64)
    w[0] = w[-1] = h / 2
    assert (w[:, None] * w[None, :] * dens).sum().item() == pytest.approx(1.0, abs=1e-6)
    # pointwise, row i = first dim, column j = second dim
    g = torch.linspace(-limit, limit, points, dtype=F64)
    i, j = 97, 71
    direct = sum(math.exp(log_normal(g[i].item(), loc[n, 0].item(), std[n, 0].item() ** 2)
                          + log_normal(g[j].item(), loc[n, 1].item(), std[n, 1].item() ** 2))
                 for n in range(20)) / 20
    assert dens[i, j].item() == pytest.approx(direct, rel=1e-10)


def test_latent_density_grid_chunk_invariance():
    loc, std = random_mixture(15, 2, seed=4)
    ref = latent_density_grid(loc, std, points=31, chunk_size=15)
    for chunk in (1, 7):
        torch.testing.assert_close(latent_density_grid(loc, std, points=31, chunk_size=chunk), ref,
                                   rtol=0, atol=1e-12)
