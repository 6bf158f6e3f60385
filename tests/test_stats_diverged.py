import math

from metalab.evaluation.stats import mean_ci, summarize


def test_summarize_reports_divergence_as_infinite_mean():
    assert summarize([1.0, 2.0, 3.0]) == mean_ci([1.0, 2.0, 3.0])
    diverged = summarize([1.0, float("nan"), 3.0])
    assert math.isinf(diverged.mean) and diverged.n == 3
