"""Every setting of a run, in typed dataclasses, and the named presets.

`metalab train --preset NAME --field value ...` starts from a preset and overrides fields by name; `metalab
pretrain` and `metalab finetune` do the same with PretrainConfig and FinetuneConfig. This module imports no
torch, so the command line builds its flags from these fields at once.
"""

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Self

from metalab.errors import MetalabError

TASK_BATCHING = ("loop", "vmap")  # how a method maps over the tasks of a batch (methods/batching.py)
COMPILE = ("false", "true", "aot")  # how the MAML family's meta-gradient runs (methods/batching.py)
HEAD_INITS = ("zero", "class_means", "normalized_class_means", "keep")  # fine-tuning heads (methods/heads.py)
# Several processes (distributed/group.py): how ranks talk ("auto": gloo on the CPU, nccl on CUDA), and how long
# a collective waits for a silent rank before the others stop.
DIST_BACKENDS = ("auto", "gloo", "nccl")
DIST_TIMEOUT_S = 300.0


# What Config accepts, field by field (the command line's fuzz tests draw their bad values from these too).
CONFIG_CHOICES = {"problem": ("omniglot", "sinusoid", "polynomial"), "embedding": ("conv4", "resnet12", "pixels"),
                  "lr_schedule": ("cosine", "constant"), "task_batching": TASK_BATCHING,
                  "lr_shape": ("element", "tensor"), "split": ("minimal", "lake", "vinyals"), "compile": COMPILE}
CONFIG_POSITIVE = ("ways", "shots", "queries", "hidden", "width", "layers", "memory_slots", "steps", "meta_batch_size",
                   "val_every", "val_episodes", "checkpoint_every", "log_every", "inner_lr", "meta_lr", "imaml_lambda",
                   "cg_steps", "hidden_layers", "elastic_sigma")
CONFIG_AT_LEAST_ZERO = ("val_ways", "inner_steps", "eval_inner_steps", "first_order_warmup", "threads",
                        "train_alphabets", "seed", "grad_clip", "augment", "sequence_length", "amplitude_min",
                        "amplitude_max", "phase_min", "phase_max", "bias_transformation", "within_alphabet",
                        "elastic_alpha", "label_smoothing", "stroke_drawers", "stroke_characters", "task_chunk")
IMAGE_OPTIONS = ("mirrors", "augment", "elastic_alpha", "stroke_drawers", "stroke_characters", "train_alphabets",
                 "within_alphabet")  # they act on Omniglot's classes: refused for regression problems


