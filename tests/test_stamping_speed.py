"""The cheaper stamping path (watermark on RGB in float32, our own C2PA thumbnail, pixels kept by
file hash) gives files that verify exactly as before, and never trusts a file it did not write."""

from __future__ import annotations

import io
import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stackgan_django import watermark
from stackgan_django.provenance import embed_mark_and_xmp, manifests, sign_generated, sign_review, verify_bytes

KEY = b"test-key-0123456789abcdef0123456"


# The request's fields that go into a manifest (a stored GenerationRequest has them all).
REQUEST = SimpleNamespace(caption="a red apple", public_id="req-1", requested_by_id=None, purpose="editorial", policy_version="v1")


def drawing(seed: int, size: int = 256) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(120, 256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 10, size // 3)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def stamp(image: Image.Image, mark_id: int, model_version) -> bytes:
    png = embed_mark_and_xmp(image, mark_id)
    return sign_generated(png, model_version=model_version, request=REQUEST, decisions=[], mark_id=mark_id)


def active_manifest(data: bytes) -> dict:
    import c2pa

    reader = c2pa.Reader.try_create("image/png", io.BytesIO(data), context=manifests._context(for_signing=False))
    with reader:
        store = json.loads(reader.json())
    return store["manifests"][store["active_manifest"]]


@pytest.mark.parametrize("strength", [1.0, 2.0])
def test_watermark_moves_only_luminance_and_is_found_again(strength):
    image = drawing(1)
    marked = watermark.embed(image, 123456, KEY, strength)
    before = np.asarray(image.convert("YCbCr"), dtype=float)
    after = np.asarray(marked.convert("YCbCr"), dtype=float)
    luma_change = np.abs(after[:, :, 0] - before[:, :, 0])
    assert 0.5 < luma_change.mean() <= strength + 1.5
    # Chroma stays (rounding and clipping at the gamut's edge aside).
    assert np.abs(after[:, :, 1:] - before[:, :, 1:]).mean() < 0.5
    assert watermark.detect(marked, KEY).mark_id == 123456
    assert not watermark.detect(image, KEY).found
    assert np.array_equal(np.asarray(marked), watermark.embed_array(np.asarray(image), 123456, KEY, strength))


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8, 3), np.float32)])
def test_embed_array_refuses_what_is_not_rgb_bytes(bad):
    with pytest.raises(ValueError, match="uint8 RGB"):
        watermark.embed_array(bad, 1, KEY)


def test_signed_file_carries_our_thumbnail_and_verifies_as_before(active_model):
    signed = stamp(drawing(2), 777, active_model)
    manifest = active_manifest(signed)
    assert manifest["thumbnail"]["format"] == "image/jpeg"
    in_process = verify_bytes(signed).to_dict()
    manifests.reset_cache()  # as another process would see it: decoded from the bytes
    from_bytes = verify_bytes(signed).to_dict()
    assert in_process["state"] == from_bytes["state"] == "Trusted"
    assert in_process["watermark"] == from_bytes["watermark"]
    assert from_bytes["watermark"]["mark_id"] == 777


def test_the_kept_pixels_never_vouch_for_changed_bytes(active_model):
    signed = stamp(drawing(3), 4242, active_model)
    # Change the pixels and re-encode: a different file with the manifest gone; another file whose
    # pixels differ but whose bytes were never written here must be decoded, not looked up.
    changed = Image.open(io.BytesIO(signed)).convert("RGB")
    changed.paste((0, 0, 0), (0, 0, 256, 128))
    buffer = io.BytesIO()
    changed.save(buffer, "PNG")
    report = verify_bytes(buffer.getvalue())
    assert report.state == "No manifest"
    # Flip one byte inside the image data of the signed file: the hash differs, the C2PA hash check fails.
    tampered = bytearray(signed)
    idat = bytes(tampered).index(b"IDAT")
    tampered[idat + 200] ^= 0xFF
    assert verify_bytes(bytes(tampered)).state == "Invalid"


def test_review_signature_gets_a_thumbnail_from_the_stored_file(active_model):
    signed = stamp(drawing(4), 99, active_model)
    manifests.reset_cache()  # the reviewer's process never saw the pixels
    approved = sign_review(signed, asset_public_id="a-1", decision="approve", reviewer="rev", note="ok")
    assert active_manifest(approved)["thumbnail"]["format"] == "image/jpeg"
    assert verify_bytes(approved).state == "Trusted"


def test_recent_images_are_bounded():
    recent = manifests._RecentImages(capacity=3)
    entries = [(bytes([i]) * 10, manifests._Pixels(Image.new("RGB", (2, 2)))) for i in range(5)]
    for data, pixels in entries:
        recent.remember(data, pixels)
    assert recent.lookup(entries[0][0]) is None and recent.lookup(entries[1][0]) is None
    assert all(recent.lookup(data) is pixels for data, pixels in entries[2:])


@pytest.mark.parametrize("size", [(256, 256), (64, 48), (1, 1)])
def test_our_png_encoder_is_lossless_and_carries_the_xmp(size):
    from stackgan_django.provenance import png

    rng = np.random.default_rng(size[0])
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    data = png.encode_rgb(pixels, [png.itxt("XML:com.adobe.xmp", "<x:xmpmeta>\u00e9</x:xmpmeta>")])
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        assert image.format == "PNG" and image.mode == "RGB" and image.size == size
        assert np.array_equal(np.asarray(image), pixels)
        assert image.text["XML:com.adobe.xmp"] == "<x:xmpmeta>\u00e9</x:xmpmeta>"
    with pytest.raises(ValueError):
        png.encode_rgb(pixels.astype(np.float32))


