"""Near-copy robustness: plant edited copies of training images and count how many the output policy
catches, by kind of edit; count false alarms on images of the same set that are not in the index
(different emoji); report the near-copy search's cost per image.

    python benchmarks/near_copy_robustness.py [--data data/twemoji] [--planted 150] [--negatives 0] [--seed 12]

The dataset is split in two by file name (every other image of the sorted manifest): the index half
is what the model "trained on", the other half must not raise an alarm. Both halves are then split
again, at random under a stated seed, into a calibration half and a held-out half. Thresholds are
chosen on the calibration half only (and printed beside the shipped ones in output.toml); the
figures that count are the held-out half's, under the shipped thresholds.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import NearCopyIndex, load_policies  # noqa: E402
from policies.data import read_manifest_lines  # noqa: E402
from policies.local_features import LocalMatch  # noqa: E402
from policies.near_copy import NearCopyMatch  # noqa: E402
from policies.output import VERIFY_MARGIN, OutputPolicy  # noqa: E402

SEED = 12
# The lowest colour threshold the calibration considers; the search runs as the output policy runs it
# (stopping early below a threshold less VERIFY_MARGIN), from this one, so every threshold tried
# sees the decisions the product would make.
LOWEST_SIMILARITY = 0.90
VERIFY_FROM = LOWEST_SIMILARITY - VERIFY_MARGIN
LUMINANCE_VERIFY_FROM = VERIFY_FROM


@dataclass(frozen=True)
class Thresholds:
    similarity: float
    detail: float
    luminance_similarity: float
    luminance_detail: float
    reframe_from: float = 0.93  # the gate of the search with a turn or a margin undone (not chosen here)
    recolour_from: float = 0.9  # the gate of the search with colours turned back (not chosen here)
    local: bool = True  # the local-feature search at the shipped min_local_* (not chosen here)

    def __str__(self) -> str:
        return (f"colour: similarity >= {self.similarity}, detail >= {self.detail}; luminance: similarity >= "
                f"{self.luminance_similarity}, detail >= {self.luminance_detail}")


@dataclass(frozen=True)
class Scored:
    name: str  # the planted training image, or the image not in the index
    match: NearCopyMatch | None  # the colour search's answer
    # For an image not in the index: the training images among its matches that are the same drawing
    # (a twin of an indexed emoji); flagged by those alone, it is an edited copy, not a false alarm.
    twins: frozenset[str]
    luminance: NearCopyMatch | None = None  # the search in grey's answer
    # The search with a turn or a margin undone (colour thresholds), where the policy runs it.
    reframed: NearCopyMatch | None = None
    # The search with the colours turned back (luminance thresholds), where the policy runs it.
    recoloured: NearCopyMatch | None = None
    # The search with a new background or a tint undone (luminance thresholds), where the policy runs it.
    repainted: NearCopyMatch | None = None
    # The local-feature search (policies/local_features.py), under the shipped min_local_* thresholds
    # (not chosen here), where the policy runs it.
    local: LocalMatch | None = None


_policy: list[OutputPolicy] = []


def shipped_policy() -> OutputPolicy:
    """The shipped output policy, loaded once (its min_local_* thresholds judge the local search)."""
    if not _policy:
        _policy.append(load_policies().output)
    return _policy[0]


def open_rgb(folder: Path, name: str) -> Image.Image:
    with Image.open(folder / name) as handle:
        return handle.convert("RGB")


def split_dataset(folder: Path) -> tuple[list[str], list[str]]:
    items = read_manifest_lines(folder / "manifest.jsonl")
    images = sorted(item["image"] for item in items if item.get("training_permission") == "allowed")
    return images[0::2], images[1::2]


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def crop(image: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """Remove ``fraction`` of the width and height, split at random between the two sides."""
    w, h = image.size
    cut_x, cut_y = round(w * fraction), round(h * fraction)
    left, top = int(rng.integers(0, cut_x + 1)), int(rng.integers(0, cut_y + 1))
    return image.crop((left, top, left + w - cut_x, top + h - cut_y))


def crop_side(image: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """Remove ``fraction`` of the image from one side, chosen at random (the aspect changes)."""
    w, h = image.size
    cut_x, cut_y = round(w * fraction), round(h * fraction)
    side = int(rng.integers(0, 4))
    return image.crop(((cut_x, 0, w, h), (0, 0, w - cut_x, h), (0, cut_y, w, h), (0, 0, w, h - cut_y))[side])


def shift(image: Image.Image, pixels: int, rng: np.random.Generator) -> Image.Image:
    angle = rng.uniform(0, 2 * np.pi)
    dx, dy = round(pixels * np.cos(angle)), round(pixels * np.sin(angle))
    canvas = Image.new("RGB", image.size, "white")
    canvas.paste(image, (dx, dy))
    return canvas


def tint(image: Image.Image, factors: tuple[float, float, float]) -> Image.Image:
    array = np.asarray(image, dtype=np.float32) * np.array(factors, dtype=np.float32)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def mirror(image: Image.Image) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def hue(image: Image.Image, turn: int) -> Image.Image:
    """Every hue turned by ``turn`` of 256 (a colour change that moves each channel differently)."""
    h, saturation, value = image.convert("HSV").split()
    return Image.merge("HSV", (h.point(lambda x: (x + turn) % 256), saturation, value)).convert("RGB")


def sepia(image: Image.Image) -> Image.Image:
    """The classic sepia filter: each channel a different mix of all three."""
    mix = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32)
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) @ mix.T, 0, 255).astype(np.uint8))


def zoom_out(image: Image.Image, fraction: float) -> Image.Image:
    """The image shrunk by ``fraction`` and centred on white (a margin added, then resized back)."""
    w, h = image.size
    inner = image.resize((round(w * (1 - fraction)), round(h * (1 - fraction))), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", image.size, "white")
    canvas.paste(inner, ((w - inner.width) // 2, (h - inner.height) // 2))
    return canvas


def banner(image: Image.Image) -> Image.Image:
    """A black band with white text across the bottom eighth (a caption or a price burnt in)."""
    edited = image.copy()
    draw = ImageDraw.Draw(edited)
    draw.rectangle((0, image.height * 7 // 8, image.width, image.height), fill="black")
    draw.text((6, image.height * 7 // 8 + 4), "SALE 50% OFF", fill="white")
    return edited


def background(image: Image.Image, colour: tuple[int, int, int]) -> Image.Image:
    array = np.asarray(image).copy()
    array[(array > 245).all(axis=2)] = colour
    return Image.fromarray(array)


def vignette(image: Image.Image, strength: float) -> Image.Image:
    """Darkened towards the corners (a photo filter): each pixel times 1 - strength * r^2, r the
    distance from the centre over half the side, at most 1.5."""
    array = np.asarray(image, dtype=np.float32)
    h, w = array.shape[:2]
    y, x = np.mgrid[:h, :w]
    r = np.minimum(np.hypot((x - w / 2) / (w / 2), (y - h / 2) / (h / 2)), 1.5)
    return Image.fromarray(np.clip(array * (1 - strength * r * r)[..., None], 0, 255).astype(np.uint8))


def random_background(rng: np.random.Generator) -> tuple[int, int, int]:
    while True:
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if max(255 - c for c in colour) >= 60:
            return colour


def duotone(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The image's grey mapped from a dark shade of a random hue to white (a duotone print)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    dark = rng.integers(0, 160, 3).astype(np.float32)
    return Image.fromarray(np.clip(dark + grey * (255.0 - dark), 0, 255).astype(np.uint8))


EDITS = {
    "identical": lambda im, rng: im,
    "jpeg q70": lambda im, rng: jpeg(im, 70),
    "jpeg q40": lambda im, rng: jpeg(im, 40),
    "resize to 128": lambda im, rng: im.resize((128, 128), Image.Resampling.LANCZOS),
    "resize to 64": lambda im, rng: im.resize((64, 64), Image.Resampling.LANCZOS),
    "resize to 300": lambda im, rng: im.resize((300, 300), Image.Resampling.BICUBIC),
    "brightness +15%": lambda im, rng: ImageEnhance.Brightness(im).enhance(1.15),
    "brightness -20%": lambda im, rng: ImageEnhance.Brightness(im).enhance(0.8),
    "contrast -25%": lambda im, rng: ImageEnhance.Contrast(im).enhance(0.75),
    "saturation -40%": lambda im, rng: ImageEnhance.Color(im).enhance(0.6),
    "saturation +40%": lambda im, rng: ImageEnhance.Color(im).enhance(1.4),
    "colour tint": lambda im, rng: tint(im, (1.1, 0.97, 0.85)),
    "mirror": lambda im, rng: mirror(im),
    "crop 5%": lambda im, rng: crop(im, 0.05, rng),
    "crop 8%": lambda im, rng: crop(im, 0.08, rng),
    "crop 10%": lambda im, rng: crop(im, 0.10, rng),
    "crop 10% resized back": lambda im, rng: crop(im, 0.10, rng).resize(im.size, Image.Resampling.BICUBIC),
    "shift 12 px": lambda im, rng: shift(im, 12, rng),
    "shift 20 px": lambda im, rng: shift(im, 20, rng),
    "mirror + crop 8% + jpeg q70": lambda im, rng: jpeg(crop(mirror(im), 0.08, rng), 70),
    "shift 12 px + brightness +15% + resize 128": lambda im, rng: ImageEnhance.Brightness(
        shift(im, 12, rng)).enhance(1.15).resize((128, 128), Image.Resampling.LANCZOS),
    # Colour taken away: the search in grey's.
    "greyscale": lambda im, rng: ImageOps.grayscale(im).convert("RGB"),
    "greyscale + crop 8% + jpeg q70": lambda im, rng: jpeg(crop(ImageOps.grayscale(im).convert("RGB"), 0.08, rng), 70),
    "blur radius 1.5": lambda im, rng: im.filter(ImageFilter.GaussianBlur(1.5)),
    "noise sigma 12": lambda im, rng: Image.fromarray(np.clip(np.asarray(im, dtype=np.float32) + rng.normal(
        0, 12, (im.height, im.width, 3)), 0, 255).astype(np.uint8)),
    # Last, so that the random draws of the edits above stay as they were before these joined.
    # One side only: the aspect changes, or, resized back to a square, the drawing is stretched one way.
    "crop 10% off one side": lambda im, rng: crop_side(im, 0.10, rng),
    "crop 10% off one side resized back": lambda im, rng: crop_side(im, 0.10, rng).resize(im.size, Image.Resampling.BICUBIC),
}

# Edits beyond the list, reported apart and never used to choose thresholds: what the search
# does not undo (rotation, a margin around the image, a part covered, a new background, colours
# turned rather than taken away).
BEYOND = {
    "rotate 3 degrees": lambda im, rng: im.rotate(3, resample=Image.Resampling.BICUBIC, fillcolor="white"),
    "rotate 8 degrees": lambda im, rng: im.rotate(8, resample=Image.Resampling.BICUBIC, fillcolor="white"),
    "rotate 1-10 degrees either way (at random)": lambda im, rng: im.rotate(
        float(rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 10.0)), resample=Image.Resampling.BICUBIC, fillcolor="white"),
    "rotate 5 degrees + jpeg q70": lambda im, rng: jpeg(im.rotate(5, resample=Image.Resampling.BICUBIC,
                                                                  fillcolor="white"), 70),
    "zoomed out 10% (white margin)": lambda im, rng: zoom_out(im, 0.10),
    "zoomed out 3-25% (at random)": lambda im, rng: zoom_out(im, float(rng.uniform(0.03, 0.25))),
    "banner over the bottom eighth": lambda im, rng: banner(im),
    "background blue": lambda im, rng: background(im, (40, 60, 200)),
    "flipped upside down": lambda im, rng: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
    "background at random (any colour 60 from white)": lambda im, rng: background(im, random_background(rng)),
    "background at random + jpeg q70": lambda im, rng: jpeg(background(im, random_background(rng)), 70),
    "sepia": lambda im, rng: sepia(im),
    "sepia + crop 5% + jpeg q70": lambda im, rng: jpeg(crop(sepia(im), 0.05, rng), 70),
    "duotone at random (grey onto one hue)": lambda im, rng: duotone(im, rng),
    "red and blue swapped": lambda im, rng: Image.merge("RGB", im.split()[::-1]),
    "green and blue swapped + jpeg q70": lambda im, rng: jpeg(Image.merge("RGB", [im.split()[i] for i in (0, 2, 1)]), 70),
    "background pale grey (200)": lambda im, rng: background(im, (200, 200, 200)),
    "greyscale + brightness +20%": lambda im, rng: ImageEnhance.Brightness(ImageOps.grayscale(im).convert("RGB")).enhance(1.2),
    "vignette (corners 35% darker)": lambda im, rng: vignette(im, 0.35),
    "histogram equalised": lambda im, rng: ImageOps.equalize(im),
    "hue turned 60 degrees": lambda im, rng: hue(im, 43),
    "hue turned 180 degrees": lambda im, rng: hue(im, 128),
    "inverted colours": lambda im, rng: ImageOps.invert(im),
}


# How far the twin check lets two drawings sit apart, in pixels at SAME_DRAWING_SIDE: about the 10%
# that the search itself allows (crops up to 10%, shifts of 20 px at 256). Emoji that are turns of one
# another are seldom drawn about the same centre (a hand pointing down and one pointing left).
SAME_DRAWING_SIDE = 64
SAME_DRAWING_REACH = 6
# The edges are blurred by this much (a Gaussian's sigma, in pixels at SAME_DRAWING_SIDE) before they
# are compared: emoji drawn as separate files put the same outline a fraction of a pixel apart, and
# one-pixel-wide edges that miss by half a pixel correlate poorly (a hand pointing down against the
# hand pointing up turned half round: 0.83 unblurred, 0.97 blurred; two different smiling faces
# stay at or below 0.82 either way).
SAME_DRAWING_BLUR = 1.0


def _blurred(values: np.ndarray, sigma: float) -> np.ndarray:
    """A separable Gaussian blur (kernel to three sigma, edges padded with their own values)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(values, radius, mode="edge")
    across = np.apply_along_axis(lambda row: np.convolve(row, taps, mode="valid"), 1, padded)
    return np.apply_along_axis(lambda column: np.convolve(column, taps, mode="valid"), 0, across)


