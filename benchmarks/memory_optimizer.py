"""What the outer optimizer costs a training process in resident memory: torch.optim.Adam against metalab's own
Adam (training/optimizer.py), on the presets' Conv4-32.

Run on demand (memory only, no timing: safe on a busy machine):

    python benchmarks/memory_optimizer.py

Each optimizer runs in fresh child processes (--rounds each, interleaved) that import torch, build the network,
read VmRSS, construct the optimizer and take two steps on gradients of ones, and read VmRSS again; the
difference is what the optimizer brought in, above its moments (twice the parameters' bytes, listed apart). Each
child also reports which of the compiler's modules (torch._dynamo, torch._inductor, sympy) were imported by then.

Writes benchmarks/results/memory-optimizer.json (--out) and prints the table.
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
OPTIMIZERS = ("torch", "metalab")
COMPILER = ("torch._dynamo", "torch._inductor", "sympy")


def vm_rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def child(kind: str) -> dict:
    import torch

    from metalab.models.networks import conv4

    torch.set_num_threads(1)
    params = list(conv4(5, hidden=32, pooling=False).parameters())
    before = vm_rss_mib()
    if kind == "torch":
        optimizer = torch.optim.Adam(params, lr=1e-3)
        step = optimizer.step
    else:
        from metalab.training.optimizer import Adam

        optimizer = Adam(params)

        def step():
            optimizer.step(1e-3)
    for _ in range(2):
        for p in params:
            p.grad = torch.ones_like(p)
        step()
    return {"rss_before_mib": before, "rss_after_mib": vm_rss_mib(),
            "moments_mib": 2 * sum(p.numel() * p.element_size() for p in params) / 2**20,
            "imported": [m for m in COMPILER if m in sys.modules]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="children per optimizer, interleaved (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory-optimizer.json")
    parser.add_argument("--child", choices=OPTIMIZERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    runs = {kind: [] for kind in OPTIMIZERS}
    for _ in range(args.rounds):
        for kind in OPTIMIZERS:
            done = subprocess.run([sys.executable, __file__, "--child", kind], capture_output=True, text=True,
                                  check=True)
            runs[kind].append(json.loads(done.stdout.splitlines()[-1]))
    summary = {kind: {"added_mib": statistics.median(r["rss_after_mib"] - r["rss_before_mib"] for r in rs),
                      "moments_mib": rs[0]["moments_mib"], "imported": rs[0]["imported"]}
               for kind, rs in runs.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n")
    print(f"{'optimizer':<10} {'RSS added, MiB (median)':>24} {'of which moments':>17}  compiler modules imported")
    for kind, s in summary.items():
        print(f"{kind:<10} {s['added_mib']:>24.1f} {s['moments_mib']:>17.2f}  {', '.join(s['imported']) or 'none'}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
