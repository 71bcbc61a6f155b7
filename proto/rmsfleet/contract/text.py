"""Characters an identifier may not hold, and how text from outside is printed.

Control characters (Unicode category Cc: NUL, ESC, line breaks, C1 controls), format characters
(Cf: U+202E RIGHT-TO-LEFT OVERRIDE, zero-width spaces, BOM), surrogates (Cs) and the line and
paragraph separators (Zl, Zp) have no place in a host id, a forest, a cluster URL or a filter:
they forge log lines, reorder what a terminal shows (a host named "\u202egnp.exe") or drive a
terminal (ESC sequences). They are refused at the edge; `escape` prints any that an older
database still holds, so a table or a log line shows them instead of obeying them.

Pure code, shared by agent and collector.
"""

from __future__ import annotations

import unicodedata

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def unsafe_character(value: str) -> tuple[int, str] | None:
    """The position and the first character of `value` in UNSAFE_CATEGORIES, or None.

    str.isprintable() runs in C and is True for nearly every identifier; only text it refuses
    (which includes harmless non-ASCII spaces and private-use characters) is looked at per
    character."""
    if value.isprintable():
        return None
    for position, char in enumerate(value):
        if unicodedata.category(char) in UNSAFE_CATEGORIES:
            return position, char
    return None


def describe_character(char: str) -> str:
    """`U+202E RIGHT-TO-LEFT OVERRIDE`: a character named without printing it."""
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}{' ' + name if name else ''}"


def unsafe_reason(value: str) -> str | None:
    """Why `value` cannot be an identifier, naming the character and where it is; or None."""
    found = unsafe_character(value)
    if found is None:
        return None
    position, char = found
    return f"no control characters or format characters (got {describe_character(char)} at position {position})"


def escape(value: str) -> str:
    """`value` with every unsafe character written as a Python escape (`\\x1b`, `\\u202e`), so
    printing it cannot break a line, move the cursor or reverse the text that follows."""
    if unsafe_character(value) is None:
        return value
    return "".join(
        char.encode("unicode_escape").decode("ascii") if unicodedata.category(char) in UNSAFE_CATEGORIES else char
        for char in value
    )


# How much of an identifier a reply or a log line names: a reply must not grow with the input
# (gRPC percent-encodes the status message, and a client refuses trailers over 8 KiB).
SHOWN_LENGTH = 64


def shown(value: str, limit: int = SHOWN_LENGTH) -> str:
    """`value` as a message names it: whole up to `limit` characters, else its first 40 and its
    length, so a 255-character host id of four-byte characters cannot blow up a reply."""
    if len(value) <= limit:
        return value
    return f"{value[:40]}... ({len(value)} characters)"
