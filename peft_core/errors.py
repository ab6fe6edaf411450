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


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a library's exception, for a message of our own (the rest is a traceback's business)."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


def shown(value, limit: int = 80) -> str:
    """repr(value) cut to about `limit` characters, for a message (a stranger's value can be megabytes)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[: limit - 3] + "...")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
