"""C2PA provenance, the watermark, verification and the signers."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from policies import Verdict
from stackgan_django import provenance, services, watermark
from stackgan_django.models import Asset
from stackgan_django.provenance import manifests, review_note_matches
from stackgan_django.provenance.signers import PemFileSigner, SignerConfigurationError, make_development_ca


def picture(seed=0, size=64):
    """A small illustration (shapes on a tinted background), like what the generator draws."""
    import random

    from PIL import ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randrange(180, 256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(5):
        x, y, r = rng.randrange(size), rng.randrange(size), rng.randrange(size // 8, size // 3)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


@pytest.fixture
def generated_asset(db, active_model, no_broker, users):
    request = services.submit_request(caption="a red apple with a green leaf", num_images=1, user=users[0])
    services.start_request(request.pk)
    output = services.GeneratedOutput(0, request.seed, picture(size=256), Verdict("output", "v"))
    output = services.stamp_output(request, output)
    return services.finish_request(request.pk, [output], 0.1)[0]


def read_in_another_process(path, anchor_path):
    """c2pa-python's own Reader, in a fresh interpreter, with only our CA as trust anchor."""
    script = f"""
import json, c2pa
ca = open({str(anchor_path)!r}).read()
ctx = c2pa.Context.from_dict({{"version": 1, "trust": {{"user_anchors": ca, "trust_config": "1.3.6.1.5.5.7.3.4\\n"}},
                              "verify": {{"remote_manifest_fetch": False, "ocsp_fetch": False}}}})
with c2pa.Reader("image/png", open({str(path)!r}, "rb"), context=ctx) as r:
    store = json.loads(r.json())
    print(json.dumps({{"state": r.get_validation_state(), "store": store}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def test_generated_asset_reads_trusted_in_a_separate_process(generated_asset, signing_dir, tmp_path):
    path = tmp_path / "asset.png"
    with generated_asset.file.open("rb") as handle:
        path.write_bytes(handle.read())
    result = read_in_another_process(path, signing_dir / "ca.pem")
    assert result["state"] == "Trusted"
    store = result["store"]
    active = store["manifests"][store["active_manifest"]]
    assertions = {a["label"]: a["data"] for a in active["assertions"]}
    created = assertions["c2pa.actions.v2"]["actions"][0]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == provenance.DIGITAL_SOURCE_TYPE
    assert created["softwareAgent"]["version"] == "tiny-test"
    generation = assertions["org.stackgan-django.generation"]
    assert generation["model_version"] == "tiny-test" and "caption" not in generation
    assert generation["policy_version"] and generation["requester"].startswith("user-")
    # The caption is recorded keyed, never as a plain hash a guess can be checked against.
    assert "caption_sha256" not in generation
    caption = generated_asset.request.caption
    assert generation["caption_hmac_sha256"] == manifests.caption_digest(caption)
    assert generation["caption_hmac_sha256"] != hashlib.sha256(caption.encode()).hexdigest()
    assert assertions["org.stackgan-django.training-data"]["datasets"][0]["licences"] == {"CC0-1.0": 16}
    assert assertions["cawg.training-mining"]["entries"]["cawg.ai_generative_training"]["use"] == "notAllowed"
    assert generated_asset.provenance_state == "Trusted"
    assert b"trainedAlgorithmicMedia" in path.read_bytes()  # the XMP digital source type


def test_approval_adds_a_review_manifest_with_the_generated_file_as_parent(generated_asset, users, signing_dir, tmp_path):
    approved = services.approve_asset(generated_asset.pk, users[1], note="ok")
    path = tmp_path / "approved.png"
    with approved.approved_file.open("rb") as handle:
        path.write_bytes(handle.read())
    result = read_in_another_process(path, signing_dir / "ca.pem")
    store = result["store"]
    assert result["state"] == "Trusted" and len(store["manifests"]) == 2
    active = store["manifests"][store["active_manifest"]]
    assert [i["relationship"] for i in active["ingredients"]] == ["parentOf"]
    review = next(a["data"] for a in active["assertions"] if a["label"] == "org.stackgan-django.review")
    assert review["decision"] == "approve" and review["reviewer"].startswith("user-")
    # The note is in the public file only as a keyed digest: checkable here, not guessable there.
    assert "note_sha256" not in review and hashlib.sha256(b"ok").hexdigest() not in json.dumps(store)
    assert review_note_matches(review, "ok") and not review_note_matches(review, "ok.")
    # Files approved before the digest was keyed carry note_sha256; they still check.
    assert review_note_matches({"note_sha256": hashlib.sha256(b"ok").hexdigest()}, "ok")
    assert not review_note_matches({}, "ok")
    assert approved.provenance["state"] == "Trusted"
    # Rejection is a database and audit fact; no file is re-signed.
    assert Asset.objects.get(pk=approved.pk).approved_sha256


def file_bytes(asset):
    with asset.file.open("rb") as handle:
        return handle.read()


def change_one_pixel(png: bytes) -> bytes:
    """Change one byte of decoded pixel data and re-compress IDAT, keeping every other chunk (the
    C2PA manifest included) as it was: re-saving with Pillow would drop the manifest instead."""
    import struct
    import zlib

    chunks, position = [], 8
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position:position + 8])
        chunks.append((kind, png[position + 8:position + 8 + length]))
        position += 12 + length
    raw = bytearray(zlib.decompress(b"".join(d for k, d in chunks if k == b"IDAT")))
    width = struct.unpack(">I", png[16:20])[0]
    raw[10 * (1 + width * 3) + 1 + 5 * 3] ^= 0x01  # row 10, pixel 5, red channel
    new_idat = zlib.compress(bytes(raw))
    out, wrote = bytearray(png[:8]), False
    for kind, data in chunks:
        if kind == b"IDAT":
            if wrote:
                continue
            data, wrote = new_idat, True
        out += struct.pack(">I4s", len(data), kind) + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return bytes(out)


def test_one_changed_pixel_is_invalid_with_the_failure_code(generated_asset):
    data = file_bytes(generated_asset)
    tampered = change_one_pixel(data)
    before = Image.open(io.BytesIO(data)).convert("RGB")
    after = Image.open(io.BytesIO(tampered)).convert("RGB")
    assert before.tobytes() != after.tobytes()
    report = services.verify_file(tampered)
    assert report["state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in [f["code"] for f in report["failures"]]


def test_one_changed_assertion_byte_is_invalid(generated_asset):
    import struct
    import zlib

    data = bytearray(file_bytes(generated_asset))
    marker = data.find(b"tiny-test")
    assert marker > 0
    data[marker] = ord("T")
    # Keep the PNG itself well-formed: fix the CRC of the chunk that holds the manifest.
    position = 8
    while position < len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        if position < marker < position + 12 + length:
            body = bytes(data[position + 4:position + 8 + length])
            data[position + 8 + length:position + 12 + length] = struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        position += 12 + length
    report = services.verify_file(bytes(data))
    assert report["state"] == "Invalid"
    assert any(f["code"].startswith("assertion.") for f in report["failures"]), report["failures"]


def test_bad_files_are_reported_plainly(generated_asset, tmp_path):
    assert services.verify_file(b"hello, not an image")["state"] == "Not an image"
    data = file_bytes(generated_asset)
    assert services.verify_file(data[: len(data) // 3])["state"] in ("Not an image", "Invalid", "No manifest")
    plain = io.BytesIO()
    picture().save(plain, "PNG")
    assert services.verify_file(plain.getvalue())["state"] == "No manifest"


def test_a_manifest_from_another_signer_is_valid_but_not_trusted(generated_asset, settings, tmp_path):
    other = tmp_path / "other-ca"
    make_development_ca(other)
    settings.STACKGAN = {**settings.STACKGAN, "SIGNER": "stackgan_django.provenance.signers.PemFileSigner",
                         "SIGNER_OPTIONS": {"certificate_chain": str(other / "chain.pem"),
                                            "private_key": str(other / "key.pem"), "trust_anchor": str(other / "ca.pem")}}
    manifests.reset_cache()
    png = manifests.embed_mark_and_xmp(picture(3), 42)
    foreign = manifests._sign({"claim_generator_info": [manifests.CLAIM_GENERATOR], "title": "x.png",
                               "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                                   {"action": "c2pa.created", "digitalSourceType": provenance.DIGITAL_SOURCE_TYPE}]}}]},
                              png, "image/png")
    settings.STACKGAN = {**settings.STACKGAN, "SIGNER": "stackgan_django.provenance.signers.DevelopmentSigner",
                         "SIGNER_OPTIONS": {"folder": str(tmp_path.parent.parent / "signing")}}
    manifests.reset_cache()
    report = services.verify_file(foreign)
    assert report["state"] == "Valid", report


def test_the_watermark_traces_a_reencoded_copy_back_to_its_asset(generated_asset):
    data = file_bytes(generated_asset)
    image = Image.open(io.BytesIO(data)).convert("RGB")
    for copy, quality in ((image, 90), (image, 75), (image.resize((128, 128), Image.Resampling.LANCZOS), 90)):
        buffer = io.BytesIO()
        copy.save(buffer, "JPEG", quality=quality)
        report = services.verify_file(buffer.getvalue())
        assert report["state"] == "No manifest"  # re-encoding strips C2PA...
        assert report["watermark"]["found"] and report["asset"]["id"] == generated_asset.pk  # ...not the mark
        assert report["asset"]["found_by"] == "watermark"


def test_watermark_round_trip_survival_and_no_false_positives():
    key = b"k" * 32
    for seed in range(5):
        image = picture(seed, size=256)
        marked = watermark.embed(image, 123456789 + seed, key)
        assert watermark.psnr(image, marked) > 36
        for transform in (lambda im: im, lambda im: im.resize((128, 128), Image.Resampling.LANCZOS)):
            assert watermark.detect(transform(marked), key).mark_id == 123456789 + seed
        assert not watermark.detect(image, key).found
        assert not watermark.detect(marked, b"another key" * 3).found


def test_verify_command(generated_asset, tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(file_bytes(generated_asset))
    out = io.StringIO()
    call_command("verify", str(path), stdout=out)
    text = out.getvalue()
    assert "provenance: Trusted" in text and "c2pa.created (trainedAlgorithmicMedia)" in text
    assert f"asset: #{generated_asset.pk}" in text
    assert "file: not approved" in text  # the file's own verdict, beside the asset's state
    (tmp_path / "b.txt").write_text("nope")
    with pytest.raises(CommandError, match="Not an image"):
        call_command("verify", str(tmp_path / "b.txt"), stdout=io.StringIO())


def test_missing_or_expired_certificates_are_check_errors_and_clear_task_failures(db, settings, tmp_path, active_model,
                                                                                   no_broker):
    from django.core.checks import run_checks

    settings.STACKGAN = {**settings.STACKGAN, "SIGNER": "stackgan_django.provenance.signers.PemFileSigner",
                         "SIGNER_OPTIONS": {"certificate_chain": str(tmp_path / "none.pem"),
                                            "private_key": str(tmp_path / "none.key"), "trust_anchor": str(tmp_path / "ca")}}
    manifests.reset_cache()
    errors = [m for m in run_checks() if m.id == "stackgan_django.E003"]
    assert errors and "cannot read the signing certificate chain" in errors[0].msg
    request = services.submit_request(caption="a red apple", num_images=1)
    services.start_request(request.pk)
    with pytest.raises(SignerConfigurationError):
        services.stamp_output(request, services.GeneratedOutput(0, 1, picture(), Verdict("output", "v")))
    assert not Asset.objects.exists()  # nothing is ever stored unsigned


def test_expired_certificate_is_reported(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "chain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signer = PemFileSigner(str(tmp_path / "chain.pem"), str(tmp_path / "key.pem"), str(tmp_path / "chain.pem"))
    problems = " ".join(signer.problems())
    assert "expired" in problems and "self-signed" in problems and "extended key usage" in problems


def test_unreachable_timestamp_authority_leaves_the_request_signing_pending(db, settings, active_model, no_broker):
    settings.STACKGAN = {**settings.STACKGAN, "TSA_URL": "http://127.0.0.1:9/tsa"}
    manifests.reset_cache()
    request = services.submit_request(caption="a red apple", num_images=1)
    services.start_request(request.pk)
    with pytest.raises(provenance.SigningUnavailable):
        services.stamp_output(request, services.GeneratedOutput(0, 1, picture(), Verdict("output", "v")))
    deferred = services.defer_request(request.pk, "timestamp authority unreachable")
    assert deferred.state == "queued" and deferred.error.startswith("signing pending")
    assert deferred.attempts == 0 and not Asset.objects.exists()


def forge_mark(asset_image, other):
    """The tester's forgery: estimate the mark of an approved file (each cell's luminance minus its
    8 neighbours' mean, its sign) and add sign x 4 to an unrelated picture."""
    import numpy as np

    cells = watermark._cell_means(asset_image)
    sign = np.sign(cells - watermark._local_mean(cells))
    pattern = np.kron(sign, np.ones((4, 4)))  # 64 x 64 cells onto 256 x 256 pixels
    pixels = np.asarray(other.convert("RGB"), dtype=np.float64) + 4 * pattern[:, :, None]
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def encoded(image, kind="PNG", **options):
    buffer = io.BytesIO()
    image.save(buffer, kind, **options)
    return buffer.getvalue()


