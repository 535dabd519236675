"""Propose the semantic layer's per-category thresholds out of fold, from what the layer learns from:
the examples of ``semantic.toml`` and the training captions its ``[training]`` names (the dev,
dev2 and dev3 splits of the labelled set), and the act judge of ``[instructions]`` and the lift of
``[word_review]`` with them.

    python scripts/calibrate_semantic.py [--policy-dir DIR] [--folds 5]

Every example and training caption is scored by classifiers fitted on the other folds (so a caption
never judges itself). Per category it prints the lowest ``deny_at`` under which at most
``--max-look-alike-denials`` of that category's harmless look-alikes and at most
``--max-harmless-denials`` of all harmless captions are denied, and the highest ``review_at`` that
still reviews ``--min-recall`` of its harmful captions (a caption the word rules stop counts as
caught). Then it prints what those thresholds give out of fold, word rules included: recall, harmful
denied, look-alikes denied and harmless captions sent to review, and the same for the thresholds of
``semantic.toml`` as they are. It proposes; a person copies the
figures into ``semantic.toml`` and measures the change with
``python -m policies evaluate-usage HELD_OUT.csv`` on captions the layer never learnt from.

The lift figures judge the whole caption's scores, not the word's neighbourhood that the policy also
checks, so the policy lifts at most what they count (never a harmful caption they would keep).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.decisions import Outcome  # noqa: E402
from policies.embedding import shared_encoder  # noqa: E402
from policies.loader import DEFAULT_DIR, _read_training, load_policies  # noqa: E402
from policies.semantic import SemanticLayer, TrainingCaption  # noqa: E402
from policies.usage import UsagePolicy  # noqa: E402

GRID = np.round(np.arange(0.05, 0.991, 0.01), 2)


@dataclass(frozen=True)
class Scored:
    text: str
    category: str  # the category it belongs to (harmful) or looks like (harmless); "" for general harmless
    harmful: bool
    source: str  # "example (out of fold)" or "dev"
    scores: dict[str, tuple[float, float]]  # category -> (best segment score, whole-caption score)
    words: Outcome  # what the word rules of usage.toml alone decide
    act: float | None  # [instructions]: the score of its most harmful framed act; None: no frame
    word_reviews: tuple[str, ...]  # the rule ids of the word rules that review it (plainly written)


class CachedEmbedder:
    """Each caption embedded once, however many folds refit on it."""

    def __init__(self, folder: str | None, precision: str = "float32") -> None:
        self.encoder = shared_encoder(folder, precision)
        self.cache: dict[str, np.ndarray] = {}
        self.token_ids = getattr(self.encoder, "token_ids", None)
        self.truncate = getattr(self.encoder, "truncate", None)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            for text, vector in zip(missing, self.encoder(missing)):
                self.cache[text] = vector
        return np.stack([self.cache[t] for t in texts])


def score(layer: SemanticLayer, words: UsagePolicy, text: str, category: str, harmful: bool, source: str) -> Scored:
    scores, act = layer.judge(text)
    verdict = words.check_caption(text)
    reviews = tuple(d.rule_id for d in verdict.decisions if d.outcome is Outcome.REVIEW)
    return Scored(text, category, harmful, source, {s.category: (s.score, s.whole_score) for s in scores},
                  verdict.outcome, act.score if act is not None else None, reviews)


def _fold(items: list[str], fold: int, folds: int) -> tuple[list[str], list[str]]:
    """(kept for fitting, held out)."""
    return [t for i, t in enumerate(items) if i % folds != fold], [t for i, t in enumerate(items) if i % folds == fold]


def out_of_fold(config: dict, training: list[TrainingCaption], embedder: CachedEmbedder, words: UsagePolicy,
                folds: int) -> list[Scored]:
    results = []
    for fold in tqdm(range(folds), desc="folds"):
        trimmed = copy.deepcopy(config)
        held: list[tuple[str, str, bool]] = []
        for name, spec in trimmed["categories"].items():
            spec["covers"], out = _fold(spec["covers"], fold, folds)
            held += [(t, name, True) for t in out]
            spec["does_not_cover"], out = _fold(spec.get("does_not_cover", []), fold, folds)
            held += [(t, name, False) for t in out]
        trimmed["harmless"]["examples"], out = _fold(trimmed["harmless"]["examples"], fold, folds)
        # The act phrases of [instructions] are never scored (they are not captions), so they are kept.
        held += [(t, "", False) for t in out]
        kept = [t for i, t in enumerate(training) if i % folds != fold]
        held += [(t.caption, t.category, t.harmful) for i, t in enumerate(training) if i % folds == fold]
        layer = SemanticLayer(trimmed, embedder, kept)
        results += [score(layer, words, text, category, harmful, "out of fold") for text, category, harmful in held]
    return results


def propose(scored: list[Scored], categories: dict, args: argparse.Namespace) -> dict[str, tuple[float | None, float | None]]:
    proposed: dict[str, tuple[float | None, float | None]] = {}
    harmless = [s for s in scored if not s.harmful]
    print(f"{'category':18} {'harmful':>7} {'look-alikes':>11} {'review_at':>17} {'deny_at':>17}  recall / look-alikes denied / harmless denied")
    instructions = (args.instructions or {}).get("category")
    for name, spec in categories.items():
        # A caption the word rules already stop counts as caught (or denied) at any threshold.
        stopped, denied = 2.0, 2.0
        harmful = [stopped if s.words is not Outcome.ALLOW else s.scores[name][0]
                   for s in scored if s.harmful and s.category == name]
        harmful_whole = [denied if s.words is Outcome.DENY else min(s.scores[name]) for s in scored if s.harmful and s.category == name]
        # Harmless captions that the word rules deny are false positives whatever this file says;
        # they are left out here, as no threshold changes them.
        look_alikes = [min(s.scores[name]) for s in harmless if s.category == name and s.words is not Outcome.DENY]
        every = [min(s.scores[name]) for s in harmless if s.words is not Outcome.DENY]
        deny = None
        if spec.get("deny_at") is not None:
            for t in GRID:
                if (np.mean(np.array(look_alikes) >= t) <= args.max_look_alike_denials
                        and np.mean(np.array(every) >= t) <= args.max_harmless_denials):
                    deny = float(t)
                    break
        review = None
        for t in GRID[::-1]:
            if np.mean(np.array(harmful) >= t) >= args.min_recall:
                review = float(t)
                break
        if deny is not None and review is not None:
            review = min(review, deny)
        recall = np.mean(np.array(harmful) >= (review if review is not None else 2))
        denied_harmful = np.mean(np.array(harmful_whole) >= deny) if deny is not None else 0.0
        line = (f"{name:18} {len(harmful):>7} {len(look_alikes):>11} {spec.get('review_at')!s:>6} -> {review!s:>6} "
                f"{spec.get('deny_at')!s:>6} -> {deny!s:>6}  recall {recall:.3f}, harmful denied {denied_harmful:.3f}")
        if deny is not None:
            line += (f", look-alikes denied {np.mean(np.array(look_alikes) >= deny):.3f}, "
                     f"harmless denied {np.mean(np.array(every) >= deny):.4f}")
        print(line)
        proposed[name] = (review, deny)
    if instructions:
        # [instructions]: the lowest act score at which the act judge alone denies at most half as many of
        # the category's look-alikes and of all harmless captions as a category may (it is a second way
        # to deny in the same category), counting only captions the categories' deny_at leave alone.
        denied_anyway = [any(d is not None and min(s.scores[n]) >= d for n, (_, d) in proposed.items()) for s in harmless]
        acts = [(s, s.act if s.act is not None else -1.0) for s, d in zip(harmless, denied_anyway) if not d and s.words is not Outcome.DENY]
        act_deny = None
        for t in GRID:
            look = [a >= t for s, a in acts if s.category == instructions]
            every = [a >= t for _, a in acts]
            if np.mean(look) <= args.max_look_alike_denials / 2 and np.mean(every) <= args.max_harmless_denials / 2:
                act_deny = float(t)
                break
        harmful = [s.act for s in scored if s.harmful and s.category == instructions]
        framed = [a for a in harmful if a is not None]
        print(f"[instructions] deny_at {args.instructions.get('deny_at')} -> {act_deny}: {len(framed)} of {len(harmful)} "
              f"harmful {instructions} captions framed as instructions, "
              f"denied by the act judge {np.mean([a is not None and act_deny is not None and a >= act_deny for a in harmful]):.3f}")
        proposed["[instructions]"] = (None, act_deny)
    return proposed


def outcome(s: Scored, thresholds: dict[str, tuple[float | None, float | None]],
            lift: tuple[float, dict[str, list[str]], dict[str, float]] | None = None) -> Outcome:
    """What the word rules and the semantic layer with these thresholds decide (a window alone never
    denies: the whole caption must reach deny_at too); with ``lift`` (clear_below, sections), word
    reviews that [word_review] lifts are lifted."""
    result = s.words
    if lift is not None and result is Outcome.REVIEW and _lifted(s, thresholds, *lift):
        result = Outcome.ALLOW
    _, act_deny = thresholds.get("[instructions]", (None, None))
    if act_deny is not None and s.act is not None and s.act >= act_deny:
        return Outcome.DENY
    for name, (review, deny) in thresholds.items():
        if name == "[instructions]":
            continue
        best, whole = s.scores[name]
        if deny is not None and min(best, whole) >= deny:
            return Outcome.DENY
        if (review is not None and best >= review) or (deny is not None and best >= deny):
            result = Outcome.REVIEW if result is Outcome.ALLOW else result
    return result


def _flags(s: Scored, thresholds: dict[str, tuple[float | None, float | None]]) -> bool:
    """Whether the semantic layer (categories and act judge) reviews or denies it."""
    _, act_deny = thresholds.get("[instructions]", (None, None))
    if act_deny is not None and s.act is not None and s.act >= act_deny:
        return True
    return any((review is not None and s.scores[name][0] >= review) or (deny is not None and s.scores[name][0] >= deny)
               for name, (review, deny) in thresholds.items() if name != "[instructions]")


def _lifted(s: Scored, thresholds: dict[str, tuple[float | None, float | None]], clear_below: float,
            sections: dict[str, list[str]], by_section: dict[str, float] | None = None) -> bool:
    """Whether every word review of this caption is lifted (as SemanticLayer.lifted_reviews decides)."""
    if not s.word_reviews or _flags(s, thresholds):
        return False
    for rule_id in s.word_reviews:
        section = rule_id.removeprefix("usage.blocked.")
        categories = sections.get(section) if rule_id.startswith("usage.blocked.") else None
        line = (by_section or {}).get(section, clear_below)
        if not categories or max(max(s.scores[c]) for c in categories) >= line:
            return False
    return True


def propose_lift_by_section(scored: list[Scored], thresholds: dict[str, tuple[float | None, float | None]],
                            sections: dict[str, list[str]], clear_below: float, max_lifted: float) -> dict[str, float]:
    """Per [word_review] section, the highest line at or above clear_below at which (the other sections
    at clear_below) at most max_lifted of the harmful captions the word rules review are lifted."""
    reviewed = [s for s in scored if s.harmful and s.words is Outcome.REVIEW]
    proposals = {}
    for section in sections:
        best = clear_below
        for t in GRID[GRID >= clear_below]:
            if reviewed and np.mean([_lifted(s, thresholds, clear_below, sections, {section: float(t)}) for s in reviewed]) > max_lifted:
                break
            best = float(t)
        if best > clear_below:
            proposals[section] = best
    harmless = [s for s in scored if not s.harmful and s.words is Outcome.REVIEW]
    print(f"[word_review] clear_below_by_section -> {proposals}: lifts "
          f"{sum(_lifted(s, thresholds, clear_below, sections, proposals) for s in harmless)} of {len(harmless)} harmless "
          f"captions the word rules review, {sum(_lifted(s, thresholds, clear_below, sections, proposals) for s in reviewed)} "
          f"of {len(reviewed)} harmful ones")
    return proposals


def propose_lift(scored: list[Scored], thresholds: dict[str, tuple[float | None, float | None]],
                 sections: dict[str, list[str]], max_lifted: float) -> float | None:
    """[word_review] clear_below: the highest at which at most max_lifted of the harmful captions that
    the word rules review are lifted to allow."""
    reviewed = [s for s in scored if s.harmful and s.words is Outcome.REVIEW]
    proposal = None
    for t in GRID:
        if reviewed and np.mean([_lifted(s, thresholds, float(t), sections) for s in reviewed]) > max_lifted:
            break
        proposal = float(t)
    harmless = [s for s in scored if not s.harmful and s.words is Outcome.REVIEW]
    if proposal is not None:
        print(f"[word_review] clear_below -> {proposal}: lifts {sum(_lifted(s, thresholds, proposal, sections) for s in harmless)} "
              f"of {len(harmless)} harmless captions the word rules review, "
              f"{sum(_lifted(s, thresholds, proposal, sections) for s in reviewed)} of {len(reviewed)} harmful ones")
    return proposal


def summarise(scored: list[Scored], thresholds: dict[str, tuple[float | None, float | None]],
              lift: tuple[float, dict[str, list[str]]] | None = None) -> None:
    print(f"\nout of fold with these thresholds, word rules included:\n{'category':18} {'harmful':>7} {'recall':>6} "
          f"{'denied':>6} {'look-alikes':>11} {'denied':>6} {'review':>6}")
    decided = [(s, outcome(s, thresholds, lift)) for s in scored]
    for name in [*(t for t in thresholds if t != "[instructions]"), ""]:
        harmful = [o for s, o in decided if s.harmful and s.category == name]
        harmless = [o for s, o in decided if not s.harmful and s.category == name]
        recall = f"{np.mean([o is not Outcome.ALLOW for o in harmful]):.3f}" if harmful else "-"
        denied = f"{np.mean([o is Outcome.DENY for o in harmful]):.3f}" if harmful else "-"
        print(f"{name or '(none)':18} {len(harmful):>7} {recall:>6} {denied:>6} {len(harmless):>11} "
              f"{sum(o is Outcome.DENY for o in harmless):>6} {sum(o is Outcome.REVIEW for o in harmless):>6}")
    harmless = [o for s, o in decided if not s.harmful]
    print(f"harmless: {len(harmless)}, denied {sum(o is Outcome.DENY for o in harmless)} "
          f"({np.mean([o is Outcome.DENY for o in harmless]):.3f}), sent to review {sum(o is Outcome.REVIEW for o in harmless)} "
          f"({np.mean([o is Outcome.REVIEW for o in harmless]):.3f}; the word rules alone review "
          f"{sum(s.words is Outcome.REVIEW for s in scored if not s.harmful)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy-dir", default=str(DEFAULT_DIR))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--min-recall", type=float, default=0.97)
    parser.add_argument("--max-look-alike-denials", type=float, default=0.02)
    parser.add_argument("--max-harmless-denials", type=float, default=0.004)
    parser.add_argument("--max-lifted", type=float, default=0.0,
                        help="share of the harmful captions that the word rules review that [word_review] may lift")
    args = parser.parse_args()
    policies = load_policies(args.policy_dir)
    config = tomllib.loads((Path(args.policy_dir) / "semantic.toml").read_text())
    labelled = config.get("training", {}).get("labelled")
    training = _read_training(Path(args.policy_dir), labelled)[1] if labelled else []
    # The policy's own arithmetic (int8 or float32): thresholds proposed for the vectors it will judge.
    embedder = CachedEmbedder(config.get("encoder", {}).get("folder"), config.get("encoder", {}).get("precision", "float32"))
    words = policies.usage
    words.semantic = None  # the word rules alone
    scored = out_of_fold(config, training, embedder, words, args.folds)
    print(f"{len(scored)} examples and training captions scored out of fold ({len(training)} training captions)\n")
    args.instructions = config.get("instructions")
    thresholds = propose(scored, config["categories"], args)
    sections = config.get("word_review", {}).get("sections", {})
    lift = None
    if sections:
        proposal = propose_lift(scored, thresholds, sections, args.max_lifted)
        if proposal is not None:
            propose_lift_by_section(scored, thresholds, sections, proposal, args.max_lifted)
        shipped = config["word_review"].get("clear_below")
        by_section = config["word_review"].get("clear_below_by_section", {})
        print(f"[word_review] clear_below as shipped: {shipped}, by section {by_section}")
        lift = (shipped, sections, by_section) if shipped is not None else None
    summarise(scored, thresholds, lift)
    # What the thresholds in force give on the same out-of-fold scores (the proposals above are only
    # proposals: a person may keep a higher deny_at, as semantic.toml's comments say).
    shipped = {name: (spec.get("review_at"), spec.get("deny_at")) for name, spec in config["categories"].items()}
    if args.instructions:
        shipped["[instructions]"] = (None, args.instructions.get("deny_at"))
    print("\nthe thresholds of semantic.toml as they are:", end="")
    summarise(scored, shipped, lift)
    return 0


if __name__ == "__main__":
    sys.exit(main())
