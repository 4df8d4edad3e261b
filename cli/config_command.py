"""A typer command whose options are the fields of a config dataclass, so no option is written twice.

The field's metadata (`hairdiff.core.fields.option`) holds its help and any typer settings; the command
builds the dataclass from the parsed options (which validates it) and hands it whole to `run`.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Annotated, Callable

import typer


def _parameter(f: dataclasses.Field, hint) -> inspect.Parameter:
    meta = f.metadata
    names = [meta["flag"]] if meta.get("flag") else []
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = inspect.Parameter.empty  # a required option
    make = typer.Argument if meta.get("argument") else typer.Option
    opt = make(*names, help=meta.get("help", ""), show_default=default is not None, **meta.get("typer", {}))
    return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[hint, opt])


def _reflow(doc: str | None) -> str | None:
    """Join the lines of each prose paragraph: the help renderer keeps a docstring's line breaks as they are.
    Indented paragraphs (examples) stay as written."""
    if not doc:
        return doc
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(line.strip() for line in p.splitlines())
                       for p in paragraphs)


def config_command(config_cls, run: Callable, extra: Callable | None = None) -> Callable:
    """A function for `app.command()`: the options of `config_cls`, then those of `extra` (a function whose
    keyword parameters are typer options that are not part of the config). Calls run(config, **extra_values)."""
    hints = typing.get_type_hints(config_cls, include_extras=True)
    cfg_fields = [f for f in dataclasses.fields(config_cls) if f.init and f.metadata.get("cli", True)]
    params = [_parameter(f, hints[f.name]) for f in cfg_fields]
    # Required options first: Python signatures want parameters without defaults before the others.
    params.sort(key=lambda p: p.default is not inspect.Parameter.empty)
    names = {f.name for f in cfg_fields}
    if extra is not None:
        extra_hints = typing.get_type_hints(extra, include_extras=True)
        for p in inspect.signature(extra).parameters.values():
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=extra_hints[p.name]))

    @functools.wraps(run)
    def command(**values):
        cfg = config_cls(**{k: v for k, v in values.items() if k in names})
        return run(cfg, **{k: v for k, v in values.items() if k not in names})

    command.__doc__ = _reflow(run.__doc__)
    command.__signature__ = inspect.Signature(params)
    command.__annotations__ = {p.name: p.annotation for p in params}
    del command.__wrapped__  # typer must read our signature, not run's
    return command
