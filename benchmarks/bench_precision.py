"""bf16 in the MAML meta-step: how far each variant's meta-gradient is from float32's, and what it saves.

Run on demand (timings only on an idle machine; see README.md here):

    python benchmarks/bench_precision.py                                   # the preset's initialization
    python benchmarks/bench_precision.py --checkpoint RUNS/maml/best.pt    # a trained point

The problem is the 5-way 1-shot MAML preset's (omniglot-5w1s-maml: Conv4-32, stride-2 convolutions, 16 tasks of
5 queries, inner lr 0.4) on one meta-batch of real meta-training tasks, at S inner steps (--steps-list). Each
variant computes the second-order meta-gradient of the same batch at the same meta-parameters:

  float64          the whole step in float64: how far float32 itself is from exact
  autocast         the whole step under torch.autocast("cpu", bfloat16)
  bf16-conv        every convolution's forward in bf16 (inputs, weights cast; output cast back), the rest
                   float32; the convolutions' backward then runs in bf16 too, as autograd follows the forward
  bf16-first-conv  the first convolution only (the memory-bound layer on this CPU, docs/performance.md)

and, to read those against, three perturbations computed in float32:

  weights-rounded  the meta-parameters rounded to bf16 and back: what storing them in bf16 alone costs
  weights-noise    the meta-parameters times (1 + 1e-3 N(0, 1))
  other-batch      another meta-batch: the step-to-step noise of the meta-gradient itself

For each, on --batches meta-batches: the relative distance ||g - g32|| / ||g32|| and the cosine to float32's
meta-gradient, and whether the median distance is within --tolerance (issue 18: 1e-2). Then float32, autocast and bf16-conv are timed, interleaved, --rounds times
(seconds per meta-gradient, medians). Writes benchmarks/results/precision-cpu.json.
"""

import argparse
import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from bench_batching import machine, write_report
from torch.utils._pytree import tree_leaves, tree_map

from metalab import checkpoint
from metalab.config import preset
from metalab.data.paths import data_dir as default_data_dir
from metalab.methods.registry import entry
from metalab.problem import build_problem
from metalab.runtime import configure_torch

_conv2d = F.conv2d


@contextlib.contextmanager
def bf16_convolutions(first_only: bool = False):
    """Convolutions in bf16 while the context lasts (F.conv2d is what nn.Conv2d calls)."""
    def conv2d(x, weight, bias=None, *args, **kwargs):
        if first_only and x.shape[-3] != 1:  # only the first layer reads one input channel
            return _conv2d(x, weight, bias, *args, **kwargs)
        bias = None if bias is None else bias.bfloat16()
        return _conv2d(x.bfloat16(), weight.bfloat16(), bias, *args, **kwargs).float()

    F.conv2d = conv2d
    try:
        yield
    finally:
        F.conv2d = _conv2d


CONTEXTS = {"float32": contextlib.nullcontext, "autocast": lambda: torch.autocast("cpu", dtype=torch.bfloat16),
            "bf16-conv": bf16_convolutions, "bf16-first-conv": lambda: bf16_convolutions(first_only=True)}
TIMED = ("float32", "autocast", "bf16-conv")


def meta_gradient(method, meta, episode, context=contextlib.nullcontext) -> torch.Tensor:
    """The flattened meta-gradient [P] (float64) of the mean query loss of `episode`."""
    leaves = [p for p in tree_leaves(meta) if p.requires_grad]
    with context():
        loss, _ = method.meta_loss(meta, episode, step=10**9)  # past any first-order warm-up
    return torch.cat([g.reshape(-1).double() for g in torch.autograd.grad(loss, leaves)])


def trainable(meta, cast=lambda t: t):
    return tree_map(lambda t: cast(t.detach()).requires_grad_(True), meta)


def compare(g, reference) -> dict:
    return {"relative": ((g - reference).norm() / reference.norm()).item(),
            "cosine": F.cosine_similarity(g, reference, dim=0).item()}


