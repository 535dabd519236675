"""Instructions for harm, judged in two parts: an instruction frame ("how to", "a step by step guide
to", "a diagram for making") around an act, and how harmful that act is ("build a pipe bomb" / "build a
birdhouse").

Judged as a whole, "how to make a bath bomb" and "how to make a pipe bomb" are near neighbours: the
frame is most of what the sentence encoder sees. Cut from its frame, the act is judged on what is
made or done, by a classifier fitted on act phrases alone (``[instructions]`` of semantic.toml), so
the frame can deny what the act makes harmful without denying every recipe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The words an act may run to after its frame: "make a pipe bomb out of a metal tube and a timer" is
# judged on its first MAX_ACT_WORDS words; the rest is usually a second clause ("..., with labelled
# steps"). Bounded so that an act costs at most ~16 word pieces through the encoder.
MAX_ACT_WORDS = 10
# At most this many frames per caption are judged: a short caption's acts are embedded with it, a
# long caption's are pooled from its one pass (so a harmful one after a few harmless ones is reached).
MAX_ACTS = 12

_WORD = r"[\w'’-]+"
# A few words between a frame's noun and its link ("a tutorial *poster* on", "a recipe *card* for").
# Bounded repetitions of one word each: the pattern stays linear on any input.
_GAP = rf"(?:\s+{_WORD}){{0,3}}?"
_LINK = (r"(?:for|to|on|of|about|showing|explaining|describing|teaching|demonstrating|detailing|illustrating|"
         r"that\s+(?:shows?|explains?|teach(?:es)?))")
# Links that name what is done or made ("a guide to", "instructions for"); after "on", "of" and
# "about" a noun is a topic ("a lesson about the history of apartheid"), so an act must follow as a
# verb ("a tutorial on making ...", "a manual of how to ...").
_ACT_LINK = (r"(?:for|to|showing|explaining|describing|teaching|demonstrating|detailing|illustrating|"
             r"that\s+(?:shows?|explains?|teach(?:es)?))")

# Nouns that name instructions: whatever they are linked to is the act.
_INSTRUCTION_NOUNS = (r"(?:instructions?|directions?|guides?|guidance|tutorials?|recipes?|manuals?|handbooks?|"
                      r"walk-?throughs?|blueprints?|schematics?|plans|formulas?|methods?|procedures?|techniques?|"
                      r"tips|tricks|lessons?|course|cheat\s*sheets?|flow\s*charts?|flowcharts?|how-?tos?|diy|"
                      r"masterclass|demonstrations?|demos?|protocols?|playbooks?|steps|ingredients|"
                      r"checklists?|explainers?|primers?|handouts?|worksheets?|crash\s+course|workshops?|classes|"
                      r"seminars?|webinars?|training|templates?|stencils?)")
# Nouns that name a picture or a page: linked to how/where/the steps/a gerund, they frame an act
# ("a diagram of making a grenade"); linked to a thing, they only show it ("a diagram of a flower").
_DISPLAY_NOUNS = (r"(?:diagrams?|charts?|drawings?|illustrations?|infographics?|posters?|sheets?|slides?|cards?|"
                  r"videos?|animations?|sketch(?:es)?|pictures?|images?|photos?|pages?|leaflets?|booklets?|"
                  r"pamphlets?|books?|notes?|lists?|tables?|graphics?|comics?|presentations?|whiteboards?|"
                  r"notebooks?|screenshots?|posts?|threads?|paintings?|maps?|timelines?|floor\s*plans?|"
                  r"storyboards?|series|sequences?)")
_WHO = r"(?:i|you|we|one|someone|people|they|he|she|a\s+person)"
# "how 2" / "how2" is chat shorthand for "how to".
_HOW = (rf"(?:how(?:\s*-\s*|\s+)to|how\s*-?\s*2(?=\s)|how\s+(?:do|can|could|would|should|does|did|might)\s+{_WHO}|"
        rf"how\s+{_WHO}\s+(?:can|could|would|should|might|may|would\s+go\s+about)|"
        r"teach(?:es|ing)?\s+(?:me|us|you|them|him|her|kids|people|someone)\s+(?:how\s+)?to|"
        r"where\s+to|when\s+to|what\s+(?:you\s+need|it\s+takes)\s+to|"
        r"(?:easiest|best|fastest|quickest|simplest|cheapest|safest|surest)\s+(?:ways?|methods?)\s+(?:to|of|for)|"
        r"ways?\s+to|learn(?:ing)?\s+(?:to|how\s+to)|step\s*-?\s*by\s*-?\s*step(?:\s+(?:to|for|on|of))?|"
        r"(?:the|each|every|all\s+the)\s+(?:steps?|stages?|process)\s+(?:to|for|of))")
_PARTS = r"(?:the\s+(?:parts|components|ingredients|materials|wiring|layout)\s+(?:of|for|in))"
# Verbs a caption may start with as an order ("make a pipe bomb", "synthesise fentanyl at home").
_IMPERATIVE = (r"(?:make|build|cook|brew|mix|synthesi[sz]e|assemble|manufacture|produce|craft|construct|"
               r"create|prepare|grow|extract|refine|convert|rig|wire|hotwire|3d\s*print|print|poison|derail|"
               r"sabotage|hack|break\s+into|steal|kill|stab|strangle|burn\s+down|blow\s+up|attack|hurt|"
               r"smuggle|hide|get\s+rid\s+of|dispose\s+of)")

FRAME = re.compile(
    rf"\b(?:{_HOW}"
    rf"|{_INSTRUCTION_NOUNS}{_GAP}\s+{_ACT_LINK}(?:\s+(?:{_HOW}|{_PARTS}))?"
    rf"|(?:{_INSTRUCTION_NOUNS}|{_DISPLAY_NOUNS}){_GAP}\s+{_LINK}(?:\s+(?:{_HOW}|{_PARTS})|(?=\s+{_WORD}ing\b))"
    # "photo series: making a shank ...": a picture's noun, a colon, then what is being done
    rf"|(?:{_INSTRUCTION_NOUNS}|{_DISPLAY_NOUNS})(?=\s*:\s*{_WORD}ing\b)"
    rf")\b"
)
# Of those verbs, the ones that are also nouns starting a noun phrase ("poison control centre",
# "print shop", "attack helicopter", "hack day", "craft fair", "wire fence") order an act only when an
# object follows them ("poison someone's food", "attack a crowd").
_NOUN_VERBS = r"(?:poison|print|3d\s*print|attack|hack|craft|wire|rig|hide|mix|produce)"
_OBJECT = (r"(?:a|an|the|this|that|these|those|my|your|his|her|its|our|their|some|someone|somebody|"
           r"people|him|them|it|me|us|[\w'’-]+'s|[\w'’-]+s')")
IMPERATIVE = re.compile(rf"^(?:please\s+)?(?:(?!{_NOUN_VERBS}\b){_IMPERATIVE}|{_NOUN_VERBS}(?=\s+{_OBJECT}\b))\b")
# Instruction nouns with no link ("a car bomb, instructions"): the caption without them is the act.
BARE_INSTRUCTIONS = re.compile(r"\b(?:instructions|recipe|tutorial|how-?to|step-by-step|blueprint|schematic|"
                               r"walkthrough|cheat\s*sheet|diy|(?:step|stage)\s+(?:photos?|pictures?|images?|shots?|"
                               r"cards?|guide))\b")


@dataclass(frozen=True)
class FramedAct:
    frame: str  # the words that frame the act ("how to", "recipe card for"), as normalised
    act: str    # what is to be made or done, cut at MAX_ACT_WORDS words
    start: int = -1  # where the act begins in the (space-collapsed) text; -1: it is not one stretch of it


# An act ends at a clause break: "how to report hate crimes, helpline number" asks for reporting; the
# words after the comma are the rest of the picture, not part of what is to be done.
_CLAUSE_BREAK = re.compile(r"[,;:()\[\]|]|\s[-–—]\s")


def _words(text: str, limit: int = MAX_ACT_WORDS, clause: bool = True) -> str:
    head = _CLAUSE_BREAK.split(text, maxsplit=1)[0] if clause else text
    return " ".join((head if head.strip(" .!?-") else text).split()[:limit]).strip(" ,.;:!?-")


# What a frame may be followed by that names only the picture's form ("homebrewing beer step-by-step
# infographic", "how to change a tyre, step-by-step comic"): no act. Taken as one, such a word was
# judged as an act, and as "graphic" it sat among the harmful acts.
_FORM_WORD = re.compile(
    rf"(?:{_DISPLAY_NOUNS}|{_INSTRUCTION_NOUNS}|a|an|the|with|and|in|of|style|simple|easy|quick|short|full|"
    r"detailed|illustrated|labell?ed|annotated|numbered|visual|colou?red|printable|cartoon|strip|panels?|"
    r"flat|vector|watercolou?r|photo(?:graphic)?|realistic|4k|hd)"
)


def _names_only_a_form(act: str) -> bool:
    return all(_FORM_WORD.fullmatch(word) for word in act.split())


def framed_acts(text: str) -> list[FramedAct]:
    """The acts that instruction frames introduce in normalised, lower-case text (at most MAX_ACTS)."""
    text = " ".join(text.split())
    acts: list[FramedAct] = []
    for match in FRAME.finditer(text):
        act = _words(text[match.end():])
        if act and not _names_only_a_form(act) and all(a.act != act for a in acts):
            acts.append(FramedAct(match.group().strip(), act, text.find(act, match.end())))
        if len(acts) >= MAX_ACTS:
            return acts
    if not acts:
        imperative = IMPERATIVE.match(text)
        bare = BARE_INSTRUCTIONS.search(text)
        if imperative:
            acts.append(FramedAct(imperative.group(), _words(text), 0))
        elif bare:
            # The caption around a bare noun is all there is to judge ("3d printing tutorial: bed
            # levelling"): no clause of it is cut away.
            acts.append(FramedAct(bare.group(), _words(text[: bare.start()] + text[bare.end():], clause=False)))
    # "a step by step guide to building a bomb": the act of the first frame is the second frame and
    # its act; the second alone says it better.
    inner = [a for a in acts if not FRAME.match(a.act)]
    return [a for a in (inner or acts) if a.act]
