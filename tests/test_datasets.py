"""Dataset preparation (pinned npm packages, rendering, captions) and the import of a customer's
own images, on small packages built here: no network in tests."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from generator.data import read_manifest
from generator.datasets import (
    CSV_COLUMNS,
    EmojiEntry,
    EmojiSource,
    NpmPackage,
    PreparationError,
    build_captions,
    fetch_npm_package,
    import_csv,
    prepare,
)
from policies import load_policies

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36"><circle cx="18" cy="18" r="16" fill="#FFCC4D"/>'
       '<circle cx="12" cy="14" r="3" fill="#664500"/><circle cx="24" cy="14" r="3" fill="#664500"/></svg>')


def tarball(path: Path, files: dict[str, bytes]) -> NpmPackage:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    digest = "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()
    name, version = path.stem.rsplit("-", 1)
    return NpmPackage(name, version, digest)


@pytest.fixture
def packages(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    data = [
        {"label": "grinning face", "hexcode": "1F600", "tags": ["face", "grin", "happy"], "group": 0, "subgroup": 0},
        {"label": "red apple", "hexcode": "1F34E", "tags": ["fruit", "red"], "group": 1, "subgroup": 1},
        {"label": "medium skin tone", "hexcode": "1F3FD", "tags": [], "group": 2, "subgroup": 2},
        {"label": "unicorn", "hexcode": "1F984", "tags": ["fantasy"], "group": 1, "subgroup": 1},
    ]
    messages = {"groups": [{"key": "smileys", "message": "smileys & emotion", "order": 0},
                           {"key": "food", "message": "food & drink", "order": 1},
                           {"key": "component", "message": "components", "order": 2}],
                "subgroups": [{"key": "s", "message": "smiling", "order": 0},
                              {"key": "f", "message": "fruit", "order": 1},
                              {"key": "c", "message": "skin-tone", "order": 2}]}
    emojibase = tarball(cache / "emojibase-data-1.0.0.tgz", {"package/en/data.json": json.dumps(data).encode(),
                                                               "package/en/messages.json": json.dumps(messages).encode()})
    art = tarball(cache / "test-svg-1.0.0.tgz", {"package/1f600.svg": SVG.encode(), "package/1f34e.svg": b"<svg broken",
                                                 "package/1f600-1f3fd.svg": SVG.encode()})
    return cache, emojibase, art


def test_prepare_builds_a_rights_tracked_manifest_and_reports_what_it_left_out(tmp_path, packages):
    cache, emojibase, art = packages
    source = EmojiSource("twemoji", art, "CC-BY-4.0", "allowed", "Twemoji by Twitter (CC-BY 4.0)", "https://x", ("flat style",))
    report = prepare("twemoji", tmp_path / "out", cache, progress=False, source=source, emojibase=emojibase)
    assert report.written == 1
    assert report.left_out["the artwork failed to render"] == 1  # the broken SVG
    assert report.left_out["no artwork for this emoji in the package"] == 1  # unicorn
    items = read_manifest(tmp_path / "out")
    item = items[0]
    assert item.license == "CC-BY-4.0" and item.training_permission == "allowed" and "Twemoji" in item.attribution
    assert 5 <= len(item.captions) <= 10 and "a grinning face, flat style" in item.captions
    for size in (64, 128, 256):
        image = Image.open(tmp_path / "out" / item.extra["renditions"][str(size)])
        assert image.size == (size, size) and image.mode == "RGB"
        assert image.getpixel((0, 0)) == (255, 255, 255)  # transparency composited onto white
    assert not load_policies().data.check_dataset(tmp_path / "out").denied


def test_proprietary_artwork_is_prepared_but_refused_by_the_data_policy(tmp_path, packages):
    cache, emojibase, _ = packages
    png = io.BytesIO()
    Image.new("RGBA", (64, 64), (200, 0, 0, 255)).save(png, "PNG")
    apple = tarball(cache / "apple-data-1.0.0.tgz", {"package/img/apple/64/1f34e.png": png.getvalue()})
    source = EmojiSource("apple64", apple, "LicenseRef-Apple-proprietary-emoji", "not allowed", "Apple", "x", ("apple style",))
    prepare("apple64", tmp_path / "apple", cache, progress=False, source=source, emojibase=emojibase)
    verdict = load_policies().data.check_dataset(tmp_path / "apple")
    assert verdict.denied and "line 1" in verdict.decisions[0].message


def test_a_tarball_whose_integrity_does_not_match_the_pin_is_refused(tmp_path, packages):
    cache, _, art = packages
    wrong = NpmPackage(art.name, art.version, "sha512-" + base64.b64encode(b"0" * 64).decode())
    with pytest.raises(PreparationError, match="does not match the pinned"):
        fetch_npm_package(wrong, cache)


def test_captions_read_like_cub_captions():
    captions = build_captions(EmojiEntry("1F436", "dog face", ["dog", "pet", "face"], "animals & nature", "animal-mammal"),
                              "flat style")
    assert captions[0] == "a dog face" and "a dog face, flat style" in captions and 5 <= len(captions) <= 10
    assert len(set(captions)) == len(captions)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "captions", "license", "source", "attribution",
                                                    "training_permission"])
        writer.writeheader()
        writer.writerows(rows)


def test_import_csv_validates_every_row_and_reports_by_row(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (300, 200), (10, 120, 200)).save(images / "good.jpg")
    (images / "broken.jpg").write_bytes(b"not really a jpeg")
    base = {"captions": "a blue product shot|a studio photo", "license": "LicenseRef-customer-owned",
            "source": "studio", "attribution": "", "training_permission": "allowed"}
    write_csv(tmp_path / "photos.csv", [
        {**base, "file": "good.jpg"}, {**base, "file": "missing.jpg"}, {**base, "file": "broken.jpg"},
        {**base, "file": "good.jpg", "captions": " | "}, {**base, "file": "good.jpg", "license": "my licence"},
        {**base, "file": "../escape.jpg"}, {**base, "file": "good.jpg", "training_permission": "sure"},
    ])
    written, errors = import_csv(images, tmp_path / "photos.csv", tmp_path / "out")
    assert written == 1
    text = "\n".join(errors)
    for expected in ("row 3: missing file", "row 4: broken.jpg: unreadable image", "row 5: empty caption",
                     "row 6: unknown licence", "row 7: file '../escape.jpg' must be inside", "row 8: training_permission"):
        assert expected in text
    item = read_manifest(tmp_path / "out")[0]
    assert item.captions == ("a blue product shot", "a studio photo") and item.license == "LicenseRef-customer-owned"


def test_import_csv_refuses_a_file_without_the_columns(tmp_path):
    (tmp_path / "bad.csv").write_text("name,text\nx,y\n")
    with pytest.raises(PreparationError, match="missing column"):
        import_csv(tmp_path, tmp_path / "bad.csv", tmp_path / "out")


def _photos_folder(tmp_path):
    """An images folder holding one good photo, good.jpg."""
    images = tmp_path / "photos"
    images.mkdir()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(images / "good.jpg")
    return images


def _row(**fields):
    return {"file": "good.jpg", "captions": "a blue square", "license": "CC0-1.0", "source": "studio",
            "attribution": "", "training_permission": "allowed", **fields}


def test_import_csv_refuses_to_write_over_an_existing_dataset_unless_told(tmp_path):
    images = _photos_folder(tmp_path)
    write_csv(tmp_path / "photos.csv", [_row()])
    out = tmp_path / "data" / "twemoji"
    out.mkdir(parents=True)
    (out / "manifest.jsonl").write_text("the shipped manifest\n")
    with pytest.raises(PreparationError, match="already exists"):
        import_csv(images, tmp_path / "photos.csv", out)
    assert (out / "manifest.jsonl").read_text() == "the shipped manifest\n"
    assert import_csv(images, tmp_path / "photos.csv", out, overwrite=True)[0] == 1


@pytest.fixture
def finetune_script(tmp_path):
    """A copy of scripts/finetune.sh in a bare project folder, with a python that records its calls."""
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "finetune.sh"
    script.write_text((Path(__file__).parent.parent / "scripts" / "finetune.sh").read_text())
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    python = tmp_path / ".venv" / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls.txt\n')
    python.chmod(0o755)
    return script


@pytest.mark.parametrize("name", ["../models/default", "a/b", "", ".hidden", "name with space"])
def test_finetune_refuses_a_name_that_is_not_a_plain_identifier(finetune_script, name):
    import subprocess

    result = subprocess.run(["bash", str(finetune_script), "imgs", "a.csv", name, "1"], capture_output=True, text=True)
    assert result.returncode == 2 and "plain name" in result.stderr
    assert not (finetune_script.parent.parent / "calls.txt").exists()


def test_finetune_refuses_an_existing_dataset_or_run_unless_forced(finetune_script):
    import subprocess

    root = finetune_script.parent.parent
    (root / "data" / "twemoji").mkdir(parents=True)
    (root / "runs" / "ours").mkdir(parents=True)
    for name in ("twemoji", "ours"):
        result = subprocess.run(["bash", str(finetune_script), "imgs", "a.csv", name, "1"], capture_output=True, text=True)
        assert result.returncode == 2 and "already exists" in result.stderr and "FORCE=1" in result.stderr
    assert not (root / "calls.txt").exists()
    result = subprocess.run(["bash", str(finetune_script), "--force", "imgs", "a.csv", "twemoji", "1"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "import_images --images imgs --csv a.csv --out data/twemoji --overwrite" in (root / "calls.txt").read_text()


def test_training_refuses_to_write_into_the_model_it_fine_tunes(tmp_path, capsys):
    from generator.train_cli import main

    assert main(["--data", str(tmp_path), "--init-from", "models/default", "--output", "models/default/."]) == 2
    assert "is the --init-from model" in capsys.readouterr().err




def test_import_csv_reports_a_csv_that_is_not_utf8_as_an_error(tmp_path):
    (tmp_path / "latin1.csv").write_bytes(",".join(CSV_COLUMNS).encode() + b"\ncaf\xe9.jpg,a caf\xe9,CC0-1.0,s,,allowed\n")
    with pytest.raises(PreparationError, match="not UTF-8"):
        import_csv(tmp_path, tmp_path / "latin1.csv", tmp_path / "out")


def test_import_csv_refuses_symlinks_out_of_the_folder_and_skips_duplicate_rows(tmp_path):
    images = _photos_folder(tmp_path)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "private.jpg")
    (images / "link.jpg").symlink_to(tmp_path / "private.jpg")
    write_csv(tmp_path / "photos.csv", [_row(), _row(file="link.jpg"), _row(), _row(file="./good.jpg")])
    written, errors = import_csv(images, tmp_path / "photos.csv", tmp_path / "out")
    assert written == 1
    text = "\n".join(errors)
    assert "row 3: file 'link.jpg' leads outside the images folder" in text
    assert "row 4: 'good.jpg' is a duplicate of row 2" in text and "row 5: './good.jpg' is a duplicate of row 2" in text


def test_import_skips_rows_the_data_policy_would_refuse_so_the_rest_can_train(tmp_path):
    import tomllib

    from policies import DEFAULT_DIR, DataPolicy
    from stackgan_django.management.commands.import_images import policy_row_check

    policy = DataPolicy(tomllib.loads((DEFAULT_DIR / "data.toml").read_text()), "v")
    images = tmp_path / "photos"
    images.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        Image.new("RGB", (64, 64), (10, 120, 200)).save(images / name)
    write_csv(tmp_path / "photos.csv", [
        _row(file="a.jpg"), _row(file="b.jpg", license="MIT", attribution=""), _row(file="c.jpg", license="LicenseRef-"),
        _row(file="d.jpg", training_permission="not allowed"),
    ])
    written, errors = import_csv(images, tmp_path / "photos.csv", tmp_path / "out", row_check=policy_row_check(policy))
    text = "\n".join(errors)
    assert written == 2 and "row 3: the data policy refuses it" in text and "row 4: the data policy refuses it" in text
    assert not policy.check_dataset(tmp_path / "out").denied