class Settings:
    def replace(self, **changes) -> Self:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Config(Settings):
    # problem
    problem: str = "omniglot"  # omniglot | sinusoid | polynomial (cubic, data/polynomial.py)
    split: str = "minimal"  # omniglot class split: minimal | lake | vinyals
    ways: int = 5
    val_ways: int = 0  # ways of meta-validation episodes; 0: `ways` (prototypical networks train with more ways)
    shots: int = 1
    queries: int = 15  # per class (omniglot) or points (sinusoid) in each task's query set
    rotations: bool = True  # rotated characters (90/180/270) as extra meta-training classes
    mirrors: bool = False  # mirrored characters (and their rotations) as extra meta-training classes
    within_alphabet: float = 0.0  # probability that a meta-training task draws its N classes from one alphabet
    augment: float = 0.0  # strength of random affine distortions of meta-training tasks (data/augment.py); 0: none
    elastic_alpha: float = 0.0  # elastic distortions of meta-training images (data/elastic.py): scale, pixels; 0: none
    elastic_sigma: float = 4.0  # their smoothing, pixels of the 28x28 image (Simard et al.'s MNIST values: 34 and 4)
    stroke_drawers: int = 0  # K re-drawings of every meta-training drawing from its strokes (data/new_drawers.py)
    stroke_characters: int = 0  # M new meta-training characters, halves of two of one alphabet (data/new_characters.py)
    train_alphabets: int = 0  # meta-train on the first N of its alphabets (by name) only, a data-scaling study; 0: all
    # sinusoid tasks A sin(x - phase) of training and validation: A ~ U[amplitude_min, amplitude_max], phase likewise
    amplitude_min: float = 0.1
    amplitude_max: float = 5.0
    phase_min: float = 0.0
    phase_max: float = math.pi
    # model
    hidden: int = 64  # Conv4 channels, or the MLP's width
    hidden_layers: int = 2  # the regression MLP's hidden layers (a depth study varies them)
    bias_transformation: int = 0  # regression MLP: a learned input vector of this size beside x (Finn & Levine 2018)
    pooling: bool = True  # Conv4 with max-pooling; False: the MAML paper's stride-2 convolutions
    # method (methods/registry.py) and its inner loop
    method: str = "maml"  # a name in methods/registry.py: maml, fomaml, imaml, lstm, snail, protonet, ...
    inner_lr: float = 0.4
    inner_steps: int = 1  # during meta-training
    eval_inner_steps: int = 3  # at validation and evaluation
    lr_shape: str = "element"  # Meta-SGD learned rates: element | tensor
    first_order_warmup: int = 0  # MAML: meta-steps of first-order MAML before second order (buys speed)
    imaml_lambda: float = 2.0  # implicit MAML: precision of the Gaussian prior centred at theta (methods/imaml.py)
    cg_steps: int = 5  # implicit MAML: conjugate-gradient steps of its meta-gradient
    label_smoothing: float = 0.0  # classification labels smoothed toward uniform, in every loss of the method; 0: none
    embedding: str = "conv4"  # the image network: conv4 | resnet12 (widths `hidden` x 1, 2, 4, 8) | pixels (black box)
    # black-box learners (models/blackbox.py); their image network's width and pooling are `hidden` and `pooling`
    width: int = 128  # LSTM / controller / encoder / transformer width
    layers: int = 2  # LSTM or transformer layers
    memory_slots: int = 128  # memory-augmented network: slots of 40 numbers each
    sequence_length: int = 0  # SNAIL: episode length T its TC blocks are sized for (support + 1); 0: this config's
    embedding_from: str = ""  # checkpoint of a black-box run whose Conv4 embedding starts this one's (warm start)
    # outer loop
    steps: int = 10_000
    meta_batch_size: int = 32
    meta_lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine (to 0 at `steps`) | constant
    grad_clip: float = 10.0  # max global norm of the meta-gradient; 0 disables clipping
    task_batching: str = "loop"  # loop | vmap: a measured choice per problem and device (docs/performance.md)
    task_chunk: int = 0  # vmap, MAML family: tasks per vmapped chunk, each chunk's graph freed in turn; 0: all at once
    compile: str = "false"  # MAML family: chunks' meta-gradients compiled: true (torch.compile) | aot (ahead of time)
    # validation, checkpoints, logs
    val_every: int = 500
    val_episodes: int = 200
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch CPU threads; 0 = one per core
    out_dir: str = ""  # default runs/<preset>

    def __post_init__(self):
        if isinstance(self.compile, bool):  # a boolean before "aot" existed, as older checkpoints hold it
            object.__setattr__(self, "compile", str(self.compile).lower())
        check_types(self)
        _check_choices(self, CONFIG_CHOICES)
        _check_numbers(self, positive=CONFIG_POSITIVE, at_least_zero=CONFIG_AT_LEAST_ZERO)
        if not self.method:
            raise MetalabError("--method must name a method (methods/registry.py), got an empty string")
        if self.problem != "omniglot" and any(getattr(self, name) for name in IMAGE_OPTIONS):
            raise MetalabError(f"{', '.join('--' + _flag(name) for name in IMAGE_OPTIONS)} act on Omniglot's classes; "
                               "they do not apply to sinusoids or polynomials")
        if self.stroke_drawers and self.stroke_characters:
            raise MetalabError("--stroke-drawers re-draws the data set's own drawings, not --stroke-characters' new "
                               "ones: use one of the two")
        for name in ("amplitude", "phase"):
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if low > high:
                raise MetalabError(f"--{name}-min must not exceed --{name}-max, got {low} > {high}")
        if self.within_alphabet > 1:
            raise MetalabError(f"--within-alphabet is a probability and must be in [0, 1], got {self.within_alphabet}")
        if self.label_smoothing and (self.problem != "omniglot" or self.label_smoothing >= 1):
            raise MetalabError(f"--label-smoothing must be in [0, 1) and applies to Omniglot's classes, got "
                               f"{self.label_smoothing} for {self.problem}")
        if self.augment > 2:
            raise MetalabError(f"--augment must be in [0, 2] (0 disables it), got {self.augment}")
        if self.val_ways and self.problem != "omniglot":
            raise MetalabError("--val-ways sets the ways of Omniglot's validation episodes; regression tasks have none")
        check_device(self.device)


