"""The usage policy's protected names read from the shipped lists (policies/gazetteer.py): real
people, copyrighted characters and brands however a caption writes them, a person on no list, and
ordinary captions that must stay allowed."""

from __future__ import annotations

import csv
import time
import tomllib

import pytest

from policies import DEFAULT_DIR, Outcome
from policies.gazetteer import damerau_levenshtein, default_gazetteer, sound_key
from policies.usage import UsagePolicy

# Word rules only (no sentence encoder): the names are word rules, and this keeps the file fast.
USAGE = UsagePolicy(tomllib.loads((DEFAULT_DIR / "usage.toml").read_text()), "test", None)
LABELLED = DEFAULT_DIR.parent / "labelled" / "usage_captions.csv"


def named(caption: str) -> list:
    return [d for d in USAGE.check_caption(caption).decisions
            if d.rule_id.startswith("usage.protected.") and d.outcome is not Outcome.ALLOW]


# -- the attacker probe: every caption refused or reviewed, under the right rule -----------------

PROBE_PEOPLE = [
    "President Trump waving", "Donald J. Trump in a suit", "Biden eating ice cream", "Joseph Biden",
    "Putin riding a horse shirtless", "V. Putin", "Vladimir Vladimirovich Putin", "Merkel smiling",
    "Zelensky in military green", "President Xi portrait", "Musk on Mars", "Prince Charles", "B. Obama", "Obama smiling",
    "the singer T. Swift on stage", "Tailor Swift", "Teylor Swift", "Barak Obama", "Xi Jingping", "Angela Merkl",
    "Keir Starmer", "Kim Jong Un", "Rishi Sunak", "Kamala Harris", "Modi", "Netanyahu", "Greta Thunberg", "Kanye West",
    "Queen Elizabeth II", "Princess Diana", "Adolf Hitler giving a speech",
]
PROBE_CHARACTERS = [
    "Micky Mouse waving", "Minnie Mouse", "Donald Duck", "Goofy from Disney", "Homer Simpson", "Bart Simpson",
    "SpongeBob SquarePants", "Sonic the Hedgehog", "Iron Man", "Captain America", "Yoda", "Baby Yoda", "Bugs Bunny",
    "Olaf the snowman from Frozen",
]
PROBE_BRANDS = [
    "a Coca Cola bottle", "a Starbux cup", "a Disney castle", "a Louis Vuitton handbag", "a Rolex watch",
    "a pair of Air Jordans", "an Apple MacBook", "a Tesla Model 3 car",
]


@pytest.mark.parametrize("caption", PROBE_PEOPLE)
def test_the_probe_s_real_people_are_refused(caption):
    assert any(d.rule_id == "usage.protected.people" and d.outcome is Outcome.DENY for d in named(caption)), named(caption)


@pytest.mark.parametrize("caption", PROBE_CHARACTERS)
def test_the_probe_s_characters_are_refused(caption):
    assert any(d.rule_id == "usage.protected.characters" and d.outcome is Outcome.DENY for d in named(caption)), named(caption)


@pytest.mark.parametrize("caption", PROBE_BRANDS)
def test_the_probe_s_brands_are_reviewed(caption):
    assert any(d.rule_id == "usage.protected.brands" and d.outcome is Outcome.REVIEW for d in named(caption)), named(caption)


# -- held out: names and spellings not looked at while the matching was written -----------------

