"""Why MAML loses on shrunk drawings: its features against its readout and adaptation, on the study's episodes.

    python docs/analysis/shrunk_readout.py MAML/best.pt [--protonet PROTONET/best.pt] [--scales 1/3 1/2 1 2]
        [--steps 10 50] [--episodes 1000] [--curvature-episodes 200] [--threads 1]

extrapolation-omniglot finds MAML behind the prototypical network on drawings shrunk to 1/3 (their embeddings are
the same 32-channel stride-2 Conv4, normalized differently: MAML's batch norm over the task's images, the
prototypical network's group norm over each image). This splits MAML's accuracy into what its features allow and
what its readout and inner loop make of them, on the study's own meta-test episodes (distorted_tasks and
fixed_episodes, seed 0, as studies/extrapolation_omniglot.py: episode i is the same task in every row and scale):

    MAML, S inner steps      its linear head after S steps of its inner loop from theta: the Method seam's scores,
                             as the study scores it at its eval steps. Fewer (the trained steps) and more steps
                             than it was evaluated with ask whether its loss is too little adaptation away from an
                             init tuned to unshrunk drawings, or adaptation gone wrong.
    nearest mean, theta/phi  the linear head replaced by the prototypical networks' readout on the penultimate
                             features (the flattened Conv4 output, before the head) of theta, or of phi after the
                             eval steps: each query to the class whose support embedding (1-shot: the mean of
                             one) is nearest in squared Euclidean distance. Batch norm sees the support set and
                             the query set apart, as MAML's own head does. If this recovers the prototypical
                             network's accuracy where the head does not, the features separate the shrunk
                             characters and the readout or adaptation is what fails; if not, the features do.
    prototypical network     its own nearest class mean on its own embedding (the study's row), for reference

A second table holds per-scale quantities of MAML: the support-set accuracy of its head after the trained and the
eval steps (does the inner loop fit the shrunk support set, and keep it fitted?), the share of a task's queries
its head sends to its most-chosen class (0.2 = balanced at 5-way, 1 = all to one), the ink of the query images
(mean pixel) against theta's penultimate features on them (batch norm undoes the ink's amount), and the step
curvature alpha * lambda_max of the support loss (evaluation/curvature.py): above 2, an inner step of rate alpha
overshoots along the top eigenvector. Accuracies are means over episodes with 95% intervals; differences are
paired on the same episodes. Choosing the number of steps by these numbers would be tuning on meta-test: they
explain the study's result, they do not replace it.
"""

import argparse
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from metalab.data.episode import fixed_episodes
from metalab.evaluation.curvature import episode_curvatures
from metalab.evaluation.stats import summarize
from metalab.methods.batching import map_tasks
from metalab.methods.heads import class_mean_head, layers_of
from metalab.methods.learner import Params
from metalab.methods.optimization import adapt_steps
from metalab.studies.extrapolation_omniglot import SCALES, distorted_tasks
from metalab.studies.models import StudyModel, episode_scores, load_study_model
from metalab.studies.study import StudySettings
from metalab.studies.tables import difference_cell, estimate_cell, markdown_table


def body_of(model: StudyModel, params: Params) -> Params:
    """The parameters of the network's layers below its linear head (heads.layers_of)."""
    return {name: params[name] for name in layers_of(model.learner.model).body_names}


def nearest_mean_accuracy(model: StudyModel, params: Params, support_x, support_y, query_x, query_y) -> Tensor:
    """One task's query accuracy when each query goes to the class whose mean support embedding under `params`'
    penultimate features is nearest: heads.class_mean_head's (2c, -|c|^2) gives the logits |q|^2 - |q - c|^2."""
    body, below_head = body_of(model, params), model.learner.model[:-1]
    weight, bias = class_mean_head(below_head, body, support_x, support_y, model.config.ways, normalized=False)
    logits = functional_call(below_head, body, (query_x,)) @ weight.T + bias  # [N*Q, ways]
    return (logits.argmax(-1) == query_y).float().mean()


