"""Fine-tuning benchmark: one batch of tasks fine-tuned task by task (loop) or all at once (torch.func.vmap).

Run on demand (pytest does not collect it):

    python benchmarks/bench_finetune.py             # one torch thread
    python benchmarks/bench_finetune.py --threads 2

Times `metalab.methods.finetune.FineTuning.scores` on one batch of 50 tasks (the batch size of
`fixed_episodes`): `--steps` Adam steps on the support set with every block trained, then the query set
scored once, for the stride-2 Conv4 of the Omniglot presets (32 channels) at 5-way 1-shot, 5-way 5-shot and
20-way 1-shot with 15 queries per class, and the sinusoid MLP (2x40) at 10 shots and 100 queries. Inputs
are random tensors of the real shapes: the arithmetic does not depend on the pixels, and no data is needed.
Reports the median of `--repeats` timings after a warm-up, and writes benchmarks/results/finetune.json.
"""

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from metalab.config import TASK_BATCHING, FinetuneConfig
from metalab.data.episode import Episode
from metalab.evaluation.evaluate import per_episode_scores
from metalab.methods.finetune import FineTuning
from metalab.methods.learner import Learner, classification, regression
from metalab.models.networks import conv4, mlp

REPO = Path(__file__).resolve().parents[1]
TASKS = 50
SETTINGS = [  # (label, ways, shots, queries per class); ways 0 = sinusoid regression
    ("conv4-32 5-way 1-shot", 5, 1, 15),
    ("conv4-32 5-way 5-shot", 5, 5, 15),
    ("conv4-32 20-way 1-shot", 20, 1, 15),
    ("sinusoid mlp 10-shot", 0, 10, 100),
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: one core)")
    parser.add_argument("--steps", type=int, default=20, help="fine-tuning steps per task")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting and batching (median)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "finetune.json"))
    args = parser.parse_args(argv)
    if min(args.threads, args.steps, args.repeats) < 1:
        parser.error("--threads, --steps and --repeats must be positive")
    return args


def problem(ways: int, shots: int, queries: int) -> tuple[Learner, Episode]:
    g = torch.Generator().manual_seed(0)
    if ways == 0:
        x = torch.rand(TASKS, shots + queries, 1, generator=g) * 10 - 5
        y = torch.sin(x)
        return regression(mlp(1, 40)), Episode(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
    labels = torch.arange(ways)
    episode = Episode(torch.rand(TASKS, ways * shots, 1, 28, 28, generator=g),
                      labels.repeat_interleave(shots).expand(TASKS, -1).clone(),
                      torch.rand(TASKS, ways * queries, 1, 28, 28, generator=g),
                      labels.repeat_interleave(queries).expand(TASKS, -1).clone())
    return classification(conv4(ways, hidden=32, pooling=False)), episode


def time_once(learner, episode, config, batching) -> float:
    start = {name: p.detach() for name, p in learner.model.named_parameters()}
    began = time.perf_counter()
    per_episode_scores({"theta": start}, FineTuning(learner, config, batching, scored=(config.steps,)), [episode],
                       config.steps)
    return time.perf_counter() - began


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report = {"machine": {"when": datetime.now(timezone.utc).isoformat(), "platform": platform.platform(),
                          "cpus": os.cpu_count(), "load_average": os.getloadavg(), "torch": torch.__version__,
                          "threads": args.threads},
              "tasks": TASKS, "steps": args.steps, "results": []}
    print(f"{TASKS} tasks, {args.steps} Adam steps, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    print(f"{'setting':28s} " + " ".join(f"{b:>10s}" for b in TASK_BATCHING) + "   loop/vmap")
    for label, ways, shots, queries in SETTINGS:
        learner, episode = problem(ways, shots, queries)
        config = FinetuneConfig(head_init="keep" if ways == 0 else "zero", steps=args.steps, optimizer="adam",
                                head_lr=1e-2, body_lr=1e-3)
        seconds = {}
        for batching in TASK_BATCHING:
            time_once(learner, episode, config, batching)  # warm-up
            runs = [time_once(learner, episode, config, batching) for _ in range(args.repeats)]
            seconds[batching] = {"runs": runs, "median": statistics.median(runs)}
        report["results"].append({"setting": label, **seconds})
        medians = [seconds[b]["median"] for b in TASK_BATCHING]
        print(f"{label:28s} " + " ".join(f"{m:9.3f}s" for m in medians)
              + f"   {seconds['loop']['median'] / seconds['vmap']['median']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
