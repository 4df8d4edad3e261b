"""Paths and stores that must differ, checked against each other before a command starts (issue 18, case 7).

One check, `check_distinct`, for every command that is handed several paths: an output folder must not lie
inside a feature store (a `*.zarr` folder or a Zarr group, existing or where one will be made), and a store
that is scored as held-out data (`--val`) must hold none of the training stores' images. Locations are
compared by real path (links and `..` resolved), remote ones by URL.

Two stores share images when they share a photo among the images they hold done (extracted, so trained on
or scored): compared by the content digest of each image's file, which stores keep (`image_digests`), so
neither ids nor folders, masks, splits or data keys decide (a store of the same photos with re-saved masks
shares them; CelebAMask-HQ's `all` shares `test`'s; frames 5-6 do not share anything with a `--limit 4`
store of frames 1-4, whatever its list of ids). A store written before image digests is compared as before,
on its done images: the same data key (the same files), or one dataset root and split with ids in common.
Augmented views are images of theirs, not others.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hairdiff.core.errors import PathClashError
from hairdiff.core.urls import is_remote, local_path

SHOWN = 3  # ids named in a message


def location(path) -> str:
    """What two paths are compared by: the real path of a local one, the URL (no trailing /) of a remote one."""
    path = str(path)
    return path.rstrip("/") if is_remote(path) else os.path.realpath(local_path(path))


def same_location(a, b) -> bool:
    return location(a) == location(b)


def enclosing_store(path) -> str | None:
    """The feature store `path` is (or lies inside): the nearest of it and its parents that is named `*.zarr`
    or holds a `zarr.json`; None when there is none."""
    here = Path(location(path)) if not is_remote(str(path)) else None
    if here is None:
        parts = str(path).rstrip("/").split("/")
        hits = [i for i, p in enumerate(parts) if p.endswith(".zarr")]
        return "/".join(parts[:hits[-1] + 1]) if hits else None
    for p in (here, *here.parents):
        if p.name.endswith(".zarr") or (p / "zarr.json").is_file():
            return str(p)
    return None


def used_images(store) -> list[int]:
    """The images (0..N-1) of a store with at least one done sample (in any view): what training reads and
    scoring scores."""
    layout = store.layout
    return sorted({int(j) for j in layout.image_of(np.flatnonzero(store.done_mask()))}) if layout.num_images else []


def images(store) -> dict:
    """What identifies the images a store holds done: dataset, root (real path), split, data key, their ids and,
    where the store keeps them, their content digests."""
    used = used_images(store)
    ids = store.layout.image_ids(store.ids)
    digests = store.image_digests
    return {"url": store.url, "dataset": store.dataset, "root": location(store.root), "split": store.split,
            "data_key": store.data_key, "ids": [ids[j] for j in used],
            "digests": None if digests is None else [digests[j] for j in used]}


def shared_images(a: dict, b: dict) -> list[str]:
    """The ids of `a`'s images that `b` holds too ([] for none): by content digest when both records have them,
    else by id within one data key (the same files) or one dataset root and split."""
    if a.get("digests") is not None and b.get("digests") is not None:
        theirs = set(b["digests"])
        return [i for i, d in zip(a["ids"], a["digests"]) if d in theirs]
    same_key = bool(a.get("data_key")) and a.get("data_key") == b.get("data_key")
    if not same_key and (a["dataset"], a["root"], a["split"]) != (b["dataset"], b["root"], b["split"]):
        return []
    theirs = set(b["ids"])
    return [i for i in a["ids"] if i in theirs]


def _some(ids: list[str]) -> str:
    more = f" and {len(ids) - SHOWN} more" if len(ids) > SHOWN else ""
    return ", ".join(repr(i) for i in ids[:SHOWN]) + more


def _within(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def check_distinct(*, outputs: dict[str, object] | None = None, inputs: dict[str, list] | None = None,
                   training: list = (), held_out: dict[str, object] | None = None,
                   copy: tuple[str, str] | None = None) -> None:
    """PathClashError naming both sides of the first clash, before anything is written:
    outputs: {option: folder the command writes} -- none may lie inside a feature store, nor be one of
    inputs: {option: folders the command reads files from} (what it writes would be read as input next time);
    copy: (a store, where a copy of it goes) -- neither may hold the other;
    training: the stores trained on -- no two may share images (they would be trained on twice);
    held_out: {option: a store scored as held-out data} -- none may be a training store or share its images
    (a leak: the scores would measure fit, not generalisation)."""
    for option, folder in (outputs or {}).items():
        store = enclosing_store(folder)
        if store is not None:
            at = "is" if same_location(store, folder) else "lies inside"
            raise PathClashError(f"{option} {folder} {at} the feature store {store}: a store holds only what "
                                 f"`pipeline extract` writes; pass a folder outside it")
        for name, folders in (inputs or {}).items():
            for read in folders:
                if same_location(read, folder):
                    raise PathClashError(f"{option} {folder} is the folder {read} of {name}: what is written there "
                                         "would be read as input by the next run; pass another folder")
    if copy is not None:
        src, dest = (location(p) for p in copy)
        if _within(dest, src) or _within(src, dest):
            where = "is" if src == dest else ("lies inside" if _within(dest, src) else "holds")
            raise PathClashError(f"DEST {copy[1]} {where} the store {copy[0]}: a store cannot be copied into "
                                 "itself; pass a DEST outside it")
    trained = [images(s) for s in training]
    for k, a in enumerate(trained):
        for b in trained[:k]:
            shared = [] if not same_location(a["url"], b["url"]) else a["ids"]
            shared = shared or shared_images(a, b)
            if shared:
                what = "is" if same_location(a["url"], b["url"]) else f"shares {len(shared)} images with"
                raise PathClashError(f"--cache {a['url']} {what} --cache {b['url']} ({_some(shared)}): those images "
                                     "would be trained on twice; pass each store once (a store with views holds "
                                     "its images already)")
    for option, store in (held_out or {}).items():
        mine = images(store)
        for t in trained:
            if same_location(t["url"], mine["url"]):
                raise PathClashError(f"{option} {store.url} is the training store {t['url']}: validate on held-out "
                                     f"images (another split, or an --ids file of images not trained on)")
            shared = shared_images(mine, t)
            if shared:
                raise PathClashError(f"{option} {store.url} shares {len(shared)} of its {len(mine['ids'])} images "
                                     f"with the training store {t['url']} ({_some(shared)}): validate on held-out "
                                     f"images (another split, or an --ids file without them)")


def ids_overlap(first: tuple[str, list[str]], second: tuple[str, list[str]]) -> None:
    """PathClashError when two named id lists (e.g. reproduce's --ids-train and --ids-test) share ids."""
    (name_a, a), (name_b, b) = first, second
    theirs = set(b)
    shared = [i for i in a if i in theirs]
    if shared:
        raise PathClashError(f"{name_a} and {name_b} share {len(shared)} id(s) ({_some(shared)}): the test images "
                             f"must not be trained on; remove them from one of the files")