def test_a_copied_watermark_on_another_picture_is_not_the_approved_asset(generated_asset, users):
    from stackgan_django.admin import verify_verdict
    from stackgan_django.services.verification import SAME_PICTURE_RMSE, picture_distance

    asset = services.approve_asset(generated_asset.pk, users[1])
    image = Image.open(io.BytesIO(file_bytes(asset))).convert("RGB")
    # Both sides of the bound, measured on the generated asset: its re-encoded and resized copies...
    copies = [Image.open(io.BytesIO(encoded(image, "JPEG", quality=q))) for q in (50, 75, 90)]
    copies += [image.resize((s, s), Image.Resampling.LANCZOS) for s in (128, 512)]
    assert max(picture_distance(image, copy) for copy in copies) < SAME_PICTURE_RMSE / 3
    # ...and other pictures carrying its forged mark.
    forgeries = [forge_mark(image, picture(seed, size=256)) for seed in (1, 2, 3, 4)]
    assert min(picture_distance(image, forged) for forged in forgeries) > SAME_PICTURE_RMSE * 2
    for forged in forgeries:
        for data in (encoded(forged), encoded(forged, "JPEG", quality=90)):
            report = services.verify_file(data)
            assert report["watermark"]["found"] and report["watermark"]["mark_id"] == asset.mark_id  # the forgery works
            assert report["asset"]["state"] == "unconfirmed" and report["asset"]["content_matches"] is False
            assert report["asset"]["asset_state"] == "approved"  # reviewers may look into whose mark it is
            verdict = verify_verdict(report)
            assert "NOT an approved asset" in verdict["headline"] and "Approved asset" not in verdict["headline"]
            client_view = services.verify_file(data, disclose_unapproved=False)["asset"]
            assert client_view["state"] == "unconfirmed" and client_view["public_id"] is None and client_view["id"] is None
            assert "asset_state" not in client_view
    # A genuine re-encoded copy is still traced to the approved asset.
    for copy in copies:
        report = services.verify_file(encoded(copy.convert("RGB"), "JPEG", quality=85))
        assert report["asset"]["state"] == "approved" and report["asset"]["found_by"] == "watermark"


