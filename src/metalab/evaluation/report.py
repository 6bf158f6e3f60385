"""What `metalab eval` and `metalab finetune` print and save of per-episode scores: one path for both."""

import numpy as np

from metalab.evaluation.stats import Estimate, summarize
from metalab.methods.learner import Metric

# An episode whose loss-like score ends more than DIVERGED-fold above the best it reached along the way has
# diverged (it may first improve, then blow up); never for a score below the median start (0.01 -> 0.2 is no
# divergence on a problem that starts near 1).
DIVERGED = 10.0


def diverged(scores: np.ndarray, row: int, metric: Metric) -> np.ndarray:
    """[episodes] bool: the episodes whose score after `row` steps (scores [rows, episodes]) is non-finite or, for
    a loss-like metric, above both DIVERGED times its best after 0..row steps and the median score at step 0."""
    values = scores[row]
    if metric.higher_is_better:
        return ~np.isfinite(values)
    best = np.nanmin(np.where(np.isfinite(scores[:row + 1]), scores[:row + 1], np.nan), axis=0)
    threshold = np.maximum(DIVERGED * best, np.median(scores[0]))
    return ~np.isfinite(values) | (values > threshold)


def report(scores: np.ndarray, rows: list[int], metric: Metric, step_name: str, show: bool = True) -> dict:
    """Print (if `show`), for each row of scores [rows, episodes] named in `rows`, the mean ± 95% interval, and for
    a metric where lower is better (a loss) the median and the episodes that diverged; return the same as a dict."""
    results = {}
    for row in rows:
        line, results[row] = row_summary(scores, row, metric)
        when = f"after {row:2d} {step_name}" if step_name else "after reading the support set"
        if show:
            print(f"  {when}: {metric.name} {line}")
    return results


def row_summary(scores: np.ndarray, row: int, metric: Metric) -> tuple[str, dict]:
    """(as printed, as saved): the mean ± 95% interval of row `row` of scores [rows, episodes], and for a metric
    where lower is better the median and the episodes that diverged."""
    values = scores[row]
    estimate = summarize(values)
    line = estimate_text(estimate, metric)
    entry = {"mean": estimate.mean, "ci95": estimate.ci95}
    if not metric.higher_is_better:
        count = int(diverged(scores, row, metric).sum())
        entry.update(median=float(np.median(values)), diverged=count)
        line += f", median {entry['median']:.4g}"
        if count:
            line += f"; DIVERGED in {count} of {values.size} episodes (up more than {DIVERGED:g}x from their best)"
    return line, entry


def estimate_text(estimate: Estimate, metric: Metric) -> str:
    return estimate.as_percent() if metric.name == "accuracy" else str(estimate)
