"""The semantic usage layer: a caption is judged by what it means, not by the words it uses.

Each category of ``semantic.toml`` is described by example captions it covers and look-alikes it
does not cover, plus the labelled captions of the policy folder's training CSV (``[training]``).
Every example is embedded with all-MiniLM-L6-v2 (``policies.embedding``). A caption's score in a
category is the mean of two judges fitted when the policy is first used: a logistic classifier on
the embeddings (deterministic Newton steps, so the same files always give the same decisions) and
its nearest examples (how much closer it is to the category's covered examples than to the harmless
ones). The category's ``review_at`` / ``deny_at`` thresholds turn the score into an outcome, and the
decision quotes the nearest covered example as evidence.

A long caption is judged by overlapping windows of words, so harmful words hidden anywhere in it are
not averaged away; it goes through the encoder once, with banded attention, and each window is the
mean of its word pieces' states, so its cost is one pass of at most PASS_TOKENS word pieces.

Two judgements sit beside the categories: ``[instructions]`` cuts an instruction frame ("how to",
"a guide to") from the act it introduces and scores the act alone (policies.instructions), and
``[word_review]`` lets a confidently harmless meaning lift a word rule's review of an everyday word
(never a denial), and ``[reported_words]`` turns a word rule's denial of a harm named in a caption that
reports on it ("an awareness poster for a child abuse hotline") into a review.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from policies.decisions import Decision, Outcome
from policies.embedding import Embedder, EncoderUnavailable, ExampleMatrix, MiniLMEncoder, shared_encoder, vector_cache
from policies.instructions import FramedAct, framed_acts
from policies.normalize import normalise, plain_text

logger = logging.getLogger(__name__)

# Captions longer than this many words are judged window by window instead of as a whole.
LONG_CAPTION_WORDS = 12
# Windows of 8 words that overlap by 3: a phrase of up to 4 words always lies whole inside one, and a
# longer one mostly; shorter windows keep a harmful phrase from being diluted by the words around it.
WINDOW_WORDS = 8
WINDOW_STRIDE = 5
# At most this many windows (80 words, the form limit, need 16), each cut at WINDOW_TOKENS word
# pieces: at most 16 x 20 tokens go through the encoder for any caption (one batched call), against
# ~12 for a short one. The encoder's cost grows with tokens, so this bounds the worst caption's cost.
MAX_WINDOWS = 16
WINDOW_TOKENS = 20
# Plain English needs about 1.3 tokens a word, so 500 characters are ~120 tokens; a caption past
# TOKEN_LIMIT is made of unusual character sequences (the kind written to get past filters) and is
# refused rather than judged.
TOKEN_LIMIT = 200
# The nearest-example judge: the mean similarity of the k closest covered examples less that of the
# k closest harmless ones, through a logistic curve of this steepness.
NEAREST_K = 3
NEAREST_SCALE = 20.0
# A word rule's review may be lifted (``[word_review]``) when the word's neighbourhood, this many words
# either side, scores low too; at most MAX_LIFTS such words per caption (more: the reviews stand).
CONTEXT_WORDS = 4
MAX_LIFTS = 4
# A caption of fewer words than this (a single word) is never refused on its meaning alone (review instead).
MIN_DENY_WORDS = 2
# A word rule's denial may be read as a caption reporting on the harm ([reported_words]) only when the
# caption has at least this many words besides the word.
MIN_REPORT_WORDS = 2
# A long caption goes through the encoder once, each token attending to BAND tokens either side. A
# 500-character caption of plain words is ~105 word pieces, ~90 without its commas (every labelled
# caption: at most 95 with them); one of more than PASS_TOKENS loses its pieces of punctuation, then
# the later pieces of each word (long unusual words), then its middle (MiniLMEncoder.token_states),
# so no caption costs more than that pass.
BAND = 4
PASS_TOKENS = 96
# A short caption (one window) is embedded exactly, with its framed acts, in one batch, while the
# caption and its acts come to at most this many word pieces (every short labelled caption: at most
# 44). Past it (words glued by punctuation, a frame repeated inside one long "word": an attacker
# made 12 acts of 199 pieces each, 500 ms) it takes the banded pass, which bounds the cost, and its
# acts are pooled from that pass. An act that is not one stretch of the caption is cut at ACT_TOKENS.
SHORT_PATH_TOKENS = 64
ACT_TOKENS = 32
# A word rule's outcome is softened by the meaning of the word's neighbourhood ([word_review],
# [reported_words]) only while the neighbourhoods to embed come to at most CONTEXT_TOKENS word pieces
# (every labelled caption: at most 27), and a denial by a negation only while the negated phrases and
# the rest of the caption come to at most NEGATION_TOKENS (labelled: at most 63); past them the
# outcome stands, the strict side. An attacker's 4 neighbourhoods of 200 glued pieces cost 80 ms.
CONTEXT_TOKENS = 40
NEGATION_TOKENS = 80
# Categories of a training CSV's harmless rows that are no category's look-alike.
GENERAL_HARMLESS = ("", "(none)")
# A negated phrase ("no drugs", "without any gore", "not showing any blood"): the negation and up to
# three words, to a clause break. Bounded repetitions: linear on any input.
NEGATED_PHRASE = re.compile(r"\b(?:no|without(?:\s+any)?|not\s+(?:showing\s+)?any|free\s+of|never)"
                            r"((?:\s+[\w'’-]+){1,3})(?=\s*(?:[,.;:!?()]|$))")
MAX_NEGATIONS = 4
# A negated garment is nudity, the harm itself ("no clothes at all", "without a shirt or pants"):
# whatever the encoder makes of "clothes" alone, such a negation never softens a denial.
NEGATED_GARMENT = re.compile(r"\b(?:clothes|clothing|clothed|garments?|shirts?|pants|trousers|underwear|underpants|"
                             r"knickers|panties|bra|bras|tops?|dress|swimsuit|bikini|outfit|attire|stitch)\b")


# Example captions' vectors by encoder folder, shared by every policy loaded in this process.
_example_vectors: dict[str, dict[str, np.ndarray]] = {}
_example_vectors_lock = threading.Lock()


@dataclass(frozen=True)
class TrainingCaption:
    """A labelled caption of the policy folder's training CSV."""
    caption: str
    category: str  # the harmful category, the category a harmless caption looks like, or ""
    harmful: bool


