"""MAML and relatives against independent references, in float64.

The reference below is a plainly written unrolled inner loop: its own forward pass with torch.nn.functional
(no functional_call, no torch.func), torch.autograd.grad with create_graph for the inner steps.
"""

import pytest
import torch
import torch.nn.functional as F
from conftest import DEVICES

from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods.learner import (
    ACCURACY,
    MSE,
    Learner,
    copy_parameters,
    cross_entropy,
    mse,
)
from metalab.methods.optimization import GradientMethod, InnerLoop, init_meta, tasks_loss
from metalab.models.networks import conv4, mlp

WAYS, SHOTS, QUERIES, SIZE, TASKS, ALPHA = 3, 2, 3, 8, 3, 0.3


def tiny_problem(seed=0, pooling=False, norm="batch"):
    """A 3-way task batch of small images and a tiny Conv4 (4 channels, batch norm with affine): stride-2 on
    8x8 images, or max-pooling on 16x16."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    size = 16 if pooling else SIZE
    model = conv4(WAYS, hidden=4, pooling=pooling, image_size=size, norm=norm).double()
    labels = torch.arange(WAYS).repeat_interleave(SHOTS)
    episode = Episode(torch.rand(TASKS, WAYS * SHOTS, 1, size, size, generator=g, dtype=torch.float64),
                      labels.expand(TASKS, -1).clone(),
                      torch.rand(TASKS, WAYS * QUERIES, 1, size, size, generator=g, dtype=torch.float64),
                      torch.randint(0, WAYS, (TASKS, WAYS * QUERIES), generator=g))
    return model, episode


def reference_forward(params: list, x, pooling=False):
    """Conv4 written out by hand in the textbook order (conv, batch norm, ReLU, then max-pool if pooling):
    params in the order of model.parameters()."""
    h = x
    for layer in range(4):
        conv_w, conv_b, bn_w, bn_b = params[4 * layer: 4 * layer + 4]
        h = F.conv2d(h, conv_w, conv_b, stride=1 if pooling else 2, padding=1)
        mean = h.mean(dim=(0, 2, 3), keepdim=True)
        var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + 1e-5) * bn_w.view(1, -1, 1, 1) + bn_b.view(1, -1, 1, 1)
        h = torch.relu(h)
        if pooling:
            h = F.max_pool2d(h, 2)
    return h.flatten(1) @ params[16].T + params[17]


def reference_meta_gradient(model, episode, steps, first_order=False, pooling=False, forward=None):
    """Task by task, inner steps by plain autograd; `forward(params, x)`: Conv4's reference_forward unless given."""
    forward = forward or (lambda params, x: reference_forward(params, x, pooling))
    theta = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    total = 0.0
    for t in range(episode.batch_size):
        params = theta
        for _ in range(steps):
            loss = F.cross_entropy(forward(params, episode.support_x[t]), episode.support_y[t])
            grads = torch.autograd.grad(loss, params, create_graph=not first_order)
            params = [p - ALPHA * g for p, g in zip(params, grads, strict=True)]
        total = total + F.cross_entropy(forward(params, episode.query_x[t]), episode.query_y[t])
    return torch.autograd.grad(total / episode.batch_size, theta)


def metalab_meta_gradient(model, episode, steps, method="maml", batching="loop", lr_shape="element", step=0,
                          first_order_warmup=0, chunk=0):
    """meta with .grad of the mean query loss, through the seam the training loop uses (GradientMethod.meta_loss)."""
    inner = InnerLoop(method, ALPHA, lr_shape)
    gradient_method = GradientMethod(Learner(model, cross_entropy), inner, train_steps=steps, batching=batching,
                                     first_order_warmup=first_order_warmup, chunk=chunk)
    meta = init_meta(model, inner)
    meta = {g: {n: p.detach().double().requires_grad_(True) for n, p in ps.items()} for g, ps in meta.items()}
    loss, _ = gradient_method.meta_loss(meta, episode, step)
    loss.backward()
    return meta


