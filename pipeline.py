"""`python pipeline.py ...` from a checkout, without installing: the same command as the `pipeline` script.

The folders beside this file are the `hairdiff` package once installed (pyproject.toml maps them there);
from a checkout this script maps them itself, then runs `hairdiff.cli.main`.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def use_checkout() -> None:
    """Make `import hairdiff` load the folders beside this file (for this script and bench/ scripts)."""
    # This checkout's code, even when another hairdiff is installed: that is what running its script means.
    here = Path(__file__).resolve().parent
    # The package's own module is the __init__.py beside this file (lazy names: loading it costs nothing).
    spec = importlib.util.spec_from_file_location("hairdiff", here / "__init__.py",
                                                  submodule_search_locations=[str(here)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["hairdiff"] = module
    spec.loader.exec_module(module)


if __name__ == "__main__":
    use_checkout()
    from hairdiff.cli import main

    main()
