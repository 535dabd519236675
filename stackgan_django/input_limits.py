"""Hostile input stopped before it costs anything: request bodies bounded by their declared length,
JSON nesting bounded before parsing, and images judged by their header before a pixel is decoded."""

from __future__ import annotations

import io
import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from PIL import Image, UnidentifiedImageError
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import JSONParser

from stackgan_django.conf import app_settings

# A JSON string, escapes included; what is left once strings are blanked is structure and scalars.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")
ALLOWED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
# Named in the refusal so the client knows what it sent.
OTHER_FORMATS = ((b"GIF8", "GIF"), (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"),
                 (b"\x00\x00\x00\x0cjP", "JPEG 2000"), (b"<svg", "SVG"), (b"<?xml", "SVG/XML"))


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def json_nesting_depth(raw: bytes, stop_above: int) -> int:
    """How deeply arrays and objects nest in ``raw`` (brackets inside strings ignored). Stops
    counting once past ``stop_above``, so a bomb of a million brackets costs one regex pass."""
    structure = _NOT_BRACKET.sub(b"", _JSON_STRING.sub(b'""', raw))
    depth = deepest = 0
    for byte in structure:
        if byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > stop_above:
                    return deepest
        else:
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


# No field takes a number this long (the largest, the seed, has 19 digits).
MAX_JSON_INTEGER_DIGITS = 100


@dataclass(frozen=True)
class OversizedInteger:
    """A JSON integer with more digits than any field takes, left unconverted: Python refuses to
    convert more than 4,300 digits (with a message about sys.set_int_max_str_digits that means
    nothing to a client), and the conversion costs time below that. Integer fields answer it with
    their range message; anything else sees an object that is not a number."""

    negative: bool
    digits: int


def _parse_int(text: str) -> int | OversizedInteger:
    if len(text) > MAX_JSON_INTEGER_DIGITS:
        return OversizedInteger(text.startswith("-"), len(text.lstrip("-")))
    return int(text)


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object that names a key twice is refused: parsers disagree on which value wins (Python's the
    last, many proxies and firewalls the first), so a body could pass a check upstream with one
    caption and be stored with the other."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"the key {json.dumps(key)[:80]} appears twice in one object")
        obj[key] = value
    return obj


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser with the limits it lacks: the body is read up to DATA_UPLOAD_MAX_MEMORY_SIZE
    (413 past it), nesting deeper than STACKGAN["MAX_JSON_DEPTH"] is refused before ``json.loads``
    (which would otherwise recurse until RecursionError), NaN / Infinity are not JSON, and an object
    may name each key once."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"The JSON body is larger than {limit} bytes.")
        max_depth = app_settings.MAX_JSON_DEPTH
        if json_nesting_depth(raw, max_depth) > max_depth:
            raise ParseError(f"The JSON body nests deeper than {max_depth} levels.")
        try:
            text = raw.decode("utf-8")
            return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int,
                              object_pairs_hook=_refuse_duplicate_keys)
        except UnicodeDecodeError as exc:
            raise ParseError("The JSON body is not valid UTF-8.") from exc
        except (ValueError, RecursionError) as exc:
            raise ParseError(f"The JSON body is malformed: {exc}") from exc


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


class ImageRefused(ValueError):
    """The upload is not an image we check, or it is too large; ``status_code`` says which."""

    def __init__(self, message: str, status_code: int = status.HTTP_400_BAD_REQUEST):
        super().__init__(message)
        self.status_code = status_code


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers that stand alone (no length field): TEM, RST0-7, SOI.
_JPEG_STANDALONE = {0x01, 0xD8, *range(0xD0, 0xD8)}


