"""Named-entity matching for the usage policy's protected names: real people, copyrighted characters
and brands from shipped lists (gazetteers), read however a caption writes them, and a general
"names a person" signal for people on no list."""

from __future__ import annotations

import csv
import functools
import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from policies.normalize import NormalisedText, normalise

FOLDER = Path(__file__).resolve().parent / "default"
LISTS = {"people": "gazetteer_people.csv", "characters": "gazetteer_characters.csv", "brands": "gazetteer_brands.csv"}
WORD_LISTS = {"english": "gazetteer_english_words.csv", "given": "gazetteer_given_names.csv",
              "surnames": "gazetteer_surnames.csv"}

# Titles before a name ("President Xi", "Prince Charles"); several words are joined with a space.
TITLES = frozenset("""president vice-president senator sen governor gov chancellor minister premier king queen prince
princess pope emperor empress chairman sir dame lord duke duchess mayor sheikh ayatollah tsar czar kaiser fuhrer
congressman congresswoman speaker mr mrs ms dr general secretary ambassador comrade marshal colonel reverend rev""".split())
MULTI_WORD_TITLES = ("prime minister", "vice president", "first lady", "supreme leader", "crown prince",
                     "general secretary", "crown princess")
# Words that name a place, a day or a thing after a name: "Anne Frank House", "Lincoln Memorial",
# "Martin Luther King Jr. Day" are not pictures of the person.
PLACE_NOUNS = frozenset("""house museum memorial bridge street st avenue ave road boulevard square park airport station
center centre foundation institute library hall stadium arena school college university hospital day prize award
building tower theatre theater church cathedral chapel gallery collection estate birthplace highway
monument plaza falls lake lakes river island islands bay beach valley canyon harbour harbor county city hills springs
heights mountain mountains forest desert sea ocean""".split())
# Where a capitalised pair is a set phrase, not a person: figures of speech, dishes, drinks, breeds.
NOT_PEOPLE = frozenset(p.casefold() for p in (
    "Santa Claus", "Mother Nature", "Father Christmas", "Father Time", "Jack Frost", "Uncle Sam", "John Doe",
    "Jane Doe", "Tom Yum", "Tom Collins", "Bloody Mary", "Caesar Salad", "Eggs Benedict", "Lazy Susan",
    "Peeping Tom", "Jack Russell", "King Charles Spaniel", "Earl Grey", "Granny Smith", "Mary Jane", "Mona Lisa",
    "Tommy Gun", "Molotov Cocktail", "Big Ben", "General Tso", "Lady Liberty", "Lady Justice", "Lady Luck",
    "Grim Reaper", "Tooth Fairy", "Easter Bunny", "Sleeping Beauty", "Snow White", "Robin Hood", "Sherlock Holmes",
    "Jack Daniels", "Ben Jerry", "Dom Perignon", "Johnnie Walker", "Calvin Klein", "Ralph Lauren", "Tommy Hilfiger",
    "Hugo Boss", "Louis Vuitton", "Christian Dior", "Jimmy Choo", "Victoria Secret", "Mr Men", "Little Miss",
    "Kim Chi", "Shirley Temple", "Queen Anne", "Holy Spirit", "Saint Patrick", "Virgin Mary", "Art Deco",
    "Art Nouveau", "Hong Kong", "Sierra Leone", "Sierra Nevada", "Reina Sofia", "Costa Rica", "Puerto Rico",
    "San Marino", "Santa Monica", "Santa Fe", "Santa Barbara", "Santa Cruz", "Santa Clara", "Jordan River",
    "Bloody Caesar", "Lincoln Navigator", "Einstein Bros", "Einstein Brothers", "Peach Melba", "Oysters Rockefeller",
))
# A surname or single name alone before one of these is a thing named after the person ("a Churchill
# cigar", "a Mandela rose", "an Einstein bagel"): reviewed, not refused. Words that show the person
# ("portrait", "statue", "mask", "poster") are not here.
MODIFIED_NOUNS = frozenset("""china porcelain teacup teacups teapot tea cup cups mug mugs plate plates saucer set sets
cigar cigars box boxes tin jar bottle glass glasses vase clock watch pen pens stove oven boot boots shoe shoes hat
cap coat jacket suit shirt tie dress collar glasses spectacles chair table desk sofa lamp bed cabinet rose roses
tulip tulips lily orchid daisy apple apples pear plum potato variety cultivar hybrid breed dog horse cake cakes tart
pie pudding sponge biscuit biscuits cookie cookies bagel bagels bun buns bread sandwich salad soup steak sauce
cocktail drink wine whisky whiskey beer ale gin vodka rum coffee chocolate chocolates sweets candy dessert dish
recipe menu restaurant cafe bar pub hotel inn diner bakery brand label logo shop store stores outlet dealership
showroom car cars suv sedan truck van bus train locomotive ship boat yacht plane engine motor model models tank rifle
gun pistol revolver knife sword medal coin coins stamp stamps banknote note bill postcard postcards sign signs plaque
haircut hairstyle quiff moustache mustache beard fringe cut look era style styles fashion costume line range
collection edition series font typeface method technique effect principle theory equation rule test scale index
award prize trophy cup scholarship fellowship lecture foundation fund trust charity hospice clinic ward wing room
rooms hall tower building center centre college school university institute library museum memorial statue
square street road avenue bridge park airport station stadium arena theatre theater gallery garden gardens
estate mansion palace castle house home farm ranch vineyard winery distillery brewery factory mill mine""".split())
MODIFIER_SUFFIXES = frozenset({"style", "era", "esque", "inspired", "themed", "like", "type", "brand", "branded"})
# After a name these are no noun: "Putin riding", "Merkel at a podium", "Obama and Biden".
NOT_MODIFIERS = frozenset("""at in on with by for from to of and or but the a an as is was are were has had
while during near under over into onto after before beside behind between among against without about""".split())
# Offices that identify one person where a country or an ordinal says which ("the 45th president",
# "the president of Russia", "the current US president", "the pope"): a reviewer decides who.
COUNTRIES = r"""united\s+states(?:\s+of\s+america)?|u\.?s\.?a?\.?|america|united\s+kingdom|u\.?k\.?|great\s+britain|britain|england|scotland|wales|
northern\s+ireland|ireland|russia|russian\s+federation|china|france|germany|india|japan|canada|australia|new\s+zealand|italy|spain|
portugal|israel|iran|iraq|syria|turkey|brazil|argentina|mexico|ukraine|belarus|north\s+korea|south\s+korea|korea|poland|
hungary|venezuela|cuba|netherlands|belgium|sweden|norway|denmark|finland|austria|switzerland|greece|egypt|saudi\s+arabia|
pakistan|bangladesh|indonesia|philippines|thailand|vietnam|south\s+africa|nigeria|kenya|ethiopia|zimbabwe|uganda|
libya|afghanistan|the\s+vatican|vatican|monaco|the\s+netherlands|the\s+united\s+states|the\s+united\s+kingdom|the\s+uk|the\s+us|the\s+usa"""
COUNTRY_ADJECTIVES = r"""us|u\.s\.|usa|american|uk|british|english|scottish|russian|chinese|french|german|indian|japanese|canadian|
australian|italian|spanish|israeli|iranian|turkish|brazilian|argentine|argentinian|mexican|ukrainian|belarusian|
north\s+korean|south\s+korean|polish|hungarian|venezuelan|cuban|dutch|belgian|swedish|norwegian|danish|greek|egyptian|
saudi|pakistani|indonesian|filipino|south\s+african|nigerian|kenyan|zimbabwean|irish|new\s+zealand"""
OFFICES = r"""president|vice[\s-]+president|prime\s+minister|pm|chancellor|premier|king|queen|monarch|emperor|empress|
supreme\s+leader|dictator|head\s+of\s+state|leader|first\s+lady|crown\s+prince|prince|princess|tsar|czar|shah|sultan"""
_flat = functools.partial(re.sub, r"\s*\n\s*", "")
OFFICE_PATTERNS = (
    # "the 45th president (of the United States)", "the 1st prime minister of India"
    re.compile(rf"\b(?:the\s+)?\d+(?:st|nd|rd|th)\s+(?:{_flat(OFFICES)})\b(?:\s+of\s+(?:{_flat(COUNTRIES)})\b)?"),
    # "the president of Russia", "the king of England", "the first prime minister of India"
    re.compile(rf"\b(?:{_flat(OFFICES)})\s+of\s+(?:{_flat(COUNTRIES)})\b"),
    # "the current US president", "the Russian president", "the British PM"
    re.compile(rf"\b(?:the|current|sitting|former|incumbent|late|then)\s+(?:(?:current|sitting|former|incumbent|late|"
               rf"then|new|outgoing)\s+)*(?:{_flat(COUNTRY_ADJECTIVES)})\s+(?:{_flat(OFFICES)})\b"),
    # "Ukraine's president", "Russia's wartime president", "France's first lady" (a country's own)
    re.compile(rf"\b(?:{_flat(COUNTRIES)})['’]s?\s+(?:(?:current|sitting|former|incumbent|late|new|outgoing|wartime|"
               rf"elected|acting|interim|longtime|long-serving|young|aging|ageing)\s+)*(?:{_flat(OFFICES)})\b"),
    # "the pope", "the current pope", "the Dalai Lama"
    re.compile(r"\bthe\s+(?:(?:current|late|former|new|sitting)\s+)?(?:pope|holy\s+father|pontiff)\b"),
)
# Places, days, months, peoples and languages that follow a given name ("Austin Texas", "Sydney
# Harbour" aside, which are ordinary words): never a surname.
NOT_SURNAMES = frozenset("""january february march april may june july august september october november december
monday tuesday wednesday thursday friday saturday sunday christmas easter halloween thanksgiving ramadan diwali
hanukkah america american americans africa african asia asian europe european australia australian antarctica
england english britain british scotland scottish wales welsh ireland irish france french germany german italy
italian spain spanish portugal portuguese china chinese japan japanese korea korean india indian russia russian
ukraine ukrainian poland polish mexico mexican canada canadian brazil brazilian egypt egyptian israel israeli
texas california florida georgia virginia carolina dakota nevada arizona colorado oregon washington alaska hawaii
london paris berlin rome madrid tokyo beijing moscow sydney melbourne toronto vancouver chicago boston dallas
houston seattle denver atlanta miami york brooklyn manhattan amsterdam dublin edinburgh vienna prague venice milan
florence naples athens istanbul cairo dubai mumbai delhi shanghai seoul bangkok hanoi manila jakarta nairobi
lagos cape johannesburg rio lima bogota havana kyoto osaka oxford cambridge harvard yale hollywood broadway
olympics god jesus christ allah buddha""".split())
STYLE_BEFORE = re.compile(r"(?:style\s+of|shot\s+on|shot\s+with|manner\s+of|inspired\s+by|in\s+the\s+style|a\s+la|homage\s+to)\s*$")
# Characters' names of ordinary words that are everyday phrases as well: in lower case they are the phrase.
EVERYDAY_PHRASES = frozenset("""poison ivy|iron man|black widow|big bird|wonder woman|black panther|green arrow|the flash|
green lantern|cat woman|ant man|iron giant|mister freeze|mr freeze|two face|the joker|red skull|silver surfer|
captain hook|tinker bell|the thing|the hulk|the mask|little mermaid|the little mermaid""".replace("\n", "").split("|"))
# A brand word that is also an ordinary word ("Apple", "Tesla", "Shell") counts before these.
PRODUCT_NOUNS = frozenset("""logo store shop bottle can cup mug bag handbag purse backpack car truck suv sedan van
watch phone smartphone laptop tablet computer headphones earbuds shoes shoe sneakers sneaker trainers boots hoodie
shirt tshirt jacket jeans cap hat sunglasses advert ad ads advertisement billboard packaging package box sign
station card engine console controller perfume lipstick soap shampoo cereal burger fries coffee model macbook
iphone ipad airpods product products headquarters hq office factory dealership commercial poster""".split())
LEET = str.maketrans("4301571$@", "aeoistlsa")
TOKEN = re.compile(r"[^\W_]+")
SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv"})
# Words a name keeps in lower case ("Sonic the Hedgehog", "Lord of the Rings").
SMALL_WORDS = frozenset("the of and from in on a an de da del der von van la le al el bin".split())
# Surnames this common ("Johnson", "Harris") name no one alone; rarer ones ("Merkel") may.
COMMON_SURNAMES = 2500


