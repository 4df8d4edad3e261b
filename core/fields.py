"""Config fields that carry their command-line help, so each option is written once: in its dataclass.

`option(default, "help")` is a dataclass field; `hairdiff.cli.config_command` turns a config class into a
command whose options are exactly its fields. Library code builds the same dataclasses directly.
"""
from __future__ import annotations

import dataclasses
from typing import Any

REQUIRED: Any = dataclasses.MISSING


def option(default=REQUIRED, help: str = "", *, flag: str | None = None, cli: bool = True, factory=None,
           argument: bool = False, **typer_kw):
    """A config field. flag: the option's name when not --field-name; cli=False: set by code only;
    factory: default factory (lists); argument: a positional argument, not an option; typer_kw: extra
    typer settings."""
    meta = {"help": help, "flag": flag, "cli": cli, "argument": argument, "typer": typer_kw}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def at_least(cfg, minimum: int, *names: str) -> None:
    """UsageError for the first of `names` (config fields, None allowed) whose value is below `minimum`."""
    from hairdiff.core.errors import UsageError

    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise UsageError(f"--{name.replace('_', '-')} {value}: use {minimum} or more")


def to_dict(cfg) -> dict:
    """A config as plain JSON-able values (paths as strings)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in dataclasses.asdict(cfg).items()}
