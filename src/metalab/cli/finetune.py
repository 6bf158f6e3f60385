"""`metalab pretrain` and `metalab finetune`: the fine-tuning baseline every meta-learner must beat.

    metalab pretrain [--problem omniglot|sinusoid] [--out runs/pretrain] [--any-PretrainConfig-field value]
    metalab finetune --init pretrained:PATH|maml:PATH|random [--ways 5 --shots 1 --episodes 1000]
                     [--any-FinetuneConfig-field value] [--grid [--grid-set head_lr=0.001,0.01 ...]]
                     [--every-step] [--save-scores scores.npy]

With --grid, the fine-tuning settings are chosen on meta-validation episodes only, then scored on the same
meta-test episodes `metalab eval` uses (part test, seed 0, 15 queries per class or 100 sinusoid points).
"""

import dataclasses
import time
from pathlib import Path

from metalab.cli.flags import add_distributed, add_fields, boolean, distributed_group, given
from metalab.config import PRETRAIN_PRESETS, TASK_BATCHING, FinetuneConfig, PretrainConfig
from metalab.errors import MetalabError

# Searched by --grid unless --grid-set replaces a field's values; the "steps" values come from one run of each
# combination. Why these: docs/results.md (fine-tuning).
DEFAULT_GRIDS = {
    "omniglot": {"head_init": ["class_means", "normalized_class_means", "zero"], "head_lr": [1e-3, 1e-2],
                 "body_lr": [0.0, 1e-4, 1e-3], "steps": [0, 10, 25, 50]},
    "sinusoid": {"optimizer": ["sgd", "adam"], "head_lr": [1e-3, 1e-2], "body_lr": [1e-3, 1e-2],
                 "steps": [0, 1, 10, 50]},
}


def add_commands(commands) -> None:
    pretrain = commands.add_parser("pretrain", help="supervised pre-training of the backbone for fine-tuning")
    pretrain.add_argument("--problem", default="omniglot", choices=sorted(PRETRAIN_PRESETS),
                          help="the preset to start from (default omniglot)")
    pretrain.add_argument("--out", default="runs/pretrain", help="folder for pretrained.pt (default runs/pretrain)")
    pretrain.add_argument("--data-dir", help="folder of the Omniglot archives")
    add_fields(pretrain, PretrainConfig, skip=("problem",))
    add_distributed(pretrain)
    pretrain.set_defaults(run=run_pretrain)

    finetune = commands.add_parser("finetune", help="fine-tune per task from the support set; mean and 95%% CI")
    finetune.add_argument("--init", required=True, help="pretrained:PATH (metalab pretrain), maml:PATH (a "
                          "meta-training checkpoint's theta) or random")
    finetune.add_argument("--ways", type=int, default=5, help="classes per task (default 5)")
    finetune.add_argument("--shots", type=int, help="default: 1 (omniglot), 10 (sinusoid)")
    finetune.add_argument("--queries", type=int, help="default: 15 per class (omniglot), 100 points (sinusoid)")
    finetune.add_argument("--episodes", type=int, default=1000, help="meta-test episodes (default 1000)")
    finetune.add_argument("--seed", type=int, default=0, help="fixes the test episodes, as for `metalab eval`")
    for name, kind, text in (("--problem", str, "omniglot | sinusoid"), ("--split", str, "minimal | lake | vinyals"),
                             ("--hidden", int, "width"), ("--pooling", boolean, "true | false")):
        finetune.add_argument(name, type=kind, help=f"--init random only: {text} (a checkpoint fixes it)")
    add_fields(finetune, FinetuneConfig)
    finetune.add_argument("--grid", action="store_true", help="choose the settings on meta-validation episodes")
    finetune.add_argument("--grid-set", action="append", default=[], metavar="FIELD=V1,V2",
                          help="the values --grid tries for one field (repeatable); default grid: " +
                          "; ".join(f"{p}: {g}" for p, g in DEFAULT_GRIDS.items()))
    finetune.add_argument("--grid-episodes", type=int, default=200,
                          help="meta-validation episodes per setting (default 200)")
    finetune.add_argument("--grid-out", default="runs/finetune/grid.csv",
                          help="where the grid's table (CSV) goes (default runs/finetune/grid.csv)")
    finetune.add_argument("--every-step", action="store_true", help="score after 0, 1, ..., steps steps")
    finetune.add_argument("--batching", default="vmap", choices=TASK_BATCHING, help="tasks at once (vmap) or in turn")
    finetune.add_argument("--save-scores", help="per-episode scores (.npy, [steps+1 or 1, episodes]) for "
                          "`metalab compare`")
    finetune.add_argument("--data-dir")
    finetune.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: one per core)")
    finetune.add_argument("--device", help="cpu | cuda | cuda:N (default: the checkpoint's, or cpu)")
    finetune.set_defaults(run=run_finetune)


