"""Config fields that carry their command-line help, so each option is written once: in its dataclass.

`option(default, "help")` is a dataclass field; `hairdiff.cli.config_command` turns a config class into a
command whose options are exactly its fields. Library code builds the same dataclasses directly.
"""
from __future__ import annotations

import dataclasses
from typing import Any

REQUIRED: Any = dataclasses.MISSING
LOCAL, URL = "local", "url"  # option(path=...): what an option naming files or folders accepts


def option(default=REQUIRED, help: str = "", *, flag: str | None = None, cli: bool = True, factory=None,
           argument: bool = False, path: str | None = None, **typer_kw):
    """A config field. flag: the option's name when not --field-name; cli=False: set by code only;
    factory: default factory (lists); argument: a positional argument, not an option; path: "local" or "url"
    for an option that names files or folders (said in its help, checked by check_paths); typer_kw: extra
    typer settings."""
    from hairdiff.core.urls import LOCAL_ONLY, URL_OK

    if path is not None:
        label = {LOCAL: LOCAL_ONLY, URL: URL_OK}[path]
        help = f"{help} [{label}]"
    meta = {"help": help, "flag": flag, "cli": cli, "argument": argument, "path": path, "typer": typer_kw}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# Bounds shared by every command's numbers (issue 26): what the code can hold, not a taste in settings.
FLOAT32_MAX = 3.4028234663852886e38  # learning rates and weights live in float32 tensors
SEED_MAX = 2**32 - 1                 # seeds go to numpy (SeedSequence: non-negative) and torch
MAX_BATCH = 1024                     # samples in memory at once (a batch is allocated whole)
MAX_THREADS = 256                    # threads or processes a command starts


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def at_least(cfg, minimum: int, *names: str) -> None:
    """UsageError for the first of `names` (config fields, None allowed) whose value is below `minimum`."""
    from hairdiff.core.errors import UsageError

    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < minimum:
            raise UsageError(f"{_flag(name)} {value}: use {minimum} or more")


def at_most(cfg, maximum: int, why: str, *names: str) -> None:
    """UsageError for the first of `names` (None allowed) above `maximum`; why: what bounds it."""
    from hairdiff.core.errors import UsageError

    for name in names:
        value = getattr(cfg, name)
        if value is not None and value > maximum:
            raise UsageError(f"{_flag(name)} {value}: use at most {maximum} ({why})")


def finite(cfg, *names: str, positive: bool = False, hint: str = "") -> None:
    """UsageError for the first of `names` (None allowed) that is NaN, infinite, beyond float32 or negative
    (with `positive`: not above 0). hint: what a usual value is, said in the message."""
    import math

    from hairdiff.core.errors import UsageError

    for name in names:
        value = getattr(cfg, name)
        if value is None:
            continue
        bad = not math.isfinite(value) or abs(value) > FLOAT32_MAX or value < 0 or (positive and value == 0)
        if bad:
            what = "a finite number above 0" if positive else "a finite number of 0 or more"
            raise UsageError(f"{_flag(name)} {value}: use {what} (at most {FLOAT32_MAX:.3g}, what float32 holds)"
                             + (f"; {hint}" if hint else ""))


def seed_range(cfg, *names: str) -> None:
    """UsageError unless each seed is 0..SEED_MAX."""
    from hairdiff.core.errors import UsageError

    for name in names:
        value = getattr(cfg, name)
        if value is not None and not 0 <= value <= SEED_MAX:
            raise UsageError(f"{_flag(name)} {value}: use a seed from 0 to {SEED_MAX}")


def option_name(f: dataclasses.Field) -> str:
    """How the command line names a field: its flag, --field-name, or FIELD for an argument."""
    if f.metadata.get("argument"):
        return f.name.upper()
    return f.metadata.get("flag") or _flag(f.name)


def check_paths(cfg) -> None:
    """For every field declared with option(path=...): a local-only one given a URL is a UsageError (file:// is
    taken as its path, in place); a URL one needs its fsspec backend installed (UsageError naming the package)."""
    from hairdiff.core.urls import local_option, require_backend

    for f in dataclasses.fields(cfg):
        kind, value = f.metadata.get("path"), getattr(cfg, f.name)
        if kind is None or value is None:
            continue
        name = option_name(f)
        values = value if isinstance(value, list) else [value]
        if kind == LOCAL:
            values = [local_option(v, name) for v in values]
            setattr(cfg, f.name, values if isinstance(value, list) else values[0])
        else:
            for v in values:
                require_backend(v, name)


def to_dict(cfg) -> dict:
    """A config as plain JSON-able values (paths as strings)."""
    return {k: (str(v) if hasattr(v, "__fspath__") else v) for k, v in dataclasses.asdict(cfg).items()}