def same_drawing(a: Image.Image, b: Image.Image) -> float:
    """How far two images are the same drawing up to a mirror image, a quarter or half turn, a
    change of colour and a small shift: the best correlation of their grey edges (blurred by
    SAME_DRAWING_BLUR) over the eight turns and mirror images of ``a`` and the shifts within
    SAME_DRAWING_REACH. Twemoji has such twins (left and right arrows and hands, up and down arrows,
    hearts and circles in several colours, flags that are identical), and a held-out twin of an
    indexed image is an edited copy, not a false alarm."""
    def edges(image: Image.Image) -> np.ndarray:
        side = SAME_DRAWING_SIDE
        grey = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX), dtype=np.float64)
        return _blurred(np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :],
                        SAME_DRAWING_BLUR)

    target = edges(b)
    size, reach = target.shape[0], SAME_DRAWING_REACH
    best = -1.0
    turns = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
    for candidate in [turned for side in (a, mirror(a)) for turned in (side.transpose(t) if t else side for t in turns)]:
        moved = edges(candidate)
        for dy in range(-reach, reach + 1):
            for dx in range(-reach, reach + 1):
                x = moved[max(0, dy):size + min(0, dy), max(0, dx):size + min(0, dx)].ravel()
                y = target[max(0, -dy):size + min(0, -dy), max(0, -dx):size + min(0, -dx)].ravel()
                x, y = x - x.mean(), y - y.mean()
                best = max(best, float(x @ y / max(np.sqrt((x @ x) * (y @ y)), 1e-9)))
    return best


