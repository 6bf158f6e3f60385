"""Study plots: one line per method with its 95% interval as a shaded band (matplotlib, headless, PNG)."""

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metalab.plots import save_png  # noqa: E402


@dataclass(frozen=True)
class Series:
    """One line: y = mean at each x, with the band mean ± ci95. Non-finite means (diverged) are left out."""

    label: str
    x: list[float]
    mean: list[float]
    ci95: list[float]
    style: str = "-"  # matplotlib line style, e.g. "--" for a baseline
    color: str | None = None  # e.g. "C2": the same method in the same colour across a report's plots


def curves_with_bands(series: list[Series], path: Path, xlabel: str, ylabel: str, title: str,
                      xscale: str = "linear", yscale: str = "linear", xticks: list | None = None,
                      xticklabels: list[str] | None = None, scale: float = 1.0, reference: float | None = None,
                      ylim: tuple | None = None, horizontal: float | None = None) -> Path:
    """Write a PNG of `series` (each mean and band multiplied by `scale`, e.g. 100 for percent) to `path`.
    `reference` draws a dotted vertical line at that x (e.g. the training distribution's setting), `horizontal`
    a grey horizontal line at that y (e.g. 0 for differences)."""
    crowded = len(series) > 4  # then the legend goes beside the axes, where it hides no curve
    fig, ax = plt.subplots(figsize=(11 if crowded else 7, 4.5))
    for line in series:
        points = [(x, m * scale, c * scale) for x, m, c in zip(line.x, line.mean, line.ci95) if math.isfinite(m)]
        if not points:
            ax.plot([], [], line.style, color=line.color, label=f"{line.label} (diverged)")
            continue
        xs, means, cis = zip(*points)
        cis = [c if math.isfinite(c) else 0.0 for c in cis]
        drawn = ax.plot(xs, means, line.style, marker="o", markersize=3, color=line.color, label=line.label)[0]
        ax.fill_between(xs, [m - c for m, c in zip(means, cis)], [m + c for m, c in zip(means, cis)],
                        color=drawn.get_color(), alpha=0.2, linewidth=0)
    if reference is not None:
        ax.axvline(reference, color="grey", linestyle=":", linewidth=1)
    if horizontal is not None:
        ax.axhline(horizontal, color="grey", linewidth=1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, xscale=xscale, yscale=yscale)
    if xticks is not None:
        ax.minorticks_off()  # a log axis would label its own minor ticks between ours
        ax.set_xticks(xticks, xticklabels or [str(t) for t in xticks])
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="shaded: 95% interval", title_fontsize=8,
              **(dict(loc="upper left", bbox_to_anchor=(1.01, 1.0)) if crowded else {}))
    return save_png(fig, path)
