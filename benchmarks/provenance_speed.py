"""Provenance cost per image: watermarking, C2PA signing (with a 256 px JPEG thumbnail) and
verification, against the whole worker-side time of one image (generation at 256 px + output
policy + stamping) measured in the same run.

    python benchmarks/provenance_speed.py [--images 20] [--checkpoint DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--checkpoint", help="model folder (default: the shipped model, else an untrained one)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ["STACKGAN_VAR_DIR"] = str(tmp)
    import django

    django.setup()
    from types import SimpleNamespace

    from generator import StackGANPipeline
    from generator.__main__ import init_untrained
    from generator.config import StackGANConfig
    from stackgan_django.governance import current_policies
    from stackgan_django.provenance import embed_mark_and_xmp, sign_generated, verify_bytes

    checkpoint = Path(args.checkpoint) if args.checkpoint else ROOT / "models" / "default"
    if not (checkpoint / "config.json").is_file():
        checkpoint = init_untrained(tmp / "untrained", StackGANConfig(), 0, None)
    pipe = StackGANPipeline.from_pretrained(checkpoint)
    policies = current_policies()
    model_version = SimpleNamespace(name="bench", pk=1, checkpoint_sha256="0" * 64, lineage={}, trained=True)
    request = SimpleNamespace(caption="a red apple", public_id="bench", requested_by_id=None, purpose="editorial",
                              policy_version=policies.version)
    sign_generated(embed_mark_and_xmp(pipe(["warm up"], seeds=[0]).images[0].image, 1),
                   model_version=model_version, request=request, decisions=[], mark_id=1)  # warm-up
    timings: dict[str, list[float]] = {k: [] for k in ("generate", "output policy", "watermark+xmp", "sign", "verify")}
    for i in range(args.images):
        start = time.perf_counter()
        image = pipe(["a red apple with a green leaf"], seeds=[i]).images[0].image
        timings["generate"].append(time.perf_counter() - start)
        start = time.perf_counter()
        policies.output.check_image(image)
        timings["output policy"].append(time.perf_counter() - start)
        start = time.perf_counter()
        png = embed_mark_and_xmp(image, 1000 + i)
        timings["watermark+xmp"].append(time.perf_counter() - start)
        start = time.perf_counter()
        signed = sign_generated(png, model_version=model_version, request=request, decisions=[], mark_id=1000 + i)
        timings["sign"].append(time.perf_counter() - start)
        start = time.perf_counter()
        state = verify_bytes(signed).state
        timings["verify"].append(time.perf_counter() - start)
        assert state == "Trusted", state
    medians = {k: statistics.median(v) for k, v in timings.items()}
    total = sum(medians.values())
    print(f"model: {checkpoint}  ({pipe.config.output_size} px, device {pipe.device}), {args.images} images")
    print(f"{'step':16} {'median ms':>10} {'share of per-image time':>24}")
    for name, seconds in medians.items():
        print(f"{name:16} {seconds * 1e3:>10.2f} {seconds / total:>23.1%}")
    print(f"{'total':16} {total * 1e3:>10.2f}")
    print(f"signing + verification: {(medians['sign'] + medians['verify']) * 1e3:.1f} ms per image, "
          f"{(medians['sign'] + medians['verify']) / total:.1%} of the worker's time per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
