"""Building, signing and reading C2PA manifests with c2pa-python."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

import stackgan_django
from stackgan_django import watermark
from stackgan_django.conf import app_settings
from stackgan_django.provenance import png as png_encoder
from stackgan_django.provenance.signers import C2PA_EKUS, BaseSigner, SignerConfigurationError, SigningUnavailable

logger = logging.getLogger(__name__)

DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION_LABEL = "org.stackgan-django.generation"
LINEAGE_LABEL = "org.stackgan-django.training-data"
REVIEW_LABEL = "org.stackgan-django.review"
CLAIM_GENERATOR = {"name": "stackgan-django", "version": stackgan_django.__version__}
MIME_BY_FORMAT = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
# The C2PA thumbnail (long edge 256 px, JPEG), made by Pillow from pixels already in memory: the
# c2pa library's own thumbnail decodes the PNG again and costs more than the rest of signing.
THUMBNAIL_LONG_EDGE = 256
THUMBNAIL_QUALITY = 85

_per_process: dict[str, Any] = {}
# The c2pa signer (and a KMS callback or timestamp client behind it) is one object per process;
# a worker that stamps a batch in several threads (GOVERNANCE_THREADS) signs one file at a time.
_signing_lock = threading.Lock()


def _cached(name: str, factory):
    """One signer / context per process: c2pa objects made before a fork are invalid in the child."""
    if _per_process.get("pid") != os.getpid():
        _per_process.clear()
        _per_process["pid"] = os.getpid()
    if name not in _per_process:
        _per_process[name] = factory()
    return _per_process[name]


def reset_cache() -> None:
    _per_process.clear()


def get_signer() -> BaseSigner:
    def build() -> BaseSigner:
        signer_class = app_settings.SIGNER
        options = dict(app_settings.SIGNER_OPTIONS or {})
        if app_settings.TSA_URL:
            options.setdefault("tsa_url", app_settings.TSA_URL)
        try:
            return signer_class(**options)
        except TypeError as exc:
            raise SignerConfigurationError(f"STACKGAN['SIGNER_OPTIONS'] do not fit {signer_class.__name__}: {exc}") from exc
    return _cached("signer", build)


def trust_anchors() -> str:
    extra = ""
    for path in app_settings.TRUST_ANCHORS or []:
        with open(path) as handle:
            extra += handle.read()
    return get_signer().trust_anchor_pem() + extra


def _settings(for_signing: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "trust": {"trust_config": "\n".join(C2PA_EKUS) + "\n", "user_anchors": trust_anchors()},
        # Verification must never reach the network: no remote manifests, no OCSP.
        "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
    }
    if for_signing:
        # Our thumbnail is added as a resource (see _thumbnail_jpeg). Every signature is verified
        # by the caller right after (stamp_output, the approval), so the library's own
        # verification after signing would only do that work twice.
        data["builder"] = {"claim_generator_info": CLAIM_GENERATOR, "thumbnail": {"enabled": False}}
        data["verify"]["verify_after_sign"] = False
    return data


def _context(for_signing: bool):
    import c2pa

    return _cached(f"context-{for_signing}", lambda: c2pa.Context.from_dict(_settings(for_signing)))


def pseudonym(kind: str, value: Any) -> str:
    """A stable id that leads back to a person only through our database and secret."""
    key = (app_settings.WATERMARK_KEY or _secret()).encode()
    return f"{kind}-" + hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:16]


def _secret() -> str:
    from django.conf import settings

    return settings.SECRET_KEY


def _keyed_digest(purpose: str, text: str) -> str:
    key = hashlib.sha256((f"stackgan-{purpose}:" + (app_settings.WATERMARK_KEY or _secret())).encode()).digest()
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def note_digest(note: str) -> str:
    """The review note as the public manifest records it: HMAC-SHA256 under a key derived from the
    site's secret. The server can check a note against an approved file; the public cannot try
    guesses ("ok", "fine") against it, as it could against a plain SHA-256."""
    return _keyed_digest("review-note", note)


def caption_digest(caption: str) -> str:
    """The caption as the public manifest records it when the caption itself is left out
    (INCLUDE_CAPTION_IN_MANIFEST off): keyed like the review note, so that a short caption ("a cat
    face") cannot be recovered by hashing guesses, while the server can still tie a file to its request."""
    return _keyed_digest("caption", caption)


def review_note_matches(review: dict[str, Any], note: str) -> bool:
    """Whether ``note`` is the one a review assertion records: by its keyed digest, or, in files
    approved before the digest was keyed, by the plain ``note_sha256`` they carry."""
    if isinstance(review.get("note_hmac_sha256"), str):
        return hmac.compare_digest(review["note_hmac_sha256"], note_digest(note))
    if isinstance(review.get("note_sha256"), str):
        return hmac.compare_digest(review["note_sha256"], hashlib.sha256(note.encode()).hexdigest())
    return False


def watermark_key() -> bytes:
    return hashlib.sha256(("stackgan-watermark:" + (app_settings.WATERMARK_KEY or _secret())).encode()).digest()


XMP_TEMPLATE = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
 Iptc4xmpExt:DigitalSourceType="{source_type}"/>
</rdf:RDF></x:xmpmeta>
<?xpacket end="w"?>"""


class _RecentImages:
    """The pixels of the last few files this process wrote, by the SHA-256 of the file's bytes.

    A worker watermarks an image, encodes it, signs it and verifies it within milliseconds; the
    pixels are the same at every step (PNG is lossless, signing only adds a chunk), so signing
    and verification take them from here instead of decoding the file again. A file that is not
    here (another process wrote it, or it was evicted) is decoded as usual.
    """

    def __init__(self, capacity: int = 32):
        self.capacity = capacity
        self._entries: OrderedDict[bytes, _Pixels] = OrderedDict()
        self._lock = threading.Lock()  # a web process may approve (sign and verify) in several threads

    def remember(self, data: bytes, pixels: _Pixels) -> None:
        digest = hashlib.sha256(data).digest()
        with self._lock:
            self._entries[digest] = pixels
            self._entries.move_to_end(digest)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def lookup(self, data: bytes) -> _Pixels | None:
        digest = hashlib.sha256(data).digest()
        with self._lock:
            return self._entries.get(digest)


@dataclass
class _Pixels:
    image: Image.Image
    mark_id: int | None = None
    detection: watermark.Detection | None = None
    thumbnail: bytes | None = None


def _recent_images() -> _RecentImages:
    return _cached("recent-images", _RecentImages)


def embed_mark_and_xmp(image: Image.Image, mark_id: int) -> bytes:
    """Watermark the pixels, then encode as PNG with the IPTC digital source type in XMP."""
    marked = watermark.embed_array(np.asarray(image.convert("RGB")), mark_id, watermark_key(),
                                   strength=app_settings.WATERMARK_STRENGTH)
    marked_image = Image.fromarray(marked, "RGB")
    png = png_encoder.encode_rgb(marked, [png_encoder.itxt("XML:com.adobe.xmp",
                                                            XMP_TEMPLATE.format(source_type=DIGITAL_SOURCE_TYPE))])
    _recent_images().remember(png, _Pixels(marked_image, mark_id))
    return png


def _pixels_of(data: bytes) -> _Pixels | None:
    """The decoded pixels of ``data``: from memory when this process wrote the file, else decoded."""
    known = _recent_images().lookup(data)
    if known is not None:
        return known
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _Pixels(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _thumbnail_jpeg(pixels: _Pixels) -> bytes:
    if pixels.thumbnail is None:
        image = pixels.image
        if max(image.size) > THUMBNAIL_LONG_EDGE:
            image = image.copy()
            image.thumbnail((THUMBNAIL_LONG_EDGE, THUMBNAIL_LONG_EDGE), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
        pixels.thumbnail = buffer.getvalue()
    return pixels.thumbnail


def _detect_mark(pixels: _Pixels) -> watermark.Detection:
    if pixels.detection is None:
        pixels.detection = watermark.detect(pixels.image, watermark_key())
    return pixels.detection


def _training_mining() -> dict[str, Any]:
    use = app_settings.TRAINING_MINING
    return {"label": "cawg.training-mining", "data": {"entries": {
        name: {"use": use} for name in
        ("cawg.ai_generative_training", "cawg.ai_inference", "cawg.ai_training", "cawg.data_mining")}}}


def generated_manifest(*, model_version, request, decisions: list[dict[str, Any]], mark_id: int) -> dict[str, Any]:
    lineage = model_version.parsed_lineage
    generation: dict[str, Any] = {
        "model_version": model_version.name,
        "model_version_id": model_version.pk,
        "checkpoint_sha256": model_version.checkpoint_sha256,
        "caption_hmac_sha256": caption_digest(request.caption),
        "requester": pseudonym("user", request.requested_by_id) if request.requested_by_id else "system",
        "purpose": request.purpose,
        "policy_version": request.policy_version,
        "policy_decisions": decisions,
        "watermark_id": mark_id,
        "trained": model_version.trained,
    }
    if app_settings.INCLUDE_CAPTION_IN_MANIFEST:
        generation["caption"] = request.caption
    training_data = {
        "datasets": [
            {"name": d.name, "manifest_sha256": d.manifest_sha256, "items": d.items_used,
             "licences": dict(d.licences), "attributions": list(d.attributions[:50])}
            for d in (lineage.datasets if lineage else ())
        ],
    }
    return {
        "claim_generator_info": [CLAIM_GENERATOR],
        # No request id anywhere in the manifest: it would lead from one approved file to its
        # unapproved siblings.
        "title": "generated.png",
        "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created",
                "digitalSourceType": DIGITAL_SOURCE_TYPE,
                "softwareAgent": {"name": "stackgan-django StackGAN++", "version": model_version.name},
            }]}},
            {"label": GENERATION_LABEL, "data": generation},
            {"label": LINEAGE_LABEL, "data": training_data},
            _training_mining(),
        ],
    }


# A signer's certificate problems (expired, not yet valid, unreadable) are checked again at most
# this often per process: parsing the chain for every image cost a twentieth of the signing time,
# and a certificate does not expire between two images of a batch.
SIGNER_CHECK_SECONDS = 60.0


def _signer_problems(signer_config: BaseSigner) -> list[str]:
    checked = _per_process.get("signer-problems")
    now = time.monotonic()
    if checked is None or checked[0] is not signer_config or now - checked[1] > SIGNER_CHECK_SECONDS:
        checked = (signer_config, now, signer_config.problems())
        if not checked[2]:  # a problem is looked at again on every call, so a fix is seen at once
            _per_process["signer-problems"] = checked
    return checked[2]


def _sign(manifest: dict[str, Any], source: bytes, mime: str, parent: bytes | None = None,
          pixels: _Pixels | None = None) -> bytes:
    """Sign ``source``; ``pixels`` are its decoded pixels when the caller has them (the worker's
    stamping: then nothing is looked up, hashed or remembered for a later verification)."""
    import c2pa

    signer_config = get_signer()
    problems = _signer_problems(signer_config)
    if problems:
        raise SignerConfigurationError("; ".join(problems))
    signer = _cached("c2pa-signer", signer_config.c2pa_signer)
    remember = pixels is None
    pixels = pixels if pixels is not None else _pixels_of(source)
    thumbnail = _thumbnail_jpeg(pixels) if pixels is not None else None
    if thumbnail is not None:
        manifest = {**manifest, "thumbnail": {"format": "image/jpeg", "identifier": "thumbnail.jpg"}}
    output = io.BytesIO()
    try:
        with c2pa.Builder(manifest, context=_context(for_signing=True)) as builder:
            if thumbnail is not None:
                builder.add_resource("thumbnail.jpg", io.BytesIO(thumbnail))
            if parent is not None:
                builder.add_ingredient({"title": manifest["title"].replace("approved", "generated"),
                                        "relationship": "parentOf", "label": "generated-file"},
                                       mime, io.BytesIO(parent))
            with _signing_lock:  # one signature at a time per signer: a worker may stamp in several threads
                builder.sign(signer, mime, io.BytesIO(source), output)
    except c2pa.C2paError as exc:
        text = str(exc)
        if signer_config.tsa_url and any(w in text.lower() for w in ("timestamp", "tsa", "http", "connect", "network")):
            raise SigningUnavailable(f"the timestamp authority {signer_config.tsa_url} could not be reached: {text}") from exc
        raise SignerConfigurationError(f"signing failed: {text}") from exc
    signed = output.getvalue()
    if remember and pixels is not None and mime == "image/png":
        # The signed PNG has the same pixels (the manifest is an added chunk): verification of
        # this file in this process can skip decoding it.
        _recent_images().remember(signed, pixels)
    return signed


def sign_generated(png: bytes, *, model_version, request, decisions: list[dict[str, Any]], mark_id: int) -> bytes:
    manifest = generated_manifest(model_version=model_version, request=request, decisions=decisions, mark_id=mark_id)
    return _sign(manifest, png, "image/png")


def sign_review(signed: bytes, *, asset_public_id: str, decision: str, reviewer: str, note: str) -> bytes:
    """A new manifest recording the review, whose parent ingredient is the generated file."""
    manifest = {
        "claim_generator_info": [CLAIM_GENERATOR],
        "title": f"approved-{asset_public_id}.png",
        "format": "image/png",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [
                {"action": "c2pa.opened", "parameters": {"ingredientIds": ["generated-file"]}},
                {"action": "c2pa.published" if decision == "approve" else "c2pa.unknown",
                 "parameters": {"description": f"reviewed: {decision}"}},
            ]}},
            {"label": REVIEW_LABEL, "data": {
                "decision": decision, "reviewer": reviewer, "note_hmac_sha256": note_digest(note),
                "reviewed_at": datetime.now(UTC).isoformat(timespec="seconds"), "asset": asset_public_id,
            }},
            _training_mining(),
        ],
    }
    return _sign(manifest, signed, "image/png", parent=signed)


@dataclass
class VerificationReport:
    state: str  # Trusted | Valid | Invalid | No manifest | Not an image
    message: str
    format: str | None = None
    failures: list[dict[str, str]] = field(default_factory=list)
    manifests: list[dict[str, Any]] = field(default_factory=list)
    watermark: dict[str, Any] = field(default_factory=dict)
    trust_anchor: str = "stackgan-django signer's CA"
    # "full": the c2pa library's validation (signature, certificate chain against our trust
    # anchors, bindings); "structure": the worker's check of a file it just signed (see stamp_image).
    checked: str = "full"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def generated_by_us(self) -> bool:
        return any(GENERATION_LABEL in m.get("assertions", {}) for m in self.manifests)


def _readable_manifests(store: dict[str, Any]) -> list[dict[str, Any]]:
    """Active manifest first, then its ancestors, with the assertions a person needs."""
    manifests = store.get("manifests", {})
    order, label = [], store.get("active_manifest")
    while label and label in manifests and label not in order:
        order.append(label)
        parents = [i for i in manifests[label].get("ingredients", []) if i.get("relationship") == "parentOf"]
        label = parents[0].get("active_manifest") if parents else None
    readable = []
    for label in order + [m for m in manifests if m not in order]:
        manifest = manifests[label]
        assertions = {a["label"]: a.get("data") for a in manifest.get("assertions", [])}
        signature = manifest.get("signature_info", {})
        readable.append({
            "label": label,
            "title": manifest.get("title"),
            "claim_generator": [f"{g.get('name')} {g.get('version', '')}".strip() for g in manifest.get("claim_generator_info", [])],
            "signed_by": signature.get("common_name") or signature.get("issuer"),
            "issuer": signature.get("issuer"),
            "signed_at": signature.get("time"),
            "assertions": assertions,
            "ingredients": [{"title": i.get("title"), "relationship": i.get("relationship")}
                            for i in manifest.get("ingredients", [])],
        })
    return readable


def sniff_format(data: bytes) -> str | None:
    """The format from the file's first bytes: a damaged file still says what it claims to be."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        return None


def verify_bytes(data: bytes) -> VerificationReport:
    """Verify a file's C2PA manifest against our trust anchors and look for our watermark.
    Never raises: every problem is a state and a message."""
    return _verify_in_full(data)


def _verify_in_full(data: bytes, known: _Pixels | None = None) -> VerificationReport:
    """``verify_bytes``; ``known`` are the file's pixels when the caller has them (it just wrote
    the file), else they are looked up among the files this process wrote, or decoded."""
    image_format = sniff_format(data)
    if image_format is None:
        return VerificationReport("Not an image", "The file is not a PNG, JPEG or WebP image.")
    known = known if known is not None else _recent_images().lookup(data)
    try:
        if known is not None:
            mark = _detect_mark(known)
        else:
            with Image.open(io.BytesIO(data)) as image:
                mark = watermark.detect(image.convert("RGB"), watermark_key())
        mark_info = {"found": mark.found, "mark_id": mark.mark_id, "confidence": round(mark.confidence, 2)}
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        # Damaged pixel data: the manifest can still say what the file claims to be.
        mark_info = {"found": False, "mark_id": None, "confidence": None, "error": f"pixels unreadable ({exc})"}
    mime = MIME_BY_FORMAT.get(image_format or "")
    if mime is None:
        return VerificationReport("No manifest", f"{image_format} files carry no C2PA manifest we can read.",
                                  image_format, watermark=mark_info)
    try:
        import c2pa

        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=_context(for_signing=False))
    except Exception as exc:  # a damaged manifest store: report it, never raise to the user
        return VerificationReport("Invalid", f"The C2PA data in the file cannot be read: {exc}", image_format,
                                  [{"code": "manifest.unreadable", "explanation": str(exc)[:300]}], watermark=mark_info)
    if reader is None:
        return VerificationReport("No manifest", "The file carries no C2PA manifest (it may have been re-encoded).",
                                  image_format, watermark=mark_info)
    with reader:
        state = reader.get_validation_state() or "Invalid"
        results = reader.get_validation_results() or {}
        store = json.loads(reader.json())
    failures = [{"code": f.get("code", ""), "explanation": f.get("explanation", "")}
                for f in (results.get("activeManifest") or {}).get("failure", [])]
    for delta in results.get("ingredientDeltas", []) or []:
        failures += [{"code": f.get("code", ""), "explanation": f.get("explanation", "")}
                     for f in (delta.get("validationDeltas") or {}).get("failure", [])]
    messages = {
        "Trusted": "The manifest is intact and signed by a certificate our trust anchor vouches for.",
        "Valid": "The manifest is intact but signed by a certificate we do not trust (another signer).",
        "Invalid": "The file or its manifest was changed after signing, or the signature is broken.",
    }
    return VerificationReport(state, messages.get(state, state), image_format, failures,
                              _readable_manifests(store), mark_info)


