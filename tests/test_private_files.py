"""Only approved images ever leave: private storage, random names, authorised views, signed URLs,
and the deploy checks that catch a configuration publishing the app's files."""

from __future__ import annotations

import importlib
import re

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import storages
from django.test import Client
from django.urls import clear_url_caches, set_urlconf
from rest_framework.test import APIClient

from stackgan_django import services
from stackgan_django.checks import check_private_files
from stackgan_django.files import asset_file_url, signed_url_token
from stackgan_django.models import Asset
from stackgan_django.storage import private_asset_name
from tests.api_assets import assets_in_every_state, make_assets

PNG_MAGIC = b"\x89PNG"


def body_of(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


@pytest.fixture
def development_urls(settings):
    """The URLconf as `make run` builds it: DEBUG on (any DEBUG-only route would be there)."""
    import config.urls

    settings.DEBUG = True
    importlib.reload(config.urls)
    clear_url_caches()
    set_urlconf(None)
    yield
    settings.DEBUG = False
    importlib.reload(config.urls)
    clear_url_caches()


def test_stored_names_are_keyed_hashes_that_say_nothing_about_the_request(db, active_model, no_broker, users):
    approved, pending = make_assets(users[0], 2)
    services.approve_asset(approved.pk, users[1])
    approved.refresh_from_db()
    names = [approved.file.name, approved.approved_file.name, pending.file.name]
    request_id = str(approved.request.public_id)
    for name in names:
        assert request_id not in name and request_id.replace("-", "") not in name
        assert re.fullmatch(r"stackgan/[0-9a-f]{2}/[0-9a-f]{32}\.png", name), name
    assert len(set(names)) == 3
    # Deterministic per proposal (a retried worker overwrites its own file), unlike for any other.
    proposal = f"stackgan/{request_id}/0.png"
    assert private_asset_name(None, proposal) == private_asset_name(None, proposal)
    assert private_asset_name(None, proposal) != private_asset_name(None, f"stackgan/{request_id}/1.png")
    # Nothing in the approved file (its C2PA manifests included) names the request.
    with approved.approved_file.open("rb") as handle:
        data = handle.read()
    assert request_id.encode() not in data
    generation = next(m for m in services.verify_file(data)["manifests"] if "org.stackgan-django.generation" in m["assertions"])
    assert "request_id" not in generation["assertions"]["org.stackgan-django.generation"]


def test_files_live_outside_media_root(db, active_model, no_broker, users, settings, private_storage_in_tmp):
    asset = make_assets(users[0], 1)[0]
    assert (private_storage_in_tmp / asset.file.name).is_file()
    assert not storages["default"].exists(asset.file.name)


def test_no_unapproved_file_leaves_by_any_path_with_the_development_settings(
        db, active_model, no_broker, users, api_key_for, development_urls, settings):
    editor, reviewer = users
    approved, pending, rejected, revoked = assets_in_every_state(editor, reviewer)
    # A signed URL handed out while the revoked asset was still approved.
    revoked_signed = f"/api/v1/files/{signed_url_token(revoked)}/"
    anonymous = Client()
    editor_session = Client()
    editor_session.force_login(editor)
    editor_key = api_key_for(editor)  # every scope
    paths = [revoked_signed]
    for asset in (pending, rejected, revoked):
        for field in (asset.file, asset.approved_file):
            if not field:
                continue
            name = field.name
            paths += [field.url, f"/media/{name}", f"/media/{name.split('/', 1)[1]}", f"/private/{name}",
                      f"/var/private/{name}", f"/{name}", f"/static/{name}", f"/api/v1/staff/files/{name}"]
        # The layout before issue 11 (request uuid + index), and the API's own paths.
        paths += [f"/media/stackgan/{asset.request.public_id}/{asset.index}.png",
                  f"/media/stackgan/{asset.request.public_id}/{asset.index}-approved.png",
                  f"/api/v1/assets/{asset.public_id}/", f"/api/v1/assets/{asset.public_id}/file/",
                  f"/api/v1/assets/{asset.public_id}/manifest/", f"/api/assets/{asset.public_id}/download/"]
    checked = 0
    for client in (anonymous, editor_session, editor_key):
        for path in paths:
            response = client.get(path, follow=True)
            assert response.status_code >= 400, (path, response.status_code)
            assert PNG_MAGIC not in body_of(response), path
            assert not response.get("Content-Type", "").startswith("image/"), path
            checked += 1
    assert checked == 3 * len(paths) and len(paths) > 30
    # The same routes do serve what may be seen, so the refusals above are not a broken route.
    reviewer_session = Client()
    reviewer_session.force_login(reviewer)
    assert body_of(reviewer_session.get(pending.file.url)).startswith(PNG_MAGIC)
    assert body_of(editor_session.get(approved.approved_file.url)).startswith(PNG_MAGIC)
    assert body_of(editor_key.get(f"/api/v1/assets/{approved.public_id}/file/")).startswith(PNG_MAGIC)


def test_staff_urls_check_the_permission_on_every_request(db, active_model, no_broker, users):
    editor, reviewer = users
    asset = make_assets(editor, 1)[0]
    assert asset_file_url(asset, editor) is None  # pending: not for editors
    assert asset_file_url(asset, reviewer) == asset.file.url
    services.approve_asset(asset.pk, reviewer)
    asset.refresh_from_db()
    url = asset_file_url(asset, editor)
    assert url == asset.approved_file.url
    client = Client()
    client.force_login(editor)
    first = client.get(url)
    assert first.status_code == 200 and first["Cache-Control"] == "private, no-cache"
    assert first["Content-Disposition"] == f'attachment; filename="{asset.public_id}.png"'
    services.revoke_asset(asset.pk, reviewer, note="withdrawn")
    assert client.get(url).status_code == 404  # the same URL, refused at once
    assert Client().get(url).status_code == 404


def test_staff_urls_close_when_the_user_is_no_longer_staff(db, active_model, no_broker, users):
    """The admin turns a user away once is_staff is off; the file door behind its thumbnails must too,
    even for a reviewer whose permissions still let them see a rejected image."""
    editor, reviewer = users
    asset = make_assets(editor, 1)[0]
    services.reject_asset(asset.pk, reviewer, note="not usable")
    asset.refresh_from_db()
    session = Client()
    session.force_login(reviewer)
    assert body_of(session.get(asset.file.url)).startswith(PNG_MAGIC)
    type(reviewer).objects.filter(pk=reviewer.pk).update(is_staff=False)
    refused = session.get(asset.file.url)
    assert refused.status_code == 404 and PNG_MAGIC not in body_of(refused)


@pytest.mark.parametrize("hash_claim", [["7"], "7", "", None, 7, {"x": 1}, "0" * 64])
def test_a_signed_token_must_name_the_whole_file_hash(db, active_model, no_broker, users, hash_claim):
    """Even with the signing key (the published development one), a token's claims are checked in
    full: a one-character prefix of the hash or a value of another type is an invalid URL, not a 500."""
    from django.core import signing

    from stackgan_django.files import SIGNED_URL_SALT

    editor, reviewer = users
    asset = make_assets(editor, 1)[0]
    services.approve_asset(asset.pk, reviewer)
    asset.refresh_from_db()
    claims = {"a": str(asset.public_id)} if hash_claim is None else {"a": str(asset.public_id), "h": hash_claim}
    token = signing.TimestampSigner(salt=SIGNED_URL_SALT).sign_object(claims, compress=False)
    response = APIClient().get(f"/api/v1/files/{token}/")
    assert response.status_code in (403, 404) and "detail" in response.json()
    good = APIClient().get(f"/api/v1/files/{signed_url_token(asset)}/")
    assert good.status_code == 200 and body_of(good).startswith(PNG_MAGIC)


def test_signed_urls_expire_and_stop_at_revocation(db, active_model, no_broker, users, settings, api_key_for):
    editor, reviewer = users
    asset = make_assets(editor, 1)[0]
    services.approve_asset(asset.pk, reviewer)
    listed = api_key_for(editor, "assets:read").get(f"/api/v1/assets/{asset.public_id}/").json()
    signed = listed["signed_url"].replace("http://testserver", "")
    anonymous = APIClient()
    response = anonymous.get(signed)
    assert response.status_code == 200 and body_of(response).startswith(PNG_MAGIC)
    token = signed.rstrip("/").rsplit("/", 1)[1]
    tampered = signed.replace(token, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert anonymous.get(tampered).status_code == 403
    settings.STACKGAN = {**settings.STACKGAN, "SIGNED_URL_MAX_AGE": -1}  # every token is past its age
    expired = anonymous.get(signed)
    assert expired.status_code == 403 and "expired" in expired.json()["detail"]
    settings.STACKGAN = {**settings.STACKGAN, "SIGNED_URL_MAX_AGE": 300}
    services.revoke_asset(asset.pk, reviewer, note="withdrawn by the newsroom")
    gone = anonymous.get(signed)
    # Its holder may be anyone (a browser, a CDN): told it was revoked, not the reviewer's reason,
    # which key holders still read (test_api_v1).
    assert gone.status_code == 410 and gone.json()["reason"] == "" and "newsroom" not in gone.content.decode()


def test_deploy_checks_fail_on_public_storage(db, settings, tmp_path):
    assert check_private_files() == []
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STACKGAN = {**settings.STACKGAN, "STORAGE_OPTIONS": {"location": str(tmp_path / "media" / "private")}}
    assert [e.id for e in check_private_files()] == ["stackgan_django.E111"]
    settings.STACKGAN = {**settings.STACKGAN, "STORAGE": "tests.test_private_files.BucketLikeStorage",
                         "STORAGE_OPTIONS": {"location": str(tmp_path / "private"), "default_acl": "public-read"}}
    assert [e.id for e in check_private_files()] == ["stackgan_django.E113"]


def test_deploy_check_fails_on_a_route_serving_the_storage(db, settings, tmp_path, private_storage_in_tmp):
    settings.ROOT_URLCONF = "tests.test_private_files"
    errors = check_private_files()
    assert [e.id for e in errors] == ["stackgan_django.E112"]


class BucketLikeStorage:
    """Stands for a django-storages backend: takes its options, keeps a location."""

    def __init__(self, location: str, default_acl: str = "private", **options):
        self.location, self.default_acl = location, default_acl


def _served_private_root():
    from django.conf import settings

    return settings.STACKGAN["STORAGE_OPTIONS"]["location"]


# A URLconf that publishes the private folder, as a careless host project might.
def _urlpatterns():
    from django.urls import path
    from django.views.static import serve

    return [path("files/<path:path>", serve, {"document_root": _served_private_root()})]


def __getattr__(name: str):
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def test_existing_files_move_to_private_storage(db, active_model, no_broker, users, private_storage_in_tmp):
    """The migration's data step: a file in the old media layout gets a random private name."""
    from django.apps import apps

    migration = importlib.import_module("stackgan_django.migrations.0004_api")
    asset = make_assets(users[0], 1)[0]
    with asset.file.open("rb") as handle:
        data = handle.read()
    old_name = f"stackgan/{asset.request.public_id}/0.png"
    storages["default"].save(old_name, ContentFile(data))
    Asset.objects.filter(pk=asset.pk).update(file=old_name)
    migration.move_files_to_private_storage(apps, None)
    asset.refresh_from_db()
    assert asset.file.name != old_name and str(asset.request.public_id) not in asset.file.name
    assert not storages["default"].exists(old_name)
    with asset.file.open("rb") as handle:
        assert handle.read() == data


def test_signed_urls_count_under_the_files_rate_per_address(db, active_model, no_broker, users, settings):
    asset = make_assets(users[0], 1)[0]
    services.approve_asset(asset.pk, users[1])
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"files": "2/minute", "anonymous": "1/minute"}}
    signed = f"/api/v1/files/{signed_url_token(Asset.objects.get(pk=asset.pk))}/"
    browser = APIClient(REMOTE_ADDR="192.0.2.10")
    assert [browser.get(signed).status_code for _ in range(3)] == [200, 200, 429]
    assert APIClient(REMOTE_ADDR="192.0.2.11").get(signed).status_code == 200  # another address