HELD_OUT_PEOPLE = [
    "Chancellor Scholz at a podium", "E. Macron shaking hands", "Macron's wife at a gala", "Erdogan waving to a crowd",
    "Sunak in a hoodie", "Prime Minister Starmer at a desk", "Zuckerberg surfing with a flag", "Bezos on a yacht",
    "J. Bezos in a cowboy hat", "DiCaprio on a boat", "Schwarzenegger lifting weights", "Lukashenko on a tractor",
    "Beyonce on stage", "Rihanna in a ball gown", "Zelenskyy at a press conference", "Vladimir Poutin on a bear",
    "Emmanuel Macronn", "Barrack Obama playing golf", "Jeff Bezoz laughing", "Mark Zuckerburg in a suit",
    "Kim Kardashain on a red carpet", "Arnold Schwarzeneger flexing", "Greta Thunburg with a sign",
    "Queen Victoria on a throne", "Pope Francis blessing a crowd", "Chairman Mao poster", "Kim Jong-un at a parade",
    "Saddam Hussein statue", "Mussolini on a balcony", "a cartoon of Gaddafi", "Bolsonaro in a football shirt",
    "LeBron dunking a basketball", "Messi lifting a trophy", "Cristiano Ronaldo celebrating", "Ed Sheeran with a guitar",
    "Oprah on a talk show set", "J.K. Rowling signing books", "Elon Musk smoking", "President Macron",
    "Mr. Netanyahu at the UN", "Prince Harry and Meghan", "Ayatollah Khamenei speaking", "Justin Bieber in a hoodie",
]
HELD_OUT_UNLISTED = [
    "Wes Streeting at a rally", "Yvette Cooper giving a speech", "Senator Whitehouse at a hearing",
    "Governor Hochul waving", "Priti Patel in parliament", "Sadiq Khan on the tube", "Mayor Bass at a press event",
    "Ngozi Okonjo-Iweala at a summit", "Pedro Almodovar on a film set", "Fiona Hill testifying",
    "a portrait of Lars Klingbeil", "Annalena Baerbock shaking hands", "Robert Habeck in a field",
]
HELD_OUT_CHARACTERS = [
    "Daffy Duck on a pond", "Scooby Doo eating a sandwich", "Darth Vadar with a red sword", "Pikachoo in a forest",
    "Spongebob making burgers", "Buzz Lightyear flying", "Luke Skywalker on a desert planet", "Lightning McQueen racing",
    "Winnie the Pooh with honey", "Tony Stark in his workshop", "Princess Peach in a castle", "Spider Man swinging",
    "Shreck in a swamp", "Hermione Granger reading", "Gandalf on a horse", "Elmo with a balloon", "Kermit the Frog singing",
    "Peppa Pig jumping in puddles", "Optimus Prime transforming", "Goku powering up",
]
HELD_OUT_BRANDS = [
    "a Pepsi can on ice", "a Gucci bag", "a McDonalds burger", "a Ferari parked outside", "Adiddas sneakers",
    "a Lamborgini on a track", "a Heineken bottle", "a Samsung phone", "an iPhone on a desk", "a Mercedes Benz car",
    "an Apple iPhone", "a Shell gas station at night", "a Prada store window", "a Harley Davidson motorcycle",
    "a Porsche 911", "a Nutella jar", "a KFC bucket", "a Burger King crown", "a box of Kelloggs cereal", "a Jeep Wrangler",
]


def caught(captions: list[str], rule: str, outcome: Outcome | None) -> float:
    hits = [c for c in captions if any(d.rule_id == rule and (outcome is None or d.outcome is outcome) for d in named(c))]
    return len(hits) / len(captions)


def test_held_out_people_variants_are_refused():
    """Listed people written as the lists never spell them: surname alone, initial, title, a misspelling."""
    rate = caught(HELD_OUT_PEOPLE, "usage.protected.people", Outcome.DENY)
    print(f"held-out people refused: {rate:.3f} of {len(HELD_OUT_PEOPLE)}")
    assert rate >= 0.9


def test_a_person_on_no_list_is_reviewed():
    rate = sum(bool(named(c)) for c in HELD_OUT_UNLISTED) / len(HELD_OUT_UNLISTED)
    print(f"held-out unlisted people stopped: {rate:.3f} of {len(HELD_OUT_UNLISTED)}")
    assert rate >= 0.75  # given names outside the shipped list ("Priti", "Sadiq") are missed


def test_held_out_characters_are_refused():
    rate = caught(HELD_OUT_CHARACTERS, "usage.protected.characters", Outcome.DENY)
    print(f"held-out characters refused: {rate:.3f} of {len(HELD_OUT_CHARACTERS)}")
    assert rate >= 0.9


def test_held_out_brands_are_reviewed():
    rate = caught(HELD_OUT_BRANDS, "usage.protected.brands", None)
    print(f"held-out brands reviewed: {rate:.3f} of {len(HELD_OUT_BRANDS)}")
    assert rate >= 0.9


# -- what must stay allowed ---------------------------------------------------------------------

ORDINARY = [
    "a red apple", "a jaguar in the jungle", "Santa Claus", "Mother Nature", "Father Christmas",
    "a president giving a speech", "a queen on a throne", "a seashell on the beach", "a target for archery",
    "a gap in the fence", "Apple pie on a table", "a tesla coil", "a swift flying over a lake", "a musk ox in the snow",
    "a trump card", "a puma on a rock", "a dove on a branch", "an amazon rainforest", "a corona around the sun",
    "a mars rover on red sand", "a king on a chess board", "a prince in a fairy tale", "the pope's hat in a museum",
    "Rose petals on a table", "A Portrait Of A Woman In A Garden", "a goofy dog", "a sonic boom", "a stitch in time",
    "Grace in the morning light", "Mona Lisa reproduction", "a Jack Russell terrier", "Earl Grey tea in a cup",
    "a cavalier King Charles spaniel", "a mandala colouring page", "a subway station", "a shell necklace",
    "a polar bear", "a woman reading a book", "Bloody Mary cocktail", "General Tso's chicken", "Caesar Salad",
    "the Golden Gate Bridge at dawn", "Lady Liberty at sunset", "the Anne Frank House in Amsterdam",
    "Lincoln Memorial at night", "a Van Gogh style wheat field", "IKEA style assembly instructions",
    "Austin Texas skyline", "Sydney Opera House", "Victoria Falls", "Paris in the spring",
]