def read_manifest_store(data: bytes) -> dict[str, Any] | None:
    """The file's whole C2PA manifest store as c2pa reports it (for the API), or None without one."""
    mime = MIME_BY_FORMAT.get(sniff_format(data) or "")
    if mime is None:
        return None
    import c2pa

    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), context=_context(for_signing=False))
    except Exception:  # a damaged store reads as none; verify_bytes reports the details
        return None
    if reader is None:
        return None
    with reader:
        return json.loads(reader.json())


# -- the worker's stamping: watermark, XMP, signature and the check after signing, in one go ----------

VERIFY_MODES = ("first", "every")
# With VERIFY_AFTER_SIGNING "first", the full validation runs again at least this often per process
# (a sample, and a fresh look at the trust anchors), besides the first file and any file the
# structural check cannot confirm.
FULL_VERIFY_SECONDS = 60.0
STRUCTURE_MESSAGE = (" Checked when signed: the manifest is in the file, bound to its bytes, and its signature verifies"
                     " with the certificate whose chain this worker verified in full on an earlier file.")


@dataclass
class StampedImage:
    """A generated image ready to store: the signed PNG and what the check after signing found."""

    signed: bytes
    report: VerificationReport
    mark_id: int


@dataclass
class _TrustedSigner:
    """The certificate whose signature and chain the full validation found Trusted in this
    process, with that report (its signer fields are every later file's, as the certificate is)."""

    certificate: bytes
    report: VerificationReport
    verified_at: float


