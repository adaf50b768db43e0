"""One helper: show a stranger's text in a log line or an error message, safely."""

from __future__ import annotations


def escaped(text: str, limit: int | None = None) -> str:
    """``text`` as a single field: ASCII, backslash escapes for control characters, non-ASCII
    and spaces (so that a log line always splits into the same fields), at most ``limit``
    characters of the original followed by ``...`` when it was longer."""
    head = text if limit is None else text[:limit]
    shown = head.encode("unicode_escape").decode("ascii").replace(" ", "\\x20")
    return shown + ("..." if len(head) < len(text) else "")