@dataclass(frozen=True)
class PretrainConfig(Settings):
    problem: str = "omniglot"  # omniglot | sinusoid
    split: str = "minimal"  # omniglot: minimal | lake | vinyals; its meta-train characters are the classes
    rotations: bool = True  # omniglot: rotated characters (90/180/270) as extra classes, as in meta-training
    hidden: int = 32  # Conv4 channels (32 and no pooling: as the Omniglot presets), or the MLP's width
    pooling: bool = False
    val_drawers: int = 4  # omniglot: the last drawers of every class, held out for early stopping
    batch_size: int = 128  # omniglot: images per step; sinusoid: tasks per step (each gives shots + queries points)
    steps_per_epoch: int = 1000  # sinusoid only (fresh tasks never run out); an omniglot epoch is one pass
    val_episodes: int = 200  # sinusoid: validation tasks
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_epochs: int = 40
    patience: int = 3  # epochs without a better validation score before stopping
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = one per core
    device: str = "cpu"  # cpu | cuda | cuda:N

    def __post_init__(self):
        check_types(self)
        _check_choices(self, {"problem": ("omniglot", "sinusoid"), "split": ("minimal", "lake", "vinyals")})
        _check_numbers(self, positive=("hidden", "val_drawers", "batch_size", "steps_per_epoch", "val_episodes",
                                       "max_epochs", "patience", "lr"),
                       at_least_zero=("weight_decay", "threads", "seed"))
        check_device(self.device)


@dataclass(frozen=True)
class FinetuneConfig(Settings):
    """Fine-tuning on each task's support set (methods/finetune.py)."""

    head_init: str = "class_means"  # zero | class_means | normalized_class_means | keep
    steps: int = 50
    optimizer: str = "adam"  # sgd | adam
    head_lr: float = 1e-2
    body_lr: float = 1e-3  # of the top body block; 0 trains the head alone
    layer_decay: float = 1.0  # a block d blocks below the top learns at body_lr * layer_decay**d
    freeze_blocks: int = 0  # the first (lowest) body blocks that never change
    unfreeze_every: int = 0  # G > 0: head alone for G steps, then one more block (top down) every G steps
    weight_decay: float = 0.0

    def __post_init__(self):
        check_types(self)
        _check_choices(self, {"head_init": HEAD_INITS, "optimizer": ("sgd", "adam")})
        _check_numbers(self, positive=(), at_least_zero=("steps", "head_lr", "body_lr", "layer_decay",
                                                        "freeze_blocks", "unfreeze_every", "weight_decay"))


def _check_choices(config, choices: dict[str, tuple]) -> None:
    for name, allowed in choices.items():
        if getattr(config, name) not in allowed:
            raise MetalabError(f"--{_flag(name)} must be one of {allowed}, got {getattr(config, name)!r}")


def _check_numbers(config, positive: tuple[str, ...], at_least_zero: tuple[str, ...]) -> None:
    check_numbers({name: getattr(config, name) for name in positive}, positive=True)
    check_numbers({name: getattr(config, name) for name in at_least_zero}, positive=False)


