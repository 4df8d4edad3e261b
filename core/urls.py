"""Local paths and fsspec URLs (s3://, gs://, file://) behind one set of helpers."""
from __future__ import annotations

import os


def is_remote(url) -> bool:
    """True for an object-store URL; plain paths and file:// URLs are local."""
    return "://" in str(url) and not str(url).startswith("file://")


def local_path(url) -> str:
    """A local path for a plain path or a file:// URL (remote URLs are returned unchanged)."""
    url = str(url)
    return url[len("file://"):] if url.startswith("file://") else url


def filesystem(url):
    """(fsspec filesystem, path) for any URL; credentials come from the environment, never from us.
    A local path is taken as it is: fsspec's URL parsing would read "::" in it as a chain of filesystems
    (a folder "a::b" would become "a")."""
    import fsspec

    if not is_remote(url):
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), os.path.abspath(local_path(url))
    return fsspec.core.url_to_fs(str(url))
