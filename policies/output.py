"""Output policy on generated images: degenerate output, near-copies of training images, and any
further classifiers a site plugs in. Works on Pillow images or numpy arrays; no torch."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from policies.decisions import Decision, Outcome, Verdict

ImageCheck = Callable[[Image.Image], Iterable[Decision]]


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


@dataclass
class NearCopyIndex:
    """Perceptual hashes of a model's training images, shipped with its lineage."""

    hashes: np.ndarray  # uint64
    names: list[str]

    @classmethod
    def build(cls, images: Iterable[tuple[str, Image.Image]]) -> NearCopyIndex:
        names, hashes = [], []
        for name, image in images:
            names.append(name)
            hashes.append(perceptual_hash(image))
        return cls(np.array(hashes, dtype=np.uint64), names)

    def nearest(self, hash_value: int) -> tuple[int, str | None]:
        if len(self.hashes) == 0:
            return 64, None
        xor = np.bitwise_xor(self.hashes, np.uint64(hash_value))
        distances = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        best = int(distances.argmin())
        return int(distances[best]), self.names[best]

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": "phash-dct-64", "items": [[n, f"{int(h):016x}"] for n, h in zip(self.names, self.hashes)]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NearCopyIndex:
        items = data.get("items", [])
        return cls(np.array([int(h, 16) for _, h in items], dtype=np.uint64), [n for n, _ in items])


class OutputPolicy:
    def __init__(self, config: dict[str, Any], version: str, extra_checks: list[ImageCheck] | None = None):
        self.version = version
        degenerate = config.get("degenerate", {})
        self.min_std = float(degenerate.get("min_std", 4.0))
        self.min_detail = float(degenerate.get("min_detail", 1.0))
        self.degenerate_outcome = Outcome.parse(degenerate.get("outcome", "deny"))
        near = config.get("near_copy", {})
        self.max_distance = int(near.get("max_hamming_distance", 6))
        self.near_copy_outcome = Outcome.parse(near.get("outcome", "deny"))
        self.extra_checks = list(extra_checks or [])

    def check_image(self, image: Image.Image | np.ndarray, near_copies: NearCopyIndex | None = None) -> Verdict:
        verdict = Verdict("output", self.version)
        pil = as_pil(image)
        grey = np.asarray(pil.convert("L"), dtype=np.float64)
        std = float(grey.std())
        if std < self.min_std:
            verdict.decisions.append(Decision(
                self.degenerate_outcome, "output.degenerate.blank",
                "The image is almost a single flat colour: the generator failed on this one.",
                {"std": round(std, 3), "minimum": self.min_std},
            ))
        else:
            detail = float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()) / 2
            if detail < self.min_detail:
                verdict.decisions.append(Decision(
                    self.degenerate_outcome, "output.degenerate.detail",
                    "The image has almost no detail (a smooth smear).",
                    {"mean_gradient": round(detail, 3), "minimum": self.min_detail},
                ))
        if near_copies is not None:
            distance, name = near_copies.nearest(perceptual_hash(pil))
            if distance <= self.max_distance:
                verdict.decisions.append(Decision(
                    self.near_copy_outcome, "output.near_copy",
                    "The image is a near-copy of a training image (memorisation risk).",
                    {"hamming_distance": distance, "limit": self.max_distance, "training_item": name},
                ))
        for check in self.extra_checks:
            verdict.decisions.extend(check(pil))
        return verdict
