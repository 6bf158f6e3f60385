"""Where metalab's second-order MAML meta-step spends its time: torch.profiler over bench_maml.py's problem.

Run on demand, on an otherwise idle machine:

    python benchmarks/profile_maml.py               # S = 1 and 5 inner steps, 2 torch threads
    python benchmarks/profile_maml.py --steps-list 1 --threads 1

Same weights, tasks and meta-step as `bench_maml.py` (Conv4-64 with max-pooling, 32 random 5-way 1-shot
15-query tasks, inner lr 0.4, metalab's task-by-task loop). For each S it times --iters meta-steps without
the profiler (median), then profiles one more and sums the operators' self time by kind: convolution
(forward and backward), max-pool, batch norm, and everything else. The shares, times the unprofiled median,
say how many seconds of a step each kind costs. If the convolutions alone take more than half of a
library's step, no change outside the convolution kernels can make metalab 2x faster than that library.

Writes benchmarks/results/profile_maml.json and prints a table.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_maml  # noqa: E402  (the problem and the meta-step, shared with the benchmark)

KINDS = {"convolution": ("conv",), "max-pool": ("max_pool",), "batch norm": ("batch_norm",)}


def kind_of(op_name: str) -> str:
    for kind, fragments in KINDS.items():
        if any(fragment in op_name for fragment in fragments):
            return kind
    return "other"


def profile_steps(steps: int, args, problem_path: str) -> dict:
    from torch.profiler import ProfilerActivity, profile

    spec = {"path": problem_path, "impl": "metalab", "dtype": "float32"}
    model, episode, config = bench_maml.load_problem(spec)
    compute, named = bench_maml.build_meta_step("metalab", model, episode, steps, config["inner_lr"])

    def meta_step():
        for _, p in named():
            p.grad = None
        compute()

    meta_step()  # warm-up
    times = []
    for _ in range(args.iters):
        start = time.perf_counter()
        meta_step()
        times.append(time.perf_counter() - start)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        meta_step()
    by_kind = dict.fromkeys([*KINDS, "other"], 0.0)
    top = []
    for event in prof.key_averages():
        by_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e6
        top.append((event.self_cpu_time_total / 1e6, event.key, event.count))
    total = sum(by_kind.values())
    median = statistics.median(times)
    return {
        "s_per_meta_step": median, "times_s": times, "profiled_self_s": total,
        "share": {kind: seconds / total for kind, seconds in by_kind.items()},
        "s_per_meta_step_by_kind": {kind: median * seconds / total for kind, seconds in by_kind.items()},
        "top_ops": [{"op": name, "self_s": seconds, "calls": calls}
                    for seconds, name, calls in sorted(top, reverse=True)[:args.top]],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-list", type=bench_maml.parse_list, default=[1, 5], help="inner steps S (default 1,5)")
    parser.add_argument("--iters", type=int, default=3, help="unprofiled timed meta-steps per S, after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--top", type=int, default=12, help="operators listed by self time")
    parser.add_argument("--against", default=str(bench_maml.REPO / "benchmarks" / "results" / "maml.json"),
                        help="bench_maml.py's report, for the libraries' step times (skipped if missing)")
    parser.add_argument("--out", default=str(bench_maml.REPO / "benchmarks" / "results" / "profile_maml.json"))
    args = parser.parse_args(argv)
    bench_maml.configure_malloc("metalab")
    import torch

    torch.set_num_threads(args.threads)
    config = bench_maml.problem_config(bench_maml.parse_args([]))  # the benchmark's default problem
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as work:
        problem_path = str(Path(work) / "problem.pt")
        bench_maml.child_prepare({"config": config, "path": problem_path})
        results = {str(steps): profile_steps(steps, args, problem_path) for steps in args.steps_list}
    libraries, libraries_when = {}, None
    if Path(args.against).exists():
        against = json.loads(Path(args.against).read_text())
        summary, libraries_when = against.get("summary", {}), against.get("when")
        for steps in results:
            others = {impl: row["s_per_meta_step"] for impl, row in summary.get(steps, {}).items() if impl != "metalab"}
            if others:
                libraries[steps] = others
    report = {"benchmark": "profile_maml", "problem": config, "threads": args.threads,
              "torch": torch.__version__, "load_average_at_start": load_at_start,
              "load_average_at_end": os.getloadavg(), "by_steps": results,
              "libraries_s_per_meta_step": libraries, "libraries_from": args.against,
              "libraries_measured": libraries_when}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"wrote {args.out}")
    return 0


def print_table(report: dict) -> None:
    print(f"metalab second-order MAML meta-step, {report['threads']} threads "
          f"(load average at start {report['load_average_at_start'][0]:.2f})")
    for steps, row in report["by_steps"].items():
        parts = ", ".join(f"{kind} {seconds:.2f} s ({100 * row['share'][kind]:.0f}%)"
                          for kind, seconds in row["s_per_meta_step_by_kind"].items())
        print(f"S={steps}: {row['s_per_meta_step']:.2f} s per meta-step = {parts}")
        for impl, seconds in report["libraries_s_per_meta_step"].get(steps, {}).items():
            conv = row["s_per_meta_step_by_kind"]["convolution"]
            print(f"    {impl}: {seconds:.2f} s per meta-step in bench_maml.py's run of "
                  f"{report['libraries_measured']}; half of it {seconds / 2:.2f} s; metalab's convolutions "
                  f"alone {conv:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
