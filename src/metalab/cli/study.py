"""`metalab study NAME (--checkpoints A.pt ... | --train tiny|quick|full)`: one study, one report; `--list`."""

from pathlib import Path

from metalab.errors import MetalabError


def add_commands(commands) -> None:
    study = commands.add_parser("study", help="evaluate checkpoints on shifted tasks into a report (resumable)")
    study.add_argument("name", nargs="?", help="the study (`metalab study --list`)")
    study.add_argument("--list", action="store_true", help="list the studies and stop")
    given = study.add_mutually_exclusive_group()
    given.add_argument("--checkpoints", nargs="+", metavar="CHECKPOINT", help="best.pt files to study")
    given.add_argument("--train", choices=("tiny", "quick", "full"),
                       help="train what the study needs first (tiny: seconds, for CI; quick: under 30 minutes "
                            "on 2 cores; full: the report's budget), into OUT/train/")
    study.add_argument("--out", help="report folder (default runs/study-NAME[-BUDGET]); a rerun resumes there")
    study.add_argument("--episodes", type=int, help="meta-test episodes per cell (default: 1000; --train tiny "
                                                    "20, quick 200)")
    study.add_argument("--seed", type=int, default=0, help="fixes the episodes, the same for every method")
    study.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: one per core)")
    study.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    study.add_argument("--data-dir", help="folder of the Omniglot archives")
    study.set_defaults(run=run_study_command)


def run_study_command(args) -> None:
    from metalab.config import check_device, check_numbers
    from metalab.studies.registry import STUDIES, study_named

    if args.list:
        for name, study in sorted(STUDIES.items()):
            print(f"{name}: {getattr(study, 'summary', '')}".rstrip(": "))
        return
    if not args.name:
        raise MetalabError("name a study (`metalab study --list` lists them), e.g. `metalab study more-steps "
                           "--train quick`")
    study = study_named(args.name)
    if not args.checkpoints and not args.train:
        raise MetalabError(f"study {args.name} needs --checkpoints A.pt B.pt ... or --train tiny|quick|full")
    check_numbers({"seed": args.seed, "threads": args.threads}, positive=False)
    if args.episodes is not None:
        check_numbers({"episodes": args.episodes}, positive=True)
    check_device(args.device)
    for path in args.checkpoints or []:
        if not Path(path).is_file():
            raise MetalabError(f"no checkpoint at {path}; pass the best.pt of a `metalab train` run")
    _run(study, args)


def _run(study, args) -> None:
    from metalab.atomic import writable_folder
    from metalab.studies.study import EPISODES, StudySettings, run_study

    budget = args.train or "full"
    out = writable_folder(Path(args.out or f"runs/study-{args.name}{'-' + args.train if args.train else ''}"),
                          "--out")
    settings = StudySettings(episodes=args.episodes or EPISODES[budget], seed=args.seed, threads=args.threads,
                             device=args.device, budget=budget, data_dir=args.data_dir)
    if args.train:
        print(f"training what {study.name} needs ({args.train} budget) into {out / 'train'}")
        checkpoints = study.train(args.train, out / "train", args.threads, data_dir=args.data_dir)
    else:
        checkpoints = [Path(path) for path in args.checkpoints]
    report = run_study(study, checkpoints, out, settings)
    print(f"done: {report}, {out / 'results.csv'}, {out / 'results.json'}")
