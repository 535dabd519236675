"""A structural check of a PNG this process has just signed: without the c2pa library's full
validation, confirm that the file is the image we produced plus one manifest store, that the
manifest's hard binding (``c2pa.hash.data``) matches the file's bytes, that the claim cites that
binding and every assertion by their hashes, and that the claim's signature verifies with the key
of the certificate it carries; and read the assertions back, so the asset's provenance report shows what the file really says.

It is the per-image check of the worker's fast path (``manifests.stamp_image``): the full
validation, which also checks the signature cryptographically and the certificate chain against our
trust anchors, runs for the first file a process signs with its signer, again at intervals, and for
any file this check cannot confirm. Anything unexpected here (a format we do not parse, a box we do
not know) is a failed check, never an exception and never a pass.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MANIFEST_CHUNK = b"caBX"
HARD_BINDING = "c2pa.hash.data"


class StructureError(ValueError):
    """The signed file is not what the structural check expects."""


# -- CBOR (RFC 8949), the subset C2PA manifests use: definite lengths only ---------------------------

def _cbor_item(data: bytes, pos: int) -> tuple[Any, int]:
    if pos >= len(data):
        raise StructureError("CBOR ends early")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if major == 7:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info in (22, 23):
            return None, pos
        if info == 25:
            return struct.unpack(">e", data[pos : pos + 2])[0], pos + 2
        if info == 26:
            return struct.unpack(">f", data[pos : pos + 4])[0], pos + 4
        if info == 27:
            return struct.unpack(">d", data[pos : pos + 8])[0], pos + 8
        raise StructureError(f"unsupported CBOR simple value {info}")
    if info < 24:
        argument = info
    elif info in (24, 25, 26, 27):
        width = 1 << (info - 24)
        if pos + width > len(data):
            raise StructureError("CBOR ends early")
        argument = int.from_bytes(data[pos : pos + width], "big")
        pos += width
    else:
        raise StructureError("indefinite-length CBOR is not expected in a manifest we signed")
    if major == 0:
        return argument, pos
    if major == 1:
        return -1 - argument, pos
    if major in (2, 3):
        end = pos + argument
        if end > len(data):
            raise StructureError("CBOR string ends early")
        chunk = data[pos:end]
        return (bytes(chunk) if major == 2 else bytes(chunk).decode("utf-8")), end
    if major == 4:
        items = []
        for _ in range(argument):
            item, pos = _cbor_item(data, pos)
            items.append(item)
        return items, pos
    if major == 5:
        mapping = {}
        for _ in range(argument):
            key, pos = _cbor_item(data, pos)
            value, pos = _cbor_item(data, pos)
            mapping[key] = value
        return mapping, pos
    # major 6: a tag; its content is what matters here
    return _cbor_item(data, pos)


def cbor_loads(data: bytes) -> Any:
    value, end = _cbor_item(data, 0)
    if end != len(data):
        raise StructureError("trailing bytes after CBOR")
    return value


# -- JUMBF (ISO 19566-5) boxes ------------------------------------------------------------------------

@dataclass
class Box:
    """A JUMBF superbox: its label, its content boxes (type, payload) and child superboxes."""

    label: str
    raw: bytes  # the superbox's payload (description box and contents), for hashed URIs
    contents: list[tuple[bytes, bytes]] = field(default_factory=list)
    children: list[Box] = field(default_factory=list)

    def child(self, label: str) -> Box:
        for box in self.children:
            if box.label == label:
                return box
        raise StructureError(f"no {label!r} box")


def _boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    boxes, pos = [], 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise StructureError("a box header ends early")
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = len(data) - pos
        if size < header or pos + size > len(data):
            raise StructureError("a box is longer than its container")
        boxes.append((kind, data[pos + header : pos + size]))
        pos += size
    return boxes


def _superbox(payload: bytes) -> Box:
    boxes = _boxes(payload)
    if not boxes or boxes[0][0] != b"jumd":
        raise StructureError("a superbox without a description box")
    description = boxes[0][1]
    toggles = description[16] if len(description) > 16 else 0
    label = ""
    if toggles & 0x02:
        end = description.find(b"\0", 17)
        if end < 0:
            raise StructureError("an unterminated box label")
        label = description[17:end].decode("utf-8", "replace")
    box = Box(label, payload)
    for kind, content in boxes[1:]:
        if kind == b"jumb":
            box.children.append(_superbox(content))
        else:
            box.contents.append((kind, content))
    return box


# -- the check -------------------------------------------------------------------------------------

@dataclass
class SignedStructure:
    """What the structural check read from a signed file."""

    manifest_label: str
    title: str | None
    claim_generator: list[str]  # "name version", as a reader reports them
    assertions: dict[str, Any]  # label -> data, as a reader reports them (bindings and thumbnails left out)
    certificate: bytes  # the signing certificate (DER) whose key the claim's signature verified with


def _png_chunks(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of every chunk, end past its CRC."""
    if not data.startswith(PNG_SIGNATURE):
        raise StructureError("not a PNG")
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise StructureError("a PNG chunk ends early")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise StructureError("a PNG chunk is longer than the file")
        chunks.append((kind, pos, end))
        pos = end
    return chunks


