"""Text normalisation for matching that resists spelling tricks, with a map back to the original
characters so that evidence can quote what the user actually typed."""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

# Characters that show nothing and that the generator's tokenizer never reads (BERT's clean-up deletes
# every format (Cf) and unassigned (Cn) character), used to split words past the rules: read as absent.
# Listed: the ones outside those categories that show nothing (the combining grapheme joiner, Hangul
# and Khmer fillers) and the common ones, kept fast to test.
_LISTED_INVISIBLE = frozenset({
    *map(chr, range(0x200B, 0x2010)), *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2060, 0x2065)),
    *map(chr, range(0x2066, 0x2070)), "\u00ad", "\ufeff", "\u180e", "\u034f", "\u115f", "\u1160", "\u3164",
    "\uffa0", "\u17b4", "\u17b5",
})
INVISIBLE_CATEGORIES = ("Cf", "Cn")


class _InvisibleCharacters:
    """``char in INVISIBLE``: the listed characters, and every one of a category nothing displays
    (tag characters, Arabic number signs, interlinear annotation marks, unassigned code points ...).
    A category, not a list: the probe that found U+E0001 and U+206A splitting "Taylor" found 141 such
    characters a list had missed."""

    def __contains__(self, char: object) -> bool:
        return isinstance(char, str) and len(char) == 1 and (
            char in _LISTED_INVISIBLE or unicodedata.category(char) in INVISIBLE_CATEGORIES)


INVISIBLE = _InvisibleCharacters()

# Cyrillic and Greek letters that look like Latin ones (after case folding).
CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ԛ": "q",
    "ԝ": "w", "ɡ": "g", "ɩ": "i", "ı": "i", "ł": "l", "ø": "o", "đ": "d", "ß": "ss", "æ": "ae", "œ": "oe",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "γ": "y", "ω": "w", "μ": "u", "σ": "o", "ς": "c",
    # Latin small capitals and other letter-like forms NFKC leaves alone.
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ғ": "f", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ǫ": "q", "ʀ": "r", "ꜱ": "s", "ᴛ": "t",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z",
})

# Characters people put in place of letters; each letter of a blocked term accepts these.
SUBSTITUTES = {
    "a": "a4@", "b": "b8", "e": "e3€", "g": "g96", "i": "i1!|l", "l": "l1|i", "o": "o0", "s": "s5$z",
    "t": "t7+", "z": "z2", "c": "c(", "u": "uv", "x": "x", "h": "h#",
}

SEPARATOR_CLASS = r"[\s.\-_*·•,/\\~'\"`^:;]"


@dataclass(frozen=True)
class NormalisedText:
    text: str
    origin: tuple[int, ...]  # origin[i] = index in the original string of text[i]

    def original_span(self, original: str, start: int, end: int) -> tuple[int, int, str]:
        first = self.origin[start]
        last = self.origin[end - 1] + 1
        return first, last, original[first:last]


# A Latin letter with a stroke, hook, bar or tail ("ŧ", "ƀ", "ɱ", "ƙ") keeps its base letter in its
# Unicode name but not in its decomposition, so NFD cannot strip it the way it strips accents.
_MARKED_LATIN = re.compile(r"LATIN (?:SMALL |CAPITAL )?LETTER (?:SMALL CAPITAL )?([A-Z])(?: WITH .+)?")


@functools.lru_cache(maxsize=4096)
def _base_letter(char: str) -> str:
    """The plain letter a marked Latin letter is written on, by its Unicode name; other characters
    as they are (a turned or reversed letter is not mapped: it is another shape)."""
    if char.isascii() or not char.isalpha():
        return char
    match = _MARKED_LATIN.fullmatch(unicodedata.name(char, ""))
    return match.group(1).lower() if match else char


