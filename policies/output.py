"""Output policy on generated images: degenerate output, near-copies of training images, and any
further classifiers a site plugs in. Works on Pillow images or numpy arrays; no torch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from policies.decisions import Decision, Outcome, Verdict
from policies.local_features import LocalMatch
from policies.near_copy import LegacyHashIndex, NearCopyIndex, NearCopyMatch, query_rgb, thumbnail

# The most pixels an image to be checked may declare: the same as the API's verify endpoint
# (STACKGAN['VERIFY_MAX_PIXELS'] defaults to it). Judged from the header, before any pixel is decoded.
MAX_CHECKED_PIXELS = 4096 * 4096

logger = logging.getLogger(__name__)

# The near-copy search stops before its costly verification when the colour layout is this much below
# min_similarity at the coarse alignment: on the calibration half of
# benchmarks/near_copy_robustness.py the finer alignment raised it by at most 0.226 (a 10% crop
# resized back), so no image that could reach the threshold is cut short.
VERIFY_MARGIN = 0.25

# A site's own image check (STACKGAN["OUTPUT_CHECKS"] names them by dotted path): a Pillow RGB
# image in, zero or more decisions out.
ImageCheck = Callable[[Image.Image], Iterable[Decision]]

__all__ = ["ImageCheck", "LegacyHashIndex", "NearCopyIndex", "OutputPolicy", "as_pil", "hamming", "perceptual_hash"]


def as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array * (255 if array.max() <= 1.0 else 1), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT32 = _dct_matrix(32)


def perceptual_hash(image: Image.Image | np.ndarray) -> int:
    """64-bit pHash: 32x32 grey, 2-D DCT, the 8x8 lowest frequencies against their median."""
    grey = np.asarray(as_pil(image).convert("L").resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT32 @ grey @ _DCT32.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


class OutputPolicy:
    def __init__(self, config: dict[str, Any], version: str, extra_checks: Iterable[ImageCheck] | None = None):
        self.version = version
        self.config = config
        degenerate = config.get("degenerate", {})
        self.min_std = float(degenerate.get("min_std", 4.0))
        # Two settings share the name min_detail in the file; each section keeps its own.
        self.min_smear_detail = float(degenerate.get("min_detail", 1.0))
        self.degenerate_outcome = Outcome.parse(degenerate.get("outcome", "deny"))
        near = config.get("near_copy", {})
        self.min_similarity = float(near.get("min_similarity", 0.9))
        self.min_copy_detail = float(near.get("min_detail", 0.7))
        # The search in grey (greyscale, sepia, hue-turned copies): stricter than the colour search,
        # since drawings that differ by colour alone look more alike in grey.
        self.min_luminance_similarity = float(near.get("min_luminance_similarity", 0.98))
        self.min_luminance_detail = float(near.get("min_luminance_detail", 0.97))
        # A copy turned a few degrees or framed by a margin is searched for only when, so undone, its
        # 8x8 layout agrees with a training image at least this much (the shipped model's images
        # almost never do).
        self.reframe_from = float(near.get("reframe_from", 0.93))
        # The same for a copy whose colours were inverted or whose hues were turned, with its colours
        # turned back, and for one on a new background or tinted, with those undone (judged under
        # the grey search's thresholds).
        self.recolour_from = float(near.get("recolour_from", 0.9))
        # A copy used as part of a larger picture (policies.local_features): this many matched keypoints
        # under one map, showing this share of the training drawing, this share of it alike.
        self.min_local_inliers = int(near.get("min_local_inliers", 20))
        self.min_local_visible = float(near.get("min_local_visible", 0.4))
        self.min_local_agreement = float(near.get("min_local_agreement", 0.8))
        self.max_distance = int(near.get("max_hamming_distance", 6))  # legacy pHash indexes only
        self.near_copy_outcome = Outcome.parse(near.get("outcome", "deny"))
        self.extra_checks = list(extra_checks or [])
        for check in self.extra_checks:
            if not callable(check):
                raise TypeError(f"an output check must be callable (image -> decisions), got {check!r}")

    def with_checks(self, checks: Iterable[ImageCheck]) -> OutputPolicy:
        """This policy plus more image checks (e.g. the site's STACKGAN["OUTPUT_CHECKS"])."""
        return OutputPolicy(self.config, self.version, [*self.extra_checks, *checks])

    def check_image(self, image: Image.Image | np.ndarray,
                    near_copies: NearCopyIndex | LegacyHashIndex | None = None) -> Verdict:
        """The output policy on one image: a batch of one (``check_images``), so a worker's batch
        and a single check always decide alike."""
        return self.check_images([image], near_copies)[0]

    def check_images(self, images: Sequence[Image.Image | np.ndarray],
                     near_copies: NearCopyIndex | LegacyHashIndex | None = None) -> list[Verdict]:
        """The output policy on each of several images (a worker's batch), one verdict per image in
        order. Every image gets every check; the near-copy search runs over the whole batch in one
        vectorised pass (``NearCopyIndex.nearest_many``), which is where the time goes."""
        pils = [as_pil(image) for image in images]
        verdicts = [Verdict("output", self.version) for _ in pils]
        for pil, verdict in zip(pils, verdicts, strict=True):
            verdict.decisions.extend(self._check_degenerate(pil))
        if near_copies is not None:
            for verdict, decisions in zip(verdicts, self._check_near_copies(pils, near_copies), strict=True):
                verdict.decisions.extend(decisions)
        for pil, verdict in zip(pils, verdicts, strict=True):
            for check in self.extra_checks:
                verdict.decisions.extend(self._run_extra(check, pil))
        return verdicts

    def _check_degenerate(self, pil: Image.Image) -> list[Decision]:
        grey = np.asarray(pil.convert("L"), dtype=np.float64)
        std = float(grey.std())
        if std < self.min_std:
            return [Decision(
                self.degenerate_outcome, "output.degenerate.blank",
                "The image is almost a single flat colour: the generator failed on this one.",
                {"std": round(std, 3), "minimum": self.min_std},
            )]
        # A one-pixel-wide image has no differences along that side: only the other side counts
        # (the mean of an empty array would be NaN, and NaN passes every comparison).
        steps = [np.abs(np.diff(grey, axis=axis)).mean() for axis in (0, 1) if grey.shape[axis] > 1]
        detail = float(sum(steps) / len(steps)) if steps else 0.0
        if detail < self.min_smear_detail:
            return [Decision(
                self.degenerate_outcome, "output.degenerate.detail",
                "The image has almost no detail (a smooth smear).",
                {"mean_gradient": round(detail, 3), "minimum": self.min_smear_detail},
            )]
        return []

    def _check_near_copies(self, pils: list[Image.Image],
                           index: NearCopyIndex | LegacyHashIndex) -> list[list[Decision]]:
        message = "The image is a near-copy of a training image (memorisation risk)."
        if isinstance(index, LegacyHashIndex):
            found = []
            for pil in pils:
                distance, name = index.nearest_hash(perceptual_hash(pil))
                found.append([Decision(self.near_copy_outcome, "output.near_copy", message,
                                       {"hamming_distance": distance, "limit": self.max_distance, "training_item": name})]
                             if distance <= self.max_distance else [])
            return found
        matches = index.nearest_many(pils, verify_from=self.min_similarity - VERIFY_MARGIN)
        # Only the images the colour search let through are searched again, in grey.
        unflagged = [number for number, match in enumerate(matches) if not self.is_near_copy(match)]
        if unflagged:
            in_grey = index.nearest_luminance_many([pils[number] for number in unflagged],
                                                   verify_from=self.min_luminance_similarity - VERIFY_MARGIN)
            for number, match in zip(unflagged, in_grey, strict=True):
                if self.is_near_copy(match):
                    matches[number] = match
        # Last, with a turn or a margin undone on the query, then with its colours turned back
        # (inverted, or hues turned), then with a new background or a tint undone, each for the
        # images still let through (a flat image, None, has no layout to turn). The gates read the
        # same thumbnails.
        close = [number for number, match in enumerate(matches) if match is not None and not self.is_near_copy(match)]
        thumbnails = {number: thumbnail(query_rgb(pils[number])) for number in close}
        stages = ((index.nearest_reframed_many, self.min_similarity, self.reframe_from),
                  (index.nearest_recoloured_many, self.min_luminance_similarity, self.recolour_from),
                  (index.nearest_repainted_many, self.min_luminance_similarity, self.recolour_from))
        for search, minimum, search_from in stages:
            close = [number for number in close if not self.is_near_copy(matches[number])]
            if not close:
                break
            found = search([pils[number] for number in close], verify_from=minimum - VERIFY_MARGIN,
                           search_from=search_from, thumbnails=np.stack([thumbnails[number] for number in close]))
            for number, match in zip(close, found, strict=True):
                if self.is_near_copy(match):
                    matches[number] = match
        # Last, for what the whole-picture searches let through: the training drawing as part of the
        # picture (beside others, in a screenshot, under a sticker, a third cropped away, turned or
        # stretched), found by its local features and checked pixel by pixel under the fitted map.
        local: dict[int, LocalMatch] = {}
        remaining = [number for number, match in enumerate(matches) if not self.is_near_copy(match)]
        if remaining:
            for number, found in zip(remaining, index.nearest_local_many([pils[number] for number in remaining]), strict=True):
                if self.is_local_copy(found):
                    local[number] = found
        decisions = []
        for number, match in enumerate(matches):
            if number in local:
                found = local[number]
                decisions.append([Decision(self.near_copy_outcome, "output.near_copy", message, {
                    "compared": "local features", "training_item": found.name, "inliers": found.inliers,
                    "minimum_inliers": self.min_local_inliers, "visible": round(found.visible, 3),
                    "minimum_visible": self.min_local_visible, "agreement": round(found.agreement, 3),
                    "minimum_agreement": self.min_local_agreement, "mirrored": found.mirrored,
                })])
                continue
            if not self.is_near_copy(match):
                decisions.append([])
                continue
            minimum, minimum_detail = self.thresholds(match)
            decisions.append([Decision(self.near_copy_outcome, "output.near_copy", message, {
                "similarity": round(match.similarity, 4), "minimum": minimum, "detail": round(match.detail, 4),
                "minimum_detail": minimum_detail, "training_item": match.name, "compared": match.compared,
                "mirrored": match.mirrored, "scale": round(match.scale, 3), "offset_cells": list(match.offset),
                **({"undone": match.reframed} if match.reframed else {}),
            })])
        return decisions

    def is_local_copy(self, found: LocalMatch | None) -> bool:
        """Enough keypoints agree on one map, and under it the picture shows enough of the training
        drawing, alike: a part of the drawing that two different emoji share does not count."""
        return (found is not None and found.inliers >= self.min_local_inliers and found.visible >= self.min_local_visible
                and found.agreement >= self.min_local_agreement)

    def thresholds(self, match: NearCopyMatch) -> tuple[float, float]:
        """(similarity, detail) a match must reach: the colour search's, or the luminance search's
        stricter ones for a match found in grey or with the query's colours turned back (either way,
        drawings that differ by colour alone come closer)."""
        if match.compared in ("luminance", "recoloured"):
            return self.min_luminance_similarity, self.min_luminance_detail
        return self.min_similarity, self.min_copy_detail

    def is_near_copy(self, match: NearCopyMatch | None) -> bool:
        """Both the layout and the fine features agree with a training image, in colour or in grey,
        each under its own thresholds."""
        if match is None:
            return False
        minimum, minimum_detail = self.thresholds(match)
        return match.similarity >= minimum and match.detail >= minimum_detail

    @staticmethod
    def _run_extra(check: ImageCheck, pil: Image.Image) -> list[Decision]:
        name = getattr(check, "__qualname__", repr(check))
        try:
            decisions = list(check(pil.copy()) or [])
            if not all(isinstance(d, Decision) for d in decisions):
                raise TypeError("it must return Decision objects")
            return decisions
        except Exception as exc:  # a site's check that breaks must not let an unchecked image through
            logger.exception("output check %s failed", name)
            return [Decision(Outcome.DENY, "output.check_failed",
                             f"The image check {name} failed, so the image is held back: {type(exc).__name__}: {exc}",
                             {"check": name})]
