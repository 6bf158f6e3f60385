"""The alphabet-shift report: accuracy per alphabet and model (tables and bar plots with 95% intervals), the
generalization ladder (meta-train, seen alphabets, unseen alphabets) and Lake's benchmark per run."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from metalab.evaluation.lake import PUBLISHED  # noqa: E402
from metalab.plots import save_png  # noqa: E402
from metalab.studies.tables import difference_cell, estimate_cell, markdown_table  # noqa: E402

PART_NAMES = {"train": "meta-train", "val": "meta-validation", "test": "meta-test"}
MIXED = "mixed"  # the group of a part's episodes whose classes come from any of its alphabets


def write_report(results: dict[str, dict], out: Path) -> str:
    """Write alphabet_shift_<N>way.png for each number of ways with a number; return the Markdown body."""
    rows = [row for result in results.values() for row in result.get("rows", []) if "part" in row]
    models = list(dict.fromkeys(row["model"] for row in rows))
    episodes = sorted({row["n"] for row in rows if "n" in row})
    sections = [_introduction(episodes), _too_few(rows)]
    for ways in sorted({row["ways"] for row in rows}):
        at = [row for row in rows if row["ways"] == ways]
        sections.append(f"## {ways}-way 1-shot\n\n" + _accuracy_table(at, models))
        if any("mean" in row for row in at):
            plot = _bars(at, models, out / f"alphabet_shift_{ways}way.png", ways)
            sections.append(f"![{ways}-way accuracy per alphabet]({plot.name})\n")
    sections.append(_ladder_table(rows, models))
    sections.append(_lake_section(results))
    return "\n".join(sections)


def _introduction(episodes: list[int]) -> str:
    counted = " or ".join(map(str, episodes)) or "no"
    return ("Accuracy (%) ± 95% interval over " + counted + " episodes per cell (1 shot, 15 queries per class), "
            "after each method's evaluation steps, on the same episodes for every model. Meta-train episodes are "
            "of the characters and drawings the models were meta-trained on (upright, undistorted); meta-validation "
            "holds characters no model was meta-trained on; the column *seen* says whether their alphabet is one of "
            "meta-training's (on the minimal split the validation characters are drawn from the training "
            "alphabets, on the lake split they are 5 held-out alphabets). *within one alphabet*: all N classes "
            "of an episode from that alphabet, as in Lake's benchmark; *mixed*: classes from any alphabet of the "
            "part, as in meta-training. n/a: the group has fewer characters than ways, or the model's network "
            "fits only the ways it was trained at.\n")


def _too_few(rows: list[dict]) -> str:
    """Which groups have fewer characters than ways: the split's limits, said once instead of in every cell."""
    lines = []
    for ways in sorted({row["ways"] for row in rows}):
        short = {(row["part"], row["alphabet"]): row["characters"] for row in rows
                 if row["ways"] == ways and row["characters"] < ways}
        if short:
            listed = ", ".join(f"{a} of {PART_NAMES[p]} ({n})" for (p, a), n in short.items())
            lines.append(f"- {ways}-way: {listed}")
    if not lines:
        return ""
    return "Groups with fewer characters than ways (characters in brackets), so without episodes:\n\n" + \
        "\n".join(lines) + "\n"


def _cell(row: dict) -> str:
    if "mean" not in row:
        return f"n/a ({row['note']})"
    return estimate_cell(row["mean"], row["ci95"], "accuracy")


def _group_name(row: dict) -> str:
    return MIXED if row["alphabet"] == MIXED else f"within {row['alphabet']}"


def _accuracy_table(rows: list[dict], models: list[str]) -> str:
    by_group: dict[tuple, dict] = {}
    for row in rows:
        by_group.setdefault((row["part"], row["alphabet"]), {})[row["model"]] = row
    lines = []
    for (part, _), cells in by_group.items():
        first = next(iter(cells.values()))
        lines.append([PART_NAMES[part], _group_name(first), first["seen"], first["characters"],
                      *(_cell(cells[m]) if m in cells else "" for m in models)])
    return markdown_table(["part", "episodes", "alphabet seen in meta-training", "characters", *models], lines)


