"""wae: the unbiased IMQ-kernel MMD^2 and the broadcast regularizer."""

import torch

from bench.config import Backbone
from bench.posterior import DiagGaussian
from methods.wae import WAE, mmd_imq


def naive_mmd(x, y):
    c = 2.0 * x.shape[1]

    def k(a, b):
        return c / (c + float(((a - b) ** 2).sum()))

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_matches_a_naive_double_loop():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert abs(mmd_imq(x, y).item() - naive_mmd(x, y)) < 1e-12


def test_near_zero_for_one_distribution_and_positive_for_a_shifted_one():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g)
    assert abs(mmd_imq(x, y).item()) < 0.05
    shifted = mmd_imq(x + 1.0, y).item()
    assert shifted > 0.1 and shifted > 10 * abs(mmd_imq(x, y).item())


def test_unbiased_on_average_at_small_n():
    g = torch.Generator().manual_seed(1)
    values = [mmd_imq(torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)).item() for _ in range(2000)]
    assert abs(sum(values) / len(values)) < 0.01


def test_regularizer_is_batch_level_and_broadcast():
    torch.manual_seed(0)
    model = WAE(20, Backbone(8, 12, 12, latent_dim=4))
    q = DiagGaussian(torch.randn(6, 4), torch.zeros(6, 4))
    z = q.rsample(1)[0]
    reg = model.regularizer(q, z, None)
    assert reg.shape == (6,) and torch.all(reg == reg[0])
    single = DiagGaussian(torch.randn(1, 4), torch.zeros(1, 4))
    assert model.regularizer(single, single.loc, None).item() == 0.0