def damerau_levenshtein(a: str, b: str, limit: int = 2) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from a to b; limit + 1 once over limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        previous2, previous = previous, current
    return previous[-1]


def sound_key(word: str) -> str:
    """A spelling that sounds the same written one way: "Starbux" and "Starbucks" both "starbux"."""
    key = word.replace("ph", "f").replace("ck", "k").replace("ks", "x").replace("cs", "x").replace("q", "k")
    key = re.sub(r"c(?=[aoukrl]|$)", "k", key).replace("z", "s").replace("y", "i")
    key = re.sub(r"(?<=\w\w\w)(?:er|ah|ar)$", "a", key)  # "Hitla", "Hitlah" sound as "Hitler"
    return re.sub(r"(.)\1+", r"\1", key)


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


@dataclass(frozen=True)
class Token:
    text: str  # normalised, lower case
    start: int  # in the normalised text
    end: int
    capitalised: bool
    position: int  # word index in the caption


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    context: frozenset[str] = frozenset()
    titles: frozenset[str] = frozenset()
    given: str = ""
    family: str = ""


@dataclass(frozen=True)
class Form:
    entry: Entry
    tokens: tuple[str, ...]
    # "name" (full name or alias), "ambiguous" (an ordinary word or another person's name too)
    role: str
    plain: bool  # every token an ordinary word: counts only written with capitals
    joined: bool = False  # a name of several words written as one