def run_pretrain(args) -> None:
    from metalab.training.pretrain import pretrain

    config = PRETRAIN_PRESETS[args.problem].replace(**given(args, PretrainConfig, skip=("problem",)))
    with distributed_group(args, config.device) as group:
        if group.is_main:
            print(f"pre-training the {args.problem} backbone into {args.out}")
        state = pretrain(config, args.out, args.data_dir, group)
        if group.is_main:
            print(f"done: {Path(args.out) / 'pretrained.pt'}, best val {state['metric']} {state['val']:.4f} "
                  f"at epoch {state['epoch']} of {len(state['history'])}")


def run_finetune(args) -> None:
    from metalab.config import check_numbers
    from metalab.data.episode import VAL_SEED, fixed_episodes
    from metalab.evaluation.evaluate import per_episode_scores
    from metalab.evaluation.grid_search import grid_search
    from metalab.evaluation.report import report
    from metalab.evaluation.score_files import check_writable, save_score_file
    from metalab.methods.finetune import FineTuning
    from metalab.methods.learner import copy_parameters
    from metalab.models.networks import reinitialize
    from metalab.problem import EVAL_QUERIES, build_problem
    from metalab.runtime import configure_torch

    check_numbers({name: getattr(args, name) for name in ("episodes", "grid_episodes", "ways", "shots", "queries",
                                                         "hidden") if getattr(args, name) is not None}, positive=True)
    check_numbers({"seed": args.seed, "threads": args.threads}, positive=False)
    for flag, path in (("--save-scores", args.save_scores), ("--grid-out", args.grid and args.grid_out)):
        if path:
            check_writable(path, flag)  # before the work, not after it
    config, start = starting_point(args)
    config = config.replace(ways=args.ways, shots=args.shots or (10 if config.problem == "sinusoid" else 1),
                            queries=args.queries or EVAL_QUERIES[config.problem], threads=args.threads,
                            device=args.device or config.device)
    device = configure_torch(config.threads, config.device)
    problem = build_problem(config, args.data_dir, parts=("val", "test") if args.grid else ("test",))
    if start is None:
        reinitialize(problem.learner.model, args.seed)
        start = copy_parameters(problem.learner.model)
    problem.learner.model.to(device)
    start = {name: p.to(device) for name, p in start.items()}
    regression = config.problem == "sinusoid"
    settings = FinetuneConfig(**{"head_init": "keep" if regression else "class_means",
                                 **given(args, FinetuneConfig)})
    if args.grid:
        grid = {**DEFAULT_GRIDS[config.problem], **_grid_settings(args.grid_set)}
        began = time.perf_counter()
        settings, rows = grid_search(problem.learner, start, problem.tasks["val"], settings, grid,
                                     args.grid_episodes, VAL_SEED, table=Path(args.grid_out), batching=args.batching)
        print(f"grid search: {len(rows)} settings on {args.grid_episodes} meta-validation episodes, "
              f"{time.perf_counter() - began:.0f} s, table in {args.grid_out}")
        for row in sorted(rows, key=lambda r: r["mean"], reverse=not regression)[:5]:
            print("  " + ", ".join(f"{k}={row[k]}" for k in grid) + f": {row['mean']:.4f} ± {row['ci95']:.4f}")
    record_at = list(range(settings.steps + 1)) if args.every_step else [settings.steps]
    method = FineTuning(problem.learner, settings, args.batching, scored=tuple(record_at))
    began = time.perf_counter()
    scores = per_episode_scores({"theta": start}, method, fixed_episodes(problem.tasks["test"], args.seed,
                                                                         args.episodes), settings.steps)
    task = (f"{config.shots}-shot sinusoid" if regression
            else f"{config.ways}-way {config.shots}-shot {config.queries}-query")
    print(f"{args.init}: fine-tuning {_describe(settings)}; {task}, {args.episodes} test episodes "
          f"(seed {args.seed}), {time.perf_counter() - began:.0f} s")
    report(scores, record_at, problem.learner.metric, method.step_name)
    if args.save_scores:
        save_score_file(args.save_scores, scores[record_at])


