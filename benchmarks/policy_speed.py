"""Policy check speed, each against a plain baseline measured in the same run:

* the whole usage check per caption (word rules + semantic layer) on the shipped labelled captions,
  and its parts (the word rules alone, one sentence embedding with the policy's encoder against the
  float32 one);
* a 500-character caption of plain words, the same with a harmful phrase at its end, and the worst
  hostile caption, each against the semantic layer as it was before (a long caption embedded window
  by window instead of in one banded pass), the two alternating on the same captions, and against
  the same policy with the float32 encoder instead of the int8 one;
* the policy's load time per process (encoder, examples embedded, classifiers fitted), against the
  policy folder as it was before this change (``BEFORE``, read from git when it is there);
* the worst of several hostile 500-character generators (characters that several letters of a blocked
  term accept, separators, digit runs, e-mail and IBAN look-alikes), word rules and whole check;
* hostile shapes aimed at the semantic layer too: combining marks, zero-width characters, long
  unbroken tokens, runs of look-alike characters, mixed scripts;
* one 256 px image through the output policy with the shipped near-copy index
  (``models/default/near_copies.json``, every twemoji image), against the search as it was before it
  was vectorised (``benchmarks/near_copy_reference.py``), the two alternating on the same images, and
  against decoding the PNG.

    OMP_NUM_THREADS=1 python benchmarks/policy_speed.py
"""

from __future__ import annotations

import copy
import io
import random
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from near_copy_reference import ReferenceNearCopyIndex  # noqa: E402

from policies import NearCopyIndex, UsageContext, load_policies  # noqa: E402
from policies.embedding import shared_encoder  # noqa: E402
from policies.evaluation import read_labelled  # noqa: E402
from policies.normalize import SEPARATOR_CLASS, SUBSTITUTES  # noqa: E402
from policies.usage import UsagePolicy  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The commit whose policy folder is the load-time baseline (before instructions, dev2 and word lifts).
BEFORE = "d4fba78"


class WindowsOneByOne:
    """The packaged encoder without ``token_states``: the semantic layer then embeds a long caption
    window by window, as it did before the banded pass (the baseline of the long captions)."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.token_ids, self.truncate, self.folder, self.dim = encoder.token_ids, encoder.truncate, encoder.folder, encoder.dim

    def __call__(self, texts):
        return self.encoder(texts)


def alternating(new, old, items, rounds=3) -> tuple[list[float], list[float]]:
    """Times of new(item) and old(item), alternating on each item so the machine's load falls on both."""
    new_times, old_times = [], []
    for _ in range(rounds):
        for item in items:
            for fn, times in ((old, old_times), (new, new_times)):
                start = time.perf_counter()
                fn(item)
                times.append(time.perf_counter() - start)
    return new_times, old_times


