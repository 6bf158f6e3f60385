"""Mean with 95% interval, and paired differences, against hand computations."""

import math

import numpy as np
import pytest

from metalab.evaluation.stats import Estimate, mean_ci, paired_difference


def test_mean_ci_by_hand():
    values = [1.0, 2.0, 3.0, 4.0]
    # mean 2.5; sample variance ((1.5^2 + 0.5^2) * 2) / 3 = 5/3; half-width 1.96 * sqrt(5/3) / sqrt(4)
    estimate = mean_ci(values)
    assert estimate.n == 4
    assert estimate.mean == pytest.approx(2.5, abs=1e-12)
    assert estimate.ci95 == pytest.approx(1.96 * math.sqrt(5 / 3) / 2, rel=1e-12)
    assert estimate.ci95 == pytest.approx(1.2651743, rel=1e-6)


def test_mean_ci_of_accuracies_and_shapes():
    rng = np.random.default_rng(0)
    accuracy = rng.binomial(75, 0.6, size=(40, 25)) / 75  # any shape: all values count
    estimate = mean_ci(accuracy)
    flat = accuracy.reshape(-1)
    assert estimate.n == 1000
    assert estimate.mean == pytest.approx(flat.mean())
    assert estimate.ci95 == pytest.approx(1.96 * flat.std(ddof=1) / math.sqrt(1000))
    assert mean_ci(list(flat)) == estimate
    assert "%" in estimate.as_percent() and f"{100 * estimate.mean:.2f}%" in estimate.as_percent()
    assert "n=1000" in str(estimate)


def test_mean_ci_edge_cases():
    assert mean_ci([3.0, 3.0, 3.0]) == Estimate(3.0, 0.0, 3)
    single = mean_ci([0.7])
    assert single.mean == 0.7 and single.n == 1 and math.isnan(single.ci95)  # no spread from one value
    with pytest.raises(ValueError, match="no values"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("inf")])


def test_paired_difference_is_the_interval_of_the_differences():
    rng = np.random.default_rng(1)
    shared = rng.normal(0.6, 0.2, size=500)  # episode difficulty, common to both methods
    a = shared + rng.normal(0.02, 0.01, size=500)
    b = shared
    paired = paired_difference(a, b)
    direct = mean_ci(a - b)
    assert paired == direct
    assert paired.mean == pytest.approx(np.mean(a - b))
    assert paired.ci95 == pytest.approx(1.96 * np.std(a - b, ddof=1) / math.sqrt(500))
    # pairing removes the shared episode difficulty: far narrower than either method's own interval
    assert paired.ci95 < mean_ci(a).ci95 / 5
    assert paired_difference(b, a).mean == pytest.approx(-paired.mean)


def test_paired_difference_needs_the_same_episodes():
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="same episodes"):
        paired_difference(np.zeros((2, 3)), np.zeros(6))


def test_summarize_reports_divergence_as_infinite_mean():
    from metalab.evaluation.stats import summarize

    assert summarize([1.0, 2.0, 3.0]) == mean_ci([1.0, 2.0, 3.0])
    diverged = summarize([1.0, float("nan"), 3.0])
    assert math.isinf(diverged.mean) and diverged.n == 3
