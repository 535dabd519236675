"""Hostile and malformed input: every case is a 4xx with a JSON body, decided before the expensive
part (parsing, decoding) starts; rate limits per key and scope; admin log-in throttling; keys that
are expired, revoked, unknown or lack the scope."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from stackgan_django.models import GenerationRequest
from tests.api_assets import make_assets

ROOT = Path(__file__).resolve().parent.parent


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 12_000, height: int = 12_000) -> bytes:
    """A real, complete 1-bit PNG of width x height white pixels: about 17 KB on the wire, 144 MB
    once Pillow decodes it, gigabytes once converted to RGB floats."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """SOI + a baseline SOF0 frame header declaring the size (no scan data follows)."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


@pytest.fixture
def client_with_all_scopes(users, api_key_for):
    return api_key_for(users[0])


# -- query parameters -------------------------------------------------------------------------------

IMPOSSIBLE_DATES = ["2026-02-30", "2026-13-01", "2026-01-01T25:00", "0000-01-01", "2026-01-01T10:00+99:00",
                    "2026-01-01T10:00:61", "yesterday", "9" * 50, "2026-02-29", "-1-01-01", "\uff12\uff10\uff12\uff16-01-01"]


def test_impossible_dates_are_400_naming_the_field(db, client_with_all_scopes):
    # One test for the whole table: each case is a request, the setup (users, key) is the cost.
    for field in ("created_after", "created_before"):
        for value in IMPOSSIBLE_DATES:
            response = client_with_all_scopes.get("/api/v1/assets/", {field: value})
            assert response.status_code == 400, (field, value)
            assert response["Content-Type"] == "application/json" and field in response.json(), (field, value)


def test_valid_dates_with_offsets_are_accepted(db, client_with_all_scopes):
    for value in ("2026-02-28", "2024-02-29", "2026-01-01T10:00:00+14:00", "2026-01-01T10:00Z"):
        assert client_with_all_scopes.get("/api/v1/assets/", {"created_after": value}).status_code == 200, value


MALFORMED_LIST_QUERIES = [("page=abc", "page"), ("page=0", "page"), ("page=-1", "page"), ("page_size=0", "page_size"),
                          ("page_size=201", "page_size"), ("page_size=1e3", "page_size"), ("caption=" + "x" * 201, "caption"),
                          ("model=" + "m" * 101, "model")]


def test_malformed_list_parameters_are_400(db, client_with_all_scopes):
    for query, field in MALFORMED_LIST_QUERIES:
        response = client_with_all_scopes.get(f"/api/v1/assets/?{query}")
        assert response.status_code == 400 and field in response.json(), (query, response.content)


# -- JSON bodies ------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [21, 1_000, 100_000])
def test_deeply_nested_json_is_refused_before_parsing(db, active_model, no_broker, client_with_all_scopes, depth):
    body = b'{"caption": "a cat", "seed": ' + b"[" * depth + b"]" * depth + b"}"
    response = client_with_all_scopes.generic("POST", "/api/v1/requests/", body, content_type="application/json")
    assert response.status_code == 400 and "deeper than 20" in response.json()["detail"]
    assert GenerationRequest.objects.count() == 0


def test_nesting_within_the_limit_reaches_field_validation(db, active_model, no_broker, client_with_all_scopes):
    body = b'{"caption": "a cat", "seed": ' + b"[" * 19 + b"]" * 19 + b"}"
    response = client_with_all_scopes.generic("POST", "/api/v1/requests/", body, content_type="application/json")
    assert response.status_code == 400 and "seed" in response.json()


def test_brackets_inside_strings_do_not_count_as_nesting(db, active_model, no_broker, client_with_all_scopes):
    body = json.dumps({"caption": "a cat " + "[{" * 50, "num_images": 1}).encode()
    response = client_with_all_scopes.generic("POST", "/api/v1/requests/", body, content_type="application/json")
    assert response.status_code == 202


