"""The range test's suggestions (research/lr_finder.suggest) against values computed by hand on fixed curves,
and fastai's `valley` rule reproduced, so that the README's diagnosis of it is checked.

The hand-computed curves sample 4 rates per decade: at that density `suggest` smooths with beta 0 (no
smoothing), and each curve is monotone in pieces with a flat stretch of 3 at its bottom, which a running median
of 5 leaves unchanged; so every rule can be followed by hand on the listed numbers.
"""

import numpy as np
import pytest

from research.core import lr_finder

# 25 rates, 1e-6 to 1, 4 per decade: rate i = 10 ** (-6 + i / 4).
RATES = lr_finder.sweep_values(1e-6, 1.0, 25)
#                  i:  0    1    2    3    4    5    6    7    8    9    10   11    12    13   14   15   16
U_CURVE = np.array([2.3, 2.3, 2.3, 2.3, 2.2, 2.0, 1.6, 1.0, 0.7, 0.55, 0.5, 0.45, 0.42, 0.4, 0.4, 0.4, 0.5,
                    0.8, 1.5, 3.0, 6.0, 10.0, 20.0, 40.0, 80.0])
#                  17   18   19   20   21    22    23    24


def rate(i: float) -> float:
    return 10 ** (-6 + i / 4)


# By hand, on U_CURVE:
# - lowest loss 0.4 first at i=13; the floor is within 10% of the total drop: 0.4 + 0.1 * (2.3 - 0.4) = 0.59,
#   so it spans i=9 (0.55) to i=16 (0.5); bottom = the geometric middle of rates 9 and 16.
# - minimum = rate 13 / 10.
# - steep: central differences before the minimum, c[i+1] - c[i-1]: ..., i=5: -0.6, i=6: -1.0, i=7: -0.9,
#   i=8: -0.45, ...: the steepest point is i=6.
# - slide: from i=6, on while the slope is steeper than half of the steepest (-0.5): i=7 (-0.9) yes, i=8 (-0.45)
#   no: i=7.
# - valley (fastai's arithmetic): the longest strictly decreasing subsequence is 2.3 (i=3), 2.2, ..., 0.42,
#   0.4 (i=13), 11 points; fastai counts from one before its start (i=2): 2 + int(11/3) + int(11/6) = 6.
HAND = {"bottom": np.sqrt(rate(9) * rate(16)), "minimum": rate(13) / 10, "steep": rate(6), "slide": rate(7),
        "valley": rate(6)}


def test_the_curves_reach_the_rules_unchanged():
    """The premise of the hand computations: no smoothing at 4 rates per decade, and the median leaves
    U_CURVE as it is."""
    assert lr_finder.beta_for(RATES) == 0.0
    np.testing.assert_array_equal(lr_finder.suggestion_curve(RATES, U_CURVE), U_CURVE)


def test_suggestions_on_a_clean_u_equal_the_hand_computed_values():
    assert lr_finder.suggest(RATES, U_CURVE) == pytest.approx(HAND, rel=1e-9)


def test_an_early_spike_changes_no_suggestion():
    """A bad batch at i=1: the running median restores 2.3 there (a window of 2.3s and one outlier), so every
    suggestion is the hand-computed one. Read from the raw curve, the spike would move steep to i=2 and start
    the valley's decreasing run at i=1."""
    spiked = U_CURVE.copy()
    spiked[1] = 9.0
    assert lr_finder.suggest(RATES, spiked) == pytest.approx(HAND, rel=1e-9)


def test_a_curve_ending_in_nan_and_inf_is_read_up_to_its_last_finite_loss():
    """The sweep's last steps diverged (NaN, inf): they are dropped, the 20 finite points are still 4 per
    decade and unchanged by the median, and every rule only reads up to the floor's end (i=16)."""
    diverged = np.concatenate([U_CURVE[:20], [np.nan, np.inf]])
    assert lr_finder.suggest(RATES[:22], diverged) == pytest.approx(HAND, rel=1e-9)
    with pytest.raises(ValueError, match="only 2 finite losses"):
        lr_finder.suggest(RATES[:4], np.array([2.3, 2.2, np.nan, np.inf]))


def test_a_dense_symmetric_u_keeps_its_centre_through_the_smoothing():
    """100 rates (about 16 per decade, so the zero-phase smoothing is on) over a parabola in log-rate with its
    minimum at 1e-3: the smoothing runs forwards and backwards, so it adds no lag; bottom is the middle of a
    symmetric floor, 1e-3, and minimum 1e-4, each within one sweep step (a factor 1.15). A forward-only EMA
    would move both about 3 steps right."""
    rates = lr_finder.sweep_values(1e-6, 1.0, 100)
    parabola = 1.0 + (np.log10(rates) + 3) ** 2
    suggestions = lr_finder.suggest(rates, parabola)
    step = rates[1] / rates[0]
    assert 1e-3 / step < suggestions["bottom"] < 1e-3 * step
    assert 1e-4 / step < suggestions["minimum"] < 1e-4 * step