def load_seconds(folder: Path | None) -> tuple[float, int]:
    """Seconds to load a policy folder and warm its semantic layer in a fresh process, and its example count."""
    code = ("import time, sys; t = time.perf_counter(); from policies import load_policies; "
            f"p = load_policies({str(folder)!r} if {folder is not None} else None).usage.semantic; p.warm_up(); "
            "print(time.perf_counter() - t, len(p.example_keys()) + len(p.act_examples()[0]) + len(p.act_examples()[1]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    return float(out[0]), int(out[1])


def before_folder(tmp: Path) -> Path | None:
    """The default policy folder as it was at BEFORE, or None without git."""
    try:
        names = subprocess.run(["git", "ls-tree", "--name-only", f"{BEFORE}:policies/default"], capture_output=True,
                               text=True, cwd=ROOT, check=True).stdout.split()
        for name in names:
            data = subprocess.run(["git", "show", f"{BEFORE}:policies/default/{name}"], capture_output=True, cwd=ROOT,
                                  check=True).stdout
            (tmp / name).write_bytes(data)
    except (OSError, subprocess.CalledProcessError):
        return None
    return tmp


def seconds(fn, items, rounds=3) -> list[float]:
    times = []
    for _ in range(rounds):
        for item in items:
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
    return times


def median_seconds(fn, items, rounds=3) -> float:
    return statistics.median(seconds(fn, items, rounds))


def drawing(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (256, 256), "white")
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x, y = (int(v) for v in rng.integers(0, 220, 2))
        draw.ellipse((x, y, x + 40, y + 40), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def hostile_captions(usage: UsagePolicy, length: int = 500) -> dict[str, str]:
    """Captions built to make pattern matching work hard: one family per trick."""
    rng = random.Random(0)
    substitutes = "".join(sorted(set("".join(SUBSTITUTES.values()))))
    separators = "".join(c for c in " .-_*·•,/\\~'\"`^:;" if c in SEPARATOR_CLASS or c == " ")

    def fill(unit: str) -> str:
        return (unit * (length // max(len(unit), 1) + 1))[:length]

    found = {
        "i1l| (letters sharing substitutes)": fill("i1l|"),
        "all substitute characters": fill(substitutes),
        "substitutes and separators, random": "".join(rng.choice(substitutes + separators) for _ in range(length)),
        "digits and spaces (phone/card look-alike)": fill("1 2-3 4 "),
        "one long digit run": "1" * length,
        "e-mail look-alike": fill("a.b@c.d"),
        "e-mail with many dots": "a" * 200 + "@" + "b." * 149 + "c",
        "IBAN look-alike": fill("GB82 WEST "),
        "letter and dot": fill("a."),
        "spaces then no match": "white" + " " * (length - 6) + "x",
    }
    for rule in usage.term_rules + usage.name_rules:
        for term in rule.terms:
            letters = "".join(dict.fromkeys(term.lower()))
            found[f"substitutes of '{term}'"] = fill("".join(c + SUBSTITUTES.get(c, c) + "." for c in letters))
            found[f"'{term}' letters tripled"] = fill("".join(c * 3 + "." for c in term))
    # Shapes aimed at the tokenizer and the semantic layer rather than the regexes.
    found["combining marks on every letter"] = "".join(c + "\u0301\u0308\u0327" for c in fill("nude beach "))[:length]
    found["a mark stack on one letter"] = "a" + "\u0301" * (length - 1)
    found["zero-width joiners between letters"] = "".join(c + "\u200b\u200d" for c in fill("kill yourself "))[:length]
    found["zero-width only"] = "\u200b" * length
    found["one 500-letter token"] = fill("pneumonoultramicroscopic")
    found["long tokens with spaces"] = fill("supercalifragilisticexpialidocious ")
    found["cyrillic look-alikes"] = fill("а nаkеd wоmаn ")  # Cyrillic а, е, о
    found["fullwidth letters"] = fill("ｎｕｄｅ ｐｈｏｔｏ ")
    found["emoji run"] = fill("🔫💣🔪")
    found["plain words, 80 of them"] = fill("a quiet harbour with wooden boats at dawn and seagulls over the water ")
    found["CJK characters"] = "".join(chr(0x4E00 + (i * 37) % 20000) for i in range(length))
    for i in range(20):
        found[f"random mix {i}"] = "".join(rng.choice(substitutes + separators + string.ascii_lowercase) for _ in range(length))
    # An attacker's shapes (a helper's probe of 3,253 captions, 2 Dec 2026): an instruction frame
    # repeated inside one word, glued by punctuation, cut to just under the layer's word-piece limit
    # (each frame's act was once embedded alone: 12 acts of ~199 pieces, 500 ms); word rules whose
    # neighbourhoods are long glued words; distinct words up to the form's limit.
    token_ids = usage.semantic._embedder.token_ids if usage.semantic and usage.semantic._embedder else None
    for separator in "/~&#.+=:":
        for frame in ("how-to", "stepbystep", "diagram:making", "photos:making"):
            for filler in ("", "cake", "x"):
                text = fill(f"{frame}{separator}{filler}{separator}" if filler else f"{frame}{separator}")
                while token_ids is not None and len(token_ids([text])[0]) > 199:
                    text = text[:-3]
                found[f"frame '{frame}' glued by '{separator}'{' with ' + filler if filler else ''}"] = text
    glued = ".".join(rng.choice(["honey", "dawn", "cookie", "willow", "lavender", "quilt"]) for _ in range(120))
    for lead in ("glue gun self-harm support ", "terrorist attack memorial ", "porn free murder of crows "):
        found[f"word rules, glued neighbours: {lead.strip()}"] = (lead + glued)[:length]
    words = ["lantern", "harbour", "willow", "orchard", "velvet", "heron", "chimney", "tram", "saucer", "meadow"]
    found["distinct words at the form's limit"] = " ".join(rng.choice(words) + str(i) for i in range(80))[:length]
    return found


def main() -> int:
    policies = load_policies()
    usage = policies.usage
    word_rules_only = UsagePolicy.__new__(UsagePolicy)
    word_rules_only.__dict__.update({**usage.__dict__, "semantic": None})
    captions = [row.caption for row in read_labelled((ROOT / "policies" / "labelled" / "usage_captions.csv").read_text())]
    context = UsageContext(purpose="editorial")
    terms = [t for spec in usage.term_rules for t in spec.terms]

    def naive(caption: str) -> bool:  # the baseline: lower-case substring search, no evasion handling
        lowered = caption.lower()
        return any(term in lowered for term in terms)

    started = time.perf_counter()
    usage.semantic.warm_up()
    warm_up = time.perf_counter() - started
    load_new, examples_new = load_seconds(None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = before_folder(Path(tmp))
        load_old, examples_old = load_seconds(folder) if folder else (float("nan"), 0)
    # The same policy, its semantic layer embedding long captions window by window (the baseline).
    before = UsagePolicy.__new__(UsagePolicy)
    before.__dict__.update(usage.__dict__)
    before.semantic = copy.copy(usage.semantic)
    before.semantic._embedder = WindowsOneByOne(usage.semantic._embedder)
    # The same policy with the float32 encoder (the exact arithmetic) instead of the int8 one: the
    # baseline of the encoder's precision. Its classifiers stay those fitted on the int8 vectors; the
    # cost per caption is the encoder's either way.
    exact = UsagePolicy.__new__(UsagePolicy)
    exact.__dict__.update(usage.__dict__)
    exact.semantic = copy.copy(usage.semantic)
    exact.semantic._embedder = shared_encoder(usage.semantic.encoder_folder, "float32")
    full_times = seconds(lambda c: usage.check_caption(c, context), captions, rounds=2)
    full_time = statistics.median(full_times)
    words_time = median_seconds(lambda c: word_rules_only.check_caption(c, context), captions)
    embed_time = median_seconds(lambda c: usage.semantic._embed([c]), captions[:200])
    embed_exact_time = median_seconds(lambda c: exact.semantic._embed([c]), captions[:200])
    baseline_time = median_seconds(naive, captions)
    # 500 characters in 76 words (the form allows 80): the longest caption the semantic layer judges.
    long_caption = ("an impressionistic watercolour illustration of a fishing harbour at dawn, wooden boats, seagulls, "
                    * 5)[:500]
    long_times, long_before = alternating(lambda c: usage.check_caption(c, context),
                                          lambda c: before.check_caption(c, context), [long_caption] * 10)
    long_time = statistics.median(long_times)
    # The same length with a harmful phrase at its end: the windows must reach it, at the same cost.
    planted = long_caption[: 500 - 26].rsplit(" ", 1)[0] + ", a man cutting his wrists"
    planted_times, planted_before = alternating(lambda c: usage.check_caption(c, context),
                                                lambda c: before.check_caption(c, context), [planted] * 10)
    huge_time = median_seconds(lambda c: usage.check_caption(c, context), ["x" * 5_000_000] * 5)

    hostile = hostile_captions(usage)
    hostile_words = {name: median_seconds(word_rules_only.check_caption, [text], rounds=5) for name, text in hostile.items()}
    worst_words = max(hostile_words, key=hostile_words.get)
    # The whole check (word rules + semantic layer) on every hostile caption once, then the ten
    # slowest again, three rounds each, so one disturbed timing does not decide the worst.
    first_pass = {name: median_seconds(usage.check_caption, [text], rounds=1) for name, text in hostile.items()}
    hostile_full, hostile_before, hostile_exact = {}, {}, {}
    for name in sorted(first_pass, key=first_pass.get, reverse=True)[:10]:
        new_times, old_times = alternating(usage.check_caption, before.check_caption, [hostile[name]], rounds=3)
        hostile_full[name], hostile_before[name] = statistics.median(new_times), statistics.median(old_times)
        _, exact_times = alternating(usage.check_caption, exact.check_caption, [hostile[name]], rounds=3)
        hostile_exact[name] = statistics.median(exact_times)
    worst_full = max(hostile_full, key=hostile_full.get)
    worst_before = max(hostile_before, key=hostile_before.get)
    worst_exact = max(hostile_exact, key=hostile_exact.get)
    long_exact = statistics.median(alternating(lambda c: usage.check_caption(c, context),
                                               lambda c: exact.check_caption(c, context), [long_caption] * 10)[1])
    outcomes = {name: usage.check_caption(hostile[name], context).outcome.value for name in hostile_full}

    index = NearCopyIndex.load(ROOT / "models" / "default")
    reference = ReferenceNearCopyIndex.of(index)
    # Generated-looking images (random shapes) and training images (which the search must align
    # and verify, the slower path): 256 px, as the worker checks them.
    images = [drawing(i) for i in range(20)]
    for name in index.names[:: max(len(index.names) // 20, 1)][:20]:
        with Image.open(ROOT / "data" / "twemoji" / name) as handle:
            images.append(handle.convert("RGB").resize((256, 256)))
    # Alternating the two searches on each image spreads the machine's load over both.
    new_times, old_times = [], []
    for _ in range(2):
        for image in images:
            for which, times in ((reference, old_times), (index, new_times)):
                start = time.perf_counter()
                policies.output.check_image(image, which)
                times.append(time.perf_counter() - start)
    image_time, old_image_time = statistics.median(new_times), statistics.median(old_times)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    decode_time = median_seconds(lambda data: Image.open(io.BytesIO(data)).load(), encoded)

    ms = 1e3
    print(f"semantic layer warm-up (encoder load, {len(usage.semantic.example_keys())} examples embedded, classifiers fitted): "
          f"{warm_up:.1f} s, once per process")
    print(f"{'check':64} {'median':>11} {'baseline':>11} {'ratio':>7}")
    print(f"{'usage policy, whole check, one caption (labelled set, ' + str(len(captions)) + ')':64} {full_time * ms:>8.2f} ms "
          f"{baseline_time * ms:>8.4f} ms {full_time / baseline_time:>7.0f}  (baseline: naive substring search)")
    print(f"{'  95th percentile / worst of the labelled set':64} {float(np.percentile(full_times, 95)) * ms:>8.2f} ms "
          f"{max(full_times) * ms:>8.2f} ms")
    print(f"{'  of which: word rules, personal data, purpose, quotas':64} {words_time * ms:>8.2f} ms")
    print(f"{'  of which: one sentence embedding (MiniLM, ' + usage.semantic.encoder_precision + ')':64} {embed_time * ms:>8.2f} ms "
          f"{embed_exact_time * ms:>8.2f} ms {embed_time / embed_exact_time:>7.2f}  (baseline: the float32 encoder)")
    print(f"{'policy load per process (fresh process, examples embedded)':64} {load_new:>9.2f} s {load_old:>9.2f} s "
          f"{load_new / load_old:>7.2f}  ({examples_new} examples and acts; baseline: the folder at {BEFORE}, "
          f"{examples_old} examples)")
    long_old = statistics.median(long_before)
    print(f"{'usage policy, whole check, 500-character caption (median)':64} {long_time * ms:>8.2f} ms {long_old * ms:>8.2f} ms "
          f"{long_time / long_old:>7.2f}  (baseline: windows embedded one by one, alternating; worst {max(long_times) * ms:.2f} ms)")
    planted_new, planted_old = statistics.median(planted_times), statistics.median(planted_before)
    print(f"{'  the same with a harmful phrase at its end (median)':64} {planted_new * ms:>8.2f} ms {planted_old * ms:>8.2f} ms "
          f"{planted_new / planted_old:>7.2f}  ({usage.check_caption(planted, context).outcome.value}; worst "
          f"{max(planted_times) * ms:.2f} ms)")
    print(f"{'usage policy, 5 MB caption (refused on length)':64} {huge_time * ms:>8.3f} ms")
    print(f"{'hostile 500-char captions, word rules, worst of ' + str(len(hostile)):64} {hostile_words[worst_words] * ms:>8.2f} ms"
          f"  ({worst_words})")
    print(f"{'hostile 500-char captions, whole check, worst of ' + str(len(hostile)):64} {hostile_full[worst_full] * ms:>8.2f} ms"
          f" {hostile_before[worst_before] * ms:>8.2f} ms {hostile_full[worst_full] / hostile_before[worst_before]:>7.2f}"
          f"  ({worst_full}: {outcomes[worst_full]}; baseline: its worst, windows one by one: {worst_before})")
    print(f"{'  the same, float32 encoder (worst)':64} {hostile_exact[worst_exact] * ms:>8.2f} ms  ({worst_exact}); "
          f"500-character plain caption {long_exact * ms:.2f} ms")
    for name in sorted(hostile_full, key=hostile_full.get, reverse=True)[1:5]:
        print(f"{'  next: ' + name[:56]:64} {hostile_full[name] * ms:>8.2f} ms  ({outcomes[name]})")
    label = f"output policy, 256 px image, shipped index ({len(index)} images)"
    print(f"{label:64} {image_time * ms:>8.2f} ms {old_image_time * ms:>8.2f} ms {image_time / old_image_time:>7.2f}"
          f"  (baseline: the search before vectorising, alternating; {len(images)} images x 2)")
    print(f"{'':64} {'':>11} {decode_time * ms:>8.3f} ms {image_time / decode_time:>7.1f}  (baseline: decoding the PNG)")
    print(f"{'  95th percentile, output policy (new / before)':64} {float(np.percentile(new_times, 95)) * ms:>8.2f} ms "
          f"{float(np.percentile(old_times, 95)) * ms:>8.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
