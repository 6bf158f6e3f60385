"""Data-layer benchmark: archive-to-cache build, cache load, and episode sampling speed.

Run on demand (pytest does not collect it):

    python benchmarks/bench_data.py                 # one torch thread
    python benchmarks/bench_data.py --threads 4

Measures, on the two minimal Omniglot archives:
  build   decoding both archives into a fresh, empty cache folder (load_omniglot), median of 3
  load    load_omniglot again once the cache exists (checksums, cache read, merge), median of 10
  sample  batches per second of N-way K-shot Q-query episodes from the minimal train split (with
          its four rotations), each batch drawn as training draws it, with generator_for(seed, 0,
          step); median over several 1-second windows

Writes benchmarks/results/data.json (git-ignored) with the machine's description, and prints a table
with the targets. The user's real cache is never touched: every cache lives in a temporary folder.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARCHIVES = ("images_background_small1", "images_background_small2")
TARGETS = {"build_s": 10.0, "load_s": 0.5, "batches_per_s": 200.0}
SAMPLING = [  # (label, ways, shots, queries, batch size); the first carries the target
    ("5-way 1-shot 15-query, batch 32", 5, 1, 15, 32),
    ("20-way 1-shot 15-query, batch 32", 20, 1, 15, 32),
]


def default_data_dir() -> str | None:
    """$METALAB_DATA, else the shared folder beside this checkout, else None (the user's data folder)."""
    if os.environ.get("METALAB_DATA"):
        return os.environ["METALAB_DATA"]
    shared = REPO.parent / "shared" / "data" / "omniglot"
    return str(shared) if (shared / f"{ARCHIVES[0]}.zip").exists() else None


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: one core)")
    parser.add_argument("--data-dir", default=default_data_dir(), help="folder holding the minimal archives")
    parser.add_argument("--builds", type=int, default=3, help="fresh-cache builds to time (median)")
    parser.add_argument("--loads", type=int, default=10, help="cached loads to time (median)")
    parser.add_argument("--windows", type=int, default=5, help="1-second sampling windows per setting (median)")
    parser.add_argument("--window-s", type=float, default=1.0, help="length of one sampling window")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data.json"))
    args = parser.parse_args(argv)
    if min(args.threads, args.builds, args.loads, args.windows) < 1 or args.window_s <= 0:
        parser.error("--threads, --builds, --loads, --windows and --window-s must be positive")
    return args


def machine_info(threads: int) -> dict:
    import numpy
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "torch": torch.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(), "threads_requested": threads,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "load_average_at_start": load,
    }