def score_images(index: NearCopyIndex, folder: Path, planted: list[str], negatives: list[str],
                 rng: np.random.Generator, times: list[float], shipped: Thresholds, edits: dict | None = None
                 ) -> tuple[dict[str, list[Scored]], list[Scored]]:
    """Every kind of edit applied to each planted image, and each negative image as it is: the
    matches the colour search and the luminance search find for each (their similarity and detail
    decide it under any thresholds). ``times`` gets the output policy's cost per image as it runs
    (the luminance search only for what the colour search let through, as in OutputPolicy)."""
    variants: dict[str, list[Scored]] = defaultdict(list)

    def search(image: Image.Image) -> tuple[NearCopyMatch | None, ...]:
        start = time.perf_counter()
        match = index.nearest(image, verify_from=VERIFY_FROM)
        colour_seconds = time.perf_counter() - start
        start = time.perf_counter()
        in_grey = index.nearest_luminance_many([image], verify_from=LUMINANCE_VERIFY_FROM)[0]
        grey_seconds = time.perf_counter() - start
        # Gated as the policy gates it (on the 8x8 layout with turns and margins undone).
        start = time.perf_counter()
        reframed = index.nearest_reframed_many([image], verify_from=VERIFY_FROM, search_from=shipped.reframe_from)[0]
        reframe_seconds = time.perf_counter() - start
        start = time.perf_counter()
        recoloured = index.nearest_recoloured_many([image], verify_from=LUMINANCE_VERIFY_FROM,
                                                   search_from=shipped.recolour_from)[0]
        recolour_seconds = time.perf_counter() - start
        start = time.perf_counter()
        repainted = index.nearest_repainted_many([image], verify_from=LUMINANCE_VERIFY_FROM,
                                                 search_from=shipped.recolour_from)[0]
        repaint_seconds = time.perf_counter() - start
        start = time.perf_counter()
        local = index.nearest_local_many([image])[0]
        local_seconds = time.perf_counter() - start
        # The policy's cost: the later searches run only for what the colour search let through.
        flagged = match is not None and match.similarity >= shipped.similarity and match.detail >= shipped.detail
        times.append(colour_seconds + (0.0 if flagged else grey_seconds + reframe_seconds + recolour_seconds
                                       + repaint_seconds + local_seconds))
        return match, in_grey, reframed, recoloured, repainted, local

    for name in planted:
        original = open_rgb(folder, name)
        for kind, edit in (edits or EDITS).items():
            match, in_grey, reframed, recoloured, repainted, local = search(edit(original, rng))
            variants[kind].append(Scored(name, match, twins=frozenset(), luminance=in_grey, reframed=reframed,
                                         recoloured=recoloured, repainted=repainted, local=local))
    others = []
    for name in negatives:
        image = open_rgb(folder, name)
        match, in_grey, reframed, recoloured, repainted, local = search(image)
        # Twins: the training images it matched that are the same drawing (up to the turns, mirror
        # images and colour changes the searches undo), judged for each search's match apart, since
        # the thresholds decide later which of them flag it.
        found = {m.name for m in (match, in_grey, reframed, recoloured, repainted, local) if m is not None}
        twins = frozenset(n for n in found if same_drawing(image, open_rgb(folder, n)) >= 0.95)
        others.append(Scored(name, match, twins, in_grey, reframed, recoloured, repainted, local))
    return variants, others