def is_webp(head: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def container_steps(data: bytes, stop_above: int) -> int:
    """How many chunks a PNG or a WebP holds, or how many segments and stray bytes a JPEG holds
    before its first scan: the steps Pillow's parsers (in Python) and the C2PA reader walk one by
    one. Stops counting once past ``stop_above``, so counting costs at most that many steps too. 0
    for anything else. Raises ImageRefused for a WebP whose sizes do not fit the file."""
    if is_webp(data):
        return _riff_chunks(data, stop_above)
    steps = 0
    if data.startswith(PNG_SIGNATURE):
        position = len(PNG_SIGNATURE)
        while position + 8 <= len(data) and steps <= stop_above:
            length = int.from_bytes(data[position:position + 4], "big")
            steps += 1
            if data[position + 4:position + 8] == b"IEND":
                break
            position += 12 + length
    elif data.startswith(b"\xff\xd8"):
        position = 2
        while position + 1 < len(data) and steps <= stop_above:
            steps += 1
            if data[position] != 0xFF:  # stray byte: Pillow skips it, one read at a time
                position += 1
                continue
            marker = data[position + 1]
            if marker == 0xFF:  # fill byte
                position += 1
            elif marker == 0x00 or marker in _JPEG_STANDALONE:
                position += 2
            elif marker in (0xDA, 0xD9):  # start of scan, end of image: the header ends here
                break
            else:
                position += 2 + int.from_bytes(data[position + 2:position + 4], "big")
    return steps


def _riff_chunks(data: bytes, stop_above: int) -> int:
    """The chunks of a RIFF (WebP) file, those inside LIST chunks too, from their 8-byte headers
    alone: payloads are skipped, never read. Each size is checked against what holds it, since the
    C2PA reader seeks by them and libwebp, which reads only the chunks it knows, would not notice."""
    declared = int.from_bytes(data[4:8], "little") + 8
    if declared != len(data):
        raise ImageRefused(f"The WebP file's RIFF header declares {declared} bytes, but the file has {len(data)}.")
    steps = 0
    containers = [(12, len(data))]  # (first chunk, end) of the file's body and of each LIST
    while containers:
        position, end = containers.pop()
        while position < end:
            if steps > stop_above:
                return steps
            if position + 8 > end:
                raise ImageRefused(f"The WebP file ends inside a chunk header at byte {position}.")
            size = int.from_bytes(data[position + 4:position + 8], "little")
            payload = position + 8
            if payload + size > end:
                raise ImageRefused(f"A chunk of the WebP file at byte {position} declares {size} bytes, more than "
                                   "the file holds.")
            steps += 1
            if data[position:position + 4] == b"LIST" and size >= 4:
                containers.append((payload + 4, payload + size))  # after the list's own type
            position = payload + size + (size & 1)  # chunks start on even offsets
    return steps


def check_image_header(upload: Any) -> ImageHeader:
    """Format and dimensions from the header only (Pillow's ``open`` is lazy): a 17 KB PNG declaring
    12,000 x 12,000 pixels is refused here, in microseconds, before any decompression."""
    max_bytes = app_settings.VERIFY_MAX_BYTES
    size = getattr(upload, "size", None)
    if size is not None and size > max_bytes:
        raise ImageRefused(f"The file is {size} bytes; the limit is {max_bytes}.", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    head = upload.read(64) if hasattr(upload, "read") else bytes(upload[:64])
    if hasattr(upload, "seek"):
        upload.seek(0)
    if not head:
        raise ImageRefused("The file is empty.")
    max_steps = app_settings.VERIFY_MAX_SEGMENTS
    if head.startswith((PNG_SIGNATURE, b"\xff\xd8")) or is_webp(head):
        # Before Pillow reads the header: its own header parser (and the C2PA reader, for all three)
        # walks these one by one.
        data = upload.read(max_bytes + 1) if hasattr(upload, "read") else bytes(upload)
        if hasattr(upload, "seek"):
            upload.seek(0)
        if container_steps(data, max_steps) > max_steps:
            kind = "segments before its image data" if head.startswith(b"\xff\xd8") else "chunks"
            raise ImageRefused(f"The file holds more than {max_steps} {kind}; no image we made or a camera "
                               "writes holds that many.")
    source = upload if hasattr(upload, "read") else io.BytesIO(upload)
    try:
        # Pillow's own bomb guard (a warning, or an error past twice its limit) must not speak for
        # us: our limit below is smaller and says what it is.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the three formats' header parsers ever run on an upload.
            with Image.open(source, formats=ALLOWED_IMAGE_FORMATS) as image:
                fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError as exc:
        raise ImageRefused(f"The image declares more pixels than the limit of {app_settings.VERIFY_MAX_PIXELS}.",
                           status.HTTP_413_REQUEST_ENTITY_TOO_LARGE) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        named = next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)
        if named:
            raise ImageRefused(f"{named} files are not checked; send a PNG, JPEG or WebP image.") from exc
        raise ImageRefused(f"The file is not a readable PNG, JPEG or WebP image ({type(exc).__name__}).") from exc
    finally:
        if hasattr(upload, "seek"):
            upload.seek(0)
    if fmt not in ALLOWED_IMAGE_FORMATS:
        raise ImageRefused(f"{fmt} files are not checked; send a PNG, JPEG or WebP image.")
    max_pixels = app_settings.VERIFY_MAX_PIXELS
    if width * height > max_pixels:
        raise ImageRefused(f"The image declares {width} x {height} pixels; the limit is {max_pixels} pixels.",
                           status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    # Decoders pay per row and per column as well as per pixel: a 65 KB PNG of 1 x 16,777,216 pixels
    # (within the pixel limit) took 2.5 s to verify against 0.34 s for 4096 x 4096. Four times the
    # side of the largest square still admits any panorama a camera makes.
    max_side = 4 * math.isqrt(max_pixels)
    if max(width, height) > max_side:
        raise ImageRefused(f"The image declares {width} x {height} pixels; no side may exceed {max_side}.",
                           status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    return ImageHeader(fmt, width, height)


# -- request bodies ---------------------------------------------------------------------------------

MULTIPART_ENVELOPE_BYTES = 64 * 1024


def max_request_body_bytes() -> int:
    return app_settings.MAX_REQUEST_BODY_BYTES or app_settings.VERIFY_MAX_BYTES + MULTIPART_ENVELOPE_BYTES


class RequestBodyLimitMiddleware:
    """413 for a body declared larger than any page takes, on every path, before any layer reads
    it. Django bounds form fields (DATA_UPLOAD_MAX_MEMORY_SIZE) but streams uploaded files to a
    temporary file of any size, for anyone: the CSRF middleware parses the body of an anonymous
    POST to the log-in page. The API's views have tighter limits of their own (api_errors)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return HttpResponse("The Content-Length header is not a number.", status=400, content_type="text/plain")
        limit = max_request_body_bytes()
        if declared > limit:
            # No "Connection: close": a WSGI application may not set hop-by-hop headers (PEP 3333; the
            # standard library's server behind runserver turns one into a 500). The server decides.
            return HttpResponse(f"The request body is {declared} bytes; the largest this site takes is {limit}.",
                                status=413, content_type="text/plain")
        return self.get_response(request)


class NulCharacterMiddleware:
    """400 for a NUL character in the path or the query string, on every path. No field of ours
    takes one, and PostgreSQL refuses it in any text value: a change list filtered on
    ``?purpose=%00`` was a 500 there (DataError) where SQLite found nothing. Bodies need no such
    guard: Django's forms and the API's serializers refuse NUL in a field with a message."""

    MESSAGE = "The address contains a NUL character (%00), which no page of this site takes."

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path_info or any("\x00" in name or any("\x00" in value for value in values)
                                               for name, values in request.GET.lists()):
            # Under the API prefix, ApiJsonErrorsMiddleware makes the message a JSON detail.
            return HttpResponse(self.MESSAGE, status=400, content_type="text/plain; charset=utf-8")
        return self.get_response(request)
