"""`metalab eval CHECKPOINT` and `metalab compare A.npy B.npy`: held-out scores and paired differences."""

import os

from metalab.cli.flags import add_distributed, distributed_group
from metalab.errors import MetalabError


def add_commands(commands) -> None:
    ev = commands.add_parser("eval", help="evaluate a checkpoint on held-out episodes (mean and 95%% CI); several "
                             "checkpoints: each, and their ensemble (mean class probability), on the same episodes")
    ev.add_argument("checkpoint", nargs="+", metavar="CHECKPOINT", help="a checkpoint; several: an ensemble, scored "
                    "beside each member, each at its own eval steps unless --steps")
    ev.add_argument("--ways", type=int, help="default: as trained")
    ev.add_argument("--shots", type=int, help="default: as trained")
    ev.add_argument("--queries", type=int, help="default: 15 per class (omniglot), 100 points (sinusoid)")
    ev.add_argument("--steps", type=int, help="inner steps (default: eval_inner_steps of the run)")
    ev.add_argument("--inner-lr", type=float, help="MAML/FOMAML inner learning rate (default: as trained)")
    ev.add_argument("--episodes", type=int, help="default 1000")
    ev.add_argument("--seed", type=int, default=0, help="fixes the episodes: same seed, same episodes for every method")
    ev.add_argument("--part", choices=("test", "val"), help="default test")
    ev.add_argument("--within-alphabet", type=float, metavar="P", help="probability that an episode's classes all "
                    "come from one alphabet (1: Lake's within-alphabet episodes; default 0: mixed)")
    ev.add_argument("--support-augment", type=int, metavar="COPIES", help="test-time augmentation: COPIES randomly "
                    "distorted copies of each support image join the support set as extra shots of its class "
                    "(affine, in --augment's ranges, drawn from --seed; queries untouched; default 0: none)")
    ev.add_argument("--support-augment-strength", type=float, metavar="S", help="scale of those distortions' ranges "
                    "(default 1: those of training's --augment 1)")
    ev.add_argument("--support-augment-kind", choices=("affine", "shift"), help="affine (default): the distortions "
                    "above; shift: each copy its image moved by whole pixels to a neighbouring position, no resampling "
                    "(for networks trained with --elastic-alpha)")
    ev.add_argument("--benchmark", choices=("lake",), help="lake: Lake's 20 runs of 20-way within-alphabet one-shot "
                    "classification (all_runs.zip in the data folder, fetched when missing): error %% per run")
    ev.add_argument("--no-download", action="store_true", help="with --benchmark: fail if all_runs.zip is missing")
    ev.add_argument("--data-dir")
    ev.add_argument("--device", help="default: as trained (cpu or cuda)")
    ev.add_argument("--threads", type=int, help="torch CPU threads (default: one per core)")
    ev.add_argument("--save-scores", help="write per-episode scores (.npy) for paired comparisons (several "
                    "checkpoints: the ensemble's)")
    ev.add_argument("--json", help="write the results as JSON")
    ev.add_argument("--curvature", action="store_true", help="gradient methods: each episode's alpha * lambda_max "
                    "of the support loss at theta (above 2: more inner steps diverge), against diverged episodes")
    add_distributed(ev)
    ev.set_defaults(run=run_eval)

    compare = commands.add_parser("compare", help="paired difference of two methods on the same episodes")
    compare.add_argument("scores_a", help=".npy written by `metalab eval --save-scores`")
    compare.add_argument("scores_b")
    compare.add_argument("--step-a", type=int, default=-1, help="inner steps of A to compare (default: the last)")
    compare.add_argument("--step-b", type=int, default=-1)
    compare.set_defaults(run=run_compare)


def run_eval(args) -> None:
    from metalab.config import check_numbers
    from metalab.evaluation.checkpoints import evaluate_checkpoint
    from metalab.evaluation.score_files import check_writable

    check_numbers({name: getattr(args, name) for name in ("episodes", "queries", "ways", "shots", "inner_lr")
                   if getattr(args, name) is not None}, positive=True)
    check_numbers({name: getattr(args, name) for name in ("steps", "seed", "threads", "within_alphabet",
                                                          "support_augment")
                   if getattr(args, name) is not None}, positive=False)
    for flag, value in (("--support-augment-strength", args.support_augment_strength),
                        ("--support-augment-kind", args.support_augment_kind)):
        if value is not None and not args.support_augment:
            raise MetalabError(f"{flag} sets the copies of --support-augment COPIES: add --support-augment (1 or more "
                               "copies) or drop it")
    for flag, path in (("--save-scores", args.save_scores), ("--json", args.json)):
        if path:
            check_writable(path, flag)  # before the evaluation, not after it
    if len(args.checkpoint) > 1:
        return run_ensemble(args)
    if args.benchmark or args.no_download:
        return run_benchmark(args)
    # Without --device the backend is gloo, which also gathers the scores of a checkpoint evaluated on its GPU.
    with distributed_group(args, args.device or "cpu") as group:
        results = evaluate_checkpoint(args.checkpoint[0], curvature=args.curvature, group=group, **_settings(args))
    if group.is_main:
        _write_json(args.json, results)


