"""The regression MLP's depth and bias transformation, parameter counts (closed form against the built network),
the width solver of the depth study, and the black-box learners' width knobs."""

import pytest
import torch
from torch.func import functional_call

from metalab.config import PRESETS
from metalab.data.episode import generator_for
from metalab.data.sinusoid import SinusoidTasks
from metalab.methods.optimization import adapt
from metalab.methods.registry import make_method
from metalab.models import blackbox
from metalab.models.learners import blackbox_model
from metalab.models.networks import BiasTransformation, mlp, mlp_parameters
from metalab.models.snail import SNAIL
from metalab.problem import build_problem
from metalab.studies.parameter_budget import model_parameters, width_for_budget

BUDGET = 751  # one hidden layer of 250 units, 1 input, 1 output: 2 * 250 + 251


def numel(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("hidden,layers,bias_transformation", [(250, 1, 0), (40, 2, 0), (13, 5, 0), (100, 2, 10),
                                                               (7, 3, 3)])
def test_parameter_count_in_closed_form_matches_the_network(hidden, layers, bias_transformation):
    model = mlp(1, hidden, layers, bias_transformation=bias_transformation)
    assert numel(model) == mlp_parameters(1, hidden, layers, bias_transformation=bias_transformation)
    assert sum(isinstance(m, torch.nn.Linear) for m in model) == layers + 1
    assert mlp_parameters(1, 250, 1) == BUDGET


def test_bias_transformation_is_a_learned_input_beside_x_adapted_by_the_inner_loop():
    torch.manual_seed(0)
    model = mlp(1, 8, 2, bias_transformation=3)
    assert isinstance(model[0], BiasTransformation) and model[1].in_features == 4
    with torch.no_grad():
        model[0].vector.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(6, 1)
    by_hand = model[1:](torch.cat([x, torch.tensor([[0.5, -1.0, 2.0]]).expand(6, 3)], dim=1))
    assert torch.equal(model(x), by_hand)
    # MAML's theta holds the vector, and one inner step on a task's support set moves it
    config = PRESETS["sinusoid-maml"].replace(hidden=8, bias_transformation=3, inner_lr=0.01)
    problem = build_problem(config, parts=("train",))
    method = make_method(config, problem.learner)
    meta = method.init_meta()
    assert meta["theta"]["0.vector"].shape == (3,)
    task = SinusoidTasks(5, 5).sample(generator_for(0, 0), 1).task(0)
    phi = adapt(meta, task.support_x[0], task.support_y[0], problem.learner, method.inner, steps=1)
    assert not torch.equal(phi["0.vector"], meta["theta"]["0.vector"])
    prediction = functional_call(problem.learner.model, phi, (task.query_x[0],))
    assert prediction.shape == (5, 1) and torch.isfinite(prediction).all()


@pytest.mark.parametrize("layers,width,count", [(1, 250, 751), (2, 25, 726), (3, 18, 739), (4, 15, 766), (5, 13, 768)])
def test_the_width_solver_matches_the_budget_within_a_few_percent(layers, width, count):
    solved = width_for_budget(lambda w: mlp_parameters(1, w, layers), BUDGET)
    assert (solved, mlp_parameters(1, solved, layers)) == (width, count)
    assert abs(count - BUDGET) / BUDGET < 0.035
    # no other width comes nearer the budget
    assert all(abs(mlp_parameters(1, w, layers) - BUDGET) >= abs(count - BUDGET) for w in range(1, 400))


def test_model_parameters_counts_the_network_the_problem_builds():
    config = PRESETS["sinusoid-maml"].replace(problem="polynomial", shots=40, hidden=18, hidden_layers=3)
    assert model_parameters(config) == 739
    snail = config.replace(method="snail", hidden=2, width=2, sequence_length=41)
    assert model_parameters(snail) == numel(build_problem(snail, parts=("train",)).learner.model)


def test_snail_width_scales_its_sizes_and_128_is_the_papers():
    embed, dim = blackbox.embedding("mlp", (1,), hidden=40)
    paper = SNAIL(embed, dim, 1, 1, False, sequence_length=6)  # filters 128, attention (64,32) (256,128) (512,256)
    scaled = blackbox_model("snail", (1,), 1, 1, False, embedding="mlp", hidden=40, width=128, sequence_length=6)
    assert [tuple(p.shape) for p in paper.parameters()] == [tuple(p.shape) for p in scaled.parameters()]
    small = blackbox_model("snail", (1,), 1, 1, False, embedding="mlp", hidden=40, width=8, sequence_length=6)
    assert small.blocks[0].value.out_features == 2 and small.blocks[1].now.out_features == 16


def test_the_regression_embedding_has_hidden_units():
    embed, dim = blackbox.embedding("mlp", (1,), hidden=12)
    assert dim == 12 and embed(torch.zeros(3, 1)).shape == (3, 12)