def test_a_forged_x_forwarded_for_does_not_escape_the_rate_limit(db, active_model, no_broker, users, settings):
    """DRF takes the client's address from X-Forwarded-For unless NUM_PROXIES is set: a new forged
    address per request was a fresh allowance each time. Without trusted proxies the header is ignored."""
    asset = make_assets(users[0], 1)[0]
    services.approve_asset(asset.pk, users[1])
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"files": "2/minute"}}
    signed = f"/api/v1/files/{signed_url_token(Asset.objects.get(pk=asset.pk))}/"
    browser = APIClient(REMOTE_ADDR="192.0.2.30")
    codes = [browser.head(signed, HTTP_X_FORWARDED_FOR=f"10.0.{i}.1").status_code for i in range(3)]
    assert codes == [200, 200, 429]


def test_behind_a_trusted_proxy_its_last_x_forwarded_for_hop_is_the_client(db, active_model, no_broker, users,
                                                                           settings):
    """DJANGO_TRUSTED_PROXIES=1 (REST_FRAMEWORK["NUM_PROXIES"]): every request comes from the proxy,
    which appends the address it saw; what the client wrote before that is still forged."""
    asset = make_assets(users[0], 1)[0]
    services.approve_asset(asset.pk, users[1])
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"files": "2/minute"}}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    signed = f"/api/v1/files/{signed_url_token(Asset.objects.get(pk=asset.pk))}/"
    proxy = APIClient(REMOTE_ADDR="10.9.9.9")
    codes = [proxy.head(signed, HTTP_X_FORWARDED_FOR=f"10.0.{i}.1, 198.51.100.40").status_code for i in range(3)]
    assert codes == [200, 200, 429]
    assert proxy.head(signed, HTTP_X_FORWARDED_FOR="198.51.100.41").status_code == 200  # another client
    # A hop that is not an address is no client's: it counts as the proxy's own.
    assert [proxy.head(signed, HTTP_X_FORWARDED_FOR=f"junk-{i}").status_code for i in range(3)] == [200, 200, 429]