MALFORMED_JSON_BODIES = [
    (b'{"caption": "a cat", "num_images": NaN}', "detail"), (b'{"caption": "a cat", "seed": Infinity}', "detail"),
    (b'{"caption": "\\ud800 a cat"}', "caption"), (b'{"caption": "a\\u0000cat"}', "caption"),
    (b'["a cat"]', "non_field_errors"), (b'"a cat"', "non_field_errors"), (b"", "caption"),
    (b'{"caption": "a cat", "seed": 99999999999999999999999}', "seed"), (b'{"caption": "a cat", "num_images": 2.5}', "num_images"),
    (b'{"caption": "a cat", "purpose": "' + b"p" * 51 + b'"}', "purpose"), (b'{"caption": {"text": "a cat"}}', "caption"),
    # A key named twice: which value wins differs between parsers (a proxy may read the first caption).
    (b'{"caption": "gore porn", "caption": "a cat", "num_images": 1}', "detail"),
    (b'{"caption": "a cat", "num_images": 1, "num_images": 2}', "detail"),
    (b'{"caption": "a cat", "options": {"x": 1, "x": 2}}', "detail"),
]


def test_malformed_json_values_are_400_naming_the_field(db, active_model, no_broker, client_with_all_scopes):
    for body, field in MALFORMED_JSON_BODIES:
        response = client_with_all_scopes.generic("POST", "/api/v1/requests/", body, content_type="application/json")
        assert response.status_code == 400 and field in response.json(), (body, response.content)
        if b'"caption": "a cat", "num_images": 1, "num_images"' in body:
            assert "appears twice" in response.json()["detail"]
    assert GenerationRequest.objects.count() == 0


def test_oversize_bodies_are_413_before_they_are_read(db, active_model, no_broker, client_with_all_scopes):
    body = json.dumps({"caption": "a" * (1024 * 1024 + 10)}).encode()
    response = client_with_all_scopes.generic("POST", "/api/v1/requests/", body, content_type="application/json")
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert GenerationRequest.objects.count() == 0


def test_other_content_types_are_415(db, active_model, no_broker, client_with_all_scopes):
    response = client_with_all_scopes.generic("POST", "/api/v1/requests/", b"caption=a+cat",
                                              content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and "detail" in response.json()


# -- images -----------------------------------------------------------------------------------------

def verify(client, data: bytes, name: str = "upload.png"):
    upload = io.BytesIO(data)
    upload.name = name
    return client.post("/api/v1/verify/", {"file": upload}, format="multipart")


def test_a_pixel_bomb_is_refused_from_its_header(db, client_with_all_scopes):
    bomb = png_bomb()
    assert len(bomb) < 40_000
    response = verify(client_with_all_scopes, bomb)
    assert response.status_code == 413
    assert "12000 x 12000" in response.json()["file"][0]


def test_a_thin_image_within_the_pixel_limit_is_refused_by_its_side(db, client_with_all_scopes):
    """1 x 16,777,216 pixels is within the pixel limit but decodes row by row: 2.5 s for a 65 KB file
    (the fifth probe). No side may exceed four times that of the largest square."""
    thin = png_bomb(1, 20_000)
    response = verify(client_with_all_scopes, thin)
    assert response.status_code == 413 and "no side may exceed 16384" in response.json()["file"][0]
    assert verify(client_with_all_scopes, png_bomb(16_000, 8)).status_code != 413  # a wide strip is fine


@pytest.mark.parametrize(("data", "status", "words"), [
    (jpeg_header(65_000, 65_000), 413, "more pixels than the limit"),
    (jpeg_header(5_000, 4_000), 413, "5000 x 4000"),
    (b"GIF89a" + b"\x00" * 200, 400, "GIF files are not checked"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, 400, "not a readable"),
    (b"", 400, "empty"),
    (b"%PDF-1.7 not an image", 400, "PDF files are not checked"),
    (b"\x00" * 100, 400, "not a readable"),
])
def test_other_hostile_images_are_refused(db, client_with_all_scopes, data, status, words):
    response = verify(client_with_all_scopes, data)
    assert response.status_code == status and words in json.dumps(response.json()), response.content


def many_chunks_png(count: int) -> bytes:
    """A small valid PNG with ``count`` empty text chunks before its pixels (12 bytes each)."""
    real = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 120, 200)).save(real, format="PNG")
    data = real.getvalue()
    header_end = 8 + 25  # signature + IHDR
    return data[:header_end] + png_chunk(b"tEXt", b"a\x00b") * count + data[header_end:]


def many_segments_jpeg(count: int, segment: bytes = b"\xff\xfe\x00\x02") -> bytes:
    """A small valid JPEG with ``count`` copies of ``segment`` (an empty comment) after its SOI."""
    real = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 120, 200)).save(real, format="JPEG")
    return real.getvalue()[:2] + segment * count + real.getvalue()[2:]


def riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) & 1)