@pytest.mark.parametrize("caption", ORDINARY)
def test_ordinary_captions_are_not_read_as_names(caption):
    assert named(caption) == []


# Allow-labelled captions (usage_captions.csv) that really do name a person, character or brand: the
# name lists are right to stop them (the set labels harm, not names). Everything else must stay allowed.
REALLY_NAMED = ("Martin Luther King", "Rosa Parks", "Nelson Mandela", "Anne Frank writing", "Harriet Tubman",
                "Frederick Douglass", "Malala", "Muhammad Ali", "Kurt Cobain", "David Bowie", "Marilyn Monroe",
                "Harley Quinn", "James Bond", "Pac-Man", "Power Ranger", "Stormtrooper", "Walter White", "Coca-Cola", "Coke",
                "Nerf", "nerf", "Lego", "LEGO", "IKEA", "Canon", "Chevrolet", "Doc Martens", "Ferrari", "Ford Mustang",
                "Gillette", "Lincoln Continental", "Minecraft", "SpaceX", "Star Wars", "Tesla Model", "Tommy Hilfiger",
                "Zippo", "Red Bull", "Molly Malone", "David Lynch", "Lewis Hine", "Matt Furie", "Sylvia Plath", "Van Gogh's", "Pixar", "pixar")


def test_allow_labelled_captions_stay_allowed():
    rows = [r for r in csv.DictReader(LABELLED.open(encoding="utf-8")) if r["expected"] == "allow"]
    flagged = [r["caption"] for r in rows if named(r["caption"])]
    wrong = [c for c in flagged if not any(name.casefold() in c.casefold() for name in REALLY_NAMED)]
    print(f"allow-labelled captions: {len(rows)}, named something: {len(flagged)}, of which no name: {len(wrong)}: {wrong}")
    assert len(rows) > 6000 and len(wrong) / len(rows) <= 0.002, wrong


# -- explainable, fast, indexed -----------------------------------------------------------------

def test_a_decision_names_the_entry_the_form_and_the_spelling():
    (decision,) = [d for d in named("Barak Obama smiling") if d.rule_id == "usage.protected.people"]
    assert decision.outcome is Outcome.DENY
    evidence = decision.evidence
    assert evidence["name"] == "Barack Obama" and evidence["matched"] == "Barak Obama" and evidence["edit_distance"] == 1
    assert evidence["span"] == [0, 11] and evidence["list"] == "gazetteer_people.csv" and len(evidence["list_version"]) == 12
    assert "Barack Obama" in decision.message and "misspelling" in decision.message
    (unlisted,) = named("Wes Streeting at a rally")
    assert unlisted.rule_id == "usage.protected.people.unlisted" and unlisted.outcome is Outcome.REVIEW
    assert unlisted.evidence["matched"] == "Wes Streeting" and "reviewer" in unlisted.message


def test_an_ambiguous_word_reviews_and_its_context_refuses():
    assert [d.outcome for d in named("Swift on stage in a sparkly bodysuit")] == [Outcome.REVIEW]
    assert [d.outcome for d in named("Goofy from Disney")][0] is Outcome.DENY
    assert named("a swift on a branch") == []


def test_the_lists_are_large_and_spelling_helpers_behave():
    gazetteer = default_gazetteer()
    kinds = [e.kind for e in gazetteer.entries]
    assert kinds.count("people") >= 400 and kinds.count("characters") >= 200 and kinds.count("brands") >= 200
    assert damerau_levenshtein("merkl", "merkel") == 1 and damerau_levenshtein("kardashain", "kardashian") == 1
    assert sound_key("starbux") == sound_key("starbucks")


def test_the_name_check_is_fast():
    rows = [r["caption"] for r in csv.DictReader(LABELLED.open(encoding="utf-8"))][::13][:1000]
    start = time.perf_counter()
    for caption in rows:
        USAGE.check_caption(caption)
    per_caption = (time.perf_counter() - start) / len(rows) * 1000
    print(f"word rules with the name lists: {per_caption:.2f} ms a caption")
    assert per_caption < 10  # about 1 ms on an idle core; a loaded CI machine has headroom