def _bars(rows: list[dict], models: list[str], path: Path, ways: int) -> Path:
    """Grouped bars: one group per (part, alphabet), one bar per model, its 95% interval as an error bar; groups and
    models without a number (n/a in the table) are left out."""
    # Groups where no model has a number (too few characters) are in the table, not the plot.
    groups = list(dict.fromkeys((row["part"], row["alphabet"]) for row in rows if "mean" in row))
    models = [m for m in models if any("mean" in row for row in rows if row["model"] == m)]  # others: n/a
    index = {(row["part"], row["alphabet"], row["model"]): row for row in rows}
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(groups) + 2), 5.0))
    x = np.arange(len(groups))
    for k, model in enumerate(models):
        found = [index.get((part, alphabet, model), {}) for part, alphabet in groups]
        means = [100 * r["mean"] if "mean" in r and math.isfinite(r["mean"]) else np.nan for r in found]
        cis = [100 * r["ci95"] if "ci95" in r and math.isfinite(r["ci95"]) else 0.0 for r in found]
        ax.bar(x + (k - (len(models) - 1) / 2) * width, means, width, yerr=cis, capsize=3, label=model)
    seen = {(row["part"], row["alphabet"]): row["seen"] for row in rows}
    labels = [f"{a}\n{PART_NAMES[p]}\nseen: {seen[(p, a)]}" for p, a in groups]
    ax.set_xticks(x, labels, fontsize=7)
    boundary = [k for k in range(1, len(groups)) if groups[k][0] != groups[k - 1][0]]
    for k in boundary:  # one part after another: meta-train, meta-validation, meta-test
        ax.axvline(k - 0.5, color="black", linewidth=0.8)
    ax.axhline(100 / ways, color="grey", linestyle=":", linewidth=1, label=f"chance ({100 / ways:g}%)")
    ax.set(ylabel="query accuracy (%)", ylim=(0, 118), yticks=range(0, 101, 20),
           title=f"{ways}-way 1-shot accuracy per alphabet (error bars: 95% interval; no bar: n/a)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", ncol=min(len(models) + 1, 3))
    return save_png(fig, path)


def _ladder_table(rows: list[dict], models: list[str]) -> str:
    """Mixed episodes of each part side by side, and the drop from each rung to the next. The episodes of two parts
    differ, so a drop's interval is sqrt(ci_a^2 + ci_b^2), that of two independent means."""
    lines = []
    for ways in sorted({row["ways"] for row in rows}):
        for model in models:
            mixed = {row["part"]: row for row in rows
                     if row["ways"] == ways and row["model"] == model and row["alphabet"] == MIXED}
            if not any("mean" in row for row in mixed.values()):
                continue
            rungs = [_cell(mixed[part]) if part in mixed else "" for part in PART_NAMES]
            drops = [_drop(mixed.get(a, {}), mixed.get(b, {})) for a, b in (("train", "val"), ("val", "test"))]
            lines.append([model, ways, *rungs, *drops])
    head = "## The generalization ladder (mixed episodes)\n\n"
    if not lines:
        return head + "No model has a number at any rung.\n"
    return (head + "Accuracy on the characters trained on, on new characters of the same alphabets and on unseen "
            "alphabets; a drop is the upper rung minus the lower, in points, with the interval of two independent "
            "means (the episodes differ).\n\n"
            + markdown_table(["model", "ways", *PART_NAMES.values(), "drop train - val", "drop val - test"], lines))


def _drop(upper: dict, lower: dict) -> str:
    if "mean" not in upper or "mean" not in lower:
        return ""
    return difference_cell(upper["mean"] - lower["mean"], math.hypot(upper["ci95"], lower["ci95"]), "accuracy")


def _lake_section(results: dict[str, dict]) -> str:
    published = ", ".join(f"{name} {error:g}%" for name, error in PUBLISHED)
    head = "## Lake's 20-way within-alphabet one-shot benchmark\n\n"
    absent = [r["lake_absent"] for r in results.values() if "lake_absent" in r]
    if absent:
        return (head + f"Not run: all_runs.zip is absent from {Path(absent[0]).parent} (put the official file "
                "there, or let `metalab eval CHECKPOINT --benchmark lake` download it, then run the study again).\n")
    cells = [r for r in results.values() if r.get("rows") and r["rows"][0].get("benchmark") == "lake"]
    models = [r["rows"][0]["model"] for r in cells]
    notes = [f"- {r['rows'][0]['model']}: n/a ({r['rows'][0]['note']})" for r in cells if "note" in r["rows"][0]]
    scored = [r for r in cells if "lake_mean_error" in r]
    text = head + f"Error % per run, after each method's evaluation steps. Published, trained on the 30 background " \
                  f"alphabets: {published}.\n\n"
    if scored:
        runs = [row["run"] for row in scored[0]["rows"]]
        lines = [[run, *(f"{r['rows'][k]['error_percent']:.2f}" for r in scored)] for k, run in enumerate(runs)]
        lines.append(["mean", *(f"{r['lake_mean_error']:.2f}" for r in scored)])
        text += markdown_table(["run", *(r["rows"][0]["model"] for r in scored)], lines)
    if notes:
        text += "\n" + "\n".join(notes) + "\n"
    return text if models else head + "No model.\n"
