"""What `metalab eval` and `metalab finetune` print and save of per-episode scores: one path for both."""

import numpy as np

from metalab.evaluation.stats import summarize
from metalab.methods.learner import Metric

# An episode whose loss-like score grew more than DIVERGED-fold from its start has diverged; the start counts as at
# least the median start, so that an episode starting near zero is not flagged for a small absolute rise.
DIVERGED = 10.0


def diverged(scores: np.ndarray, row: int, metric: Metric) -> np.ndarray:
    """[episodes] bool: the episodes whose score after `row` steps is non-finite or, for a loss-like metric,
    more than DIVERGED times its value before adaptation (row 0), or than the median of those values."""
    values = scores[row]
    start = np.maximum(scores[0], np.median(scores[0]))
    grown = np.zeros_like(values, dtype=bool) if metric.higher_is_better else values > DIVERGED * start
    return ~np.isfinite(values) | grown


def report(scores: np.ndarray, rows: list[int], metric: Metric, step_name: str, show: bool = True) -> dict:
    """Print (if `show`), for each row of scores [rows, episodes] named in `rows`, the mean ± 95% interval, and for
    a metric where lower is better (a loss) the median and the episodes that diverged; return the same as a dict."""
    results = {}
    for row in rows:
        values = scores[row]
        estimate = summarize(values)
        line = estimate.as_percent() if metric.name == "accuracy" else str(estimate)
        entry = {"mean": estimate.mean, "ci95": estimate.ci95}
        if not metric.higher_is_better:
            count = int(diverged(scores, row, metric).sum())
            entry.update(median=float(np.median(values)), diverged=count)
            line += f", median {entry['median']:.4g}"
            if count:
                line += f"; DIVERGED in {count} of {values.size} episodes (loss up more than {DIVERGED:g}x)"
        when = f"after {row:2d} {step_name}" if step_name else "after reading the support set"
        if show:
            print(f"  {when}: {metric.name} {line}")
        results[row] = entry
    return results