def webp(extra: bytes = b"", **options) -> bytes:
    """A small valid WebP with ``extra`` (whole RIFF chunks) after its own, the RIFF size fixed up."""
    real = io.BytesIO()
    Image.new("RGB", (8, 8), (20, 120, 200)).save(real, format="WEBP", **options)
    body = real.getvalue()[12:] + extra
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def many_chunks_webp(count: int) -> bytes:
    """The probe's file: ``count`` empty JUNK chunks (8 bytes each) after the image."""
    return webp(riff_chunk(b"JUNK", b"") * count)


@pytest.mark.parametrize("data", [many_chunks_png(30_000), many_segments_jpeg(30_000),
                                  many_segments_jpeg(30_000, b"\xff\x00"), many_chunks_webp(30_000),
                                  webp(riff_chunk(b"LIST", b"INFO" + riff_chunk(b"JUNK", b"") * 30_000))],
                         ids=["png", "jpeg", "jpeg-padding", "webp", "webp-list"])
def test_an_upload_of_countless_empty_chunks_is_refused_before_parsing(db, client_with_all_scopes, monkeypatch, data):
    """Each chunk or segment is a step of Python in Pillow's header parser and of the C2PA reader:
    20 MB of them cost 20 s of CPU per upload (30 uploads a minute per key). Refused by count, before
    any parser runs."""
    from stackgan_django import services

    monkeypatch.setattr(services, "verify_file", lambda *args, **kwargs: pytest.fail("parsed"))
    response = verify(client_with_all_scopes, data)
    assert response.status_code == 400
    assert "more than 20000" in response.json()["file"][0]


def test_files_with_a_few_chunks_are_still_verified(db, client_with_all_scopes):
    for data in (many_chunks_png(100), many_segments_jpeg(100), webp(), many_chunks_webp(100),
                 webp(xmp=b"<x/>", exif=b"Exif\x00\x00abc"), webp(riff_chunk(b"JUNK", b"odd"))):
        response = verify(client_with_all_scopes, data)
        assert response.status_code == 200 and response.json()["state"] == "No manifest", response.content


def test_a_webp_whose_sizes_disagree_with_the_file_is_refused(db, client_with_all_scopes, monkeypatch):
    """The chunk walk trusts no size: a chunk running past the end, or a RIFF header declaring
    another length than the file has, is malformed (the C2PA reader would seek past the end)."""
    from stackgan_django import services

    monkeypatch.setattr(services, "verify_file", lambda *args, **kwargs: pytest.fail("parsed"))
    good = webp()
    past_end = good + b"JUNK" + struct.pack("<I", 1_000_000)
    past_end = past_end[:4] + struct.pack("<I", len(past_end) - 8) + past_end[8:]
    cases = {
        "past the end": past_end,
        "declares": good[:4] + struct.pack("<I", len(good)) + good[8:],  # 8 bytes more than it has
        "trailing": good + b"\x00\x00\x00",  # RIFF size right for the image, bytes after it
    }
    for name, data in cases.items():
        response = verify(client_with_all_scopes, data, "upload.webp")
        assert response.status_code == 400, (name, response.content)
        assert "WebP" in response.json()["file"][0], (name, response.content)


def test_an_upload_over_the_size_limit_is_413(db, client_with_all_scopes, settings):
    settings.STACKGAN = {**settings.STACKGAN, "VERIFY_MAX_BYTES": 50_000}
    noise = io.BytesIO()
    Image.effect_noise((256, 256), 80).convert("RGB").save(noise, format="PNG")
    assert len(noise.getvalue()) > 120_000  # larger than the limit plus the multipart allowance
    response = verify(client_with_all_scopes, noise.getvalue())
    assert response.status_code == 413 and response["Content-Type"] == "application/json"


