"""Local folders of the tool itself (built models, memos, reports), never on a remote cache root, and the
checks every folder a user names gets before anything is written there.

The feature-store root may be a URL (`HAIRDIFF_CACHE=s3://...`); what must be a local folder has its own
setting and falls back to the local cache folder. Paths are paths: nothing here (or anywhere a user's path
goes) treats one as a glob pattern, so spaces, [brackets], * and ? are plain characters.
"""
from __future__ import annotations

import os
from pathlib import Path

from hairdiff.core.urls import is_remote, local_path


def _blocking_file(path: Path) -> Path | None:
    """The file (not folder) at `path` or at one of its parents, which keeps `path` from being a folder."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def _usable_folder(path: Path) -> bool:
    """A folder, or a path under which one can be made (no file in the way)."""
    return _blocking_file(path) is None


def local_cache_dir() -> Path:
    """$HAIRDIFF_CACHE when it is a local folder (or can become one), else $XDG_CACHE_HOME/hairdiff
    (~/.cache/hairdiff). A HAIRDIFF_CACHE that is a file is not used for this: a command given --cache-root
    never depends on it (used as the store root it is refused, see extract's check_cache_root)."""
    env = os.environ.get("HAIRDIFF_CACHE")
    if env and not is_remote(env) and _usable_folder(Path(local_path(env))):
        return Path(local_path(env))
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hairdiff"


def models_dir() -> Path:
    """Where the built-in `tiny` model and weight content hashes live: $HAIRDIFF_MODELS, else <local cache>/models.
    UsageError when $HAIRDIFF_MODELS names a file (or a path under one)."""
    env = os.environ.get("HAIRDIFF_MODELS")
    if not env:
        return local_cache_dir() / "models"
    from hairdiff.core.urls import local_option

    env = local_option(env, "HAIRDIFF_MODELS", "set it to a local folder, or unset it")  # loaded from local files
    blocking = _blocking_file(Path(env))
    if blocking is not None:
        from hairdiff.core.errors import UsageError

        raise UsageError(f"HAIRDIFF_MODELS={env}: {blocking} is a file, not a folder: point HAIRDIFF_MODELS at a "
                         "folder, or unset it")
    return Path(env)


def reports_dir() -> Path:
    """Run reports are for the person who ran the command: always local."""
    return local_cache_dir() / "reports"


def check_output_dir(path, option: str) -> None:
    """UsageError unless `path` is a folder or can be made one: a file there (or at one of its parents) and a
    read-only place are named before anything is loaded or written."""
    from hairdiff.core.errors import UsageError

    path = Path(path)
    blocking = _blocking_file(path)
    if blocking is not None:
        at = "" if blocking == path else f" ({blocking} is a file)"
        raise UsageError(f"{option} {path}: not a folder{at}: pass a folder, or a path where one can be made")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: cannot write in {existing} (read-only or no permission): pass a "
                         "writable folder")
