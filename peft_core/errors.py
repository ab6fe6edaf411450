"""The project's exception types.

Every error a user can cause is a `StudioError`; its message names the bad value and what would be valid.
They subclass ValueError so callers that only know the standard library still catch them sensibly.
"""


class StudioError(ValueError):
    """Base class: a request was refused and nothing was changed."""


class InputError(StudioError):
    """A parameter (weight, steps, size, prompt, name ...) is out of its valid range."""


class HubError(StudioError):
    """A repo id, revision or file could not be resolved or downloaded."""


class AdapterError(StudioError):
    """An adapter file or adapter operation is invalid for the loaded base."""