def theta_grads(meta):
    return [p.grad for p in meta["theta"].values()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batching, norm", [("loop", "batch"), ("vmap", "set_batch"), ("vmap", "batch")])
@pytest.mark.parametrize("pooling", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
def test_maml_equals_unrolled_reference(steps, pooling, batching, norm, device):
    """Also for the max-pooling Conv4, which pools before its ReLU: the same function and gradients; for
    tasks batched by vmap, with torch's batch norm (vmap maps the forward passes only; autograd differentiates)
    and with the written-out one; and on a GPU. The reference runs on the CPU."""
    model, episode = tiny_problem(pooling=pooling, norm=norm)
    expected = reference_meta_gradient(model, episode, steps, pooling=pooling)
    got = theta_grads(metalab_meta_gradient(model.to(device), episode.to(device), steps, batching=batching))
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g.cpu(), e, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("method, batching, written_out", [("maml", "vmap", False), ("metasgd", "vmap", False),
                                                         ("imaml", "vmap", True), ("imaml", "loop", False)])
def test_the_written_out_batch_norm_only_where_torch_func_differentiates_inside_vmap(method, batching, written_out):
    from metalab.config import preset
    from metalab.models.networks import SetBatchNorm
    from metalab.problem import image_learner

    config = preset("omniglot-5w1s-maml").replace(method=method, task_batching=batching)
    norms = {type(m) for m in image_learner(config).model.modules() if type(m) in (SetBatchNorm, torch.nn.BatchNorm2d)}
    assert norms == {SetBatchNorm if written_out else torch.nn.BatchNorm2d}


def test_set_batch_norm_is_torchs_batch_norm_without_running_statistics():
    """Same parameter names and values, same outputs: checkpoints move between the two."""
    native, written = (conv4(5, hidden=8, norm=norm).double() for norm in ("batch", "set_batch"))
    assert [n for n, _ in native.named_parameters()] == [n for n, _ in written.named_parameters()]
    assert not list(written.buffers()) and not list(native.buffers())
    for module in native.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.normal_(module.weight)
            torch.nn.init.normal_(module.bias)
    written.load_state_dict(native.state_dict())
    x = torch.randn(7, 1, 28, 28, dtype=torch.float64)
    torch.testing.assert_close(written(x), native(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_agrees_with_central_finite_differences(steps):
    model, episode = tiny_problem(seed=1)
    meta = metalab_meta_gradient(model, episode, steps)
    inner, learner = InnerLoop("maml", ALPHA), Learner(model, cross_entropy)
    names = list(meta["theta"])
    base = {n: p.detach() for n, p in meta["theta"].items()}

    def objective(params):
        losses = [tasks_loss({"theta": params}, episode.task(i), learner, inner, steps)[0][0]
                  for i in range(episode.batch_size)]
        return torch.stack(losses).mean().item()

    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        direction = {n: torch.randn(base[n].shape, generator=g, dtype=torch.float64) for n in names}
        eps = 1e-7  # batch norm over 6 examples makes this objective sharply curved: a small step
        plus = objective({n: base[n] + eps * direction[n] for n in names})
        minus = objective({n: base[n] - eps * direction[n] for n in names})
        numeric = (plus - minus) / (2 * eps)
        analytic = sum((meta["theta"][n].grad * direction[n]).sum().item() for n in names)
        assert analytic == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_first_order_equals_detached_reference_and_differs_from_second_order():
    model, episode = tiny_problem(seed=2)
    expected = reference_meta_gradient(model, episode, steps=2, first_order=True)
    got = theta_grads(metalab_meta_gradient(model, episode, steps=2, method="fomaml"))
    second = theta_grads(metalab_meta_gradient(model, episode, steps=2, method="maml"))
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-10)
    difference = max((a - b).abs().max().item() for a, b in zip(got, second, strict=True))
    assert difference > 1e-4


@pytest.mark.parametrize("lr_shape", ["element", "tensor"])
def test_metasgd_at_its_initial_rates_equals_maml(lr_shape):
    model, episode = tiny_problem(seed=4)
    maml = theta_grads(metalab_meta_gradient(model, episode, steps=2))
    meta = metalab_meta_gradient(model, episode, steps=2, method="metasgd", lr_shape=lr_shape)
    for a, b in zip(maml, theta_grads(meta), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    # The learned rates get a meta-gradient of their own.
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in meta["learned_lr"].values())


def test_learned_update_at_initialization_equals_maml():
    model, episode = tiny_problem(seed=5)
    maml = theta_grads(metalab_meta_gradient(model, episode, steps=2))
    meta = metalab_meta_gradient(model, episode, steps=2, method="learned_update")
    for a, b in zip(maml, theta_grads(meta), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    assert meta["update_net"]["w2"].grad.abs().sum() > 0


def test_vmap_over_tasks_equals_loop_for_the_sinusoid_mlp():
    torch.manual_seed(0)
    model = mlp(1, 40).double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 20, 1, generator=g, dtype=torch.float64) * 10 - 5
    y = torch.sin(x) * torch.rand(5, 1, 1, generator=g, dtype=torch.float64) * 5
    episode = Episode(x[:, :10], y[:, :10], x[:, 10:], y[:, 10:])
    grads = {}
    for batching in ("loop", "vmap"):
        method = GradientMethod(Learner(model, mse), InnerLoop("maml", 0.01), train_steps=2, batching=batching)
        meta = {"theta": {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}}
        loss, _ = method.meta_loss(meta, episode, step=0)
        loss.backward()
        grads[batching] = (loss.item(), [p.grad for p in meta["theta"].values()])
    assert grads["vmap"][0] == pytest.approx(grads["loop"][0], rel=1e-12)
    for a, b in zip(grads["loop"][1], grads["vmap"][1], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)


def test_a_users_own_module_works_through_functional_call():
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(1, 8)
            self.head = torch.nn.Linear(8, 1)

        def forward(self, x):
            return self.head(torch.tanh(self.body(x)))

    model = Tiny().double()
    x = torch.linspace(-1, 1, 8, dtype=torch.float64).view(1, 8, 1)
    episode = Episode(x[:, :4], x[:, :4] ** 2, x[:, 4:], x[:, 4:] ** 2)
    inner = InnerLoop("maml", 0.1)
    meta = init_meta(model, inner)
    loss, _ = GradientMethod(Learner(model, mse), inner).meta_loss(meta, episode, step=0)
    loss.backward()
    assert all(p.grad is not None for p in meta["theta"].values())
    # the module itself is untouched
    assert all(p.grad is None for p in model.parameters())


def test_evaluation_with_tasks_batched_by_vmap_equals_the_loop():
    """Held-out scores after 0..3 inner steps: accuracies on the Conv4 (with the batch norm vmap needs), MSEs
    on the sinusoid MLP."""
    model, episode = tiny_problem(pooling=True, norm="set_batch")
    regressor = mlp(1, 40).double()
    x = torch.rand(TASKS, 20, 1, dtype=torch.float64) * 10 - 5
    waves = Episode(x[:, :10], torch.sin(x[:, :10]), x[:, 10:], torch.sin(x[:, 10:]))
    for network, loss, metric, batch in ((model, cross_entropy, ACCURACY, episode), (regressor, mse, MSE, waves)):
        learner = Learner(network, loss, metric)
        meta = {"theta": copy_parameters(network)}
        loop, vmapped = (GradientMethod(learner, InnerLoop("maml", ALPHA), batching=batching).scores(meta, batch, 3)
                         for batching in ("loop", "vmap"))
        assert loop.shape == (4, TASKS)
        torch.testing.assert_close(vmapped, loop, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("method", ["fomaml", "metasgd", "learned_update"])
def test_every_method_with_tasks_batched_by_vmap_equals_the_loop(method):
    """The Omniglot presets batch tasks with vmap: each method's whole meta-gradient (theta, learned rates,
    update network) equals the per-task loop's (MAML's is checked against the unrolled reference above)."""
    model, episode = tiny_problem(norm="set_batch")
    grads = {}
    for batching in ("loop", "vmap"):
        torch.manual_seed(1)  # the same update network for both
        grads[batching] = metalab_meta_gradient(model, episode, 2, method, batching)
    for group, params in grads["loop"].items():
        for name, p in params.items():
            torch.testing.assert_close(grads["vmap"][group][name].grad, p.grad, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 3])
def test_vmap_in_chunks_equals_the_unrolled_reference(steps):
    """--task-chunk 2 of 3 tasks (a last chunk of one): each chunk's graph is freed before the next is built, and
    the meta-gradient is still the batch's."""
    model, episode = tiny_problem(norm="set_batch")
    expected = reference_meta_gradient(model, episode, steps)
    got = theta_grads(metalab_meta_gradient(model, episode, steps, batching="vmap", chunk=2))
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("method", ["metasgd", "learned_update"])
def test_every_group_of_meta_parameters_gets_its_gradient_in_chunks(method):
    model, episode = tiny_problem(norm="set_batch")
    grads = {}
    for chunk in (0, 2):
        torch.manual_seed(1)
        grads[chunk] = metalab_meta_gradient(model, episode, 2, method, "vmap", chunk=chunk)
    for group, params in grads[0].items():
        for name, p in params.items():
            torch.testing.assert_close(grads[2][group][name].grad, p.grad, rtol=1e-9, atol=1e-12)


def test_imaml_under_vmap_over_torchs_batch_norm_is_refused_with_the_fix():
    """iMAML differentiates inside vmap (torch.func), where torch's batch norm has wrong second derivatives."""
    from metalab.methods.imaml import ImplicitMAML

    model, _ = tiny_problem(norm="batch")
    with pytest.raises(MetalabError, match="SetBatchNorm in the network, or --task-batching loop"):
        ImplicitMAML(Learner(model, cross_entropy), batching="vmap")


def test_first_order_warmup_is_first_order_before_its_step_and_second_order_from_it():
    model, episode = tiny_problem(seed=6)
    fomaml = theta_grads(metalab_meta_gradient(model, episode, steps=2, method="fomaml"))
    maml = theta_grads(metalab_meta_gradient(model, episode, steps=2))
    during = theta_grads(metalab_meta_gradient(model, episode, steps=2, step=4, first_order_warmup=5))
    after = theta_grads(metalab_meta_gradient(model, episode, steps=2, step=5, first_order_warmup=5))
    for first, second, warm, later in zip(fomaml, maml, during, after, strict=True):
        torch.testing.assert_close(warm, first, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(later, second, rtol=1e-10, atol=1e-12)


def test_the_loops_stand_in_loss_has_the_mean_loss_and_the_per_task_gradients():
    """With tasks in a loop, meta_loss frees each task's graph at once and returns a stand-in: its value is the
    mean query loss, its gradient the mean of the per-task gradients (here against vmap's plain mean)."""
    model, episode = tiny_problem(seed=7, norm="set_batch")
    learner = Learner(model, cross_entropy, ACCURACY)
    results = {}
    for batching in ("loop", "vmap"):
        meta = init_meta(model, InnerLoop("maml", ALPHA))
        meta = {g: {n: p.detach().double().requires_grad_(True) for n, p in ps.items()} for g, ps in meta.items()}
        loss, score = GradientMethod(learner, InnerLoop("maml", ALPHA), batching=batching).meta_loss(meta, episode, 0)
        loss.backward()
        results[batching] = loss.item(), score.item(), theta_grads(meta)
    assert results["loop"][:2] == pytest.approx(results["vmap"][:2], rel=1e-12)
    expected = [torch.zeros_like(p) for p in results["loop"][2]]
    for t in range(TASKS):
        meta = init_meta(model, InnerLoop("maml", ALPHA))
        meta = {g: {n: p.detach().double().requires_grad_(True) for n, p in ps.items()} for g, ps in meta.items()}
        tasks_loss(meta, episode.task(t), learner, InnerLoop("maml", ALPHA), 1)[0].sum().backward()
        expected = [e + p.grad / TASKS for e, p in zip(expected, meta["theta"].values(), strict=True)]
    for got, want in zip(results["loop"][2], expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("changes, fragment", [
    ({"method": "protonet", "task_chunk": 4}, "protonet batches its tasks its own way"),
    ({"task_batching": "loop", "task_chunk": 4}, "add --task-batching vmap"),
])
def test_task_chunks_where_they_do_not_apply_are_refused_with_the_fix(changes, fragment):
    from metalab.config import preset
    from metalab.methods.registry import make_method

    with pytest.raises(MetalabError, match=fragment):
        make_method(preset("omniglot-5w1s-maml").replace(**changes), Learner(torch.nn.Linear(2, 2), cross_entropy))