def starting_point(args):
    """(problem Config, start parameters) from --init; None for --init random (made once the network is)."""
    from metalab import checkpoint
    from metalab.config import Config
    from metalab.evaluation.checkpoints import load_trained
    from metalab.methods import registry
    from metalab.training.pretrain import KIND

    kind, _, path = args.init.partition(":")
    architecture = {name: getattr(args, name) for name in ("problem", "split", "hidden", "pooling")
                    if getattr(args, name) is not None}
    if kind == "random" and not path:
        defaults = {"hidden": 40 if architecture.get("problem") == "sinusoid" else 32, "pooling": False}
        try:
            return Config(**{**defaults, **architecture}), None
        except MetalabError as error:
            raise MetalabError(f"--init random: {error}") from error
    if kind not in ("pretrained", "maml") or not path:
        raise MetalabError(f"--init must be pretrained:PATH, maml:PATH or random, got {args.init!r}")
    if architecture:
        raise MetalabError(f"{path} fixes the problem, split and network: leave out "
                           f"{', '.join('--' + n for n in architecture)} (for --init random only)")
    state = checkpoint.load(path)
    if kind == "pretrained":
        if state.get("kind") != KIND:
            raise MetalabError(f"{path} is not written by `metalab pretrain`; for a meta-training checkpoint use "
                               f"--init maml:{path}")
        fix = "pass the pretrained.pt a `metalab pretrain` run wrote"
        checkpoint.check_fields(state, {"config": dict, "body": dict, "head": (dict, type(None))}, path, fix)
        checkpoint.check_tensor_groups({"body": state["body"], "head": state["head"] or {}}, path, "")
        trained = state["config"]
        checkpoint.check_fields(trained, {"problem": str, "split": str, "hidden": int, "pooling": bool}, path, fix)
        config = Config(problem=trained["problem"], split=trained["split"], hidden=trained["hidden"],
                        pooling=trained["pooling"], device=trained.get("device", "cpu"))
        return config, {**state["body"], **(state["head"] or {})}
    if "meta" not in state:
        raise MetalabError(f"{path} is not a meta-training checkpoint; for one written by `metalab pretrain` use "
                           f"--init pretrained:{path}")
    config, meta, _ = load_trained(path)
    if registry.entry(config.method).blackbox:
        raise MetalabError(f"{path} holds a black-box learner ({config.method}); fine-tuning starts from a network's "
                           "parameters: a `metalab pretrain` checkpoint or a MAML-family one")
    return config, meta["theta"]


def _grid_settings(texts: list[str]) -> dict[str, list]:
    """["head_lr=0.001,0.01", ...] -> {"head_lr": [0.001, 0.01]}, each value of its field's type."""
    kinds = {f.name: {"int": int, "float": float}.get(getattr(f.type, "__name__", f.type), str)
             for f in dataclasses.fields(FinetuneConfig)}
    grid = {}
    for text in texts:
        name, _, values = text.partition("=")
        name = name.strip().replace("-", "_")
        if name not in kinds or not values:
            raise MetalabError(f"--grid-set takes FIELD=V1,V2,... with FIELD one of {sorted(kinds)}, got {text!r}")
        try:
            grid[name] = [kinds[name](value.strip()) for value in values.split(",")]
        except ValueError as error:
            raise MetalabError(f"--grid-set {text!r}: {error}") from error
    return grid


def _describe(settings) -> str:
    return ", ".join(f"{name}={value}" for name, value in dataclasses.asdict(settings).items())
