"""The one error type of every codec (DESIGN rule 1)."""
from __future__ import annotations


class DecodeError(ValueError):
    """A message that cannot be read.  ``reason`` is a short stable token
    (usable as a counter label), ``offset`` the byte where reading failed."""

    def __init__(self, reason: str, offset: int, detail: str = ""):
        self.reason = reason
        self.offset = offset
        super().__init__(f"{reason} at byte {offset}" + (f": {detail}" if detail else ""))
