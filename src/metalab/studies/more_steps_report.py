"""The report of `more-steps`: each checkpoint's score against test-time inner steps, beside a random init."""

import math
from pathlib import Path

import numpy as np

from metalab.studies.figures import Series, curves_with_bands
from metalab.studies.tables import difference_cell, estimate_cell, markdown_table, paired_row

KEPT_STEPS = (0, 1, 2, 3, 5, 10, 20, 50, 100)  # steps whose per-episode scores a cell keeps (paired comparisons)

INTRO = """Each curve: the mean score on the query sets after 0..S inner steps at test time (S = 100; --train
tiny: 10), with its 95% interval, on the same episodes for every curve. "random init": the checkpoint's
network drawn afresh from its seed with its method's untrained meta-parameters, i.e. plain gradient steps at the
inner lr (Meta-SGD's rates start at it, the learned update's output layer at zero), scored on the queries and
on its own support set (how well the steps fit it). "rates-clipped": Meta-SGD's learned rates clipped into
[0, inner lr] at test time; "progress-as-trained": the learned update's network reads the step's progress as a
fraction of its meta-training steps, held at the last value it was trained on; "corrected-as-trained": the
learned update adds its network's correction on its meta-training steps only, plain gradient steps after
(more_steps_fixes.py); none retrains. Paired differences are over the same episodes."""


def write_report(results: dict[str, dict], out: Path) -> str:
    curves = _curves(results)
    parts = ["## What is measured\n", INTRO + "\n"]
    for metric in dict.fromkeys(c["metric"] for c in curves.values()):
        group = {name: c for name, c in curves.items() if c["metric"] == metric}
        steps = [s for s in KEPT_STEPS if s <= max(len(c["rows"]) - 1 for c in group.values())]
        parts.append(f"## {metric} against test-time inner steps\n")
        parts.append(markdown_table(["curve", "trained steps"] + [f"step {s}" for s in steps],
                                    [[name, c["trained"] or "-"] + [_at(c, s, metric) for s in steps]
                                     for name, c in group.items()]))
        parts.append(_divergence(group, metric))
        figure = f"steps-{metric.lower()}.png"
        accuracy = metric == "accuracy"
        # A loss axis up to 10x the worst start: a diverging curve leaves the top instead of flattening the others.
        starts = [c["rows"][0]["mean"] for c in group.values() if math.isfinite(c["rows"][0]["mean"])]
        lows = [r["mean"] for c in group.values() for r in c["rows"] if math.isfinite(r["mean"]) and r["mean"] > 0]
        limits = None if accuracy or not starts or not lows else (0.5 * min(lows), 10 * max(starts))
        curves_with_bands([Series(name, [r["step"] for r in c["rows"]], [r["mean"] for r in c["rows"]],
                                  [r["ci95"] for r in c["rows"]], style="--" if c["random"] else "-")
                           for name, c in group.items()], out / figure,
                          "inner steps at test time (symmetric log axis)",
                          "accuracy (%)" if accuracy else f"{metric} (log axis)",
                          f"meta-test {metric} against inner steps" + ("" if accuracy else " (off the top: diverged)"),
                          xscale="symlog", xticks=steps, ylim=limits,
                          yscale="linear" if accuracy else "log", scale=100 if accuracy else 1)
        parts.append(f"![{metric} against inner steps]({figure})\n")
    return "\n".join(parts)


def _curves(results: dict[str, dict]) -> dict[str, dict]:
    """Display name -> {"rows" (by step), "metric", "trained", "random", "scores" (kept steps)}."""
    curves = {}
    for key, result in results.items():
        for where in ("query", "support"):
            rows = [r for r in result["rows"] if r["scored_on"] == where]
            if not rows:
                continue
            first = rows[0]
            random = first["variant"] == "random init"
            if random:
                name = f"random init of the {Path(first['checkpoint']).parent.name} network, on its {where} set"
            else:
                name = first["label"] + ("" if first["variant"] == "trained" else f", {first['variant']}")
            scores = result["support_scores" if where == "support" else "scores"]
            curves[name] = {"rows": rows, "metric": first["metric"], "random": random,
                            "trained": None if random else first["trained_inner_steps"], "scores": scores,
                            "checkpoint": first["checkpoint"], "variant": first["variant"]}
    return curves


def _at(curve: dict, step: int, metric: str) -> str:
    row = curve["rows"][step] if step < len(curve["rows"]) else None
    return estimate_cell(row["mean"], row["ci95"], metric) if row else "-"


def _divergence(group: dict[str, dict], metric: str) -> str:
    """For each trained curve: its score at its trained step against the last step (paired), and where it peaks;
    for each fixed curve, its last step against the unfixed one's (paired)."""
    lines = []
    last = max(len(c["rows"]) - 1 for c in group.values())
    for name, c in group.items():
        scores = c["scores"]
        if c["random"] or str(last) not in scores or str(c["trained"]) not in scores:
            continue
        change = paired_row(scores[str(last)], scores[str(c["trained"])])
        higher = metric == "accuracy"
        means = [r["mean"] for r in c["rows"]]
        finite = [m for m in means if math.isfinite(m)]
        best = int(np.argmax(means) if higher else np.nanargmin(np.where(np.isfinite(means), means, np.nan))) \
            if finite else 0
        lines.append([name, c["trained"], difference_cell(change["diff_mean"], change["diff_ci95"], metric),
                      best, "yes" if _worse(change, higher) else "no"])
        unfixed = next((u for u in group.values() if u["checkpoint"] == c["checkpoint"] and u["variant"] == "trained"
                        and c["variant"] != "trained"), None)
        if unfixed is not None and str(last) in unfixed["scores"]:
            gain = paired_row(scores[str(last)], unfixed["scores"][str(last)])
            lines[-1].append(f"{difference_cell(gain['diff_mean'], gain['diff_ci95'], metric)} vs unfixed")
    if not lines:
        return ""
    width = max(len(line) for line in lines)
    lines = [line + [""] * (width - len(line)) for line in lines]
    header = ["curve", "trained steps", f"step {last} minus trained step (paired)", "best step",
              f"significantly worse at step {last}"] + (["fix at the last step"] if width > 5 else [])
    return markdown_table(header, lines)


def _worse(change: dict, higher_is_better: bool) -> bool:
    """The paired change is worse than zero beyond its 95% interval (a diverged side counts as worse)."""
    mean, ci95 = change["diff_mean"], change["diff_ci95"]
    if not math.isfinite(mean):
        return True
    return mean + ci95 < 0 if higher_is_better else mean - ci95 > 0
