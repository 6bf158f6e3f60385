"""How to batch the tasks of a second-order MAML meta-step, measured on a device: a loop or vmap, with
torch's batch norm or metalab's written-out one (models/networks.py, SetBatchNorm).

Run on demand:

    python benchmarks/bench_batching.py                       # CPU, 2 torch threads
    python benchmarks/bench_batching.py --device cuda         # a GPU

The problem is by default bench_maml.py's: Conv4-64 with max-pooling, 32 random 5-way 1-shot 15-query tasks,
inner lr 0.4, S inner steps (--steps-list); options change each. Four ways to compute its meta-gradient:

  loop/native       batching="loop" with nn.BatchNorm2d   (metalab's default)
  loop/set_batch    the same loop with SetBatchNorm
  vmap/native       batching="vmap" with nn.BatchNorm2d
  vmap/set_batch    batching="vmap" with SetBatchNorm

First, in float64 on the device and on a smaller problem, each one's meta-gradient is compared with
loop/native's (which tests/test_optimization.py checks against an unrolled reference): the relative
difference of the whole gradient vector, ||g - g_ref|| / ||g_ref||. A way that disagrees is still timed but
flagged. Then each way runs in a fresh child process: --warmup untimed and --iters timed meta-steps
(zero_grad, meta-gradient, Adam), the rounds interleaved (--repeats); on CUDA every step ends with a
synchronize, and peak memory is torch.cuda.max_memory_allocated; on CPU it is the child's peak RSS.

Writes benchmarks/results/batching-<device>.json and prints a table of medians and ratios to loop/native.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from metalab.data.episode import Episode
from metalab.methods.learner import Learner, cross_entropy
from metalab.methods.optimization import GradientMethod, InnerLoop
from metalab.models.networks import conv4
from metalab.runtime import configure_torch
from metalab.training.optimizer import Adam

REPO = Path(__file__).resolve().parents[1]
WAYS = [("loop", "batch"), ("loop", "set_batch"), ("vmap", "batch"), ("vmap", "set_batch")]


def label(batching: str, norm: str) -> str:
    return f"{batching}/{'native' if norm == 'batch' else norm}"


def problem(tasks, ways, shots, queries, hidden, pooling, norm, dtype, device, seed=0):
    """(model, episode): the same weights and tasks for either norm (their parameters have the same names)."""
    torch.manual_seed(seed)
    model = conv4(ways, hidden=hidden, pooling=pooling == "max", image_size=28, norm=norm).to(device, dtype)
    g = torch.Generator().manual_seed(seed + 1)

    def labels(per_class):
        return torch.arange(ways).repeat_interleave(per_class).expand(tasks, -1).contiguous()

    episode = Episode(torch.randn(tasks, ways * shots, 1, 28, 28, generator=g, dtype=dtype), labels(shots),
                      torch.randn(tasks, ways * queries, 1, 28, 28, generator=g, dtype=dtype), labels(queries))
    return model, episode.to(device)


def maml(model, steps: int, inner_lr: float, batching: str, chunk: int = 0, compiled: str = "false") -> GradientMethod:
    """Second-order MAML on the model, as the training loop runs it (GradientMethod.meta_loss)."""
    return GradientMethod(Learner(model, cross_entropy), InnerLoop("maml", inner_lr), train_steps=steps,
                          batching=batching, chunk=chunk, compiled=compiled)


def meta_step_fn(model, episode, steps, inner_lr, batching):
    method = maml(model, steps, inner_lr, batching)
    meta = method.init_meta()  # copies of the model's parameters, on its device, requiring grad

    def meta_step():
        mean_loss, _ = method.meta_loss(meta, episode, 0)
        mean_loss.backward()
        return mean_loss.item()

    return meta, meta_step


def gradient_check(args, steps) -> dict:
    grads = {}
    for batching, norm in WAYS:
        model, episode = problem(args.check_tasks, args.ways, args.shots, args.check_queries, args.check_hidden,
                                 args.pooling, norm, torch.float64, args.device)
        meta, compute = meta_step_fn(model, episode, steps, args.inner_lr, batching)
        compute()
        grads[label(batching, norm)] = torch.cat([p.grad.flatten() for p in meta["theta"].values()])
    reference = grads["loop/native"]
    return {name: float((g - reference).norm() / reference.norm()) for name, g in grads.items()}


def child(spec: dict) -> dict:
    args = argparse.Namespace(**spec["args"])
    device = configure_torch(args.threads, args.device)  # threads, and the allocator setting that training uses
    model, episode = problem(args.tasks, args.ways, args.shots, args.queries, args.hidden, args.pooling, spec["norm"],
                             torch.float32, device)
    meta, compute = meta_step_fn(model, episode, spec["steps"], args.inner_lr, spec["batching"])
    return timed_meta_steps(meta, compute, device, args.warmup, args.iters)


def timed_meta_steps(meta: dict, compute, device, warmup: int, iters: int, above_start: bool = False) -> dict:
    """{times_s, peak_mib} of `iters` meta-steps (zero_grad, compute() for the meta-gradient, Adam) after `warmup`
    untimed ones. Peak memory: torch.cuda.max_memory_allocated on CUDA, else this process's peak RSS (minus its
    RSS before the first step if above_start)."""
    optimizer = Adam([p for ps in meta.values() for p in ps.values()])  # training's own
    cuda = device.type == "cuda"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if above_start and not cuda else 0
    times = []
    for i in range(warmup + iters):
        if cuda:
            torch.cuda.synchronize()
            if i == warmup:
                torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        optimizer.zero_grad()
        compute()
        optimizer.step(1e-3)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"times_s": times[warmup:], "peak_mib": (peak - before) / 2**20}


def run_child(spec: dict, script: str = __file__) -> dict:
    """`script --child SPEC` in a fresh process: its last line of output, as JSON."""
    result = subprocess.run([sys.executable, "-W", "ignore", script, "--child", json.dumps(spec)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine(args) -> dict:
    """What a report records of where it ran."""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "device": args.device,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
            "cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "args": vars(args), "results": {}}


def write_report(report: dict, args, benchmark: str) -> Path:
    """Close `report` with the load average and write it to --out, else results/<benchmark>-<device type>.json."""
    report["load_avg_end"] = os.getloadavg()
    out = Path(args.out or REPO / "benchmarks" / "results" / f"{benchmark}-{torch.device(args.device).type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"\nwrote {out}")
    return out


def meta_step_parser(description: str, threads: int, steps_list: str, tasks: int, queries: int, hidden: int,
                     inner_lr: float) -> argparse.ArgumentParser:
    """The options every meta-step benchmark here shares (its own defaults), and the hidden --child re-entry."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads in every child")
    parser.add_argument("--steps-list", default=steps_list, help="inner steps S, comma-separated")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed meta-steps per child")
    parser.add_argument("--tasks", type=int, default=tasks)
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=queries)
    parser.add_argument("--hidden", type=int, default=hidden)
    parser.add_argument("--inner-lr", type=float, default=inner_lr)
    parser.add_argument("--out", default=None, help="default benchmarks/results/<benchmark>-<device type>.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    parser = meta_step_parser(__doc__, threads=2, steps_list="1,5", tasks=32, queries=15, hidden=64, inner_lr=0.4)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds of children")
    parser.add_argument("--pooling", choices=("max", "stride"), default="max",
                        help="Conv4 with max-pooling, or the MAML paper's stride-2 convolutions (metalab's presets)")
    parser.add_argument("--check-tasks", type=int, default=4)
    parser.add_argument("--check-queries", type=int, default=5)
    parser.add_argument("--check-hidden", type=int, default=16)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    configure_torch(args.threads, args.device)
    steps_list = [int(s) for s in args.steps_list.split(",")]
    report = machine(args)
    for steps in steps_list:
        check = gradient_check(args, steps)
        runs = {label(*way): [] for way in WAYS}
        for _ in range(args.repeats):
            for batching, norm in WAYS:
                spec = {"args": {k: v for k, v in vars(args).items() if k != "child"}, "steps": steps,
                        "batching": batching, "norm": norm}
                runs[label(batching, norm)].append(run_child(spec))
        rows = {}
        for name, children in runs.items():
            errors = [c["error"] for c in children if "error" in c]
            times = [t for c in children if "error" not in c for t in c["times_s"]]
            rows[name] = {"gradient_rel_diff": check[name], "errors": errors, "times_s": times,
                          "median_s": statistics.median(times) if times else None,
                          "peak_mib": max((c["peak_mib"] for c in children if "error" not in c), default=None)}
        report["results"][str(steps)] = rows
        base = rows["loop/native"]["median_s"]
        print(f"\nS = {steps} inner steps, {args.tasks} tasks of {args.ways}-way {args.shots}-shot "
              f"{args.queries}-query, Conv4-{args.hidden} {args.pooling}, {args.device}")
        print(f"{'way':16} {'s/step':>9} {'vs loop/native':>15} {'peak MiB':>9} {'grad rel diff':>14}")
        for name, row in rows.items():
            if row["median_s"] is None:
                print(f"{name:16} failed: {row['errors'][0]}")
                continue
            print(f"{name:16} {row['median_s']:9.4f} {row['median_s'] / base:14.2f}x {row['peak_mib']:9.0f} "
                  f"{row['gradient_rel_diff']:14.1e}")
    write_report(report, args, "batching")
    return 0


if __name__ == "__main__":
    sys.exit(main())
