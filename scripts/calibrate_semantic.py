"""Propose the semantic layer's per-category thresholds out of fold, from what the layer learns from:
the examples of ``semantic.toml`` and the training captions its ``[training]`` names (the dev split
of the labelled set). The test split is never read.

    python scripts/calibrate_semantic.py [--policy-dir DIR] [--folds 5]

Every example and training caption is scored by classifiers fitted on the other folds (so a caption
never judges itself). Per category it prints the lowest ``deny_at`` under which at most
``--max-look-alike-denials`` of that category's harmless look-alikes and at most
``--max-harmless-denials`` of all harmless captions are denied, and the highest ``review_at`` that
still reviews ``--min-recall`` of its harmful captions (a caption the word rules stop counts as
caught). Then it prints what those thresholds give out of fold, word rules included: recall, harmful
denied, look-alikes denied and harmless captions sent to review. It proposes; a person copies the
figures into ``semantic.toml`` and measures the change with
``python -m policies evaluate-usage ... --split test``.
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


class CachedEmbedder:
    """Each caption embedded once, however many folds refit on it."""

    def __init__(self, folder: str | None) -> None:
        self.encoder = shared_encoder(folder)
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
    return Scored(text, category, harmful, source, {s.category: (s.score, s.whole_score) for s in layer.scores(text)},
                  words.check_caption(text).outcome)


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
    return proposed


def outcome(s: Scored, thresholds: dict[str, tuple[float | None, float | None]]) -> Outcome:
    """What the word rules and the semantic layer with these thresholds decide (a window alone never
    denies: the whole caption must reach deny_at too)."""
    result = s.words
    for name, (review, deny) in thresholds.items():
        best, whole = s.scores[name]
        if deny is not None and min(best, whole) >= deny:
            return Outcome.DENY
        if (review is not None and best >= review) or (deny is not None and best >= deny):
            result = Outcome.REVIEW if result is Outcome.ALLOW else result
    return result


def summarise(scored: list[Scored], thresholds: dict[str, tuple[float | None, float | None]]) -> None:
    print(f"\nout of fold with these thresholds, word rules included:\n{'category':18} {'harmful':>7} {'recall':>6} "
          f"{'denied':>6} {'look-alikes':>11} {'denied':>6} {'review':>6}")
    decided = [(s, outcome(s, thresholds)) for s in scored]
    for name in [*thresholds, ""]:
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
    args = parser.parse_args()
    policies = load_policies(args.policy_dir)
    config = tomllib.loads((Path(args.policy_dir) / "semantic.toml").read_text())
    labelled = config.get("training", {}).get("labelled")
    training = _read_training(Path(args.policy_dir), labelled)[1] if labelled else []
    embedder = CachedEmbedder(config.get("encoder", {}).get("folder"))
    words = policies.usage
    words.semantic = None  # the word rules alone
    scored = out_of_fold(config, training, embedder, words, args.folds)
    print(f"{len(scored)} examples and training captions scored out of fold ({len(training)} training captions)\n")
    thresholds = propose(scored, config["categories"], args)
    summarise(scored, thresholds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