@dataclass(frozen=True)
class Match:
    entry: Entry
    start: int  # token positions, end exclusive
    end: int
    form: str  # how it was found: full name, alias, initial and surname, title and name ...
    strong: bool  # deny-strength (the section's outcome) or review only
    distance: int = 0
    spelled: str = ""
    note: str = ""  # why a match that would refuse is only reviewed ("the name may be a product or place")


OFFICE_HOLDER = Entry("people", "the holder of an office")


@dataclass
class Gazetteer:
    entries: list[Entry]
    english: frozenset[str]
    given_names: frozenset[str]
    surnames: frozenset[str]
    common_surnames: frozenset[str]
    digest: str
    forms_by_first: dict[str, list[Form]] = field(default_factory=lambda: defaultdict(list))
    by_family: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    by_given: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    # fuzzy look-up: one-letter deletions and sound keys of the indexed words -> those words
    near: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def load(cls, folder: Path = FOLDER) -> Gazetteer:
        digest = hashlib.sha256()

        def rows(name: str) -> list[dict[str, str]]:
            path = folder / name
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"the protected-name list {path} cannot be read: {exc.strerror or exc}") from None
            digest.update(name.encode() + b"\0" + raw + b"\0")
            return list(csv.DictReader(raw.decode("utf-8").splitlines()))

        words = {key: [next(iter(r.values())).strip().casefold() for r in rows(file)] for key, file in WORD_LISTS.items()}
        entries: list[tuple[Entry, list[str], list[str]]] = []
        for kind, file in LISTS.items():
            for row in rows(file):
                def cell(key: str, r: dict[str, str] = row) -> list[str]:
                    return [v.strip() for v in (r.get(key) or "").split(";") if v.strip()]
                name = row["name"].strip()
                tokens = _words(name)
                tokens = [t for t in tokens if t not in SUFFIXES] or tokens
                family = (row.get("family") or "").strip().casefold() or (tokens[-1] if kind == "people" else "")
                entry = Entry(kind, name, frozenset(_key(c) for c in cell("context")),
                              frozenset(t.casefold() for t in cell("titles")), tokens[0] if len(tokens) > 1 else "", family)
                entries.append((entry, [name, *cell("aliases")], cell("ambiguous")))
        gazetteer = cls([e for e, _, _ in entries], frozenset(words["english"]), frozenset(words["given"]),
                        frozenset(words["surnames"]), frozenset(words["surnames"][:COMMON_SURNAMES]), digest.hexdigest()[:12])
        for entry, names, ambiguous in entries:
            for name in names:
                gazetteer._add(entry, _words(name), "name")
            for name in ambiguous:
                gazetteer._add(entry, _words(name), "ambiguous")
            if entry.kind == "people" and entry.given:
                gazetteer.by_family[entry.family].append(entry)
                gazetteer.by_given[entry.given].append(entry)
                # A surname that means no one else ("Obama", "Putin", "Zelensky") names the person alone.
                if gazetteer.distinctive(entry.family):
                    gazetteer._add(entry, (entry.family,), "name")
        return gazetteer

    def ordinary(self, word: str) -> bool:
        return word in self.english

    def distinctive(self, word: str) -> bool:
        """A word that is no English word and no common given name or surname: "Obama", not "Swift"
        (a word), "Johnson" (a common surname) or "Kamala" (a given name)."""
        return (len(word) >= 4 and word.isalpha() and word not in self.english and word not in self.given_names
                and word not in self.common_surnames)

    def _add(self, entry: Entry, tokens: Iterable[str], role: str) -> None:
        tokens = tuple(t for t in tokens if t not in SUFFIXES) or tuple(tokens)
        if not tokens:
            return
        plain = all(self.ordinary(t) or t in NOT_SURNAMES for t in tokens)
        if len(tokens) == 1 and plain and role == "name" and entry.kind != "people":
            role = "ambiguous"  # "Venom", "Ratatouille": only with capitals or context
        # A person's listed alias that is also a word ("Macron") stands, written with a capital.
        self.forms_by_first[tokens[0]].append(Form(entry, tokens, role, plain))
        if len(tokens) > 1:  # "CocaCola", "Spiderman": the words written as one, only as written
            self.forms_by_first["".join(tokens)].append(Form(entry, ("".join(tokens),), role, plain, joined=True))
        if role == "name":  # misspellings of a name; an ambiguous word is only ever matched as written
            for word in tokens:
                if len(word) >= 4:
                    for key in (*_deletes(word), word, sound_key(word)):
                        self.near[key].add(word)

    # -- matching -------------------------------------------------------------------------------

    def may_be_misspelt(self, word: str) -> bool:
        """Whether a word may stand alone for a name misspelt: no English word or known name itself."""
        return word not in self.english and word not in self.given_names and word not in self.surnames

    def spellings(self, word: str, standalone: bool) -> list[tuple[str, int]]:
        """Indexed words a caption word may be a misspelling of, with the distance: one edit for
        words of 5 letters or more, or the same sound. A caption word that is itself an English word
        or a known name is what it says (``standalone``: it must stand as a name on its own)."""
        if len(word) < 4 or not word.isalpha():
            return []
        if standalone and not self.may_be_misspelt(word):
            return []
        found = {}
        for key in (*_deletes(word), word, sound_key(word)):
            for candidate in self.near.get(key, ()):
                if candidate == word or candidate in found:
                    continue
                if len(candidate) < (5 if standalone else 4) or (standalone and len(word) < 5):
                    continue
                if sound_key(candidate) == sound_key(word) or damerau_levenshtein(word, candidate, 1) <= 1:
                    found[candidate] = 1
        return list(found.items())

    def find(self, tokens: list[Token], all_caps: bool, normalised: str = "") -> list[Match]:
        """Every reading of the caption's words as a listed person, character or brand."""
        matches: list[Match | None] = []
        words = [t.text for t in tokens]
        context = set(words) | {a + " " + b for a, b in zip(words, words[1:])}
        for i, token in enumerate(tokens):
            # (word, distance, joined): as written, two words written as one name, or a misspelling
            starts: list[tuple[str, int, bool]] = [(token.text, 0, False)]
            if (i + 1 < len(tokens) and min(len(token.text), len(tokens[i + 1].text)) >= 3
                    and normalised[token.end:tokens[i + 1].start] in (" ", "-")):
                starts.append((token.text + tokens[i + 1].text, 0, True))  # "Sponge Bob" for "SpongeBob"
            loose = self.spellings(token.text, standalone=False)
            # A one-word name misspelt alone only where it is written as a name ("Starbux", not "mandala").
            alone = (token.capitalised or all_caps) and len(token.text) >= 5 and self.may_be_misspelt(token.text)
            strict = [(word, distance) for word, distance in loose if len(word) >= 5] if alone else []
            starts += [(word, distance, False) for word, distance in loose]
            for first, distance, joined in starts:
                for form in self.forms_by_first.get(first, ()):
                    if joined and len(form.tokens) > 1:
                        continue
                    # A one-word name misspelt only where the caption's word is no word or name itself.
                    if distance and (form.joined or form.role != "name" or (len(form.tokens) == 1 and (first, distance) not in strict)):
                        continue
                    found = self._align(form, tokens, i, distance, joined)
                    if found is not None:
                        matches.append(self._judge(form, tokens, found, context, all_caps))
            matches += self._people_forms(tokens, i, strict, normalised)
        matches = [m for m in matches if m is not None and not self._not_the_entity(m, tokens, normalised)]
        matches = [self._as_modifier(m, tokens, normalised, all_caps) for m in matches]
        matches = [m for m in matches if m is not None]
        # "The Donald Duck": a nickname whose last word begins another list's name gives way to it.
        matches = [m for m in matches if not (m.form in ("alias", "full name") and m.end - m.start > 1 and any(
            o.entry.kind != m.entry.kind and o.strong and m.start < o.start < m.end < o.end for o in matches))]
        matches += self.offices(tokens, normalised)
        strong = [m for m in matches if m.strong]
        # "Lincoln Continental": a weak reading inside another list's strong one gives way to it.
        return [m for m in matches if m.strong or not any(o.entry.kind != m.entry.kind and o.start < m.end and m.start < o.end
                                                          for o in strong)]

    def _as_modifier(self, match: Match, tokens: list[Token], normalised: str, all_caps: bool) -> Match | None:
        """A person's surname or single name alone before a noun it names a thing by ("a Churchill
        cigar", "a Mandela rose", "an Elvis-style quiff", "an Einstein Bros box"): reviewed with a
        message that the name may be a product or place. Joined by a hyphen to another word that is
        no name ("Gore-Tex"), it is a compound and not the name at all."""
        if match.entry.kind != "people" or match.end - match.start != 1 or "title" in match.form or "initial" in match.form:
            return match
        token = tokens[match.start]
        after = match.end
        if after >= len(tokens):
            return match
        following = tokens[after]
        gap = normalised[token.end:following.start]
        note = "the name may be a product, place or thing named after the person"
        if gap == "-":
            if following.text in MODIFIER_SUFFIXES:
                return Match(match.entry, match.start, match.end, "name as a modifier", False, match.distance, note=note)
            if not self._person_word(following.text):
                return None  # "Gore-Tex": a compound word
            return match  # "Trump-Putin summit"
        if gap.strip(" '’") or following.text in NOT_MODIFIERS:
            return match
        nominal = following.text in MODIFIED_NOUNS
        # "Einstein Bros", "Lincoln Navigator", "Churchill War Rooms": a capitalised word that is no name
        title_case = not all_caps and following.capitalised and len(following.text) > 1 and following.text.isalpha() \
            and not following.text.endswith(("ing", "ed")) and not self._person_word(following.text) \
            and following.text not in TITLES and following.text not in NOT_SURNAMES and not _title_case(tokens)
        if nominal or title_case:
            return Match(match.entry, match.start, match.end, "name as a modifier", False, match.distance, note=note)
        return match

    def _person_word(self, word: str) -> bool:
        """A word that is a listed person's name or a known given name or surname."""
        return (word in self.by_family or word in self.by_given or word in self.given_names or word in self.surnames
                or any(f.entry.kind == "people" for f in self.forms_by_first.get(word, ())))

    def offices(self, tokens: list[Token], normalised: str) -> list[Match]:
        """An office that names one person ("the 45th president of the United States", "the prime
        minister of the UK", "the pope"): reviewed, as a reviewer decides who it is. A role with no
        country ("a president at a podium", "a queen on a throne") is no one."""
        found = []
        for pattern in OFFICE_PATTERNS:
            for hit in pattern.finditer(normalised):
                first = next((t.position for t in tokens if t.end > hit.start()), None)
                last = next((t.position for t in reversed(tokens) if t.start < hit.end()), None)
                if first is None or last is None or first > last:
                    continue
                # "the pope's hat in a museum": the office names a thing
                if last + 1 < len(tokens) and tokens[last + 1].text in MODIFIED_NOUNS:
                    continue
                found.append(Match(OFFICE_HOLDER, first, last + 1, "office", False,
                                   note="the caption names an office held by one person; a reviewer decides who"))
        return found

    @staticmethod
    def _not_the_entity(match: Match, tokens: list[Token], normalised: str) -> bool:
        """A person's name before a place ("Anne Frank House", "Lincoln Memorial"), or a brand
        named as a style ("IKEA-style instructions", "in the style of Pixar")."""
        after = match.end
        while after < len(tokens) and tokens[after].text in SUFFIXES:
            after += 1
        following = tokens[after].text if after < len(tokens) else ""
        if match.entry.kind == "people":
            return following in PLACE_NOUNS or Gazetteer._set_phrase(tokens, match.start, match.end)
        if match.entry.kind == "brands":
            return following == "style" or bool(STYLE_BEFORE.search(normalised[max(0, tokens[match.start].start - 24):tokens[match.start].start]))
        return False

    def _align(self, form: Form, tokens: list[Token], i: int, distance: int, joined: bool) -> tuple[int, int, int] | None:
        """Whether the form's words follow from token i (the first already matched at ``distance``):
        (start, end, total distance) or None. People's names may have middle names or initials
        between the first and the last ("Donald J. Trump", "Vladimir Vladimirovich Putin")."""
        if joined:  # the form is one word, written as two in the caption
            return (i, i + 2, 0)
        position, total = i + 1, distance
        for index, word in enumerate(form.tokens[1:], 1):
            gap = 0
            while True:
                if position >= len(tokens):
                    return None
                text = tokens[position].text
                plural = form.entry.kind != "people" and index == len(form.tokens) - 1 and text in (word + "s", word + "es")
                if text == word or plural:
                    break
                if len(word) >= 4 and (sound_key(text) == sound_key(word) or damerau_levenshtein(text, word, 1) <= 1):
                    total += 1
                    break
                middle = tokens[position]
                if (form.entry.kind == "people" and index == len(form.tokens) - 1 and gap < 2
                        and (len(middle.text) == 1 or middle.capitalised) and middle.text.isalpha()):
                    gap += 1
                    position += 1
                    continue
                return None
            position += 1
        letters = sum(len(w) for w in form.tokens)
        if total > (2 if letters >= 10 else 1) or (total and letters < 5):
            return None
        return (i, position, total)

    def _judge(self, form: Form, tokens: list[Token], span: tuple[int, int, int], context: set[str],
               all_caps: bool) -> Match | None:
        start, end, distance = span
        entry = form.entry
        written = tokens[start:end]
        capitalised = all(t.capitalised for t in written if t.text not in SMALL_WORDS) or all_caps
        misspelt = distance > 0
        if misspelt and any(self.ordinary(t.text) for t in written) and not capitalised:
            return None  # "a tailor swift at work": only "Tailor Swift" is the name misspelt
        has_context = bool(entry.context & context)
        label = "full name" if form.role == "name" and len(form.tokens) > 1 else "alias"
        if form.role == "ambiguous":
            if has_context:
                return Match(entry, start, end, "name with context", True, distance)
            # Capitals at the start of a caption say nothing, but for a person's own surname ("Musk on Mars").
            initial = written[0].position == 0 and entry.kind != "people"
            if not capitalised or (initial and entry.kind != "brands"):
                return None
            if entry.kind == "brands":
                # "a red apple", "Apple pie": a brand word that is an ordinary word only before a product
                return Match(entry, start, end, "brand before a product", False, distance) if self._before_product(tokens, end) else None
            return Match(entry, start, end, "name written with capitals", False, distance)
        # A full name of several words is the name whatever its case ("Bill gates", "Bugs bunny"); a
        # character's name made only of ordinary words needs one capital ("an iron man triathlon").
        several = len(form.tokens) > 1 and not form.joined and entry.kind in ("people", "characters")
        # A capital at the caption's start says nothing for a character's name that is an everyday
        # phrase too ("Poison ivy identification chart").
        if form.plain and not capitalised and not (several and (entry.kind == "people" or any(
                t.capitalised and not (t.position == 0 and " ".join(form.tokens) in EVERYDAY_PHRASES) for t in written))):
            return None  # "a red bull", "a swift": only written as names
        return Match(entry, start, end, label + (" misspelt" if misspelt else ""), True, distance)

    @staticmethod
    def _before_product(tokens: list[Token], end: int) -> bool:
        return end < len(tokens) and tokens[end].text in PRODUCT_NOUNS

    def _people_forms(self, tokens: list[Token], i: int, misspelt: list[tuple[str, int]], normalised: str = "") -> list[Match]:
        """Initial and surname ("B. Obama"), title and surname or given name ("President Xi",
        "Queen Elizabeth"), a distinctive surname misspelt alone ("Obamma"), and a given name with
        the surname's initial ("Adolf H.")."""
        found: list[Match] = self._given_and_initial(tokens, i, normalised)
        token = tokens[i]
        # "Gore-Tex": a word joined by a hyphen to a word that is no name is a compound, not the surname.
        if i + 1 < len(tokens) and normalised[token.end:tokens[i + 1].start] == "-" \
                and tokens[i + 1].text not in MODIFIER_SUFFIXES and not self._person_word(tokens[i + 1].text):
            return found
        candidates = [(token.text, 0), *misspelt]
        title = _title_before(tokens, i)
        for word, distance in candidates:
            for entry in self.by_family.get(word, ()):
                if distance and self.distinctive(entry.family) and len(entry.family) >= 5:
                    found.append(Match(entry, i, i + 1, "surname misspelt", True, distance))
                if distance and not token.capitalised:
                    continue
                initials = _initials_before(tokens, i, normalised)
                if initials and initials[0][0] == entry.given[0] and (token.capitalised or self.distinctive(entry.family)):
                    found.append(Match(entry, i - len(initials), i + 1, "initial and surname", True, distance))
                if title is not None and (token.capitalised or self.distinctive(entry.family)):
                    found.append(Match(entry, title, i + 1, "title and surname", True, distance))
            if title is not None and token.capitalised and not distance:
                for entry in self.by_given.get(word, ()):
                    if entry.titles and " ".join(w.text for w in tokens[title:i]) in entry.titles:
                        found.append(Match(entry, title, i + 1, "title and given name", True))
        return found

    def _given_and_initial(self, tokens: list[Token], i: int, normalised: str) -> list[Match]:
        """A capitalised given name and a capital initial ("Adolf H.", "Jacinda A."): refused where the
        given name is on no common-names list or the pair means one listed person only."""
        token = tokens[i]
        if not token.capitalised or i + 1 >= len(tokens):
            return []
        initial = tokens[i + 1]
        if len(initial.text) != 1 or not initial.text.isalpha() or not initial.capitalised:
            return []
        dotted = normalised[initial.end:initial.end + 1] == "."
        if initial.text in "ai" and not dotted:
            return []  # "Adolf A lot", "Jacinda I think"
        if i + 2 < len(tokens) and not dotted and tokens[i + 2].capitalised and len(tokens[i + 2].text) > 1:
            return []  # a middle initial, the surname follows ("Donald J Trump" is matched as a full name)
        entries = [e for e in self.by_given.get(token.text, ()) if e.family[:1] == initial.text]
        distinctive = token.text not in self.given_names and token.text not in self.english
        if len({e.family for e in entries}) != 1 or not (distinctive or dotted):
            return []
        return [Match(entries[0], i, i + 2, "given name and initial", True)]

    # -- people on no list ----------------------------------------------------------------------

    def name_like(self, tokens: list[Token], normalised: str, title_case: bool) -> list[tuple[int, int, str]]:
        """Spans that read as a person's name: a capitalised given name and a surname-like word
        ("Keir Starmer"), or a title and a capitalised name ("Senator Whitehouse")."""
        spans = []
        for i, token in enumerate(tokens):
            if STYLE_BEFORE.search(normalised[max(0, token.start - 24):token.start]):
                continue
            title = None
            if token.text in TITLES or _title_at(tokens, i):
                title = i
            if title is not None:
                end = i + (2 if _title_at(tokens, i) else 1)
                if end < len(tokens) and self._name_word(tokens[end], strict=title_case, after_title=True):
                    if not self._set_phrase(tokens, i, end + 1):
                        spans.append((i, end + 1, "title and name"))
                continue
            if not token.capitalised or token.text not in self.given_names:
                continue
            j = i + 1
            while j < len(tokens) and j - i <= 2 and len(tokens[j].text) == 1 and tokens[j].capitalised:
                j += 1  # middle initials
            if j < len(tokens) and j + 1 < len(tokens) and tokens[j].text in self.given_names and tokens[j].capitalised \
                    and self._name_word(tokens[j + 1], strict=True):
                j += 1  # a middle name ("John Everett Millais")
            if j >= len(tokens):
                continue
            ambiguous_given = self.ordinary(token.text) or token.text in NOT_SURNAMES
            surname = tokens[j]
            if not self._name_word(surname, strict=ambiguous_given or title_case):
                continue
            if j + 1 < len(tokens) and (tokens[j + 1].text in PLACE_NOUNS or tokens[j + 1].text == "style"):
                continue
            if self._set_phrase(tokens, i, j + 1):
                continue
            spans.append((i, j + 1, "given name and surname"))
        return spans

    def _name_word(self, token: Token, strict: bool, after_title: bool = False) -> bool:
        """A capitalised word that can be a surname: no English word (or, unless ``strict``, a common
        surname that is one: "Smith", "West"), no place, month or people."""
        text = token.text
        if not token.capitalised or not text.isalpha() or len(text) < 2 or text in NOT_SURNAMES or text in TITLES:
            return False
        if text in PLACE_NOUNS:
            return False
        if not self.ordinary(text):
            return True
        return not strict and (text in self.surnames or (after_title and text in self.given_names))

    @staticmethod
    def _set_phrase(tokens: list[Token], start: int, end: int) -> bool:
        return any(" ".join(t.text for t in tokens[a:b]) in NOT_PEOPLE
                   for a in range(max(0, start - 1), start + 1) for b in range(end, min(len(tokens), end + 2) + 1))


