"""API v1 beyond hostile input: assets (detail, conditional file requests, manifest, 410 with the
reason), requests seen only by their owner, API keys (hashed at rest, shown once, command and admin),
and webhooks on approve and revoke delivered by a real Celery worker to a real HTTP endpoint."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from stackgan_django import services
from stackgan_django.models import ApiKey, AuditEvent, WebhookDelivery
from tests.api_assets import make_assets


@pytest.fixture
def approved_asset(db, active_model, no_broker, users):
    asset = make_assets(users[0], 1)[0]
    return services.approve_asset(asset.pk, users[1])


def test_asset_detail_carries_what_a_client_needs(approved_asset, users, api_key_for):
    body = api_key_for(users[0], "assets:read").get(f"/api/v1/assets/{approved_asset.public_id}/").json()
    assert body["id"] == str(approved_asset.public_id) and body["sha256"] == approved_asset.approved_sha256
    assert body["ai_generated"] is True and body["provenance_state"] == "Trusted"
    assert body["file_url"].endswith(f"/api/v1/assets/{approved_asset.public_id}/file/")
    assert "/api/v1/files/" in body["signed_url"] and body["signed_url_expires_at"]


def test_file_conditional_requests(approved_asset, users, api_key_for):
    api = api_key_for(users[0], "assets:read")
    url = f"/api/v1/assets/{approved_asset.public_id}/file/"
    first = api.get(url)
    etag, modified = first["ETag"], first["Last-Modified"]
    assert etag == f'"{approved_asset.approved_sha256}"'
    assert api.get(url, HTTP_IF_NONE_MATCH=f'"other", {etag}').status_code == 304
    assert api.get(url, HTTP_IF_NONE_MATCH="*").status_code == 304
    assert api.get(url, HTTP_IF_MODIFIED_SINCE=modified).status_code == 304
    assert api.get(url, HTTP_IF_MATCH='"someone-elses"').status_code == 412
    assert api.get(url, HTTP_IF_MATCH=etag).status_code == 200
    assert api.get(url, HTTP_IF_NONE_MATCH='"stale"').status_code == 200


def test_manifest_is_the_c2pa_store_without_request_ids(approved_asset, users, api_key_for):
    response = api_key_for(users[0], "assets:read").get(f"/api/v1/assets/{approved_asset.public_id}/manifest/")
    assert response.status_code == 200
    store = response.json()
    assert store["active_manifest"] in store["manifests"] and len(store["manifests"]) == 2
    labels = {a["label"] for m in store["manifests"].values() for a in m.get("assertions", [])}
    assert {"org.stackgan-django.generation", "org.stackgan-django.review"} <= labels
    assert str(approved_asset.request.public_id) not in response.content.decode()


def test_revoked_assets_are_410_with_the_reason(approved_asset, users, api_key_for):
    services.revoke_asset(approved_asset.pk, users[1], note="the rights holder withdrew consent")
    api = api_key_for(users[0], "assets:read")
    for suffix in ("", "file/", "manifest/"):
        response = api.get(f"/api/v1/assets/{approved_asset.public_id}/{suffix}")
        assert response.status_code == 410, suffix
        assert response.json()["reason"] == "the rights holder withdrew consent" and response.json()["revoked_at"]


def test_api_answers_are_kept_out_of_shared_caches(approved_asset, users, api_key_for):
    """Answers carry captions, manifests and signed URLs that work without a key: no shared cache
    may keep one (private, no-store; Vary on both credentials). Files keep their own revalidation."""
    api = api_key_for(users[0], "assets:read", "requests:write")
    for path in ("/api/v1/assets/", f"/api/v1/assets/{approved_asset.public_id}/",
                 f"/api/v1/assets/{approved_asset.public_id}/manifest/", "/api/v1/requests/", "/api/v1/assets/not-an-id/"):
        response = api.get(path)
        cache_control = {part.strip() for part in response["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= cache_control, path
        assert {"Authorization", "Cookie"} <= {part.strip() for part in response["Vary"].split(",")}, path
    file_response = api.get(f"/api/v1/assets/{approved_asset.public_id}/file/")
    assert "no-store" not in file_response["Cache-Control"] and "private" in file_response["Cache-Control"]


def test_the_verify_endpoint_needs_the_view_permission_as_the_admin_page_does(db, users, api_key_for):
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile

    nobody = get_user_model().objects.create_user("nobody", password="pw-nobody-1", is_staff=True)
    upload = SimpleUploadedFile("x.png", b"not really a png", "image/png")
    assert api_key_for(nobody, "verify").post("/api/v1/verify/", {"file": upload}, format="multipart").status_code == 403


def test_requests_are_visible_to_their_owner_only(db, active_model, no_broker, users, api_key_for):
    from django.contrib.auth.models import Permission

    editor, reviewer = users
    reviewer.user_permissions.add(Permission.objects.get(codename="add_generationrequest"))
    mine = api_key_for(editor, "requests:write")
    theirs = api_key_for(reviewer, "requests:write")
    created = mine.post("/api/v1/requests/", {"caption": "a red apple", "num_images": 1}, format="json").json()
    assert mine.get(f"/api/v1/requests/{created['id']}/").status_code == 200
    assert theirs.get(f"/api/v1/requests/{created['id']}/").status_code == 404
    assert [r["id"] for r in mine.get("/api/v1/requests/").json()["results"]] == [created["id"]]
    assert theirs.get("/api/v1/requests/").json()["count"] == 0


def test_a_post_sent_again_with_its_idempotency_key_asks_for_the_images_once(db, active_model, no_broker, users,
                                                                               api_key_for):
    """A client whose answer was lost sends the POST again: with the same Idempotency-Key it gets the
    request the first made (a fifth probe found two POSTs made two requests and two GPU jobs)."""
    from django.contrib.auth.models import Permission

    from stackgan_django.models import GenerationRequest

    editor, reviewer = users
    reviewer.user_permissions.add(Permission.objects.get(codename="add_generationrequest"))
    mine, theirs = api_key_for(editor, "requests:write"), api_key_for(reviewer, "requests:write")
    body = {"caption": "a red apple", "num_images": 1, "purpose": "editorial"}
    first = mine.post("/api/v1/requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-77")
    again = mine.post("/api/v1/requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-77")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert GenerationRequest.objects.filter(requested_by=editor).count() == 1
    # The same key with another body is refused; the key is the client's, so another user's is theirs.
    other = mine.post("/api/v1/requests/", {**body, "caption": "a green pear"}, format="json",
                      HTTP_IDEMPOTENCY_KEY="order-77")
    assert other.status_code == 409 and "another caption" in other.json()["detail"]
    assert theirs.post("/api/v1/requests/", body, format="json", HTTP_IDEMPOTENCY_KEY="order-77").status_code == 202
    assert GenerationRequest.objects.count() == 2
    # A refused caption is answered the same way each time, and recorded once.
    refused = {**body, "caption": "a n.u.d.e figure"}
    answers = [mine.post("/api/v1/requests/", refused, format="json", HTTP_IDEMPOTENCY_KEY="order-78") for _ in range(2)]
    assert [a.status_code for a in answers] == [422, 422] and answers[0].json()["id"] == answers[1].json()["id"]
    for bad in ("", " ", "x" * 256, "clé", "two words"):
        response = mine.post("/api/v1/requests/", body, format="json", HTTP_IDEMPOTENCY_KEY=bad)
        assert response.status_code == 400 and "Idempotency-Key" in response.json()["detail"], bad
    assert GenerationRequest.objects.count() == 3


# -- keys -------------------------------------------------------------------------------------------

def test_keys_are_hashed_at_rest_and_audited(db, users, api_key_for):
    client = api_key_for(users[0], "verify")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {ApiKey._meta.db_table}")
        rows = cursor.fetchall()
    assert rows and all(client.secret not in str(value) for row in rows for value in row)
    assert client.secret.split(".")[1] not in str(rows)
    assert AuditEvent.objects.filter(action="api_key.created", data__prefix=client.api_key.prefix).exists()


def test_the_command_creates_lists_and_revokes_keys(db, users):
    out = StringIO()
    call_command("api_keys", "create", "editor", "cms", "--scope", "assets:read", "--expires-in-days", "30", stdout=out)
    secret = out.getvalue().strip().splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {secret}")
    assert client.get("/api/v1/assets/").status_code == 200
    prefix = secret.split(".")[0]
    listing = StringIO()
    call_command("api_keys", "list", stdout=listing)
    assert prefix in listing.getvalue() and "active" in listing.getvalue() and secret not in listing.getvalue()
    call_command("api_keys", "revoke", prefix, stdout=StringIO())
    assert client.get("/api/v1/assets/").status_code == 401
    with pytest.raises(CommandError, match="no user"):
        call_command("api_keys", "create", "nobody", "x", "--scope", "verify", stdout=StringIO())
    for days in ("0", "999999999"):  # the second overflowed the calendar with a traceback
        with pytest.raises(CommandError, match="between 1 and"):
            call_command("api_keys", "create", "editor", "x", "--scope", "verify", "--expires-in-days", days,
                         stdout=StringIO())
    with pytest.raises(CommandError, match="no API key"):
        call_command("api_keys", "revoke", "zzzzzzzz", stdout=StringIO())


def test_a_session_gives_api_access_only_while_its_user_is_staff(db, users):
    """The API accepts the admin's session; a user whose staff status is taken away is out of the
    admin at once, and must be out of the API at once too, not when the session expires."""
    editor = users[0]
    browser = Client()
    browser.force_login(editor)
    assert browser.get("/api/v1/assets/").status_code == 200
    assert browser.get("/api/v1/requests/").status_code == 200
    editor.is_staff = False
    editor.save(update_fields=["is_staff"])
    for path in ("/api/v1/assets/", "/api/v1/requests/"):
        response = browser.get(path)
        assert response.status_code == 401 and response.json()["detail"]
    assert browser.get("/admin/").status_code == 302  # the admin sends them to its log-in page too


def test_the_admin_shows_a_new_key_once(db, users):
    from django.contrib.auth import get_user_model

    admin_user = get_user_model().objects.create_superuser("root", password="pw-root-123")
    browser = Client()
    browser.force_login(admin_user)
    response = browser.post("/admin/stackgan_django/apikey/add/",
                            {"name": "dam", "user": users[0].pk, "scopes": ["assets:read", "verify"], "expiry_date_0": "",
                             "expiry_date_1": ""}, follow=True)
    assert response.status_code == 200
    api_key = ApiKey.objects.get(name="dam")
    assert api_key.scopes == ["assets:read", "verify"]
    shown = " ".join(str(m) for m in response.context["messages"])
    prefix, secret = re.search(r"The API key for dam is: (\w+)\.(\w+)\.", shown).groups()
    assert prefix == api_key.prefix
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {prefix}.{secret}")
    assert client.get("/api/v1/assets/").status_code == 200
    page = browser.get(f"/admin/stackgan_django/apikey/{api_key.pk}/change/")
    assert secret.encode() not in page.content  # never shown again


@pytest.mark.parametrize(("day", "expected"), [("2020-01-01", b"lies in the past"), ("9999-12-31", b"days away")])
def test_the_admin_refuses_a_key_born_expired_or_with_a_calendar_end_expiry(db, users, day, expected):
    """The command refused both already (--expires-in-days 1 to 36,500); the admin's form took them (a
    fifth probe). A key born expired is a mistake; "never" is an empty expiry."""
    from django.contrib.auth import get_user_model

    browser = Client()
    browser.force_login(get_user_model().objects.create_superuser("root", password="pw-root-123"))
    form = {"name": "dated", "user": users[0].pk, "scopes": ["assets:read"], "expiry_date_0": day,
            "expiry_date_1": "12:00:00"}
    response = browser.post("/admin/stackgan_django/apikey/add/", form)
    assert response.status_code == 200 and expected in response.content
    assert not ApiKey.objects.filter(name="dated").exists()
    with pytest.raises(services.InvalidApiKey, match="past"):
        services.create_api_key(users[0], "dated", ["assets:read"], timezone.now() - timedelta(seconds=1))
    next_year = (timezone.now() + timedelta(days=365)).strftime("%Y-%m-%d")
    assert browser.post("/admin/stackgan_django/apikey/add/", {**form, "expiry_date_0": next_year}).status_code == 302


def test_only_a_superuser_creates_a_key_for_another_user(db, users):
    """A key acts as its user: staff who may add keys create them for themselves only, or anyone
    holding add_apikey could act as a superuser through a key made in the superuser's name."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    root = get_user_model().objects.create_superuser("root", password="pw-root-123")
    clerk = users[1]
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["add_apikey", "view_apikey"]))
    browser = Client()
    browser.force_login(clerk)
    form = {"name": "as-root", "user": root.pk, "scopes": ["assets:read"], "expiry_date_0": "", "expiry_date_1": ""}
    response = browser.post("/admin/stackgan_django/apikey/add/", form)
    assert response.status_code == 200 and b"Only a superuser may create a key for another user" in response.content
    assert not ApiKey.objects.filter(name="as-root").exists()
    response = browser.post("/admin/stackgan_django/apikey/add/", {**form, "name": "mine", "user": clerk.pk})
    assert response.status_code == 302 and ApiKey.objects.get(name="mine").user == clerk
    admin_browser = Client()
    admin_browser.force_login(root)
    response = admin_browser.post("/admin/stackgan_django/apikey/add/", {**form, "name": "for-clerk", "user": clerk.pk})
    assert response.status_code == 302 and ApiKey.objects.get(name="for-clerk").user == clerk