def flagging(scored: Scored, thresholds: Thresholds) -> list[NearCopyMatch | LocalMatch]:
    """The matches that flag the image under these thresholds, whichever search found them (the
    local-feature search's under the shipped min_local_* thresholds)."""
    local = [scored.local] if thresholds.local and shipped_policy().is_local_copy(scored.local) else []
    return local + [match for match, similarity, detail in (
        (scored.match, thresholds.similarity, thresholds.detail),
        (scored.luminance, thresholds.luminance_similarity, thresholds.luminance_detail),
        (scored.reframed, thresholds.similarity, thresholds.detail),
        (scored.recoloured, thresholds.luminance_similarity, thresholds.luminance_detail),
        (scored.repainted, thresholds.luminance_similarity, thresholds.luminance_detail),
    ) if match is not None and match.similarity >= similarity and match.detail >= detail]


def caught(scored: Scored, thresholds: Thresholds, exact: bool = True) -> bool:
    """Flagged under these thresholds by any search (and, for a planted copy, matched to its own
    original)."""
    return any(not exact or match.name == scored.name for match in flagging(scored, thresholds))


def false_alarm(scored: Scored, thresholds: Thresholds) -> bool:
    """An image not in the index flagged by a match that is not its twin."""
    return any(match.name not in scored.twins for match in flagging(scored, thresholds))


