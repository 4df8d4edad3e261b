"""The `pipeline` command: mounts each stage's command; cli/guard.py turns errors into exits.

A user's mistake (a `HairdiffError`, or an option the parser rejects) is one line on stderr and exit
status 2 (1 for a run stopped on bad input or a failed write, 3 for divergence); anything else is a bug
and keeps its traceback. Stage modules are imported only when their command runs, so `--help` is fast.
"""
from __future__ import annotations

import sys
from typing import Annotated

import typer

from hairdiff.cli.config_command import config_command
from hairdiff.cli.guard import run_guarded

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
    from hairdiff.cli.compare import compare
    from hairdiff.cli.demo import demo
    from hairdiff.cli.evaluate import evaluate, predict
    from hairdiff.cli.export import export
    from hairdiff.cli.extract import extract
    from hairdiff.cli.reproduce import reproduce
    from hairdiff.cli.serve import serve
    from hairdiff.cli.sweep import sweep
    from hairdiff.cli.train import train
    from hairdiff.demo.run import DemoConfig
    from hairdiff.evaluate.config import CompareConfig, EvalConfig, ExportConfig, PredictConfig, ServeConfig
    from hairdiff.experiments.config import ReproduceConfig, SweepConfig
    from hairdiff.extract.config import ExtractConfig
    from hairdiff.train.config import TrainConfig

    def train_extra(progress: Annotated[bool, typer.Option(help="show a progress bar on stderr")] = True):
        pass

    app.command("extract")(config_command(ExtractConfig, extract))
    app.command("train")(config_command(TrainConfig, train, extra=train_extra))
    app.command("eval")(config_command(EvalConfig, evaluate))
    app.command("predict")(config_command(PredictConfig, predict))
    app.command("export")(config_command(ExportConfig, export))
    app.command("serve")(config_command(ServeConfig, serve))
    app.command("compare")(config_command(CompareConfig, compare))
    app.command("reproduce")(config_command(ReproduceConfig, reproduce))
    app.command("sweep")(config_command(SweepConfig, sweep))
    app.command("demo")(config_command(DemoConfig, demo))
    app.add_typer(cache_app, name="cache")


_mount()


def main(argv: list[str] | None = None) -> None:
    """The `pipeline` console script."""
    from hairdiff.cli.sweep import spread_values

    argv = spread_values(list(sys.argv[1:] if argv is None else argv))  # `--prompts A B`: several values
    # prog_name: hints read `pipeline extract --help` however it was started (python -m, tests, the script)
    sys.exit(run_guarded(lambda: app(args=argv, prog_name="pipeline", standalone_mode=False)))