BOMB_MEMORY_SCRIPT = textwrap.dedent("""
    import io, json, tracemalloc
    import django
    django.setup()
    from django.contrib.auth.models import User
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image
    from rest_framework.test import APIRequestFactory, force_authenticate
    from stackgan_django.api import VerifyView
    from tests.test_hostile_input import png_bomb

    def reset_peak():
        # Linux: resets VmHWM, so the next reading is the peak from here on, not from the imports.
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")

    def peak_mb():
        with open("/proc/self/status") as handle:
            line = next(line for line in handle if line.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024

    def rss_mb():
        with open("/proc/self/status") as handle:
            line = next(line for line in handle if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    bomb = png_bomb()
    view = VerifyView.as_view()
    request = APIRequestFactory().post("/api/v1/verify/", {"file": SimpleUploadedFile("bomb.png", bomb, "image/png")},
                                       format="multipart")
    force_authenticate(request, user=User(username="client", is_active=True, is_superuser=True))
    reset_peak()
    before = rss_mb()
    tracemalloc.start()
    response = view(request)
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    during = peak_mb() - before
    # Control: decoding the same file, which the header check avoided, shows up in the measurement.
    Image.MAX_IMAGE_PIXELS = None
    reset_peak()
    before = rss_mb()
    with Image.open(io.BytesIO(bomb)) as image:
        image.load()
    decoded = peak_mb() - before
    print(json.dumps({"status": response.status_code, "rss_increase_mb": during, "traced_peak_mb": traced_peak,
                      "decoding_increase_mb": decoded}))
""")


def test_the_bomb_costs_bounded_memory(tmp_path):
    """Run in a fresh process so its peak RSS measures this request alone (tracemalloc would miss
    Pillow's C allocations); a control decode proves the measurement sees a decode."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "PYTHONPATH": str(ROOT),
           "STACKGAN_VAR_DIR": str(tmp_path / "var")}
    done = subprocess.run([sys.executable, "-c", BOMB_MEMORY_SCRIPT], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["status"] == 413
    assert figures["rss_increase_mb"] < 200 and figures["traced_peak_mb"] < 200, figures
    assert figures["decoding_increase_mb"] > 100, figures  # the measurement can fail


VERIFY_PAGE = "/admin/stackgan_django/asset/verify/"


def test_the_admin_verify_page_refuses_a_pixel_bomb_by_its_header(db, users, monkeypatch):
    """The page editors can reach does the API's header check too, before anything decodes."""
    from stackgan_django import services

    decoded = []
    monkeypatch.setattr(services, "verify_file", lambda *args, **kwargs: decoded.append(1))
    client = Client()
    client.force_login(users[0])  # an editor: view_asset, no review permission
    upload = io.BytesIO(png_bomb())
    upload.name = "bomb.png"
    response = client.post(VERIFY_PAGE, {"file": upload})
    assert response.status_code == 200 and decoded == []
    body = response.content.decode()
    assert "12000 x 12000 pixels; the limit is" in body and 'class="errorlist' in body


def test_the_admin_verify_page_shares_the_api_rate_per_person(db, users, settings, api_key_for):
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"verify": "2/minute"}}
    client = Client()
    client.force_login(users[0])
    assert [client.post(VERIFY_PAGE, {"file": io.BytesIO(b"GIF89a")}).status_code for _ in range(2)] == [200, 200]
    limited = client.post(VERIFY_PAGE, {"file": io.BytesIO(b"GIF89a")})
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert b"Too many files checked" in limited.content
    assert client.get(VERIFY_PAGE).status_code == 200  # the empty form costs nothing
    other = Client()
    other.force_login(users[1])
    assert other.post(VERIFY_PAGE, {"file": io.BytesIO(b"GIF89a")}).status_code == 200  # another person



def signed_by_a_stranger(tmp_path, assertions: list[dict]) -> bytes:
    """A PNG whose C2PA manifest anyone could make: their own CA, any assertion under any label."""
    import c2pa

    from stackgan_django.provenance.signers import DevelopmentSigner

    source = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(source, "PNG")
    created = {"label": "c2pa.actions", "data": {"actions": [{
        "action": "c2pa.created",
        "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"}]}}
    manifest = {"claim_generator_info": [{"name": "stranger", "version": "1"}], "title": "x.png",
                "format": "image/png", "assertions": [created, *assertions]}
    context = c2pa.Context.from_dict({"version": 1, "builder": {"thumbnail": {"enabled": False}}})
    signed = io.BytesIO()
    with c2pa.Builder(manifest, context=context) as builder:
        builder.sign(DevelopmentSigner(tmp_path / "stranger-ca").c2pa_signer(), "image/png",
                     io.BytesIO(source.getvalue()), signed)
    return signed.getvalue()


