"""Errors that report bad input, as opposed to bugs.

`trillion <command>` prints a `UserError` (and a missing or unreadable path) as one line naming what
was wrong; any other exception is a bug and keeps its traceback. Code that checks what a person
gave it (a config, a checkpoint, an option, a prompt) raises a `UserError` or a subclass of it.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input; the message names the file, field or option and what was expected.

    A ValueError, so callers that catch ValueError (the server's 400 answers, older code) still do.
    """


class UnknownName(UserError, KeyError):
    """A name looked up in a registry (a flavor, a shipped model) that is not there."""

    __str__ = ValueError.__str__  # the message as written, not KeyError's quoted repr
