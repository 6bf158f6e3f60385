"""The layers fine-tuning sees in a network, and the heads it starts each task from.

    body  the layers below the output layer, in blocks: each Conv2d or Linear with the batch norm after it
          (conv4: 4 blocks; the sinusoid MLP: 2)
    head  the output layer, sized for the task's ways, initialized as
            zero                    W = 0, b = 0
            class_means             W_k = 2 c_k, b_k = -|c_k|^2, with c_k the mean support embedding of class k:
                                    logits = |z|^2 - |z - c_k|^2, so at 0 steps exactly the nearest class mean
            normalized_class_means  W_k = c_k / |c_k|, b = 0: nearest class mean by cosine at 0 steps
            keep                    the starting point's own head, its first `ways` rows (a MAML theta's head,
                                    whose rows are exchangeable since labels are permuted per task; or the
                                    sinusoid regressor's output layer)
"""

import itertools
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metalab.config import FinetuneConfig
from metalab.errors import MetalabError
from metalab.methods.batching import map_tasks
from metalab.methods.learner import Params


@dataclass(frozen=True)
class Layers:
    """Parameter names of a network's body blocks (lowest first) and of its head (weight, bias)."""

    body: tuple[tuple[str, ...], ...]
    head: tuple[str, str]

    @property
    def body_names(self) -> tuple[str, ...]:
        return tuple(itertools.chain(*self.body))


def layers_of(model: nn.Module) -> Layers:
    """Blocks of an nn.Sequential that ends in its nn.Linear output layer (conv4, mlp): each Conv2d or Linear
    starts a block; parameterized layers after it (batch norm) belong to that block."""
    if not (isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear)):
        raise MetalabError(f"fine-tuning needs an nn.Sequential network ending in its nn.Linear output layer "
                           f"(metalab.models.networks.conv4 or mlp), got {type(model).__name__}")
    blocks: list[list[str]] = []
    for index, module in list(model.named_children())[:-1]:
        names = [f"{index}.{name}" for name, _ in module.named_parameters()]
        if not names:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)) or not blocks:
            blocks.append([])
        blocks[-1] += names
    head = str(len(model) - 1)
    return Layers(tuple(tuple(b) for b in blocks), (f"{head}.weight", f"{head}.bias"))


def initial_heads(model: nn.Sequential, layers: Layers, start: Params, support_x: Tensor, support_y: Tensor,
                  config: FinetuneConfig, batching: str) -> Params:
    """Every task's head: {weight [B, ways, features], bias [B, ways]}."""
    weight_name, bias_name = layers.head
    tasks, (ways, features) = support_x.shape[0], model[-1].weight.shape
    if config.head_init == "zero":
        like = start[layers.body[0][0]]
        return {weight_name: like.new_zeros(tasks, ways, features), bias_name: like.new_zeros(tasks, ways)}
    if config.head_init == "keep":
        return {weight_name: start[weight_name][:ways].expand(tasks, ways, features),
                bias_name: start[bias_name][:ways].expand(tasks, ways)}
    body = {name: start[name] for name in layers.body_names}
    head_of = partial(class_mean_head, model[:-1], body, ways=ways,
                      normalized=config.head_init == "normalized_class_means")
    weight, bias = map_tasks(head_of, batching, in_dims=(0, 0))(support_x, support_y)
    return {weight_name: weight, bias_name: bias}


def class_mean_head(body_model: nn.Module, body: Params, support_x: Tensor, support_y: Tensor, ways: int,
                    normalized: bool) -> tuple[Tensor, Tensor]:
    """One task's head from its class means c [ways, features] of the support embeddings: (2c, -|c|^2), whose
    logits rank classes by Euclidean distance to c, or (c / |c|, 0), which ranks them by cosine."""
    embeddings = functional_call(body_model, body, (support_x,))  # [S, features]
    members = (support_y.unsqueeze(1) == torch.arange(ways, device=support_y.device)).to(embeddings.dtype)
    means = members.T @ embeddings / members.sum(0).unsqueeze(1)  # [ways, features]
    if normalized:
        return means / means.norm(dim=1, keepdim=True), torch.zeros_like(means[:, 0])
    return 2 * means, -(means * means).sum(1)


def check_start(model: nn.Sequential, layers: Layers, start: Params, config: FinetuneConfig,
                regression: bool) -> None:
    """A clear error unless `start` holds every parameter fine-tuning needs, with this network's shapes."""
    expected = {name: p.shape for name, p in model.named_parameters()}
    needed = list(layers.body_names) + (list(layers.head) if config.head_init == "keep" else [])
    for name in needed:
        if name not in start:
            what = ("the starting point has no output layer to keep; use --head-init class_means or zero"
                    if name in layers.head else f"the starting point has no parameter {name!r}")
            raise MetalabError(f"{what} (it has {sorted(start)})")
        shape = start[name].shape
        fits = shape[1:] == expected[name][1:] if name in layers.head else shape == expected[name]
        if not fits:
            raise MetalabError(f"the starting point's {name} has shape {tuple(shape)}, but this network's is "
                               f"{tuple(expected[name])}: fine-tune with the architecture it was trained with "
                               "(--hidden, --pooling of the checkpoint)")
    ways = expected[layers.head[0]][0]
    if config.head_init == "keep" and start[layers.head[0]].shape[0] < ways:
        raise MetalabError(f"--head-init keep reuses the starting point's output layer, which has "
                           f"{start[layers.head[0]].shape[0]} outputs, but the tasks are {ways}-way; use "
                           f"--ways {start[layers.head[0]].shape[0]} or fewer, or --head-init class_means or zero")
    if config.head_init.endswith("class_means") and regression:
        raise MetalabError(f"--head-init {config.head_init} needs class labels, but these tasks are regression; "
                           "use --head-init keep or zero")
    if config.freeze_blocks > len(layers.body):
        raise MetalabError(f"--freeze-blocks {config.freeze_blocks} exceeds the network's {len(layers.body)} "
                           f"body blocks; use at most {len(layers.body)} (which trains the head alone)")