def run_ensemble(args) -> None:
    """`metalab eval A.pt B.pt ...`: each checkpoint and their ensemble on the same episodes, in one process."""
    from metalab.evaluation.ensemble import evaluate_ensemble
    from metalab.training.metrics_log import training_cost

    for flag, given in (("--curvature", args.curvature), ("--benchmark", args.benchmark or args.no_download)):
        if given:
            raise MetalabError(f"{flag} evaluates one checkpoint: run it on each checkpoint alone, or drop {flag} "
                               "to score the ensemble")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MetalabError("several checkpoints are evaluated as an ensemble in one process: run it without torchrun")
    results = evaluate_ensemble(args.checkpoint, training_cost=training_cost, **_settings(args))
    _write_json(args.json, results)


def _settings(args) -> dict:
    """The evaluation's flags, as evaluate_checkpoint and evaluate_ensemble take them."""
    return dict(ways=args.ways, shots=args.shots, queries=args.queries, steps=args.steps, inner_lr=args.inner_lr,
                episodes=args.episodes or 1000, seed=args.seed, part=args.part or "test", data_dir=args.data_dir,
                save_scores=args.save_scores, device=args.device, threads=args.threads,
                within_alphabet=args.within_alphabet or 0.0, support=_support_copies(args))


def _support_copies(args):
    from metalab.data.support_augment import SupportCopies

    return SupportCopies(args.support_augment or 0,
                         1.0 if args.support_augment_strength is None else args.support_augment_strength,
                         args.support_augment_kind or "affine")


def _write_json(path, results: dict) -> None:
    from metalab.json_text import write_json

    if path:
        write_json(path, results)


def run_benchmark(args) -> None:
    """`metalab eval CHECKPOINT --benchmark lake`: the benchmark's own fixed tasks, so no flag that draws episodes."""
    from metalab.evaluation.lake import evaluate_lake

    if not args.benchmark:
        raise MetalabError("--no-download applies to --benchmark lake; `metalab eval` reads the split's archives "
                           "(fetch them first with `metalab data fetch`)")
    drawn = [flag for flag, value in (("--ways", args.ways), ("--shots", args.shots), ("--queries", args.queries),
                                      ("--episodes", args.episodes), ("--part", args.part),
                                      ("--within-alphabet", args.within_alphabet), ("--save-scores", args.save_scores),
                                      ("--curvature", args.curvature or None),
                                      ("--support-augment", args.support_augment))
             if value is not None]
    if drawn:
        raise MetalabError(f"--benchmark {args.benchmark} is its own 20 fixed 20-way 1-shot runs: drop "
                           f"{', '.join(drawn)}")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MetalabError("--benchmark lake is 20 tasks: run it in one process, without torchrun")
    results = evaluate_lake(args.checkpoint[0], steps=args.steps, inner_lr=args.inner_lr, data_dir=args.data_dir,
                            download=not args.no_download, device=args.device, threads=args.threads)
    _write_json(args.json, results)


def run_compare(args) -> None:
    from metalab.evaluation.score_files import load_score_row
    from metalab.evaluation.stats import mean_ci, paired_difference

    a = load_score_row(args.scores_a, args.step_a, "--step-a")
    b = load_score_row(args.scores_b, args.step_b, "--step-b")
    if a.shape != b.shape:
        raise MetalabError(f"{args.scores_a} has {a.size} episodes and {args.scores_b} has {b.size}; a paired "
                           "comparison needs the same episodes (same --episodes, --seed, ways, shots, queries)")
    print(f"A {args.scores_a}: {mean_ci(a)}")
    print(f"B {args.scores_b}: {mean_ci(b)}")
    print(f"A - B (paired over {a.size} episodes): {paired_difference(a, b)}")
