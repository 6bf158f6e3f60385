"""Command-line flags made from a settings dataclass's fields: `--field-name value`, typed as the field."""

import dataclasses

from metalab.config import DIST_BACKENDS, DIST_TIMEOUT_S
from metalab.errors import MetalabError


def boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise ValueError(text)


def add_fields(parser, settings_class, skip: tuple[str, ...] = ()) -> None:
    """One flag per field, default None (a flag not given keeps the preset's or the dataclass's value)."""
    for field in dataclasses.fields(settings_class):
        if field.name in skip:
            continue
        kind = {"bool": boolean, "int": int, "float": float}.get(_type_name(field), str)
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind, default=None,
                            metavar="{true,false}" if kind is boolean else None,
                            help=f"default {field.default!r}" if field.default is not dataclasses.MISSING else None)


def given(args, settings_class, skip: tuple[str, ...] = ()) -> dict:
    """The fields whose flags were given, by field name."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(settings_class)
            if f.name not in skip and getattr(args, f.name) is not None}


def _type_name(field) -> str:
    return getattr(field.type, "__name__", field.type)


def add_distributed(parser) -> None:
    """Flags of a command that runs on several processes under torchrun (docs/distributed.md)."""
    parser.add_argument("--dist-backend", default="auto", choices=DIST_BACKENDS,
                        help="how processes talk under torchrun (default auto: gloo on the CPU, nccl on CUDA)")
    parser.add_argument("--dist-timeout", type=float, default=DIST_TIMEOUT_S, metavar="SECONDS",
                        help=f"a rank silent this long stops the others, naming it (default {DIST_TIMEOUT_S:g})")
    parser.add_argument("--dist-check-every", type=int, default=100, metavar="STEPS",
                        help="compare a checksum of the parameters across processes every N steps (default 100)")


def distributed_group(args, device: str):
    """The context of this process's group (distributed.group.join) from the flags of add_distributed."""
    from metalab.distributed.group import join

    if args.dist_check_every <= 0:
        raise MetalabError(f"--dist-check-every must be a positive number of steps, got {args.dist_check_every}")
    return join(args.dist_backend, args.dist_timeout, device)
