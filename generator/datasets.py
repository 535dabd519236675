"""Prepare training sets in the manifest.jsonl format.

    python -m generator.datasets prepare twemoji --out data/twemoji
    python -m generator.datasets import-csv --images photos/ --csv photos.csv --out data/ours

``prepare`` fetches openly licensed emoji artwork by package name with ``npm pack NAME@VERSION``
(pinned versions, the tarball's SHA-512 checked), renders each SVG at 64, 128 and 256 px onto a
white background, and writes captions built from emojibase-data (CLDR label, tags, group and
subgroup). Skin-tone variants are left out. Rights go into every manifest line.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import logging
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from generator.data import LICENSE_PATTERN, MAX_IMAGE_PIXELS, TRAINING_PERMISSIONS, load_rgb_image, write_manifest

logger = logging.getLogger(__name__)

SIZES = (64, 128, 256)
BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class NpmPackage:
    name: str
    version: str
    integrity: str  # the registry's "sha512-<base64>" of the tarball

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"


EMOJIBASE = NpmPackage("emojibase-data", "17.0.0",
                       "sha512-Yvgb5AWoHViHV/gq1qr5ZAarcBip+B27/ZLRsUJkbgAEaLlZ/fof9g882LTpmEpyhBNEC0m2SEmItljHsTygjA==")


@dataclass(frozen=True)
class EmojiSource:
    name: str
    package: NpmPackage
    licence: str
    training_permission: str
    attribution: str
    source_url: str
    styles: tuple[str, ...]
    note: str = ""


SOURCES = {
    "twemoji": EmojiSource(
        "twemoji",
        NpmPackage("@twemoji/svg", "15.0.0",
                   "sha512-ZSPef2B6nBaYnfgdTbAy4jgW95o7pi2xPGwGCU+WMTxo7J6B1lMPTWwSq/wTuiMq+N0khQ90CcvYp1wFoQpo/w=="),
        "CC-BY-4.0", "allowed",
        "Twemoji graphics by Twitter, Inc and other contributors, licensed under CC-BY 4.0 (https://github.com/jdecked/twemoji)",
        "https://github.com/jdecked/twemoji", ("flat style",)),
    "fluent": EmojiSource(
        "fluent",
        NpmPackage("fluentui-emoji", "1.3.0",
                   "sha512-JTXXwqIie2rWTgOkIJDJxr0WtwTz2WU4kdOq8buLVThYwQ264aFR2jdTyuon2oEbLqqGMT64zI4btyn1saB2xw=="),
        "MIT", "allowed", "Fluent Emoji by Microsoft Corporation, MIT licence (https://github.com/microsoft/fluentui-emoji)",
        "https://github.com/microsoft/fluentui-emoji", ("fluent flat style", "fluent modern style")),
    "openmoji": EmojiSource(
        "openmoji",
        NpmPackage("openmoji", "16.0.0",
                   "sha512-ruaRCfXL23tYzZ8cWzVxNsMEEUnol68RRxP4UueYyegtMz9wg/0p5RIJRdPz/e2KbBWq7ydrYvnN0NN4lhxN1g=="),
        "CC-BY-SA-4.0", "allowed", "OpenMoji, the open-source emoji and icon project, licensed under CC BY-SA 4.0 (https://openmoji.org)",
        "https://openmoji.org", ("outlined style",)),
    "apple64": EmojiSource(
        "apple64",
        NpmPackage("emoji-datasource-apple", "16.0.0",
                   "sha512-dVYjsK0FnCry9F+PBtnivhG2K0xdwlmqYaSgiUtztUdAGPYiHYhZcVKvNBqC791g2qyEcFNTBO6utg4eQ3uLTw=="),
        "LicenseRef-Apple-proprietary-emoji", "not allowed", "Apple Color Emoji artwork, proprietary to Apple Inc.",
        "https://github.com/iamcal/emoji-data", ("apple style",),
        note="Proprietary artwork not licensed for training: kept as the example the data policy must refuse."),
}


class PreparationError(RuntimeError):
    pass


def fetch_npm_package(package: NpmPackage, cache_dir: Path) -> Path:
    """``npm pack`` the pinned version into the cache and check its SHA-512 against the pin."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / (package.name.lstrip("@").replace("/", "-") + f"-{package.version}.tgz")
    if not tarball.is_file():
        try:
            result = subprocess.run(["npm", "pack", package.spec, "--json", "--pack-destination", str(cache_dir)],
                                    capture_output=True, text=True, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PreparationError(f"cannot run npm to fetch {package.spec}: {exc}") from exc
        if result.returncode != 0:
            raise PreparationError(f"npm pack {package.spec} failed: {result.stderr.strip()[-500:]}")
        filename = json.loads(result.stdout)[0]["filename"]
        tarball = cache_dir / Path(filename).name
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != package.integrity:
        tarball.unlink()
        raise PreparationError(f"{package.spec}: tarball integrity {digest[:24]}... does not match the pinned "
                               f"{package.integrity[:24]}...; refusing to use it")
    return tarball


@dataclass
class EmojiEntry:
    hexcode: str
    label: str
    tags: list[str]
    group: str
    subgroup: str


def load_emojibase(tarball: Path) -> dict[str, EmojiEntry]:
    """Base emoji (no skin-tone variants) by upper-case hexcode, with group names resolved."""
    with tarfile.open(tarball) as archive:
        data = json.load(archive.extractfile("package/en/data.json"))
        messages = json.load(archive.extractfile("package/en/messages.json"))
    groups = {g["order"]: g["message"] for g in messages["groups"]}
    subgroups = {g["order"]: g["message"] for g in messages["subgroups"]}
    entries = {}
    for item in data:
        if "group" not in item or groups.get(item["group"]) == "components":
            continue  # skin-tone swatches and hair components are not pictures of anything
        entries[item["hexcode"].upper()] = EmojiEntry(item["hexcode"].upper(), item["label"], item.get("tags", []),
                                                      groups.get(item["group"], ""), subgroups.get(item.get("subgroup"), ""))
    return entries


def _article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def build_captions(entry: EmojiEntry, style: str) -> list[str]:
    """Five to ten captions per image, as CUB has ten per bird."""
    label = entry.label.replace(":", "").strip()
    tags = [t for t in entry.tags if t.lower() not in label.lower()][:4]
    captions = [
        _article(label),
        f"{_article(label)}, {style}",
        f"an emoji of {_article(label)}",
        f"{label} emoji",
        f"{_article(label)} icon in {style}",
    ]
    if tags:
        captions.append(f"{_article(label)}, {', '.join(tags[:2])}")
        captions.append(f"{_article(label)} suggesting {' and '.join(tags[:2])}, {style}")
    if entry.subgroup:
        captions.append(f"{_article(label)} from the {entry.subgroup} emoji")
    if entry.group:
        captions.append(f"{_article(label)}, a {entry.group} emoji")
    return list(dict.fromkeys(captions))[:10]


def slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


@dataclass
class PreparationReport:
    written: int = 0
    left_out: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, item: str) -> None:
        self.left_out[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(item)

    def summary(self) -> str:
        text = f"{self.written} items written, {sum(self.left_out.values())} left out"
        for reason, count in self.left_out.most_common():
            text += f"\n  {count:5d}  {reason} (e.g. {', '.join(self.examples[reason])})"
        return text


def render_svg(svg: bytes, size: int) -> Image.Image:
    import resvg_py

    png = resvg_py.svg_to_bytes(svg_string=svg.decode("utf-8"), width=size, height=size)
    image = Image.open(io.BytesIO(bytes(png)))
    image.load()
    return flatten(image)


def flatten(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
    return Image.alpha_composite(canvas, rgba).convert("RGB")


ArtworkIterator = Iterator[tuple[str, str, Callable[[int], Image.Image]]]


def _svg_members(archive: tarfile.TarFile, prefix: str) -> dict[str, tarfile.TarInfo]:
    return {m.name: m for m in archive.getmembers() if m.isfile() and m.name.startswith(prefix) and m.name.endswith(".svg")}


def iterate_artwork(source: EmojiSource, archive: tarfile.TarFile, emojis: dict[str, EmojiEntry],
                    report: PreparationReport) -> ArtworkIterator:
    """Yield (hexcode, style, render(size)) for each base emoji the package draws."""
    def svg_renderer(member: tarfile.TarInfo) -> Callable[[int], Image.Image]:
        data = archive.extractfile(member).read()
        return lambda size: render_svg(data, size)

    svg_folders = {"twemoji": "package/", "openmoji": "package/src/"}
    if source.name in svg_folders:
        members = _svg_members(archive, svg_folders[source.name])
        by_code = {Path(n).stem.upper(): m for n, m in members.items()}
        for hexcode in emojis:
            # Some packages drop the variation selector FE0F from file names.
            member = by_code.get(hexcode) or by_code.get(hexcode.replace("-FE0F", ""))
            if member is None:
                report.skip("no artwork for this emoji in the package", hexcode)
                continue
            yield hexcode, source.styles[0], svg_renderer(member)
        return
    if source.name == "fluent":
        for folder, style in (("flat", source.styles[0]), ("modern", source.styles[1])):
            members = _svg_members(archive, f"package/icons/{folder}/")
            by_slug = {Path(n).stem: m for n, m in members.items()}
            for hexcode, entry in emojis.items():
                member = by_slug.get(slug(entry.label))
                if member is None:
                    report.skip(f"no {folder} artwork for this emoji", hexcode)
                    continue
                yield hexcode, style, svg_renderer(member)
        return
    if source.name == "apple64":
        members = {Path(m.name).stem.upper(): m for m in archive.getmembers()
                   if m.isfile() and m.name.startswith("package/img/apple/64/") and m.name.endswith(".png")}
        for hexcode in emojis:
            member = members.get(hexcode) or members.get(hexcode.replace("-FE0F", ""))
            if member is None:
                report.skip("no artwork for this emoji in the package", hexcode)
                continue
            data = archive.extractfile(member).read()

            def render(size: int, data: bytes = data) -> Image.Image:
                image = flatten(Image.open(io.BytesIO(data)))
                return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.BICUBIC)

            yield hexcode, source.styles[0], render
        return
    raise PreparationError(f"no artwork reader for {source.name}")


def prepare(name: str, out: Path, cache_dir: Path, limit: int | None = None, progress: bool = True,
            source: EmojiSource | None = None, emojibase: NpmPackage = EMOJIBASE) -> PreparationReport:
    """Build the dataset ``name`` (one of SOURCES, or ``source`` for another pinned package)."""
    if source is None and name not in SOURCES:
        raise PreparationError(f"unknown dataset {name!r}; choose one of {', '.join(SOURCES)}")
    from tqdm import tqdm

    source = source or SOURCES[name]
    emojis = load_emojibase(fetch_npm_package(emojibase, cache_dir))
    tarball = fetch_npm_package(source.package, cache_dir)
    report = PreparationReport()
    items = []
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as archive:
        artwork = iterate_artwork(source, archive, emojis, report)
        for hexcode, style, render in tqdm(artwork, disable=not progress, desc=f"rendering {name}", unit="img",
                                           mininterval=2):
            if limit is not None and len(items) >= limit:
                break
            entry = emojis[hexcode]
            stem = f"{hexcode.lower()}-{slug(style)}"
            try:
                paths = {}
                for size in SIZES:
                    rel = f"images/{size}/{stem}.png"
                    (out / rel).parent.mkdir(parents=True, exist_ok=True)
                    render(size).save(out / rel)
                    paths[size] = rel
            except Exception as exc:  # one broken SVG must not stop the other two thousand
                report.skip("the artwork failed to render", f"{hexcode} ({type(exc).__name__})")
                continue
            items.append({
                "image": paths[256], "renditions": {str(s): p for s, p in paths.items()},
                "captions": build_captions(entry, style), "license": source.licence,
                "source": f"npm:{source.package.spec} ({source.source_url})", "attribution": source.attribution,
                "training_permission": source.training_permission, "emoji": hexcode, "label": entry.label,
                "group": entry.group, "subgroup": entry.subgroup, "style": style,
            })
            report.written += 1
    write_manifest(out, items)
    (out / "README.txt").write_text(
        f"{name}: {len(items)} images from npm {source.package.spec}, licence {source.licence}, "
        f"training permission: {source.training_permission}.\n{source.attribution}\n{source.note}\n"
        f"Captions from npm {EMOJIBASE.spec} (CLDR labels and tags, MIT).\n")
    return report


# -- a customer's own images -------------------------------------------------------------------------

CSV_COLUMNS = ("file", "captions", "license", "source", "attribution", "training_permission")


def refuse_existing_output(out: Path, overwrite: bool) -> None:
    """Refuse to write a dataset into a folder that already holds one unless told to.

    A dataset folder's manifest is what a model's lineage.json hashes: writing over data/twemoji
    silently breaks the shipped model's record of what it was trained on.
    """
    if overwrite or not out.exists():
        return
    if not out.is_dir():
        raise PreparationError(f"{out} exists and is not a folder")
    if any(out.iterdir()):
        raise PreparationError(f"{out} already exists and is not empty; choose another --out, "
                               "or pass --overwrite to write over it")


RowCheck = Callable[[dict[str, str], int], str | None]


def import_csv(images_dir: Path, csv_path: Path, out: Path, max_side: int = 1024,
               overwrite: bool = False, row_check: RowCheck | None = None) -> tuple[int, list[str]]:
    """Validate every row of a CSV describing a folder of images and write the manifest format.

    ``captions`` holds one or more captions separated by '|'. Returns (rows written, errors by row);
    rows with errors are left out and reported, not fatal: so are a second row for a file already
    imported, and rows ``row_check(row, row_number)`` objects to (the data policy, passed in by the
    Django side: this package knows no policies). An ``out`` that is not empty is refused unless
    ``overwrite``.
    """
    refuse_existing_output(out, overwrite)
    errors: list[str] = []
    items = []
    imported: dict[Path, int] = {}  # resolved file -> the row that imported it
    try:
        text = csv_path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise PreparationError(f"cannot read {csv_path}: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise PreparationError(f"{csv_path} is not UTF-8 text (byte {exc.start}); save it as CSV UTF-8 and try again") from exc
    (out / "images").mkdir(parents=True, exist_ok=True)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PreparationError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected {', '.join(CSV_COLUMNS)}")
        rows = list(reader)
    except csv.Error as exc:
        raise PreparationError(f"{csv_path} is not a readable CSV file: {exc}") from exc
    for row_number, row in enumerate(rows, start=2):
        problem = _csv_row_problem(row, images_dir) or (row_check(row, row_number) if row_check else None)
        if problem:
            errors.append(f"row {row_number}: {problem}")
            continue
        source_file = (images_dir / row["file"].strip()).resolve()
        if source_file in imported:
            errors.append(f"row {row_number}: {row['file']!r} is a duplicate of row {imported[source_file]}; skipped")
            continue
        imported[source_file] = row_number
        try:
            image = load_rgb_image(images_dir / row["file"])
        except ValueError as exc:
            errors.append(f"row {row_number}: {row['file']}: {exc}")
            continue
        image.thumbnail((max_side, max_side))
        rel = f"images/{row_number:06d}-{slug(Path(row['file']).stem)[:60]}.png"
        image.save(out / rel)
        items.append({
            "image": rel, "captions": [c.strip() for c in row["captions"].split("|") if c.strip()],
            "license": row["license"].strip(), "source": row["source"].strip(),
            "attribution": row["attribution"].strip(), "training_permission": row["training_permission"].strip(),
            "original_file": row["file"],
        })
    if items:
        write_manifest(out, items)
    return len(items), errors


def _csv_row_problem(row: dict[str, str], images_dir: Path) -> str | None:
    name = (row.get("file") or "").strip()
    if not name:
        return "empty file name"
    if Path(name).is_absolute() or ".." in Path(name).parts or "\x00" in name:
        return f"file {name!r} must be inside the images folder"
    try:
        inside = (images_dir / name).resolve().is_relative_to(images_dir.resolve())
    except (OSError, RuntimeError, ValueError):  # a symlink loop
        inside = False
    if not inside:  # a symlink leading out of the folder would import a file nobody listed
        return f"file {name!r} leads outside the images folder (a symlink?)"
    if not (images_dir / name).is_file():
        return f"missing file {name!r}"
    if not [c for c in (row.get("captions") or "").split("|") if c.strip()]:
        return "empty caption"
    licence = (row.get("license") or "").strip()
    if not LICENSE_PATTERN.match(licence):
        return f"unknown licence {licence!r} (use an SPDX id such as CC-BY-4.0, or LicenseRef-...)"
    if (row.get("training_permission") or "").strip() not in TRAINING_PERMISSIONS:
        return f"training_permission must be one of {TRAINING_PERMISSIONS}"
    try:
        with Image.open(images_dir / name) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                return f"{name}: {image.width}x{image.height} is over the {MAX_IMAGE_PIXELS} pixel limit"
    except Exception as exc:
        return f"{name}: unreadable image ({type(exc).__name__})"
    return None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m generator.datasets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="build an emoji training set from npm packages")
    prep.add_argument("name", choices=sorted(SOURCES))
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "stackgan-npm-cache",
                      help="where fetched tarballs are kept")
    prep.add_argument("--limit", type=int, help="at most this many images (for quick trials)")
    imp = sub.add_parser("import-csv", help="turn a folder of your own images and a CSV into a dataset")
    imp.add_argument("--images", type=Path, required=True)
    imp.add_argument("--csv", type=Path, required=True)
    imp.add_argument("--out", type=Path, required=True)
    imp.add_argument("--overwrite", action="store_true", help="write over a folder that already holds files")
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            report = prepare(args.name, args.out, args.cache, args.limit)
            print(report.summary())
            return 0 if report.written else 1
        written, errors = import_csv(args.images, args.csv, args.out, overwrite=args.overwrite)
    except PreparationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for error in errors:
        print(f"  skipped {error}")
    print(f"{written} rows written to {args.out / 'manifest.jsonl'}, {len(errors)} rows skipped")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