def _hashed_uris(claim: dict[str, Any]) -> dict[str, bytes]:
    """The claim's hashed references to its assertions: label -> hash."""
    references: dict[str, bytes] = {}
    for key in ("created_assertions", "gathered_assertions", "assertions"):
        for reference in claim.get(key) or []:
            url, digest = reference.get("url", ""), reference.get("hash")
            if isinstance(url, str) and isinstance(digest, bytes):
                references[url.rsplit("/", 1)[-1]] = digest
    return references


def check_signed_png(signed: bytes, unsigned: bytes) -> SignedStructure:
    """Confirm that ``signed`` is ``unsigned`` with exactly one manifest store added, that its
    active manifest is bound to these bytes, cites its assertions and carries a claim signature
    that verifies; raise StructureError if not.

    The certificate's chain and trust are not checked (the caller compares the certificate with the
    one the full validation trusted). It catches a file that lost or never got its manifest, a
    manifest bound to other bytes, pixels or metadata other than ours, assertions other than the
    claim's, and a signature that does not match the claim."""
    chunks = _png_chunks(signed)
    stores = [(start, end) for kind, start, end in chunks if kind == MANIFEST_CHUNK]
    if len(stores) != 1:
        raise StructureError(f"{len(stores)} manifest stores in the file, expected 1")
    start, end = stores[0]
    view = memoryview(signed)
    if len(signed) - (end - start) != len(unsigned) or view[:start] != unsigned[:start] or view[end:] != unsigned[start:]:
        raise StructureError("the file is not the image we produced plus its manifest")
    top = _boxes(signed[start + 8 : end - 4])
    if len(top) != 1 or top[0][0] != b"jumb":
        raise StructureError("the manifest chunk does not hold one manifest store")
    store = _superbox(top[0][1])
    if store.label != "c2pa" or not store.children:
        raise StructureError("the manifest store is empty")
    manifest = store.children[-1]  # the active manifest is the last one in the store
    assertion_store = manifest.child("c2pa.assertions")
    claim_box = next((box for box in manifest.children if box.label.startswith("c2pa.claim")), None)
    if claim_box is None:
        raise StructureError("the manifest has no claim")
    claim_bytes = _content(claim_box, b"cbor")
    claim = cbor_loads(claim_bytes)
    certificate = verify_claim_signature(_content(manifest.child("c2pa.signature"), b"cbor"), claim_bytes)
    references = _hashed_uris(claim)
    assertions: dict[str, Any] = {}
    binding = None
    for box in assertion_store.children:
        cited = references.get(box.label)
        if cited is None:
            raise StructureError(f"the claim does not cite the assertion {box.label!r}")
        if hashlib.sha256(box.raw).digest() != cited:
            raise StructureError(f"the assertion {box.label!r} differs from what the claim cites")
        if box.label == HARD_BINDING:
            binding = cbor_loads(_content(box, b"cbor"))
        elif box.label.startswith("c2pa.ingredient"):
            raise StructureError("a manifest with ingredients is left to the full validation")
        elif not box.label.startswith(("c2pa.thumbnail", "c2pa.hash")):
            assertions[box.label] = cbor_loads(_content(box, b"cbor"))
    if binding is None:
        raise StructureError("the manifest has no hard binding to the file's bytes")
    if binding.get("alg", claim.get("alg", "sha256")) != "sha256":
        raise StructureError(f"unexpected binding hash {binding.get('alg')!r}")
    exclusions = [(e.get("start"), e.get("length")) for e in binding.get("exclusions") or [] if isinstance(e, dict)]
    if exclusions != [(start, end - start)]:
        raise StructureError("the hard binding does not exclude exactly the manifest store")
    # The bytes the binding covers are the file without its manifest store: ``unsigned``, as
    # compared above, so its hash is the one to match.
    if hashlib.sha256(unsigned).digest() != binding.get("hash"):
        raise StructureError("the manifest's hard binding does not match the file's bytes")
    generators = claim.get("claim_generator_info") or []
    generators = [generators] if isinstance(generators, dict) else generators
    claim_generator = [f"{g.get('name')} {g.get('version', '')}".strip() for g in generators if isinstance(g, dict)]
    title = claim.get("dc:title", claim.get("title"))
    return SignedStructure(manifest.label, title if isinstance(title, str) else None, claim_generator, assertions,
                           certificate)


