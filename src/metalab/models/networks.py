"""The networks of the field: Conv4 and ResNet-12 for images, a small MLP for sinusoids.

Conv4: 4 x [3x3 conv, batch norm, ReLU, 2x2 max-pool] then a linear layer. The pooling variant applies the
max-pool before the ReLU: the same function (max commutes with the monotone ReLU) and the same gradients, with
the ReLU on a quarter of the values, which is cheaper (docs/performance.md).
`pooling=False` gives the MAML paper's Omniglot variant, stride-2 convolutions instead of pooling.
Batch norm always normalizes with the statistics of the set it is applied to (no running averages, so
no state is carried between tasks), as in the MAML paper. Black-box learners embed each image on its own
(`norm="group"`: group norm over each image's channels), so that no prediction depends on other images.
ResNet-12 (Oreshkin et al. 2018, the residual embedding of few-shot learning since): four residual blocks of
`hidden` x (1, 2, 4, 8) channels, each three 3x3 convolutions with norm (LeakyReLU 0.1 between them) added to a
1x1 convolution of its input, then LeakyReLU and a 2x2 max-pool; 28x28 images end at 1x1.
"""

import torch
from torch import nn


def conv4(ways: int, in_channels: int = 1, hidden: int = 64, pooling: bool = True, image_size: int = 28,
          norm: str = "batch") -> nn.Sequential:
    return image_classifier("conv4", ways, in_channels, hidden, pooling, image_size, norm)


def image_classifier(kind: str, ways: int, in_channels: int = 1, hidden: int = 64, pooling: bool = True,
                     image_size: int = 28, norm: str = "batch") -> nn.Sequential:
    """The body `kind` names (image_body) and a linear layer to `ways` logits: images [n, C, S, S] -> [n, ways]."""
    body, features = image_body(kind, in_channels, hidden, pooling, image_size, norm)
    return nn.Sequential(*body, nn.Linear(features, ways))


def image_body(kind: str, in_channels: int = 1, hidden: int = 64, pooling: bool = True, image_size: int = 28,
               norm: str = "batch") -> tuple[nn.Sequential, int]:
    """'conv4' or 'resnet12' (which always pools): images [n, C, S, S] -> [n, features]; returns (body, features)."""
    if kind == "conv4":
        return conv4_body(in_channels, hidden, pooling, image_size, norm)
    if kind == "resnet12":
        return resnet12_body(in_channels, hidden, image_size, norm)
    raise ValueError(f"unknown image body {kind!r}; choose conv4 or resnet12")


def conv4_body(in_channels: int = 1, hidden: int = 64, pooling: bool = True, image_size: int = 28,
               norm: str = "batch") -> tuple[nn.Sequential, int]:
    """The four conv blocks and the flattening: images [n, C, S, S] -> [n, features]; returns (body, features)."""
    layers, channels, size = [], in_channels, image_size
    for _ in range(4):
        if pooling:
            layers += [nn.Conv2d(channels, hidden, 3, padding=1), _norm(norm, hidden), nn.MaxPool2d(2), nn.ReLU()]
            size //= 2
        else:
            layers += [nn.Conv2d(channels, hidden, 3, stride=2, padding=1), _norm(norm, hidden), nn.ReLU()]
            size = (size + 1) // 2
        channels = hidden
    return nn.Sequential(*layers, nn.Flatten()), hidden * size * size


def resnet12_body(in_channels: int = 1, hidden: int = 64, image_size: int = 28,
                  norm: str = "batch") -> tuple[nn.Sequential, int]:
    """ResNet-12's four residual blocks and the flattening: images [n, C, S, S] -> [n, features]."""
    blocks, channels, size = [], in_channels, image_size
    for multiple in (1, 2, 4, 8):
        blocks.append(ResidualBlock(channels, hidden * multiple, norm))
        channels, size = hidden * multiple, size // 2
    return nn.Sequential(*blocks, nn.Flatten()), channels * size * size