# What task_diagnostics returns, in order: readout accuracies first (READOUTS of them), then per-scale quantities.
DIAGNOSTICS = ("nearest mean, theta", "nearest mean, phi", "head, phi (the seam's, recomputed)",
               "support accuracy after the trained steps", "support accuracy after the eval steps",
               "head: share of queries to its most-chosen class", "query ink (mean pixel, 1 = ink)",
               "theta's features on queries: mean", "theta's features on queries: share > 0")
READOUTS = 2


def task_diagnostics(model: StudyModel, support_x, support_y, query_x, query_y) -> Tensor:
    """One task's [len(DIAGNOSTICS)] values, in DIAGNOSTICS' order; phi is theta after the eval steps."""
    theta, learner, method = model.meta["theta"], model.learner, model.method
    phis = list(adapt_steps(model.meta, support_x, support_y, learner, method.inner,
                            max(method.train_steps, method.eval_steps)))
    phi = phis[method.eval_steps]
    head = learner.predict(phi, query_x).argmax(-1)
    per_class = (head.unsqueeze(-1) == torch.arange(model.config.ways, device=head.device)).float().mean(0)
    query_z = functional_call(learner.model[:-1], body_of(model, theta), (query_x,))  # [N*Q, features]
    return torch.stack([
        nearest_mean_accuracy(model, theta, support_x, support_y, query_x, query_y),
        nearest_mean_accuracy(model, phi, support_x, support_y, query_x, query_y),
        (head == query_y).float().mean(),
        *[(learner.predict(phis[s], support_x).argmax(-1) == support_y).float().mean()
          for s in (method.train_steps, method.eval_steps)],
        per_class.max(), query_x.mean(), query_z.mean(), (query_z > 0).float().mean()])


def maml_rows(model: StudyModel, tasks, settings: StudySettings, steps: list[int]) -> dict[str, np.ndarray]:
    """Per-episode values [episodes] of every MAML row at one scale, by name."""
    scores = episode_scores(model, tasks, settings, steps=max(steps))  # [max steps + 1, episodes]
    per_task = map_tasks(partial(task_diagnostics, model), model.method.batching, in_dims=(0, 0, 0, 0))
    with torch.no_grad():  # torch.func.grad in the inner steps still differentiates
        values = torch.cat([per_task(*episode).T for episode in
                            fixed_episodes(tasks, settings.seed, settings.episodes)], 1).double().numpy()
    rows = {step_label(model, s): scores[s] for s in steps}
    rows.update(zip(DIAGNOSTICS, values))
    # The head's accuracy here and the seam's are one computation done twice (loop and vmap): they must agree.
    if abs(rows[DIAGNOSTICS[2]].mean() - scores[model.method.eval_steps].mean()) > 5e-3:
        raise RuntimeError("the recomputed head accuracy disagrees with the Method seam's: the readouts are suspect")
    return rows


def step_label(model: StudyModel, steps: int) -> str:
    notes = [note for note, count in (("as trained", model.method.train_steps),
                                      ("as evaluated", model.method.eval_steps)) if steps == count]
    return f"MAML, {steps} inner step{'' if steps == 1 else 's'}" + (f" ({', '.join(notes)})" if notes else "")


