"""Which captions the usage policy can read.

The word rules list English words and the semantic layer's encoder (all-MiniLM-L6-v2) was trained
on English: "mujer desnuda en la playa" matches no word and means nothing to the encoder, so both
layers would let it through. A caption the policy cannot read is therefore not judged as if it had
been read: ``[language]`` of usage.toml gives it an outcome of its own (review by default), with the
language found as evidence.

Two signals, both cheap (about 0.05 ms a caption):

- **script**: most of the caption's words are written without a Latin letter (Arabic, Cyrillic, CJK,
  ...). A word that mixes Latin with another script is a look-alike-letter evasion ("nаked" with a
  Cyrillic a), which the word rules already fold back to Latin, so it does not count.
- **language**: for Latin-script captions, a language identifier (py3langid, the maintained numpy
  port of langid.py, trained on 97 languages; restricted to the languages people write captions in
  so that English slang does not read as Tagalog or Latin) names another language with confidence
  and gives English almost nothing. Short captions say too little to identify a language and are
  left to the other rules.

On the shipped labelled set (5,835 English captions, slang and leetspeak included) the defaults flag
none, and 11 of the twemoji set's 16,368 short captions (country names: "a flag Côte d'Ivoire",
"flag Liechtenstein emoji"), which go to review. Short foreign captions ("nackte Frau", "mujer
desnuda": under 12 letters or too little to tell) are not identified and are left to the other rules.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

from policies.decisions import Decision, Outcome

# The languages the identifier chooses between. Restricting it matters: over all 97, short English
# captions often come out as Nigerian Pidgin, Latin or Galician with a middling score.
CANDIDATE_LANGUAGES = ("en es pt fr de it nl pl tr ru uk ar zh ja ko hi bn ur fa id ms vi th sv da no fi cs sk hu "
                       "ro el he bg sr hr tl sw").split()
DEFAULT_MESSAGE = ("The caption is not in a language this site's usage policy can read ({language}); the images "
                   "will get an extra review. Write the caption in English to have it checked in full.")

# The candidates written in the Latin script: where every readable language is one of them, a caption
# mostly in another script cannot be read, whatever language it is.
LATIN_SCRIPT_LANGUAGES = frozenset("en es pt fr de it nl pl tr id ms vi sv da no fi cs sk hu ro hr tl sw".split())

_WORD = re.compile(r"[^\W\d_]+")


class LanguageCheckUnavailable(RuntimeError):
    """The language identifier cannot be loaded: the policy fails closed, as for a broken file."""


@dataclass(frozen=True)
class LanguageRule:
    readable: tuple[str, ...] = ("en",)
    outcome: Outcome = Outcome.REVIEW
    min_confidence: float = 0.5
    max_readable_share: float = 0.005  # the identifier's probability of a readable language at most this
    min_letters: int = 12
    message: str = DEFAULT_MESSAGE

    @classmethod
    def from_config(cls, spec: dict[str, Any]) -> LanguageRule:
        rule = cls(
            readable=tuple(spec.get("readable", cls.readable)),
            outcome=Outcome.parse(spec.get("outcome", "review")),
            min_confidence=float(spec.get("min_confidence", cls.min_confidence)),
            max_readable_share=float(spec.get("max_readable_share", cls.max_readable_share)),
            min_letters=int(spec.get("min_letters", cls.min_letters)),
            message=spec.get("message", DEFAULT_MESSAGE),
        )
        unknown = [code for code in rule.readable if code not in CANDIDATE_LANGUAGES]
        if unknown:
            raise ValueError(f"[language] readable names languages the identifier does not know: {unknown} "
                             f"(known: {', '.join(CANDIDATE_LANGUAGES)})")
        _identifier()  # fail at load, not on the first caption
        return rule

    def check(self, caption: str) -> Decision | None:
        found = unreadable_language(caption, self)
        if found is None:
            return None
        language, evidence = found
        return Decision(self.outcome, "usage.language", self.message.format(language=language), evidence)

    def other_language(self, caption: str) -> str | None:
        """The language or script a caption is most likely written in, when that is not a readable
        one: what ``check`` flags, and also captions the identifier ranks first as another language
        with ``min_confidence`` while giving English a little more than ``max_readable_share`` (short
        German with English-looking words: "Ein Apotheker sortiert Medikamente ins Regal", English
        0.009). Too weak a sign to send a caption to review, strong enough that its meaning, as an
        English encoder reads it, must not refuse it alone (``UsagePolicy``). On the shipped labelled
        set 32 of about 12,000 English-labelled captions are ranked so, several of them foreign."""
        found = unreadable_language(caption, self)
        if found is not None:
            return found[0]
        words = _WORD.findall(caption)
        if sum(len(w) for w in words) < self.min_letters:
            return None
        language, confidence = max(_identifier().rank(caption), key=lambda item: item[1])
        return language if language not in self.readable and confidence >= self.min_confidence else None


_lock = threading.Lock()
_loaded: dict[str, Any] = {}


def _identifier() -> Any:
    with _lock:
        if "identifier" not in _loaded:
            try:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier
            except ImportError as exc:
                raise LanguageCheckUnavailable(f"the language identifier (py3langid) is not installed: {exc}") from exc
            identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
            identifier.set_languages(CANDIDATE_LANGUAGES)
            _loaded["identifier"] = identifier
        return _loaded["identifier"]


def _script(char: str) -> str:
    """'latin' or the first word of the character's Unicode name ('CYRILLIC', 'ARABIC', 'CJK', ...)."""
    if char.isascii():
        return "latin"
    name = unicodedata.name(char, "")
    return "latin" if name.startswith("LATIN") else (name.split(" ", 1)[0] or "unknown")


def unreadable_language(caption: str, rule: LanguageRule) -> tuple[str, dict[str, Any]] | None:
    """(the language or script found, evidence) when the caption is not in a readable language."""
    words = _WORD.findall(caption)
    if not words:
        return None
    foreign_scripts = []
    for word in words:
        scripts = [_script(c) for c in word]
        if "latin" not in scripts:  # Japanese mixes kana and kanji in one run of letters
            foreign_scripts.append(max(set(scripts), key=scripts.count))
    if set(rule.readable) <= LATIN_SCRIPT_LANGUAGES and len(foreign_scripts) * 2 >= len(words):
        script = max(set(foreign_scripts), key=foreign_scripts.count)
        return (f"{script.lower()} script",
                {"script": script.lower(), "words_in_other_scripts": len(foreign_scripts), "words": len(words)})
    letters = sum(len(w) for w in words)
    if letters < rule.min_letters:
        return None
    identifier = _identifier()
    ranked = dict(identifier.rank(caption))
    language, confidence = max(ranked.items(), key=lambda item: item[1])
    readable_share = sum(ranked.get(code, 0.0) for code in rule.readable)
    if language in rule.readable or confidence < rule.min_confidence or readable_share > rule.max_readable_share:
        return None
    return language, {"language": language, "confidence": round(float(confidence), 3),
                      "readable_share": round(float(readable_share), 3)}