# Pictographs read as the words they stand for, so that both the word rules and the sentence encoder
# see "a 🔪 on a 🧍‍♀️ neck" as "a kitchen knife on a standing person woman neck" and "😀" as a
# caption with words. By Unicode name, lower-cased, with these names put as people say them (the
# emoji's CLDR short names where the Unicode name is odd).
EMOJI_NAMES = {
    "HOCHO": "kitchen knife", "AUBERGINE": "eggplant", "SPLASHING SWEAT SYMBOL": "sweat droplets",
    "COLLISION SYMBOL": "explosion", "FEMALE SIGN": "woman", "MALE SIGN": "man", "PILE OF POO": "poo",
    "NO ONE UNDER EIGHTEEN SYMBOL": "no one under eighteen", "DROPLET": "droplet",
    "SHOCKED FACE WITH EXPLODING HEAD": "exploding head", "SEE-NO-EVIL MONKEY": "see no evil monkey",
    "FACE WITH TEARS OF JOY": "face with tears of joy", "HEAVY BLACK HEART": "red heart",
    "BLACK HEART SUIT": "heart suit", "MONEY BAG": "money bag", "SMILING FACE WITH HORNS": "smiling devil",
}
# Joined into the pictograph before them, never read: skin tones, the emoji and text presentation
# selectors, the keycap's enclosing mark; a regional-indicator letter spells a flag's country code.
EMOJI_MODIFIERS = {*map(chr, range(0x1F3FB, 0x1F400)), "︎", "️", "⃣"}


@functools.lru_cache(maxsize=4096)
def emoji_words(char: str) -> str | None:
    """The words a pictograph stands for (" eggplant "), None for any other character."""
    if unicodedata.category(char) != "So":
        return None
    name = unicodedata.name(char, "")
    if not name or name.startswith(("BOX DRAWINGS", "BLOCK", "BRAILLE")):
        return None
    if name.startswith("REGIONAL INDICATOR SYMBOL LETTER "):
        return " flag "  # two of them spell a country's code, which is no word
    words = EMOJI_NAMES.get(name) or name.lower().replace(" symbol", "").replace("-", " ")
    return f" {words} "


# What a pictograph becomes when it is read as punctuation ("n🍑u🍑d🍑e" is "n·u·d·e" to the word rules).
EMOJI_SEPARATOR = "·"


def emoji_read(text: str) -> str:
    """``text`` with its pictographs read as their names and their modifiers (and the joiners inside
    an emoji sequence) left out, everything else as typed: how a term written with emoji is written
    plainly ("🍆💦" is "eggplant sweat droplets", never a disguised spelling of it)."""
    out = []
    for position, char in enumerate(text):
        if char in EMOJI_MODIFIERS:
            continue
        if char == "\u200d" and any(emoji_words(near) is not None or near in EMOJI_MODIFIERS
                                    for near in text[max(position - 1, 0) : position + 2 : 2]):
            continue
        out.append(emoji_words(char) or char)
    return "".join(out)


def has_emoji(text: str) -> bool:
    return any(emoji_words(char) is not None for char in text)


# One usage check normalises its caption several times (word rules, each semantic stage); the result
# is immutable, so the last few are kept: ~1.7 ms of a 500-character caption's check each time.
# Longer texts (a refused 5 MB caption) are never kept.
NORMALISED_CACHE_SIZE = 256
NORMALISED_CACHE_MAX_CHARS = 2_000


def normalise(original: str, emoji_as_separators: bool = False) -> NormalisedText:
    """NFKC, case folding, invisible characters removed, diacritics stripped, confusables and marked
    Latin letters mapped to plain ones, pictographs read as their names (or, with
    ``emoji_as_separators``, as a separator between letters, which is how a word spelled out between
    emoji is read)."""
    if len(original) > NORMALISED_CACHE_MAX_CHARS:
        return _normalise(original, emoji_as_separators)
    return _normalise_kept(original, emoji_as_separators)


def _normalise(original: str, emoji_as_separators: bool) -> NormalisedText:
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(original):
        if char in INVISIBLE or char in EMOJI_MODIFIERS:
            continue
        words = emoji_words(char)
        if words is not None and emoji_as_separators:
            words = EMOJI_SEPARATOR
        if words is not None:
            out.extend(words)
            origin.extend([index] * len(words))
            continue
        folded = unicodedata.normalize("NFKC", char).casefold()
        for piece in unicodedata.normalize("NFD", folded):
            if unicodedata.combining(piece):
                continue
            for mapped in piece.translate(CONFUSABLES):
                out.append(_base_letter(mapped))
                origin.append(index)
    return NormalisedText("".join(out), tuple(origin))


_normalise_kept = functools.lru_cache(maxsize=NORMALISED_CACHE_SIZE)(_normalise)


