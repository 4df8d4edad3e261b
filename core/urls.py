"""Local paths and fsspec URLs (s3://, gs://, file://) behind one set of helpers."""
from __future__ import annotations


def is_remote(url) -> bool:
    """True for an object-store URL; plain paths and file:// URLs are local."""
    return "://" in str(url) and not str(url).startswith("file://")


def local_path(url) -> str:
    """A local path for a plain path or a file:// URL (remote URLs are returned unchanged)."""
    url = str(url)
    return url[len("file://"):] if url.startswith("file://") else url


def filesystem(url):
    """(fsspec filesystem, path) for any URL; credentials come from the environment, never from us."""
    import fsspec

    return fsspec.core.url_to_fs(local_path(url))