# -- webhooks ---------------------------------------------------------------------------------------

class Receiver:
    """A real HTTP endpoint on loopback that records each request and answers with the given
    status (and ``location``, for a redirect)."""

    def __init__(self, status: int = 204, location: str | None = None):
        self.received: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.end_headers()

            do_GET = do_POST

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()


def signed_correctly(headers: dict, body: bytes, secret: str) -> bool:
    parts = dict(item.split("=", 1) for item in headers["X-Stackgan-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(parts["v1"], expected)


@pytest.mark.integration
def test_webhooks_on_approve_and_revoke_through_a_real_worker(celery_worker, worker_queue, active_model, users,
                                                              settings, receiver):
    settings.STACKGAN = {**settings.STACKGAN, "WEBHOOK_QUEUE": worker_queue,
                         "WEBHOOKS": [{"url": receiver.url, "secret": "s3cret"}]}
    asset = make_assets(users[0], 1)[0]
    services.approve_asset(asset.pk, users[1])
    services.revoke_asset(asset.pk, users[1], note="withdrawn")
    deadline = time.monotonic() + 60
    while len(receiver.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    events = [json.loads(body)["event"] for _, body in receiver.received]
    assert sorted(events) == ["asset.approved", "asset.revoked"]
    for headers, body in receiver.received:
        assert signed_correctly(headers, body, "s3cret")
        assert json.loads(body)["asset"]["id"] == str(asset.public_id)
    while WebhookDelivery.objects.filter(state="delivered").count() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    for delivery in WebhookDelivery.objects.all():
        assert delivery.state == "delivered" and delivery.attempts == 1
        assert list(delivery.attempt_records.values_list("status_code", flat=True)) == [204]


def test_failed_webhooks_are_recorded_and_retried_until_the_limit(db, active_model, no_broker, users, settings,
                                                                  django_capture_on_commit_callbacks):
    failing = Receiver(status=500)
    try:
        settings.STACKGAN = {**settings.STACKGAN, "WEBHOOK_MAX_ATTEMPTS": 3,
                             "WEBHOOKS": [{"url": failing.url, "secret": "k", "events": ["asset.revoked"]},
                                          {"url": "http://127.0.0.1:9/closed-port", "secret": "k"}]}
        asset = make_assets(users[0], 1)[0]
        with django_capture_on_commit_callbacks() as callbacks:  # sent by hand below, no broker here
            services.approve_asset(asset.pk, users[1])
        assert len(callbacks) == 1  # only the second endpoint wants approvals
        unreachable = WebhookDelivery.objects.get(event="asset.approved")
        outcome = services.deliver_webhook(unreachable.pk)
        assert outcome.state == "pending" and outcome.retry_in == 30
        attempt = unreachable.attempt_records.get()
        assert attempt.status_code is None and "Error" in attempt.error
        services.revoke_asset(asset.pk, users[1], note="oops")
        to_failing = WebhookDelivery.objects.get(event="asset.revoked", url=failing.url)
        outcomes = [services.deliver_webhook(to_failing.pk) for _ in range(4)]
        assert [o.retry_in for o in outcomes] == [30, 60, None, None]
        assert [o.state for o in outcomes] == ["pending", "pending", "failed", "failed"]
        assert list(to_failing.attempt_records.values_list("status_code", flat=True)) == [500, 500, 500]
        assert len(failing.received) == 3  # a finished delivery is never sent again
    finally:
        failing.close()


def test_webhooks_do_not_follow_redirects(db, active_model, no_broker, users, settings,
                                          django_capture_on_commit_callbacks):
    """A receiver that answers 302 (compromised, or a moved endpoint) cannot send our POST, with
    its signature headers, on to another address (an internal service, plain http): the redirect
    is a failed attempt."""
    internal = Receiver()
    redirecting = Receiver(status=302, location=internal.url)
    try:
        settings.STACKGAN = {**settings.STACKGAN, "WEBHOOKS": [{"url": redirecting.url, "secret": "k"}]}
        asset = make_assets(users[0], 1)[0]
        with django_capture_on_commit_callbacks():
            services.approve_asset(asset.pk, users[1])
        delivery = WebhookDelivery.objects.get()
        outcome = services.deliver_webhook(delivery.pk)
        assert len(redirecting.received) == 1 and internal.received == []
        assert outcome.state == "pending"
        attempt = delivery.attempt_records.get()
        assert attempt.status_code == 302 and "not followed" in attempt.error
    finally:
        internal.close()
        redirecting.close()


def test_a_webhook_endpoint_removed_from_the_settings_gets_nothing_more(db, active_model, no_broker, users, settings,
                                                                        receiver, django_capture_on_commit_callbacks):
    """Deliveries queued before an endpoint was removed (a decommissioned receiver, a domain that
    may change hands) are not sent there, nor signed with an empty key."""
    settings.STACKGAN = {**settings.STACKGAN, "WEBHOOKS": [{"url": receiver.url, "secret": "k"}]}
    asset = make_assets(users[0], 1)[0]
    with django_capture_on_commit_callbacks():
        services.approve_asset(asset.pk, users[1])
    settings.STACKGAN = {**settings.STACKGAN, "WEBHOOKS": []}
    delivery = WebhookDelivery.objects.get()
    outcome = services.deliver_webhook(delivery.pk)
    assert receiver.received == []
    assert outcome.state == "failed" and outcome.retry_in is None
    assert "no longer configured" in delivery.attempt_records.get().error


def test_a_receiver_that_trickles_its_reply_cannot_hold_the_webhook_worker(db, active_model, no_broker, users,
                                                                           settings, django_capture_on_commit_callbacks):
    """The timeout bounds the whole reply, not each read: a receiver sending a byte every 0.2 s
    (each read well inside the timeout) is cut off at WEBHOOK_TIMEOUT_SECONDS, and the attempt is a
    failure to retry."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        connection, _ = listener.accept()
        with connection:
            connection.recv(65536)
            for byte in b"HTTP/1.1 204 No Content\r\n" + b"X-Slow: " + b"x" * 1000:
                if stop.is_set():
                    return
                try:
                    connection.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
        settings.STACKGAN = {**settings.STACKGAN, "WEBHOOK_TIMEOUT_SECONDS": 1.5,
                             "WEBHOOKS": [{"url": url, "secret": "k"}]}
        asset = make_assets(users[0], 1)[0]
        with django_capture_on_commit_callbacks():
            services.approve_asset(asset.pk, users[1])
        delivery = WebhookDelivery.objects.get()
        began = time.monotonic()
        outcome = services.deliver_webhook(delivery.pk)
        assert time.monotonic() - began < 6  # 1.5 s allowed; the trickle alone would take 200 s
        assert outcome.state == "pending" and outcome.retry_in is not None
        attempt = delivery.attempt_records.get()
        assert attempt.status_code is None and "timeout" in attempt.error.lower()
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def test_webhook_settings_are_checked(settings):
    from stackgan_django.checks import check_webhooks

    settings.STACKGAN = {**settings.STACKGAN, "WEBHOOKS": [
        {"url": "https://dam.example/hook", "secret": "k"}, {"url": "file:///etc/passwd", "secret": "k"},
        {"url": "https://dam.example/hook"}, {"url": "https://dam.example/hook", "secret": "k", "events": ["asset.deleted"]}]}
    assert [e.msg.split(" ", 3)[3][:10] for e in check_webhooks()] == ["needs an h", "needs a se", "names unkn"]


def test_the_admin_cannot_move_a_key_to_another_user_or_widen_its_scopes(db, users, api_key_for):
    from django.contrib.auth import get_user_model

    from stackgan_django.models import AuditEvent

    editor, reviewer = users
    admin_user = get_user_model().objects.create_superuser("root", password="pw-root-123")
    browser = Client()
    browser.force_login(admin_user)
    api_key = api_key_for(editor, "verify").api_key
    response = browser.post(f"/admin/stackgan_django/apikey/{api_key.pk}/change/",
                            {"name": "renamed", "user": reviewer.pk, "scopes": ["assets:read", "verify", "requests:write"],
                             "expiry_date_0": "", "expiry_date_1": ""})
    assert response.status_code == 302
    api_key.refresh_from_db()
    assert api_key.user_id == editor.pk and api_key.scopes == ["verify"] and api_key.name == "renamed"
    event = AuditEvent.objects.filter(action="api_key.changed").latest("pk")
    assert event.data["fields"] == ["name"] and event.data["prefix"] == api_key.prefix
