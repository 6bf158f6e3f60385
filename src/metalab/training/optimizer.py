"""The outer optimizer: Adam over a list of tensors, updated in place, with the learning rate given at each step.

Its numbers are torch.optim.Adam's (methods/update_rules.py computes them op for op as torch's single-tensor path
does) and its state_dict has torch's layout, so a checkpoint written with torch.optim.Adam resumes here. It is
not torch.optim.Adam because constructing any torch.optim optimizer imports the compiler (torch._dynamo and
sympy, through its `_disable_dynamo` decorators), which then stays resident in every training process for nothing
(docs/performance.md). The schedule is the caller's: step(lr) takes the rate of this update, as
torch.optim.lr_scheduler.LambdaLR would have set it.
"""

import torch
from torch import Tensor

from metalab.methods.update_rules import ADAM_BETAS, ADAM_EPS, adam


class Adam:
    """Adam with L2 weight decay added to the gradient (as torch.optim.Adam's weight_decay). A parameter without a
    gradient at a step is left as it is and its moments are not advanced (as torch's)."""

    def __init__(self, params: list[Tensor], weight_decay: float = 0.0):
        self.params = list(params)
        self.weight_decay = weight_decay
        self.state: dict[int, dict[str, Tensor]] = {}  # index in params -> step, exp_avg, exp_avg_sq

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        for index, param in enumerate(self.params):
            if param.grad is None:
                continue
            gradient = param.grad.add(param, alpha=self.weight_decay) if self.weight_decay else param.grad
            if index not in self.state:  # its first update
                self.state[index] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(param),
                                     "exp_avg_sq": torch.zeros_like(param)}
            state = self.state[index]
            state["step"] += 1
            new_param, state["exp_avg"], state["exp_avg_sq"] = adam(
                param, gradient, state["exp_avg"], state["exp_avg_sq"], lr, state["step"].item())
            param.copy_(new_param)

    def state_dict(self) -> dict:
        """torch.optim.Adam's layout: {"state": {index: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [...]}."""
        return {"state": {i: dict(s) for i, s in self.state.items()},
                "param_groups": [{"params": list(range(len(self.params))), "betas": ADAM_BETAS, "eps": ADAM_EPS,
                                  "weight_decay": self.weight_decay, "amsgrad": False}]}

    def load_state_dict(self, state_dict: dict) -> None:
        """Moments from state_dict (this class's or torch.optim.Adam's); ValueError if they do not fit."""
        count = sum(len(group["params"]) for group in state_dict["param_groups"])
        if count != len(self.params):
            raise ValueError(f"it holds {count} parameters, the model {len(self.params)}")
        loaded = {}
        for index, moments in state_dict["state"].items():
            if not isinstance(index, int) or not 0 <= index < count:
                raise ValueError(f"it holds moments of a parameter {index!r}, not one of 0..{count - 1}")
            param = self.params[index]
            loaded[index] = {"step": torch.as_tensor(moments["step"], dtype=torch.float32).detach().cpu().clone()}
            for key in ("exp_avg", "exp_avg_sq"):
                if moments[key].shape != param.shape:
                    raise ValueError(f"state.{index}.{key} has shape {list(moments[key].shape)}, its parameter "
                                     f"{list(param.shape)}")
                loaded[index][key] = moments[key].detach().to(param).clone()
        self.state = loaded