# ------------------------------------------------------------------------------------- fastai's valley rule

def fastai_valley(losses) -> tuple[int, int]:
    """fastai v2's `valley` (fastai.callback.schedule), loop for loop: (the suggested index, the index before
    the longest strictly decreasing subsequence's first point). It keeps the first longest subsequence."""
    lengths = [1] * len(losses)
    before_start, end = 0, 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and lengths[i] < lengths[j] + 1:
                lengths[i] = lengths[j] + 1
            if lengths[end] < lengths[i]:
                end, before_start = i, i - lengths[i]
    third = (end - before_start) / 3
    return before_start + int(third) + int(third / 2), before_start


def fastai_lr_find_valley(rates, raw_losses, num_it: int) -> tuple[float, int]:
    """What fastai's `lr_find` suggests: its Recorder keeps the EMA-smoothed loss (beta 0.98, debiased); it
    drops the first num_it // 10 and the last 5 points, then applies `valley`. Returns (rate, before_start in
    the trimmed curve)."""
    smoothed = lr_finder.smooth(raw_losses, 0.98)
    kept = slice(num_it // 10, -5)
    index, before_start = fastai_valley(smoothed[kept])
    return float(rates[kept][index]), before_start


@pytest.mark.parametrize("seed", range(6))
def test_our_valley_index_is_fastais(seed):
    rng = np.random.default_rng(seed)
    curves = [np.cumsum(rng.normal(-0.05, 0.2, size=60)),  # a noisy descent
              rng.permutation(30).astype(float),  # no order at all
              np.round(rng.normal(size=40), 1)]  # ties
    for curve in curves:
        assert lr_finder.valley_index(curve) == max(fastai_valley(curve)[0], 0)
    assert lr_finder.valley_index(U_CURVE) == fastai_valley(U_CURVE)[0] == 6


def creeping_cnn_curve():
    """A range test's raw loss as a CNN on Fashion-MNIST gives it (80 rates, 1e-6 to 10, the experiments'
    sweep): from the first steps it creeps down (2.30 -> 2.25 by 1e-4), falls around 1e-3, has its floor
    around 1e-2 and rises, then blows up past 0.3; cut where the sweep stops (smoothed loss > 4x its best)."""
    rates = lr_finder.sweep_values(1e-6, 10.0, 80)
    x = np.log10(rates)
    losses = 2.30 - 0.02 * (x + 6) - 1.8 / (1 + np.exp(-(x + 3) * 4))
    losses += np.where(x > -1.5, (x + 1.5) ** 2, 0) + np.where(x > -0.5, 30 * (x + 0.5), 0)
    smoothed = lr_finder.smooth(losses, 0.98)
    stop = int(np.argmax(smoothed > 4 * np.minimum.accumulate(smoothed)))
    return rates[:stop + 1], losses[:stop + 1]


def test_readme_diagnosis_of_fastais_valley():
    """README: fastai's `valley` suggests far too small a rate because it reads the EMA-smoothed loss (beta
    0.98), which lags the raw loss, and because the curve creeps down from the first steps, so the longest
    descent starts at the beginning of the sweep and its middle lands decades below the best rates."""
    rates, losses = creeping_cnn_curve()
    assert len(rates) == 73
    floor = losses.min() + 0.1 * (losses[0] - losses.min())
    floor_rates = rates[losses <= floor]
    assert 3e-3 < floor_rates[0] and floor_rates[-1] < 1e-1  # the raw curve's floor: the rates that train best
    # The EMA lags: its minimum is at 0.25, the raw curve's at 0.033.
    assert rates[np.argmin(lr_finder.smooth(losses, 0.98))] > 5 * rates[np.argmin(losses)]
    suggested, before_start = fastai_lr_find_valley(rates, losses, num_it=80)
    assert before_start <= 0  # the longest descent starts at the first point fastai keeps: the creep
    assert suggested < floor_rates[0] / 4  # 1.0e-3: below the floor
    ours = lr_finder.suggest(rates, losses)
    assert suggested < ours["bottom"] / 10  # more than a decade below our default
    assert floor_rates[0] < ours["bottom"] < floor_rates[-1]  # 1.6e-2: on the floor
    assert ours["valley"] < 3e-4  # the same rule on our lag-free curve starts at the creep too: 1.1e-4
