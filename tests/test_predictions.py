"""The seam's `predictions` (methods/method.py): every method's query predictions after S steps, scored by its
learner's metric, are its `scores` after S steps; and the ensemble's averaging of predictions (Metric.average)."""

import math

import pytest
import torch

from metalab.config import FinetuneConfig, preset
from metalab.data.classification import ClassificationTasks
from metalab.data.episode import generator_for
from metalab.methods.finetune import FineTuning
from metalab.methods.learner import ACCURACY, MSE, classification
from metalab.methods.registry import METHODS, make_method
from metalab.models.networks import conv4
from metalab.problem import build_problem, image_learner

WAYS, SHOTS, QUERIES, TASKS = 5, 1, 2, 3
OMNIGLOT = ["maml", "fomaml", "metasgd", "learned", "imaml", "lstm", "mann", "average", "attention", "snail",
            "metanet", "protonet"]
SINUSOID = ["maml", "metasgd", "imaml", "average", "attention", "snail", "metanet"]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def image_episode(seed=0):
    """Tasks over random 28x28 drawings (no data needed), 5-way 1-shot, 2 queries per class."""
    bank = torch.randint(0, 256, (8 * 4, 28, 28), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    tasks = ClassificationTasks(bank, torch.arange(8 * 4).view(8, 4), WAYS, SHOTS, QUERIES)
    return tasks.sample(generator_for(seed, 1), TASKS)


def check_predictions_score_as_scores(method, meta, episode, steps):
    """The score of predictions(meta, episode, s) is scores(meta, episode, s)[s] (row 0 without steps)."""
    predictions = method.predictions(meta, episode, steps)
    assert predictions.shape[:2] == episode.query_y.shape[:2] and not predictions.requires_grad
    from_predictions = method.learner.task_losses(predictions, episode.query_y)[1]
    scores = method.scores(meta, episode, steps)
    torch.testing.assert_close(from_predictions, scores[steps if len(scores) > 1 else 0], rtol=1e-6, atol=0)
    return predictions


def tiny(config):
    return config.replace(hidden=4, width=8, memory_slots=8, layers=1)


@pytest.mark.parametrize("name", OMNIGLOT)
def test_omniglot_methods_predict_what_they_score(name):
    torch.manual_seed(0)
    config = tiny(preset(f"omniglot-5w1s-{name}")).replace(inner_steps=1, eval_inner_steps=2)
    method = make_method(config, image_learner(config))
    meta = method.init_meta()
    episode = image_episode()
    zero = check_predictions_score_as_scores(method, meta, episode, 0)
    two = check_predictions_score_as_scores(method, meta, episode, 2)
    assert zero.shape == (TASKS, WAYS * QUERIES, WAYS)
    assert torch.equal(zero, two) == (method.eval_steps == 0)  # steps move the predictions of methods with steps


def test_task_batching_by_loop_predicts_as_vmap():
    torch.manual_seed(0)
    config = tiny(preset("omniglot-5w1s-maml"))
    vmapped = make_method(config, image_learner(config))
    looped = make_method(config.replace(task_batching="loop"), image_learner(config.replace(task_batching="loop")))
    meta, episode = vmapped.init_meta(), image_episode()
    check_predictions_score_as_scores(looped, meta, episode, 2)
    torch.testing.assert_close(looped.predictions(meta, episode, 2), vmapped.predictions(meta, episode, 2))


@pytest.mark.parametrize("name", SINUSOID)
def test_regression_methods_predict_what_they_score(name):
    torch.manual_seed(0)
    config = preset(f"sinusoid-{name}").replace(hidden=8, width=8, hidden_layers=1, layers=1, eval_inner_steps=2)
    problem = build_problem(config, parts=("test",))
    method = make_method(config, problem.learner)
    episode = problem.tasks["test"].sample(generator_for(0, 1), TASKS)
    for steps in (0, 2):
        predictions = check_predictions_score_as_scores(method, method.init_meta(), episode, steps)
        assert predictions.shape == episode.query_y.shape


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_fine_tuning_predicts_what_it_scores(batching):
    torch.manual_seed(0)
    learner = classification(conv4(WAYS, hidden=4, pooling=False))
    method = FineTuning(learner, FinetuneConfig(steps=2, head_lr=0.5, body_lr=0.1), batching)
    meta, episode = method.init_meta(), image_episode()
    for steps in (0, 2):
        check_predictions_score_as_scores(method, meta, episode, steps)
    assert not torch.equal(method.predictions(meta, episode, 0), method.predictions(meta, episode, 2))


def test_every_registered_method_is_tested():
    assert {"learned_update" if n == "learned" else n for n in OMNIGLOT} == set(METHODS)


def test_accuracy_averages_class_probabilities():
    """Against the probabilities written out: log of the mean softmax, so its softmax is the mean softmax."""
    logits = torch.randn(3, 4, 6, 5, generator=torch.Generator().manual_seed(0)) * 4
    averaged = ACCURACY.average(logits)
    expected = sum(math.e ** logits[m].double() / (math.e ** logits[m].double()).sum(-1, keepdim=True)
                   for m in range(3)) / 3
    torch.testing.assert_close(averaged.exp(), expected)
    torch.testing.assert_close(ACCURACY.average(logits[:1]), torch.log_softmax(logits[0].double(), -1))


def test_mse_averages_values():
    values = torch.randn(2, 3, 7, 1, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(MSE.average(values), (values[0] + values[1]) / 2)
    assert torch.equal(MSE.average(values[[0, 0]]), values[0])  # the same model twice is itself
