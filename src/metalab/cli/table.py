"""`metalab table`: methods against shots from per-episode score files, as a Markdown table and a plot.

    metalab table --shots 1,2,5,10 --method "MAML=results/maml-{shots}.npy" \
                  --method "fine-tuning=results/ft-{shots}.npy" [--against MAML] --out results/shots

Each file is what `metalab eval --save-scores` or `metalab finetune --save-scores` wrote for the same
episodes (same --seed, --episodes, ways and queries); the last row (after all inner or fine-tuning steps) is
scored. With --against, every other method also gets its paired difference to that one.
"""

from pathlib import Path

from metalab.atomic import atomic_path
from metalab.errors import MetalabError


def add_commands(commands) -> None:
    table = commands.add_parser("table", help="methods against shots: Markdown table and PNG with 95%% intervals")
    table.add_argument("--shots", required=True, help="comma-separated, e.g. 1,2,5,10")
    table.add_argument("--method", action="append", required=True, metavar="NAME=PATTERN",
                       help="a method and its score files, with {shots} in the path (repeatable)")
    table.add_argument("--against", help="name of the method every other is paired against")
    table.add_argument("--metric", default="accuracy", choices=("accuracy", "MSE"))
    table.add_argument("--out", required=True, help="writes OUT.md and OUT.png")
    table.set_defaults(run=run_table)


def run_table(args) -> None:
    from metalab.evaluation.score_files import check_writable, load_score_row
    from metalab.evaluation.stats import mean_ci, paired_difference
    from metalab.plots import score_against_shots

    shots = _shots(args.shots)
    methods = {}
    for text in args.method:
        name, _, pattern = text.partition("=")
        if not name or "{shots}" not in pattern:
            raise MetalabError(f"--method takes NAME=PATTERN with {{shots}} in the pattern, got {text!r}")
        methods[name] = pattern
    if args.against and args.against not in methods:
        raise MetalabError(f"--against {args.against!r} is not one of the methods {sorted(methods)}")
    check_writable(args.out, "--out")
    scores = {}
    for name, pattern in methods.items():
        for k in shots:
            scores[name, k] = load_score_row(Path(pattern.format(shots=k)), -1)
    percent = args.metric == "accuracy"
    show = (lambda e: f"{100 * e.mean:.2f} ± {100 * e.ci95:.2f}") if percent else (lambda e: f"{e.mean:.3f} ± {e.ci95:.3f}")
    estimates = {key: mean_ci(values) for key, values in scores.items()}
    lines = ["| method | " + " | ".join(f"{k}-shot" for k in shots) + " |", "|---" * (len(shots) + 1) + "|"]
    for name in methods:
        lines.append(f"| {name} | " + " | ".join(show(estimates[name, k]) for k in shots) + " |")
    if args.against:
        lines += ["", f"Paired difference to {args.against} on the same episodes ({'points' if percent else 'MSE'}):",
                  "", lines[0], lines[1]]
        for name in methods:
            if name != args.against:
                cells = [show(paired_difference(scores[name, k], scores[args.against, k])) for k in shots]
                lines.append(f"| {name} - {args.against} | " + " | ".join(cells) + " |")
    episodes = {values.size for values in scores.values()}
    lines += ["", f"{args.metric}, mean ± 95% interval over {', '.join(map(str, sorted(episodes)))} episodes."]
    out = Path(args.out)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    score_against_shots({name: [estimates[name, k] for k in shots] for name in methods}, shots, args.metric,
                        out.with_suffix(".png"))
    print("\n".join(lines))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.png')}")


def _shots(text: str) -> list[int]:
    """"1,2,5" -> [1, 2, 5], each a positive integer."""
    try:
        shots = [int(s) for s in text.split(",")]
    except ValueError as error:
        raise MetalabError(f"--shots takes positive integers separated by commas, e.g. 1,5, got {text!r}") from error
    if not all(k > 0 for k in shots):
        raise MetalabError(f"--shots takes positive integers separated by commas, e.g. 1,5, got {text!r}")
    return shots