def preset_method(steps: int, args, **overrides):
    """(config, problem, method): the omniglot-5w1s-maml preset at `steps` inner steps (and `overrides`), its
    meta-training tasks from args.data_dir, seeded with args.seed."""
    config = preset("omniglot-5w1s-maml").replace(inner_steps=steps, eval_inner_steps=steps, seed=args.seed,
                                                  **overrides)
    problem = build_problem(config, data_dir=args.data_dir, parts=("train",))
    return config, problem, entry(config.method).build(config, problem.learner)


def measure(steps: int, args) -> dict:
    config, problem, method = preset_method(steps, args)
    meta = checkpoint.load(args.checkpoint)["meta"] if args.checkpoint else method.init_meta()
    meta = trainable(meta)
    sample = problem.tasks["train"].sample
    batches = [distances(method, meta, sample(torch.Generator().manual_seed(args.seed + b), config.meta_batch_size),
                         sample(torch.Generator().manual_seed(args.seed + args.batches + b), config.meta_batch_size),
                         args) for b in range(args.batches)]
    episode = sample(torch.Generator().manual_seed(args.seed), config.meta_batch_size)
    times = {name: [] for name in TIMED}
    for _ in range(args.rounds):  # interleaved, so that the machine's drift hits every variant alike
        for name in TIMED:
            start = time.perf_counter()
            meta_gradient(method, meta, episode, CONTEXTS[name])
            times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(values) for name, values in times.items()}
    gradients = {name: {key: [batch[name][key] for batch in batches] for key in ("relative", "cosine")}
                 for name in batches[0]}
    for result in gradients.values():
        result["median_relative"] = statistics.median(result["relative"])
        result["within_tolerance"] = result["median_relative"] <= args.tolerance
    return {"inner_steps": steps, "gradients": gradients, "seconds": seconds,
            "speedup": {name: seconds["float32"] / s for name, s in seconds.items()}}


def distances(method, meta, episode, other_episode, args) -> dict:
    """Each variant's distance from float32's meta-gradient on `episode`."""
    reference = meta_gradient(method, meta, episode)
    gradients = {name: meta_gradient(method, meta, episode, context) for name, context in CONTEXTS.items()
                 if name != "float32"}
    episode64 = type(episode)(*(t.double() if t.is_floating_point() else t for t in episode))
    gradients["float64"] = meta_gradient(method, trainable(meta, torch.Tensor.double), episode64)
    gradients["weights-rounded"] = meta_gradient(method, trainable(meta, lambda t: t.bfloat16().float()), episode)
    noise = torch.Generator().manual_seed(args.seed)
    gradients["weights-noise"] = meta_gradient(
        method, trainable(meta, lambda t: t * (1 + 1e-3 * torch.randn(t.shape, generator=noise))), episode)
    gradients["other-batch"] = meta_gradient(method, meta, other_episode)
    return {name: compare(g, reference) for name, g in gradients.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="meta-parameters of a trained run (default: the initialization)")
    parser.add_argument("--steps-list", default="1,5", help="inner steps, comma-separated (default 1,5)")
    parser.add_argument("--tolerance", type=float, default=1e-2, help="relative distance that qualifies")
    parser.add_argument("--batches", type=int, default=5, help="meta-batches compared (medians reported)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.data_dir, args.device = str(args.data_dir or default_data_dir()), "cpu"
    configure_torch(args.threads, args.device)
    torch.manual_seed(args.seed)
    report = machine(args)  # the load average at the start
    rows = [measure(int(s), args) for s in args.steps_list.split(",")]
    write_report({**report, "checkpoint": args.checkpoint, "tolerance": args.tolerance,
                         "rows": rows}, args, "precision")
    for row in rows:
        print(f"S={row['inner_steps']}")
        for name, result in row["gradients"].items():
            print(f"  {name:16s} relative {result['median_relative']:.2e} (median of {len(result['relative'])})"
                  f"  cosine {statistics.median(result['cosine']):.5f}"
                  f"{'  within tolerance' if result['within_tolerance'] else ''}")
        print("  seconds per meta-gradient: " + ", ".join(f"{n} {s:.3f} ({row['speedup'][n]:.2f}x)"
                                                        for n, s in row["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
