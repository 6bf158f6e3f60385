"""The report of the extrapolation-sinusoid study: MSE against the test tasks' amplitude and phase with 95% bands,
MAML's MSE against its inner steps, and the regions' table beside the authors' numbers."""

import math
from pathlib import Path

from metalab.studies.figures import Series, curves_with_bands
from metalab.studies.regression_cells import paired_against
from metalab.studies.sinusoid_shift import REGIONS, STEPS
from metalab.studies.tables import difference_cell, estimate_cell, markdown_table

# Finn & Levine 2018, 5-shot MSE, by (method, inner steps) and region. The issue quotes SNAIL's "4.86 and 8.13"
# after MAML's amplitude and phase numbers: read here as amplitude [5, 10] and phase [pi, 2 pi], in that order.
THEIRS = {("maml", 5): {"in-distribution": 0.047, "amplitude-5-10": 4.32, "phase-pi-2pi": 1.20},
          ("maml", 100): {"amplitude-5-10": 2.84, "phase-pi-2pi": 0.74},
          ("snail", 0): {"amplitude-5-10": 4.86, "phase-pi-2pi": 8.13}}
REGION_TITLES = {"in-distribution": "in distribution: A in [0.1, 5], phase in [0, pi]",
                 "amplitude-5-10": "A in [5, 10], phase in [0, pi]",
                 "phase-pi-2pi": "A in [0.1, 5], phase in [pi, 2 pi]"}
INTRODUCTION = (
    "MSE on 100 query points per task, 5 support points, mean ± 95% interval over the episodes (the same tasks for "
    "every learner: each bin's episodes come from the study's seed alone). Trained on A in [0.1, 5] and phase in "
    "[0, pi]. MAML (inner learning rate 0.001, the MAML authors' code's) is scored after 5 inner steps (as "
    "trained) and after 100; the black-box learners have no steps. A mean that is not finite: some episode's MSE "
    "overflowed. `diverged`: episodes whose MSE ended above 10x the best they reached (and the median at step 0), "
    "as `metalab eval` counts them. Phase is periodic (phase 2 pi is phase 0), so the phase curve comes back "
    "toward the training range near 2 pi.\n")
AXES = {"amplitude": ("amplitude A of the test tasks, y = A sin(x - phase) (bin centres; phase in [0, pi])", 5.0),
        "phase": ("phase of the test tasks, radians (bin centres; A in [0.1, 5])", math.pi)}


def sinusoid_shift_report(results: dict[str, dict], out: Path) -> str:
    rows = [row for result in results.values() for row in result["rows"]]
    models = list(dict.fromkeys(row["model"] for row in rows))
    figures = [_curve(rows, models, axis, out) for axis in AXES if any(r["axis"] == axis for r in rows)]
    figures.append(_steps_figure(results, models, out))
    text = [INTRODUCTION, "## Regions, beside the authors' numbers\n", _regions_table(rows, models),
            "Ratio: the region's MSE over the same learner's in-distribution MSE (how steeply it degrades).\n",
            "## Paired differences against MAML after 5 steps, on the same episodes\n",
            _paired_table(results, models)]
    text += [f"![{name}]({name})\n" for name in figures]
    return "\n".join(text)


def _label(model: str, steps: int) -> str:
    return f"{model}, {steps} inner steps" if steps else model


def _curve(rows: list[dict], models: list[str], axis: str, out: Path) -> str:
    series, colors = [], {model: f"C{i}" for i, model in enumerate(models)}  # a learner's colour, theirs alike
    for model in models:
        for steps in dict.fromkeys(r["steps"] for r in rows if r["model"] == model):
            points = sorted((r for r in rows if (r["model"], r["axis"], r["steps"]) == (model, axis, steps)),
                            key=lambda r: r["x"])
            gaps = " (gaps: an episode's MSE not finite)" if any(not math.isfinite(r["mean"]) for r in points) else ""
            series.append(Series(_label(model, steps) + gaps, [r["x"] for r in points], [r["mean"] for r in points],
                                 [r["ci95"] for r in points], "--" if steps == STEPS[1] else "-", colors[model]))
    region = "amplitude-5-10" if axis == "amplitude" else "phase-pi-2pi"
    span = [5.0, 10.0] if axis == "amplitude" else [math.pi, 2 * math.pi]
    for (method, steps), values in THEIRS.items():  # the authors' region means, drawn across their region
        if region in values:
            ours = next((m for m in models if m.split("-")[0] == method), None)
            series.append(Series(f"{_label(method, steps)}: theirs, mean over the region", span,
                                 [values[region]] * 2, [0.0, 0.0], ":" if steps != STEPS[1] else "-.",
                                 colors.get(ours, "grey")))
    name = f"mse_vs_{axis}.png"
    xlabel, boundary = AXES[axis]
    curves_with_bands(series, out / name, xlabel, "MSE (log scale)", f"5-shot MSE against the test tasks' {axis}; "
                      f"dotted line: edge of training", yscale="log", reference=boundary)
    return name


