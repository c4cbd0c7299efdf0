import pytest
from vae_collapse_bench.bench import schedules


def test_linear_anneal_hand_values():
    assert schedules.linear(0, 100) == 0.0
    assert schedules.linear(25, 100) == 0.25
    assert schedules.linear(100, 100) == 1.0
    assert schedules.linear(250, 100) == 1.0
    assert schedules.linear(3, 0) == 1.0


def test_cyclic_restarts_every_period_and_holds():
    # period 20 epochs x 10 steps, rising over the first 10 epochs
    period, rise = 200, 100
    assert schedules.cyclic(0, period, rise) == 0.0
    assert schedules.cyclic(50, period, rise) == 0.5
    assert schedules.cyclic(150, period, rise) == 1.0
    assert schedules.cyclic(200, period, rise) == 0.0
    assert schedules.cyclic(230, period, rise) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        schedules.cyclic(1, 0, 1)
