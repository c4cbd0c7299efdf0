"""wae: the unbiased multi-scale IMQ MMD^2, the regularizer lambda MMD^2 (a batch scalar), and that a
large lambda keeps the aggregated posterior at the prior where lambda = 0 lets it drift."""

import pytest
import torch
from helpers import BB
from vae_collapse_bench.bench import registry
from vae_collapse_bench.bench.errors import BenchError
from vae_collapse_bench.bench.posterior import DiagGaussian
from vae_collapse_bench.methods.wae import WAE, WAEParams, mmd_imq


def naive_mmd(x, y, scales):
    d = x.shape[1]

    def k(a, b):
        sq = float(((a - b) ** 2).sum())
        return sum(2.0 * d * s / (2.0 * d * s + sq) for s in scales)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_matches_a_naive_double_loop_with_the_seven_scales_by_default():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    seven = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    assert abs(mmd_imq(x, y).item() - naive_mmd(x, y, seven)) < 1e-12
    assert abs(mmd_imq(x, y, scales=(1.0,)).item() - naive_mmd(x, y, (1.0,))) < 1e-12  # C = 2D alone
    assert abs(mmd_imq(x, y).item() - naive_mmd(x, y, (1.0,))) > 1e-3


def test_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    assert abs(mmd_imq(x, y).item()) < 0.05
    shifted = mmd_imq(x + 1.0, y).item()
    assert shifted > 0.5 and shifted > 10 * abs(mmd_imq(x, y).item())


def test_unbiased_on_average_at_small_n():
    g = torch.Generator().manual_seed(1)
    values = [mmd_imq(torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)).item() for _ in range(2000)]
    assert abs(sum(values) / len(values)) < 0.05
    assert max(values) > 0.5  # single estimates do vary: the mean near 0 is not a constant near 0


def test_regularizer_is_lambda_times_the_batch_mmd_and_logs_the_mmd():
    torch.manual_seed(1)  # the test must not depend on the tests that ran before it
    model = WAE(20, BB, registry.get("wae").resolve({"lam": 3}))
    q = DiagGaussian(torch.randn(6, 4) + 3.0, torch.zeros(6, 4))
    z = q.rsample(1)[0]
    torch.manual_seed(0)
    reg = model.regularizer(q, z, None)
    torch.manual_seed(0)
    mmd = mmd_imq(z, torch.randn(6, 4))  # the prior draws the regularizer made
    assert reg.value.shape == () and reg.logs["mmd"].shape == ()
    assert torch.allclose(reg.logs["mmd"], mmd) and not reg.logs["mmd"].requires_grad
    assert torch.allclose(reg.value, 3 * mmd) and mmd > 0.1
    single = DiagGaussian(torch.randn(1, 4), torch.zeros(1, 4))
    assert model.regularizer(single, single.loc, None).value.item() == 0.0


def test_loss_weights_lambda_mmd_by_the_schedule():
    torch.manual_seed(0)
    model = WAE(20, BB, WAEParams(lam=100))
    x = torch.randint(4, 20, (6, 7), generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    terms = model.loss(x, kl_weight=0.25)
    assert terms.reg.shape == () and torch.allclose(terms.reg, 100 * terms.logs["mmd"])
    assert torch.allclose(terms.loss, terms.rec.mean() + 0.25 * terms.reg)
    assert torch.allclose(terms.objective, terms.rec.mean() + terms.reg)


def test_lambda_params_grid_and_domain():
    spec = registry.get("wae")
    assert spec.defaults == {"lam": 10.0}
    assert spec.grid == {"lam": [1, 10, 100]}
    assert spec.resolve({"lam": "10"}) == spec.resolve({}) and isinstance(spec.resolve({"lam": 10}).lam, float)
    assert spec.resolve({"lam": "0"}).lam == 0.0
    for bad in ("-1", "nan", "inf"):
        with pytest.raises(BenchError, match="lam must be a finite number >= 0"):
            spec.resolve({"lam": bad})
    with pytest.raises(BenchError, match="lam"):
        spec.resolve({"lam": -1})


def test_a_large_lambda_keeps_the_aggregated_posterior_at_the_prior(held_out_mmd):
    def adam(model):
        return torch.optim.Adam(model.parameters(), lr=0.01)

    free, matched = (held_out_mmd(WAE, WAEParams(lam=lam), adam) for lam in (0.0, 100.0))
    assert free > 1.0  # reconstruction alone moves q(z) away from N(0, I) ...
    assert matched < 0.2 and matched < free / 10  # ... lambda MMD^2 holds it there
