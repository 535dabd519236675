"""Whether text shows anything to a reader. A caption, or a note explaining a review decision, made
only of spaces, zero-width and format characters (U+200B, joiners, U+2060, the BOM, bidi controls),
combining marks or letters fonts draw blank looks empty on every page and says nothing."""

from __future__ import annotations

import unicodedata

# Letters and symbols that fonts draw blank (Hangul fillers, the Braille blank): with the format
# characters (category Cf), controls (Cc), separators (Z*) and marks with nothing to mark (M*),
# text made of them alone shows nothing.
BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def _shows(text: str, categories: str) -> bool:
    return any(unicodedata.category(ch)[0] in categories and ch not in BLANK_LETTERS for ch in text)


def has_visible_text(text: str) -> bool:
    """At least one letter, digit, punctuation mark or symbol that shows (a caption of one emoji
    describes an image)."""
    return _shows(text, "LNPS")


def has_words(text: str) -> bool:
    """At least one letter or digit that shows: what a written explanation needs (dots or a
    thumbs-up explain no decision)."""
    return _shows(text, "LN")