def outcome_at(score: float, review_at: float | None, deny_at: float | None) -> Outcome:
    """A score against a rule's two thresholds (None: that outcome is never given)."""
    if deny_at is not None and score >= deny_at:
        return Outcome.DENY
    if review_at is not None and score >= review_at:
        return Outcome.REVIEW
    return Outcome.ALLOW


@dataclass(frozen=True)
class SemanticCategory:
    name: str
    message: str
    review_at: float | None
    deny_at: float | None
    covers: tuple[str, ...]
    does_not_cover: tuple[str, ...]

    @property
    def rule_id(self) -> str:
        return f"usage.semantic.{self.name}"

    def outcome_for(self, score: float) -> Outcome:
        return outcome_at(score, self.review_at, self.deny_at)


@dataclass(frozen=True)
class InstructionRule:
    """``[instructions]``: the two-part judgement of a category of instructions for harm."""
    category: str
    review_at: float | None
    deny_at: float | None
    harmful_acts: tuple[str, ...]
    harmless_acts: tuple[str, ...]

    def outcome_for(self, score: float) -> Outcome:
        return outcome_at(score, self.review_at, self.deny_at)


@dataclass(frozen=True)
class ActScore:
    """The most harmful act that an instruction frame of the caption introduces."""
    frame: str
    act: str
    score: float
    nearest_example: str
    similarity: float


@dataclass(frozen=True)
class Assessment:
    """What the semantic layer made of a caption: its decisions, and the scores behind them."""
    decisions: list[Decision]
    # Per category, the highest of its best window's score and the whole caption's; empty when the
    # caption was not judged (unreadable, or the encoder is unavailable).
    scores: dict[str, float]


@dataclass(frozen=True)
class WordReviewLift:
    """``[word_review]``: word rules that review one everyday word whatever the caption says ("a glue
    gun", "a naked flame"), and the categories whose scores must all stay below ``clear_below`` for the
    meaning to lift that review."""
    clear_below: float
    sections: dict[str, tuple[str, ...]]  # usage.toml [blocked] section -> semantic categories
    # A section's own line where it differs ("sex on the beach" may clear at a score that would also
    # clear "a police officer drawing her sidearm" under the weapons words).
    by_section: dict[str, float] = field(default_factory=dict)

    def threshold(self, section: str) -> float:
        return self.by_section.get(section, self.clear_below)


@dataclass(frozen=True)
class ReportedWords:
    """``[reported_words]``: word rules that deny a harm by name, and per rule the categories that must
    all score below their review_at for the caption to be read as reporting on the harm."""
    sections: dict[str, tuple[str, ...]]  # usage.toml [blocked] section -> semantic categories


@dataclass(frozen=True)
class CategoryScore:
    category: str
    score: float
    nearest_example: str
    similarity: float
    judged_text: str
    whole_score: float  # the caption as a whole, without windows


def caption_segments(caption: str) -> list[str]:
    """The caption itself when it is short; otherwise its distinct overlapping windows of words (at
    most MAX_WINDOWS, spread over the whole caption so that its end is never skipped)."""
    text = plain_text(normalise(caption).text)
    return list(dict.fromkeys(text[start:end] for start, end in window_spans(text)))


