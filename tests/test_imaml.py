"""Implicit MAML against independent references in float64: a closed form (ridge regression), a dense solve,
and the unrolled meta-gradient of the regularized inner problem."""

import pytest
import torch
from torch.func import functional_call, hessian

from metalab.config import Config, preset
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods.imaml import ImplicitMAML, conjugate_gradient, task_meta_gradient
from metalab.methods.learner import Learner, mse
from metalab.models.networks import mlp

TASKS = 3


def regression_episode(seed=0, features=1, support=6, queries=7):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(TASKS, support + queries, features, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(-1, keepdim=True) + torch.randn(TASKS, 1, 1, generator=g, dtype=torch.float64))
    return Episode(x[:, :support], y[:, :support], x[:, support:], y[:, support:])


def meta_gradient(method, episode, theta):
    meta = {"theta": {name: p.detach().clone().requires_grad_(True) for name, p in theta.items()}}
    loss, _ = method.meta_loss(meta, episode, step=0)
    loss.backward()
    return {name: p.grad for name, p in meta["theta"].items()}, loss


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_ridge_regression_meta_gradient_equals_the_closed_form(batching):
    """A linear model under squared loss: phi*(theta) solves (2/n Z'Z + lam I) u = 2/n Z'y + lam theta with
    Z = [x, 1]; the reference differentiates the query loss through that solve."""
    lam, episode = 1.5, regression_episode(features=3)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).double()
    theta = {name: p.detach() for name, p in model.named_parameters()}
    method = ImplicitMAML(Learner(model, mse), lam=lam, inner_lr=0.05, train_steps=1500, cg_steps=4,
                          batching=batching)
    got, loss = meta_gradient(method, episode, theta)

    u = torch.cat([theta["weight"].reshape(-1), theta["bias"]]).requires_grad_(True)
    total = 0.0
    for support_x, support_y, query_x, query_y in zip(*episode):
        z = torch.cat([support_x, torch.ones(len(support_x), 1, dtype=torch.float64)], 1)
        n = len(z)
        optimum = torch.linalg.solve(2 / n * z.T @ z + lam * torch.eye(4, dtype=torch.float64),
                                     2 / n * z.T @ support_y[:, 0] + lam * u)
        total = total + ((query_x @ optimum[:3] + optimum[3] - query_y[:, 0]) ** 2).mean()
    (expected,) = torch.autograd.grad(total / TASKS, u)
    torch.testing.assert_close(torch.cat([got["weight"].reshape(-1), got["bias"]]), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(loss.detach(), total.detach() / TASKS, rtol=1e-9, atol=1e-12)


def flat_problem(seed=0):
    torch.manual_seed(seed)
    model = mlp(1, 4).double()
    theta = {name: p.detach() for name, p in model.named_parameters()}
    support_x, support_y, _, _ = regression_episode(seed)
    return model, theta, support_x[0], support_y[0]


def test_conjugate_gradient_equals_a_dense_solve():
    """(I + H / lam) x = b with H the explicit Hessian of a small network's support loss: CG run for as many
    steps as there are parameters gives torch.linalg.solve's answer."""
    model, theta, x, y = flat_problem()
    names, shapes = list(theta), [p.shape for p in theta.values()]
    sizes = [p.numel() for p in theta.values()]

    def unflatten(vector):
        return {n: part.view(s) for n, part, s in zip(names, vector.split(sizes), shapes)}

    def loss_of(vector):
        return mse(functional_call(model, unflatten(vector), (x,)), y)

    point = torch.cat([p.reshape(-1) for p in theta.values()])
    lam = 20.0
    matrix = torch.eye(len(point), dtype=torch.float64) + hessian(loss_of)(point) / lam
    assert torch.linalg.eigvalsh(matrix).min() > 0  # positive definite: CG's exact answer is the solve's
    b = torch.randn(len(point), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    def flatten(params):
        return torch.cat([t.reshape(-1) for t in params.values()])

    solution, residual, truncated = conjugate_gradient(lambda v: unflatten(matrix @ flatten(v)), unflatten(b),
                                                       steps=len(point))
    torch.testing.assert_close(flatten(solution), torch.linalg.solve(matrix, b),
                               rtol=1e-8, atol=1e-10)
    assert residual < 1e-8 and not truncated


def test_conjugate_gradient_stops_at_non_positive_curvature():
    """On an indefinite matrix CG would step along a direction of negative curvature: it stops there, says so, and
    keeps whichever of its iterates and b itself has the smaller residual."""
    matrix = torch.diag(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64))

    def solve(b):
        return conjugate_gradient(lambda v: {"x": matrix @ v["x"]}, {"x": torch.tensor(b, dtype=torch.float64)}, 3)

    x, residual, truncated = solve([0.0, 0.0, 1.0])  # p'Ap = -1 at once: no step; b itself, residual |2b| / |b|
    assert truncated and residual == 2 and torch.equal(x["x"], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    # b = (2, 1, 1): p'Ap = 5, x = (6 / 5) b, r = (-0.4, -1.4, 2.2), |r|^2 = 6.96 against |b - Ab|^2 = 5 for b
    # itself: b is kept; the next direction p = (1.92, -0.24, 3.36) has p'Ap < 0 and stops CG
    x, residual, truncated = solve([2.0, 1.0, 1.0])
    assert torch.equal(x["x"], torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))
    assert residual.item() == pytest.approx((5 / 6) ** 0.5, rel=1e-12)
    # b = (1, 1, 0.1): x = (2.01 / 3.0) b after one step has a smaller residual than b and is kept
    x, residual, _ = solve([1.0, 1.0, 0.1])
    b = torch.tensor([1.0, 1.0, 0.1], dtype=torch.float64)
    first = (b @ b) / (b @ matrix @ b) * b
    assert (b - matrix @ x["x"]).norm() <= (b - matrix @ first).norm() < (b - matrix @ b).norm()
    assert residual.item() == pytest.approx(((b - matrix @ x["x"]).norm() / b.norm()).item(), rel=1e-10)
    assert not solve([1.0, 1.0, 0.0])[2]  # where b never meets the negative direction, CG runs as usual


def unrolled_meta_gradient(model, theta, episode, lam, lr, steps):
    """Gradient descent on L(phi) + lam/2 |phi - theta|^2, differentiated through every step (create_graph)."""
    start = {name: p.clone().requires_grad_(True) for name, p in theta.items()}
    total = 0.0
    for support_x, support_y, query_x, query_y in zip(*episode):
        phi = start
        for _ in range(steps):
            objective = mse(functional_call(model, phi, (support_x,)), support_y) + lam / 2 * sum(
                ((phi[n] - start[n]) ** 2).sum() for n in phi)
            grads = torch.autograd.grad(objective, list(phi.values()), create_graph=True)
            phi = {n: p - lr * g for (n, p), g in zip(phi.items(), grads)}
        total = total + mse(functional_call(model, phi, (query_x,)), query_y)
    return dict(zip(start, torch.autograd.grad(total / TASKS, list(start.values()))))


def test_on_a_small_network_it_approaches_the_unrolled_meta_gradient_as_inner_steps_grow():
    model, theta, _, _ = flat_problem(seed=2)
    episode, lam, lr = regression_episode(seed=2), 4.0, 0.08
    errors = []
    for steps in (2, 10, 40, 160):
        method = ImplicitMAML(Learner(model, mse), lam=lam, inner_lr=lr, train_steps=steps, cg_steps=40)
        implicit, _ = meta_gradient(method, episode, theta)
        unrolled = unrolled_meta_gradient(model, theta, episode, lam, lr, steps)
        difference = sum(((implicit[n] - unrolled[n]) ** 2).sum() for n in theta).sqrt()
        errors.append((difference / sum((unrolled[n] ** 2).sum() for n in theta).sqrt()).item())
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    assert errors[0] > 1e-2 and errors[-1] < 1e-8, errors


def test_the_meta_loss_graph_does_not_grow_with_the_inner_steps():
    """The loop backpropagates through the returned loss: its graph holds theta * g only, whatever the steps."""
    model, theta, _, _ = flat_problem()

    def graph_size(steps):
        method = ImplicitMAML(Learner(model, mse), lam=2.0, inner_lr=0.05, train_steps=steps, cg_steps=3)
        meta = {"theta": {n: p.clone().requires_grad_(True) for n, p in theta.items()}}
        seen, stack = set(), [method.meta_loss(meta, regression_episode(), 0)[0].grad_fn]
        while stack:
            node = stack.pop()
            if node is not None and node not in seen:
                seen.add(node)
                stack += [parent for parent, _ in node.next_functions]
        return len(seen)

    assert graph_size(1) == graph_size(30)


def indefinite_task():
    """Two parameters at theta = 0, support loss -lam w1^2 (so I + H / lam = diag(1, -1)), query loss w0 + w1
    (so b = (1, 1)): CG's first step divides by p'Ap = 0."""
    model = torch.nn.Linear(2, 1, bias=False).double()
    theta = {"weight": torch.zeros(1, 2, dtype=torch.float64)}
    lam = 2.0

    def loss(prediction, target):
        return -lam * (prediction[1, 0] ** 2) if len(prediction) == 2 else prediction.sum()

    eye = torch.eye(2, dtype=torch.float64)
    episode = Episode(eye.expand(TASKS, 2, 2), torch.zeros(TASKS, 2, 1, dtype=torch.float64),
                      torch.ones(TASKS, 1, 2, dtype=torch.float64), torch.zeros(TASKS, 1, 1, dtype=torch.float64))
    return Learner(model, loss), theta, episode, lam


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_a_solve_stopped_at_its_first_step_falls_back_to_the_first_order_gradient_and_warns_once(batching):
    learner, theta, episode, lam = indefinite_task()
    method = ImplicitMAML(learner, lam=lam, train_steps=0, cg_steps=2, batching=batching)
    expected = r"non-positive curvature on 3 of 3 tasks .* first-order meta-gradient.*--imaml-lambda"
    with pytest.warns(UserWarning, match=expected):
        got, _ = meta_gradient(method, episode, theta)
    torch.testing.assert_close(got["weight"], torch.ones(1, 2, dtype=torch.float64))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta_gradient(method, episode, theta)  # once per run


def test_too_few_cg_steps_warn_that_the_meta_gradient_is_approximate():
    model, theta, _, _ = flat_problem()
    method = ImplicitMAML(Learner(model, mse), lam=0.5, inner_lr=0.05, train_steps=5, cg_steps=1)
    with pytest.warns(UserWarning, match="relative residual of .* after 1 steps: the meta-gradient is approximate"):
        meta_gradient(method, regression_episode(), theta)


def test_scores_follow_the_same_inner_solver():
    model, theta, _, _ = flat_problem()
    episode, method = regression_episode(), ImplicitMAML(Learner(model, mse), lam=2.0, inner_lr=0.05, cg_steps=2)
    scores = method.scores({"theta": theta}, episode, steps=7)
    assert scores.shape == (8, TASKS)
    for t, task in enumerate(zip(*episode)):
        at_theta = mse(functional_call(model, theta, (task[2],)), task[3])
        torch.testing.assert_close(scores[0, t], at_theta)
        _, loss, _, _ = task_meta_gradient(theta, task, method.learner, 2.0, 0.05, 7, 2)
        torch.testing.assert_close(scores[7, t], loss)
    assert not torch.equal(scores[7], scores[0])


@pytest.mark.parametrize("field, value", [("imaml_lambda", 0.0), ("cg_steps", 0), ("imaml_lambda", float("nan"))])
def test_imaml_settings_are_checked(field, value):
    with pytest.raises(MetalabError, match=f"--{field.replace('_', '-')} must be a positive"):
        Config(**{field: value})


def test_inner_steps_that_the_prior_alone_would_make_diverge_are_refused():
    model, _, _, _ = flat_problem()
    with pytest.raises(MetalabError, match="--inner-lr 0.5 times --imaml-lambda 4.0 must be below 2"):
        ImplicitMAML(Learner(model, mse), lam=4.0, inner_lr=0.5)


def test_a_meta_gradient_that_is_not_finite_is_an_error():
    model, theta, _, _ = flat_problem()
    method = ImplicitMAML(Learner(model, lambda p, y: (p * float("nan")).mean()), lam=2.0, inner_lr=0.05,
                          train_steps=1, cg_steps=1)
    with pytest.raises(MetalabError, match="not finite .* lower --inner-lr"):
        meta_gradient(method, regression_episode(), theta)


def test_presets_build_the_method():
    from metalab.methods.registry import make_method
    from metalab.problem import _network

    for name in ("omniglot-5w1s-imaml", "omniglot-20w1s-imaml", "sinusoid-imaml"):
        config = preset(name)
        method = make_method(config, Learner(_network(config, False, (1,) if config.problem == "sinusoid"
                                                      else (1, 28, 28), config.ways), mse))
        assert isinstance(method, ImplicitMAML) and method.cg_steps == 5 and method.lam == 2.0


@pytest.mark.slow
def test_train_and_eval_commands_run_imaml(tmp_path, omniglot_dir, capsys):
    from metalab.cli.main import main

    out, data = tmp_path / "run", ["--data-dir", str(omniglot_dir)]
    assert main(["train", "--preset", "omniglot-5w1s-imaml", *data, "--steps", "2", "--val-every", "2",
                 "--val-episodes", "2", "--meta-batch-size", "2", "--hidden", "8", "--inner-steps", "2",
                 "--eval-inner-steps", "2", "--cg-steps", "2", "--out-dir", str(out)]) == 0
    assert main(["eval", str(out / "best.pt"), *data, "--episodes", "3", "--steps", "2"]) == 0
    assert "after  2 inner steps" in capsys.readouterr().out
