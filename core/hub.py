"""Reaching the Hugging Face Hub: whether it answers (checked before huggingface_hub would retry a dead
connection for ~25 s per file) and which of its exceptions mean "could not reach or find it"."""
from __future__ import annotations


def hub_reachable(timeout: float = 3.0) -> bool:
    """False in offline mode (HF_HUB_OFFLINE) or when the endpoint (HF_ENDPOINT) does not accept a connection."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_failures() -> tuple[type[BaseException], ...]:
    """The exceptions huggingface_hub raises for a repository or file it cannot reach or find: its HTTP errors
    (HfHubHTTPError, RepositoryNotFoundError, the HTTP client's connection errors), offline mode and missing cache
    entries (OSError subclasses), and invalid repository ids."""
    from huggingface_hub import errors

    return tuple(e for e in (getattr(errors, "HTTPError", None), errors.HfHubHTTPError, errors.HFValidationError,
                             OSError) if e is not None)


def endpoint() -> str:
    from huggingface_hub import constants

    return "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else constants.ENDPOINT
