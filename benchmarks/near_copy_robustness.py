"""Near-copy robustness: plant edited copies of training images and count how many the output policy
catches, by kind of edit; count false alarms on held-out images of the same set (different emoji
that are not in the index); report the output check's cost per image.

    python benchmarks/near_copy_robustness.py [--data data/twemoji] [--planted 150] [--held-out 0]

The dataset is split in two by file name (every other image of the sorted manifest): the index half
is what the model "trained on", the held-out half must not raise an alarm. --held-out 0 checks the
whole held-out half.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import NearCopyIndex, load_policies  # noqa: E402
from policies.data import read_manifest_lines  # noqa: E402


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
}


def same_drawing(a: Image.Image, b: Image.Image) -> float:
    """How far two images are the same drawing up to a mirror image and a change of colour: the
    correlation of their grey edges at full resolution, with no shift or crop allowed. Twemoji has
    such twins (left and right arrows and hands, hearts and circles in several colours, flags that are
    identical), and a held-out twin of an indexed image is an edited copy, not a false alarm."""
    def edges(image: Image.Image) -> np.ndarray:
        grey = np.asarray(image.convert("L").resize((128, 128), Image.Resampling.BOX), dtype=np.float64)
        return np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]

    target = edges(b)
    best = -1.0
    for candidate in (a, mirror(a)):
        x, y = edges(candidate).ravel(), target.ravel()
        x, y = x - x.mean(), y - y.mean()
        best = max(best, float(x @ y / max(np.sqrt((x @ x) * (y @ y)), 1e-9)))
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/twemoji", help="a manifest.jsonl folder (default: data/twemoji)")
    parser.add_argument("--planted", type=int, default=150, help="training images to plant edited copies of")
    parser.add_argument("--held-out", type=int, default=0, help="held-out images to check (0: all)")
    args = parser.parse_args()
    folder = Path(args.data)
    if not (folder / "manifest.jsonl").is_file():
        print(f"error: {folder}/manifest.jsonl not found; prepare it with python -m generator.datasets prepare twemoji "
              f"--out {folder}", file=sys.stderr)
        return 2
    policy = load_policies().output
    indexed, held_out = split_dataset(folder)

    def open_rgb(name: str) -> Image.Image:
        with Image.open(folder / name) as handle:
            return handle.convert("RGB")

    started = time.perf_counter()
    index = NearCopyIndex.build((name, open_rgb(name)) for name in indexed)
    build_seconds = time.perf_counter() - started
    import json

    size = len(json.dumps(index.to_json()))
    print(f"index: {len(index)} training images (every other image of {folder}), built in {build_seconds:.1f} s, "
          f"{size / 1e6:.2f} MB as JSON; held-out half: {len(held_out)} images; "
          f"thresholds: colour similarity >= {policy.min_similarity}, detail >= {policy.min_detail}")

    rng = np.random.default_rng(12)
    planted = [indexed[i] for i in rng.choice(len(indexed), size=min(args.planted, len(indexed)), replace=False)]
    caught: dict[str, list[bool]] = defaultdict(list)
    scores: dict[str, list[float]] = defaultdict(list)
    wrong_item = 0
    times = []
    for name in planted:
        original = open_rgb(name)
        for kind, edit in EDITS.items():
            variant = edit(original, rng)
            start = time.perf_counter()
            match = index.nearest(variant)
            times.append(time.perf_counter() - start)
            hit = policy.is_near_copy(match)
            caught[kind].append(hit)
            scores[kind].append(min(match.similarity, match.detail) if match else 0.0)
            wrong_item += hit and match.name != name
    alarms, twins = [], []
    held = held_out if args.held_out <= 0 else held_out[: args.held_out]
    held_scores = []
    for name in held:
        image = open_rgb(name)
        match = index.nearest(image)
        held_scores.append(min(match.similarity, match.detail))
        if policy.is_near_copy(match):
            twin = same_drawing(image, open_rgb(match.name)) >= 0.95
            (twins if twin else alarms).append((name, match.name, match.similarity, match.detail))

    print(f"\n{'edit of a training image':44} {'caught':>8} {'rate':>6} {'lowest min(similarity, detail)':>31}")
    for kind in EDITS:
        hits = caught[kind]
        print(f"{kind:44} {sum(hits):>4}/{len(hits):<3} {sum(hits) / len(hits):>6.3f} {min(scores[kind]):>31.3f}")
    total = [h for hits in caught.values() for h in hits]
    print(f"{'ALL planted copies':44} {sum(total):>4}/{len(total):<3} {sum(total) / len(total):>6.3f}"
          f"   (caught but matched to another training image: {wrong_item})")
    flagged = len(alarms) + len(twins)
    print(f"\nheld-out images flagged: {flagged}/{len(held)} = {flagged / len(held):.4f}, of which {len(twins)} are twins "
          f"in twemoji itself (the same drawing as an indexed emoji up to mirror and colour: an edited copy by "
          f"this benchmark's own definition)")
    print(f"false alarms on held-out images (flagged, not twins): {len(alarms)}/{len(held)} = {len(alarms) / len(held):.4f}")
    print(f"held-out min(similarity, detail): median {statistics.median(held_scores):.3f}, "
          f"99th percentile {float(np.percentile(held_scores, 99)):.3f}")
    for title, rows in (("false alarms", alarms), ("twins", twins)):
        for name, other, score, detail in rows[:25]:
            print(f"  {title}: {name} ~ {other} (similarity {score:.3f}, detail {detail:.3f})")
    print(f"\noutput check cost per image (near-copy search over {len(index)} images): median "
          f"{statistics.median(times) * 1e3:.1f} ms, 95th percentile {float(np.percentile(times, 95)) * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