def choose_thresholds(variants: dict[str, list[Scored]], others: list[Scored], max_false_alarms: float
                      ) -> Thresholds:
    """On the calibration half only: among the thresholds whose false alarms (not twins) stay within
    ``max_false_alarms``, those that catch the most planted copies overall, then the strictest. The
    colour search's pair first (alone), then the luminance search's with the colour pair fixed.

    (Maximising the worst-caught kind instead was tried first: on 150 images per kind it chases one
    or two images and the thresholds it picked did worse on the held-out half.)"""
    never = (2.0, 2.0)

    def best_pair(make: Callable[[float, float], Thresholds], lowest: float) -> tuple[float, float]:
        best_key, best = None, (0.95, 0.94)
        for min_similarity in np.arange(lowest, 0.9951, 0.005):
            for min_detail in np.arange(0.80, 0.9951, 0.005):
                thresholds = make(round(float(min_similarity), 3), round(float(min_detail), 3))
                alarms = sum(false_alarm(s, thresholds) for s in others)
                if alarms > max_false_alarms * len(others):
                    continue
                total = sum(caught(s, thresholds) for kind in variants.values() for s in kind)
                key = (total, min_similarity + min_detail)
                if best_key is None or key > best_key:
                    best_key, best = key, (round(float(min_similarity), 3), round(float(min_detail), 3))
        return best

    # Chosen for the whole-picture searches alone: the local search keeps the shipped min_local_*.
    colour = best_pair(lambda s, d: Thresholds(s, d, *never, local=False), LOWEST_SIMILARITY)
    luminance = best_pair(lambda s, d: Thresholds(*colour, s, d, local=False), LOWEST_SIMILARITY)
    return Thresholds(*colour, *luminance)