def verify_after_signing_mode() -> str:
    mode = app_settings.VERIFY_AFTER_SIGNING
    if mode not in VERIFY_MODES:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"STACKGAN['VERIFY_AFTER_SIGNING'] must be one of {', '.join(VERIFY_MODES)}, "
                                   f"not {mode!r}")
    return mode


def stamp_image(image: Image.Image | np.ndarray, *, mark_id: int, model_version, request,
                decisions: list[dict[str, Any]]) -> StampedImage:
    """Watermark, XMP, C2PA signature (thumbnail included) and the check of the signed file, for
    one generated image, decoding and encoding it once: the marked pixels are kept in memory from
    the watermark to the thumbnail and the watermark detection, never read back from the PNG.

    The check after signing (STACKGAN["VERIFY_AFTER_SIGNING"]):

    - "every": the c2pa library's full validation of every file (about 2 ms an image on an idle CPU).
    - "first" (the default): the full validation for the first file this process signs with its
      signer, again when the signing certificate in a file is not the one last found Trusted (a
      new key or certificate), at least every FULL_VERIFY_SECONDS, and for any file the structural
      check cannot confirm; every other file gets ``structure.check_signed_png`` (0.3-0.5 ms): the
      file is our PNG plus one manifest store, the hard binding matches its bytes, the claim cites
      each assertion by hash, and the claim's signature verifies with the certificate the full
      validation trusted. What the full validation adds per file beyond that is the certificate
      chain and trust, which depend on the certificate alone, and the library's own reading of
      what we wrote; the first is checked once per certificate, the second is sampled.

    Every stored file is verified in full again wherever it matters to someone else: on approval
    (the approved file's validation covers the generated file as its parent ingredient), by the
    verify command, page and API. Raises SigningUnavailable / SignerConfigurationError as
    ``sign_generated`` does; never returns an unsigned image.
    """
    mode = verify_after_signing_mode()
    png, pixels = _mark_and_encode(image, mark_id)
    manifest = generated_manifest(model_version=model_version, request=request, decisions=decisions, mark_id=mark_id)
    signed = _sign(manifest, png, "image/png", pixels=pixels)
    return StampedImage(signed, _check_signed(signed, png, pixels, mode), mark_id)