def test_the_admin_log_in_lock_ignores_a_forged_x_forwarded_for(db, users, settings):
    settings.STACKGAN = {**settings.STACKGAN, "ADMIN_LOGIN_MAX_FAILURES": 2}
    client = Client(REMOTE_ADDR="203.0.113.50")
    for i in range(2):
        client.post("/admin/login/", {"username": "editor", "password": "guess"}, HTTP_X_FORWARDED_FOR=f"10.2.{i}.1")
    response = client.post("/admin/login/", {"username": "editor", "password": "pw-editor-1"},
                           HTTP_X_FORWARDED_FOR="10.2.9.1")
    assert response.status_code == 429
    # Behind one trusted proxy, the hop it appended is the client (the same helper as the API's).
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    response = client.post("/admin/login/", {"username": "editor", "password": "pw-editor-1"},
                           HTTP_X_FORWARDED_FOR="203.0.113.50, 198.51.100.60")
    assert response.status_code == 302


def test_checks_survive_broken_settings(settings):
    """A typo in STACKGAN is reported once (E001) by `check`, including `check --deploy`, never a crash."""
    from django.core.checks import run_checks

    settings.STACKGAN = {"WEBHOOK": []}
    ids = [m.id for m in run_checks(include_deployment_checks=True)]
    assert "stackgan_django.E001" in ids