class ResidualBlock(nn.Module):
    """x [n, C_in, S, S] -> [n, C_out, S // 2, S // 2]: LeakyReLU(three convolutions of x + a 1x1 one), pooled.
    The convolutions have no bias: the norm after each cancels it."""

    def __init__(self, in_channels: int, out_channels: int, norm: str):
        super().__init__()
        layers, channels = [], in_channels
        for index in range(3):
            layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), _norm(norm, out_channels)]
            layers += [nn.LeakyReLU(0.1)] if index < 2 else []
            channels = out_channels
        self.convs = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), _norm(norm, out_channels))
        self.out = nn.Sequential(nn.LeakyReLU(0.1), nn.MaxPool2d(2))

    def forward(self, x):
        return self.out(self.convs(x) + self.shortcut(x))


class SetBatchNorm(nn.Module):
    """Batch norm with the statistics of the set it is applied to: x [n, C, H, W] is normalized per channel
    by the mean and (biased) variance over n, H and W, then scaled by `weight` [C] and shifted by `bias` [C].

    nn.BatchNorm2d(track_running_stats=False) computes the same function; it is written out here because a
    second-order gradient taken by torch.func transforms inside vmap is wrong through the native batch_norm
    operator (docs/design.md, benchmarks/bench_batching.py) and exact through these plain operations
    (tests/test_optimization.py). iMAML differentiates that way; the MAML family does not and uses torch's.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x):
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0, keepdim=True)
        # Folded into a per-channel scale and shift, so that the only full-size tensor autograd keeps here is x:
        # (x - mean) * rsqrt(var + eps) * weight + bias keeps two more, for every layer and task.
        scale = self.weight[:, None, None] * torch.rsqrt(var + self.eps)  # [1, C, 1, 1]
        return torch.addcmul(self.bias[:, None, None] - mean * scale, x, scale)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, track_running_stats=False)
    if kind == "set_batch":
        return SetBatchNorm(channels)
    if kind == "group":
        return nn.GroupNorm(1, channels)
    raise ValueError(f"norm must be 'batch', 'set_batch' or 'group', got {kind!r}")


def mlp(in_features: int = 1, hidden: int = 40, layers: int = 2, out_features: int = 1,
        bias_transformation: int = 0) -> nn.Sequential:
    """The MAML paper's sinusoid regressor: `layers` hidden ReLU layers of `hidden` units. With
    `bias_transformation` = d > 0, a learned vector of d numbers is concatenated to every input first."""
    modules, width = [], in_features
    if bias_transformation:
        modules, width = [BiasTransformation(bias_transformation)], in_features + bias_transformation
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return nn.Sequential(*modules, nn.Linear(width, out_features))


def mlp_parameters(in_features: int, hidden: int, layers: int, out_features: int = 1,
                   bias_transformation: int = 0) -> int:
    """The number of parameters of mlp(in_features, hidden, layers, out_features, bias_transformation), in
    closed form: weights and biases of each linear layer, plus the bias-transformation vector."""
    first = in_features + bias_transformation
    return (bias_transformation + (first + 1) * hidden + (layers - 1) * (hidden + 1) * hidden
            + (hidden + 1) * out_features)


class BiasTransformation(nn.Module):
    """Finn & Levine 2018's bias transformation: x [..., n, f] -> [..., n, f + d], each input followed by the
    same learned vector [d]. The first layer's weights on it act as a bias whose gradient step is separate from
    the other weights' (their step depends on x, this one does not), which the inner loop adapts too."""

    def __init__(self, size: int):
        super().__init__()
        self.vector = nn.Parameter(torch.zeros(size))

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.vector)

    def forward(self, x):
        return torch.cat([x, self.vector.expand(*x.shape[:-1], -1)], dim=-1)


def reinitialize(model: nn.Module, seed: int) -> None:
    """Draw the model's initialization afresh from `seed`: every submodule's own reset_parameters, in order.
    (Parameters a module sets to constants in __init__ keep them.)"""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
