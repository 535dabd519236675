"""Training bundles: a dataset folder reduced to what training needs, for a machine that has PyTorch but
no text encoder, no Django and no network.

    python -m generator.bundle pack DATA --out FOLDER [--max-size 256] [--sample-caption TEXT ...]
    python -m generator.bundle info FOLDER

A bundle holds the images (PNG, at most ``--max-size`` px, flattened onto white), ``manifest.jsonl``
with every rights field of the source, ``embeddings.safetensors`` with one embedding per caption
computed here with the text encoder, and ``bundle.json`` naming that encoder (name, dim, fingerprint)
so a checkpoint trained from the bundle still records which encoder it expects. Training and
evaluation on a bundle read the embeddings and never load the text encoder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

BUNDLE_FILE = "bundle.json"
EMBEDDINGS_FILE = "embeddings.safetensors"
BUNDLE_FORMAT = "stackgan-training-bundle"
BUNDLE_VERSION = 1
# Captions the trainer's sample grids and the README's figures use; packed even when no item has them.
DEFAULT_SAMPLE_CAPTIONS = (
    "a grinning face, flat style", "a cat face, flat style", "a red apple, flat style",
    "a slice of pizza, flat style", "a rose, flat style", "a red heart, flat style",
)


class BundleError(ValueError):
    """A bundle folder that is incomplete, or a caption that it holds no embedding for."""


def is_bundle(folder: str | os.PathLike) -> bool:
    return (Path(folder) / BUNDLE_FILE).is_file()


class BundleTextEncoder:
    """Stands in for ``TextEncoder`` with the embeddings a bundle carries: same ``encode``, ``dim``,
    ``fingerprint`` and ``describe``, but only for the captions that were packed."""

    def __init__(self, folder: str | os.PathLike):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        self.path = Path(folder)
        try:
            info = json.loads((self.path / BUNDLE_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BundleError(f"{self.path / BUNDLE_FILE} is missing or not JSON: {exc}") from exc
        if not isinstance(info, dict) or info.get("format") != BUNDLE_FORMAT or info.get("version") != BUNDLE_VERSION:
            raise BundleError(f"{self.path} is not a version {BUNDLE_VERSION} training bundle")
        self.info = info
        try:
            matrix = load_file(str(self.path / EMBEDDINGS_FILE))["embeddings"].float()
        except (OSError, KeyError, SafetensorError) as exc:
            raise BundleError(f"{self.path / EMBEDDINGS_FILE} is missing or unreadable: {exc}") from exc
        captions = info["captions"]
        if matrix.shape[0] != len(captions):
            raise BundleError(f"{self.path}: {len(captions)} captions but {matrix.shape[0]} embeddings")
        self.table = dict(zip(captions, matrix))
        self.encoder_info = dict(info["text_encoder"])

    @property
    def dim(self) -> int:
        return int(self.encoder_info["dim"])

    @property
    def name(self) -> str:
        return str(self.encoder_info["name"])

    @property
    def fingerprint(self) -> str:
        return str(self.encoder_info["sha256"])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "sha256": self.fingerprint}

    def encode(self, captions: list[str], batch_size: int = 128) -> torch.Tensor:
        missing = [c for c in captions if c not in self.table]
        if missing:
            raise BundleError(f"the bundle {self.path} holds no embedding for {missing[0]!r}; "
                              "pack it with --sample-caption to add captions")
        if not captions:
            return torch.empty(0, self.dim)
        return torch.stack([self.table[c] for c in captions])

    def embeddings(self) -> dict[str, torch.Tensor]:
        return dict(self.table)


def _png_bytes(source: Path, max_size: int) -> bytes:
    import io

    from PIL import Image

    from generator.data import load_rgb_image

    image = load_rgb_image(source)
    if max(image.size) > max_size:
        image = image.resize((max_size, max_size) if image.width == image.height else
                             _fit(image.size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _fit(size: tuple[int, int], limit: int) -> tuple[int, int]:
    scale = limit / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def pack(data: str | os.PathLike, out: str | os.PathLike, max_size: int = 256, text_encoder: Any = None,
         sample_captions: list[str] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write a bundle of ``data`` into ``out``; returns the bundle's description (bundle.json).

    Only items the rights holder allows training on are packed; their rights fields travel unchanged.
    """
    from safetensors.torch import save_file

    from generator.data import MANIFEST_FILE, manifest_sha256, read_manifest, write_manifest

    data, out = Path(data), Path(out)
    if max_size < 8:
        raise BundleError(f"--max-size must be at least 8 px, got {max_size}")
    items = read_manifest(data)
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise BundleError(f"{out} exists and is not empty (use --overwrite)")
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    if text_encoder is None:
        from generator.text_encoder import TextEncoder

        text_encoder = TextEncoder()
    lines, skipped = [], 0
    for number, item in enumerate(items):
        if not item.trainable:
            skipped += 1
            continue
        try:
            png = _png_bytes(data / item.image, max_size)
        except ValueError:
            skipped += 1
            continue
        name = f"images/{number:05d}-{hashlib.sha256(png).hexdigest()[:12]}.png"
        (out / name).write_bytes(png)
        record = item.to_json()
        record.pop("renditions", None)  # paths into the source folder; the bundle has one rendition
        record["image"] = name
        lines.append(record)
    if not lines:
        raise BundleError(f"no item of {data} may be trained on; nothing to pack")
    write_manifest(out, lines)
    captions = sorted({c for line in lines for c in line["captions"]} | set(sample_captions or DEFAULT_SAMPLE_CAPTIONS))
    matrix = text_encoder.encode(captions)
    save_file({"embeddings": matrix.float().contiguous()}, str(out / EMBEDDINGS_FILE),
              metadata={"encoder_sha256": text_encoder.fingerprint})
    info = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
        "source": data.resolve().name, "source_manifest_sha256": manifest_sha256(data),
        "manifest_sha256": manifest_sha256(out), "items": len(lines), "items_left_out": skipped,
        "max_size": max_size, "text_encoder": text_encoder.describe(), "captions": captions,
    }
    (out / BUNDLE_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    # Anything else (caches) stays behind: the bundle is what training needs and nothing more.
    assert (out / MANIFEST_FILE).is_file()
    return info


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m generator.bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pack_cmd = sub.add_parser("pack", help="write a training bundle of a dataset folder")
    pack_cmd.add_argument("data", type=Path, help="dataset folder with manifest.jsonl")
    pack_cmd.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    pack_cmd.add_argument("--max-size", type=int, default=256, help="longest image side in the bundle, px")
    pack_cmd.add_argument("--text-encoder", type=Path, help="local transformers folder (default: packaged all-MiniLM-L6-v2)")
    pack_cmd.add_argument("--sample-caption", action="append", dest="sample_captions",
                          help="extra caption to embed for sample grids (repeatable; default: six fixed ones)")
    pack_cmd.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    info_cmd = sub.add_parser("info", help="describe a bundle")
    info_cmd.add_argument("folder", type=Path)
    args = parser.parse_args(argv)
    from generator.data import ManifestError

    try:
        if args.command == "info":
            encoder = BundleTextEncoder(args.folder)
            info = {k: v for k, v in encoder.info.items() if k != "captions"}
            print(json.dumps({**info, "captions": len(encoder.table), "bytes": folder_size(args.folder)}, indent=1))
            return 0
        encoder = None
        if args.text_encoder:
            from generator.text_encoder import TextEncoder

            encoder = TextEncoder(args.text_encoder)
        extra = list(DEFAULT_SAMPLE_CAPTIONS) + (args.sample_captions or [])
        info = pack(args.data, args.out, args.max_size, encoder, extra, args.overwrite)
    except (BundleError, ManifestError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"bundle {args.out}: {info['items']} items ({info['items_left_out']} left out), {len(info['captions'])} "
          f"caption embeddings from {info['text_encoder']['name']}, {folder_size(args.out) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
