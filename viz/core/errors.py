"""Errors whose message is meant for the user (pages show them in a box, the CLI prints one line)."""


class CaptureError(ValueError):
    """Bad input for a capture."""


class CaptureTooLarge(CaptureError):
    """A capture request over the memory budget; the message says how to narrow it."""


class ModelLoadError(ValueError):
    """A model could not be loaded; the message says why and what to do instead."""
