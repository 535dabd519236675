"""Personal data written so the digit patterns miss it: numbers spoken in words, keycaps or mixed
with look-alike letters ("oh seven seven double oh, nine hundred, one two three"), identity numbers
by their label ("passport no. C01X00T47", "national insurance number QQ 12 34 56 C"), and street
addresses ("22 Baker Road, Leeds LS6 2AB").

A red team found each of these allowed while the same data in plain digits was refused. Each
detector returns spans of the caption (NFKC-normalised, as the usage policy reads it for personal
data); the usage policy turns them into decisions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words for digits, and how people say repeated ones ("double oh", "triple five").
DIGIT_WORDS = {"zero": "0", "oh": "0", "nought": "0", "nil": "0", "one": "1", "two": "2", "three": "3", "four": "4",
               "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9"}
REPEATS = {"double": 2, "triple": 3}
# Letters that stand for digits inside a group that has real digits too ("o77oo", "9oo", "I23").
DIGIT_LOOKALIKES = str.maketrans({"o": "0", "O": "0", "l": "1", "I": "1", "i": "1", "|": "1"})
_LOOKALIKE_GROUP = re.compile(r"[0-9oOlIi|]*[0-9][0-9oOlIi|]*")
# Keycap digits ("0️⃣") are the digit, the emoji selector and the enclosing keycap.
_KEYCAP_MARKS = re.compile("[\ufe0f\u20e3]")
# One piece of a spoken number: a digit group, a digit word, "hundred", a repeat, or a separator.
_PIECE = re.compile(r"[oOlIi|]*\d[\doOlIi|]*|[A-Za-z|]+")
_SEPARATORS = re.compile(r"[\s,.\-/()]*")


@dataclass(frozen=True)
class SpokenNumber:
    start: int
    end: int
    digits: str
    spoken: bool  # at least one digit was a word, a keycap or a look-alike letter


def spoken_numbers(text: str) -> list[SpokenNumber]:
    """Runs of digits said in any mix of digit groups, digit words, "double"/"triple", "hundred",
    keycaps and look-alike letters, with spaces, commas, dots and hyphens between; each with its
    digits. Only runs with something spoken in them are returned: plain digit runs are the digit
    patterns' business."""
    clean = _KEYCAP_MARKS.sub(" ", text)  # one space per mark: spans stay the caption's
    found: list[SpokenNumber] = []
    position = 0
    while position < len(clean):
        run = _run_at(clean, position)
        if run is None:
            position += 1
            continue
        start, end, digits, spoken = run
        spoken = spoken or bool(_KEYCAP_MARKS.search(text, start, end))  # keycaps are a disguise too
        if spoken and digits:
            found.append(SpokenNumber(start, end, digits, spoken))
        position = end
    return found


def counting(digits: str) -> bool:
    """Whether spoken digits count up or down one by one ("nine eight seven ... one" in a countdown):
    counting, not a number to call."""
    steps = {int(b) - int(a) for a, b in zip(digits, digits[1:], strict=False)}
    return steps in ({1}, {-1})


def _run_at(text: str, position: int) -> tuple[int, int, str, bool] | None:
    """The spoken number starting at ``position`` (on a word boundary), if any."""
    if position and text[position - 1].isalnum():
        return None
    digits, spoken, end, pending_repeat = "", False, position, 0
    cursor = position
    while True:
        match = _PIECE.match(text, cursor)
        if match is None:
            break
        word = match.group()
        lower = word.lower()
        if match.end() < len(text) and text[match.end()].isalnum():
            break
        if lower in REPEATS and not pending_repeat:
            pending_repeat = REPEATS[lower]
        elif lower in DIGIT_WORDS or (lower in ("o", "oh") and digits):
            digits += DIGIT_WORDS.get(lower, "0") * (pending_repeat or 1)
            spoken, pending_repeat = True, 0
        elif lower == "hundred" and digits and not pending_repeat:
            digits += "00"
            spoken = True
        elif any(c.isdigit() for c in word) and _LOOKALIKE_GROUP.fullmatch(word):
            converted = word.translate(DIGIT_LOOKALIKES)
            spoken = spoken or converted != word
            if pending_repeat and len(converted) == 1:
                converted *= pending_repeat
            digits += converted
            pending_repeat = 0
        else:
            break
        end = match.end()
        cursor = _SEPARATORS.match(text, end).end()
    if end == position:
        return None
    return position, end, digits, spoken


# Labels that say the number after them is someone's identity document or record.
ID_LABEL = re.compile(
    r"\b(?:passport|driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|licen[cs]e|national\s+insurance|ni|nino|"
    r"social\s+security|ssn|sin|tax\s+(?:id|identification|file|reference)|tin|tfn|utr|"
    r"(?:national\s+)?id(?:entity)?(?:\s+card|\s+document)?|personal\s+id(?:entification)?|aadhaa?r|medicare|nhs|"
    r"health\s+(?:insurance\s+)?(?:card|id)|student\s+id|employee\s+id|personalausweis|dni|nie|nif|codice\s+fiscale)\b"
    r"(?:\s+(?:number|num\b\.?|no\b\.?|nr\b\.?|#|code\b|id\b))?\s*(?:is\b|was\b|:|#|=|-)?\s*", re.IGNORECASE)