def curvature_rows(model: StudyModel, tasks, settings: StudySettings, episodes: int) -> dict[str, str]:
    """alpha * lambda_max of the support loss at theta and after the first inner step (evaluation/curvature.py,
    as `metalab eval --curvature`) on the first `episodes` episodes: its median, and the share above 2, past
    which a gradient step grows the loss along the top eigenvector instead of shrinking it."""
    values = torch.cat([episode_curvatures(model.meta, model.learner, model.method.inner, episode, settings.seed)
                        for episode in fixed_episodes(tasks, settings.seed, episodes)], 1).double().numpy()
    rows = {}
    for name, row in zip(("at theta", "after 1 step"), values):
        rows[f"alpha * lambda_max {name}: median ({episodes} episodes)"] = f"{np.median(row):.3g}"
        rows[f"alpha * lambda_max {name}: share > 2"] = estimate_cell(*_estimate(row > 2), "share")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("maml", type=Path, help="the MAML checkpoint (best.pt), trained without --augment")
    parser.add_argument("--protonet", type=Path, help="a prototypical network checkpoint of the same ways and shots")
    parser.add_argument("--scales", nargs="+", type=Fraction, default=[Fraction(1, 3), Fraction(1, 2), Fraction(1)],
                        help="digit scales, among the study's: 1/3 1/2 2/3 1 3/2 2")
    parser.add_argument("--steps", nargs="+", type=int, default=[10, 50],
                        help="inner steps to score beside 0 and the checkpoint's trained and eval steps")
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--curvature-episodes", type=int, default=200,
                        help="the first this many episodes get the (slower) curvature measurement; 0: none")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", help="the Omniglot archives' folder (default: $METALAB_DATA)")
    args = parser.parse_args()
    if any(min(abs(float(s) - known) for known in SCALES) > 1e-12 for s in args.scales):
        parser.error("--scales must be among the study's: 1/3 1/2 2/3 1 3/2 2")
    scales = [min(SCALES, key=lambda known: abs(known - float(s))) for s in args.scales]  # the study's own floats

    torch.set_num_threads(args.threads)
    settings = StudySettings(episodes=args.episodes, threads=args.threads, data_dir=args.data_dir)
    maml = load_study_model(args.maml, settings)
    protonet = load_study_model(args.protonet, settings) if args.protonet else None
    steps = sorted({0, maml.method.train_steps, maml.method.eval_steps, *args.steps})
    columns, curvatures = {}, {}
    for scale in scales:
        tasks = distorted_tasks(maml.config.split, maml.config.ways, maml.config.shots, 0.0, scale, settings.data_dir)
        columns[scale] = maml_rows(maml, tasks, settings, steps)
        if protonet is not None:
            columns[scale]["prototypical network (its own nearest mean)"] = episode_scores(protonet, tasks, settings)[-1]
        if args.curvature_episodes:
            curvatures[scale] = curvature_rows(maml, tasks, settings, min(args.curvature_episodes, args.episodes))
        print(f"scale {fraction(scale)} done", flush=True)

    header = ["readout"] + [f"scale {fraction(s)}" for s in scales]
    accuracy = [name for name in columns[scales[0]] if name not in DIAGNOSTICS[READOUTS:]]
    reference = step_label(maml, maml.method.eval_steps)
    print(f"\n{maml.path} ({maml.config.steps} meta-steps, inner lr {maml.method.inner.inner_lr}); "
          f"{args.episodes} episodes, seed {settings.seed}. Accuracy, %:\n")
    print(markdown_table(header, [[name] + [estimate_cell(*_estimate(columns[s][name]), "accuracy") for s in scales]
                                  for name in accuracy]))
    print(f"Paired difference against {reference}, points:\n")
    print(markdown_table(header, [[name] + [difference_cell(*_estimate(columns[s][name] - columns[s][reference]),
                                                            "accuracy") for s in scales]
                                  for name in accuracy if name != reference]))
    print("Per-scale quantities of MAML (means over episodes with 95% intervals, unless a median):\n")
    quantities = [[name] + [estimate_cell(*_estimate(columns[s][name]), "share") for s in scales]
                  for name in DIAGNOSTICS[READOUTS + 1:]]
    quantities += [[name] + [curvatures[s][name] for s in scales] for name in curvatures.get(scales[0], {})]
    print(markdown_table(["quantity"] + header[1:], quantities))


def fraction(scale: float) -> str:
    return str(Fraction(scale).limit_denominator(3))


def _estimate(values: np.ndarray) -> tuple[float, float]:
    estimate = summarize(values)
    return estimate.mean, estimate.ci95


if __name__ == "__main__":
    main()