# -- the red team's second probe (3 Dec 2026): each finding fixed as a category -----------------
# Each category lists the red team's captions (the rule was written from these) and held-out ones of
# the same kind that were not looked at while the rule was written.

def outcomes(caption: str, rule: str = "usage.protected.people") -> list[Outcome]:
    return [d.outcome for d in named(caption) if d.rule_id == rule]


# The article "a"/"an" or "I" is no initial, and "Gore-Tex" is a compound word, not Al Gore.
NOT_AN_INITIAL = ["a Gore-Tex hiking jacket", "a Lincoln Navigator SUV in a dealership"]
NOT_AN_INITIAL_HELD_OUT = ["A Gore on the wall", "an Obama-Biden campaign button", "a Lincoln-Douglas debate poster",
                           "I Bezos-proofed my shopping", "a Gore-Tex rain shell on a hook"]


@pytest.mark.parametrize("caption", NOT_AN_INITIAL + NOT_AN_INITIAL_HELD_OUT)
def test_an_article_is_no_initial_and_a_hyphenated_compound_is_no_surname(caption):
    # "an Obama-Biden campaign button" still names two people: reviewed at least, never read via "an".
    assert all(d.evidence.get("form") != "initial and surname" for d in named(caption)), named(caption)
    if "Gore-Tex" in caption or "Navigator" in caption or caption == "A Gore on the wall":
        assert Outcome.DENY not in outcomes(caption), named(caption)


def test_a_real_initial_still_counts():
    assert outcomes("A. Lincoln giving a speech") == [Outcome.DENY]
    assert outcomes("the singer T. Swift on stage") == [Outcome.DENY]


# A surname or single name alone used as a modifier of a following noun is a product, place or thing:
# reviewed, with a message saying so; never refused.
NAMED_THINGS = [
    "a Churchill china teacup set", "a Churchill cigar box, antique shop photo", "a Churchill War Rooms museum sign",
    "an Einstein Bros bagel box", "a Mandela rose in a garden centre", "an Elvis-style quiff haircut",
    "a Bloody Caesar with a clam juice rim",
]
NAMED_THINGS_HELD_OUT = [
    "a Ford Mustang", "a Dyson vacuum", "a Marie Curie charity shop", "a Franklin stove", "a Victoria sponge cake",
    "a Wellington boot", "a Nelson's Column postcard", "a Beckham-style haircut", "an Obama-era policy document",
    "a Thatcher-era council estate", "a Kardashian-style contour makeup tutorial", "a Stalin-era apartment block",
    "a Napoleon cake on a plate", "a Trump steak box", "a Mandela Effect meme", "A Lincoln Town Car",
    "an Einstein equation on a blackboard", "a Gandhi-inspired peace poster", "a Churchill-era radio set",
]


@pytest.mark.parametrize("caption", NAMED_THINGS + NAMED_THINGS_HELD_OUT)
def test_a_name_that_names_a_thing_is_at_most_reviewed(caption):
    found = named(caption)
    assert all(d.outcome is not Outcome.DENY for d in found), found
    for decision in found:
        if decision.evidence.get("form") == "name as a modifier":
            assert "product, place or thing" in decision.message


def test_set_phrases_named_after_people_are_not_people():
    for caption in ("a Bloody Caesar with a clam juice rim", "a Lincoln Navigator", "an Einstein Bros bagel box"):
        assert outcomes(caption) == [], named(caption)


# Verbs, participles and prepositions after the name are no nouns: still the person.
STILL_THE_PERSON = ["Obama smiling", "Putin riding a horse", "Merkel at a podium"]
STILL_THE_PERSON_HELD_OUT = [
    "Trudeau waving", "Putin playing hockey", "Netanyahu at a press conference", "Zelensky speaking to reporters",
    "Putin Riding A Horse In The Snow", "Erdogan with a cup of tea", "a Putin Shirtless Calendar",
    "Churchill smoking in a bunker", "Einstein sticking his tongue out", "Mandela in a prison cell",
]


@pytest.mark.parametrize("caption", STILL_THE_PERSON + STILL_THE_PERSON_HELD_OUT)
def test_a_name_before_a_verb_or_preposition_is_still_refused(caption):
    assert Outcome.DENY in outcomes(caption), named(caption)