def report(title: str, variants: dict[str, list[Scored]], others: list[Scored], thresholds: Thresholds) -> None:
    print(f"\n{title}: thresholds {thresholds}")
    print(f"{'edit of a training image':44} {'caught':>9} {'rate':>6} {'in grey':>9} {'turned/framed':>14} {'recoloured':>11}"
          f" {'repainted':>10} {'local':>6}")
    colour_only = Thresholds(thresholds.similarity, thresholds.detail, 2.0, 2.0, local=False)
    for kind, scored in variants.items():
        hits = sum(caught(s, thresholds) for s in scored)
        # Each later stage counts the copies only it caught, as the policy runs them in order.
        without_local = [dataclasses.replace(s, local=None) for s in scored]
        local = hits - sum(caught(s, thresholds) for s in without_local)
        without_repainting = [dataclasses.replace(s, repainted=None) for s in without_local]
        repainted = hits - local - sum(caught(s, thresholds) for s in without_repainting)
        without_recolouring = [dataclasses.replace(s, recoloured=None) for s in without_repainting]
        recoloured = hits - local - repainted - sum(caught(s, thresholds) for s in without_recolouring)
        without_reframing = [dataclasses.replace(s, reframed=None) for s in without_recolouring]
        undone = hits - local - repainted - recoloured - sum(caught(s, thresholds) for s in without_reframing)
        in_grey = hits - local - repainted - recoloured - undone - sum(caught(s, colour_only) for s in without_reframing)
        print(f"{kind:44} {hits:>4}/{len(scored):<4} {hits / len(scored):>6.3f} {in_grey:>9} {undone:>14} {recoloured:>11}"
              f" {repainted:>10} {local:>6}")
    every = [s for scored in variants.values() for s in scored]
    if not others:
        return
    hits = sum(caught(s, thresholds) for s in every)
    wrong = sum(caught(s, thresholds, exact=False) and not caught(s, thresholds) for s in every)
    print(f"{'ALL planted copies':44} {hits:>4}/{len(every):<4} {hits / len(every):>6.3f}   "
          f"(flagged but matched to another training image, not counted as caught: {wrong})")
    flagged = [s for s in others if caught(s, thresholds, exact=False)]
    alarms = [s for s in flagged if false_alarm(s, thresholds)]
    twins = [s for s in flagged if not false_alarm(s, thresholds)]
    negatives = len(others) - len(twins)
    print(f"images not in the index flagged: {len(flagged)}/{len(others)}, of which {len(twins)} are twins in twemoji itself "
          f"(the same drawing as an indexed emoji up to turns, mirror and colour: an edited copy by this benchmark's own definition)")
    print(f"false alarms (flagged, not twins): {len(alarms)}/{negatives} = {len(alarms) / max(negatives, 1):.4f}")
    for scored in alarms[:15]:
        for match in flagging(scored, thresholds):
            if match.name not in scored.twins and isinstance(match, LocalMatch):
                print(f"  false alarm: {scored.name} ~ {match.name} (local features; {match.inliers} keypoints, "
                      f"visible {match.visible:.2f}, agreement {match.agreement:.2f})")
            elif match.name not in scored.twins:
                print(f"  false alarm: {scored.name} ~ {match.name} ({match.compared}{', ' + match.reframed if match.reframed else ''}; "
                      f"similarity {match.similarity:.3f}, detail {match.detail:.3f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/twemoji", help="a manifest.jsonl folder (default: data/twemoji)")
    parser.add_argument("--planted", type=int, default=150,
                        help="training images to plant edited copies of, per half (0: every indexed image)")
    parser.add_argument("--negatives", type=int, default=0, help="images not in the index to check, per half (0: all)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the split and the random edits (default {SEED})")
    parser.add_argument("--max-false-alarms", type=float, default=0.005,
                        help="the false-alarm rate the thresholds may reach on the calibration half (default 0.005)")
    args = parser.parse_args()
    folder = Path(args.data)
    if not (folder / "manifest.jsonl").is_file():
        print(f"error: {folder}/manifest.jsonl not found; prepare it with python -m generator.datasets prepare twemoji "
              f"--out {folder}", file=sys.stderr)
        return 2
    policy = load_policies().output
    indexed, not_indexed = split_dataset(folder)
    started = time.perf_counter()
    index = NearCopyIndex.build((name, open_rgb(folder, name)) for name in indexed)
    build_seconds = time.perf_counter() - started
    size = len(json.dumps(index.to_json()))
    rng = np.random.default_rng(args.seed)
    halves: dict[str, tuple[list[str], list[str]]] = {}
    planted_order = rng.permutation(len(indexed))
    negative_order = rng.permutation(len(not_indexed))
    for number, label in enumerate(("calibration", "held-out")):
        planted = [indexed[i] for i in planted_order[number::2]]
        negatives = [not_indexed[i] for i in negative_order[number::2]]
        halves[label] = (planted[: args.planted] if args.planted > 0 else planted,
                         negatives[: args.negatives] if args.negatives > 0 else negatives)
    print(f"index: {len(index)} training images (every other image of {folder}), built in {build_seconds:.1f} s, "
          f"{size / 1e6:.2f} MB as JSON; {len(not_indexed)} images not in the index. Seed {args.seed} splits both "
          f"sets into a calibration half (thresholds are chosen there) and a held-out half (reported): "
          + ", ".join(f"{label} {len(p)} planted x {len(EDITS)} edits, {len(n)} not in the index"
                      for label, (p, n) in halves.items()))
    shipped = Thresholds(policy.min_similarity, policy.min_copy_detail, policy.min_luminance_similarity,
                         policy.min_luminance_detail, policy.reframe_from, policy.recolour_from)
    times: list[float] = []
    scored = {label: score_images(index, folder, planted, negatives, rng, times, shipped)
              for label, (planted, negatives) in halves.items()}
    chosen = choose_thresholds(*scored["calibration"], args.max_false_alarms)
    print(f"\nthresholds chosen on the calibration half (false alarms <= {args.max_false_alarms}, then the most "
          f"planted copies caught): {chosen}\nshipped in output.toml: {shipped}")
    report("calibration half (where thresholds are chosen; not a result)", *scored["calibration"], shipped)
    report("HELD-OUT half, shipped thresholds (the result)", *scored["held-out"], shipped)
    if chosen != shipped:
        report("held-out half, thresholds chosen on the calibration half", *scored["held-out"], chosen)
    beyond, _ = score_images(index, folder, halves["held-out"][0], [], rng, [], shipped, BEYOND)
    report("held-out half, edits beyond the issue's list (not used to choose thresholds)", beyond, [], shipped)
    print(f"\nnear-copy search cost per image (index of {len(index)} images): median "
          f"{statistics.median(times) * 1e3:.1f} ms, 95th percentile {float(np.percentile(times, 95)) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