class Clock:
    """Wall-clock and CPU time (this process, all its threads) of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_build_and_load(data_dir, builds: int, loads: int) -> tuple[list[Clock], list[Clock], dict]:
    from metalab.data.omniglot import load_omniglot

    build_times, load_times = [], []
    previous = os.environ.get("METALAB_CACHE")
    with tempfile.TemporaryDirectory(prefix="metalab-bench-") as root:
        try:
            for i in range(builds):
                os.environ["METALAB_CACHE"] = str(Path(root) / f"cache{i}")  # fresh and empty
                with Clock() as clock:
                    data = load_omniglot(ARCHIVES, data_dir, download_missing=False)
                build_times.append(clock)
            for _ in range(loads):  # the last build's cache is now in place
                with Clock() as clock:
                    data = load_omniglot(ARCHIVES, data_dir, download_missing=False)
                load_times.append(clock)
        finally:
            if previous is None:
                os.environ.pop("METALAB_CACHE", None)
            else:
                os.environ["METALAB_CACHE"] = previous
    sizes = {"images": int(len(data.images)), "characters": len(data.characters)}
    return build_times, load_times, sizes


def time_sampling(tasks, batch: int, windows: int, window_s: float) -> tuple[list[float], list[float]]:
    """Batches per wall-clock second and per CPU second, one of each per window."""
    from metalab.data.episode import generator_for

    step = 0
    for _ in range(20):  # warm-up: allocator, first-call overheads
        tasks.sample(generator_for(0, 0, step), batch)
        step += 1
    rates, cpu_rates = [], []
    for _ in range(windows):
        count, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - start) < window_s:
            tasks.sample(generator_for(0, 0, step), batch)
            step += 1
            count += 1
        rates.append(count / elapsed)
        cpu_rates.append(count / max(time.process_time() - cpu_start, 1e-9))
    return rates, cpu_rates


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from metalab.data.classification import omniglot_tasks
    from metalab.data.splits import load_split_data
    from metalab.errors import MetalabError

    try:
        build_times, load_times, sizes = time_build_and_load(args.data_dir, args.builds, args.loads)
        data, split = load_split_data("minimal", args.data_dir, download_missing=False)
    except MetalabError as error:
        print(f"bench_data: {error}", file=sys.stderr)
        return 2
    results = {
        "build_s": summary(build_times),
        "load_s": summary(load_times),
        "sampling": [],
    }
    for label, ways, shots, queries, batch in SAMPLING:
        tasks = omniglot_tasks(data, split, "train", ways, shots, queries)
        rates, cpu_rates = time_sampling(tasks, batch, args.windows, args.window_s)
        median = statistics.median(rates)
        results["sampling"].append({
            "setting": label, "ways": ways, "shots": shots, "queries": queries, "batch_size": batch,
            "classes": tasks.num_classes, "batches_per_s": {"median": median, "all": rates},
            "batches_per_cpu_s": {"median": statistics.median(cpu_rates), "all": cpu_rates},
            "episodes_per_s": median * batch,
        })
    report = {
        "benchmark": "data", "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(args.threads), "data": sizes, "targets": TARGETS, "results": results,
        "settings": {"builds": args.builds, "loads": args.loads, "windows": args.windows, "window_s": args.window_s},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"\nwrote {out}")
    return 0


def summary(clocks: list[Clock]) -> dict:
    """Median and all values of wall-clock seconds, with the CPU seconds beside them."""
    wall, cpu = [c.wall for c in clocks], [c.cpu for c in clocks]
    return {"median": statistics.median(wall), "all": wall, "cpu_median": statistics.median(cpu), "cpu_all": cpu}


def print_table(report: dict) -> None:
    machine, results = report["machine"], report["results"]
    load = machine["load_average_at_start"]
    print(f"metalab data benchmark: torch {machine['torch']}, {machine['torch_threads']} thread(s), "
          f"{machine['cpu_count']} CPUs, load average at start {', '.join(f'{x:.2f}' for x in load or ())}")
    if load and machine["cpus_usable"] and load[0] > 0.5 * machine["cpus_usable"]:
        print("warning: the machine was busy; wall-clock numbers are pessimistic (the CPU-time column is "
              "less affected)")
    build, cached = results["build_s"], results["load_s"]
    rows = [
        ("build both minimal archives, empty cache", f"{build['median']:.2f} s", f"{build['cpu_median']:.2f} s",
         f"<= {TARGETS['build_s']:g} s", build["median"] <= TARGETS["build_s"]),
        ("load both from the cache", f"{cached['median'] * 1000:.0f} ms", f"{cached['cpu_median'] * 1000:.0f} ms",
         f"<= {TARGETS['load_s'] * 1000:g} ms", cached["median"] <= TARGETS["load_s"]),
    ]
    for i, entry in enumerate(results["sampling"]):
        rate, cpu_rate = entry["batches_per_s"]["median"], entry["batches_per_cpu_s"]["median"]
        rows.append((f"sample {entry['setting']}", f"{rate:.0f} batches/s", f"{cpu_rate:.0f} batches/cpu-s",
                     f">= {TARGETS['batches_per_s']:g} batches/s" if i == 0 else "-",
                     rate >= TARGETS["batches_per_s"] if i == 0 else None))
    header = ("measure", "median (wall)", "median (CPU)", "target", "met")
    table = [header] + [(*row[:4], "" if row[4] is None else ("yes" if row[4] else "NO")) for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    for row in table:
        print("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
