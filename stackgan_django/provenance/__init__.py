"""Provenance: C2PA manifests for generated images and their reviews, an invisible watermark as a
second, durable mark, and verification of any file that turns up."""

from stackgan_django.provenance.manifests import (
    DIGITAL_SOURCE_TYPE,
    StampedImage,
    VerificationReport,
    embed_mark_and_xmp,
    get_signer,
    note_digest,
    pseudonym,
    read_manifest_store,
    review_note_matches,
    sign_generated,
    sign_review,
    stamp_image,
    verify_bytes,
)
from stackgan_django.provenance.signers import SignerConfigurationError, SigningUnavailable

__all__ = [
    "DIGITAL_SOURCE_TYPE", "SignerConfigurationError", "SigningUnavailable", "StampedImage", "VerificationReport",
    "embed_mark_and_xmp", "get_signer", "note_digest", "pseudonym", "read_manifest_store", "review_note_matches",
    "sign_generated", "sign_review", "stamp_image", "verify_bytes",
]
