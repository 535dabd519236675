"""Governance per image, the worker's path before and after the batch work, in one process and in
alternating rounds on the same generated images (so a busy machine slows both alike):

- before: per image, the output policy with the near-copy search as main had it (read from git at
  BASELINE_COMMIT), then watermark + XMP, signing and the full C2PA validation, each through the
  per-image functions (``embed_mark_and_xmp``, ``sign_generated``, ``verify_bytes``);
- after: the output policy over the batch (``OutputPolicy.check_images``), then
  ``provenance.stamp_image`` per image with the structural check after signing (the signer
  verified in full once, as the worker warm-up does), with numpy's BLAS on one thread as the
  worker now runs its governance (``worker.governance_threads``); the old search is also timed
  under that limit, so the gain of the search itself shows apart from the thread limit's.

The database work is not here: ``benchmarks/speed.py`` measures it through the real task.

    python benchmarks/governance_ab.py [--batch 16] [--rounds 5] [--baseline-commit d4fba78] [--json FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASELINE_COMMIT = "d4fba78"  # main before this work
CAPTIONS = ("a red apple with a green leaf, flat style", "a grinning face, flat style", "a cat face, flat style",
            "a slice of pizza, flat style")


def baseline_near_copy(commit: str) -> Any:
    """policies/near_copy.py as it was at ``commit``, as a module of its own."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:policies/near_copy.py"], check=True,
                            capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="near-copy-baseline-"))
    (folder / "near_copy_baseline.py").write_text(source)
    spec = importlib.util.spec_from_file_location("near_copy_baseline", folder / "near_copy_baseline.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "models" / "default")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-commit", default=BASELINE_COMMIT)
    parser.add_argument("--json")
    args = parser.parse_args()

    os.environ.update({"STACKGAN_VAR_DIR": tempfile.mkdtemp(prefix="stackgan-ab-"), "DJANGO_SETTINGS_MODULE": "config.settings"})
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_STORAGE_BACKEND"):
        os.environ.pop(name, None)
    import django

    django.setup()
    from generator import StackGANPipeline
    from lineage import Lineage
    from policies import NearCopyIndex, load_policies
    from policies.output import VERIFY_MARGIN, as_pil
    from stackgan_django import provenance
    from stackgan_django.provenance import manifests

    old = baseline_near_copy(args.baseline_commit)
    pipeline = StackGANPipeline.from_pretrained(args.checkpoint, device="cpu")
    images = []
    for number in range(args.batch):
        caption = CAPTIONS[number % len(CAPTIONS)]
        images.append(pipeline([caption], num_images_per_caption=1, seeds=[100 + number]).images[0].image)
    output = load_policies().output
    index = NearCopyIndex.load(args.checkpoint)
    old_index = old.NearCopyIndex.load(args.checkpoint)
    lineage = Lineage.from_dict(json.loads((args.checkpoint / "lineage.json").read_text()))
    model_version = SimpleNamespace(parsed_lineage=lineage, name="bench", pk=1, checkpoint_sha256="0" * 64, trained=True)
    request = SimpleNamespace(caption=CAPTIONS[0], public_id="bench", requested_by_id=None, purpose="benchmark",
                              policy_version=output.version)

    def before_policy() -> None:
        for image in images:  # what check_image did per image before: the same degenerate check, the old search
            pil = as_pil(image)
            output._check_degenerate(pil)
            old_index.nearest(pil, verify_from=output.min_similarity - VERIFY_MARGIN)

    def after_policy() -> None:
        output.check_images(images, index)

    marks = iter(range(10_000, 10**9))

    def before_stamping() -> None:
        for image in images:
            mark_id = next(marks)
            png = provenance.embed_mark_and_xmp(image, mark_id)
            signed = provenance.sign_generated(png, model_version=model_version, request=request, decisions=[],
                                               mark_id=mark_id)
            assert provenance.verify_bytes(signed).state == "Trusted"

    def after_stamping() -> None:
        for image in images:
            stamped = provenance.stamp_image(image, mark_id=next(marks), model_version=model_version, request=request,
                                             decisions=[])
            assert stamped.report.state == "Trusted"

    from stackgan_django.services.worker import governance_threads

    def one_blas_thread(function):
        def limited() -> None:
            with governance_threads():
                function()
        return limited

    # "before" as main's worker ran it (numpy's default BLAS threads), and the old search with the
    # worker's new thread limit, so the two causes of the difference show apart.
    cases = {"output policy, before (per image)": before_policy,
             "output policy, before, one BLAS thread": one_blas_thread(before_policy),
             "output policy, after (batch, one BLAS thread)": one_blas_thread(after_policy),
             "stamping, before (full validation)": before_stamping,
             "stamping, after (structural check)": one_blas_thread(after_stamping)}
    provenance.stamp_image(images[0], mark_id=1, model_version=model_version, request=request, decisions=[])
    assert manifests._per_process.get("trusted-signer") is not None  # the signer verified in full once
    for function in cases.values():
        function()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, function in cases.items():
            started = time.perf_counter()
            function()
            times[name].append((time.perf_counter() - started) / len(images) * 1e3)
    load = os.getloadavg()
    results = {"batch": len(images), "rounds": args.rounds, "baseline_commit": args.baseline_commit,
               "load_average": load, "ms_per_image": {name: {"fastest": min(v), "median": statistics.median(v)}
                                                      for name, v in times.items()}}
    print(f"governance per 256 px image, batch of {len(images)}, {args.rounds} alternating rounds, load average "
          f"{load[0]:.1f} (before = {args.baseline_commit}'s near-copy search and per-image stamping)")
    for name, value in results["ms_per_image"].items():
        print(f"  {name:40} fastest {value['fastest']:7.2f} ms   median {value['median']:7.2f} ms")
    before = sum(results["ms_per_image"][k]["fastest"] for k in cases if "before" in k and "one BLAS" not in k)
    after = sum(results["ms_per_image"][k]["fastest"] for k in cases if "after" in k)
    print(f"  policy + stamping: before {before:.2f} ms, after {after:.2f} ms ({after / before:.2f}x)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
