"""Markdown for study reports: tables, and means with their 95% intervals as the metric is read."""

import math

import numpy as np

from metalab.evaluation.stats import Estimate, paired_difference, summarize


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub-flavoured Markdown table; cells are turned into text with str()."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def estimate_cell(mean: float, ci95: float, metric: str) -> str:
    """"97.40 ± 0.52" (accuracy, in percent) or "0.0471 ± 0.003" (other metrics); "diverged" when not finite."""
    if not math.isfinite(mean):
        return "diverged"
    if metric == "accuracy":
        return f"{100 * mean:.2f} ± {100 * ci95:.2f}"
    return f"{mean:.4g} ± {ci95:.2g}"


def estimate_row(scores) -> dict:
    """{"mean", "ci95", "n"} of per-episode scores (summarize: a diverged episode makes the mean infinite)."""
    estimate = summarize(scores)
    return {"mean": estimate.mean, "ci95": estimate.ci95, "n": estimate.n}


def paired_row(scores, reference) -> dict:
    """{"diff_mean", "diff_ci95"}: mean of scores - reference over the same episodes, with its interval; inf
    and nan when either diverged."""
    a, b = np.asarray(scores, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return {"diff_mean": float("inf"), "diff_ci95": float("nan")}
    difference: Estimate = paired_difference(a, b)
    return {"diff_mean": difference.mean, "diff_ci95": difference.ci95}


def difference_cell(mean: float, ci95: float, metric: str) -> str:
    """"+1.20 ± 0.80" (accuracy points) or "-0.012 ± 0.004"; "n/a" when a side diverged."""
    if not math.isfinite(mean):
        return "n/a"
    if metric == "accuracy":
        return f"{100 * mean:+.2f} ± {100 * ci95:.2f}"
    return f"{mean:+.4g} ± {ci95:.2g}"
