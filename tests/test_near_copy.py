"""Near-copy detection: edited copies of indexed images are caught by kind of edit, other images of
the same kind are not, the index file round-trips and fails closed, the shipped index is the new
format, and the output policy runs the site's plugged-in checks (failing ones hold the image back)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from policies import (
    Decision,
    LegacyHashIndex,
    NearCopyIndex,
    NearCopyIndexError,
    Outcome,
    OutputPolicy,
    load_policies,
    perceptual_hash,
)

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("near_copy_robustness", ROOT / "benchmarks" / "near_copy_robustness.py")
robustness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = robustness  # its dataclasses look their module up there
_spec.loader.exec_module(robustness)
EDITS = robustness.EDITS
_spec = importlib.util.spec_from_file_location("near_copy_reference", ROOT / "benchmarks" / "near_copy_reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
POLICY = load_policies().output


def sticker(seed: int, size: int = 256) -> Image.Image:
    """An emoji-like drawing: a few filled shapes in flat colours on white."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, size - 8, size - 8), fill=tuple(int(v) for v in rng.integers(60, 255, 3)))
    for _ in range(5):
        x, y = (int(v) for v in rng.integers(30, size - 90, 2))
        w, h = (int(v) for v in rng.integers(20, 80, 2))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        if rng.random() < 0.5:
            draw.rectangle((x, y, x + w, y + h), fill=colour)
        else:
            draw.polygon([(x, y + h), (x + w // 2, y), (x + w, y + h)], fill=colour)
    return image


TRAINING = [(f"train-{i}.png", sticker(i)) for i in range(40)]
INDEX = NearCopyIndex.build(TRAINING)


@pytest.fixture(scope="module")
def planted() -> dict[str, list[bool]]:
    """Each kind of edit applied to 8 training images: caught, and matched to the right image?"""
    rng = np.random.default_rng(7)
    results: dict[str, list[bool]] = {}
    for kind, edit in EDITS.items():
        results[kind] = []
        for name, image in TRAINING[:8]:
            hit = [d for d in POLICY.check_image(edit(image, rng), INDEX).decisions if d.rule_id == "output.near_copy"]
            results[kind].append(bool(hit) and hit[0].evidence["training_item"] == name)
    return results


def test_planted_near_copies_are_caught_at_least_95_percent(planted):
    caught = [hit for hits in planted.values() for hit in hits]
    assert sum(caught) / len(caught) >= 0.95, {kind: sum(hits) for kind, hits in planted.items()}


@pytest.mark.parametrize("kind", list(EDITS))
def test_every_kind_of_small_edit_is_caught_most_of_the_time(planted, kind):
    # The combined edits (shift + brightness + downscale) sit closest to the thresholds.
    assert sum(planted[kind]) >= 6, f"{kind}: {sum(planted[kind])}/8 caught"


def test_other_images_of_the_same_kind_are_not_near_copies():
    alarms = [seed for seed in range(1000, 1040)
              if "output.near_copy" in [d.rule_id for d in POLICY.check_image(sticker(seed), INDEX).decisions]]
    assert alarms == []


@pytest.mark.parametrize("kind", ["identical", "mirror", "crop 10%", "shift 12 px", "jpeg q40", "resize to 64",
                                  "shift 12 px + brightness +15% + resize 128"])
def test_the_vectorised_search_finds_what_the_previous_search_found(kind):
    """The search was rewritten for speed (batched FFTs, one array operation per alignment, the query
    resampled once): it must still find the same image, orientation and alignment, with scores within
    rounding of the previous loop's (benchmarks/near_copy_reference.py)."""
    rng = np.random.default_rng(5)
    slow = reference.ReferenceNearCopyIndex.of(INDEX)
    for name, image in TRAINING[:6] + [("unrelated", sticker(2000))]:
        query = EDITS[kind](image, rng)
        new, old = INDEX.nearest(query), slow.nearest(query)
        assert (new.name, new.scale, new.offset) == (old.name, old.scale, old.offset), (name, new, old)
        assert new.mirrored == old.mirrored or name == "unrelated"
        assert abs(new.similarity - old.similarity) < 2e-3 and abs(new.detail - old.detail) < 5e-3, (name, new, old)


def decisions_of(verdict) -> list[tuple]:
    return [(d.outcome, d.rule_id, d.message, d.evidence) for d in verdict.decisions]


def test_a_batch_decides_exactly_as_one_image_at_a_time():
    """The worker checks a whole batch at once (check_images, nearest_many); every image must get
    the decisions, evidence included, that it gets alone, whatever else is in the batch and in
    whatever order: planted copies of each kind, unrelated drawings, a flat image (no usable query),
    a small image, near and far from the early-stop margin."""
    rng = np.random.default_rng(11)
    images = [EDITS[kind](TRAINING[i % 8][1], rng) for i, kind in enumerate(EDITS)]
    images += [sticker(seed) for seed in range(3000, 3006)]
    images += [Image.new("RGB", (256, 256), (40, 120, 200)), sticker(7).resize((96, 96)), TRAINING[9][1]]
    alone = [POLICY.check_image(image, INDEX) for image in images]
    assert any(v.denied for v in alone) and any(not v.decisions for v in alone)  # both kinds are in it
    together = POLICY.check_images(images, INDEX)
    assert [decisions_of(v) for v in together] == [decisions_of(v) for v in alone]
    order = rng.permutation(len(images))
    shuffled = POLICY.check_images([images[i] for i in order], INDEX)
    assert [decisions_of(v) for v in shuffled] == [decisions_of(alone[i]) for i in order]
    # The raw matches too, their scores to float32 rounding: BLAS sums a matrix product in an order
    # that depends on its shape (and on its thread count, which other tests may have set), so the
    # last bits of a correlation may differ between a batch and one image; the decisions above may not.
    batch = INDEX.nearest_many([images[i] for i in order], verify_from=0.65)
    one_by_one = [INDEX.nearest(images[i], verify_from=0.65) for i in order]
    for found, expected in zip(batch, one_by_one, strict=True):
        assert (found is None) == (expected is None)
        if found is not None:
            assert (found.name, found.mirrored, found.scale, found.offset, found.verified) == \
                (expected.name, expected.mirrored, expected.scale, expected.offset, expected.verified)
            for field in ("similarity", "detail", "coarse"):
                assert getattr(found, field) == pytest.approx(getattr(expected, field), abs=1e-5), field
    assert POLICY.check_images([], INDEX) == [] and INDEX.nearest_many([]) == []
    legacy = NearCopyIndex.from_json({"algorithm": "phash-dct-64",
                                      "items": [[n, f"{perceptual_hash(im):016x}"] for n, im in TRAINING[:5]]})
    assert ([decisions_of(v) for v in POLICY.check_images(images[:6], legacy)]
            == [decisions_of(POLICY.check_image(image, legacy)) for image in images[:6]])


def test_the_search_stops_early_only_when_the_colour_layout_is_far_off():
    unrelated = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(unrelated).rectangle((20, 100, 236, 150), fill=(0, 90, 200))
    early = INDEX.nearest(unrelated, verify_from=0.9)
    assert early.verified is False and early.detail == 0.0 and early.similarity < 0.9
    assert not POLICY.is_near_copy(early)
    full = INDEX.nearest(unrelated)
    assert full.verified is True and full.coarse <= early.similarity  # early: the best coarse alignment of all
    # A planted copy is verified whatever the margin, and the policy's decision is the full search's.
    copy = EDITS["crop 10% resized back"](TRAINING[4][1], np.random.default_rng(1))
    assert INDEX.nearest(copy, verify_from=0.7).verified
    assert POLICY.check_image(copy, INDEX).decisions[0].evidence["training_item"] == TRAINING[4][0]


def test_the_match_says_how_the_copy_was_edited():
    name, image = TRAINING[3]
    decision = POLICY.check_image(EDITS["mirror"](image, None), INDEX).decisions[0]
    assert decision.evidence["training_item"] == name and decision.evidence["mirrored"] is True
    assert decision.evidence["similarity"] >= decision.evidence["minimum"]


def test_index_round_trips_through_json_and_folder(tmp_path):
    INDEX.save(tmp_path / "near_copies.json")
    loaded = NearCopyIndex.load(tmp_path)
    assert loaded.names == INDEX.names and np.array_equal(loaded.thumbnails, INDEX.thumbnails)
    assert NearCopyIndex.load(tmp_path / "elsewhere") is None  # a checkpoint without an index


@pytest.mark.parametrize("kind", ["greyscale", "greyscale + crop 8% + jpeg q70"])
def test_copies_drained_of_colour_are_caught_in_grey(kind):
    """The colour search cancels brightness and tint (per-channel offsets and scales) but not the
    loss of colour; the search in grey finds such copies, and only because the image is far less
    colourful than its match (a colourful image is never judged in grey)."""
    never = {**POLICY.config["near_copy"], "min_luminance_similarity": 2.0, "min_local_inliers": 10**6}
    colour_only = OutputPolicy({**POLICY.config, "near_copy": never}, "the search in grey switched off")
    rng = np.random.default_rng(3)
    caught = by_colour_alone = 0
    for name, image in TRAINING[:8]:
        edited = EDITS[kind](image, rng)
        decision = next((d for d in POLICY.check_image(edited, INDEX).decisions if d.rule_id == "output.near_copy"), None)
        caught += decision is not None and decision.evidence["training_item"] == name
        by_colour_alone += colour_only.check_image(edited, INDEX).denied
    assert caught >= 6 and by_colour_alone < caught, (caught, by_colour_alone)


def test_a_colourful_image_is_never_judged_in_grey():
    """Drawings that differ by colour alone look alike in grey; an image as colourful as the
    training image it resembles in grey is left to the colour search."""
    name, image = TRAINING[4]
    recoloured = Image.fromarray(np.asarray(image)[:, :, ::-1])  # the channels swapped: as colourful
    assert INDEX.nearest_luminance_many([recoloured]) == [None]
    greyscale = EDITS["greyscale"](image, None)
    match = INDEX.nearest_luminance_many([greyscale])[0]
    assert match is not None and match.name == name and match.compared == "luminance"


TURNS_AND_MARGINS = {
    "turned 3 degrees": lambda image: image.rotate(3, resample=Image.Resampling.BICUBIC, fillcolor="white"),
    "turned -8 degrees": lambda image: image.rotate(-8, resample=Image.Resampling.BICUBIC, fillcolor="white"),
    "zoomed out 12% onto white": lambda image: robustness.zoom_out(image, 0.12),
    "zoomed out 22% onto white": lambda image: robustness.zoom_out(image, 0.22),
}


@pytest.mark.parametrize("kind", list(TURNS_AND_MARGINS))
def test_turned_and_framed_copies_are_caught_and_say_what_was_undone(kind):
    """A copy turned a few degrees or zoomed out onto a margin: the search alone does not undo
    these (scale only enlarges, no turn at all); the query turned back or cropped does."""
    never = {**POLICY.config["near_copy"], "reframe_from": 2.0, "min_local_inliers": 10**6}
    without = OutputPolicy({**POLICY.config, "near_copy": never}, "no turn or margin undone")
    caught = by_search_alone = 0
    for name, image in TRAINING[:8]:
        edited = TURNS_AND_MARGINS[kind](image)
        decision = next((d for d in POLICY.check_image(edited, INDEX).decisions if d.rule_id == "output.near_copy"), None)
        if decision is not None and decision.evidence["training_item"] == name:
            caught += 1
            assert decision.evidence["similarity"] >= decision.evidence["minimum"]
            if "undone" in decision.evidence:
                assert decision.evidence["undone"].startswith(("turned", "framed")), decision.evidence
        by_search_alone += any(d.rule_id == "output.near_copy" and d.evidence["training_item"] == name
                               for d in without.check_image(edited, INDEX).decisions)
    assert caught >= 7 and by_search_alone < caught, (kind, caught, by_search_alone)


def test_turning_and_cropping_the_query_raises_no_false_alarm():
    # Other drawings of the same kind, searched with every turn and margin whatever their layout.
    found = INDEX.nearest_reframed_many([sticker(seed) for seed in range(1000, 1040)], verify_from=0.7)
    alarms = [match for match in found if POLICY.is_near_copy(match)]
    assert alarms == []


def test_only_images_close_to_a_training_image_are_turned_and_cropped(monkeypatch):
    """The search with turns and margins costs about as much as the search itself: an image whose
    8x8 layout, turned back or cropped, is far from every training image (the shipped model's
    images, as a rule) never pays it, nor does one the search flagged already."""
    searched: list[Image.Image] = []
    original = NearCopyIndex._nearest_reframed

    def counting(self, rgb, rows, verify_from):
        searched.append(rgb)
        return original(self, rgb, rows, verify_from)

    monkeypatch.setattr(NearCopyIndex, "_nearest_reframed", counting)
    unrelated = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(unrelated).rectangle((20, 100, 236, 150), fill=(0, 90, 200))
    POLICY.check_images([unrelated, TRAINING[2][1]], INDEX)  # far off, and an exact copy (flagged at once)
    assert searched == []
    POLICY.check_images([unrelated, TURNS_AND_MARGINS["turned -8 degrees"](TRAINING[2][1])], INDEX)
    assert len(searched) == 1


QUARTER_TURNS_AND_RECOLOURINGS = {
    "upside down": (lambda image: image.transpose(Image.Transpose.ROTATE_180), "turned"),
    "on its side": (lambda image: image.transpose(Image.Transpose.ROTATE_90), "turned"),
    "flipped top to bottom": (lambda image: image.transpose(Image.Transpose.FLIP_TOP_BOTTOM), "turned"),
    "on its side, cropped 6% and re-encoded": (
        lambda image: robustness.jpeg(image.transpose(Image.Transpose.ROTATE_270).crop((8, 8, 248, 248)), 80), "turned"),
    "hue turned 60 degrees": (lambda image: robustness.hue(image, 43), "hue turned"),
    "hue turned 180 degrees": (lambda image: robustness.hue(image, 128), "hue turned"),
    "hue turned 100 degrees, mirrored": (lambda image: robustness.mirror(robustness.hue(image, 71)), "hue turned"),
    "colours inverted": (lambda image: ImageOps.invert(image), "colours inverted"),
    "red and blue swapped": (lambda image: Image.merge("RGB", image.split()[::-1]), "red and blue swapped back"),
    "green and blue swapped, re-encoded": (lambda image: robustness.jpeg(Image.merge(
        "RGB", [image.split()[i] for i in (0, 2, 1)]), 80), "green and blue swapped back"),
}


@pytest.mark.parametrize("kind", list(QUARTER_TURNS_AND_RECOLOURINGS))
def test_copies_turned_over_or_recoloured_are_caught_and_say_what_was_undone(kind):
    """A copy laid down another way (upside down, on its side, flipped top to bottom) or with its
    colours turned (hues round the wheel, inverted) keeps the drawing; the search alone misses most
    of them, the query turned back (or its colours turned back) does not."""
    edit, undone = QUARTER_TURNS_AND_RECOLOURINGS[kind]
    never = {**POLICY.config["near_copy"], "reframe_from": 2.0, "recolour_from": 2.0, "min_local_inliers": 10**6}
    without = OutputPolicy({**POLICY.config, "near_copy": never}, "nothing turned back")
    caught = by_search_alone = 0
    for name, image in TRAINING[:8]:
        edited = edit(image)
        decision = next((d for d in POLICY.check_image(edited, INDEX).decisions if d.rule_id == "output.near_copy"), None)
        if decision is not None and decision.evidence["training_item"] == name:
            caught += 1
            assert decision.evidence["similarity"] >= decision.evidence["minimum"]
            if "undone" in decision.evidence:
                assert decision.evidence["undone"].startswith(undone), decision.evidence
            if undone != "turned" and "undone" in decision.evidence:
                # Colours turned back: held to the grey search's stricter thresholds.
                assert decision.evidence["compared"] == "recoloured"
                assert decision.evidence["minimum"] == POLICY.min_luminance_similarity
        by_search_alone += any(d.rule_id == "output.near_copy" and d.evidence["training_item"] == name
                               for d in without.check_image(edited, INDEX).decisions)
    assert caught >= 7 and by_search_alone < caught, (kind, caught, by_search_alone)


def test_turning_colours_back_raises_no_false_alarm():
    # Other drawings of the same kind, every colour turn searched whatever its layout's agreement.
    found = INDEX.nearest_recoloured_many([sticker(seed) for seed in range(1000, 1040)], verify_from=0.7)
    assert all(match is None or match.compared == "recoloured" for match in found)
    assert [match for match in found if POLICY.is_near_copy(match)] == []


def test_the_colour_turn_gate_is_the_layout_turned_about_the_grey_axis():
    """The gate's three products stand for every turn: each turn's agreement equals turning the
    query's centred 8x8 colours about the grey axis (and negating them, for the inversion) and
    comparing with the whole index directly."""
    from policies.near_copy import COARSE, GRID, RECOLOUR_HUE_TURNS, _centre, _grey_axis_turn, thumbnail

    images = [sticker(seed) for seed in range(2000, 2006)] + [robustness.hue(TRAINING[3][1], 60)]
    thumbs = np.stack([thumbnail(image) for image in images])
    _, per_turn = INDEX._recoloured_candidates(thumbs)
    centred = _centre(thumbs.reshape(len(images), COARSE, GRID // COARSE, COARSE, GRID // COARSE, 3).mean(axis=(2, 4)))
    for number, layout in enumerate([-centred] + [centred @ _grey_axis_turn(angle).T for angle in RECOLOUR_HUE_TURNS]):
        both = np.concatenate([layout, layout[:, :, ::-1]]).reshape(2 * len(images), -1)
        direct = (INDEX._coarse @ both.T).reshape(len(INDEX), 2, len(images)).max(axis=(0, 1))
        np.testing.assert_allclose(per_turn[:, number], direct, atol=1e-5)
    # A red drawn yellow by HSV is found nearest the linear turn by the same angle's neighbourhood.
    red = Image.new("RGB", (1, 1), (255, 0, 0))
    turned = np.asarray(robustness.hue(red, 43), dtype=np.float32).ravel()
    linear = (np.array([255.0, 0, 0]) - 85) @ _grey_axis_turn(60).T + 85
    assert np.corrcoef(turned, linear)[0, 1] > 0.99


def test_only_images_whose_colours_could_turn_into_a_training_image_are_searched(monkeypatch):
    searched: list[Image.Image] = []
    original = NearCopyIndex._nearest_recoloured

    def counting(self, rgb, rows, turns, verify_from):
        searched.append(rgb)
        return original(self, rgb, rows, turns, verify_from)

    monkeypatch.setattr(NearCopyIndex, "_nearest_recoloured", counting)
    unrelated = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(unrelated).rectangle((20, 100, 236, 150), fill=(0, 90, 200))
    POLICY.check_images([unrelated, TRAINING[2][1]], INDEX)  # far off, and an exact copy (flagged at once)
    assert searched == []
    POLICY.check_images([unrelated, robustness.hue(TRAINING[2][1], 100)], INDEX)
    assert len(searched) == 1


def test_crops_of_one_side_are_caught_whether_or_not_stretched_back():
    """10% off one side leaves an image of another aspect; laid on a square it is a margin and a
    shift the search undoes. Stretched back to a square, it is squeezed back by the turned/framed
    stage. Either way the match names the right image."""
    rng = np.random.default_rng(21)
    for stretched in (False, True):
        caught = 0
        for name, image in TRAINING[:8]:
            edited = robustness.crop_side(image, 0.10, rng)
            if stretched:
                edited = edited.resize(image.size, Image.Resampling.BICUBIC)
            decision = next((d for d in POLICY.check_image(edited, INDEX).decisions if d.rule_id == "output.near_copy"), None)
            caught += decision is not None and decision.evidence["training_item"] == name
        assert caught >= 7, (stretched, caught)


def framed_sticker(seed: int, size: int = 256) -> Image.Image:
    """A drawing that fills its frame, as a flag or a sign does: coloured bands edge to edge, round
    shapes on them."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    bands = int(rng.integers(2, 4))
    for band in range(bands):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        start, end = band * size // bands, (band + 1) * size // bands
        draw.rectangle((start, 0, end, size) if seed % 2 else (0, start, size, end), fill=colour)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(30, size - 90, 2))
        width = int(rng.integers(30, 80))
        draw.ellipse((x, y, x + width, y + width), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image


def test_a_stretched_crop_of_a_drawing_that_fills_its_frame_is_caught():
    """10% cut off one side of a flag and stretched back: squeezed back onto white, the strip the
    crop took is white where the flag was coloured, and the layout gate turned most such copies
    away (11 of these 16 caught with the white fill alone); the squeezed image's own edge carried
    across the strip restores the layout."""
    flags = [(f"flag-{number}.png", framed_sticker(100 + number)) for number in range(16)]
    index = NearCopyIndex.build(TRAINING + flags)
    rng = np.random.default_rng(21)
    caught = 0
    for name, image in flags:
        edited = robustness.crop_side(image, 0.10, rng).resize(image.size, Image.Resampling.BICUBIC)
        decision = next((d for d in POLICY.check_image(edited, index).decisions if d.rule_id == "output.near_copy"), None)
        caught += decision is not None and decision.evidence["training_item"] == name
    assert caught >= 13, caught


def test_a_training_image_that_is_not_square_is_indexed_as_the_model_sees_it():
    """The model trains on images squeezed to a square, so a memorised copy of a wide image comes
    out squeezed: that is what the index keeps (a query that is not square is laid on a square; a
    generated image is square, so it is compared as it is)."""
    wide = sticker(4100).resize((256, 192), Image.Resampling.BICUBIC)
    index = NearCopyIndex.build([("wide.png", wide), *TRAINING[:10]])
    as_generated = wide.resize((256, 256), Image.Resampling.BICUBIC)
    decision = next(d for d in POLICY.check_image(as_generated, index).decisions if d.rule_id == "output.near_copy")
    assert decision.evidence["training_item"] == "wide.png" and "undone" not in decision.evidence


REPAINTINGS = {
    "background blue": (lambda image, rng: robustness.background(image, (40, 60, 200)), "background turned white"),
    "background at random": (lambda image, rng: robustness.background(image, robustness.random_background(rng)),
                             "background turned white"),
    "background dark, re-encoded": (lambda image, rng: robustness.jpeg(robustness.background(image, (30, 30, 30)), 80),
                                    "background turned white"),
    "sepia": (lambda image, rng: robustness.sepia(image), "tint taken away"),
    "sepia, re-encoded": (lambda image, rng: robustness.jpeg(robustness.sepia(image), 80), "tint taken away"),
    "vignette": (lambda image, rng: robustness.vignette(image, 0.3), "vignette lifted"),
    "vignette, re-encoded": (lambda image, rng: robustness.jpeg(robustness.vignette(image, 0.2), 80), "vignette lifted"),
    "greyscale, brightened 25%": (lambda image, rng: ImageEnhance.Brightness(ImageOps.grayscale(image).convert("RGB"))
                                  .enhance(1.25), "brightened"),
    # On these stickers the grey search already catches most duotones (muted, drained of colour).
    "duotone": (lambda image, rng: robustness.duotone(image, rng), ""),
}


@pytest.mark.parametrize("kind", list(REPAINTINGS))
def test_copies_on_a_new_background_or_tinted_are_caught_and_say_what_was_undone(kind):
    """A copy whose white background was filled with a colour, which was tinted (sepia, a duotone)
    or darkened towards the corners (a vignette) keeps the drawing; the searches before miss most of
    them, the query with its background turned white, its tint taken away or its vignette lifted
    does not, under the grey search's thresholds."""
    edit, undone = REPAINTINGS[kind]
    never = {**POLICY.config["near_copy"], "recolour_from": 2.0, "min_local_inliers": 10**6}
    without = OutputPolicy({**POLICY.config, "near_copy": never}, "nothing repainted")
    rng = np.random.default_rng(11)
    caught = by_others = 0
    for name, image in TRAINING[:8]:
        edited = edit(image, rng)
        decision = next((d for d in POLICY.check_image(edited, INDEX).decisions if d.rule_id == "output.near_copy"), None)
        if decision is not None and decision.evidence["training_item"] == name:
            caught += 1
            if decision.evidence.get("undone", "").startswith(undone or "-"):
                assert decision.evidence["minimum"] == POLICY.min_luminance_similarity
                assert decision.evidence["compared"] == ("luminance" if undone == "tint taken away" else "recoloured")
        by_others += any(d.rule_id == "output.near_copy" and d.evidence["training_item"] == name
                         for d in without.check_image(edited, INDEX).decisions)
    assert caught >= 7 and (by_others < caught or not undone), (kind, caught, by_others)


def test_repainting_back_raises_no_false_alarm():
    """Other drawings of the same kind, on new backgrounds and tinted, every one searched whatever
    its layout's agreement: none is a near-copy."""
    rng = np.random.default_rng(5)
    others = [sticker(seed) for seed in range(3000, 3030)]
    edited = ([robustness.background(image, robustness.random_background(rng)) for image in others[:10]]
              + [robustness.sepia(image) for image in others[10:20]] + [robustness.duotone(image, rng) for image in others[20:]])
    found = INDEX.nearest_repainted_many(edited, verify_from=0.7)
    assert [match for match in found if POLICY.is_near_copy(match)] == []


def test_only_images_with_a_coloured_background_or_a_muted_tint_are_repainted(monkeypatch):
    from policies.near_copy import background_colour, is_tinted, least_clipped_channel, thumbnail

    searched: list[str] = []
    original = NearCopyIndex._best_undone

    def counting(self, rows, tried, verify_from):
        searched.extend(undone for undone, _, _ in tried)
        return original(self, rows, tried, verify_from)

    monkeypatch.setattr(NearCopyIndex, "_best_undone", counting)
    unrelated = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(unrelated).rectangle((20, 100, 236, 150), fill=(0, 90, 200))
    # White backgrounds and colourful, and an exact copy (flagged at once, never repainted).
    POLICY.check_images([unrelated, sticker(4000), TRAINING[2][1]], INDEX)
    assert searched == []
    # A bold drawing of one hue (a red flag) is not a tint: in grey such drawings look alike.
    flag = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(flag).rectangle((16, 64, 240, 192), fill=(220, 30, 40))
    assert not is_tinted(thumbnail(flag))
    sepia = robustness.sepia(TRAINING[2][1])
    assert is_tinted(thumbnail(sepia)) and least_clipped_channel(thumbnail(sepia)) == 2  # sepia's blue is never clipped
    assert background_colour(thumbnail(robustness.background(TRAINING[2][1], (40, 60, 200)))) is not None
    assert background_colour(thumbnail(TRAINING[2][1])) is None
    INDEX.nearest_repainted_many([sepia, robustness.background(TRAINING[2][1], (40, 60, 200))])
    # The background both ways: every pixel of its colour, and only what is joined to the border.
    assert searched.count("tint taken away") == 1 and searched.count("background turned white") == 2


@pytest.mark.parametrize("content", [
    "not json", json.dumps({"format": "something-else"}), json.dumps([1, 2]),
    json.dumps({**INDEX.to_json(), "count": 3}), json.dumps({**INDEX.to_json(), "thumbnails": "@@@"}),
])
def test_a_damaged_index_fails_closed_with_a_clear_error(tmp_path, content):
    (tmp_path / "near_copies.json").write_text(content)
    with pytest.raises(NearCopyIndexError):
        NearCopyIndex.load(tmp_path)


def test_the_old_phash_index_format_still_reads():
    legacy = {"algorithm": "phash-dct-64", "items": [[n, f"{perceptual_hash(im):016x}"] for n, im in TRAINING[:5]]}
    index = NearCopyIndex.from_json(legacy)
    assert isinstance(index, LegacyHashIndex)
    verdict = POLICY.check_image(TRAINING[2][1], index)
    assert verdict.denied and verdict.decisions[0].evidence["training_item"] == TRAINING[2][0]


def test_the_shipped_index_is_the_new_format_and_small():
    path = ROOT / "models" / "default" / "near_copies.json"
    assert path.stat().st_size < 20_000_000  # thumbnails ~3 MB, local features ~12 MB (README)
    index = NearCopyIndex.load(path.parent)
    assert isinstance(index, NearCopyIndex) and index.local is not None and len(index.local) == len(index)
    lineage = json.loads((path.parent / "lineage.json").read_text())
    assert len(index) == sum(d["items_used"] for d in lineage["datasets"])


def test_plugged_in_checks_run_and_a_failing_one_holds_the_image_back():
    def too_red(image):
        r, g, b = np.asarray(image, dtype=float).mean(axis=(0, 1))
        return [Decision(Outcome.REVIEW, "site.too_red", "Mostly red.")] if r > g + b else []

    def broken(image):
        raise RuntimeError("classifier offline")

    red = Image.new("RGB", (64, 64), (250, 10, 10))
    ImageDraw.Draw(red).ellipse((10, 10, 40, 40), fill=(200, 0, 0))
    policy = OutputPolicy({}, "v").with_checks([too_red])
    assert "site.too_red" in [d.rule_id for d in policy.check_image(red).decisions]
    failed = policy.with_checks([broken]).check_image(sticker(1))
    assert failed.denied and failed.decisions[-1].rule_id == "output.check_failed"
    assert "classifier offline" in failed.decisions[-1].message
    with pytest.raises(TypeError):
        OutputPolicy({}, "v", ["not.callable"])


def test_the_output_policy_runs_with_the_previous_search_as_the_speed_benchmark_uses_it():
    """benchmarks/policy_speed.py times the output policy with the previous search as its baseline;
    the policy calls the batch path (nearest_many), which the reference must serve from its own
    search, deciding as the current search does on a planted copy and an unrelated drawing."""
    slow = reference.ReferenceNearCopyIndex.of(INDEX)
    # A turned copy reaches the search with the query turned back, which runs the current search.
    for image in (TRAINING[3][1].transpose(Image.Transpose.FLIP_LEFT_RIGHT), sticker(4001),
                  TURNS_AND_MARGINS["turned -8 degrees"](TRAINING[5][1])):
        assert decisions_of(POLICY.check_image(image, slow)) == decisions_of(POLICY.check_image(image, INDEX))


# -- copies used as part of a larger picture: the local-feature search ------------------------------

def _beside(image: Image.Image, other: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (image.width * 2, image.height), "white")
    canvas.paste(other, (0, 0))
    canvas.paste(image, (image.width, 0))
    return canvas


def _in_a_grid(image: Image.Image, other: Image.Image) -> Image.Image:
    canvas = Image.new("RGB", (image.width * 2, image.height * 2), "white")
    for place, tile in zip([(0, 0), (image.width, 0), (0, image.height), (image.width, image.height)],
                           [other, other.transpose(Image.Transpose.FLIP_LEFT_RIGHT), image, other.rotate(90)]):
        canvas.paste(tile, place)
    return canvas


def _under_a_sticker(image: Image.Image) -> Image.Image:
    covered = image.copy()
    side = image.width
    ImageDraw.Draw(covered).ellipse((side * 0.62, side * 0.05, side * 0.95, side * 0.38), fill=(250, 40, 160))
    return covered


def _in_a_window(image: Image.Image) -> Image.Image:
    """A screenshot: a title bar, a grey sidebar with lines of 'text', the drawing in the middle."""
    canvas = Image.new("RGB", (640, 420), (236, 236, 236))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, 640, 28), fill=(60, 60, 70))
    for row in range(8):
        draw.rectangle((16, 50 + row * 30, 150, 60 + row * 30), fill=(120, 120, 130))
    canvas.paste(image.resize((300, 300)), (250, 70))
    return canvas


INSIDE_OTHER_PICTURES = {
    "beside another drawing": lambda image, other: _beside(image, other),
    "in a 2x2 grid": lambda image, other: _in_a_grid(image, other),
    "turned 30 degrees": lambda image, other: image.rotate(30, resample=Image.Resampling.BICUBIC, expand=True,
                                                         fillcolor="white"),
    "under a sticker in a corner": lambda image, other: _under_a_sticker(image),
    "a fifth cropped away on two sides": lambda image, other: image.crop((0, 51, 205, 256)),
    "cropped to 16:9": lambda image, other: image.crop((0, 56, 256, 200)),
    "in a screenshot": lambda image, other: _in_a_window(image),
}


@pytest.mark.parametrize("kind", list(INSIDE_OTHER_PICTURES))
def test_copies_inside_other_pictures_are_caught_by_their_local_features(kind):
    """An attacker's probe found these passing the whole-picture searches (0 of 40 each); the
    local-feature search finds the drawing among the rest, names it and says how sure it is."""
    caught = 0
    for number, (name, image) in enumerate(TRAINING[:8]):
        edited = INSIDE_OTHER_PICTURES[kind](image, sticker(2000 + number))  # the other drawing is not in the index
        found = [d for d in POLICY.check_image(edited, INDEX).decisions if d.rule_id == "output.near_copy"]
        if found and found[0].evidence["training_item"] == name:
            caught += 1
            if found[0].evidence.get("compared") == "local features":
                evidence = found[0].evidence
                assert evidence["inliers"] >= evidence["minimum_inliers"]
                assert evidence["agreement"] >= evidence["minimum_agreement"] and evidence["visible"] >= evidence["minimum_visible"]
    assert caught >= 6, (kind, caught)


def test_the_local_search_raises_no_false_alarm_on_drawings_beside_each_other():
    """Other drawings of the same kind, alone and side by side: shapes they share (the disc every
    one of them has) are ambiguous between training images and count for none."""
    others = [sticker(seed) for seed in range(1000, 1040)]
    pictures = others + [_beside(a, b) for a, b in zip(others[::2], others[1::2])]
    alarms = [POLICY.is_local_copy(found) for found in INDEX.nearest_local_many(pictures)]
    assert not any(alarms)


def test_an_index_without_local_features_still_reads_and_searches_as_before(tmp_path):
    old = NearCopyIndex.build(TRAINING[:10], local_features=False)
    (tmp_path / "near_copies.json").write_text(json.dumps(old.to_json()))
    loaded = NearCopyIndex.load(tmp_path)
    assert loaded.local is None and loaded.nearest_local_many([TRAINING[0][1]]) == [None]
    assert "output.near_copy" in [d.rule_id for d in POLICY.check_image(TRAINING[0][1], loaded).decisions]
