"""The one place errors become a line and an exit code: `run_guarded` runs a command, and a user's mistake
(a `HairdiffError`, or an option the parser rejects) is printed as `error: ...` on stderr with its exit
status (2 wrong input, 1 a run stopped on bad input or a failed write, 3 divergence, 130 Ctrl-C); anything
else is a bug and keeps its traceback. The `pipeline` command and each DDP training process run under it.
"""
from __future__ import annotations

import sys
from typing import Callable

import typer

from hairdiff.core.errors import HairdiffError


def _click_errors():
    """The parser's own exception types (typer >= 0.20 carries its own copy of click)."""
    try:
        from typer._click import exceptions as e
    except ImportError:  # older typer: plain click
        from click import exceptions as e
    return e.UsageError, typer.Abort


def run_guarded(fn: Callable[[], object]) -> int:
    """Run `fn`; a user's mistake becomes one line on stderr and its exit status."""
    usage_error, abort = _click_errors()
    try:
        rc = fn()
    except HairdiffError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except usage_error as e:
        where = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) is not None else ""
        message = e.format_message().replace("Value error, ", "")  # the parser's validator prefix is noise
        print(f"error: {message}{where}", file=sys.stderr)
        return 2
    except (abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    return rc if isinstance(rc, int) else 0
