"""Text for the terminal: names from files, models and images with control characters
escaped, so that a name cannot move the cursor, recolour or retitle the user's terminal."""

from __future__ import annotations

import re

__all__ = ["terminal_safe"]

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls (ESC starts ANSI sequences; C1 0x9b is a one-byte CSI), DEL, line and
paragraph separators, and the bidirectional overrides that reorder what is shown."""


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named:
        return named
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: object, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\n``).

    Args:
        text: A name, a message, anything printable with ``str``.
        keep_newlines: Leave ``\\n`` as it is (multi-line text built by inspector whose
            names were escaped already).
    """
    value = str(text)
    if keep_newlines:
        return "\n".join(_UNSAFE.sub(_escape, line) for line in value.split("\n"))
    return _UNSAFE.sub(_escape, value)
