"""hairdiff command line: `pipeline extract | train | eval | predict | demo | cache ...`.

Each command lives in its stage's package; this module only mounts them, so `pipeline --help` stays fast.
"""
from __future__ import annotations

import sys

import typer

from cache.commands import app as cache_app
from demo.commands import demo_command
from evaluate.commands import eval_command, predict_command
from extract.commands import extract_command
from train.commands import train_command

app = typer.Typer(
    help="Fine-grained hair segmentation from frozen Stable Diffusion features (extract -> cache -> train -> eval).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("extract")(extract_command)
app.command("train")(train_command)
app.command("eval")(eval_command)
app.command("predict")(predict_command)
app.command("demo")(demo_command)
app.add_typer(cache_app, name="cache")


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input the user can fix: shown as one clear line, not a traceback."""
    from cache.errors import CacheError
    from extract.errors import ModelNotFoundError
    from extract.readers.errors import BadSampleError, DatasetError

    return (CacheError, ModelNotFoundError, BadSampleError, DatasetError)


def main() -> None:
    try:
        app()
    except Exception as e:
        if isinstance(e, _user_errors()):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
