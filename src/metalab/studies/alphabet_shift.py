"""Study alphabet-shift: the generalization ladder, per alphabet, for every method: the characters of meta-training,
new characters of alphabets seen in meta-training, alphabets never seen; and Lake's 20-way within-alphabet one-shot
benchmark when all_runs.zip is present.

For each checkpoint, at 5 and 20 ways (1 shot, 15 queries per class), one cell per group of episodes of the
meta-train (upright drawings, no augmentation: how well the model fits what it was trained on), meta-validation
and meta-test parts: within one alphabet of the part (all N classes from one script, as in Lake's
benchmark: similar characters to tell apart), and mixed (classes from any alphabet of the part, as in
meta-training). A group with fewer characters than ways, or a model whose network fits only the ways it was
trained at, gives a row that says so instead of a number. The episodes of a cell depend only on the split, the
group, the ways and the seed: identical for every method.
"""

import functools
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from metalab.config import Config, preset
from metalab.data.classification import alphabet_tasks, omniglot_tasks
from metalab.data.episode import fixed_episodes
from metalab.data.splits import alphabet_counts, load_split_data
from metalab.errors import MetalabError
from metalab.evaluation.checkpoints import WaysMismatch, image_method, load_trained
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.lake import CANNOT, archive_path, benchmark_runs, run_errors
from metalab.problem import EVAL_QUERIES
from metalab.studies.alphabet_report import MIXED, write_report
from metalab.studies.study import Cell, StudySettings, train_run
from metalab.studies.tables import estimate_row

WAYS = (5, 20)
SHOTS = 1
PARTS = ("train", "val", "test")  # the ladder's rungs
# What --train builds: MAML and the feedforward + average learner, 5-way 1-shot, on the minimal split. quick: both
# trained and the study evaluated in under 30 minutes on 2 cores (docs/results.md has the measured time).
TRAINED = {"maml": "omniglot-5w1s-maml", "average": "omniglot-5w1s-average"}
BUDGET_STEPS = {
    "tiny": {"maml": dict(steps=4, hidden=8, meta_batch_size=2, val_every=2, val_episodes=4, checkpoint_every=2,
                          log_every=1),
             "average": dict(steps=4, hidden=8, width=16, meta_batch_size=2, val_every=2, val_episodes=4,
                             checkpoint_every=2, log_every=1)},
    "quick": {"maml": dict(steps=1500, val_every=500, val_episodes=100, checkpoint_every=500),
              "average": dict(steps=4000, val_every=1000, val_episodes=100, checkpoint_every=1000)},
    "full": {"maml": {}, "average": {}},  # the presets' own budgets
}


@dataclass(frozen=True)
class Group:
    """Episodes of one part of the split, within one alphabet or mixed."""

    part: str  # "val" (meta-validation) or "test" (meta-test)
    alphabet: str  # an alphabet's name, or MIXED
    characters: int  # characters of the part in the group: N-way episodes need at least N
    seen: str  # is the alphabet one of meta-training's? "yes" / "no" ("some" for a mixed group of both)

    @property
    def key(self) -> str:
        return f"{self.part}__{_safe(self.alphabet)}"


def groups_of(data, split) -> list[Group]:
    """Every alphabet of each part, then the part's mixed group."""
    trained = set(alphabet_counts(split, data, "train"))
    groups = []
    for part in PARTS:
        counts = alphabet_counts(split, data, part)
        groups += [Group(part, a, n, "yes" if a in trained else "no") for a, n in counts.items()]
        seen = {a in trained for a in counts}
        groups.append(Group(part, MIXED, len(split.part(part)), "yes" if seen == {True} else
                            "no" if seen == {False} else "some"))
    return groups


def model_label(path: Path, config: Config) -> str:
    return f"{config.method} ({Path(path).parent.name})"


