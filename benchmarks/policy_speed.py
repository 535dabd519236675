"""Policy check speed: median time to check one caption (usage policy) and one 256 px image (output
policy, with a 2,000-image near-copy index), each against a plain baseline measured in the same run.

    python benchmarks/policy_speed.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies import NearCopyIndex, UsageContext, load_policies  # noqa: E402


def median_seconds(fn, items, rounds=3) -> float:
    times = []
    for _ in range(rounds):
        for item in items:
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def drawing(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = (int(v) for v in rng.integers(0, 220, 2))
        draw.ellipse((x, y, x + 40, y + 40), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def main() -> int:
    policies = load_policies()
    labelled = Path(__file__).resolve().parent.parent / "tests" / "data" / "captions_labelled.tsv"
    captions = [line.split("\t", 1)[1] for line in labelled.read_text().splitlines() if not line.startswith("#")]
    terms = [t for spec in policies.usage.term_rules for t in spec.terms]
    context = UsageContext(purpose="editorial")

    def naive(caption: str) -> bool:  # the baseline: lower-case substring search, no evasion handling
        lowered = caption.lower()
        return any(term in lowered for term in terms)

    caption_time = median_seconds(lambda c: policies.usage.check_caption(c, context), captions)
    baseline_time = median_seconds(naive, captions)
    long_caption = "a watercolour of a harbour at dawn with boats " * 10
    long_time = median_seconds(lambda c: policies.usage.check_caption(c, context), [long_caption[:500]] * 50)
    huge_time = median_seconds(lambda c: policies.usage.check_caption(c, context), ["x" * 5_000_000] * 5)

    images = [drawing(i) for i in range(20)]
    index = NearCopyIndex.build((f"train-{i}", drawing(1000 + i)) for i in range(2000))
    image_time = median_seconds(lambda im: policies.output.check_image(im, index), images)
    decode_png = []
    for image in images:
        import io

        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        decode_png.append(buffer.getvalue())
    decode_time = median_seconds(lambda data: Image.open(io.BytesIO(data)).load(), decode_png)

    print(f"{'check':52} {'median':>12} {'baseline':>12} {'ratio':>7}")
    print(f"{'usage policy, one caption (labelled set, ' + str(len(captions)) + ')':52} {caption_time * 1e3:>9.3f} ms "
          f"{baseline_time * 1e3:>9.4f} ms {caption_time / baseline_time:>7.1f}  (baseline: naive substring search)")
    print(f"{'usage policy, 500-character caption':52} {long_time * 1e3:>9.3f} ms")
    print(f"{'usage policy, 5 MB caption (refused on length)':52} {huge_time * 1e3:>9.3f} ms")
    print(f"{'output policy, 256 px image, 2000-item pHash index':52} {image_time * 1e3:>9.3f} ms "
          f"{decode_time * 1e3:>9.3f} ms {image_time / decode_time:>7.1f}  (baseline: decoding the PNG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