@pytest.mark.parametrize("datasets", [["twemoji"], {"name": "twemoji"}, "twemoji", [["twemoji"]], 7])
def test_the_admin_verify_page_shows_a_strangers_training_data_assertion_as_text(db, users, tmp_path, datasets):
    """Our assertion label on a stranger's manifest holds whatever they wrote: the page shows it
    (a 500 before, when "datasets" was not a list of objects)."""
    data = signed_by_a_stranger(tmp_path, [{"label": "org.stackgan-django.training-data",
                                            "data": {"datasets": datasets}}])
    client = Client()
    client.force_login(users[1])
    upload = io.BytesIO(data)
    upload.name = "stranger.png"
    response = client.post(VERIFY_PAGE, {"file": upload})
    assert response.status_code == 200
    body = response.content.decode()
    assert "Not one of our assets." in body and "Training data" in body
    assert "twemoji" in body or "7" in body


@pytest.mark.parametrize("page", ["asset", "generationrequest", "auditevent"])
def test_an_admin_search_of_a_thousand_words_is_bounded(db, users, page):
    """Each word of an admin search is one more condition: 1,200 made SQLite refuse the query (a
    500); only the first words count, as in the API's caption filter."""
    from django.contrib.auth.models import Permission

    editor, reviewer = users
    reviewer.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client = Client()
    client.force_login(reviewer if page == "auditevent" else editor)
    response = client.get(f"/admin/stackgan_django/{page}/", {"q": " ".join(["ab"] * 1200)})
    assert response.status_code == 200


NUL_ADDRESSES = ["/admin/stackgan_django/asset/?q=a%00b", "/admin/stackgan_django/generationrequest/?purpose=%00",
                 "/admin/stackgan_django/auditevent/?q=%00", "/admin/login/?next=/admin/%00",
                 "/admin/stackgan_django/asset/%00/change/", "/api/v1/assets/?caption=%00",
                 "/api/v1/assets/?model=a%00", "/api/v1/requests/%00/", "/api/v1/assets/?%00=1",
                 "/api/v1/files/a%00b/", "/api/v1/staff/files/a%00b.png"]


@pytest.mark.parametrize("address", NUL_ADDRESSES)
def test_a_nul_character_in_an_address_is_a_400_with_a_message(db, users, api_key_for, address):
    """PostgreSQL refuses NUL in any text value: a filter or search carrying one was a 500 there (a
    change list filtered on ?purpose=%00, seen in CI) while SQLite found nothing."""
    from django.contrib.auth.models import Permission

    editor, reviewer = users
    reviewer.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    if address.startswith("/api/"):
        client = api_key_for(editor)
    else:
        client = Client()
        client.force_login(reviewer)
    response = client.get(address)
    assert response.status_code == 400, (address, response.status_code)
    message = response.json()["detail"] if address.startswith("/api/") else response.content.decode()
    assert "NUL" in message, message


def test_the_change_lists_refuse_a_nul_filter_without_the_middleware(db, users, settings, desk_assets):
    # A host project that leaves the middleware out still gets a 400, not a 500, from our change lists.
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if not name.endswith("NulCharacterMiddleware")]
    editor, _ = users
    desk_assets(editor, 1)
    client = Client()
    client.force_login(editor)
    assert client.get("/admin/stackgan_django/generationrequest/", {"purpose": "\x00"}).status_code == 400
    assert client.get("/admin/stackgan_django/generationrequest/", {"purpose": "editorial"}).status_code == 200


def test_a_deployment_without_the_input_guards_is_warned(settings):
    from django.core.checks import run_checks

    assert not [m for m in run_checks() if m.id == "stackgan_django.W141"]
    settings.MIDDLEWARE = [name for name in settings.MIDDLEWARE if not name.endswith("NulCharacterMiddleware")]
    warnings = [m for m in run_checks() if m.id == "stackgan_django.W141"]
    assert len(warnings) == 1 and "NulCharacterMiddleware" in warnings[0].msg


@pytest.mark.parametrize("path", ["/admin/login/", VERIFY_PAGE, "/admin/stackgan_django/policy-evaluation/"])
def test_a_body_larger_than_any_page_takes_is_refused_before_it_is_read(db, users, settings, path):
    """Django streams uploaded files to a temporary file of any size, for anyone: the CSRF check
    parses an anonymous log-in POST. A body declared larger than any page takes is a 413 unread."""
    settings.STACKGAN = {**settings.STACKGAN, "VERIFY_MAX_BYTES": 10_000}
    client = Client()
    client.force_login(users[0])
    parsed = []

    class Unreadable(io.BytesIO):
        def read(self, *args):
            parsed.append(1)
            return super().read(*args)

    body = Unreadable(b"--XX--\r\n")
    response = client.generic("POST", path, data=b"", content_type="multipart/form-data; boundary=XX",
                              CONTENT_LENGTH=str(10_000 + 64 * 1024 + 1), **{"wsgi.input": body})
    assert response.status_code == 413 and parsed == []
    # Up to the limit, the page itself answers (the form's own checks apply).
    small = client.post(VERIFY_PAGE, {"file": io.BytesIO(b"GIF89a")})
    assert small.status_code == 200

