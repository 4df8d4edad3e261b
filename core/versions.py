"""Versions of hairdiff and the libraries whose behaviour a result depends on (recorded in stores and reports)."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

LIBRARIES = ("torch", "diffusers", "transformers", "zarr", "numcodecs", "numpy")


def hairdiff_version() -> str:
    try:
        return version("hairdiff")
    except PackageNotFoundError:
        return "source"  # run from a checkout without installing


def versions(libraries=LIBRARIES) -> dict:
    out = {"hairdiff": hairdiff_version()}
    for name in libraries:
        try:
            out[name] = version(name)
        except PackageNotFoundError:  # an optional library not installed: nothing to record
            pass
    return out
