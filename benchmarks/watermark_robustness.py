"""Watermark survival and visual cost: the share of marked images whose id is recovered after JPEG
at quality 90 and 75 and a resize to half size, false detections on unmarked images, and PSNR.
Uses 256 px images from a prepared dataset folder if given, else drawn test images.

    python benchmarks/watermark_robustness.py [--data data/twemoji] [--count 200] [--strength 2.0]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
from pathlib import Path

from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stackgan_django import watermark  # noqa: E402


def drawn(seed: int) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (256, 256), tuple(rng.randrange(150, 256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = rng.randrange(256), rng.randrange(256), rng.randrange(20, 80)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--strength", type=float, default=2.0)
    args = parser.parse_args()
    if args.data:
        files = sorted((args.data / "images" / "256").glob("*.png"))
        random.Random(0).shuffle(files)
        images = [Image.open(f).convert("RGB") for f in files[: args.count]]
        source = str(args.data)
    else:
        images = [drawn(i) for i in range(args.count)]
        source = "drawn test images"
    key = b"benchmark-key-0123456789abcdef01"
    attacks = {"none": lambda im: im, "JPEG q90": lambda im: jpeg(im, 90), "JPEG q75": lambda im: jpeg(im, 75),
               "resize to 1/2": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
               "1/2 + JPEG q75": lambda im: jpeg(im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS), 75)}
    recovered = {name: 0 for name in attacks}
    psnrs, false_positives = [], 0
    for i, image in enumerate(images):
        mark_id = 100_000 + i * 7919
        marked = watermark.embed(image, mark_id, key, args.strength)
        psnrs.append(watermark.psnr(image, marked))
        for name, attack in attacks.items():
            recovered[name] += watermark.detect(attack(marked), key).mark_id == mark_id
        false_positives += watermark.detect(image, key).found
    print(f"{len(images)} images from {source}, strength {args.strength}")
    print(f"PSNR of the mark: median {statistics.median(psnrs):.1f} dB, min {min(psnrs):.1f} dB")
    print(f"{'after':18} {'id recovered':>13}")
    for name, count in recovered.items():
        print(f"{name:18} {count / len(images):>12.1%}")
    print(f"false detections on the unmarked originals: {false_positives} of {len(images)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
