"""The outer optimizer (training/optimizer.py) against torch.optim.Adam and LambdaLR: the same numbers bit for bit,
checkpoints of either resumed by it, and a training process that never imports the compiler."""

import math
import os
import subprocess
import sys

import pytest
import torch

from metalab.training.optimizer import Adam

STEPS = 6


def problem(seed=0):
    """Three float32 tensors and a loss over them; the third gets no gradient on odd steps."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(4, 3, generator=g).requires_grad_(), torch.randn(3, generator=g).requires_grad_(),
              torch.randn(2, generator=g).requires_grad_()]
    targets = torch.randn(STEPS, 4, generator=g)

    def loss(ps, step):
        out = torch.tanh(ps[0] @ ps[1]) - targets[step]
        extra = (ps[2] ** 2).sum() if step % 2 == 0 else 0.0
        return (out**2).mean() + extra

    return params, loss


def cosine(step):
    return 0.5 * (1.0 + math.cos(math.pi * step / STEPS))


def torch_run(params, loss, lr, weight_decay, steps, pair=None):
    """torch.optim.Adam with LambdaLR, as training/loop.py ran them before its own Adam: (optimizer, scheduler)."""
    optimizer, scheduler = pair or (torch.optim.Adam(params, lr=lr, weight_decay=weight_decay), None)
    scheduler = scheduler or torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    for step in steps:
        optimizer.zero_grad(set_to_none=True)
        loss(params, step).backward()
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def ours_run(params, loss, lr, weight_decay, steps, optimizer=None):
    optimizer = optimizer or Adam(params, weight_decay=weight_decay)
    for step in steps:
        optimizer.zero_grad()
        loss(params, step).backward()
        optimizer.step(lr * cosine(step))
    return optimizer


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_the_same_numbers_as_torch_adam_with_lambda_lr_bit_for_bit(weight_decay):
    (theirs, loss), (ours, _) = problem(), problem()
    reference, _ = torch_run(theirs, loss, 0.05, weight_decay, range(STEPS))
    optimizer = ours_run(ours, loss, 0.05, weight_decay, range(STEPS))
    for a, b in zip(theirs, ours, strict=True):
        assert torch.equal(a, b)
    for index, moments in reference.state_dict()["state"].items():
        for key, value in moments.items():
            assert torch.equal(value, optimizer.state_dict()["state"][index][key]), (index, key)
    assert float(optimizer.state[2]["step"]) == STEPS // 2  # no gradient, no update: as torch's


def test_a_torch_adam_state_resumes_here_as_it_would_have_continued_there():
    (theirs, loss), (ours, _) = problem(seed=1), problem(seed=1)
    reference = torch_run(theirs, loss, 0.05, 0.0, range(3))
    ours_run(ours, loss, 0.05, 0.0, range(3))  # the same parameters so far (above)
    resumed = Adam(ours)
    resumed.load_state_dict(reference[0].state_dict())
    torch_run(theirs, loss, 0.05, 0.0, range(3, STEPS), reference)
    ours_run(ours, loss, 0.05, 0.0, range(3, STEPS), resumed)
    for a, b in zip(theirs, ours, strict=True):
        assert torch.equal(a, b)


def test_a_state_that_does_not_fit_is_refused():
    params, loss = problem()
    state = ours_run(params, loss, 0.05, 0.0, range(2)).state_dict()
    with pytest.raises(ValueError, match="3 parameters, the model 2"):
        Adam(params[:2]).load_state_dict(state)
    swapped = {**state, "state": {0: state["state"][1], 1: state["state"][0], 2: state["state"][2]}}
    with pytest.raises(ValueError, match=r"state\.0\.exp_avg has shape \[3\], its parameter \[4, 3\]"):
        Adam(params).load_state_dict(swapped)
    with pytest.raises(ValueError, match="a parameter 7"):
        Adam(params).load_state_dict({**state, "state": {7: state["state"][0]}})


def test_a_training_process_never_imports_the_compiler(tmp_path):
    code = ("import sys; from metalab.cli.main import main\n"
            "try:\n"
            "    main(['train', '--preset', 'sinusoid-maml', '--steps', '4', '--val-every', '2', '--val-episodes',"
            f" '4', '--checkpoint-every', '2', '--threads', '1', '--out-dir', {str(tmp_path / 'run')!r}])\n"
            "except SystemExit as exit:\n"
            "    assert not exit.code, exit.code\n"
            "print(sorted(m for m in ('torch._dynamo', 'torch._inductor', 'sympy') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
