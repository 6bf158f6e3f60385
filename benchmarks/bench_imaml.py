"""Implicit MAML against second-order MAML: peak memory and seconds per meta-step as the inner steps grow.

Run on demand (an idle machine; see README.md here):

    python benchmarks/bench_imaml.py                          # CPU, 1 torch thread, S = 1, 5, 10, 20, 50
    python benchmarks/bench_imaml.py --device cuda

The problem is the Omniglot presets' by default: Conv4-32 with stride-2 convolutions and torch's batch norm,
16 random 5-way 1-shot 5-query tasks, tasks in a loop (methods/batching.py), inner lr 0.1, for both methods:

  maml    GradientMethod: S inner steps differentiated through (create_graph), so the graph holds S steps
  imaml   ImplicitMAML: S inner steps on a detached theta (lambda --lam), then --cg-steps of conjugate gradient
          with Hessian-vector products at the last step only

Each (method, S) runs in a fresh child process: --warmup untimed and --iters timed meta-steps (zero_grad, the
method's meta_loss, backward, Adam). Peak memory: on CUDA torch.cuda.max_memory_allocated over the timed steps;
on a CPU the child's peak RSS minus its RSS before the first meta-step (the interpreter, torch and the problem),
so that what grows with S shows. Expected: flat in S for imaml, linear for maml.

Writes benchmarks/results/imaml-<device>.json and prints a table of medians.
"""

import argparse
import json
import statistics
import sys

import torch
from bench_batching import machine, meta_step_parser, run_child, timed_meta_steps, write_report

from metalab.data.episode import Episode
from metalab.methods.imaml import ImplicitMAML
from metalab.methods.learner import Learner, cross_entropy
from metalab.methods.optimization import GradientMethod, InnerLoop
from metalab.models.networks import conv4
from metalab.runtime import configure_torch

METHODS = ("maml", "imaml")


def problem(args, device):
    torch.manual_seed(0)
    model = conv4(args.ways, hidden=args.hidden, pooling=False, image_size=28, norm="batch").to(device)
    g = torch.Generator().manual_seed(1)

    def labels(per_class):
        return torch.arange(args.ways).repeat_interleave(per_class).expand(args.tasks, -1).contiguous()

    episode = Episode(torch.randn(args.tasks, args.ways * args.shots, 1, 28, 28, generator=g), labels(args.shots),
                      torch.randn(args.tasks, args.ways * args.queries, 1, 28, 28, generator=g), labels(args.queries))
    return model, episode.to(device)


def make(method: str, model, steps: int, args):
    learner = Learner(model, cross_entropy)
    if method == "maml":
        return GradientMethod(learner, InnerLoop("maml", args.inner_lr), train_steps=steps, batching="loop")
    return ImplicitMAML(learner, lam=args.lam, inner_lr=args.inner_lr, train_steps=steps, cg_steps=args.cg_steps,
                        batching="loop")


def child(spec: dict) -> dict:
    args = argparse.Namespace(**spec["args"])
    device = configure_torch(args.threads, args.device)
    model, episode = problem(args, device)
    method = make(spec["method"], model, spec["steps"], args)
    meta = method.init_meta()
    steps = iter(range(10**9))

    def compute():
        loss, _ = method.meta_loss(meta, episode, next(steps))
        loss.backward()

    return timed_meta_steps(meta, compute, device, args.warmup, args.iters, above_start=True)


def main(argv=None) -> int:
    parser = meta_step_parser(__doc__, threads=1, steps_list="1,5,10,20,50", tasks=16, queries=5, hidden=32,
                              inner_lr=0.1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--lam", type=float, default=2.0)
    parser.add_argument("--cg-steps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    configure_torch(args.threads, args.device)
    report = machine(args)
    print(f"{args.tasks} tasks of {args.ways}-way {args.shots}-shot {args.queries}-query, Conv4-{args.hidden} "
          f"stride-2, {args.device}; peak memory above the child's start")
    print(f"{'method':7} {'S':>4} {'s/step':>9} {'peak MiB':>9}")
    for method in args.methods.split(","):
        for steps in (int(s) for s in args.steps_list.split(",")):
            spec = {"args": {k: v for k, v in vars(args).items() if k != "child"}, "method": method, "steps": steps}
            row = run_child(spec, __file__)
            if "error" not in row:
                row["median_s"] = statistics.median(row["times_s"])
            report["results"][f"{method}/{steps}"] = row
            print(f"{method:7} {steps:4d} " + (f"failed: {row['error']}" if "error" in row
                                                else f"{row['median_s']:9.3f} {row['peak_mib']:9.0f}"), flush=True)
    write_report(report, args, "imaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