# -- keys and permissions ---------------------------------------------------------------------------

def test_expired_revoked_unknown_and_malformed_keys_are_401(db, users, api_key_for):
    from stackgan_django import services

    expired = api_key_for(users[0], expires_at=timezone.now() - timedelta(minutes=1))
    response = expired.get("/api/v1/assets/")
    assert response.status_code == 401 and "expired" in response.json()["detail"]
    revoked = api_key_for(users[0])
    services.revoke_api_key(revoked.api_key.prefix)
    response = revoked.get("/api/v1/assets/")
    assert response.status_code == 401 and "revoked" in response.json()["detail"]
    for header in ("Api-Key abcdefgh.wrongsecretwrongsecretwrongsecre", f"Api-Key {revoked.api_key.prefix}.x",
                   "Api-Key nodot", "Api-Key " + "a." * 100):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        response = client.get("/api/v1/assets/")
        assert response.status_code == 401 and response["WWW-Authenticate"] == "Api-Key", header


def test_out_of_scope_keys_and_missing_permissions_are_403(db, active_model, no_broker, users, api_key_for):
    editor, reviewer = users
    verify_only = api_key_for(editor, "verify")
    response = verify_only.get("/api/v1/assets/")
    assert response.status_code == 403 and "assets:read" in response.json()["detail"]
    assert verify_only.post("/api/v1/requests/", {"caption": "a cat"}, format="json").status_code == 403
    # Scope present, Django permission absent: the reviewer may not request images.
    reviewer_key = api_key_for(reviewer, "requests:write", "assets:read")
    response = reviewer_key.post("/api/v1/requests/", {"caption": "a cat"}, format="json")
    assert response.status_code == 403 and "add_generationrequest" in response.json()["detail"]
    from django.contrib.auth import get_user_model

    nobody = get_user_model().objects.create_user("client-without-perms")
    response = api_key_for(nobody, "assets:read").get("/api/v1/assets/")
    assert response.status_code == 403 and "view_asset" in response.json()["detail"]
    assert GenerationRequest.objects.count() == 0


# -- rate limits ------------------------------------------------------------------------------------

def test_rate_limits_count_per_person_and_per_scope(db, users, api_key_for, settings):
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"assets": "3/minute", "verify": "2/minute"}}
    first, second = api_key_for(users[0]), api_key_for(users[0])
    assert [first.get("/api/v1/assets/").status_code for _ in range(3)] == [200, 200, 200]
    limited = first.get("/api/v1/assets/")
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0 and "detail" in limited.json()
    # A second key of the same person shares the allowance: making keys never multiplies the rate.
    assert second.get("/api/v1/assets/").status_code == 429
    assert api_key_for(users[1]).get("/api/v1/assets/").status_code == 200  # another person, their own
    assert verify(first, b"not an image").status_code == 400  # another scope, its own allowance
    assert verify(first, b"not an image").status_code == 400
    assert verify(first, b"not an image").status_code == 429


def login(address: str, username: str, password: str) -> int:
    return Client(REMOTE_ADDR=address).post("/admin/login/", {"username": username, "password": password}).status_code


def test_admin_login_locks_the_failing_client_not_the_account(db, users, settings):
    settings.STACKGAN = {**settings.STACKGAN, "ADMIN_LOGIN_MAX_FAILURES": 3}
    client = Client(REMOTE_ADDR="203.0.113.9")
    for username in ("reviewer", "REVIEWER ", " Reviewer"):  # one name, however it is typed
        response = client.post("/admin/login/", {"username": username, "password": "guess"})
        assert response.status_code == 200 and b"correct username and password" in response.content
    blocked = client.post("/admin/login/", {"username": "reviewer", "password": "pw-reviewer-1"})
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) > 0
    # The reviewer, from their own desk, is not locked out by someone else's failures.
    assert login("198.51.100.1", "reviewer", "pw-reviewer-1") == 302
    # The failing address may still sign in as someone it has not been failing for.
    assert login("203.0.113.9", "editor", "pw-editor-1") == 302