def test_a_watermark_match_whose_asset_file_is_missing_is_not_confirmed(generated_asset):
    data = encoded(Image.open(io.BytesIO(file_bytes(generated_asset))).convert("RGB"), "JPEG", quality=90)
    generated_asset.file.storage.delete(generated_asset.file.name)
    assert services.verify_file(data)["asset"]["state"] == "unconfirmed"


def test_an_altered_copy_signed_by_another_trusted_signer_is_not_reported_unaltered(generated_asset, users, settings,
                                                                                     tmp_path):
    """A certificate our trust anchors vouch for need not be ours (a previous CA in TRUST_ANCHORS,
    another team's certificate from the CA that issued ours). Its holder edits an approved picture
    (a line of text written on it: the watermark and the picture check survive that) and signs the result:
    the file is Trusted and found by the mark, but it is not the file we approved."""
    from PIL import ImageDraw

    from stackgan_django.admin import verify_verdict

    asset = services.approve_asset(generated_asset.pk, users[1], note="ok")
    with asset.approved_file.open("rb") as handle:
        image = Image.open(io.BytesIO(handle.read())).convert("RGB")
    ImageDraw.Draw(image).text((6, 6), "FAKE NEWS: 1,000 DEAD", fill=(0, 0, 0))  # the alteration
    ours = dict(settings.STACKGAN)
    other = tmp_path / "other-ca"
    make_development_ca(other)
    settings.STACKGAN = {**ours, "SIGNER": "stackgan_django.provenance.signers.PemFileSigner",
                         "SIGNER_OPTIONS": {"certificate_chain": str(other / "chain.pem"),
                                            "private_key": str(other / "key.pem"), "trust_anchor": str(other / "ca.pem")}}
    manifests.reset_cache()
    forged = manifests._sign({"claim_generator_info": [manifests.CLAIM_GENERATOR], "title": "x.png",
                              "assertions": [{"label": "c2pa.actions", "data": {"actions": [
                                  {"action": "c2pa.created", "digitalSourceType": provenance.DIGITAL_SOURCE_TYPE}]}}]},
                             encoded(image), "image/png")
    settings.STACKGAN = {**ours, "TRUST_ANCHORS": [str(other / "ca.pem")]}
    manifests.reset_cache()
    report = services.verify_file(forged)
    assert report["state"] == "Trusted"  # the other signer is trusted: that is what TRUST_ANCHORS is for
    assert report["asset"]["state"] == "approved" and report["asset"]["found_by"] == "watermark"
    assert report["asset"]["exact_file"] is False
    verdict = verify_verdict(report)
    assert "unaltered" not in verdict["headline"] and verdict["css"] != "approved", verdict
    # The approved file itself still reads as the approved asset, unaltered.
    with asset.approved_file.open("rb") as handle:
        assert "unaltered" in verify_verdict(services.verify_file(handle.read()))["headline"]


