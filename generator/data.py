"""The dataset format (a folder with manifest.jsonl) and the multi-scale training dataset.

One manifest line per image::

    {"image": "images/0001.png", "captions": ["a red apple", ...], "license": "CC-BY-4.0",
     "source": "https://...", "attribution": "Apple by ...", "training_permission": "allowed"}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F
from torch.utils.data import Dataset

from lineage.manifest import read_manifest_lines

logger = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.jsonl"
TRAINING_PERMISSIONS = ("allowed", "not allowed")
REQUIRED_FIELDS = ("image", "captions", "license", "source", "attribution", "training_permission")
# SPDX ids are letters, digits, '.', '-' and '+'; custom licences use LicenseRef-<idstring>.
LICENSE_PATTERN = re.compile(r"^(LicenseRef-[A-Za-z0-9.\-]+|[A-Za-z0-9][A-Za-z0-9.\-+]*)$")
MAX_IMAGE_PIXELS = 40_000_000
MAX_CAPTION_CHARS = 1000


class ManifestError(ValueError):
    """A manifest has lines that cannot be used; ``errors`` lists each as 'line N: problem'."""

    def __init__(self, path: Path, errors: list[str]):
        self.path = path
        self.errors = errors
        shown = "\n  ".join(errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        super().__init__(f"{path}: {len(errors)} invalid line(s):\n  {shown}{more}")


@dataclass(frozen=True)
class ManifestItem:
    line: int
    image: str
    captions: tuple[str, ...]
    license: str
    source: str
    attribution: str
    training_permission: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def trainable(self) -> bool:
        return self.training_permission == "allowed"

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "captions": list(self.captions),
            "license": self.license,
            "source": self.source,
            "attribution": self.attribution,
            "training_permission": self.training_permission,
            **self.extra,
        }


def parse_manifest_line(data: Any, line: int) -> ManifestItem:
    """Validate one decoded manifest line; raises ValueError with the problem."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    image = data["image"]
    if not isinstance(image, str) or not image.strip():
        raise ValueError("'image' must be a non-empty relative path")
    if os.path.isabs(image) or ".." in Path(image).parts:
        raise ValueError(f"'image' must stay inside the dataset folder: {image!r}")
    captions = data["captions"]
    if not isinstance(captions, list) or not captions:
        raise ValueError("'captions' must be a non-empty list")
    cleaned = []
    for caption in captions:
        if not isinstance(caption, str) or not caption.strip():
            raise ValueError("every caption must be a non-empty string")
        if len(caption) > MAX_CAPTION_CHARS:
            raise ValueError(f"a caption is longer than {MAX_CAPTION_CHARS} characters")
        cleaned.append(" ".join(caption.split()))
    license_id = data["license"]
    if not isinstance(license_id, str) or not LICENSE_PATTERN.match(license_id):
        raise ValueError(f"'license' must be an SPDX id or LicenseRef-..., got {license_id!r}")
    for name in ("source", "attribution"):
        if not isinstance(data[name], str):
            raise ValueError(f"'{name}' must be a string")
    permission = data["training_permission"]
    if permission not in TRAINING_PERMISSIONS:
        raise ValueError(f"'training_permission' must be one of {TRAINING_PERMISSIONS}, got {permission!r}")
    extra = {k: v for k, v in data.items() if k not in REQUIRED_FIELDS}
    return ManifestItem(line, image, tuple(cleaned), license_id, data["source"], data["attribution"], permission, extra)


