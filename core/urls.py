"""Local paths and fsspec URLs (s3://, gs://, file://) behind one set of helpers.

Which options take URLs is said once, where the option is declared (core/fields.option's `path`): feature
stores and cache roots may be URLs; everything else (output folders, dataset roots, ids files, run folders,
reports) is a local path, and a URL given there is refused in one line rather than made into a local folder
named `s3:`. A URL whose fsspec backend is not installed is one line naming the package to install.
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager

# How the options' help says it, so every option says it alike.
LOCAL_ONLY = "a local path, not a URL"
URL_OK = "a local path or a URL: s3://, gs://, file:// (fsspec)"


def is_remote(url) -> bool:
    """True for an object-store URL; plain paths and file:// URLs are local."""
    return "://" in str(url) and not str(url).startswith("file://")


def local_path(url) -> str:
    """A local path for a plain path or a file:// URL (remote URLs are returned unchanged)."""
    url = str(url)
    return url[len("file://"):] if url.startswith("file://") else url


def protocol(url) -> str:
    return str(url).split("://", 1)[0]


def require_backend(url, option: str | None = None) -> None:
    """UsageError unless fsspec can open `url`'s protocol here: a known protocol whose package is not installed
    is named with the package to install; an unknown one is named too. Local paths need nothing."""
    if not is_remote(url):
        return
    import fsspec
    from fsspec.registry import known_implementations

    from hairdiff.core.errors import UsageError

    name = protocol(url)
    what = f"{option} {url}" if option else str(url)
    try:
        fsspec.get_filesystem_class(name)
    except ImportError as e:
        known = known_implementations.get(name, {})
        package = known.get("class", "").split(".")[0]
        need = (f"the package {package}, which is not installed: `pip install {package}`"
                if package and package != "fsspec" else f"packages that are not installed ({known.get('err', e)})")
        raise UsageError(f"{what}: {name}:// URLs need {need}; or pass a local path") from None
    except ValueError:
        raise UsageError(f"{what}: {name}:// is not a protocol fsspec knows: use a local path or an s3://, gs:// "
                         "or file:// URL") from None


OUTPUT_FIX = "pass a local path, and copy the result with `pipeline cache push` or your storage's own tools"


def local_option(value, option: str, fix: str = OUTPUT_FIX):
    """The local path an option that takes no URL was given: a file:// URL becomes its path, any other URL is a
    UsageError naming the option and `fix` (it would otherwise become a local folder named after the protocol)."""
    if value is None or "://" not in str(value):
        return value
    if str(value).startswith("file://"):
        return local_path(value)
    from hairdiff.core.errors import UsageError

    raise UsageError(f"{option} {value}: {option} takes a local path, not a URL (only feature stores and cache roots "
                     f"may be URLs): {fix}")


LOCAL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}  # a local disk full, over quota, or read-only


@contextmanager
def remote_access(url, doing: str):
    """Errors of an object store's client while `doing` something with `url` (no credentials, no network, access
    denied: botocore's, aiohttp's ... exceptions) become one StoreAccessError naming the URL; our own errors, a
    full or read-only local disk (written to in the same copy) and everything on local paths pass through
    unchanged."""
    from hairdiff.core.errors import HairdiffError, StoreAccessError

    if not is_remote(url):
        yield
        return
    try:
        yield
    except (HairdiffError, FileNotFoundError):  # ours, and absence (which callers tell apart)
        raise
    except Exception as e:
        if isinstance(e, OSError) and e.errno in LOCAL_DISK:  # this machine's disk (a pull into a full one)
            raise
        raise StoreAccessError(f"cannot {doing} {url} ({type(e).__name__}: {str(e)[:160]}): check the URL and that "
                               "your credentials (the usual environment or config files) allow it") from None


def filesystem(url):
    """(fsspec filesystem, path) for any URL; credentials come from the environment, never from us.
    A local path is taken as it is: fsspec's URL parsing would read "::" in it as a chain of filesystems
    (a folder "a::b" would become "a")."""
    import fsspec

    if not is_remote(url):
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), os.path.abspath(local_path(url))
    require_backend(url)
    return fsspec.core.url_to_fs(str(url))
