"""Meta-validation score of several training runs against meta-steps or training time, as a table and a plot.

    python docs/analysis/validation_curves.py NAME=RUN_FOLDER [NAME=RUN_FOLDER ...] [--x step|time|cpu_time]
                                              [--plot OUT.png]

Reads each run's metrics.jsonl (written by `metalab train`), whose validation records hold "val" beside
"step", "time" (wall seconds since the run started, resumes included) and "cpu_time" (CPU seconds of the
training process). Prints one Markdown row per run with its validation score at every validation step, and with
--plot draws all runs on one axis: meta-steps, or minutes of wall or CPU time (a time-to-accuracy plot: wall
time means something only for runs timed alone on an idle machine).
"""

import argparse
import json
from pathlib import Path

X_LABELS = {"step": "meta-step", "time": "wall time (minutes)", "cpu_time": "CPU time of training (minutes)"}


def validations(folder: Path) -> list[dict]:
    """The validation records of a run folder's metrics.jsonl, in order."""
    path = Path(folder) / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: pass the folder of a `metalab train` run")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [record for record in records if "val" in record]


def markdown(runs: dict[str, list[dict]], x: str) -> str:
    """One row per run: 'x: val' at each validation, val to 3 decimals."""
    lines = [f"| run | validation score at each {X_LABELS[x]} |", "|---|---|"]
    for name, records in runs.items():
        points = ", ".join(f"{_x_value(record, x)}: {record['val']:.3f}" for record in records)
        lines.append(f"| {name} | {points} |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], x: str, path: Path) -> Path:
    from metalab.plots import plt, save_png

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, records in runs.items():
        scale = 1 if x == "step" else 1 / 60
        ax.plot([record[x] * scale for record in records], [record["val"] for record in records], marker="o",
                label=name)
    ax.set(xlabel=X_LABELS[x], ylabel="meta-validation score")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_png(fig, path)


def _x_value(record: dict, x: str) -> str:
    return str(record["step"]) if x == "step" else f"{record[x] / 60:.1f} min"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_FOLDER")
    parser.add_argument("--x", choices=sorted(X_LABELS), default="step")
    parser.add_argument("--plot", help="also draw the curves into this PNG")
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.runs:
        name, sep, folder = spec.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: write NAME=RUN_FOLDER")
        runs[name] = validations(Path(folder))
    if args.x != "step" and any(args.x not in record for records in runs.values() for record in records):
        raise SystemExit(f"a run has validation records without {args.x!r}: use --x step")
    print(markdown(runs, args.x))
    if args.plot:
        print(f"wrote {plot(runs, args.x, Path(args.plot))}")


if __name__ == "__main__":
    main()
