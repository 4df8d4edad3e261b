"""The dataset registry: the one owner of dataset names and of the splits the paper trains and tests on.

A dataset is a reader module in this folder named for the dataset (figaro.py is `--dataset figaro`) that
declares `DATASET = Dataset(...)`; adding one touches that module and nothing else: the command line's
choices, `pipeline reproduce`'s datasets and the recipe's splits all come from here. Names are found by
listing this folder, so `pipeline --help` imports no reader (a reader module is imported when its dataset
is used). Code elsewhere (a plugin, a test) adds a dataset with `register(Dataset(...))`.
"""
from __future__ import annotations

import pkgutil
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Callable

from hairdiff.core.errors import DatasetError

# The modules of this folder that are not datasets: what every reader shares.
_SHARED = frozenset({"base", "ids", "registry"})
_REGISTERED: dict[str, "Dataset"] = {}


@dataclass(frozen=True)
class Dataset:
    """name: --dataset; reader(**options): an object with splits(root), list_samples(root, split, ids) and
    load(ref) (base.py's SampleRef and LoadedSample); layout: the published layout, one line; splits: the
    splits it offers, for --split's help; paper_splits: (train, test) that `pipeline reproduce` trains and
    scores on, None for a dataset that is not one of the paper's."""

    name: str
    reader: Callable
    layout: str
    splits: str
    paper_splits: tuple[str, str] | None = None


def register(dataset: Dataset) -> Dataset:
    """Add a dataset defined outside this folder; its name must be new."""
    if dataset.name in names():
        raise ValueError(f"dataset {dataset.name!r} is registered already")
    _REGISTERED[dataset.name] = dataset
    return dataset


def unregister(name: str) -> None:
    """Remove a dataset added with `register` (a plugin unloaded, a test done)."""
    _REGISTERED.pop(name, None)


def names() -> tuple[str, ...]:
    """Every dataset's name, those of this folder first (sorted), then those registered."""
    here = [m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
            if m.name not in _SHARED and not m.name.startswith("_")]
    return tuple(sorted(here)) + tuple(n for n in _REGISTERED if n not in here)


def paper_datasets() -> tuple[str, ...]:
    """The datasets `pipeline reproduce` and `pipeline sweep` take: those with the paper's splits."""
    return tuple(n for n in names() if dataset(n).paper_splits is not None)


def dataset(name: str) -> Dataset:
    """The dataset called `name`: DatasetError naming the choices for an unknown one."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in names():
        raise DatasetError(f"unknown dataset {name!r}. Fix: use one of {', '.join(names())}")
    found = getattr(import_module(f"{__package__}.{name}"), "DATASET", None)
    if not isinstance(found, Dataset) or found.name != name:
        raise DatasetError(f"{__package__}.{name} declares no DATASET = Dataset({name!r}, ...): every reader "
                           "module of extract/readers/ declares its dataset")
    return found


def get_reader(name: str, **options):
    """A reader instance; options go to its constructor (only `folder` has one: ignore_255)."""
    return dataset(name).reader(**options)


def default_split(reader, root) -> str:
    """The split to use when --split is not given: every sample ('all') where the dataset has that, the
    paper's training split of a dataset published in splits (Figaro's Training), else the only split there is."""
    found = reader.splits(root)
    paper = dataset(reader.name).paper_splits
    for choice in ("all", paper[0] if paper else None):
        if choice in found:
            return choice
    if len(found) == 1:
        return found[0]
    if not found:
        reader.list_samples(root, "all")  # raises the reader's own error naming the root and the layout
    raise DatasetError(f"--split is needed: {reader.name} under {root} has the splits {', '.join(found)}; "
                       f"pass one with --split")
