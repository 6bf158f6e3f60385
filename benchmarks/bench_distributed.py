"""Meta-training throughput on several processes: what splitting the tasks and the all-reduce cost.

Run on demand, on a quiet machine (it starts the training processes itself):

    python benchmarks/bench_distributed.py                          # omniglot-5w1s-maml, CPU
    python benchmarks/bench_distributed.py --preset sinusoid-maml --steps 400
    python benchmarks/bench_distributed.py --device cuda            # adds the GPU figure (one process per GPU)

Each configuration is one `metalab train` run of --steps meta-steps into a throwaway folder:

  1p x 1t   one process, 1 torch thread
  2p x 1t   torchrun --standalone --nproc-per-node 2, 1 thread each (gloo)
  1p x 2t   one process, 2 threads
  cuda      (with --device cuda) one process per visible GPU (nccl), as torchrun gives them

Tasks per second come from the run's own metrics.jsonl (log_every 1): the wall time between the end of step
--warmup and the end of the last step, times the meta-batch size, so start-up, data loading and the closing
validation are not counted. The configurations are interleaved over --repeats rounds; the median is reported.
2p x 1t against 1p x 2t is the price of two processes over two threads on the same cores; 2p x 1t against
1p x 1t is how well the split scales. Writes benchmarks/results/distributed.json and prints a table.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def command(processes: int, preset: str, extra: list[str]) -> list[str]:
    metalab = [str(BIN / "torchrun"), "--standalone", f"--nproc-per-node={processes}", "-m", "metalab"] \
        if processes > 1 else [sys.executable, "-m", "metalab"]
    return [*metalab, "train", "--preset", preset, *extra]


def tasks_per_second(argv: list[str], out: Path, steps: int, warmup: int, batch: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    flags = ["--steps", str(steps), "--log-every", "1", "--val-every", str(10 * steps), "--val-episodes", "1",
             "--checkpoint-every", str(10 * steps), "--meta-batch-size", str(batch), "--out-dir", str(out)]
    subprocess.run([*argv, *flags], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times = {r["step"]: r["time"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    return (steps - warmup) * batch / (times[steps] - times[warmup])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="omniglot-5w1s-maml")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10, help="steps not timed at the start of each run")
    parser.add_argument("--meta-batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "distributed.json"))
    args = parser.parse_args()
    if not 0 < args.warmup < args.steps or args.repeats < 1:
        parser.error("need 0 < --warmup < --steps and --repeats >= 1")
    configurations = {"1p x 1t": command(1, args.preset, ["--threads", "1"]),
                      "2p x 1t": command(2, args.preset, ["--threads", "1"]),
                      "1p x 2t": command(1, args.preset, ["--threads", "2"])}
    if args.device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        configurations[f"cuda {gpus}p"] = command(gpus, args.preset, ["--device", "cuda", "--threads", "1"])
    load = os.getloadavg()
    timings = {name: [] for name in configurations}
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(args.repeats):
            for name, argv in configurations.items():
                timings[name].append(tasks_per_second(argv, Path(scratch) / "run", args.steps, args.warmup,
                                                      args.meta_batch_size))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    report = {"date": datetime.now(timezone.utc).isoformat(), "preset": args.preset, "steps": args.steps,
              "warmup": args.warmup, "meta_batch_size": args.meta_batch_size, "repeats": args.repeats,
              "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "platform": platform.platform(), "load_average_at_start": load},
              "tasks_per_second": timings, "median_tasks_per_second": medians,
              "ratio_2p1t_to_1p2t": medians["2p x 1t"] / medians["1p x 2t"],
              "ratio_2p1t_to_1p1t": medians["2p x 1t"] / medians["1p x 1t"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    if load[0] > (os.cpu_count() or 1) / 2:
        print(f"warning: load average {load[0]:.1f} at the start; the machine was not quiet")
    for name, value in medians.items():
        print(f"{name:10s} {value:8.1f} tasks/s")
    print(f"2p x 1t / 1p x 2t = {report['ratio_2p1t_to_1p2t']:.2f}; 2p x 1t / 1p x 1t = "
          f"{report['ratio_2p1t_to_1p1t']:.2f}; written to {args.out}")


if __name__ == "__main__":
    main()
