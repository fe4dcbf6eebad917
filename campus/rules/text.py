"""Required text: a name that shows nothing is no name.

Every place that requires a name (a person's names, a planning's, a base's, a
template's, a delegation's, a mail account's, an annex's…) refuses text made
only of characters that show nothing: white space of every kind (categories
Zs, Zl, Zp), control characters (Cc), format characters (Cf: the zero-width
space U+200B, joiners U+200C/U+200D, the word joiner U+2060, the byte-order mark
U+FEFF, bidirectional marks…), lone surrogates, and the few letters and
symbols Unicode itself declares invisible
(Hangul fillers, the braille blank, variation selectors, the combining grapheme
joiner). Such characters are also trimmed from both ends of a name; inside a
name they are kept.

Use :func:`required_text` in the service layer (422 naming the field) and
:data:`VISIBLE` in pydantic declarations (the same rule, the same message).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, StringConstraints

from campus.errors import Invalid

BLANK_MESSAGE = "must not be empty or made only of invisible characters (spaces, zero-width or control characters)"

INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs"})
# Letters, symbols and marks that show nothing (Unicode's Default_Ignorable_Code_Point outside Cf,
# and the blank glyphs used to fake an empty name).
INVISIBLE_CHARACTERS = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160"  # Hangul choseong / jungseong fillers
    "\u17b4\u17b5"  # Khmer inherent vowels
    "\u180b\u180c\u180d\u180f"  # Mongolian free variation selectors
    "\u2800"  # braille pattern blank
    "\u3164"  # Hangul filler
    "\uffa0"  # halfwidth Hangul filler
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))  # variation selectors
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))  # variation selectors supplement
)


def is_invisible(char: str) -> bool:
    return char in INVISIBLE_CHARACTERS or unicodedata.category(char) in INVISIBLE_CATEGORIES


def visible_strip(value: str) -> str:
    """`value` without the invisible characters at either end."""
    start, end = 0, len(value)
    while start < end and is_invisible(value[start]):
        start += 1
    while end > start and is_invisible(value[end - 1]):
        end -= 1
    return value[start:end]


def is_blank(value: Any) -> bool:
    """True for anything that is not a string showing at least one visible character."""
    return not isinstance(value, str) or not visible_strip(value)


def required_text(field: str, value: Any, max_length: int) -> str:
    """`value` trimmed of invisible characters at both ends; 422 naming `field` if nothing visible is
    left or it is longer than `max_length` characters."""
    text = visible_strip(value) if isinstance(value, str) else ""
    if not text:
        raise Invalid.field(field, BLANK_MESSAGE)
    if len(text) > max_length:
        raise Invalid.field(field, f"must be at most {max_length} characters")
    return text


def _visible(value: str) -> str:
    text = visible_strip(value)
    if not text:
        raise ValueError(BLANK_MESSAGE)
    return text


# For pydantic declarations: ``Annotated[str, StringConstraints(...), VISIBLE]``.
VISIBLE = AfterValidator(_visible)

__all__ = ["BLANK_MESSAGE", "VISIBLE", "is_blank", "is_invisible", "required_text", "visible_strip"]

# Required text of each length the API and the record kinds use.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), VISIBLE]
Short = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), VISIBLE]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000), VISIBLE]
