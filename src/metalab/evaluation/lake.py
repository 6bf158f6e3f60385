"""A meta-training checkpoint on Lake's 20-way within-alphabet one-shot benchmark (data/lake_oneshot.py).

Each of the benchmark's runs is one task of the seam (methods/method.py): 20 support images, one per class, and
20 queries. A run's error follows from the seam's per-task accuracy alone (accuracy x queries = queries right),
so every method is scored as it is everywhere else, with no new member that returns labels.
"""

import dataclasses
from pathlib import Path

import numpy as np

from metalab.data import download as download_specs
from metalab.data import paths
from metalab.data.lake_oneshot import ARCHIVE, WAYS, OneShotRuns, OneShotScore, as_episode, format_table, load_benchmark
from metalab.errors import MetalabError
from metalab.evaluation.checkpoints import image_method
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.stats import mean_ci
from metalab.methods.method import MetaParams, Method

# Error % on these 20 runs as published, every model trained on the 30 background alphabets (Lake, Salakhutdinov
# & Tenenbaum, Science 2015; the Siamese nets of Koch et al. 2015 as quoted by Lake et al. 2019).
PUBLISHED = (("people", 4.5), ("Bayesian program learning", 3.3), ("Siamese nets", 8.0), ("deep convnet", 13.5))
# What each split meta-trains on, beside the benchmark's 20 runs drawn from the 20 evaluation alphabets.
TRAINED_ON = {
    "minimal": "the minimal split (116 characters of 5 background alphabets, images_background_small1)",
    "lake": "the lake split (25 of the 30 background alphabets; 5 held out for validation)",
    "vinyals": "the vinyals split, whose 1,100 training characters include characters of the evaluation alphabets "
               "the runs are drawn from: its errors are NOT comparable with the published ones",
}
CANNOT = ("it cannot do Lake's 20-way benchmark: train a 20-way model (metalab train --ways 20) or use a learner "
          "whose parameters do not depend on the number of ways (protonet, average)")


def run_errors(meta: MetaParams, method: Method, runs: OneShotRuns, steps: int) -> np.ndarray:
    """float64 [rows, R]: each run's error in percent after 0..steps adaptation steps (one row for a method
    without steps)."""
    accuracy = per_episode_scores(meta, method, [as_episode(runs)], steps)  # [rows, R], fraction right
    queries = runs.query_y.shape[1]
    right = accuracy * queries
    counts = np.rint(right)
    if not np.all(np.abs(right - counts) < 1e-3):
        raise MetalabError("the method's scores are not a fraction of the run's queries right; Lake's benchmark "
                           "needs a classification metric (accuracy)")
    return 100.0 * (queries - counts) / queries


def evaluate_lake(path, steps=None, inner_lr=None, data_dir=None, download=True, device=None,
                  threads=None, show: bool = True) -> dict:
    """The checkpoint's error on each run of all_runs.zip (in `data_dir`, fetched when missing and `download`),
    after `steps` adaptation steps (default: the run's eval steps); printed beside the published errors."""
    config, meta, method = image_method(path, WAYS, 1, 1, CANNOT, inner_lr=inner_lr, device=device,
                                        threads=threads)
    runs = benchmark_runs(data_dir, download)
    steps = method.eval_steps if steps is None else steps
    errors = run_errors(meta, method, runs, steps)
    final = OneShotScore(runs.names, errors[-1], float(errors[-1].mean()))
    when = f"after {len(errors) - 1} {method.step_name}" if method.step_name else "after reading the support set"
    if show:
        print(f"{path}: {config.method} on Lake's 20-way within-alphabet one-shot benchmark, {runs.num_runs} runs "
              f"of {WAYS} queries, {when}")
        print(format_table(final))
        print(f"95% interval of the mean over the {runs.num_runs} runs: ± {mean_ci(errors[-1]).ci95:.2f}")
        print("published (trained on the 30 background alphabets): "
              + ", ".join(f"{name} {error:g}%" for name, error in PUBLISHED))
        print(f"this model was meta-trained on {TRAINED_ON[config.split]}")
    return {"checkpoint": str(path), "benchmark": "lake", "config": dataclasses.asdict(config),
            "runs": list(runs.names), "published_error_percent": dict(PUBLISHED), "trained_on": TRAINED_ON[config.split],
            "after_steps": {row: {"error_percent": errors[row].tolist(), "mean": float(errors[row].mean())}
                            for row in range(len(errors))}}


def archive_path(data_dir=None) -> Path:
    """Where all_runs.zip is looked for: the data folder (--data-dir, else $METALAB_DATA, else the user cache)."""
    return paths.data_dir(data_dir) / download_specs.ARCHIVES[ARCHIVE].filename


def benchmark_runs(data_dir=None, download: bool = True) -> OneShotRuns:
    """The benchmark's runs from the data folder (fetched first when missing and `download`)."""
    path = archive_path(data_dir)
    if not download and not path.exists():
        raise MetalabError(f"{path.name} (Lake's one-shot runs) is not in {path.parent} and --no-download forbids "
                           f"fetching it: download {download_specs.ARCHIVES[ARCHIVE].url} into that folder (or pass "
                           "--data-dir DIR holding it), or run again without --no-download")
    return load_benchmark(data_dir, download_missing=download)
