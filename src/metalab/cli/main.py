"""The `metalab` command: data, train, eval, compare, pretrain, finetune, table."""

import argparse
import sys

from metalab.errors import MetalabError


def build_parser() -> argparse.ArgumentParser:
    from metalab.cli import data, finetune, report, train

    parser = argparse.ArgumentParser(prog="metalab", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data.add_commands(commands)
    train.add_commands(commands)
    finetune.add_commands(commands)
    report.add_commands(commands)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args) or 0
    except MetalabError as error:
        print(f"metalab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
