"""`--compile`: each chunk's meta-gradient as one torch.compile'd program, against the eager meta-step."""

import pytest
import torch
from test_optimization import tiny_problem

from metalab.config import preset
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods import registry
from metalab.methods.learner import Learner, cross_entropy, mse
from metalab.methods.optimization import GradientMethod, InnerLoop
from metalab.models.networks import mlp


def sinusoid_like_problem(tasks=4):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def points(n):
        return torch.rand(tasks, n, 1, generator=g, dtype=torch.float64) * 10 - 5

    support_x, query_x = points(5), points(7)
    return mlp(hidden=8).double(), Episode(support_x, torch.sin(support_x), query_x, torch.sin(query_x))


def meta_step(method: GradientMethod, episode: Episode) -> tuple[float, float, list]:
    meta = method.init_meta()
    loss, score = method.meta_loss(meta, episode, 0)
    loss.backward()
    return loss.item(), score.item(), [p.grad for ps in meta.values() for p in ps.values()]


@pytest.mark.parametrize("rule, network, batching, chunk", [
    ("metasgd", "mlp", "loop", 0),
    pytest.param("maml", "conv4", "vmap", 1, marks=pytest.mark.slow),  # three chunks, one program
])
def test_a_compiled_meta_step_gives_the_eager_meta_gradient_and_compiles_once(rule, network, batching, chunk):
    import torch._dynamo.utils

    if network == "mlp":
        model, episode = sinusoid_like_problem()
        learner = Learner(model, mse)
    else:
        model, episode = tiny_problem()
        learner = Learner(model, cross_entropy)
    methods = {compiled: GradientMethod(learner, InnerLoop(rule, 0.3), train_steps=2, batching=batching, chunk=chunk,
                                        compiled=compiled) for compiled in (False, True)}
    eager_loss, eager_score, eager_grads = meta_step(methods[False], episode)
    loss, score, grads = meta_step(methods[True], episode)
    assert loss == pytest.approx(eager_loss, rel=1e-12) and score == pytest.approx(eager_score, rel=1e-12)
    assert len(grads) == len(eager_grads) > 0
    for got, want in zip(grads, eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    meta_step(methods[True], episode)  # a new meta-step, new meta-parameters: the program is reused
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_the_config_field_reaches_the_method():
    config = preset("sinusoid-maml").replace(compile=True)
    method = registry.make_method(config, Learner(mlp(hidden=8), mse))
    assert method.compiled is True


@pytest.mark.parametrize("changes, fragment", [
    ({"method": "protonet"}, "protonet has its own: drop --compile"),
    ({"method": "imaml"}, "imaml has its own: drop --compile"),
])
def test_compile_where_it_does_not_apply_is_refused_with_the_fix(changes, fragment):
    config = preset("omniglot-5w1s-maml").replace(compile=True, **changes)
    with pytest.raises(MetalabError, match=fragment):
        registry.make_method(config, Learner(torch.nn.Linear(2, 2), cross_entropy))


def test_compile_without_a_cpp_compiler_is_refused_with_the_fix(monkeypatch):
    monkeypatch.setattr(registry.shutil, "which", lambda name: None)
    with pytest.raises(MetalabError, match="needs a C.. compiler .* install one or drop --compile"):
        registry.make_method(preset("sinusoid-maml").replace(compile=True), Learner(mlp(hidden=8), mse))
