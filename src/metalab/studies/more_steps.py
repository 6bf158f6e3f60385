"""Study `more-steps`: scores after 0..100 inner steps at test time, far more than the 1 or 5 trained.

Finn & Levine (ICLR 2018) report MAML flat from step 1 to 100 at 5-way 1-shot, while a randomly initialized
network fine-tuned the same way fits its support set and stays far behind on the queries. Meta-SGD and the
learned update are meta-trained for their training steps only; past them they may diverge. Cells:

- one per checkpoint: its per-episode scores after 0..S steps (Method.scores), S = 100 (tiny: 10);
- one per random initialization: the checkpoint's network drawn afresh from its seed, with the init_meta() of
  its method untrained (MAML, Meta-SGD and the learned update then all take plain gradient steps at the inner
  lr: Meta-SGD's rates start at it, the learned update's output layer at zero), scored on the queries and on
  the support set itself; checkpoints of one network and inner lr share it;
- Meta-SGD checkpoints once more with their learned rates clipped into [0, inner lr], learned-update ones with
  their network's progress input as in meta-training, and with its correction on the trained steps only
  (more_steps_fixes.py): cheap eval-time fixes for the divergence past the trained step.
"""

from pathlib import Path

from metalab.config import preset
from metalab.data.episode import Episode, fixed_episodes
from metalab.evaluation.evaluate import per_episode_scores
from metalab.models.networks import reinitialize
from metalab.studies.models import StudyModel, load_study_model
from metalab.studies.more_steps_fixes import FIXES
from metalab.studies.more_steps_report import KEPT_STEPS, write_report
from metalab.studies.study import Cell, StudySettings, budgeted, train_run
from metalab.studies.tables import estimate_row

# What --train trains: (preset, overrides); every model meta-trained with 1 inner step but "maml-5steps".
MODELS = {"maml-1step": ("omniglot-5w1s-maml", {}),
          "maml-5steps": ("omniglot-5w1s-maml", {"inner_steps": 5, "eval_inner_steps": 5}),
          "metasgd": ("omniglot-5w1s-metasgd", {}),
          "learned-update": ("omniglot-5w1s-learned", {}),
          "sinusoid-maml": ("sinusoid-maml", {}),
          "sinusoid-metasgd": ("sinusoid-metasgd", {})}
# Meta-steps by budget (full: the presets' own). Quick: about what 2 CPU cores do in 30 minutes with the evaluation.
STEPS = {"tiny": dict.fromkeys(MODELS, 2),
         "quick": {"maml-1step": 600, "maml-5steps": 200, "metasgd": 600, "learned-update": 600,
                   "sinusoid-maml": 5000, "sinusoid-metasgd": 5000},
         "full": {}}
TEST_STEPS = {"tiny": 10, "quick": 100, "full": 100}  # inner steps at test time


class MoreSteps:
    name = "more-steps"
    summary = "scores after 0..100 inner steps at test time, against a random init fine-tuned the same way"

    def train(self, budget: str, out: Path, threads: int, data_dir=None) -> list[Path]:
        checkpoints = []
        for model, (name, overrides) in MODELS.items():
            config = preset(name).replace(threads=threads, **overrides)
            config = budgeted(config, STEPS[budget].get(model, config.steps), budget)
            checkpoints.append(train_run(config, Path(out) / model, data_dir))
        return checkpoints

    def cells(self, checkpoints: list[Path], settings: StudySettings) -> list[Cell]:
        steps = TEST_STEPS[settings.budget]
        models = [load_study_model(path, settings) for path in checkpoints]
        cells, randoms = [], {}
        for index, model in enumerate(models):
            cells.append(Cell(f"m{index}-{model.config.method}",
                              lambda model=model: _curve_cell(model, "trained", model.meta, settings, steps),
                              (model.path,)))
            for name, fix in FIXES.items():
                if fix.applies_to(model):
                    cells.append(Cell(f"m{index}-{model.config.method}-{name}",
                                      lambda model=model, name=name, fix=fix: _curve_cell(
                                          model, name, fix.meta(model), settings, steps, method=fix.method(model)),
                                      (model.path,)))
            randoms.setdefault(_random_signature(model), model)
        for index, (signature, model) in enumerate(randoms.items()):
            cells.append(Cell(f"random{index}-{model.config.problem}",
                              lambda model=model: _random_cell(model, settings, steps), (model.path,)))
        return cells

    def report(self, results: dict[str, dict], out: Path) -> str:
        return write_report(results, Path(out))


def _random_signature(model: StudyModel) -> tuple:
    """What a random initialization depends on: the network, its seed, the inner lr and the tasks."""
    c = model.config
    return (c.problem, c.split, c.ways, c.shots, c.hidden, c.pooling, c.seed, c.inner_lr, c.task_batching)


def _curve_cell(model: StudyModel, variant: str, meta, settings: StudySettings, steps: int,
                on_support: bool = False, method=None) -> dict:
    """Rows of mean ± 95% interval after each of 0..steps inner steps; per-episode scores at KEPT_STEPS."""
    episodes = fixed_episodes(model.tasks, settings.seed, settings.episodes)
    if on_support:  # the support set scored as if it were the query set: how well the steps fit it
        episodes = (Episode(e.support_x, e.support_y, e.support_x, e.support_y) for e in episodes)
    scores = per_episode_scores(meta, method or model.method, episodes, steps)
    where = "support" if on_support else "query"
    base = {"checkpoint": str(model.path), "label": model.label, "method": model.config.method,
            "variant": variant, "scored_on": where, "trained_inner_steps": model.config.inner_steps,
            "metric": model.learner.metric.name}
    rows = [{**base, "step": s, **estimate_row(row)} for s, row in enumerate(scores)]
    return {"rows": rows, "scores": {str(s): scores[s].tolist() for s in KEPT_STEPS if s < len(scores)}}


def _random_cell(model: StudyModel, settings: StudySettings, steps: int) -> dict:
    reinitialize(model.learner.model, model.config.seed)
    device = next(iter(model.meta["theta"].values())).device
    meta = {g: {n: p.detach().to(device) for n, p in ps.items()} for g, ps in model.method.init_meta().items()}
    query = _curve_cell(model, "random init", meta, settings, steps)
    support = _curve_cell(model, "random init", meta, settings, steps, on_support=True)
    return {"rows": query["rows"] + support["rows"], "scores": query["scores"],
            "support_scores": support["scores"]}