def check_numbers(values: dict, positive: bool) -> None:
    """Each value (by field name) is a finite number, > 0 if `positive` else >= 0; seeds are below 2**64."""
    for name, value in values.items():
        if not math.isfinite(value) or value < 0 or (value == 0 and positive):
            kind = "a positive finite number" if positive else "a finite number >= 0"
            raise MetalabError(f"--{_flag(name)} must be {kind}, got {value}")
        if name == "seed" and value >= SEEDS:
            raise MetalabError(f"--seed must be below 2**64, got {value}")


def check_types(config) -> None:
    """Every field holds a value of its annotated type (an int is also a float; a bool is not an int)."""
    for field in dataclasses.fields(config):
        value, kind = getattr(config, field.name), field.type
        accepted = (int, float) if kind is float else kind
        if isinstance(kind, type) and (not isinstance(value, accepted) or kind is not bool and isinstance(value, bool)):
            shown = repr(value) if isinstance(value, (str, int, float, type(None))) else f"a {type(value).__name__}"
            raise MetalabError(f"--{_flag(field.name)} must be a{'n' if kind is int else ''} "
                               f"{_TYPE_NAMES.get(kind, kind.__name__)}, got {shown[:80]}")


_TYPE_NAMES = {int: "integer", float: "number", bool: "boolean (true or false)", str: "string"}
SEEDS = 2**64  # seeds are in [0, 2**64): data/episode.py's generator_for


def _flag(name: str) -> str:
    return name.replace("_", "-")


def check_device(device: str) -> None:
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise MetalabError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


# The MAML authors' released sinusoid code (docs/results.md): its inner lr is 0.001, not the paper's text's 0.01,
# at which the learned initialization is unstable under more inner steps than trained.
_SINUSOID = Config(problem="sinusoid", shots=10, queries=10, hidden=40, inner_lr=0.001, inner_steps=1,
                   eval_inner_steps=10, steps=70_000, meta_batch_size=25, meta_lr=1e-3, lr_schedule="constant",
                   grad_clip=0.0, task_batching="vmap", val_every=2000, val_episodes=200, checkpoint_every=2000,
                   log_every=100)
# Omniglot on 2 CPU cores, settings that buy speed (docs/performance.md): the MAML paper's stride-2 Conv4,
# 32 channels, 5 queries per class, 16 tasks per meta-batch, tasks batched by vmap.
_OMNIGLOT = Config(hidden=32, pooling=False, queries=5, meta_batch_size=16, steps=8000, meta_lr=1e-3,
                   inner_lr=0.4, inner_steps=1, eval_inner_steps=3, val_every=500, checkpoint_every=500,
                   task_batching="vmap")

_BLACK_BOX = _OMNIGLOT.replace(steps=10_000, val_every=1000, checkpoint_every=1000, task_batching="loop")