class AlphabetShift:
    name = "alphabet-shift"
    summary = ("the ladder meta-train, meta-validation (seen alphabets), meta-test (unseen), per alphabet, "
               "5- and 20-way; Lake's 20-way benchmark when all_runs.zip is present")

    def train(self, budget: str, out: Path, threads: int, data_dir=None) -> list[Path]:
        """MAML and the average learner, each in out/<method>/ by the shared loop (resumed when stopped)."""
        return [train_run(preset(name).replace(threads=threads, **BUDGET_STEPS[budget][method]), Path(out) / method,
                          data_dir) for method, name in TRAINED.items()]

    def cells(self, checkpoints: list[Path], settings: StudySettings) -> list[Cell]:
        if not checkpoints:
            raise MetalabError("alphabet-shift needs at least one checkpoint (--checkpoints A.pt ...)")
        configs = [load_trained(path)[0] for path in checkpoints]
        splits = sorted({config.split for config in configs})
        if len(splits) > 1:
            raise MetalabError(f"the checkpoints were meta-trained on different splits ({', '.join(splits)}), so "
                               "their seen and unseen alphabets differ; study checkpoints of one split at a time")
        data, split = load_split_data(splits[0], settings.data_dir)
        labels = [model_label(path, config) for path, config in zip(checkpoints, configs)]
        if len(set(labels)) != len(labels):  # same method in run folders of the same name: number them
            labels = [f"{i + 1}: {label}" for i, label in enumerate(labels)]

        @functools.lru_cache(maxsize=None)
        def model(i: int, ways: int):
            return image_method(checkpoints[i], ways, SHOTS, EVAL_QUERIES["omniglot"], f"it cannot do {ways}-way tasks",
                                device=settings.device, threads=settings.threads)

        @functools.lru_cache(maxsize=1)  # cells run group by group: one group's images at a time
        def tasks(group: Group, ways: int):
            if group.alphabet == MIXED:
                return omniglot_tasks(data, split, group.part, ways, SHOTS, EVAL_QUERIES["omniglot"], rotations=(0,))
            return alphabet_tasks(data, split, group.part, group.alphabet, ways, SHOTS, EVAL_QUERIES["omniglot"])

        def compute(i: int, group: Group, ways: int) -> dict:
            row = {"model": labels[i], "method": configs[i].method, "ways": ways, "shots": SHOTS, **asdict(group)}
            if group.characters < ways:
                return {"rows": [{**row, "note": f"only {group.characters} characters"}]}
            try:
                _, meta, method = model(i, ways)
            except WaysMismatch:
                return {"rows": [{**row, "note": f"cannot do {ways}-way: trained {configs[i].ways}-way"}]}
            episodes = fixed_episodes(tasks(group, ways), settings.seed, settings.episodes)
            scores = per_episode_scores(meta, method, episodes, method.eval_steps)[-1]
            return {"rows": [{**row, "steps": method.eval_steps, **estimate_row(scores)}], "scores": scores.tolist()}

        cells = [Cell(f"{ways}w__{group.key}__{_safe(labels[i])}", functools.partial(compute, i, group, ways),
                      inputs=(checkpoints[i],))
                 for ways in WAYS for group in groups_of(data, split) for i in range(len(checkpoints))]
        return cells + self._lake_cells(checkpoints, labels, configs, settings)

    def _lake_cells(self, checkpoints, labels, configs, settings: StudySettings) -> list[Cell]:
        path = archive_path(settings.data_dir)
        if not path.exists():
            return [Cell("lake__absent", lambda: {"rows": [], "lake_absent": str(path)})]
        runs = functools.lru_cache(maxsize=1)(lambda: benchmark_runs(settings.data_dir, download=False))

        def compute(i: int) -> dict:
            row = {"model": labels[i], "method": configs[i].method, "benchmark": "lake"}
            try:
                _, meta, method = image_method(checkpoints[i], 20, 1, 1, CANNOT, device=settings.device,
                                               threads=settings.threads)
            except WaysMismatch:
                return {"rows": [{**row, "note": f"cannot do 20-way: trained {configs[i].ways}-way"}]}
            errors = run_errors(meta, method, runs(), method.eval_steps)[-1]
            return {"rows": [{**row, "run": name, "error_percent": float(e)} for name, e in zip(runs().names, errors)],
                    "lake_mean_error": float(np.mean(errors)), "steps": method.eval_steps}

        # The archive is an input too: a replaced all_runs.zip (other size or time) recomputes the cell.
        return [Cell(f"lake__{_safe(labels[i])}", functools.partial(compute, i), inputs=(checkpoints[i], path))
                for i in range(len(checkpoints))]

    def report(self, results: dict[str, dict], out: Path) -> str:
        return write_report(results, Path(out))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)