def _title_case(tokens: list[Token]) -> bool:
    """"Putin Riding A Horse": where nearly every word has a capital, a capital says nothing."""
    long_words = [t for t in tokens if len(t.text) > 3 and t.text.isalpha()]
    return len(long_words) >= 3 and sum(t.capitalised for t in long_words) >= 0.7 * len(long_words)


def _title_at(tokens: list[Token], i: int) -> bool:
    return i + 1 < len(tokens) and f"{tokens[i].text} {tokens[i + 1].text}" in MULTI_WORD_TITLES


def _title_before(tokens: list[Token], i: int) -> int | None:
    """The token position where a title right before token i begins ("Prime Minister Sunak")."""
    if i >= 2 and f"{tokens[i - 2].text} {tokens[i - 1].text}" in MULTI_WORD_TITLES:
        return i - 2
    if i >= 1 and tokens[i - 1].text in TITLES:
        return i - 1
    return None


def _initials_before(tokens: list[Token], i: int, normalised: str = "") -> list[str]:
    """Capital initials right before token i ("B. Obama", "J.K. Rowling"); never the article "a" or
    "an" or the pronoun "I" in lower case, and a capital "A" or "I" only with its full stop."""
    initials: list[str] = []
    j = i - 1
    while (j >= 0 and len(tokens[j].text) == 1 and tokens[j].text.isalpha() and len(initials) < 3 and tokens[j].capitalised
           and (tokens[j].text not in "ai" or normalised[tokens[j].end:tokens[j].end + 1] == ".")):
        initials.insert(0, tokens[j].text)
        j -= 1
    return initials