def read_manifest(folder: str | os.PathLike) -> list[ManifestItem]:
    """Read and validate every line; raises ManifestError naming every bad line at once."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(path, [f"no {MANIFEST_FILE} in {folder}"])
    items: list[ManifestItem] = []
    errors: list[str] = []
    # The line loop (numbering, blank lines, JSON decoding) is the one the data policy uses too.
    for line in read_manifest_lines(path):
        if line.data is None:
            errors.append(f"line {line.number}: {line.error}")
            continue
        try:
            items.append(parse_manifest_line(line.data, line.number))
        except ValueError as exc:
            errors.append(f"line {line.number}: {exc}")
    if errors:
        raise ManifestError(path, errors)
    if not items:
        raise ManifestError(path, ["the manifest has no items"])
    return items


def write_manifest(folder: str | os.PathLike, items: list[dict[str, Any]]) -> Path:
    path = Path(folder) / MANIFEST_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n")
    return path


def manifest_sha256(folder: str | os.PathLike) -> str:
    return hashlib.sha256((Path(folder) / MANIFEST_FILE).read_bytes()).hexdigest()


def load_rgb_image(path: Path, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Open an image as RGB, compositing transparency onto ``background``; refuses huge images."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{width}x{height} exceeds the {MAX_IMAGE_PIXELS} pixel limit")
            image.load()
            if image.mode in ("RGBA", "LA", "P"):
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, background + (255,))
                return Image.alpha_composite(canvas, rgba).convert("RGB")
            return image.convert("RGB")
    except FileNotFoundError as exc:
        raise ValueError("image file is missing") from exc
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Pillow cannot read the image ({exc})") from exc


@dataclass
class SkippedItem:
    line: int
    image: str
    reason: str


@dataclass
class DatasetReport:
    used: int
    skipped: list[SkippedItem]
    licences: dict[str, int]

    def summary(self) -> str:
        reasons = Counter(s.reason.split(" (")[0] for s in self.skipped)
        text = f"{self.used} items used, {len(self.skipped)} skipped"
        if reasons:
            text += ": " + ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        return text


class CaptionedImageDataset(Dataset):
    """Multi-scale images with one caption embedding drawn per item per step.

    Images are decoded once, resized to 76/64 of the largest scale (as the authors do) and kept in
    memory as uint8; each step takes a random crop and flip and resizes it to every scale. Items
    that cannot be used (no training permission, missing or unreadable image, refused by
    ``item_filter``) are skipped and listed in ``report``, never raised hours into a run.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        image_sizes: list[int],
        caption_embeddings: dict[str, torch.Tensor] | None = None,
        items: list[ManifestItem] | None = None,
        item_filter: Callable[[ManifestItem], str | None] | None = None,
        augment: bool = True,
    ):
        self.folder = Path(folder)
        self.image_sizes = sorted(image_sizes)
        self.load_size = int(self.image_sizes[-1] * 76 / 64) if augment else self.image_sizes[-1]
        self.augment = augment
        self.caption_embeddings = caption_embeddings
        self.items: list[ManifestItem] = []
        self.pixels: list[torch.Tensor] = []
        skipped: list[SkippedItem] = []
        for item in items if items is not None else read_manifest(self.folder):
            reason = None
            if not item.trainable:
                reason = "training not allowed by the rights holder"
            elif item_filter is not None:
                reason = item_filter(item)
            if reason is None:
                try:
                    image = load_rgb_image(self.folder / item.image)
                    self.pixels.append(self._to_tensor(image))
                    self.items.append(item)
                    continue
                except ValueError as exc:
                    reason = f"unreadable image ({exc})"
            skipped.append(SkippedItem(item.line, item.image, reason))
            logger.warning("skipping manifest line %d (%s): %s", item.line, item.image, reason)
        self.report = DatasetReport(len(self.items), skipped, dict(Counter(i.license for i in self.items)))
        if not self.items:
            raise ValueError(f"no usable items in {self.folder}: {self.report.summary()}")

    def _to_tensor(self, image: Image.Image) -> torch.Tensor:
        image = image.resize((self.load_size, self.load_size), Image.Resampling.BICUBIC)
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    def __len__(self) -> int:
        return len(self.items)

    def captions(self) -> list[str]:
        return sorted({c for item in self.items for c in item.captions})

    def scaled_images(self, index: int) -> list[torch.Tensor]:
        pixels = self.pixels[index]
        size = self.image_sizes[-1]
        if self.augment:
            top = random.randint(0, self.load_size - size)
            left = random.randint(0, self.load_size - size)
            pixels = pixels[:, top : top + size, left : left + size]
            if random.random() < 0.5:
                pixels = pixels.flip(-1)
        image = pixels.float().div(127.5).sub(1).unsqueeze(0)
        scaled = []
        for s in self.image_sizes:
            resized = image if s == size else F.interpolate(image, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
            scaled.append(resized.squeeze(0))
        return scaled

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"images": self.scaled_images(index), "index": index}
        if self.caption_embeddings is not None:
            item = self.items[index]
            sample["embedding"] = self.caption_embeddings[random.choice(item.captions)]
            # A caption of another image: the "wrong" pair of the matching-aware loss.
            other = random.randrange(len(self.items) - 1) if len(self.items) > 1 else 0
            if other >= index and len(self.items) > 1:
                other += 1
            sample["wrong_embedding"] = self.caption_embeddings[random.choice(self.items[other].captions)]
        return sample


def embed_captions_cached(
    captions: list[str], encoder: Any, cache_dir: str | os.PathLike | None
) -> dict[str, torch.Tensor]:
    """Embed each distinct caption once; cached on disk keyed by the encoder's fingerprint."""
    from safetensors.torch import load_file, save_file

    captions = sorted(set(captions))
    key = hashlib.sha256(("\n".join(captions) + "\0" + encoder.fingerprint).encode()).hexdigest()[:24]
    cache_path = Path(cache_dir) / f"embeddings-{key}.safetensors" if cache_dir else None
    if cache_path is not None and cache_path.is_file():
        matrix = load_file(str(cache_path))["embeddings"]
        if matrix.shape[0] == len(captions):
            return dict(zip(captions, matrix))
    matrix = encoder.encode(captions)
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        save_file({"embeddings": matrix.contiguous()}, str(tmp), metadata={"encoder_sha256": encoder.fingerprint})
        os.replace(tmp, cache_path)
    return dict(zip(captions, matrix))