# A full name of several words matches whatever its case.
LOWER_CASE_NAMES = ["Bugs bunny and Daffy duck in a gritty war film", "Bill gates injecting microchips into babies"]
LOWER_CASE_NAMES_HELD_OUT = [
    ("Mickey mouse with a gun", "characters"), ("Homer simpson drinking beer", "characters"),
    ("Darth vader in a garden", "characters"), ("Donald trump in jail", "people"),
    ("Joe biden asleep in a chair", "people"), ("barack obama playing golf", "people"),
    ("taylor swift on a stage", "people"), ("elon musk on mars", "people"),
]


@pytest.mark.parametrize("caption,kind", [(LOWER_CASE_NAMES[0], "characters"), (LOWER_CASE_NAMES[1], "people"),
                                          *LOWER_CASE_NAMES_HELD_OUT])
def test_a_full_name_in_lower_case_is_refused(caption, kind):
    assert Outcome.DENY in outcomes(caption, f"usage.protected.{kind}"), named(caption)


def test_ordinary_phrases_that_are_character_names_stay_allowed_in_lower_case():
    for caption in ("an iron man triathlon", "a red bull in a field", "a big bird on a branch", "a black widow spider"):
        assert named(caption) == [], (caption, named(caption))


# A notorious surname misspelt, and a distinctive given name with the surname's initial.
MISSPELT_OR_SHORTENED = ["Hitla giving a speech", "Adolf H. giving a speech", "Dolly P. singing", "Jacinda A. at a podium"]
MISSPELT_OR_SHORTENED_HELD_OUT = [
    "Stalinn at a parade", "Musolini on a balcony", "Hitlar saluting", "Mussolinni giving a speech", "Hitlah in a bunker",
    "Angela M. at a podium", "Vladimir P. on a horse", "Greta T. with a sign", "Volodymyr Z. in military green",
]


@pytest.mark.parametrize("caption", MISSPELT_OR_SHORTENED + MISSPELT_OR_SHORTENED_HELD_OUT)
def test_a_misspelt_surname_or_a_given_name_and_initial_is_refused(caption):
    assert Outcome.DENY in outcomes(caption), named(caption)


def test_a_common_given_name_and_an_unlisted_initial_is_no_one():
    for caption in ("Ian G. at the park", "Adolf A lot of snow", "a Hitchcock Zoom effect"):
        assert Outcome.DENY not in outcomes(caption), named(caption)


# An office that one person holds, named by country or ordinal: reviewed (a reviewer decides who).
OFFICES = ["the 45th president of the United States", "the president of russia", "the current US president",
           "the prime minister of the UK", "the pope", "the king of England"]
OFFICES_HELD_OUT = [
    "the Russian president on a horse", "the French president at a summit", "the chancellor of Germany",
    "the 46th president", "the queen of the united kingdom", "the supreme leader of North Korea",
    "the British prime minister", "the current pope", "the prime minister of india", "the former US president in court",
]
GENERIC_ROLES = [
    "a president at a podium", "a queen on a throne", "a king on a chess board", "a prime minister in a cartoon parliament",
    "a president of a golf club", "a queen bee in a hive", "the king of the jungle", "prom queen in a tiara",
    "class president giving a speech", "the pope's hat in a museum",
]


@pytest.mark.parametrize("caption", OFFICES + OFFICES_HELD_OUT)
def test_an_office_that_names_one_person_is_reviewed(caption):
    decisions = [d for d in named(caption) if d.rule_id == "usage.protected.people"]
    assert decisions and decisions[0].outcome is Outcome.REVIEW and decisions[0].evidence["form"] == "office", decisions


@pytest.mark.parametrize("caption", GENERIC_ROLES)
def test_a_role_with_no_country_is_no_one(caption):
    assert named(caption) == []


# Nicknames of listed people (the lists' aliases).
NICKNAMES = ["Sleepy Joe", "The Donald", "Dubya", "Bojo"]
NICKNAMES_HELD_OUT = [
    "Slick Willie", "Tricky Dick on a podium", "Wacko Jacko dancing", "Queen Bey on stage", "RiRi in a ball gown",
    "the Governator lifting weights", "Little Rocket Man at a parade", "Crooked Hillary", "Pootin on a bear",
]


@pytest.mark.parametrize("caption", NICKNAMES + NICKNAMES_HELD_OUT)
def test_a_listed_person_s_nickname_is_refused(caption):
    assert Outcome.DENY in outcomes(caption), named(caption)


def test_a_nickname_inside_a_character_s_name_gives_way():
    assert outcomes("The Donald Duck cartoon") == [] and Outcome.DENY in outcomes("The Donald Duck cartoon",
                                                                                  "usage.protected.characters")
