"""The `metalab` command: data, train, eval, compare, pretrain, finetune, table, study."""

import argparse
import os
import sys

from metalab import __version__
from metalab.errors import MetalabError


class Parser(argparse.ArgumentParser):
    """argparse, except that a bad command line is one line on stderr (exit 2), as every other error is."""

    def error(self, message):
        self.exit(2, f"metalab: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    from metalab.cli import data, evaluate, finetune, study, table, train

    parser = Parser(prog="metalab", description=__doc__)
    parser.add_argument("--version", action="version", version=f"metalab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    data.add_commands(commands)
    train.add_commands(commands)
    evaluate.add_commands(commands)
    finetune.add_commands(commands)
    table.add_commands(commands)
    study.add_commands(commands)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args) or 0
    except MetalabError as error:
        print(f"metalab: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line, whatever it quotes
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # A rank of a failed torchrun run leaves at once: gloo's threads, torn down by the interpreter's exit,
            # can abort the process (SIGABRT) after an error, which would hide this exit code.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(2)
        return 2


if __name__ == "__main__":
    sys.exit(main())