def _key(text: str) -> str:
    return " ".join(_words(text))


def _words(text: str) -> tuple[str, ...]:
    """A name's words as the caption's are read: normalised, split at anything but letters and
    digits ("Coca-Cola" is "coca cola", "McDonald's" is "mcdonald")."""
    plain = normalise(text).text
    words = [w.translate(LEET) if any(c.isdigit() for c in w) and any(c.isalpha() for c in w) and len(w) > 3 else w
             for w in TOKEN.findall(plain.replace("'s", "").replace("’s", ""))]
    return tuple(words)


def caption_tokens(caption: str, normalised: NormalisedText) -> list[Token]:
    """The caption's words (normalised) with whether each was written with a capital."""
    tokens: list[Token] = []
    text = normalised.text
    for match in TOKEN.finditer(text):
        word, start, end = match.group(), match.start(), match.end()
        # A possessive's s ("Obama's", "Obama’s") is not a word.
        if word == "s" and start > 0 and text[start - 1] in "'’`":
            continue
        if any(c.isdigit() for c in word) and any(c.isalpha() for c in word) and len(word) > 3:
            word = word.translate(LEET)  # "t4yl0r" is "taylor"
        first = caption[normalised.origin[start]]
        tokens.append(Token(word, start, end, first.isupper(), len(tokens)))
    return tokens


