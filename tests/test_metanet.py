"""Meta Networks: the meta information (per-example gradients, preprocessed) against independent references, and
training end to end through it."""

import math

import torch
from conftest import random_image_tasks

from metalab.models.learners import blackbox_model
from metalab.models.metanet import preprocessed

WAYS, SHOTS, QUERIES, SIZE = 3, 2, 4, 6


def metanet(seed=0):
    torch.manual_seed(seed)
    return blackbox_model("metanet", (1, SIZE, SIZE), WAYS, WAYS, True, embedding="pixels", width=5).double()


def episode(seed=0, tasks=2):
    return random_image_tasks(WAYS, SHOTS, QUERIES, SIZE, seed, tasks)


def test_gradients_are_preprocessed_by_log_magnitude_and_sign():
    g = torch.tensor([1.0, -math.exp(-5), 1e-6, -2e-5], dtype=torch.float64)
    expected = torch.tensor([[0.0, 1.0], [-0.5, -1.0], [-1.0, math.exp(10) * 1e-6], [-1.0, -math.exp(10) * 2e-5]],
                            dtype=torch.float64)
    torch.testing.assert_close(preprocessed(g), expected)


def test_per_example_gradients_match_one_autograd_call_per_example():
    model = metanet()
    support_x, support_y, _ = episode()
    features = model.features(support_x)
    targets = model.label_input(support_y).double()

    def task_loss(w, feature, target):
        return model.example_loss(torch.relu(feature @ w[0].T + model.w1.bias) @ w[1].T + model.w2.bias, target)

    weights = (model.w1.weight, model.w2.weight)
    batched = model.per_example_gradients(task_loss, weights, features, targets)
    for b in range(features.shape[0]):
        for i in range(features.shape[1]):
            # the closed form of the output layer's gradient: (softmax - one-hot) outer the hidden activations
            reference = torch.autograd.grad(task_loss(weights, features[b, i], targets[b, i]), weights)
            for got, want in zip(batched, reference):
                torch.testing.assert_close(got[b, i], want)
            hidden = torch.relu(model.w1(features[b, i]))
            residual = torch.softmax(model.w2(hidden), -1) - targets[b, i]
            torch.testing.assert_close(batched[1][b, i], torch.outer(residual, hidden))


def test_the_meta_gradient_flows_through_the_meta_information():
    """The query loss's gradient with respect to the slow weights, through the per-example gradients and the fast
    weights generated from them, matches finite differences (float64); m and d, which see nothing but the
    meta information, receive gradient."""
    model = metanet()
    support_x, support_y, query_x = episode(tasks=1)

    def query_output(w2, d_out):
        theta = {**dict(model.named_parameters()), "w2.weight": w2, "d_out.weight": d_out}
        phi = torch.func.functional_call(model, theta, ("adapt", support_x, support_y))
        return torch.func.functional_call(model, theta, ("predict", phi, query_x)).sum()

    inputs = (model.w2.weight.detach().clone().requires_grad_(True),
              model.d_out.weight.detach().clone().requires_grad_(True))
    assert torch.autograd.gradcheck(query_output, inputs, fast_mode=True)
    out = model("predict", model("adapt", support_x, support_y), query_x)
    torch.nn.functional.cross_entropy(out.flatten(0, 1), torch.zeros(out.shape[1], dtype=torch.long)).backward()
    for name in ("m.0.weight", "d.weight_ih", "q.weight", "log_sharpness"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_queries_read_the_fast_weights_of_the_support_example_they_resemble():
    """A query identical to support example i, with a sharp attention, is predicted with W*_i: its output equals
    the base learner's with W*_i alone, on features centred on the support set's mean."""
    model = metanet()
    with torch.no_grad():
        model.log_sharpness.fill_(math.log(1e8))
    support_x, support_y, _ = episode(tasks=1)
    query_x = support_x[:, [2]]
    phi = model("adapt", support_x, support_y)
    memory_w1, memory_w2 = phi[2]
    out = model("predict", phi, query_x)[0, 0]
    features = model.features(query_x)[0, 0] - model.features(support_x)[0].mean(dim=0)
    hidden = torch.relu(model.w1(features)) + torch.relu(memory_w1[0, 2] @ features)
    torch.testing.assert_close(out, model.w2(hidden) + memory_w2[0, 2] @ hidden)


def test_fast_weights_of_one_sign_still_act_on_features_that_are_never_negative():
    """m can give every coordinate of W1* one sign (its last bias); the base learner's features (here pixels) are
    never negative. Centred on the support set's mean they take both signs, so relu(W1* h) is not zero for every
    query: the fast-weight layer changes the predictions and can learn (it stayed dead without the centring)."""
    model = metanet()
    with torch.no_grad():
        model.m[-1].weight.zero_()
        model.m[-1].bias.fill_(-1.0)
    support_x, support_y, query_x = episode()
    phi = model("adapt", support_x, support_y)
    assert (phi[2][0] < 0).all()
    without_w1_star = (*phi[:2], (torch.zeros_like(phi[2][0]), phi[2][1]), *phi[3:])
    assert not torch.allclose(model("predict", phi, query_x), model("predict", without_w1_star, query_x))


def test_regression_features_are_not_centred():
    """A regression target depends on where x is: b reads its features as they are (classification centres them)."""
    torch.manual_seed(0)
    model = blackbox_model("metanet", (1,), 1, 1, False, embedding="mlp", hidden=8, width=5).double()
    support_x, support_y = torch.randn(2, 5, 1, dtype=torch.float64), torch.randn(2, 5, 1, dtype=torch.float64)
    assert model("adapt", support_x, support_y)[-1].abs().max() == 0
    assert metanet()("adapt", *episode()[:2])[-1].abs().max() > 0