# Three or more single letters joined by one punctuation mark ("w-o-m-a-n", "n.u.d.e", "k*i*l*l"):
# a word spelled out to get past a filter. The word rules match such spellings term by term; the
# sentence encoder reads them as separate letters, so the semantic layer gets the word back.
_SPELLED_OUT = re.compile(r"(?<![^\W\d_])[^\W\d_]([\-.·•*_/~'`^:;,+|])(?:[^\W\d_]\1)+[^\W\d_](?![^\W\d_])")


def plain_text(normalised: str) -> str:
    """Normalised text as the sentence encoder should read it: runs of white space made one space,
    words spelled out letter by letter joined back into words."""
    text = " ".join(normalised.split())
    return _SPELLED_OUT.sub(lambda match: match.group().replace(match.group(1), ""), text)


# Every letter of a blocked term may repeat ("nuuude", "n.u.u.d.e") up to this many extra times, and
# the text keeps at most MAX_RUN identical characters in a row, so a longer run still matches. The
# bound is what keeps matching linear: letters that share substitutes ("i" and "l" both accept "1"
# and "|") would otherwise let the regex try every way of splitting a long run between them, which
# took 0.2 s on 500 characters of "i1l|".
MAX_REPEAT = 6
MAX_RUN = 3


def limit_runs(normalised: NormalisedText, keep: int = MAX_RUN) -> NormalisedText:
    """Drop the characters beyond the first ``keep`` of a run of identical ones ("nuuuuuude" -> "nuuude")."""
    out: list[str] = []
    origin: list[int] = []
    run = 0
    for char, index in zip(normalised.text, normalised.origin):
        run = run + 1 if out and out[-1] == char else 1
        if run <= keep:
            out.append(char)
            origin.append(index)
    return NormalisedText("".join(out), tuple(origin))


def _term_fragments(term: str) -> list[str]:
    """The regex pieces of one term, in order: a letter run ("nuuude"), the separators allowed before
    it inside a word, or the separators between two words."""
    fragments = []
    for index, word in enumerate(normalise(term).text.split()):
        if index:
            # Between words any run of separators; one class, so there is a single way to match it.
            fragments.append(f"{SEPARATOR_CLASS}*")
        runs: list[list] = []
        for char in word:
            if runs and runs[-1][0] == char:
                runs[-1][1] += 1
            else:
                runs.append([char, 1])
        for position, (char, count) in enumerate(runs):
            letter = f"[{re.escape(SUBSTITUTES.get(char, char))}]"
            least = min(count, MAX_RUN) - 1
            run = f"{letter}(?:{SEPARATOR_CLASS}{{0,3}}{letter}){{{least},{max(least, MAX_REPEAT)}}}"
            fragments.append(f"(?:{SEPARATOR_CLASS}{{0,3}}){run}" if position else run)
    return fragments


def terms_pattern(terms: Sequence[str], allow_suffixes: bool = True) -> str:
    """One regex for several blocked terms on normalised text (after ``limit_runs``), each as
    ``term_pattern`` describes, merged into a tree of shared prefixes: "crack pipe", "crackhead" and
    "cocaine" are tried as "c" then "rack" or "ocaine", so the engine tries each letter once per
    position instead of once per term. On hostile text that nearly every term's letters accept (a
    run of substitutes), that is what bounds the cost as the lists grow."""
    tree: dict[str, dict] = {}
    for term in terms:
        node = tree
        for fragment in _term_fragments(term):
            node = node.setdefault(fragment, {})
        node[_END] = {}
    ending = ("(?:e?s|ed|ing)?" if allow_suffixes else "") + r"(?![^\W_])"

    def branch(node: dict[str, dict]) -> str:
        # In the terms' order, so the first term listed is still the first tried.
        options = [ending if key == _END else key + branch(child) for key, child in node.items()]
        return options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"

    return r"(?<![^\W_])" + branch(tree) if tree else r"(?!)"


_END = ""


def term_pattern(term: str, allow_suffixes: bool = True) -> str:
    """Regex for a blocked term on normalised text (after ``limit_runs``).

    Each letter accepts its common substitutes and a bounded number of repeats ("nuuude"), letters
    may be split by a few separators ("n.u.d.e", "n u d e"), and the term must stand on word
    boundaries so that a harmless word containing it ("grape", "Scunthorpe") is left alone. A letter
    doubled in the term ("kkk") must be doubled in the text: "k" alone is not "kkk".
    """
    return terms_pattern([term], allow_suffixes)