# What an identity number looks like: letters and digits, grouped by spaces or hyphens, 6-20
# characters, at least five of them digits.
ID_VALUE = re.compile(r"[A-Z0-9](?:[A-Z0-9]|[ \-/](?=[A-Z0-9])){4,24}", re.IGNORECASE)


def id_numbers(text: str, spoken: list[SpokenNumber] | None = None) -> list[tuple[int, int]]:
    """Spans of numbers an identity label names ("passport number X12345678", "NI number QQ 12 34
    56 C", "social security number is one two three, four five, ..."): the label and the number.
    ``spoken``: the text's ``spoken_numbers``, when the caller has them already."""
    spans = []
    spoken = spoken_numbers(text) if spoken is None else spoken
    for label in ID_LABEL.finditer(text):
        value = ID_VALUE.match(text, label.end())
        if value is not None:
            characters = value.group()
            if sum(c.isdigit() for c in characters) >= 5 and len(characters.replace(" ", "").replace("-", "")) >= 6:
                spans.append((label.start(), value.end()))
                continue
        said = next((s for s in spoken if s.start == label.end() and len(s.digits) >= 5), None)
        if said is not None:
            spans.append((label.start(), said.end))
    return spans


# A street address: a house number, one to four words of a street's name, and the kind of street
# ("22 Baker Road", "221 West 79th Street", "Apartment 4B, 5 Maple Drive"), or the French and
# Spanish order ("47 Rue de Rivoli", "12 Calle Mayor"), or a German one ("Hauptstraße 5").
_STREET_TYPES = (r"street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|way|court|ct|place|pl|terrace|close|"
                 r"crescent|square|sq|gardens|grove|parkway|pkwy|highway|hwy|mews|row|walk|circle|cir")
_NAME_WORD = r"(?:[A-Z][\w'’.-]*|\d{1,3}(?:st|nd|rd|th))"
STREET_ADDRESS = re.compile(
    rf"\b\d{{1,5}}[A-Za-z]?(?:[-/]\d{{1,4}})?,?\s+(?:{_NAME_WORD}\s+){{1,4}}(?i:{_STREET_TYPES})\b\.?"
    rf"|\b\d{{1,4}}(?:\s*(?:bis|ter))?,?\s+(?i:rue|avenue|boulevard|bd|place|quai|chemin|allée|calle|avenida|via|viale|piazza|"
    rf"corso|rua)\s+(?:(?:de|du|des|la|le|del|della|di|da|do|dos|das)\s+)*[A-ZÀ-Ý][\w'’-]+"
    rf"|\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring)\s+\d{{1,4}}[a-z]?\b")
# A postcode after an address makes it a full one; alone, with a house number, it still places a home.
POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b|\b[A-Z]{2}\s+\d{5}(?:-\d{4})?\b|\b\d{5}\s+[A-Z][a-zé]+")
# Words that say whose the address is: a private home, or someone's.
PRIVATE = re.compile(r"\b(?:lives?|living|live|home|house|flat|apartment|apt|address|my|her|his|their|our|neighbou?rs?|"
                     r"ex|ex's|girlfriend|boyfriend|wife|husband|mailbox|door|doorstep|front\s+door)\b", re.IGNORECASE)
# Addresses of public buildings, known the world over: they place no private person.
PUBLIC_ADDRESSES = re.compile(r"\b(?:10\s+downing\s+street|1600\s+pennsylvania\s+avenue|221b\s+baker\s+street|"
                              r"350\s+fifth\s+avenue|11\s+wall\s+street|1\s+infinite\s+loop|4\s+privet\s+drive)\b",
                              re.IGNORECASE)


# How far (characters) from an address a word that makes it someone's home is looked for.
PRIVATE_WINDOW = 80


def street_addresses(text: str) -> list[tuple[int, int]]:
    """Spans of street addresses that place someone's home: with a word such as "her", "lives",
    "neighbour" or "house" near it, or a postcode after it. A street name alone ("a 3 Day Weekend
    Road trip", "Elm Street at night") places no one; public buildings' addresses (10 Downing
    Street) are left out."""
    found = []
    for match in STREET_ADDRESS.finditer(text):
        if PUBLIC_ADDRESSES.search(text[max(0, match.start() - 2): match.end() + 2]):
            continue
        near = text[max(0, match.start() - PRIVATE_WINDOW): match.end() + PRIVATE_WINDOW]
        if PRIVATE.search(near) or POSTCODE.search(text, match.end(), match.end() + 40):
            found.append((match.start(), match.end()))
    return found