LIST_FILES = (*LISTS.values(), *WORD_LISTS.values())


def lists_folder_of(policy_folder: Path) -> Path:
    """Where a policy folder's name lists are read from: the folder itself when it holds them (a
    proposed policy with its own lists), else the packaged ones. Some but not all is an error."""
    present = [name for name in LIST_FILES if (policy_folder / name).is_file()]
    if present and len(present) != len(LIST_FILES):
        missing = sorted(set(LIST_FILES) - set(present))
        raise ValueError(f"{policy_folder} holds some of the name lists but not {', '.join(missing)}")
    return policy_folder if present else FOLDER


@functools.lru_cache(maxsize=4)
def gazetteer_for(folder: Path, digest: str) -> Gazetteer:
    """The lists of ``folder``, kept per content (``digest``: the policy loader's hash of the files), so
    an edited list is read again while unchanged ones are loaded once per process."""
    return Gazetteer.load(folder)


def lists_digest(folder: Path) -> tuple[str, bytes]:
    """(hex digest, the bytes hashed) of the name lists in ``folder``: the loader adds the bytes to the
    policy version, and the digest keys the loaded lists."""
    digest, hashed = hashlib.sha256(), []
    for name in LIST_FILES:
        hashed.append(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
        digest.update(hashed[-1])
    return digest.hexdigest(), b"".join(hashed)


@functools.lru_cache(maxsize=1)
def _packaged_digest() -> str:
    return lists_digest(FOLDER)[0]


def default_gazetteer() -> Gazetteer:
    return gazetteer_for(FOLDER, _packaged_digest())