def _mark_and_encode(image: Image.Image | np.ndarray, mark_id: int) -> tuple[bytes, _Pixels]:
    """The watermarked PNG with its XMP, and its pixels kept for the thumbnail and the detection."""
    marked = watermark.embed_array(np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image),
                                   mark_id, watermark_key(), strength=app_settings.WATERMARK_STRENGTH)
    png = png_encoder.encode_rgb(marked, [png_encoder.itxt("XML:com.adobe.xmp",
                                                            XMP_TEMPLATE.format(source_type=DIGITAL_SOURCE_TYPE))])
    return png, _Pixels(Image.fromarray(marked, "RGB"), mark_id)


def _check_signed(signed: bytes, png: bytes, pixels: _Pixels, mode: str) -> VerificationReport:
    from stackgan_django.provenance import structure

    trusted: _TrustedSigner | None = _per_process.get("trusted-signer")
    if mode == "first" and trusted is not None and time.monotonic() - trusted.verified_at < FULL_VERIFY_SECONDS:
        try:
            found = structure.check_signed_png(signed, png)
            if found.certificate != trusted.certificate:
                raise structure.StructureError("signed with another certificate than the one verified in full")
            return _structural_report(found, trusted.report, _detect_mark(pixels))
        except structure.StructureError as exc:
            logger.warning("the structural check of a file just signed failed (%s); verifying it in full", exc)
    report = _verify_in_full(signed, pixels)
    if report.state == "Trusted":
        try:
            certificate = structure.check_signed_png(signed, png).certificate
        except structure.StructureError as exc:
            # The library trusts a file our check cannot read: keep verifying in full (correct,
            # only slower) and say so once per process.
            if "structure-unreadable" not in _per_process:
                _per_process["structure-unreadable"] = True
                logger.warning("signed files verify in full but the structural check cannot read them (%s); "
                               "every file is verified in full", exc)
        else:
            _per_process["trusted-signer"] = _TrustedSigner(certificate, report, time.monotonic())
    else:
        _per_process.pop("trusted-signer", None)
    return report


def _structural_report(found: Any, trusted: VerificationReport, mark: watermark.Detection) -> VerificationReport:
    """The report of a file the structural check confirmed, shaped as the full validation's: its
    own manifest (label, title, assertions), the signer the certificate comparison established."""
    signer = trusted.manifests[0] if trusted.manifests else {}
    manifest = {
        "label": found.manifest_label, "title": found.title, "claim_generator": found.claim_generator,
        "signed_by": signer.get("signed_by"), "issuer": signer.get("issuer"),
        # A timestamp authority's time is per signature and not read by the structural check.
        "signed_at": None,
        "assertions": found.assertions, "ingredients": [],
    }
    return VerificationReport(
        trusted.state, trusted.message + STRUCTURE_MESSAGE, "PNG", [], [manifest],
        {"found": mark.found, "mark_id": mark.mark_id, "confidence": round(mark.confidence, 2)},
        trusted.trust_anchor, checked="structure")
