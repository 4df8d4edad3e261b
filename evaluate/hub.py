"""The Hugging Face Hub and model folders on disk, as HairSegmenter meets them: a file of a Hub id (from the local
cache, else downloaded), huggingface_hub's failures as one HubError line, and where a model folder may be written.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from hairdiff.core.errors import HairdiffError, HubError, HubPushError, ModelFolderError, UsageError
from hairdiff.core.hub import endpoint, hub_failures, hub_reachable
from hairdiff.model.portable import CONFIG, WEIGHTS, read_model_record

FIX_ID = "check the id and the network, or pass a local model folder (`pipeline export RUN --out DIR`)"


def looks_like_path(name: str) -> bool:
    """A name no Hub id can be ("./m", "/x/m", "~/m", "a/b/c", "m/"): a folder that is not there."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1 or os.sep != "/" and (
        os.sep in name)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:200] if text else "") or type(e).__name__


def _unreachable(name: str, why: str) -> HubError:
    here = "" if Path(name).exists() else f"; there is no folder {name} here either"
    return HubError(f"{name}: cannot get it from the Hugging Face Hub ({endpoint()}: {why}){here}: {FIX_ID}")


def hub_file(repo_id: str, filename: str, revision=None, cache_dir=None, token=None, local_files_only: bool = False,
             force_download: bool = False) -> Path:
    """A file of a Hub model repository: from the local cache when it is there (and not force_download), else
    downloaded. A Hub that cannot be reached is found before huggingface_hub would retry it for ~25 s."""
    from huggingface_hub import hf_hub_download

    kw = {"revision": revision, "cache_dir": cache_dir, "token": token}
    if not force_download:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=True, **kw))
        except hub_failures():
            pass  # not cached (or an id huggingface_hub refuses: said below, by the download)
    if local_files_only:
        raise _unreachable(repo_id, f"{filename} is not in the local cache and local_files_only is set")
    if not hub_reachable():
        raise _unreachable(repo_id, "it does not answer")
    with failures_named(repo_id):
        return Path(hf_hub_download(repo_id, filename, force_download=force_download, **kw))


@contextmanager
def failures_named(name: str, local: bool = False):
    """huggingface_hub's failures to reach or find `name` (not hairdiff's own errors) as one HubError line."""
    if local:
        yield
        return
    try:
        yield
    except HairdiffError:
        raise
    except hub_failures() as e:
        raise _unreachable(name, _first_line(e)) from None


@contextmanager
def push_failures_named(repo_id: str):
    """Publishing failures (no network, offline mode, no token, refused) as one HubPushError line."""
    try:
        yield
    except HairdiffError:
        raise
    except hub_failures() as e:
        raise HubPushError(f"cannot push to the Hugging Face Hub repository {repo_id} ({endpoint()}: "
                           f"{type(e).__name__}: {_first_line(e)}): nothing was published; check the network and "
                           "your token (`hf auth login` or HF_TOKEN), then push again") from None


def check_model_out(folder: Path) -> None:
    """Where a model folder may be written: a new or empty folder, or one that holds a hairdiff model (replaced).
    Another model's files (a config.json not ours, weights without our config.json) are never overwritten."""
    from hairdiff.cache.distinct import check_distinct
    from hairdiff.core.paths import check_output_dir

    folder = Path(folder)
    check_output_dir(folder, "--out")
    check_distinct(outputs={"--out": folder})
    if (folder / CONFIG).exists():
        try:
            read_model_record(folder)
        except ModelFolderError:
            raise UsageError(f"--out {folder}: holds a {CONFIG} that does not read as a hairdiff model's: pass a new "
                             "or empty folder (a hairdiff model folder is replaced), or delete that file") from None
    elif (folder / WEIGHTS).exists():
        raise UsageError(f"--out {folder}: holds {WEIGHTS} without a hairdiff {CONFIG}: pass a new or empty folder")