def _steps_figure(results: dict[str, dict], models: list[str], out: Path) -> str:
    series = []
    for model in models:
        for region in REGIONS:
            result = results.get(f"{model}__region={region.name}")
            if result and len(result["by_step"]) > 1:
                steps = result["by_step"]
                series.append(Series(f"{model}: {REGION_TITLES[region.name]}", list(range(len(steps))),
                                     [s["mean"] for s in steps], [s["ci95"] for s in steps]))
    name = "mse_vs_inner_steps.png"
    curves_with_bands(series, out / name, "inner gradient steps at test time (5 support points)",
                      "MSE (log scale)", "Gradient learners: MSE against inner steps (dotted: as trained)",
                      yscale="log", reference=STEPS[0])
    return name


def _region_rows(rows, model, steps) -> dict:
    return {r["bin"]: r for r in rows if (r["model"], r["axis"], r["steps"]) == (model, "region", steps)}


def _regions_table(rows: list[dict], models: list[str]) -> str:
    header = ["learner", "inner steps", *(REGION_TITLES[r.name] for r in REGIONS),
              "ratio A [5, 10]", "ratio phase [pi, 2 pi]", "diverged (of n), by region"]
    table = []
    for model in models:
        for steps in dict.fromkeys(r["steps"] for r in rows if r["model"] == model):
            found = _region_rows(rows, model, steps)
            cells = [_mse_cell(found[r.name]) if r.name in found else "-" for r in REGIONS]
            base = found.get("in-distribution", {}).get("mean", math.nan)
            ratios = [f"{found[name]['mean'] / base:.3g}" if name in found and 0 < base < math.inf and
                      math.isfinite(found[name]["mean"]) else "-"
                      for name in ("amplitude-5-10", "phase-pi-2pi")]
            diverged = " / ".join(f"{found[r.name]['diverged']} of {found[r.name]['n']}" for r in REGIONS
                                  if r.name in found)
            table.append([f"{model} (ours)", steps or "none", *cells, *ratios, diverged])
    for (method, steps), values in THEIRS.items():
        cells = [f"{values[r.name]}" if r.name in values else "-" for r in REGIONS]
        table.append([f"{method} (theirs: Finn & Levine 2018)", steps or "none", *cells, "", "", ""])
    return markdown_table(header, table)


def _mse_cell(row: dict) -> str:
    if math.isfinite(row["mean"]):
        return estimate_cell(row["mean"], row["ci95"], "MSE")
    return f"not finite (median {row['median']:.3g})"


def _paired_table(results: dict[str, dict], models: list[str]) -> str:
    reference = next((m for m in models if m.startswith("maml")), None)
    if reference is None:
        return "No MAML checkpoint among the learners: no paired differences.\n"
    header = [f"learner - {reference} (5 steps)", "inner steps", *(REGION_TITLES[r.name] for r in REGIONS)]
    table = []
    for model in models:
        steps_of = [r["steps"] for r in results.get(f"{model}__region={REGIONS[0].name}", {"rows": []})["rows"]]
        for steps in steps_of:
            if (model, steps) == (reference, STEPS[0]):
                continue
            cells = []
            for region in REGIONS:
                key, ref = f"{model}__region={region.name}", f"{reference}__region={region.name}"
                if key in results and ref in results:
                    diff = paired_against(results, key, ref, steps, STEPS[0])
                    cells.append(difference_cell(diff["diff_mean"], diff["diff_ci95"], "MSE"))
                else:
                    cells.append("-")
            table.append([model, steps or "none", *cells])
    return markdown_table(header, table) + f"\nNegative: lower MSE than {reference} after 5 steps.\n"