def window_spans(text: str) -> list[tuple[int, int]]:
    """The (start, end) characters of the windows of a space-collapsed text (the whole text when it
    has at most LONG_CAPTION_WORDS words); see caption_segments."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    if len(words) <= LONG_CAPTION_WORDS:
        return [(0, len(text))]
    last = len(words) - WINDOW_WORDS
    starts = list(range(0, last + 1, WINDOW_STRIDE))
    if starts[-1] != last:
        starts.append(last)  # the last window ends at the last word
    if len(starts) > MAX_WINDOWS:
        # Longer than the form allows: windows evenly spaced from the first word to the last.
        starts = [round(i * last / (MAX_WINDOWS - 1)) for i in range(MAX_WINDOWS)]
    # A repeated phrase gives the same window many times; it is judged once (caption_segments).
    return [(words[start][0], words[start + WINDOW_WORDS - 1][1]) for start in starts]


def _top_k_mean(similarity: np.ndarray, k: int) -> np.ndarray:
    """Per row, the mean of its k largest values."""
    k = min(k, similarity.shape[1])
    return np.partition(similarity, similarity.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


# The fits are a few hundred mid-sized products at load; on two shared cores a second BLAS thread mostly
# waits for a core another process holds (measured: 13 s against 1.4 s for a policy's fits).
@threadpool_limits.wrap(limits=1, user_api="blas")
def _fit_logistic(x: np.ndarray, y: np.ndarray, weights: np.ndarray, ridge: float, steps: int = 25) -> np.ndarray:
    """Weighted L2-regularised logistic regression by Newton's method; returns [w..., b].

    Newton steps on a 385-dimensional problem converge in a handful of iterations and need no
    learning rate, so the fit is exact and repeatable."""
    design = np.hstack([x, np.ones((len(x), 1))]).astype(np.float64)
    theta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], ridge)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        z = np.clip(design @ theta, -35, 35)
        p = 1.0 / (1.0 + np.exp(-z))
        gradient = design.T @ (weights * (p - y)) + penalty * theta
        curvature = weights * p * (1 - p)
        hessian = (design * curvature[:, None]).T @ design + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-7:
            break
    return theta


class SemanticLayer:
    """Scores captions against the categories of a semantic.toml (and its training captions)."""

    def __init__(self, config: dict[str, Any], embedder: Embedder | None = None,
                 training: Sequence[TrainingCaption] = ()):
        model = config.get("model", {})
        self.ridge = float(model.get("ridge", 1.0))
        # Other categories' examples are negatives too, at this weight: it keeps the categories apart
        # (a weapon photo is not an instruction for harm) without letting one category hide another.
        self.other_category_weight = float(model.get("other_category_weight", 0.3))
        # 0 turns the nearest-example judge off (the logistic classifier alone).
        self.nearest_k = int(model.get("nearest_k", NEAREST_K))
        self.encoder_folder = config.get("encoder", {}).get("folder") or None
        # "int8" (linear layers in 8-bit integers, ~2.5x faster per caption) or "float32" (the exact
        # arithmetic). Examples and captions always go through the same one.
        self.encoder_precision = str(config.get("encoder", {}).get("precision", "float32"))
        specs = config.get("categories", {})
        unknown = sorted({t.category for t in training} - set(specs) - set(GENERAL_HARMLESS))
        if unknown:
            raise ValueError(f"training captions name categories that semantic.toml lacks: {', '.join(unknown)}")
        self.harmless = tuple(config.get("harmless", {}).get("examples", [])) + tuple(
            t.caption for t in training if not t.harmful and t.category in GENERAL_HARMLESS)
        self.categories = [
            SemanticCategory(
                name=name,
                message=spec.get("message", f"The caption describes {name.replace('_', ' ')}, which this site does not generate."),
                review_at=spec.get("review_at"),
                deny_at=spec.get("deny_at"),
                covers=tuple(spec["covers"]) + tuple(t.caption for t in training if t.harmful and t.category == name),
                does_not_cover=tuple(spec.get("does_not_cover", [])) + tuple(
                    t.caption for t in training if not t.harmful and t.category == name),
            )
            for name, spec in specs.items()
        ]
        self.instructions = self._instruction_rule(config.get("instructions"))
        self.word_review = self._word_review(config.get("word_review"))
        self.reported_words = self._reported_words(config.get("reported_words"))
        self._embedder = embedder
        self._lock = threading.Lock()
        self._prepared: tuple[ExampleMatrix, ExampleMatrix, np.ndarray, list[np.ndarray]] | None = None
        # The act judge of [instructions]: (harmful acts, their vectors, harmless act vectors, classifier).
        self._acts: tuple[list[str], ExampleMatrix, ExampleMatrix, np.ndarray] | None = None
        # Every example (covered and harmless) with its vector, for near_examples().
        self._examples: tuple[list[str], np.ndarray] | None = None

    def _instruction_rule(self, spec: dict[str, Any] | None) -> InstructionRule | None:
        if not spec:
            return None
        if spec.get("category") not in {c.name for c in self.categories}:
            raise ValueError(f"semantic.toml: [instructions] category = {spec.get('category')!r} must name a [categories] table")
        return InstructionRule(spec["category"], spec.get("review_at"), spec.get("deny_at"),
                               tuple(spec.get("harmful_acts", [])), tuple(spec.get("harmless_acts", [])))

    def _word_review(self, spec: dict[str, Any] | None) -> WordReviewLift | None:
        if not spec or spec.get("clear_below") is None:
            return None
        sections = {name: tuple(categories) for name, categories in spec.get("sections", {}).items()}
        unknown = sorted({c for categories in sections.values() for c in categories} - {c.name for c in self.categories})
        if unknown:
            raise ValueError(f"semantic.toml: [word_review.sections] names categories it lacks: {', '.join(unknown)}")
        by_section = {name: float(value) for name, value in spec.get("clear_below_by_section", {}).items()}
        if set(by_section) - set(sections):
            raise ValueError("semantic.toml: [word_review.clear_below_by_section] names sections that "
                             f"[word_review.sections] lacks: {', '.join(sorted(set(by_section) - set(sections)))}")
        return WordReviewLift(float(spec["clear_below"]), sections, by_section)

    def _reported_words(self, spec: dict[str, Any] | None) -> ReportedWords | None:
        sections = {name: tuple(categories) for name, categories in (spec or {}).get("sections", {}).items()}
        if not sections:
            return None
        unknown = sorted({c for categories in sections.values() for c in categories} - {c.name for c in self.categories})
        if unknown:
            raise ValueError(f"semantic.toml: [reported_words.sections] names categories it lacks: {', '.join(unknown)}")
        return ReportedWords(sections)

    def reportable(self, decision: Decision) -> bool:
        """Whether a word rule's denial may be read as reporting on the harm it names (then the
        caption's meaning decides, ``softened_denials``): a plain, undisguised word of a section that
        [reported_words] names, in a caption that says more than the word ("child abuse" alone, or
        "child abuse pics", names the harm; it does not report on it)."""
        if (self.reported_words is None or decision.outcome is not Outcome.DENY or decision.evidence.get("evasion")
                or decision.evidence.get("words_around", 0) < MIN_REPORT_WORDS):
            return False
        section = decision.rule_id.removeprefix("usage.blocked.")
        return decision.rule_id.startswith("usage.blocked.") and section in self.reported_words.sections

    def softened_denials(self, assessment: Assessment, word_decisions: Sequence[Decision],
                         caption: str = "") -> dict[int, Decision]:
        """The word rules' denials that the caption's meaning turns into reviews, by their index in
        word_decisions: all of them or none (one denial left refuses the caption anyway). A denial is
        softened only when ``reportable`` and when the semantic layer judged the caption, denies
        nothing in it, and scores every category named for the word's section below its review_at (its
        deny_at where it has none), as a whole and in the word's own neighbourhood (CONTEXT_WORDS
        either side): the line that 98.5% of the harmful training captions reach, so a score below it
        says the caption does not ask for that harm. The semantic layer's own reviews
        (a weapon in a memorial photo) stand beside the softened word."""
        denials = [(i, d) for i, d in enumerate(word_decisions) if d.outcome is Outcome.DENY]
        if (not denials or not assessment.scores or not all(self.reportable(d) for _, d in denials)
                or any(d.outcome is Outcome.DENY for d in assessment.decisions)):
            return {}
        by_name = {c.name: c for c in self.categories}
        # The word's own neighbourhood must read as a report too: "a glue gun on a craft table, porn"
        # scores low as a whole, but "craft table, porn" is a request.
        try:
            vectors = self._embed_within([_context(caption, d) for _, d in denials], CONTEXT_TOKENS)
        except EncoderUnavailable:
            return {}
        if vectors is None:
            return {}  # the denials stand
        context_scores, _ = self._category_scores(vectors)
        names = [c.name for c in self.categories]
        softened = {}
        for row, (index, decision) in enumerate(denials):
            categories = self.reported_words.sections[decision.rule_id.removeprefix("usage.blocked.")]
            lines = {c: by_name[c].review_at if by_name[c].review_at is not None else by_name[c].deny_at for c in categories}
            scores = {c: round(max(assessment.scores[c], float(context_scores[row, names.index(c)])), 3) for c in categories}
            if any(scores[c] >= lines[c] for c in categories):
                return {}
            softened[index] = Decision(
                Outcome.REVIEW, decision.rule_id,
                f"{decision.message.split(' (matched')[0].rstrip('.')}: the caption names it (matched "
                f"“{decision.evidence.get('matched', '')}”) but its meaning is far from "
                f"{', '.join(c.replace('_', ' ') for c in categories)}, as when a caption reports on the harm; "
                "the images will get an extra review.",
                {**decision.evidence, "reported": True, "semantic_scores": scores, "thresholds": lines})
        return softened

    def act_examples(self) -> tuple[list[str], list[str]]:
        """(harmful, harmless) act phrases the act judge learns from: those of [instructions], and the
        acts of every framed example (the category's covered captions give harmful acts; every
        harmless caption, look-alike or general, gives harmless ones)."""
        rule = self.instructions
        if rule is None:
            return [], []
        harmful = [normalise(t).text for t in rule.harmful_acts]
        harmless = [normalise(t).text for t in rule.harmless_acts]
        for category in self.categories:
            if category.name == rule.category:
                harmful += [a.act for t in category.covers for a in framed_acts(normalise(t).text)]
            harmless += [a.act for t in category.does_not_cover for a in framed_acts(normalise(t).text)]
        harmless += [a.act for t in self.harmless for a in framed_acts(normalise(t).text)]
        harmful = list(dict.fromkeys(harmful))
        known = set(harmful)
        return harmful, [t for t in dict.fromkeys(harmless) if t not in known]

    # -- preparation (once per policy version per process) -----------------------------------

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        if self._embedder is None:
            self._embedder = shared_encoder(self.encoder_folder, self.encoder_precision)
        vectors = np.asarray(self._embedder(list(texts)), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts) or not np.isfinite(vectors).all():
            raise EncoderUnavailable("the text encoder returned malformed embeddings")
        return vectors

    def _embed_examples(self, texts: list[str]) -> np.ndarray:
        """The examples' vectors; with the packaged encoder, each is embedded once per process, however
        many policy folders (or versions of one) share it."""
        if self._embedder is not None and not isinstance(self._embedder, MiniLMEncoder):
            return self._embed(texts)
        encoder = self._embedder or shared_encoder(self.encoder_folder, self.encoder_precision)
        self._embedder = encoder
        with _example_vectors_lock:
            known = _example_vectors.setdefault(f"{encoder.folder}|{encoder.precision}", {})
            missing = [t for t in dict.fromkeys(texts) if t not in known]
        if missing:
            cache = vector_cache(encoder)
            if cache is not None:
                for text, vector in cache.load().items():
                    known.setdefault(text, vector)
                missing = [t for t in missing if t not in known]
            if missing:
                for text, vector in zip(missing, self._embed(missing)):
                    known[text] = vector
                if cache is not None:
                    cache.save(dict(known))
        return np.stack([known[t] for t in texts]) if texts else np.zeros((0, encoder.dim), dtype=np.float32)

    def _prepare(self) -> tuple[ExampleMatrix, ExampleMatrix, np.ndarray, list[np.ndarray]]:
        with self._lock:
            if self._prepared is not None:
                return self._prepared
            harmless = list(self.harmless) + [t for c in self.categories for t in c.does_not_cover]
            covers = [normalise(t).text for c in self.categories for t in c.covers]
            owner = np.array([i for i, c in enumerate(self.categories) for _ in c.covers], dtype=np.int64)
            vectors = self._embed_examples(covers + [normalise(t).text for t in harmless])
            cover_vectors, harmless_vectors = vectors[: len(covers)], vectors[len(covers) :]
            classifiers = []
            for index in range(len(self.categories)):
                positive = owner == index
                x = np.vstack([cover_vectors, harmless_vectors])
                y = np.concatenate([positive.astype(np.float64), np.zeros(len(harmless_vectors))])
                # Balanced classes: the positives weigh as much in total as the harmless examples.
                n_pos, n_harmless = positive.sum(), len(harmless_vectors)
                weights = np.concatenate([
                    np.where(positive, n_harmless / max(n_pos, 1), self.other_category_weight),
                    np.ones(n_harmless),
                ])
                kept = weights > 0  # a zero weight adds nothing but work
                classifiers.append(_fit_logistic(x[kept], y[kept], weights[kept], self.ridge))
            if self.instructions is not None:
                harmful_acts, harmless_acts = self.act_examples()
                act_vectors = self._embed_examples(harmful_acts + harmless_acts)
                y = np.concatenate([np.ones(len(harmful_acts)), np.zeros(len(harmless_acts))])
                weights = np.concatenate([np.full(len(harmful_acts), len(harmless_acts) / max(len(harmful_acts), 1)),
                                          np.ones(len(harmless_acts))])
                self._acts = (harmful_acts, ExampleMatrix(act_vectors[: len(harmful_acts)]), ExampleMatrix(act_vectors[len(harmful_acts):]),
                              _fit_logistic(act_vectors, y, weights, self.ridge))
            logger.info("semantic layer ready: %d categories, %d examples", len(self.categories), len(vectors))
            self._examples = ([t for c in self.categories for t in c.covers] + harmless, vectors)
            self._prepared = (ExampleMatrix(cover_vectors), ExampleMatrix(harmless_vectors), owner, classifiers)
            return self._prepared

    def example_keys(self) -> set[str]:
        """Every caption the layer learns from (covered, not covered, harmless, training), as
        ``example_key`` gives it."""
        texts = list(self.harmless) + [t for c in self.categories for t in c.covers + c.does_not_cover]
        return {example_key(t) for t in texts}

    def near_examples(self, captions: Sequence[str]) -> list[tuple[float, str]]:
        """For each caption, its highest cosine similarity to any example and that example.

        An evaluation leaves out captions that are near-copies of examples, not only exact ones:
        a caption that paraphrases an example word for word is judged from memory."""
        self._prepare()
        assert self._examples is not None
        texts, vectors = self._examples
        if not captions:
            return []
        similarity = self._embed([plain_text(normalise(c).text) for c in captions]) @ vectors.T
        best = similarity.argmax(axis=1)
        return [(float(similarity[i, j]), texts[j]) for i, j in enumerate(best)]

    def warm_up(self) -> None:
        """Load the encoder and fit the classifiers now (a worker or web process at start-up)."""
        self._prepare()

    # -- judging --------------------------------------------------------------------------------

    def _category_scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, categories) scores of unit vectors, and the cosine similarities to the covers."""
        cover_vectors, harmless_vectors, owner, classifiers = self._prepare()
        vectors = np.asarray(vectors, dtype=np.float32)
        design = np.hstack([vectors.astype(np.float64), np.ones((len(vectors), 1))])
        theta = np.stack(classifiers, axis=1)  # (dim + 1, categories)
        scores = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -35, 35)))
        # Cosines of unit vectors in float32, as the examples are kept: converting 12,000 examples to
        # float64 on every caption cost more than the product itself.
        similarity = cover_vectors.cosines(vectors)  # (rows, covers)
        if self.nearest_k > 0:
            k = self.nearest_k
            # The harmless side is the same for every category: its k nearest are found once.
            harmless_near = _top_k_mean(harmless_vectors.cosines(vectors), k).astype(np.float64)
            nearest = np.empty_like(scores)
            # The covers are grouped by category (owner is sorted): each category's are one slice.
            bounds = np.searchsorted(owner, np.arange(len(self.categories) + 1))
            for index in range(len(self.categories)):
                covered_near = _top_k_mean(similarity[:, bounds[index]:bounds[index + 1]], k).astype(np.float64)
                nearest[:, index] = 1.0 / (1.0 + np.exp(-NEAREST_SCALE * (covered_near - harmless_near)))
            scores = (scores + nearest) / 2
        return scores, similarity

    def _act_scores(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each act's score (0 to 1, as a category's score) and the index of its nearest harmful act."""
        assert self._acts is not None
        _, harmful, harmless, theta = self._acts
        vectors = np.asarray(vectors, dtype=np.float32)
        design = np.hstack([vectors.astype(np.float64), np.ones((len(vectors), 1))])
        scores = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -35, 35)))
        to_harmful = harmful.cosines(vectors).astype(np.float64)
        if self.nearest_k > 0:
            k = self.nearest_k
            difference = _top_k_mean(to_harmful, k) - _top_k_mean(harmless.cosines(vectors).astype(np.float64), k)
            scores = (scores + 1.0 / (1.0 + np.exp(-NEAREST_SCALE * difference))) / 2
        return scores, to_harmful.argmax(axis=1)

    def _pooled(self, text: str, acts: Sequence[FramedAct],
                token_states: Callable[..., tuple[np.ndarray, list[tuple[int, int]]]]) -> tuple[np.ndarray, np.ndarray]:
        """A long caption's window and act vectors from one banded pass over its tokens.

        A pass per window sends each word through the encoder 1.6 times and adds two marks per window;
        one pass whose attention reaches BAND tokens either side sends each word once, and the mean of
        a window's states is close to the window embedded alone (cosine 0.84-0.92 on long captions;
        on captions planted in long harmless ones it found as many harmful ones, README, "Speed")."""
        states, offsets = token_states(text, band=BAND, max_tokens=PASS_TOKENS)
        starts = np.array([a for a, _ in offsets])
        ends = np.array([b for _, b in offsets])
        real = ends > starts  # [CLS], [SEP] and padding have no characters

        def pool(start: int, end: int) -> np.ndarray:
            rows = real & (starts >= start) & (ends <= end)
            vector = states[rows].mean(axis=0) if rows.any() else states[real].mean(axis=0)
            return vector / max(float(np.linalg.norm(vector)), 1e-12)

        spans = list(dict.fromkeys(window_spans(text)))
        spans = list({text[a:b]: (a, b) for a, b in spans}.values())  # one per distinct window text
        vectors = np.stack([pool(a, b) for a, b in spans]).astype(np.float32)
        act_vectors = np.zeros((len(acts), vectors.shape[1]), dtype=np.float32)
        alone = [i for i, act in enumerate(acts) if act.start < 0]
        for i, act in enumerate(acts):
            if act.start >= 0:
                act_vectors[i] = pool(act.start, act.start + len(act.act))
        if alone:  # an act that is not one stretch of the caption is embedded by itself, its cost bounded
            texts = [acts[i].act for i in alone]
            truncate = getattr(self._embedder, "truncate", None)
            act_vectors[alone] = self._embed(truncate(texts, ACT_TOKENS) if truncate is not None else texts)
        return vectors, act_vectors

    def scores(self, caption: str) -> list[CategoryScore]:
        """Per category: the highest score over the caption's segments, with its evidence."""
        return self.judge(caption)[0]

    def judge(self, caption: str) -> tuple[list[CategoryScore], ActScore | None]:
        """Per category, the highest score over the caption's segments with its evidence; and, with
        [instructions], the most harmful act that an instruction frame of the caption introduces."""
        _, _, owner, _ = self._prepare()
        text = plain_text(normalise(caption).text)
        acts: list[FramedAct] = framed_acts(text) if self._acts is not None else []
        segments = caption_segments(caption)
        token_states = getattr(self._embedder, "token_states", None)
        if token_states is not None and (len(segments) > 1 or self._tokens(segments + [a.act for a in acts], SHORT_PATH_TOKENS) > SHORT_PATH_TOKENS):
            vectors, act_vectors = self._pooled(text, acts, token_states)
            segments = list(dict.fromkeys(text[start:end] for start, end in window_spans(text)))
        else:
            truncate = getattr(self._embedder, "truncate", None)
            if truncate is not None and len(segments) > 1:
                segments = truncate(segments, WINDOW_TOKENS)
            # One call to the encoder for the segments and the acts.
            embedded = self._embed(segments + [a.act for a in acts])
            vectors, act_vectors = embedded[: len(segments)], embedded[len(segments):]
        if len(segments) > 1:
            # The caption as a whole: the mean of its windows (embedding it again would double the
            # cost of a long caption for what the windows already say).
            whole = vectors.mean(axis=0, keepdims=True)
            vectors = np.vstack([vectors, whole / max(float(np.linalg.norm(whole)), 1e-12)])
        scores, similarity = self._category_scores(vectors)
        whole_row = len(vectors) - 1
        segment_scores = scores[: len(segments)]
        results = []
        for index, category in enumerate(self.categories):
            best = int(segment_scores[:, index].argmax())
            own = np.flatnonzero(owner == index)
            nearest = own[int(similarity[best, own].argmax())]
            results.append(CategoryScore(category.name, float(segment_scores[best, index]), self._cover_text(nearest),
                                         float(similarity[best, nearest]), segments[best], float(scores[whole_row, index])))
        act = None
        if acts and self._acts is not None:
            act_scores, nearest_acts = self._act_scores(act_vectors)
            best = int(act_scores.argmax())
            example = int(nearest_acts[best])
            act = ActScore(acts[best].frame, acts[best].act, float(act_scores[best]), self._acts[0][example],
                           float(act_vectors[best] @ self._acts[1][example]))
        return results, act

    def _embed_within(self, texts: list[str], budget: int) -> np.ndarray | None:
        """``_embed(texts)``, or None when they come to more than ``budget`` word pieces."""
        return None if self._tokens(texts, budget) > budget else self._embed(texts)

    def _tokens(self, texts: list[str], stop_above: int) -> int:
        """The word pieces of these texts together ([CLS] and [SEP] included), counted text by text
        until they pass ``stop_above``; 0 without a tokeniser."""
        token_ids = getattr(self._embedder, "token_ids", None)
        total = 0
        for text in texts if token_ids is not None else ():
            total += len(token_ids([text])[0])
            if total > stop_above:
                break
        return total

    def _token_counter(self) -> Callable[[str], int] | None:
        token_ids = getattr(self._embedder, "token_ids", None)
        return (lambda text: len(token_ids([text])[0])) if token_ids else None

    def _cover_text(self, flat_index: int) -> str:
        for category in self.categories:
            if flat_index < len(category.covers):
                return category.covers[flat_index]
            flat_index -= len(category.covers)
        raise IndexError(flat_index)

    def check(self, caption: str) -> list[Decision]:
        """Decisions for the categories whose thresholds the caption reaches; fails closed."""
        return self.assess(caption).decisions

    def lifted_reviews(self, assessment: Assessment, word_decisions: Sequence[Decision], caption: str = "") -> dict[int, Decision]:
        """The word rules' reviews that the caption's meaning lifts, by their index in word_decisions,
        each replaced by an ALLOW decision that says why (so the lift stays on the record).

        A review is lifted only when all of these hold: its rule is a [blocked] section that
        [word_review.sections] names; the word was written plainly (a disguised spelling is a denial
        and denials are never lifted); the semantic layer flags nothing in the caption; and every
        category named for the section scores below clear_below in every window and as a whole.
        So a lift can only turn a review into an allow where the meaning is confidently harmless;
        "the strictest outcome wins" still holds for every denial and every semantic review.

        The word's own neighbourhood (CONTEXT_WORDS either side of it) must score low too: in a long
        caption, "... a lighthouse on the point, and a naked child" shares its window with harbour
        words that pull the window's score down, and the word's few neighbours are what it means."""
        lift = self.word_review
        if lift is None or not assessment.scores or any(d.outcome is not Outcome.ALLOW for d in assessment.decisions):
            return {}
        candidates = []
        for index, decision in enumerate(word_decisions):
            section = decision.rule_id.removeprefix("usage.blocked.")
            categories = lift.sections.get(section) if decision.rule_id.startswith("usage.blocked.") else None
            if decision.outcome is not Outcome.REVIEW or not categories or decision.evidence.get("evasion"):
                continue
            if max(assessment.scores[c] for c in categories) >= lift.threshold(section):
                return {}  # one review stays, so the caption goes to a reviewer anyway
            candidates.append((index, decision, categories, lift.threshold(section)))
        if not candidates or len(candidates) > MAX_LIFTS:
            return {}
        contexts = [_context(caption, decision) for _, decision, _, _ in candidates]
        try:
            vectors = self._embed_within(contexts, CONTEXT_TOKENS)
        except EncoderUnavailable:
            return {}  # the reviews stand
        if vectors is None:
            return {}  # the reviews stand
        context_scores, _ = self._category_scores(vectors)
        names = [c.name for c in self.categories]
        lifted = {}
        for row, (index, decision, categories, clear_below) in enumerate(candidates):
            scores = {c: round(max(assessment.scores[c], float(context_scores[row, names.index(c)])), 3) for c in categories}
            if max(scores.values()) < clear_below:
                lifted[index] = Decision(
                    Outcome.ALLOW, decision.rule_id,
                    f"{decision.message} Review lifted: the caption's meaning is far from "
                    f"{', '.join(c.replace('_', ' ') for c in categories)} (every score below {clear_below}).",
                    {**decision.evidence, "lifted": True, "semantic_scores": scores, "clear_below": clear_below,
                     "context": contexts[row]})
        # All or nothing: a caption with one review left goes to a reviewer, who sees every word.
        return lifted if len(lifted) == len(candidates) else {}

    def assess(self, caption: str) -> Assessment:
        """The decisions for the categories whose thresholds the caption reaches, with the scores
        behind them; fails closed."""
        if not self.categories:
            return Assessment([], {})
        try:
            self._prepare()
            counter = self._token_counter()
            tokens = counter(plain_text(normalise(caption).text)) if counter else 0
            if tokens > TOKEN_LIMIT:
                return Assessment([Decision(Outcome.DENY, "usage.semantic.unreadable",
                                            f"The caption is {tokens} word pieces long for its {len(caption)} characters: too "
                                            "many unusual character sequences to judge what it means. Write it in plain words.",
                                            {"tokens": tokens, "limit": TOKEN_LIMIT})], {})
            scored, act = self.judge(caption)
        except EncoderUnavailable as exc:
            logger.error("semantic usage policy unavailable: %s", exc)
            return Assessment([Decision(Outcome.DENY, "usage.semantic.unavailable",
                                        "The meaning of captions cannot be checked right now, so none is accepted; "
                                        "tell the site administrator.", {"error": str(exc)})], {})
        decisions = []
        by_name = {c.name: c for c in self.categories}
        act_decision = self._act_decision(act)
        words = len(normalise(caption).text.split())
        for result in scored:
            category = by_name[result.category]
            outcome = category.outcome_for(result.score)
            if outcome is Outcome.DENY and category.outcome_for(result.whole_score) is not Outcome.DENY:
                # A window of eight words is judged out of context ("boats, seagulls, an
                # illustration of a"): alone it asks a reviewer, it never refuses the caption.
                outcome = Outcome.REVIEW
            if outcome is Outcome.DENY and words < MIN_DENY_WORDS:
                # One word gives the encoder too little to go on: a rare word is judged by its
                # word pieces ("hellebores": "hell", "##eb", "##ores"). Known slang is the word
                # rules' job; the meaning alone asks a reviewer.
                outcome = Outcome.REVIEW
            if (act_decision is not None and category.name == act_decision.evidence["category"]
                    and act_decision.outcome.severity >= outcome.severity):
                decisions.append(act_decision)  # the frame and its act say more than the whole caption's score
                continue
            if outcome is Outcome.ALLOW:
                continue
            threshold = category.deny_at if outcome is Outcome.DENY else category.review_at or category.deny_at
            decisions.append(Decision(
                outcome, category.rule_id, f"{category.message} (closest example: “{result.nearest_example}”)",
                {"category": category.name, "score": round(result.score, 3), "threshold": threshold,
                 "nearest_example": result.nearest_example, "similarity": round(result.similarity, 3),
                 "judged_text": result.judged_text},
            ))
        decisions = self._negated(caption, decisions, by_name)
        return Assessment(decisions, {r.category: max(r.score, r.whole_score) for r in scored})

    def _negated(self, caption: str, decisions: list[Decision], by_name: dict[str, SemanticCategory]) -> list[Decision]:
        """Category denials that rest on a negated harm ("a rave with neon lights, no drugs") become
        reviews: when a negated phrase alone reaches the category's review_at ("drugs", "gore",
        "nudity") and the caption without it stays below deny_at. A negation that is itself the harm
        ("no clothes on", "without any clothing") names no harm alone, so the denial stands."""
        denied = [d for d in decisions if d.outcome is Outcome.DENY and d.evidence.get("judge") != "instructions"
                  and d.evidence.get("category") in by_name]
        if not denied:
            return decisions
        text = plain_text(normalise(caption).text)
        found = list(NEGATED_PHRASE.finditer(text))[:MAX_NEGATIONS]
        if not found or any(NEGATED_GARMENT.search(m.group(1)) for m in found):
            return decisions
        rest = NEGATED_PHRASE.sub(" ", text)
        try:
            vectors = self._embed_within([m.group(1).strip() for m in found] + [rest], NEGATION_TOKENS)
        except EncoderUnavailable:
            return decisions  # the denials stand
        if vectors is None:
            return decisions  # the denials stand
        scores, _ = self._category_scores(vectors)
        names = [c.name for c in self.categories]
        changed = []
        for decision in decisions:
            if decision not in denied:
                changed.append(decision)
                continue
            category = by_name[decision.evidence["category"]]
            column = names.index(category.name)
            harm_named = float(scores[: len(found), column].max()) >= (category.review_at or category.deny_at)
            rest_score = float(scores[len(found), column])
            if harm_named and rest_score < category.deny_at:
                changed.append(Decision(
                    Outcome.REVIEW, decision.rule_id,
                    f"{decision.message.rstrip('.')}; the caption negates it (“{found[0].group().strip()}”), so the "
                    "images get an extra review instead.",
                    {**decision.evidence, "negated": [m.group().strip() for m in found],
                     "score_without_negated": round(rest_score, 3)}))
            else:
                changed.append(decision)
        return changed

    def _act_decision(self, act: ActScore | None) -> Decision | None:
        """[instructions]' decision on the caption's most harmful framed act, if it reaches a threshold."""
        rule = self.instructions
        if rule is None or act is None:
            return None
        outcome = rule.outcome_for(act.score)
        if outcome is Outcome.ALLOW:
            return None
        category = next(c for c in self.categories if c.name == rule.category)
        return Decision(
            outcome, category.rule_id,
            f"{category.message} (asked for as instructions: “{act.frame} {act.act}”; closest harmful act: "
            f"“{act.nearest_example}”)",
            {"category": category.name, "score": round(act.score, 3),
             "threshold": rule.deny_at if outcome is Outcome.DENY else rule.review_at, "judge": "instructions",
             "frame": act.frame, "act": act.act, "nearest_example": act.nearest_example,
             "similarity": round(act.similarity, 3), "judged_text": act.act},
        )


def _context(caption: str, decision: Decision) -> str:
    """The matched word of a word rule's decision with CONTEXT_WORDS words either side, normalised."""
    span = decision.evidence.get("span")
    if not span:
        return plain_text(normalise(caption).text)
    before = caption[: span[0]].split()[-CONTEXT_WORDS:]
    after = caption[span[1]:].split()[:CONTEXT_WORDS]
    return plain_text(normalise(" ".join([*before, caption[span[0]:span[1]], *after])).text)


def example_key(text: str) -> str:
    """What two captions share when one is a copy of the other (case, accents, punctuation aside)."""
    return re.sub(r"[^\w]+", " ", normalise(text).text).strip()
