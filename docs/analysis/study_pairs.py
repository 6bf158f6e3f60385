"""Paired differences between checkpoints scored in two runs of one study, cell by cell.

    python docs/analysis/study_pairs.py RUN_A/best.pt:STUDY_A RUN_B/best.pt:STUDY_B

A study pairs every checkpoint against the MAML one trained alike, within one run. Two runs of a study with the
same settings (seed, episodes) score the same episodes in each cell, so a checkpoint of one run can be paired
with a checkpoint of the other: here A - B per cell, mean ± 95% interval over the episodes (percentage points
for accuracy). Refuses cells whose episode counts differ. Example: MAML trained with --augment against MAML
trained without, on the distorted tasks of extrapolation-omniglot.
"""

import json
import sys
from pathlib import Path

from metalab.evaluation.stats import mean_ci, paired_difference


def cell_scores(spec: str) -> dict[str, list[float]]:
    """'CHECKPOINT:STUDY_FOLDER' -> {cell key: the checkpoint's per-episode scores in that cell}."""
    checkpoint, folder = spec.rsplit(":", 1)
    scores = {}
    for path in sorted(Path(folder, "cells").glob("*.json")):
        saved = json.loads(path.read_text())
        by_checkpoint = saved["result"]["scores"]
        if checkpoint not in by_checkpoint:
            sys.exit(f"{checkpoint} is not in {path}; its checkpoints: {', '.join(by_checkpoint)}")
        scores[saved["key"]] = by_checkpoint[checkpoint]
    return scores


def main(a: str, b: str) -> None:
    scores_a, scores_b = cell_scores(a), cell_scores(b)
    print("| cell | A | B | A - B, paired |\n|---|---|---|---|")
    for key in sorted(scores_a.keys() & scores_b.keys()):
        if len(scores_a[key]) != len(scores_b[key]):
            sys.exit(f"cell {key}: {len(scores_a[key])} episodes in A, {len(scores_b[key])} in B: not paired")
        difference = paired_difference(scores_a[key], scores_b[key])
        print(f"| {key} | {mean_ci(scores_a[key]).mean * 100:.2f} | {mean_ci(scores_b[key]).mean * 100:.2f} | "
              f"{100 * difference.mean:+.2f} ± {100 * difference.ci95:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
