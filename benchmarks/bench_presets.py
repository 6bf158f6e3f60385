"""How long a preset's meta-training takes on this machine: seconds per meta-step and per validation, timed.

Run on demand, on an otherwise idle machine (see README.md here):

    python benchmarks/bench_presets.py --threads 2                      # the black-box presets and variants
    python benchmarks/bench_presets.py --threads 2 --cases snail-5w1s   # one of them

Each case is a `metalab train` child in a temporary folder, for --steps meta-steps (--short-steps for the larger
variants) with one validation at the end. Seconds per step, wall and CPU, are read from the child's
metrics.jsonl between its first and last logged step, so start-up and the first steps are not counted. The
validation is timed apart, as the wall time of a `metalab eval BEST.pt --part val` child with the preset's number
of validation episodes (start-up included, so an upper bound). The full run is then estimated as the preset's
steps times the seconds per step plus its validations: an estimate, not a timed full run.

Writes benchmarks/results/presets-<device>.json and prints a table.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_batching import machine, write_report

from metalab.config import preset

# name -> (preset, extra `metalab train` arguments); the 5-way 1-shot presets run --steps, the rest --short-steps.
CASES = {"snail-5w1s": ("omniglot-5w1s-snail", []),
         "metanet-5w1s": ("omniglot-5w1s-metanet", []),
         "snail-20w1s": ("omniglot-5w1s-snail", ["--ways", "20", "--sequence-length", "21"]),
         "snail-5w5s": ("omniglot-5w1s-snail", ["--shots", "5", "--sequence-length", "26"]),
         "metanet-20w1s": ("omniglot-5w1s-metanet", ["--ways", "20"]),
         "metanet-5w5s": ("omniglot-5w1s-metanet", ["--shots", "5"])}
METALAB = [sys.executable, "-m", "metalab"]


def time_case(name: str, args, folder: Path) -> dict:
    preset_name, extra = CASES[name]
    config = preset(preset_name)
    steps = args.steps if name.endswith("5w1s") else args.short_steps
    run = folder / name
    train = [*METALAB, "train", "--preset", preset_name, *extra, "--threads", str(args.threads),
             "--steps", str(steps), "--val-every", str(steps), "--checkpoint-every", str(steps), "--log-every", "10",
             "--out-dir", str(run)]
    subprocess.run(train, check=True, capture_output=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0], records[-1]
    timed = last["step"] - first["step"]
    start = time.perf_counter()
    subprocess.run([*METALAB, "eval", str(run / "best.pt"), "--part", "val", "--episodes", str(config.val_episodes),
                    "--threads", str(args.threads)], check=True, capture_output=True)
    val_s = time.perf_counter() - start
    step_s = (last["time"] - first["time"]) / timed
    validations = config.steps // config.val_every
    return {"preset": preset_name, "extra_args": extra, "timed_steps": [first["step"], last["step"]],
            "s_per_step_wall": step_s, "s_per_step_cpu": (last["cpu_time"] - first["cpu_time"]) / timed,
            "s_per_validation": val_s, "preset_steps": config.steps, "preset_validations": validations,
            "estimated_full_run_min": (config.steps * step_s + validations * val_s) / 60}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="meta-steps of the 5-way 1-shot cases")
    parser.add_argument("--short-steps", type=int, default=30, help="meta-steps of the larger variants")
    parser.add_argument("--device", default="cpu", help="recorded only: the presets run on the CPU")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    report = machine(args)
    print(f"{'case':16s} {'s/step wall':>12s} {'s/step CPU':>11s} {'s/validation':>13s} {'full run, min':>14s}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.cases:
            row = report["results"][name] = time_case(name, args, Path(folder))
            print(f"{name:16s} {row['s_per_step_wall']:12.3f} {row['s_per_step_cpu']:11.3f} "
                  f"{row['s_per_validation']:13.1f} {row['estimated_full_run_min']:14.1f}")
    write_report(report, args, "presets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
