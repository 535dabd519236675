"""Usage policy: may this caption be generated, for this purpose, by this user, now?"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import regex

from policies import personal_data
from policies.decisions import Decision, Outcome, Verdict
from policies.gazetteer import LISTS, Gazetteer, caption_tokens, default_gazetteer
from policies.language import LanguageRule
from policies.normalize import (
    INVISIBLE,
    NormalisedText,
    emoji_read,
    has_emoji,
    limit_runs,
    normalise,
    terms_pattern,
)
from policies.semantic import SemanticLayer

logger = logging.getLogger(__name__)

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})*\.[a-z]{2,24}(?![\w-])", re.IGNORECASE)
# An address written out to get past a filter: "tom dot reyes at gmail dot com", "jess (at) proton.me",
# "t.reyes [at] gmail [dot] com". "at" and "dot" as words or in brackets; the domain must end in a
# common top-level domain, so "a cat at the park" is not an address.
_AT = r"(?:\s*[(\[{<]\s*at\s*[)\]}>]\s*|\s+at\s+|\s*@\s*)"
_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+|\.)"
_TLDS = ("com|net|org|edu|gov|io|co|info|biz|me|uk|de|fr|es|it|nl|ru|ca|au|us|ch|se|no|dk|fi|pl|jp|cn|in|br|mx|"
         "eu|be|at|ie|nz|za|pt|gr|cz|tr|kr|ar|cl")
WRITTEN_OUT_EMAIL = re.compile(
    rf"(?<![\w.+-])[\w+-]{{1,64}}(?:{_DOT}[\w+-]{{1,64}}){{0,3}}{_AT}[\w-]{{1,63}}(?:{_DOT}[\w-]{{1,63}}){{0,3}}"
    rf"{_DOT}(?:{_TLDS})(?![\w-])", re.IGNORECASE)
# A card's number said in words need not pass the Luhn check to be refused when the caption says
# it is a card's.
CARD_WORDS = re.compile(r"\b(?:card|visa|mastercard|amex|american\s+express|debit|credit|cvv|cvc)\b", re.IGNORECASE)
# What [personal_data] finds when its "kinds" are not listed: all of them.
PERSONAL_DATA_KINDS = ("email", "phone", "payment_card", "iban", "id_number", "address")
PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d\s().\-/]{7,20}\d(?!\w)")
CARD = re.compile(r"(?<!\d)(?:\d[ \-]?){12,18}\d(?!\d)")
IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:\s?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "ES": 24, "IT": 27, "NL": 18, "BE": 16, "CH": 21, "AT": 20,
                "IE": 22, "PT": 25, "PL": 28, "SE": 24, "DK": 18, "NO": 15, "FI": 18, "LU": 20, "CZ": 24}


# Unicode's embedding, override and isolate controls (not the left-to-right / right-to-left marks,
# which right-to-left text uses).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# A negation right before a word ("no gore", "without any blood", "not showing any gore", "free of
# drugs"): at most two words between, and no clause break, so "no warning, gore everywhere" is plain.
NEGATED = re.compile(r"\b(?:no|not|without|never|zero|free\s+of|minus|sans)(?:\s+[\w'’-]+){0,2}?\s*$")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "").upper()
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


@dataclass(frozen=True)
class Span:
    """A found stretch of the caption (the subset of re.Match the decisions use)."""

    begin: int
    finish: int

    def start(self) -> int:
        return self.begin

    def end(self) -> int:
        return self.finish


def _valid_iban_prefix(match: re.Match) -> Span | None:
    """The regex is greedy and may run into the next word ("... 00 transfer"): try the longest
    prefix ending at a space that passes the mod-97 check."""
    text = match.group()
    ends = [len(text)] + [i for i in range(len(text) - 1, 14, -1) if text[i] == " "]
    for end in ends:
        if iban_valid(text[:end]):
            return Span(match.start(), match.start() + end)
    return None


# Short words that make a blocked term when joined to the next or last word ("put a" is "puta",
# "hero in" is "heroin"); longer pieces are checked against the text encoder's word list.
SHORT_WORDS = frozenset("a i an in on at to of is it by up my me we he so no or as do go be us am if".split())
POSSESSIVE = re.compile(r"[^\W\d_]+['’][sS]")


@functools.lru_cache(maxsize=1)
def _known_words() -> frozenset[str]:
    """Whole words of the text encoder's vocabulary (all-MiniLM-L6-v2's ~22,000): the product's own
    list of ordinary English words. Without it (no encoder package), nothing counts as ordinary and
    every spaced match stands: the rules fail strict, never open."""
    try:
        from policies.embedding import default_model_folder

        lines = (default_model_folder() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    except Exception:  # the package missing or unreadable: strict, as above
        return frozenset()
    return frozenset(w for w in lines if w.isalpha() and w.isascii() and not w.startswith("##"))


@functools.lru_cache(maxsize=1)
def _english_words() -> frozenset[str]:
    """The shipped list of English words (SCOWL, the name lists' own): words the encoder's
    vocabulary splits into pieces but that are ordinary writing all the same ("riffle", "tilts")."""
    try:
        return default_gazetteer().english
    except Exception:  # the list missing or unreadable: strict, as _known_words
        return frozenset()


def _is_real_word(word: str) -> bool:
    return word in _known_words() or word in _english_words()


def _ordinary_words(piece: str) -> bool:
    return piece in SHORT_WORDS or (len(piece) >= 3 and _is_real_word(piece))


def _inflections(base: str) -> set[str]:
    """A term's own forms: plural, past, -ing, with the last consonant doubled ("gunned", "gunning")."""
    forms = {base + suffix for suffix in ("s", "es", "ed", "ing", "d")}
    if base and base[-1].isalpha() and base[-1] not in "aeiouy":
        forms |= {base + base[-1] + suffix for suffix in ("ed", "ing")}
    if base.endswith("e"):
        forms.add(base[:-1] + "ing")
    return forms


def _real_word_for_another(quoted: str, terms: tuple[str, ...]) -> bool:
    """Whether a match is a real word that only looks like a term to the matcher's substitutions and
    repeats: "LED" is no "IED", "tilts" no "tits", "riffle" no "rifle", "seeks" no "seks", "Leeds"
    no "leds". The generator's text encoder reads a real word as that word, so nothing is disguised;
    the semantic layer reads it too. A real word that is the term (accents aside: "porno" for
    "pornô") or a form of it ("gunned") stays a match. A disguise needs characters a word does not
    have (digits, symbols, separators, accents, look-alike letters of other scripts), which this
    leaves matched."""
    word = quoted.strip()
    if not (word.isascii() and word.isalpha()):
        return False
    word = word.casefold()
    if not _is_real_word(word):
        return False
    for term in terms:
        base = normalise(term).text
        if word == base or word in _inflections(base):
            return False
    return True


def _joins_ordinary_words(quoted: str, terms: tuple[str, ...]) -> bool:
    """Whether a match is only ordinary words that happen to spell a term when joined: "put a pie
    in the oven" is not "puta", "a war hero in a wheelchair" not "heroin", "a car ding repair" not
    "carding". A term written with its own space ("rule 34", "towel head" where listed) stands, as
    does one split into letters or pieces that are no words ("n u d e", "her oin", "h e r o in"),
    or held apart by anything but spaces ("her.oin"): those are spellings made to get past a filter."""
    plain = " ".join(quoted.casefold().split())
    if " " not in plain or any(plain.replace("-", " ") == term.casefold().replace("-", " ") for term in terms):
        return False
    pieces = plain.split(" ")
    return all(piece.isascii() and piece.isalpha() and _ordinary_words(piece) for piece in pieces)


# Numbers the caption says are something else: a label right before them ("ISBN 978-0-14-044913-6",
# "barcode 5 012345 678900", "serial no. 4471 2290 11"), or runs of years ("1914 - 1918 - 1939").
NUMBER_LABEL = re.compile(r"\b(?:isbn(?:-1[03])?|issn|ean(?:-13)?|upc|gtin|barcode(?:\s+number)?|serial(?:\s+number)?|"
                          r"serial\s+no\.?|s/n|sku|part(?:\s+number|\s+no\.?)?|model(?:\s+number|\s+no\.?)?|"
                          r"order(?:\s+number|\s+no\.?)?|invoice(?:\s+number|\s+no\.?)?|tracking(?:\s+number)?|"
                          r"lot(?:\s+number|\s+no\.?)?|batch(?:\s+number|\s+no\.?)?|(?:product|item|article|stock|reference|ref\.?)"
                          r"\s+(?:code|number|no\.?))\s*[:#]?\s*$", re.IGNORECASE)
YEAR_RUN = re.compile(r"(?:1[0-9]|20)\d{2}(?:\s*[-/–—,]\s*(?:1[0-9]|20)\d{2})+")


# Words that ask someone to get in touch: a number after them is a phone number whatever label it
# wears ("call model number 0161 496 0000", "order no. 07700 900123, text anytime").
CONTACT = re.compile(r"\b(?:call|calls|calling|text|texts|texting|ring|phone|dial|whatsapp|sms|contact|reach|"
                     r"message|dm|telegram|signal|viber)\b", re.IGNORECASE)


def _other_kind_of_number(text: str, match: re.Match) -> bool:
    """Whether a phone-shaped number is labelled as another kind, or is a run of years; never when
    the caption asks to call or text it."""
    if CONTACT.search(text[max(0, match.start() - 48) : match.end() + 48]):
        return False
    return bool(NUMBER_LABEL.search(text[max(0, match.start() - 24) : match.start()])
                or YEAR_RUN.fullmatch(match.group().strip()))


def _not_the_term(quoted: str, terms: tuple[str, ...]) -> bool:
    """Matches that are ordinary writing, not the term: ordinary words that join into it, a
    possessive whose apostrophe the matcher read as a separator ("a blue tit's nest" is not
    "tits", "Louisville, Ky's riverfront" not "kys"), a number (``_written_as_number``) or a real
    word that only looks like the term (``_real_word_for_another``)."""
    if POSSESSIVE.fullmatch(quoted.strip()) and not any(quoted.strip().casefold() == t.casefold() for t in terms):
        return True
    return (_written_as_number(quoted, terms) or _real_word_for_another(quoted, terms)
            or _joins_ordinary_words(quoted, terms))


# What may stand between the digits of a number ("20.09", "2 0 0 9", "20:09"): the matcher's
# separators, and characters that show nothing.
_NUMBER_SEPARATORS = frozenset(" \t.-_*·•,/\\~'\"`^:;")


def _number_in(quoted: str) -> str | None:
    """The digits of a stretch written as a number (digits, and separators or invisible characters
    between them), or None for anything with a letter or a symbol in it."""
    digits = []
    for char in quoted:
        if char in _NUMBER_SEPARATORS or char.isspace() or char in INVISIBLE:
            continue
        folded = unicodedata.normalize("NFKC", char)
        if not (folded.isascii() and folded.isdecimal()):
            return None
        digits.append(folded)
    return "".join(digits) or None


def _written_as_number(quoted: str, terms: tuple[str, ...]) -> bool:
    """Whether a match is written in digits alone: a number, not a word spelled with digits for
    letters. A digit stands in for a letter beside letters or symbols ("z0g", "t1ts", "4$$"); digits
    alone are a year, a room, a price or a jersey ("the 2009 world cup" read as "zog", "room 206",
    "7175" as "tits"). A term that is itself a number ("1488") still matches as written; numbers that
    spell a word and mean nothing else (calculator spellings) are listed as terms in their own right."""
    number = _number_in(quoted)
    return number is not None and not any(number == "".join(c for c in term if c.isalnum()) for term in terms)


def _is_evasion(quoted: str, terms: tuple[str, ...]) -> bool:
    """Whether a matched stretch differs from every term as normally written (case aside)."""
    plain = " ".join(emoji_read(quoted).casefold().split())
    if _number_in(quoted) is not None:
        return False  # "80,085", "14.88": separators are how numbers are written, no disguise
    for term in terms:
        base = term.casefold()
        if plain == base or plain in _inflections(base):
            return False
        # Hyphen or space, as people write compounds either way ("self-harm", "self harm").
        if plain.replace("-", " ") == base.replace("-", " "):
            return False
    return True


@dataclass(frozen=True)
class TermRule:
    rule_id: str
    category: str
    outcome: Outcome
    message: str
    terms: tuple[str, ...]
    pattern: re.Pattern
    # For a review section: the deny section a disguised spelling is refused under ("s.e.x" is
    # sexual content, not a word with an everyday meaning); (rule id, message).
    disguised_as: tuple[str, str] | None = None
    # Names and set phrases in which a term is harmless ("Gore-Tex", "Al Gore"), matched on the
    # normalised text; a term written plainly inside one is not a match (a disguised one still is).
    harmless_phrases: re.Pattern | None = None
    # The section's own regular expressions (``patterns``), written by whoever edits the policy;
    # matched apart from the terms, each under a time limit (see AUTHOR_PATTERN_SECONDS).
    author_patterns: tuple[regex.Pattern, ...] = ()


# A regular expression written into a policy file may backtrack catastrophically ("(a+)+$" takes
# seconds on thirty letters), and a policy folder can be proposed by compliance staff on the admin's
# evaluation page. The terms' own pattern is built by us and cannot backtrack that way; an author's
# pattern is compiled with the `regex` module, whose matching stops at a deadline, and is tried at
# load on hostile texts, so a slow one is refused with a message before it is ever in force.
AUTHOR_PATTERN_SECONDS = 0.05
AUTHOR_PATTERN_LOAD_SECONDS = 0.1
_HOSTILE_PROBES = tuple(
    text[:500] for text in (
        "a" * 500, "a " * 250, "1" * 500, " " * 500, "(" * 500, "(((" + "a" * 497, "(((" + "a(" * 250, "aA1 (_.-" * 63,
        "@" * 500, "a@" * 250, "x." * 250, "ab" * 250, "a-" * 250, ")))" * 167, "((( " + "word " * 99,
    )
)


class PatternTooSlow(RuntimeError):
    """An author's pattern ran past its deadline on a caption: the check cannot be completed."""


def _compile_author_pattern(rule_id: str, expression: str) -> regex.Pattern:
    try:
        pattern = regex.compile(expression, flags=regex.VERSION0)  # VERSION0: re's syntax and meaning
        re.compile(expression)  # the syntax documented for policy authors is Python's re
    except (re.error, regex.error) as exc:
        raise ValueError(f"usage.toml: {rule_id} pattern {expression!r} is not a regular expression: {exc}") from exc
    # Runs of each character the expression names: "(x|x.)*y" backtracks only on x's.
    own = sorted({c for c in expression if c.isalnum() or c in "()[]{}<>@._-:/ "})[:40]
    for probe in (*_HOSTILE_PROBES, *(c * 500 for c in own)):
        for text in (probe, probe + "!"):  # a failing end is what makes a nested repetition try every split
            try:
                for _ in pattern.finditer(text, timeout=AUTHOR_PATTERN_LOAD_SECONDS):
                    pass
            except TimeoutError:
                raise ValueError(
                    f"usage.toml: {rule_id} pattern {expression!r} takes longer than "
                    f"{AUTHOR_PATTERN_LOAD_SECONDS * 1000:.0f} ms on a 500-character text ({text[:12]!r}...): it "
                    "backtracks (a repetition inside a repetition, or alternatives that overlap, such as "
                    "(a+)+ or (a|a)*). Write it so that each character can be matched one way only."
                ) from None
    return pattern


# The semantic layer's own failures refuse whatever the language: they say the caption was not judged.
_FAIL_CLOSED_RULES = frozenset({"usage.semantic.unavailable", "usage.semantic.unreadable"})


def _unread_meaning(decision: Decision, found: str) -> Decision:
    """A semantic denial of a caption most likely written in another language, as a review.

    The encoder was trained on English; on another language its vectors say more about the language
    than the meaning, so a German caption about a dog by the fireplace lands near the few German
    harmful examples (0.94 on violence). Its score cannot refuse the caption; it sends it to a
    reviewer (the language rule already does when it is sure of the language). The word rules, which
    list other languages' words for the worst harms, still deny."""
    if decision.outcome is not Outcome.DENY or decision.rule_id in _FAIL_CLOSED_RULES:
        return decision
    return Decision(Outcome.REVIEW, decision.rule_id,
                    f"{decision.message.rstrip('.')}; the caption is not in a language the meaning check reads "
                    f"({found}), so the images get an extra review instead.",
                    {**decision.evidence, "unread_language": found})


@dataclass
class UsageContext:
    """What the Django side knows about the request: the counting is its job, the limits are ours."""

    purpose: str | None = None
    num_images: int = 1
    user_images_today: int = 0
    group_images_today: dict[str, int] = field(default_factory=dict)


class UsagePolicy:
    def __init__(self, config: dict[str, Any], version: str, semantic: SemanticLayer | None = None,
                 name_lists: Gazetteer | None = None):
        self.version = version
        # The meaning of the caption, beside its words (semantic.toml); None: word rules only.
        self.semantic = semantic
        limits = config.get("limits", {})
        self.max_chars = int(limits.get("max_chars", 500))
        self.min_letters = int(limits.get("min_letters", 2))
        self.max_words = int(limits.get("max_words", 80))
        blocked = config.get("blocked", {})
        self.term_rules = [self._compile_category(name, spec, blocked) for name, spec in blocked.items()]
        self.name_rules = [self._compile_names(name, spec) for name, spec in config.get("protected", {}).items()]
        # The shipped lists of people, characters and brands (policies/default/gazetteer_*.csv) extend
        # the sections of those names: their outcome and message are the section's.
        # ``name_lists``: the policy folder's own lists (the loader passes them); default: the packaged ones.
        uses_lists = any(r.category in LISTS for r in self.name_rules)
        self.gazetteer: Gazetteer | None = (name_lists or default_gazetteer()) if uses_lists else None
        pii = config.get("personal_data", {})
        self.pii_outcome = Outcome.parse(pii.get("outcome", "deny"))
        self.pii_kinds = set(pii.get("kinds", list(PERSONAL_DATA_KINDS)))
        purposes = config.get("purposes", {})
        self.allowed_purposes = set(purposes.get("allowed", []))
        # None: no [language] table, every caption is taken to be English.
        self.language = LanguageRule.from_config(config["language"]) if "language" in config else None
        quotas = config.get("quotas", {})
        self.per_user_per_day = quotas.get("per_user_per_day")
        self.per_group_per_day = dict(quotas.get("per_group_per_day", {}))

    @staticmethod
    def _compile_category(name: str, spec: dict[str, Any], blocked: dict[str, Any]) -> TermRule:
        default = f"The caption asks for {name.replace('_', ' ')}, which this site does not generate."
        rule = UsagePolicy._compile(f"usage.blocked.{name}", name, spec, tuple(spec["terms"]), default,
                                    spec.get("suffixes", True))
        target = spec.get("disguised_as")
        if target:
            if target not in blocked or blocked[target].get("outcome", "deny") != "deny":
                raise ValueError(f"usage.toml: [blocked.{name}] disguised_as = {target!r} must name a [blocked] section "
                                 "whose outcome is deny")
            target_message = blocked[target].get("message", f"The caption asks for {target.replace('_', ' ')}.")
            rule = dataclasses.replace(rule, disguised_as=(f"usage.blocked.{target}", target_message))
        phrases = [" ".join(normalise(p).text.split()) for p in spec.get("harmless_phrases", [])]
        if phrases:
            alternatives = "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))
            rule = dataclasses.replace(rule, harmless_phrases=re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])"))
        return rule

    @staticmethod
    def _compile_names(name: str, spec: dict[str, Any]) -> TermRule:
        default = f"The caption names a protected {name.rstrip('s')}; images of it need permission."
        return UsagePolicy._compile(f"usage.protected.{name}", name, spec, tuple(spec["names"]), default, False)

    @staticmethod
    def _compile(rule_id: str, name: str, spec: dict[str, Any], terms: tuple[str, ...], default_message: str,
                 suffixes: bool) -> TermRule:
        # Codes that are not words ("(((name)))", the far right's "echo" around a Jewish name): regular
        # expressions on the normalised text. A match is never one of the terms as plainly written,
        # so it counts as a disguised form: denied under a review section's disguised_as.
        extra = spec.get("patterns", [])  # a list of strings: the loader's schema checks the type
        author_patterns = tuple(_compile_author_pattern(rule_id, expression) for expression in extra)
        return TermRule(rule_id, name, Outcome.parse(spec.get("outcome", "deny")), spec.get("message", default_message),
                        terms, re.compile(terms_pattern(terms, suffixes)), author_patterns=author_patterns)

    def check_caption(self, caption: str, context: UsageContext | None = None, *, count_quotas: bool = True) -> Verdict:
        """Every rule's decision on a caption. ``count_quotas=False`` leaves the quotas out, for a
        caller that counts them later under a lock (``check_quotas``): the rest is the costly part
        and should not run while other submissions wait on that lock."""
        context = context or UsageContext()
        verdict = Verdict("usage", self.version)
        if not isinstance(caption, str):
            verdict.decisions.append(Decision(Outcome.DENY, "usage.format", "The caption must be text."))
            return verdict
        # Check the limit before any work: a caption of megabytes is refused in constant time.
        if len(caption) > self.max_chars:
            verdict.decisions.append(Decision(
                Outcome.DENY, "usage.length.max",
                f"The caption is {len(caption)} characters long; the limit is {self.max_chars}. Shorten it.",
                {"length": len(caption), "limit": self.max_chars},
            ))
            return verdict
        verdict.decisions.extend(self._check_form(caption))
        if verdict.denied:
            return verdict
        normalised = limit_runs(normalise(caption))
        # Pictographs are read as their names ("🍆" is "eggplant"), and once more as separators, so a
        # word spelled out between emoji ("n🍑u🍑d🍑e") is still the word; the stricter match counts.
        readings = [normalised]
        if has_emoji(caption):
            readings.append(limit_runs(normalise(caption, emoji_as_separators=True)))
        for rule in self.term_rules + self.name_rules:
            try:
                found = [d for d in (self._match(rule, caption, reading) for reading in readings) if d]
                decision = max(found, key=lambda d: d.outcome is Outcome.DENY) if found else None
            except PatternTooSlow as exc:
                # Fails closed, as a broken policy file does: a caption the rules could not finish
                # reading is not accepted. The load-time probes make this rare; the log says which.
                logger.error("usage policy %s: %s", self.version, exc)
                decision = Decision(Outcome.DENY, "usage.pattern.unavailable",
                                    "The caption could not be checked completely, so it is not accepted; "
                                    "tell the site administrator.", {"rule": rule.rule_id})
            if decision:
                verdict.decisions.append(decision)
        if self.gazetteer is not None:
            for decision in self._check_named(caption, normalised, verdict.decisions):
                same = [k for k, d in enumerate(verdict.decisions) if d.rule_id == decision.rule_id]
                if not same:
                    verdict.decisions.append(decision)
                elif decision.outcome.severity > verdict.decisions[same[0]].outcome.severity:
                    verdict.decisions[same[0]] = decision
        verdict.decisions.extend(self._check_personal_data(caption))
        # A caption neither layer can read is not judged as if it had been read.
        unreadable = self.language.check(caption) if self.language is not None else None
        if unreadable is not None:
            verdict.decisions.append(unreadable)
        verdict.decisions.extend(self._check_purpose(context.purpose))
        if count_quotas:
            verdict.decisions.extend(self.check_quotas(context))
        # Last, as it is the costly check: a caption the word rules already refuse cannot be refused
        # more, and the editor already has the reason; unless every denial names a harm that captions
        # also report on ("an awareness poster for a child abuse hotline"), where the meaning decides.
        denials = [d for d in verdict.decisions if d.outcome is Outcome.DENY]
        if self.semantic is not None and all(self.semantic.reportable(d) for d in denials):
            assessment = self.semantic.assess(caption)
            for index, softened in self.semantic.softened_denials(assessment, verdict.decisions, caption).items():
                verdict.decisions[index] = softened
            # A single everyday word ("a glue gun") asks for review whatever the caption says; where the
            # meaning is confidently harmless the semantic layer may lift that review (never a denial).
            for index, lifted in self.semantic.lifted_reviews(assessment, verdict.decisions, caption).items():
                verdict.decisions[index] = lifted
            meaning = assessment.decisions
            # Asked only when the meaning would refuse: most captions have nothing to cap.
            if self.language is not None and any(d.outcome is Outcome.DENY for d in meaning):
                other = self.language.other_language(caption)
                if other is not None:
                    meaning = [_unread_meaning(d, other) for d in meaning]
            verdict.decisions.extend(meaning)
        return verdict

    def _check_form(self, caption: str) -> list[Decision]:
        controls = [c for c in caption if unicodedata.category(c) in ("Cc", "Cs", "Co") and c not in "\t\n\r"]
        if controls:
            return [Decision(Outcome.DENY, "usage.characters.control",
                             "The caption contains control characters; type or paste plain text.",
                             {"count": len(controls), "first": f"U+{ord(controls[0]):04X}"})]
        # U+FFFD is what a decoder writes for bytes that were not text (an admin form posted as invalid
        # UTF-8 arrives so): the caption as typed is lost, and "���" is not something to judge.
        if "\ufffd" in caption:
            return [Decision(Outcome.DENY, "usage.characters.unreadable",
                             "The caption contains characters that could not be read (shown as �): it was not "
                             "sent as valid text. Type or paste it again.",
                             {"count": caption.count("\ufffd")})]
        # Direction overrides and isolates make a caption display differently from what it says
        # ("a sign saying \u202eeroG" shows "Gore"); a plain caption never needs them.
        overrides = [c for c in caption if c in BIDI_CONTROLS]
        if overrides:
            return [Decision(Outcome.DENY, "usage.characters.bidi",
                             "The caption contains text-direction control characters, which make it display "
                             "differently from what it says; type or paste plain text.",
                             {"count": len(overrides), "first": f"U+{ord(overrides[0]):04X}"})]
        # Counted as the rules read the caption: a pictograph is its name's letters ("😀 " is words).
        letters = sum(1 for c in normalise(caption).text if c.isalpha())
        if letters < self.min_letters:
            return [Decision(Outcome.DENY, "usage.length.min",
                             "The caption is empty or has no words; describe the image you want.",
                             {"letters": letters, "minimum": self.min_letters})]
        words = len(caption.split())
        if words > self.max_words:
            return [Decision(Outcome.DENY, "usage.length.words",
                             f"The caption has {words} words; the limit is {self.max_words}.",
                             {"words": words, "limit": self.max_words})]
        return []

    @staticmethod
    def _match(rule: TermRule, caption: str, normalised: NormalisedText) -> Decision | None:
        # A term's matches that are ordinary writing are dropped (``_not_the_term``); an author's
        # pattern says itself what it means, whole words included ("not wearing anything").
        matches = [m for m in rule.pattern.finditer(normalised.text)
                   if not _not_the_term(normalised.original_span(caption, m.start(), m.end())[2], rule.terms)]
        written: set[tuple[int, int]] = set()  # the spans an author's pattern matched
        for pattern in rule.author_patterns:
            try:
                found = list(pattern.finditer(normalised.text, timeout=AUTHOR_PATTERN_SECONDS))
            except TimeoutError:
                raise PatternTooSlow(f"{rule.rule_id}: the pattern {pattern.pattern!r} ran past "
                                     f"{AUTHOR_PATTERN_SECONDS * 1000:.0f} ms") from None
            matches.extend(found)
            written.update(m.span() for m in found)
        matches.sort(key=lambda m: m.start())
        if matches and rule.harmless_phrases is not None:
            names = [m.span() for m in rule.harmless_phrases.finditer(normalised.text)]
            matches = [m for m in matches if not any(a <= m.start() and m.end() <= b for a, b in names)
                       or _is_evasion(normalised.original_span(caption, m.start(), m.end())[2], rule.terms)]
        if not matches:
            return None
        # "a horror poster, no gore": a denying word that the caption negates is not asked for, but a
        # reviewer still looks (the negation may be a pretext). One plain, un-negated use denies.
        plain = [m for m in matches if not NEGATED.search(normalised.text[max(m.start() - 40, 0):m.start()])]
        match = (plain or matches)[0]
        start, end, quoted = normalised.original_span(caption, match.start(), match.end())
        evidence = {"category": rule.category, "span": [start, end], "matched": quoted}
        if (not plain and rule.outcome is Outcome.DENY and rule.rule_id.startswith("usage.blocked.")
                and not _is_evasion(quoted, rule.terms)
                and not any(c in INVISIBLE for c in caption[max(start - 1, 0) : end + 1])):
            return Decision(Outcome.REVIEW, rule.rule_id,
                            f"{rule.message.split(';')[0].rstrip('.')}, but the caption negates the word "
                            f"(matched “{quoted}”); the images will get an extra review.",
                            {**evidence, "negated": True})
        # Invisible characters right around the word (a bidi override that shows it reversed) are a
        # disguise too, though they fall outside the matched span.
        hidden = any(c in INVISIBLE for c in caption[max(start - 1, 0) : end + 1])
        # What a review section's own pattern matched is the wording it describes ("not wearing
        # anything"), not a term spelled differently: reviewed as written. (A deny section's
        # pattern match stays marked, so it is never read as a caption reporting on the harm.)
        as_written = match.span() in written and rule.outcome is Outcome.REVIEW
        disguised = hidden or (not as_written and _is_evasion(quoted, rule.terms))
        if rule.outcome is Outcome.REVIEW and rule.rule_id.startswith("usage.blocked.") and disguised:
            # A word that only asks for review when written plainly ("sex on the beach") is refused
            # when it is disguised ("s.e.x", "$ex", look-alike letters): nobody hides a harmless word.
            rule_id, message = rule.disguised_as or (f"{rule.rule_id}.evasion", rule.message.split(";")[0] + ".")
            return Decision(Outcome.DENY, rule_id,
                            f"{message} The word is spelled to get past the filter (matched “{quoted}”); "
                            "write it plainly if the caption is harmless.", {**evidence, "evasion": True})
        if disguised and rule.outcome is Outcome.DENY:
            evidence["evasion"] = True  # never read as a caption reporting on the harm ([reported_words])
        evidence["words_around"] = len(caption[:start].split()) + len(caption[end:].split())
        return Decision(rule.outcome, rule.rule_id, f"{rule.message} (matched “{quoted}”)", evidence)

    def _check_named(self, caption: str, normalised: NormalisedText, earlier: list[Decision]) -> list[Decision]:
        """The protected sections' decisions from the shipped name lists, and a review for a caption
        that names a person on no list. One decision per section: its strongest match."""
        assert self.gazetteer is not None
        tokens = caption_tokens(caption, normalised)
        letters = [c for c in caption if c.isalpha()]
        all_caps = len(letters) >= 4 and not any(c.islower() for c in letters)
        long_words = [t for t in tokens if len(t.text) > 3 and t.text.isalpha()]
        # "Rose Gold Watch On Marble": where nearly every word has a capital, capitals say less.
        title_case = len(long_words) >= 3 and sum(t.capitalised for t in long_words) >= 0.7 * len(long_words)
        matches = self.gazetteer.find(tokens, all_caps, normalised.text)
        rules = {rule.category: rule for rule in self.name_rules}
        decisions = []
        for kind in LISTS:
            rule = rules.get(kind)
            found = [m for m in matches if m.entry.kind == kind]
            if rule is None or not found:
                continue
            best = min(found, key=lambda m: (not m.strong, m.start - m.end, m.distance, m.start))
            start, end, quoted = normalised.original_span(caption, tokens[best.start].start, tokens[best.end - 1].end)
            outcome = rule.outcome if best.strong else min(rule.outcome, Outcome.REVIEW, key=lambda o: o.severity)
            spelled = " (a misspelling)" if best.distance else ""
            message = rule.message if best.strong else (
                f"{rule.message.split(';')[0].rstrip('.')}, perhaps; {best.note or 'the word is also an ordinary word or another name'}, "
                "so the images get an extra review")
            decisions.append(Decision(outcome, rule.rule_id, f"{message} (matched “{quoted}” as {best.entry.name}{spelled})", {
                "category": kind, "span": [start, end], "matched": quoted, "name": best.entry.name, "form": best.form,
                "edit_distance": best.distance, "list": f"gazetteer_{kind}.csv", "list_version": self.gazetteer.digest,
                "words_around": len(caption[:start].split()) + len(caption[end:].split()),
            }))
        people = rules.get("people")
        if people is not None:
            taken = [d.evidence["span"] for d in [*earlier, *decisions]
                     if d.rule_id.startswith("usage.protected.") and "span" in d.evidence]
            taken += [list(normalised.original_span(caption, tokens[m.start].start, tokens[m.end - 1].end)[:2]) for m in matches]
            for first, last, signal in self.gazetteer.name_like(tokens, normalised.text, title_case):
                start, end, quoted = normalised.original_span(caption, tokens[first].start, tokens[last - 1].end)
                if any(start < b and a < end for a, b in taken):
                    continue
                decisions.append(Decision(
                    min(people.outcome, Outcome.REVIEW, key=lambda o: o.severity), f"{people.rule_id}.unlisted",
                    f"The caption seems to name a person (“{quoted}”, {signal}); generated images of real people "
                    "are not allowed, so a reviewer checks who it is.",
                    {"category": "people", "span": [start, end], "matched": quoted, "signal": signal}))
                break
        return decisions

    def _check_personal_data(self, caption: str) -> list[Decision]:
        text = unicodedata.normalize("NFKC", caption)
        found: list[tuple[str, re.Match | Span]] = []
        if "email" in self.pii_kinds:
            found += [("email", m) for m in EMAIL.finditer(text)]
            found += [("email", m) for m in WRITTEN_OUT_EMAIL.finditer(text)
                      if not EMAIL.fullmatch(m.group()) and not any(m.start() < f.end() and f.start() < m.end()
                                                                    for _, f in found)]
        if "payment_card" in self.pii_kinds:
            found += [("payment_card", m) for m in CARD.finditer(text)
                      if luhn_valid(re.sub(r"\D", "", m.group()))]
        if "iban" in self.pii_kinds:
            for m in IBAN.finditer(text):
                span = _valid_iban_prefix(m)
                if span:
                    found.append(("iban", span))
        # Numbers said in words, keycaps or look-alike letters ("oh seven seven double oh ..."),
        # read as the digits they spell (found once, for the identity numbers and the rest).
        said = personal_data.spoken_numbers(text)
        if "id_number" in self.pii_kinds:  # before the phone: "passport number 123456789" is no phone
            found += [("id_number", Span(start, end)) for start, end in personal_data.id_numbers(text, said)]
        spoken = [number for number in said
                  if not any(number.start < f.end() and f.start() < number.end for _, f in found)]
        if "payment_card" in self.pii_kinds:
            for number in spoken:
                named = CARD_WORDS.search(text[max(0, number.start - 40) : number.start])
                if 13 <= len(number.digits) <= 19 and (luhn_valid(number.digits) or named):
                    found.append(("payment_card", Span(number.start, number.end)))
        if "phone" in self.pii_kinds:
            taken = [(m.start(), m.end()) for _, m in found]
            for m in PHONE.finditer(text):
                digits = re.sub(r"\D", "", m.group())
                overlaps = any(m.start() < e and s < m.end() for s, e in taken)
                if 9 <= len(digits) <= 15 and not overlaps and not _other_kind_of_number(text, m):
                    found.append(("phone", m))
            taken = [(f.start(), f.end()) for _, f in found]
            for number in spoken:
                if (7 <= len(number.digits) <= 15 and not personal_data.counting(number.digits)
                        and not any(number.start < e and s < number.end for s, e in taken)):
                    # Seven spoken digits are already a local number ("five five five, zero one nine nine"):
                    # nobody spells out a quantity digit by digit.
                    found.append(("phone", Span(number.start, number.end)))
        if "address" in self.pii_kinds:
            found += [("address", Span(start, end)) for start, end in personal_data.street_addresses(text)]
        labels = {"email": "an e-mail address", "phone": "a phone number", "payment_card": "a payment card number",
                  "iban": "a bank account number (IBAN)", "id_number": "an identity document's number",
                  "address": "someone's street address"}
        return [
            Decision(self.pii_outcome, f"usage.personal_data.{kind}",
                     f"The caption contains {labels[kind]}; remove personal data from captions.",
                     {"kind": kind, "span": [m.start(), m.end()]})
            for kind, m in found
        ]

    def _check_purpose(self, purpose: str | None) -> list[Decision]:
        # None means "caption only" (the command line); requests always declare a purpose.
        if not self.allowed_purposes or purpose is None:
            return []
        if purpose not in self.allowed_purposes:
            allowed = ", ".join(sorted(self.allowed_purposes))
            return [Decision(Outcome.DENY, "usage.purpose",
                             f"The purpose {purpose!r} is not allowed; choose one of: {allowed}.",
                             {"purpose": purpose, "allowed": sorted(self.allowed_purposes)})]
        return []

    def check_quotas(self, context: UsageContext) -> list[Decision]:
        """The daily quotas' decisions for the counts in ``context`` (the caller counts; we judge)."""
        decisions = []
        limit = self.per_user_per_day
        if limit is not None and context.user_images_today + context.num_images > limit:
            decisions.append(Decision(Outcome.DENY, "usage.quota.user",
                                      f"You have used {context.user_images_today} of your {limit} images today; "
                                      "ask for fewer images or try again tomorrow.",
                                      {"used": context.user_images_today, "requested": context.num_images, "limit": limit}))
        for group, used in context.group_images_today.items():
            group_limit = self.per_group_per_day.get(group)
            if group_limit is not None and used + context.num_images > group_limit:
                decisions.append(Decision(Outcome.DENY, "usage.quota.group",
                                          f"Your group {group!r} has used {used} of its {group_limit} images today.",
                                          {"group": group, "used": used, "limit": group_limit}))
        return decisions
