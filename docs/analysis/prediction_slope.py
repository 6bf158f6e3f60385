"""How far a sinusoid learner's predictions shrink toward the training amplitudes, by amplitude of the test tasks.

    python docs/analysis/prediction_slope.py RUN/train        # the folder of extrapolation-sinusoid's models

For each model (maml, snail, average; MAML after 5 inner steps as trained) and amplitude range, on 200 fixed
episodes of 5-shot tasks with phase in [0, pi]: the least-squares slope of the query predictions against the
true values through the origin, per episode, and its median. A slope of 1 follows the task's amplitude; below 1
the learner predicts a flatter sine than the task's.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from metalab.data.episode import fixed_episodes
from metalab.methods import blackbox, optimization
from metalab.studies.models import load_study_model
from metalab.studies.sinusoid_shift import Bin, shifted_tasks
from metalab.studies.study import StudySettings

AMPLITUDES = ((0.1, 5.0), (5.0, 7.5), (7.5, 10.0))


def predictions(model, support_x, support_y, query_x) -> torch.Tensor:
    """[B, Q, 1] query predictions after the method's own adaptation."""
    if model.config.method == "maml":
        return torch.stack([model.learner.predict(optimization.adapt(
            model.meta, sx, sy, model.learner, model.method.inner, model.method.eval_steps), qx)
            for sx, sy, qx in zip(support_x, support_y, query_x)]).detach()
    with torch.no_grad():
        phi = blackbox.adapt(model.meta, support_x, support_y, model.learner)
        return blackbox.predict(model.meta, phi, query_x, model.learner)


def main(folder: Path) -> None:
    torch.set_num_threads(1)
    settings = StudySettings(episodes=200, threads=1)
    for name in ("maml", "snail", "average"):
        model = load_study_model(folder / name / "best.pt", settings)
        medians = []
        for low, high in AMPLITUDES:
            tasks = shifted_tasks(model.config, Bin("amplitude", f"{low}-{high}", (low, high), (0.0, np.pi)))
            slopes = []
            for support_x, support_y, query_x, query_y in fixed_episodes(tasks, settings.seed, settings.episodes):
                p = predictions(model, support_x, support_y, query_x).flatten(1)
                t = query_y.flatten(1)
                slopes += ((p * t).sum(1) / (t * t).sum(1)).tolist()
            medians.append(f"A in [{low}, {high}]: {np.median(slopes):.2f}")
        print(f"{name:8s} " + "  ".join(medians), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