def test_a_stamped_file_keeps_the_marked_pixels_and_the_digital_source_type():
    image = drawing(3)
    data = embed_mark_and_xmp(image, 4242)
    with Image.open(io.BytesIO(data)) as decoded:
        decoded.load()
        assert manifests.DIGITAL_SOURCE_TYPE in decoded.text["XML:com.adobe.xmp"]
        pixels = decoded.convert("RGB")
    assert np.array_equal(np.asarray(pixels), np.asarray(manifests._recent_images().lookup(data).image))
    assert watermark.detect(pixels, manifests.watermark_key()).mark_id == 4242


# -- the check after signing (STACKGAN["VERIFY_AFTER_SIGNING"]) -------------------------------------

def stamp_once(image: Image.Image, mark_id: int, model_version):
    from stackgan_django.provenance import stamp_image

    return stamp_image(image, mark_id=mark_id, model_version=model_version, request=REQUEST, decisions=[])


def without_check_details(report: dict) -> dict:
    return {key: value for key, value in report.items() if key not in ("checked", "message")}


def test_the_first_file_is_verified_in_full_and_the_next_get_a_structural_report_equal_to_it(active_model, settings):
    settings.STACKGAN = {**settings.STACKGAN, "VERIFY_AFTER_SIGNING": "first"}
    manifests.reset_cache()
    first = stamp_once(drawing(5), 501, active_model)
    assert first.report.checked == "full" and first.report.state == "Trusted"
    later = [stamp_once(drawing(6 + i), 502 + i, active_model) for i in range(3)]
    assert all(s.report.checked == "structure" and s.report.state == "Trusted" for s in later)
    manifests.reset_cache()  # the full validation, as another process (the reviewer's) runs it
    for stamped in later:
        full = verify_bytes(stamped.signed).to_dict()
        assert without_check_details(stamped.report.to_dict()) == without_check_details(full)
        assert full["watermark"]["mark_id"] == stamped.mark_id


def test_every_file_is_verified_in_full_when_asked(active_model, settings):
    settings.STACKGAN = {**settings.STACKGAN, "VERIFY_AFTER_SIGNING": "every"}
    manifests.reset_cache()
    assert [stamp_once(drawing(10 + i), 600 + i, active_model).report.checked for i in range(3)] == ["full"] * 3


def test_a_new_certificate_or_an_old_verification_means_a_full_validation_again(active_model, settings, monkeypatch):
    settings.STACKGAN = {**settings.STACKGAN, "VERIFY_AFTER_SIGNING": "first"}
    manifests.reset_cache()
    assert stamp_once(drawing(20), 700, active_model).report.checked == "full"
    assert stamp_once(drawing(21), 701, active_model).report.checked == "structure"
    trusted = manifests._per_process["trusted-signer"]
    trusted.certificate = b"another certificate"  # as if the signer's key and certificate changed
    assert stamp_once(drawing(22), 702, active_model).report.checked == "full"
    assert stamp_once(drawing(23), 703, active_model).report.checked == "structure"
    monkeypatch.setattr(manifests, "FULL_VERIFY_SECONDS", 0.0)
    assert stamp_once(drawing(24), 704, active_model).report.checked == "full"


def test_an_unknown_check_mode_is_a_clear_configuration_error(active_model, settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.STACKGAN = {**settings.STACKGAN, "VERIFY_AFTER_SIGNING": "sometimes"}
    with pytest.raises(ImproperlyConfigured, match="VERIFY_AFTER_SIGNING"):
        stamp_once(drawing(30), 800, active_model)


def test_the_structural_check_refuses_what_is_not_our_signed_image(active_model):
    from stackgan_django.provenance import png as png_encoder
    from stackgan_django.provenance import structure

    image = drawing(40)
    unsigned = embed_mark_and_xmp(image, 900)
    signed = sign_generated(unsigned, model_version=active_model, request=REQUEST, decisions=[], mark_id=900)
    found = structure.check_signed_png(signed, unsigned)
    assert found.assertions["org.stackgan-django.generation"]["watermark_id"] == 900 and found.certificate
    other = embed_mark_and_xmp(drawing(41), 901)
    chunk_start = signed.index(b"caBX") - 4
    chunk_end = chunk_start + 12 + int.from_bytes(signed[chunk_start:chunk_start + 4], "big")
    tampered_pixels = bytearray(signed)
    tampered_pixels[signed.index(b"IDAT") + 300] ^= 0x01
    manifest = signed[chunk_start:chunk_end]
    # A manifest whose claim was changed after signing: one byte of the claim's CBOR.
    claim_at = signed.index(b"c2pa.claim") + 40
    forged_claim = bytearray(signed)
    forged_claim[claim_at] ^= 0x01
    cases = {
        "pixels changed": (bytes(tampered_pixels), unsigned),
        "another image": (signed, other),
        "manifest stripped": (unsigned, unsigned),
        "two manifests": (signed[:chunk_end] + manifest + signed[chunk_end:], unsigned),
        "manifest moved to another image": (other[:chunk_start] + manifest + other[chunk_start:], other),
        "claim changed": (bytes(forged_claim), unsigned),
        "not a PNG": (b"GIF89a" + signed[6:], unsigned),
        "truncated": (signed[: len(signed) // 2], unsigned),
    }
    for name, (data, expected) in cases.items():
        with pytest.raises(structure.StructureError):
            structure.check_signed_png(data, expected)
            pytest.fail(f"accepted: {name}")
    assert png_encoder.SIGNATURE == structure.PNG_SIGNATURE
