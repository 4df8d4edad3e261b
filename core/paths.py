"""Local folders of the tool itself (built models, memos, reports), never on a remote cache root.

The feature-store root may be a URL (`HAIRDIFF_CACHE=s3://...`); what must be a local folder has its own
setting and falls back to the local cache folder.
"""
from __future__ import annotations

import os
from pathlib import Path

from hairdiff.core.urls import is_remote, local_path


def local_cache_dir() -> Path:
    """$HAIRDIFF_CACHE when it is a local folder, else $XDG_CACHE_HOME/hairdiff (~/.cache/hairdiff)."""
    env = os.environ.get("HAIRDIFF_CACHE")
    if env and not is_remote(env):
        return Path(local_path(env))
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hairdiff"


def models_dir() -> Path:
    """Where the built-in `tiny` model and weight content hashes live: $HAIRDIFF_MODELS, else <local cache>/models."""
    env = os.environ.get("HAIRDIFF_MODELS")
    return Path(env) if env else local_cache_dir() / "models"


def reports_dir() -> Path:
    """Run reports are for the person who ran the command: always local."""
    return local_cache_dir() / "reports"
