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
