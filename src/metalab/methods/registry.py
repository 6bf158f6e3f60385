"""Every meta-trainable method by name: the one place a new method is added.

A method is one file with a class on the seam of methods/method.py and a `from_config(config, learner)`; then
one line here. Code outside the package adds its own with `register`. `blackbox` says which network the problem
builder gives it: False, the problem's predictor (Conv4 for images, an MLP for sinusoids), whose parameters the
method adapts; True, the black-box learner of the same name in models/blackbox.py, which reads the support set.
`network`, when given, overrides both: network(config, x_shape, outputs) builds the method's own network
(prototypical networks' embedding). `any_ways`: the method reads the number of ways from each episode, so it can
be validated at other ways than it trains with (`--val-ways`). `fixed_support`: the learner reads a support set
of the size it was built for (SNAIL's TC blocks are sized for one sequence length), so it takes no extra shots at
test time (`metalab eval --support-augment`). `chunks`: the method splits a meta-batch under vmap into chunks of
`--task-chunk` tasks, and can compile each chunk's meta-gradient (`--compile`). `vmap_transforms`: the method
differentiates inside vmap with torch.func, so a Conv4 under vmap gets the written-out batch norm (SetBatchNorm)
rather than torch's.
"""

import os
import shutil
from dataclasses import dataclass
from typing import Callable

from torch import nn

from metalab.config import Config
from metalab.errors import MetalabError
from metalab.methods.blackbox import BlackBoxMethod
from metalab.methods.imaml import ImplicitMAML
from metalab.methods.learner import Learner
from metalab.methods.method import Method
from metalab.methods.optimization import GradientMethod
from metalab.methods.protonet import PrototypicalNetwork, embedding_network


@dataclass(frozen=True)
class Entry:
    build: Callable[[Config, Learner], Method]
    blackbox: bool = False
    network: Callable[[Config, tuple, int], nn.Module] | None = None
    any_ways: bool = False
    fixed_support: bool = False
    chunks: bool = False
    vmap_transforms: bool = False


METHODS: dict[str, Entry] = {
    "maml": Entry(GradientMethod.from_config, chunks=True),
    "fomaml": Entry(GradientMethod.from_config, chunks=True),
    "metasgd": Entry(GradientMethod.from_config, chunks=True),
    "learned_update": Entry(GradientMethod.from_config, chunks=True),
    "lstm": Entry(BlackBoxMethod.from_config, blackbox=True),
    "mann": Entry(BlackBoxMethod.from_config, blackbox=True),
    "average": Entry(BlackBoxMethod.from_config, blackbox=True),
    "attention": Entry(BlackBoxMethod.from_config, blackbox=True),
    "snail": Entry(BlackBoxMethod.from_config, blackbox=True, fixed_support=True),
    "metanet": Entry(BlackBoxMethod.from_config, blackbox=True),
    "imaml": Entry(ImplicitMAML.from_config, vmap_transforms=True),
    "protonet": Entry(PrototypicalNetwork.from_config, network=embedding_network, any_ways=True),
}


def register(name: str, entry: Entry) -> None:
    """Make `name` a method of `metalab train`/`eval` and of the Python API (e.g. from your own module)."""
    METHODS[name] = entry


def entry(name: str) -> Entry:
    if name not in METHODS:
        raise MetalabError(f"--method must be one of {sorted(METHODS)}, got {name!r}")
    return METHODS[name]


def make_method(config: Config, learner: Learner) -> Method:
    method = entry(config.method)
    if config.task_chunk and not method.chunks:
        raise MetalabError(f"--task-chunk splits the meta-batch of {chunked_methods()}; {config.method} batches its "
                           "tasks its own way: drop --task-chunk")
    compiled = config.compile != "false"
    if compiled and not method.chunks:
        raise MetalabError(f"--compile compiles the meta-gradient of {chunked_methods()}; {config.method} has its "
                           "own: use --compile false")
    if compiled and not any(shutil.which(cxx) for cxx in (os.environ.get("CXX", ""), "g++", "clang++") if cxx):
        raise MetalabError("--compile needs a C++ compiler for torch.compile (g++ or clang++ on PATH, or $CXX): "
                           "install one or use --compile false")
    if config.compile == "aot" and (config.device != "cpu" or not hasattr(os, "fork")):
        raise MetalabError(f"--compile aot builds CPU programs in a forked process (Linux, macOS), not for "
                           f"{config.device if hasattr(os, 'fork') else 'this system'}: use --compile true")
    if config.task_chunk and config.task_batching != "vmap":
        raise MetalabError("--task-chunk splits a meta-batch whose tasks are under vmap; add --task-batching vmap")
    return method.build(config, learner)


def chunked_methods() -> str:
    return ", ".join(name for name, e in METHODS.items() if e.chunks)