def admin_image(client, asset, approved_file=False):
    """The admin's image view of an asset (its generated file, or the approved one)."""
    suffix = "?file=approved" if approved_file else ""
    return client.get(f"/admin/stackgan_django/asset/{asset.pk}/image/{suffix}")


def test_the_admin_image_view_follows_the_asset_state_for_editors(db, active_model, no_broker, users):
    """Editors see their own images while they wait for review and once approved; a rejection or a
    revocation stops both files at once, the signed approved file included (it would still verify
    as approved). Compliance staff keep seeing everything they review."""
    editor, reviewer = users
    approved, pending, rejected, revoked = assets_in_every_state(editor, reviewer)
    editor_session, reviewer_session = Client(), Client()
    editor_session.force_login(editor)
    reviewer_session.force_login(reviewer)

    for asset, approved_file in ((pending, False), (approved, False), (approved, True)):
        response = admin_image(editor_session, asset, approved_file)
        assert response.status_code == 200 and body_of(response).startswith(PNG_MAGIC), (asset.state, approved_file)
        # Revalidated on every use: a browser must not keep showing it after a revocation.
        cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
        assert {"private", "no-cache"} <= cache_control and "max-age=300" not in cache_control
        assert response["Content-Disposition"].startswith("inline")
    for asset, approved_file in ((rejected, False), (revoked, False), (revoked, True), (pending, True)):
        response = admin_image(editor_session, asset, approved_file)
        assert response.status_code == 404, (asset.state, approved_file)
        assert PNG_MAGIC not in body_of(response)
    for asset in (approved, pending, rejected, revoked):
        assert admin_image(reviewer_session, asset).status_code == 200, asset.state
    assert admin_image(reviewer_session, revoked, approved_file=True).status_code == 200
    # The same URL the editor just loaded is refused from the moment of the revocation.
    url = f"/admin/stackgan_django/asset/{approved.pk}/image/?file=approved"
    etag = editor_session.get(url)["ETag"]
    assert editor_session.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 304
    services.revoke_asset(approved.pk, reviewer, note="withdrawn")
    assert editor_session.get(url, HTTP_IF_NONE_MATCH=etag).status_code == 404
    assert editor_session.get(url.split("?")[0]).status_code == 404