def test_admin_login_counts_a_username_as_authentication_resolves_it(db, users, settings):
    """The log-in form normalises usernames with NFKC before the password check, so the fullwidth
    and mathematical-bold spellings of "editor" sign in as editor: they must count, and be locked,
    as editor too, or each spelling is five more guesses."""
    spellings = ["\uff45\uff44\uff49\uff54\uff4f\uff52", "\U0001d41e\U0001d41d\U0001d422\U0001d42d\U0001d428\U0001d42b"]
    assert login("198.51.100.2", spellings[0], "pw-editor-1") == 302  # the premise: it is editor's name
    for _ in range(5):
        assert login("203.0.113.30", "editor", "guess") == 200
    for spelling in spellings:
        assert login("203.0.113.30", spelling, "guess") == 429
        assert login("203.0.113.30", spelling, "pw-editor-1") == 429
    # And the other way round: failures under a look-alike spelling lock the plain name.
    for _ in range(5):
        assert login("203.0.113.31", spellings[1], "guess") == 200
    assert login("203.0.113.31", "editor", "pw-editor-1") == 429
    assert login("198.51.100.3", "editor", "pw-editor-1") == 302  # the owner, elsewhere, unaffected


def test_admin_login_limits_an_address_trying_many_usernames(db, users, settings):
    settings.STACKGAN = {**settings.STACKGAN, "ADMIN_LOGIN_MAX_FAILURES_PER_ADDRESS": 4}
    for name in ("alice", "bob", "carol", "dave"):
        assert login("203.0.113.20", name, "guess") == 200
    assert login("203.0.113.20", "editor", "pw-editor-1") == 429
    assert login("203.0.113.21", "editor", "pw-editor-1") == 302


def test_admin_login_ceiling_per_username_refuses_only_clients_that_failed(db, users, settings):
    """Guessing one password from many addresses: past the ceiling each failing address is refused,
    and the owner from a clean address still gets in."""
    settings.STACKGAN = {**settings.STACKGAN, "ADMIN_LOGIN_MAX_FAILURES_PER_USERNAME": 4}
    for host in range(4):
        assert login(f"192.0.2.{host}", "editor", "guess") == 200
    assert login("192.0.2.0", "editor", "pw-editor-1") == 429  # a guessing address, even with the password
    assert login("192.0.2.1", "editor", "another guess") == 429
    assert login("198.51.100.7", "editor", "pw-editor-1") == 302


# -- never an HTML error page -----------------------------------------------------------------------

def test_api_errors_are_json_even_with_debug_on(db, active_model, no_broker, users, client_with_all_scopes, settings, monkeypatch):
    settings.DEBUG = True
    for path in ("/api/v1/nothing-here/", "/api/v1/assets/123/file/extra", "/api/v2/assets/"):
        response = client_with_all_scopes.get(path)
        assert response.status_code == 404 and response["Content-Type"] == "application/json", path
    response = client_with_all_scopes.delete("/api/v1/assets/")
    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    from stackgan_django import services

    def broken(*args, **kwargs):  # a fault no real input produces: an unexpected bug in the service
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(services, "verify_file", broken)
    image = io.BytesIO()
    Image.new("RGB", (8, 8)).save(image, format="PNG")
    response = verify(client_with_all_scopes, image.getvalue())
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert b"secret internal detail" not in response.content and b"Traceback" not in response.content


def test_legacy_paths_redirect_to_v1(db, active_model, no_broker, users, client_with_all_scopes):
    asset = make_assets(users[0], 1)[0]
    response = client_with_all_scopes.get("/api/assets/?caption=apple")
    assert response.status_code == 308 and response["Location"] == "/api/v1/assets/?caption=apple"
    response = client_with_all_scopes.get(f"/api/assets/{asset.public_id}/download/")
    assert response.status_code == 308 and response["Location"] == f"/api/v1/assets/{asset.public_id}/file/"
    assert client_with_all_scopes.get("/api/assets/", follow=True).status_code == 200