# COSE algorithm ids (RFC 9053) of the signers we configure: ECDSA and Ed25519. Others (RSA-PSS)
# are left to the full validation.
_ECDSA_HASHES = {-7: "SHA256", -35: "SHA384", -36: "SHA512"}
_EDDSA = -8


def _cbor_head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes([major << 5 | length])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if length < 1 << (8 * width):
            return bytes([major << 5 | info]) + length.to_bytes(width, "big")
    raise StructureError("too long for CBOR")


def verify_claim_signature(cose: bytes, claim: bytes) -> bytes:
    """Verify the claim's COSE_Sign1 signature (detached payload: the claim's CBOR) with the key of
    the certificate it carries; returns that certificate (DER). The certificate's chain and trust
    are not checked here: the caller compares it with one the full validation trusted."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, utils

    envelope = cbor_loads(cose)
    if not (isinstance(envelope, list) and len(envelope) == 4 and isinstance(envelope[0], bytes)
            and isinstance(envelope[3], bytes)):
        raise StructureError("the claim signature is not a COSE_Sign1 structure")
    protected_bytes, unprotected, _, signature = envelope
    protected = cbor_loads(protected_bytes) if protected_bytes else {}
    algorithm = protected.get(1)
    chain = protected.get(33) or (unprotected or {}).get(33)
    leaf = chain[0] if isinstance(chain, list) and chain else chain
    if not isinstance(leaf, bytes):
        raise StructureError("the claim signature carries no certificate")
    # Sig_structure (RFC 9052, 4.4): ["Signature1", protected, external_aad, payload].
    to_be_signed = (_cbor_head(4, 4) + _cbor_head(3, 10) + b"Signature1" + _cbor_head(2, len(protected_bytes))
                    + protected_bytes + _cbor_head(2, 0) + _cbor_head(2, len(claim)) + claim)
    try:
        key = x509.load_der_x509_certificate(leaf).public_key()
        if algorithm in _ECDSA_HASHES and isinstance(key, ec.EllipticCurvePublicKey):
            half = len(signature) // 2
            der = utils.encode_dss_signature(int.from_bytes(signature[:half], "big"),
                                             int.from_bytes(signature[half:], "big"))
            key.verify(der, to_be_signed, ec.ECDSA(getattr(hashes, _ECDSA_HASHES[algorithm])()))
        elif algorithm == _EDDSA and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, to_be_signed)
        else:
            raise StructureError(f"signature algorithm {algorithm!r} is left to the full validation")
    except InvalidSignature as exc:
        raise StructureError("the claim signature does not verify") from exc
    except ValueError as exc:
        raise StructureError(f"the signing certificate cannot be read: {exc}") from exc
    return leaf


def _content(box: Box, kind: bytes) -> bytes:
    for content_kind, content in box.contents:
        if content_kind == kind:
            return content
    raise StructureError(f"the {box.label!r} box has no {kind.decode()} content")