def test_pages_show_a_withdrawn_image_as_withdrawn_not_broken(db, active_model, no_broker, users):
    editor, reviewer = users
    approved, pending, rejected, revoked = assets_in_every_state(editor, reviewer)
    client = Client()
    client.force_login(editor)
    page = client.get(f"/admin/stackgan_django/generationrequest/{pending.request_id}/change/").content.decode()
    for asset in (approved, pending):
        assert f"/admin/stackgan_django/asset/{asset.pk}/image/" in page
    for asset in (rejected, revoked):
        assert f"/admin/stackgan_django/asset/{asset.pk}/image/" not in page
    assert page.count("no longer shown") == 2
    asset_page = client.get(f"/admin/stackgan_django/asset/{revoked.pk}/change/").content.decode()
    assert "/image/" not in asset_page and "no longer shown" in asset_page
    desk = client.get("/admin/stackgan_django/asset/?review=all").content.decode()
    assert f"/asset/{pending.pk}/image/" in desk and f"/asset/{rejected.pk}/image/" not in desk
    client.force_login(reviewer)
    asset_page = client.get(f"/admin/stackgan_django/asset/{revoked.pk}/change/").content.decode()
    assert f"/admin/stackgan_django/asset/{revoked.pk}/image/" in asset_page


def test_a_file_written_over_in_storage_is_not_served_under_the_asset(db, active_model, no_broker, users, api_key_for,
                                                                     caplog):
    """Every door serves the file with its recorded SHA-256 as ETag; a file written over in storage
    since (another picture under the approved file's name) went out as the approved asset, through
    the API, signed URLs and the admin alike. Now a file whose hash is not the recorded one is 404,
    and the mismatch is logged for the operator."""
    editor, reviewer = users
    asset = services.approve_asset(make_assets(editor, 1)[0].pk, reviewer)
    client = api_key_for(editor, "assets:read")
    signed = client.get(f"/api/v1/assets/{asset.public_id}/").json()["signed_url"].replace("http://testserver", "")
    storage = asset.approved_file.storage
    original = storage.open(asset.approved_file.name).read()
    storage.delete(asset.approved_file.name)
    storage.save(asset.approved_file.name, ContentFile(PNG_MAGIC + b"another picture"))
    staff = Client()
    staff.force_login(reviewer)
    for response in (client.get(f"/api/v1/assets/{asset.public_id}/file/"), APIClient().get(signed),
                     staff.get(f"/admin/stackgan_django/asset/{asset.pk}/image/?file=approved"),
                     client.get(f"/api/v1/assets/{asset.public_id}/manifest/")):
        assert response.status_code == 404
        assert b"another picture" not in body_of(response)
    assert "does not match" in caplog.text
    storage.delete(asset.approved_file.name)
    storage.save(asset.approved_file.name, ContentFile(original))
    served = client.get(f"/api/v1/assets/{asset.public_id}/file/")
    assert served.status_code == 200 and body_of(served) == original
    assert served["ETag"] == f'"{asset.approved_sha256}"'


