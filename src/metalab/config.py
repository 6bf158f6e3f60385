"""Every setting of a training run, in one typed dataclass, and the named presets.

`metalab train --preset NAME --field value ...` starts from a preset and overrides fields by name.
"""

import dataclasses
import re
from dataclasses import dataclass

from metalab.errors import MetalabError

GRADIENT_METHODS = ("maml", "fomaml", "metasgd", "learned_update")  # methods/optimization.py
BLACK_BOX_METHODS = ("lstm", "mann", "average", "attention")  # methods/blackbox.py, models/blackbox.py


@dataclass(frozen=True)
class Config:
    # problem
    problem: str = "omniglot"  # omniglot | sinusoid
    split: str = "minimal"  # omniglot class split: minimal | lake | vinyals
    ways: int = 5
    shots: int = 1
    queries: int = 15  # per class (omniglot) or points (sinusoid) in each task's query set
    rotations: bool = True  # rotated characters (90/180/270) as extra meta-training classes
    mirrors: bool = False  # mirrored characters (and their rotations) as extra meta-training classes
    augment: float = 0.0  # strength of random affine distortions of meta-training tasks (data/augment.py); 0: none
    train_alphabets: int = 0  # meta-train on the first N of its alphabets (by name) only, a data-scaling study; 0: all
    # model
    hidden: int = 64  # Conv4 channels, or the MLP's width
    pooling: bool = True  # Conv4 with max-pooling; False: the MAML paper's stride-2 convolutions
    # method and inner loop
    method: str = "maml"  # maml | fomaml | metasgd | learned_update | lstm | mann | average | attention
    inner_lr: float = 0.4
    inner_steps: int = 1  # during meta-training
    eval_inner_steps: int = 3  # at validation and evaluation
    lr_shape: str = "element"  # Meta-SGD learned rates: element | tensor
    first_order_warmup: int = 0  # meta-steps of first-order MAML before second order (buys speed)
    # black-box learners (models/blackbox.py); Conv4's width and pooling are `hidden` and `pooling` above
    embedding: str = "conv4"  # how images are embedded: conv4 | pixels (raw, the LSTM homework baseline)
    width: int = 128  # LSTM / controller / encoder / transformer width
    layers: int = 2  # LSTM or transformer layers
    memory_slots: int = 128  # memory-augmented network: slots of 40 numbers each
    embedding_from: str = ""  # checkpoint of a black-box run whose Conv4 embedding starts this one's (warm start)
    # outer loop
    steps: int = 10_000
    meta_batch_size: int = 32
    meta_lr: float = 1e-3
    lr_schedule: str = "cosine"  # cosine (to 0 at `steps`) | constant
    grad_clip: float = 10.0  # max global norm of the meta-gradient; 0 disables clipping
    task_batching: str = "loop"  # loop | vmap (training/meta_step.py, measured there); black-box learners batch tasks
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
        choices = {"problem": ("omniglot", "sinusoid"), "method": GRADIENT_METHODS + BLACK_BOX_METHODS,
                   "embedding": ("conv4", "pixels"),
                   "lr_schedule": ("cosine", "constant"), "task_batching": ("loop", "vmap"),
                   "lr_shape": ("element", "tensor"), "split": ("minimal", "lake", "vinyals")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise MetalabError(f"--{name.replace('_', '-')} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("ways", "shots", "queries", "hidden", "width", "layers", "memory_slots", "steps",
                     "meta_batch_size", "val_every", "val_episodes", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise MetalabError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("inner_steps", "eval_inner_steps", "first_order_warmup", "threads", "train_alphabets"):
            if getattr(self, name) < 0:
                raise MetalabError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}")
        if self.embedding_from and self.method not in BLACK_BOX_METHODS:
            raise MetalabError(f"--embedding-from warm-starts a black-box learner's embedding; {self.method} has none")
        if self.problem != "omniglot" and (self.mirrors or self.augment or self.train_alphabets):
            raise MetalabError("--mirrors, --augment and --train-alphabets act on Omniglot's classes; they do not "
                               "apply to sinusoids")
        if not 0 <= self.augment <= 2:
            raise MetalabError(f"--augment must be in [0, 2] (0 disables it), got {self.augment}")
        check_device(self.device)
        if self.inner_lr <= 0 or self.meta_lr <= 0:
            raise MetalabError("--inner-lr and --meta-lr must be positive")

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def check_device(device: str) -> None:
    if device != "cpu" and not re.fullmatch(r"cuda(:\d+)?", device):
        raise MetalabError(f"--device must be cpu, cuda or cuda:N, got {device!r}")


_SINUSOID = Config(problem="sinusoid", shots=10, queries=10, hidden=40, inner_lr=0.01, inner_steps=1,
                   eval_inner_steps=10, steps=70_000, meta_batch_size=25, meta_lr=1e-3, lr_schedule="constant",
                   grad_clip=0.0, task_batching="vmap", val_every=2000, val_episodes=200, checkpoint_every=2000,
                   log_every=100)
# Omniglot on 2 CPU cores. Bought speed, stated in the README: the MAML paper's stride-2 Conv4 (~3x cheaper
# than max-pooling here), 32 channels, 5 queries per class, 16 tasks per meta-batch. Tasks batched by vmap:
# at these sizes 2x faster than the loop on 2 CPU cores, 9x on a GPU (benchmarks/bench_batching.py).
_OMNIGLOT = Config(hidden=32, pooling=False, queries=5, meta_batch_size=16, steps=8000, meta_lr=1e-3,
                   inner_lr=0.4, inner_steps=1, eval_inner_steps=3, val_every=500, checkpoint_every=500,
                   task_batching="vmap")

_BLACK_BOX = _OMNIGLOT.replace(steps=10_000, val_every=1000, checkpoint_every=1000, task_batching="loop")

PRESETS: dict[str, Config] = {
    "sinusoid-maml": _SINUSOID,
    "sinusoid-metasgd": _SINUSOID.replace(method="metasgd", eval_inner_steps=1),  # its rates are learned for 1 step
    "omniglot-5w1s-maml": _OMNIGLOT,
    "omniglot-5w1s-fomaml": _OMNIGLOT.replace(method="fomaml"),
    "omniglot-5w1s-metasgd": _OMNIGLOT.replace(method="metasgd"),
    "omniglot-5w1s-learned": _OMNIGLOT.replace(method="learned_update"),
    "omniglot-5w5s-maml": _OMNIGLOT.replace(shots=5),
    # 8 tasks of 20 ways: vmap no faster than the loop on 2 CPU cores (bench_batching.py); on a GPU pass vmap
    "omniglot-20w1s-maml": _OMNIGLOT.replace(ways=20, inner_lr=0.1, meta_batch_size=8, task_batching="loop"),
    # Black-box learners: first-order training, so many more (cheaper) meta-steps than MAML in the same time.
    "omniglot-5w1s-lstm": _BLACK_BOX.replace(method="lstm"),
    "omniglot-5w1s-lstm-pixels": _BLACK_BOX.replace(method="lstm", embedding="pixels"),
    "omniglot-5w1s-mann": _BLACK_BOX.replace(method="mann", embedding="pixels"),  # raw pixels, as Santoro et al.
    "omniglot-5w1s-mann-conv4": _BLACK_BOX.replace(method="mann"),
    "omniglot-5w1s-average": _BLACK_BOX.replace(method="average"),
    "omniglot-5w1s-attention": _BLACK_BOX.replace(method="attention"),
    "sinusoid-average": _SINUSOID.replace(method="average", width=128, grad_clip=10.0, task_batching="loop"),
    "sinusoid-attention": _SINUSOID.replace(method="attention", width=128, grad_clip=10.0, task_batching="loop"),
    # The README's main job: a few minutes of second-order MAML on 2 cores.
    "omniglot-demo": _OMNIGLOT.replace(steps=1000, val_every=250, checkpoint_every=250, val_episodes=100),
}


def preset(name: str) -> Config:
    if name not in PRESETS:
        raise MetalabError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
