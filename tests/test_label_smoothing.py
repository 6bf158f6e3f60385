"""--label-smoothing: the classification loss against labels smoothed toward uniform, in every method's loss."""

import pytest
import torch

from metalab.config import Config
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods.registry import make_method
from metalab.problem import image_learner


def test_the_loss_is_the_smoothed_cross_entropy_written_out():
    torch.manual_seed(0)
    logits, labels = torch.randn(12, 5, dtype=torch.float64), torch.randint(0, 5, (12,))
    smoothing = 0.2
    log_p = logits.log_softmax(-1)
    target = torch.full_like(log_p, smoothing / 5).scatter(1, labels[:, None], 1 - smoothing + smoothing / 5)
    expected = -(target * log_p).sum(-1).mean()
    learner = image_learner(Config(label_smoothing=smoothing, hidden=4))
    assert torch.allclose(learner.loss(logits, labels), expected, rtol=1e-12)
    plain = image_learner(Config(hidden=4))
    assert torch.allclose(plain.loss(logits, labels), -log_p.gather(1, labels[:, None]).mean(), rtol=1e-12)


def test_maml_meta_loss_smoothed_alike_when_tasks_are_vmapped_or_looped():
    torch.manual_seed(1)
    x = torch.rand(3, 5, 1, 28, 28)
    episode = Episode(x, torch.arange(5).repeat(3, 1), x + 0.01, torch.arange(5).repeat(3, 1))
    losses = []
    for batching in ("loop", "vmap"):
        config = Config(method="maml", hidden=4, pooling=False, label_smoothing=0.1, task_batching=batching)
        torch.manual_seed(2)  # the network's initialization
        method = make_method(config, image_learner(config))
        losses.append(method.meta_loss(method.init_meta(), episode, step=0)[0])
    assert torch.allclose(losses[0], losses[1], rtol=1e-5)
    config = Config(method="maml", hidden=4, pooling=False, task_batching="loop")
    torch.manual_seed(2)
    unsmoothed = make_method(config, image_learner(config))
    assert not torch.allclose(unsmoothed.meta_loss(unsmoothed.init_meta(), episode, step=0)[0], losses[0])


@pytest.mark.parametrize("fields", [{"label_smoothing": 1.0}, {"label_smoothing": -0.1},
                                    {"problem": "sinusoid", "label_smoothing": 0.1}])
def test_bad_settings_are_one_line_errors(fields):
    with pytest.raises(MetalabError, match="label-smoothing") as error:
        Config(**fields)
    assert "\n" not in str(error.value)
