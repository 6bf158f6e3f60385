"""Pictures: sampled episodes and learning curves (matplotlib, headless)."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metalab.atomic import atomic_path  # noqa: E402
from metalab.data.episode import Episode  # noqa: E402


def save_png(fig, path) -> Path:
    """Lay out `fig`, write it to `path` as a PNG whole or not at all, close it; the path."""
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def episode_grid(episode: Episode, path: Path, max_queries: int = 10) -> Path:
    """One row per task: its support images, then up to `max_queries` query images, each titled
    with its label. Writes a PNG atomically."""
    tasks = episode.batch_size
    support = episode.support_x.shape[1]
    queries = min(max_queries, episode.query_x.shape[1])
    columns = support + queries
    fig, axes = plt.subplots(tasks, columns, figsize=(0.9 * columns, 1.1 * tasks), squeeze=False)
    for t in range(tasks):
        for c in range(columns):
            is_support = c < support
            x, y = (episode.support_x, episode.support_y) if is_support else (episode.query_x, episode.query_y)
            i = c if is_support else c - support
            ax = axes[t][c]
            ax.imshow(x[t, i, 0].cpu().numpy(), cmap="Blues" if is_support else "Oranges", vmin=0, vmax=1)
            ax.set_title(f"{'S' if is_support else 'Q'} {int(y[t, i])}", fontsize=7)
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("support (blue) and query (orange) examples with their labels; one task per row", fontsize=9)
    return save_png(fig, path)


def learning_curves(metrics_path: Path, path: Path, label: str) -> Path:
    """Training loss and validation score (named `label`, e.g. accuracy) against meta-steps and wall time."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    val = [r for r in records if "val" in r]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot([r["step"] for r in records], [r["loss"] for r in records], lw=0.8)
    axes[0].set(xlabel="meta-step", ylabel="meta-train query loss", yscale="log")
    axes[1].plot([r["step"] for r in val], [r["val"] for r in val], marker="o")
    axes[1].set(xlabel="meta-step", ylabel=f"meta-val {label}")
    axes[2].plot([r["time"] / 60 for r in val], [r["val"] for r in val], marker="o", label="wall time")
    if all("cpu_time" in r for r in val):
        axes[2].plot([r["cpu_time"] / 60 for r in val], [r["val"] for r in val], marker="s", label="CPU time")
    axes[2].set(xlabel="training time (minutes)", ylabel=f"meta-val {label}")
    axes[2].legend()
    return save_png(fig, path)


def score_against_shots(estimates: dict, shots: list[int], metric: str, path: Path) -> Path:
    """One line per method: its mean score at each number of shots with 95% interval bars.
    `estimates` maps a method's name to its Estimate for each entry of `shots`."""
    scale = 100 if metric == "accuracy" else 1
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in estimates.items():
        ax.errorbar(shots, [scale * e.mean for e in values], yerr=[scale * e.ci95 for e in values], marker="o",
                    capsize=3, label=name)
    ax.set(xscale="log", xlabel="shots (examples per class in the support set)",
           ylabel=f"meta-test {metric}{' (%)' if metric == 'accuracy' else ''}")
    ax.set_xticks(shots, [str(k) for k in shots])
    ax.legend()
    ax.grid(alpha=0.3)
    return save_png(fig, path)
