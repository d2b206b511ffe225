"""The one error type checkpoint code raises, and the way it lists many names."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be read or written; the message names the file, tensor and expectation."""


def listing(names: Sequence[str], limit: int = 10) -> str:
    """'a, b, c' for a few names; the first `limit` then 'and N more' for many."""
    names = list(names)
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", and {len(names) - limit} more"
    return shown