PRESETS: dict[str, Config] = {
    "sinusoid-maml": _SINUSOID,
    # Meta-SGD's rates start at 0.01 and are learned for one step
    "sinusoid-metasgd": _SINUSOID.replace(method="metasgd", inner_lr=0.01, eval_inner_steps=1),
    "omniglot-5w1s-maml": _OMNIGLOT,
    "omniglot-5w1s-fomaml": _OMNIGLOT.replace(method="fomaml"),
    "omniglot-5w1s-metasgd": _OMNIGLOT.replace(method="metasgd"),
    "omniglot-5w1s-learned": _OMNIGLOT.replace(method="learned_update"),
    "omniglot-5w5s-maml": _OMNIGLOT.replace(shots=5),
    # 8 tasks of 20 ways: vmap is no faster than the loop on 2 CPU cores; on a GPU pass vmap
    "omniglot-20w1s-maml": _OMNIGLOT.replace(ways=20, inner_lr=0.1, meta_batch_size=8, task_batching="loop"),
    # Black-box learners: first-order training, so many more (cheaper) meta-steps than MAML in the same time.
    "omniglot-5w1s-lstm": _BLACK_BOX.replace(method="lstm"),
    "omniglot-5w1s-lstm-pixels": _BLACK_BOX.replace(method="lstm", embedding="pixels"),
    "omniglot-5w1s-mann": _BLACK_BOX.replace(method="mann", embedding="pixels"),  # raw pixels, as Santoro et al.
    "omniglot-5w1s-mann-conv4": _BLACK_BOX.replace(method="mann"),
    "omniglot-5w1s-average": _BLACK_BOX.replace(method="average"),
    "omniglot-5w1s-attention": _BLACK_BOX.replace(method="attention"),
    "sinusoid-average": _SINUSOID.replace(method="average", width=128, grad_clip=10.0, task_batching="loop"),
    # SNAIL: the paper's Omniglot model (Conv4 of 64 channels with max-pooling); the TC blocks are sized for the
    # training episodes (T = N * K + 1), so a model trained at 1 shot also reads 5-shot episodes
    "omniglot-5w1s-snail": _BLACK_BOX.replace(method="snail", hidden=64, pooling=True, sequence_length=6),
    # trained at the 5 shots it is evaluated at (SNAIL reads positions), 5,000 steps: its results' budget (results.md)
    "sinusoid-snail": _SINUSOID.replace(method="snail", shots=5, grad_clip=10.0, task_batching="loop",
                                        sequence_length=6, steps=5000, val_every=1000, checkpoint_every=1000),
    "omniglot-5w1s-metanet": _BLACK_BOX.replace(method="metanet", width=32, hidden=64, pooling=True, steps=5000,
                                                elastic_alpha=34.0),  # fast-weight layers over SNAIL's Conv4
    "sinusoid-metanet": _SINUSOID.replace(method="metanet", width=40, grad_clip=10.0, task_batching="loop"),
    "sinusoid-attention": _SINUSOID.replace(method="attention", width=128, grad_clip=10.0, task_batching="loop"),
    # Implicit MAML: the paper's lambda 2, 5 CG steps, 16 / 25 inner steps of lr 0.1 at 5 / 20 ways (its code's rate).
    "omniglot-5w1s-imaml": _OMNIGLOT.replace(method="imaml", inner_lr=0.1, inner_steps=16, eval_inner_steps=16),
    "omniglot-20w1s-imaml": _OMNIGLOT.replace(method="imaml", ways=20, inner_lr=0.1, inner_steps=25,
                                              eval_inner_steps=25, meta_batch_size=8, task_batching="loop"),
    # Sinusoids: MAML's inner rate (the authors' code); larger ones let the inner loop diverge as theta trains.
    "sinusoid-imaml": _SINUSOID.replace(method="imaml", inner_lr=0.001, inner_steps=10, eval_inner_steps=10),
    # Prototypical networks: first-order like the black-box learners; at 20 ways 4 tasks keep the images per step.
    # Elastic distortions and a ResNet-12 of 8-64 channels: the best single network on unseen alphabets (results.md)
    "omniglot-5w1s-protonet": _BLACK_BOX.replace(method="protonet", elastic_alpha=34.0, embedding="resnet12", hidden=8),
    "omniglot-20w1s-protonet": _BLACK_BOX.replace(method="protonet", ways=20, meta_batch_size=4),
    # The README's main job: a few minutes of second-order MAML on 2 cores.
    "omniglot-demo": _OMNIGLOT.replace(steps=1000, val_every=250, checkpoint_every=250, val_episodes=100),
}

PRETRAIN_PRESETS = {
    "omniglot": PretrainConfig(),
    # The MAML paper's regressor (2 x 40 ReLU), 25 tasks of 20 points per step.
    "sinusoid": PretrainConfig(problem="sinusoid", hidden=40, batch_size=25, max_epochs=30),
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise MetalabError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