def test_a_legacy_post_with_an_api_key_is_redirected_not_refused_for_csrf(db, active_model, no_broker, users,
                                                                          api_key_for):
    """A key-authenticated client has no CSRF cookie; its POST to the old path must get the documented
    308 (method and body kept), as the CSRF middleware of a real server would otherwise answer 403."""
    from rest_framework.test import APIClient

    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_for(users[0], 'requests:write').secret}")
    response = client.post("/api/requests/", {"caption": "a red apple", "num_images": 1}, format="json")
    assert response.status_code == 308 and response["Location"] == "/api/v1/requests/"
    created = client.post(response["Location"], {"caption": "a red apple", "num_images": 1}, format="json")
    assert created.status_code == 202


def test_errors_raised_before_the_api_view_are_json_too(db, client_with_all_scopes):
    response = client_with_all_scopes.get("/api/v1/assets/", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    response = client_with_all_scopes.generic("POST", "/api/v1/requests/", b"{}", content_type="application/json",
                                              CONTENT_LENGTH="not-a-number")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"


def test_an_unknown_host_is_a_plain_400_that_names_no_setting(db):
    """Django's message for a bad Host header says which setting to change (the fifth probe): the
    API answers that the name is not served here, nothing more."""
    response = Client(HTTP_HOST="evil.example").get("/api/v1/assets/")
    assert response.status_code == 400 and response["Content-Type"].startswith("application/json")
    assert "ALLOWED_HOSTS" not in response.content.decode() and "evil.example" not in response.content.decode()
    assert response.json()["detail"] == "The request's Host header names no site served here."


def serve_through_wsgiref(method: str, raw_path: str, headers: dict[str, str] | None = None,
                          body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request through the WSGI application as the standard library's server runs it (Django's
    runserver is built on it): its handler enforces what the Django test client does not, such as
    PEP 3333's ban on hop-by-hop headers and on newlines in header values, and turns a breach into
    a 500. Returns the status, the headers and the body it wrote."""
    from urllib.parse import unquote
    from wsgiref.handlers import SimpleHandler

    from django.core.wsgi import get_wsgi_application

    path, _, query = raw_path.partition("?")
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": unquote(path, encoding="latin-1"), "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1",
        "SCRIPT_NAME": "", "CONTENT_LENGTH": str(len(body)), "wsgi.url_scheme": "http",
    }
    for name, value in (headers or {}).items():
        key = name.upper().replace("-", "_")
        environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
    output, errors = io.BytesIO(), io.StringIO()
    handler = SimpleHandler(io.BytesIO(body), output, errors, environ, multithread=False)
    handler.run(get_wsgi_application())
    head, _, content = output.getvalue().partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    return status, dict(line.split(": ", 1) for line in lines[1:]), content


def test_a_body_too_large_is_a_413_on_the_development_server_too(db):
    """The 413 set a hop-by-hop header (Connection: close), which a WSGI application may not: the
    test client let it through, runserver's handler turned it into a 500 (a fifth probe's finding)."""
    status, headers, _ = serve_through_wsgiref(
        "POST", "/admin/login/", {"Content-Type": "application/x-www-form-urlencoded",
                                  "Content-Length": str(200 * 1024 * 1024)})
    assert status == 413 and "Connection" not in headers


@pytest.mark.parametrize("raw_path", ["/api/assets/%0d", "/api/schema/%0d", "/api/requests/x%0dy/",
                                      "/api/assets/%3E,%20%3Chttps:%2F%2Fevil.example%2Fx.css%3E;%20rel=stylesheet",
                                      "/api/assets/caf%C3%A9/", "/api/assets/?q=%3E,%3Cx%3E"])
def test_a_legacy_path_redirects_with_its_target_encoded_in_every_header(db, raw_path):
    """The Link header carried the raw path: a CR in it was a 500 (no newline in a header value), and
    '>, <https://evil.example/x.css>; rel=stylesheet' added a link of the caller's choosing."""
    status, headers, _ = serve_through_wsgiref("GET", raw_path)
    assert status == 308, headers
    link = headers["Link"]
    target = link[1 : link.index(">")]
    assert link == f'<{target}>; rel="successor-version"' and target.replace("%2C", ",") == headers["Location"]
    assert not any(c in target for c in '<>"\r\n, ') and target.isascii()


def test_options_on_every_api_page_is_never_a_500(db):
    """OPTIONS on the Swagger page asked its HTML renderer for a template it does not have (500)."""
    for path in ("/api/v1/docs/", "/api/v1/schema/", "/api/v1/assets/", "/api/v1/requests/", "/api/v1/verify/"):
        status, _, _ = serve_through_wsgiref("OPTIONS", path)
        assert status < 500, path
