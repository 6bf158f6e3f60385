"""`metalab train --preset NAME [--field value ...]`: meta-train a method from a preset with overrides."""

from pathlib import Path

from metalab.cli.flags import add_distributed, add_fields, distributed_group, given
from metalab.config import PRESETS, Config, preset
from metalab.errors import MetalabError


def add_commands(commands) -> None:
    train = commands.add_parser("train", help="meta-train a method from a named preset with overrides")
    train.add_argument("--preset", required=True, choices=sorted(PRESETS))
    train.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in out_dir")
    train.add_argument("--data-dir", help="folder of the Omniglot archives")
    add_distributed(train)
    add_fields(train, Config)
    train.set_defaults(run=run_train)


def run_train(args) -> None:
    from metalab.training.loop import train

    config = preset(args.preset).replace(**given(args, Config))
    if args.resume and args.overwrite:
        raise MetalabError("--resume continues the run in the folder and --overwrite replaces it: pass one of them")
    out_dir = Path(config.out_dir or f"runs/{args.preset}")
    with distributed_group(args, config.device) as group:
        processes = f" on {group.size} processes" if group.size > 1 else ""
        # torchrun restarts a failed run from the start: it continues from the last checkpoint instead.
        restart = f" (torchrun restart {group.restarts}: resuming)" if group.restarts else ""
        if group.is_main:
            print(f"training {args.preset} into {out_dir}{processes}{restart}")
        train(config, out_dir, resume=args.resume or group.restarts > 0, data_dir=args.data_dir,
              overwrite=args.overwrite, group=group, check_every=args.dist_check_every)
        if group.is_main:
            print(f"done: {out_dir}/best.pt, {out_dir}/curves.png")
