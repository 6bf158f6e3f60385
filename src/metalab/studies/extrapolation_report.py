"""The report of `extrapolation-omniglot`: accuracy against shear and scale, and differences with MAML."""

import math
from fractions import Fraction
from pathlib import Path

from metalab.studies.figures import Series, curves_with_bands
from metalab.studies.tables import difference_cell, estimate_cell, markdown_table

# Finn & Levine (2018), full Omniglot 5-way 1-shot: MAML / SNAIL / Meta Networks, accuracy in percent.
AUTHORS = {"shear -pi/4": (97.4, 94.0, 89.6), "shear 0": (98.93, 98.95, 98.2), "shear pi/4": (97.7, 94.4, 86.7),
           "scale 1/3": (75.5, 74.2, 62.0), "scale 2": (83.5, 79.7, 75.0)}
AXES = {"shear": ("shear (radians; ink below the centre moves right)", "scale", 1.0),
        "scale": ("scale (magnification about the centre; log axis)", "shear", 0.0)}

DEFINITION = """Each task's drawings (support and query alike) are distorted about the centre c of the 105x105
drawing before the downscale to 28x28: p' = c + scale * [[1, tan(shear)], [0, 1]] (p - c), p = (column, row),
rows counted downward (data/affine.py). Shear leans vertical strokes by `shear` radians; scale 2 is the drawing
magnified twice about its centre (strokes twice as long and as thick), the ink farther than 26.25 pixels of the
105-pixel drawing's centre in either axis cropped by the frame; scale 1/3 shrinks it to the middle third. Episode
i holds the same characters, drawers and labels at every distortion and for every method. Accuracy after each
method's own evaluation steps, mean ± 95% interval over the episodes; differences are paired over the same
episodes, against the MAML checkpoint trained alike (with or without --augment)."""


def write_report(results: dict[str, dict], out: Path) -> str:
    rows = [row for result in results.values() for row in result["rows"]]
    checkpoints = list(dict.fromkeys(row["checkpoint"] for row in rows))
    first = {c: next(r for r in rows if r["checkpoint"] == c) for c in checkpoints}
    parts = ["## What is measured\n", DEFINITION + "\n", "## Checkpoints\n",
             markdown_table(["method", "checkpoint", "meta-training steps", "evaluation steps",
                             "trained with --augment"],
                            [[first[c]["label"], f"`{c}`", first[c]["trained_steps"], first[c]["eval_steps"],
                              f"yes ({first[c]['augment']:g})" if first[c]["augment"] else "no"]
                             for c in checkpoints])]
    if any(first[c]["augment"] for c in checkpoints):
        parts.append("--augment draws random shears and scales for meta-training tasks, which puts these test "
                     "shifts inside its training distribution: its checkpoints are plotted in a panel of their own "
                     "(files ending -augment.png) and compared with a MAML trained with it.\n")
    if not any(first[c]["method"] == "maml" for c in checkpoints):
        parts.append("No MAML checkpoint was given: no paired differences.\n")
    for axis, (xlabel, other, fixed) in AXES.items():
        sweep = sorted({r[axis] for r in rows if r[other] == fixed})
        cell = {(r["checkpoint"], r[axis]): r for r in rows if r[other] == fixed}
        header = ["method"] + [_value_label(axis, v) for v in sweep]
        parts.append(f"## Accuracy (%) against {axis}\n")
        parts.append(markdown_table(header, [[first[c]["label"]] + [estimate_cell(cell[c, v]["mean"],
                                                                                   cell[c, v]["ci95"], "accuracy")
                                                                    for v in sweep] for c in checkpoints]))
        compared = [c for c in checkpoints if "diff_mean" in first[c] and first[c]["method"] != "maml"]
        if compared:
            parts.append(f"Difference with MAML (percentage points, paired), against {axis}:\n")
            parts.append(markdown_table(header, [[first[c]["label"]] + [
                difference_cell(cell[c, v]["diff_mean"], cell[c, v]["diff_ci95"], "accuracy") for v in sweep]
                for c in compared]))
        for augment in sorted({bool(first[c]["augment"]) for c in checkpoints}):
            group = [c for c in checkpoints if bool(first[c]["augment"]) == augment]
            suffix = "-augment" if augment else ""
            _plots(axis, xlabel, sweep, group, [c for c in compared if c in group], cell, first, out, suffix)
            parts.append(f"![accuracy against {axis}]({axis}{suffix}.png)\n")
            if any(c in group for c in compared):
                parts.append(f"![difference with MAML against {axis}]({axis}-minus-maml{suffix}.png)\n")
    parts.append("## The authors' numbers (full Omniglot, 5-way 1-shot, accuracy %)\n")
    parts.append(markdown_table(["setting", "MAML", "SNAIL", "Meta Networks"],
                                [[k, *v] for k, v in AUTHORS.items()]))
    return "\n".join(parts)


def _plots(axis, xlabel, sweep, group, compared, cell, first, out: Path, suffix: str) -> None:
    ticks = dict(xticks=sweep, xticklabels=[_value_label(axis, v) for v in sweep],
                 xscale="log" if axis == "scale" else "linear", reference=1.0 if axis == "scale" else 0.0)
    title = "meta-test accuracy, " + ("checkpoints trained with --augment" if suffix else "trained without --augment")
    colors = {c: f"C{i}" for i, c in enumerate(first)}
    curves_with_bands([_series(first[c]["label"], sweep, [cell[c, v] for v in sweep], "mean", "ci95", colors[c])
                       for c in group],
                      out / f"{axis}{suffix}.png", xlabel, "accuracy (%)", title, scale=100, **ticks)
    if compared:
        curves_with_bands([_series(first[c]["label"], sweep, [cell[c, v] for v in sweep], "diff_mean", "diff_ci95",
                                   colors[c]) for c in compared], out / f"{axis}-minus-maml{suffix}.png", xlabel,
                          "accuracy minus MAML's (percentage points)", "paired difference with MAML, same episodes",
                          scale=100, horizontal=0.0, **ticks)


def _series(label: str, sweep, rows, mean: str, ci95: str, color: str) -> Series:
    return Series(label, list(sweep), [r[mean] for r in rows], [r[ci95] for r in rows], color=color)


def _value_label(axis: str, value: float) -> str:
    """-pi/4, 0, pi/8 for shears; 1/3, 1, 1.5 for scales."""
    if axis == "shear":
        if value == 0:
            return "0"
        fraction = Fraction(abs(value) / math.pi).limit_denominator(16)
        return f"{'-' if value < 0 else ''}pi/{fraction.denominator}" if fraction.numerator == 1 else f"{value:.3f}"
    fraction = Fraction(value).limit_denominator(8)
    return str(fraction) if fraction.denominator in (1, 3) or fraction == Fraction(1, 2) else f"{value:g}"
