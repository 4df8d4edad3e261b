"""The `pipeline` command: mounts each stage's command and is the one place that turns errors into exits.

A user's mistake (a `HairdiffError`, or an option the parser rejects) is one line on stderr and exit
status 2 (1 for a run stopped on bad input or a failed write, 3 for divergence); anything else is a bug
and keeps its traceback. Stage modules are imported only when their command runs, so `--help` is fast.
"""
from __future__ import annotations

import sys
from typing import Annotated, Callable

import typer

from hairdiff.cli.config_command import config_command

app = typer.Typer(
    help="Fine-grained hair segmentation from frozen Stable Diffusion features (extract -> cache -> train -> eval).",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        from hairdiff.core.versions import hairdiff_version

        print(f"hairdiff {hairdiff_version()}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    pass


def _mount() -> None:
    from hairdiff.cli.cache import app as cache_app
    from hairdiff.cli.demo import demo
    from hairdiff.cli.evaluate import evaluate, predict
    from hairdiff.cli.extract import extract
    from hairdiff.cli.reproduce import reproduce
    from hairdiff.cli.sweep import sweep
    from hairdiff.cli.train import train
    from hairdiff.demo.run import DemoConfig
    from hairdiff.evaluate.config import EvalConfig, PredictConfig
    from hairdiff.evaluate.reproduce import ReproduceConfig
    from hairdiff.evaluate.sweep import SweepConfig
    from hairdiff.extract.config import ExtractConfig
    from hairdiff.train.config import TrainConfig

    def train_extra(progress: Annotated[bool, typer.Option(help="show a progress bar on stderr")] = True):
        pass

    app.command("extract")(config_command(ExtractConfig, extract))
    app.command("train")(config_command(TrainConfig, train, extra=train_extra))
    app.command("eval")(config_command(EvalConfig, evaluate))
    app.command("predict")(config_command(PredictConfig, predict))
    app.command("reproduce")(config_command(ReproduceConfig, reproduce))
    app.command("sweep")(config_command(SweepConfig, sweep))
    app.command("demo")(config_command(DemoConfig, demo))
    app.add_typer(cache_app, name="cache")


_mount()


def _click_errors():
    """The parser's own exception types (typer >= 0.20 carries its own copy of click)."""
    try:
        from typer._click import exceptions as e
    except ImportError:  # older typer: plain click
        from click import exceptions as e
    return e.UsageError, typer.Abort


def run_guarded(fn: Callable[[], object]) -> int:
    """Run `fn`; a user's mistake becomes one line on stderr and its exit status."""
    from hairdiff.core.errors import HairdiffError

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


def main(argv: list[str] | None = None) -> None:
    """The `pipeline` console script."""
    from hairdiff.cli.sweep import spread_values

    argv = spread_values(list(sys.argv[1:] if argv is None else argv))  # `--prompts A B`: several values
    # prog_name: hints read `pipeline extract --help` however it was started (python -m, tests, the script)
    sys.exit(run_guarded(lambda: app(args=argv, prog_name="pipeline", standalone_mode=False)))
