"""Errors about the backbone model."""


class ModelNotFoundError(Exception):
    """The model could not be found or loaded; the message is one line saying how to pass a local path."""