def fake_news(data: bytes) -> bytes:
    """The probe's alteration of an approved file: a caption and a box drawn on it, saved as JPEG q90.
    The watermark and the 16x16 picture check both survive it."""
    from PIL import ImageDraw

    image = Image.open(io.BytesIO(data)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), "FAKE NEWS", fill=(255, 0, 0))
    draw.rectangle((150, 180, 200, 210), outline=(255, 0, 0), width=2)
    return encoded(image, "JPEG", quality=90)


def test_an_altered_copy_of_an_approved_file_is_a_derived_copy_not_the_approved_file(generated_asset, users,
                                                                                    api_key_for):
    """The watermark says which asset the pixels came from, not that this file is the approved one:
    the answer's ``file`` says what the file is; ``asset.state`` stays the asset's own state."""
    from django.test import Client

    editor, reviewer = users
    asset = services.approve_asset(generated_asset.pk, reviewer, note="ok")
    with asset.approved_file.open("rb") as handle:
        approved = handle.read()
    altered = fake_news(approved)
    client = api_key_for(editor, "verify")

    def api_verify(data):
        upload = io.BytesIO(data)
        upload.name = "copy.jpg"
        response = client.post("/api/v1/verify/", {"file": upload}, format="multipart")
        assert response.status_code == 200, response.content
        return response.json()

    report = api_verify(altered)
    assert report["asset"]["state"] == "approved" and report["asset"]["found_by"] == "watermark"  # the asset's state
    assert report["asset"]["public_id"] == str(asset.public_id) and report["asset"]["exact_file"] is False
    assert report["file"] == "derived copy"
    assert "not the approved file" in report["file_message"] and str(asset.public_id) in report["file_message"]
    assert api_verify(approved)["file"] == "approved file"
    assert api_verify(encoded(picture(9)))["file"] == "not ours"
    # The page says it first, for the editor (who sees no row ids) as for the reviewer.
    for user in (editor, reviewer):
        page = Client()
        page.force_login(user)
        upload = io.BytesIO(altered)
        upload.name = "copy.jpg"
        body = page.post("/admin/stackgan_django/asset/verify/", {"file": upload}).content.decode()
        headline = body.split("<h2>", 1)[1].split("</h2>", 1)[0]
        assert "a copy derived from approved asset" in headline.lower(), headline
        assert "not the approved file" in headline and "no valid provenance" in headline, headline
        assert not headline.startswith("Approved asset") and "None" not in headline, headline


def test_the_verify_page_never_names_an_asset_none(generated_asset, users):
    """Editors see no row ids (nor anything about assets nobody has approved): the page names what
    it may, and never prints "#None"."""
    from django.test import Client

    from stackgan_django.admin import verify_verdict

    editor, reviewer = users
    pending = file_bytes(generated_asset)
    editor_view = services.verify_file(pending, disclose_unapproved=False)
    assert editor_view["asset"]["state"] == "not disclosed" and editor_view["file"] == "not approved"
    verdict = verify_verdict(editor_view)
    assert "None" not in verdict["headline"] and "not approved" in verdict["headline"].lower(), verdict
    page = Client()
    page.force_login(editor)
    upload = io.BytesIO(pending)
    upload.name = "pending.png"
    body = page.post("/admin/stackgan_django/asset/verify/", {"file": upload}).content.decode()
    assert "#None" not in body and "NOT approved" in body
    asset = services.approve_asset(generated_asset.pk, reviewer, note="ok")
    with asset.approved_file.open("rb") as handle:
        verdict = verify_verdict(services.verify_file(handle.read(), disclose_unapproved=False))
    assert "unaltered" in verdict["headline"] and "None" not in verdict["headline"], verdict
    assert str(asset.public_id) in verdict["headline"]
