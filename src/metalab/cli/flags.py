"""Command-line flags made from a settings dataclass's fields: `--field-name value`, typed as the field."""

import dataclasses


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
