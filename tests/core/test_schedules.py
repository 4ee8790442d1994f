"""Each schedule's value at its key steps."""

import numpy as np
import pytest

from research.core import schedules


def test_one_cycle_key_points():
    s = schedules.one_cycle(1000, max_lr=1.0, pct_start=0.25, div_factor=25.0, final_div_factor=1e4)
    assert float(s(0)) == pytest.approx(1.0 / 25)
    assert float(s(250)) == pytest.approx(1.0)
    assert float(s(1000)) == pytest.approx(1.0 / 25 / 1e4, rel=1e-3)
    values = np.array([float(s(i)) for i in range(1001)])
    assert np.all(np.diff(values[:250]) > 0) and np.all(np.diff(values[251:]) <= 0)


def test_one_cycle_momentum_moves_opposite_to_lr():
    m = schedules.one_cycle_momentum(1000, pct_start=0.25, max_momentum=0.95, min_momentum=0.85)
    assert float(m(0)) == pytest.approx(0.95)
    assert float(m(250)) == pytest.approx(0.85)
    assert float(m(625)) == pytest.approx(0.90, abs=1e-3)
    assert float(m(1000)) == pytest.approx(0.95)


def test_sgdr_restarts_with_cycle_mult():
    s = schedules.sgdr(base_lr=0.1, cycle_len=10, cycle_mult=2, num_cycles=3)
    assert schedules.sgdr_total_steps(10, 2, 3) == 70
    # Restarts at the start of each cycle (steps 0, 10, 30), half-way values at the cycle middles.
    for start, length in [(0, 10), (10, 20), (30, 40)]:
        assert float(s(start)) == pytest.approx(0.1)
        assert float(s(start + length // 2)) == pytest.approx(0.05, abs=1e-6)
        assert float(s(start + length - 1)) < 0.01
    assert float(s(70)) == pytest.approx(0.0, abs=1e-7)


def test_cosine_and_constant():
    c = schedules.cosine(100, base_lr=2.0)
    assert float(c(0)) == pytest.approx(2.0) and float(c(50)) == pytest.approx(1.0) and float(c(100)) == 0.0
    w = schedules.cosine(100, base_lr=2.0, warmup_steps=10)
    assert float(w(0)) == 0.0 and float(w(10)) == pytest.approx(2.0)
    assert float(schedules.constant(0.3)(12345)) == pytest.approx(0.3)