def test_an_image_a_policy_rule_flagged_reaches_its_editor_only_once_approved(db, active_model, no_broker, users,
                                                                              desk_assets):
    """A caption the usage policy sends to review, or an image the output policy flags, is the
    reviewer's to see first: shown to its editor while pending, the full-size signed file was theirs
    to keep even if the reviewer then rejected it. An image nothing flagged shows at once, as before."""
    editor, reviewer = users
    # Flagged by the usage policy (the caption's negated word) and by the output policy (the image).
    by_caption = make_assets(editor, 2, caption="a horror poster, no gore")
    assert by_caption[0].request.decisions.filter(stage="usage", outcome="review").exists()
    by_image = desk_assets(editor, 1, flagged=True)[0]
    assert by_image.decisions.filter(stage="output", outcome="review").exists()
    unflagged = make_assets(editor, 1)[0]
    editor_session, reviewer_session = Client(), Client()
    editor_session.force_login(editor)
    reviewer_session.force_login(reviewer)

    for asset in (*by_caption, by_image):
        response = admin_image(editor_session, asset)
        assert response.status_code == 404 and PNG_MAGIC not in body_of(response), asset.pk
        assert body_of(admin_image(reviewer_session, asset)).startswith(PNG_MAGIC)
    assert body_of(admin_image(editor_session, unflagged)).startswith(PNG_MAGIC)

    # The pages say why instead of showing a broken image.
    request_page = editor_session.get(
        f"/admin/stackgan_django/generationrequest/{by_caption[0].request_id}/change/").content.decode()
    assert "/image/" not in request_page and request_page.count("Held for review") == 2
    status = editor_session.get(f"/admin/stackgan_django/generationrequest/{by_image.request_id}/status/").content.decode()
    assert "/image/" not in status and "you will see it once a reviewer approves it" in status
    asset_page = editor_session.get(f"/admin/stackgan_django/asset/{by_image.pk}/change/").content.decode()
    assert "/image/" not in asset_page and "Held for review" in asset_page and "no longer shown" not in asset_page
    desk = editor_session.get("/admin/stackgan_django/asset/").content.decode()
    assert f"/asset/{by_image.pk}/image/" not in desk and "held for review" in desk
    assert f"/asset/{unflagged.pk}/image/" in desk
    reviewer_page = reviewer_session.get(f"/admin/stackgan_django/asset/{by_image.pk}/change/").content.decode()
    assert f"/asset/{by_image.pk}/image/" in reviewer_page and "Held for review" not in reviewer_page

    # Approved: the editor sees both files; rejected: never.
    approved = services.approve_asset(by_caption[0].pk, reviewer, note="a poster, nothing shown")
    services.reject_asset(by_caption[1].pk, reviewer, note="too graphic")
    assert body_of(admin_image(editor_session, approved)).startswith(PNG_MAGIC)
    assert body_of(admin_image(editor_session, approved, approved_file=True)).startswith(PNG_MAGIC)
    assert admin_image(editor_session, by_caption[1]).status_code == 404
    request_page = editor_session.get(
        f"/admin/stackgan_django/generationrequest/{approved.request_id}/change/").content.decode()
    assert f"/asset/{approved.pk}/image/" in request_page and "Held for review" not in request_page
