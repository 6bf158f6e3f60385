"""The report of the depth study: MSE against the number of hidden layers at a fixed parameter count, with 95%
bands, the black-box learners of the same count beside it, and every learner's parameter count."""

from pathlib import Path

from metalab.studies.figures import Series, curves_with_bands
from metalab.studies.regression_cells import paired_against
from metalab.studies.tables import difference_cell, estimate_cell, markdown_table

THEIRS = {1: 3.99, 5: 2.13}  # Finn & Levine 2018: MAML's MSE at the shallowest and the deepest network


def depth_report(results: dict[str, dict], out: Path, budget: int) -> str:
    rows = sorted((r for result in results.values() for r in result["rows"]),
                  key=lambda r: (r["method"] != "maml", r["hidden_layers"] if r["method"] == "maml" else 0, r["model"]))
    maml = [r for r in rows if r["method"] == "maml"]
    others = [r for r in rows if r["method"] != "maml"]
    reference = next((r["model"] for r in maml if r["hidden_layers"] == 1), maml[0]["model"] if maml else None)
    reference_steps = results[reference]["rows"][0]["steps"] if reference else 0
    figure = _figure(maml, others, out)
    table = []
    for r in rows:
        gap = 100 * (r["parameters"] - budget) / budget
        diff = ("" if reference is None or r["model"] == reference else
                difference_cell(**_renamed(paired_against(results, r["model"], reference, r["steps"], reference_steps)),
                                metric="MSE"))
        theirs = THEIRS.get(r["hidden_layers"], "") if r["method"] == "maml" else ""
        table.append([r["model"], r["method"], r["hidden_layers"] if r["method"] == "maml" else "-",
                      r["hidden"] if r["method"] == "maml" else f"{r['hidden']}, {r['width']}",
                      f"{r['parameters']} ({gap:+.1f}%)", r["steps"] or "none",
                      estimate_cell(r["mean"], r["ci95"], "MSE"),
                      f"{r['median']:.4g}", r["diverged"], diff, theirs])
    header = ["learner", "method", "hidden layers", "units per layer (black-box: embedding, learner)",
              f"parameters (vs {budget})", "inner steps",
              "MSE", "median", "diverged", f"paired vs {reference}", "theirs (Finn & Levine 2018)"]
    return "\n".join([
        f"Cubic polynomials y = c3 x^3 + c2 x^2 + c1 x + c0, coefficients uniform in (-1, 1), x in (-3, 3); 40 "
        f"support points, MSE on 100 query points per task, mean ± 95% interval over the episodes (the same tasks "
        f"for every learner). Every network has about {budget} parameters (one hidden layer of 250 units): a "
        f"deeper one is narrower, at the width whose count comes nearest. The black-box learners' two widths (their "
        f"input embedding's units and their own width, within 4 of each other) are chosen the same way. Meta Networks and the memory-augmented "
        f"network are not here: their fixed parts alone exceed the budget (about 2,450 and 1,150 parameters at "
        f"width 1). The authors' two numbers are MAML's at the shallowest and deepest of their networks.\n",
        markdown_table(header, table), f"\nPaired: the learner's MSE minus {reference}'s on the same episodes "
        "(negative: lower MSE).\n", f"![{figure}]({figure})\n"])


def _renamed(diff: dict) -> dict:
    return {"mean": diff["diff_mean"], "ci95": diff["diff_ci95"]}


def _figure(maml: list[dict], others: list[dict], out: Path) -> str:
    depths = [r["hidden_layers"] for r in maml]
    series = [Series("MAML, 5 inner steps (ours)", depths, [r["mean"] for r in maml], [r["ci95"] for r in maml])]
    span = [min(depths, default=1), max(depths, default=5)]
    series += [Series(f"{r['model']} ({r['parameters']} parameters; no depth)", span, [r["mean"]] * 2,
                      [r["ci95"]] * 2, "--") for r in others]
    series.append(Series("MAML, theirs (Finn & Levine 2018): shallowest, deepest", list(THEIRS),
                         list(THEIRS.values()), [0.0, 0.0], ":"))
    name = "mse_vs_depth.png"
    curves_with_bands(series, out / name, "hidden layers of MAML's network (same parameter count)",
                      "MSE on 100 query points, 40 shots (log scale)",
                      "Cubic regression: depth at a fixed parameter count",
                      xticks=list(range(1, 6)), yscale="log")
    return name
