"""The REST API and the admin, through Django's test client: what clients and staff actually see."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from rest_framework.test import APIClient

from policies import Verdict
from stackgan_django import services
from stackgan_django.audit import verify_chain
from stackgan_django.models import Asset, AuditEvent, GenerationRequest


def make_assets(user, count=2):
    request = services.submit_request(caption="a red apple with a green leaf", num_images=count, user=user)
    services.start_request(request.pk)
    outputs = []
    for index in range(count):
        image = Image.effect_noise((64, 64), 50).convert("RGB")
        outputs.append(services.stamp_output(request, services.GeneratedOutput(index, index, image, Verdict("output", "v"))))
    return services.finish_request(request.pk, outputs, 0.1)


@pytest.fixture
def api(users, api_key_for):
    return api_key_for(users[0])


def test_api_lists_and_serves_approved_assets_only(db, active_model, no_broker, users, api):
    approved, pending = make_assets(users[0])
    services.approve_asset(approved.pk, users[1])
    response = api.get("/api/v1/assets/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1 and body["results"][0]["id"] == str(approved.public_id)
    item = body["results"][0]
    assert item["ai_generated"] is True and item["digital_source_type"].endswith("trainedAlgorithmicMedia")
    assert item["provenance_state"] == "Trusted"
    assert api.get(f"/api/v1/assets/{pending.public_id}/").status_code == 404
    assert api.get("/api/v1/assets/not-a-uuid/").status_code == 404
    download = api.get(f"/api/v1/assets/{approved.public_id}/file/")
    assert download.status_code == 200 and download["Content-Type"] == "image/png"
    assert download["Content-Disposition"] == f'attachment; filename="{approved.public_id}.png"'
    data = b"".join(download.streaming_content)
    assert services.verify_file(data)["state"] == "Trusted" and len(services.verify_file(data)["manifests"]) == 2
    again = api.get(f"/api/v1/assets/{approved.public_id}/file/", HTTP_IF_NONE_MATCH=download["ETag"])
    assert again.status_code == 304
    services.revoke_asset(approved.pk, users[1], note="rights holder objected")
    assert api.get("/api/v1/assets/").json()["count"] == 0
    gone = api.get(f"/api/v1/assets/{approved.public_id}/file/")
    assert gone.status_code == 410 and gone.json()["reason"] == "rights holder objected"


def test_api_filters_and_bad_parameters(db, active_model, no_broker, users, api):
    asset = make_assets(users[0], 1)[0]
    services.approve_asset(asset.pk, users[1])
    assert api.get("/api/v1/assets/?caption=apple").json()["count"] == 1
    assert api.get("/api/v1/assets/?caption=banana").json()["count"] == 0
    assert api.get("/api/v1/assets/?model=tiny-test").json()["count"] == 1
    bad = api.get("/api/v1/assets/?created_after=yesterday")
    assert bad.status_code == 400 and "created_after" in bad.json()


def test_api_needs_a_key(db):
    response = APIClient().get("/api/v1/assets/")
    assert response.status_code == 401 and response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize(("payload", "field"), [
    ({"caption": "", "num_images": 2}, "caption"), ({"caption": "a cat", "num_images": 0}, "num_images"),
    ({"caption": "a cat", "num_images": "many"}, "num_images"), ({"num_images": 2}, "caption"),
    ({"caption": "a cat", "seed": -5}, "seed"), ({"caption": "x" * 200_000}, "caption"),
    # JSON's own types only: no number for a caption, no string, float or boolean for a count.
    ({"caption": 5}, "caption"), ({"caption": "a cat", "purpose": 7}, "purpose"),
    ({"caption": "a cat", "num_images": "3"}, "num_images"), ({"caption": "a cat", "num_images": 2.0}, "num_images"),
    ({"caption": "a cat", "num_images": True}, "num_images"), ({"caption": "a cat", "seed": "12"}, "seed"),
    ({"caption": "a cat", "seed": False}, "seed"),
    # Nothing that shows: an input error like an empty caption, not a policy refusal.
    ({"caption": "\u200b\u200c\u200d\u2060\ufeff"}, "caption"), ({"caption": "\u3164 \u00ad"}, "caption"),
])
def test_api_request_bad_input_is_400_and_writes_nothing(db, active_model, no_broker, users, api, payload, field):
    response = api.post("/api/v1/requests/", payload, format="json")
    assert response.status_code == 400 and field in response.json()
    assert GenerationRequest.objects.count() == 0


@pytest.mark.parametrize(("digits", "message"), [
    ("9" * 5000, "less than or equal to 9223372036854775807"), ("-" + "9" * 5000, "greater than or equal to 0")])
def test_api_a_number_too_long_to_convert_gets_the_range_message(db, active_model, no_broker, users, api, digits, message):
    body = b'{"caption": "a cat", "seed": ' + digits.encode() + b"}"
    response = api.generic("POST", "/api/v1/requests/", body, content_type="application/json")
    assert response.status_code == 400 and message in response.json()["seed"][0]
    assert "sys.set_int_max_str_digits" not in response.content.decode()
    assert GenerationRequest.objects.count() == 0


def test_admin_form_takes_ascii_digits_and_a_caption_that_shows(db, active_model, no_broker, users, client):
    client.force_login(users[0])
    url = "/admin/stackgan_django/generationrequest/add/"
    for field, value in (("num_images", "\u0663"), ("seed", "\uff11\uff12"), ("num_images", "2.0")):
        response = client.post(url, {**new_request_form(client), field: value})
        assert response.status_code == 200 and "Enter a whole number using the digits 0-9." in response.content.decode(), value
    huge = client.post(url, {**new_request_form(client), "seed": "9" * 5000})
    assert "The number is out of range: enter a whole number from 0 to 9223372036854775807." in huge.content.decode()
    invisible = client.post(url, {**new_request_form(client), "caption": "\u200b\u2060\u200b"})
    assert b"Type a caption describing the image you want." in invisible.content
    assert GenerationRequest.objects.count() == 0
    accepted = client.post(url, {**new_request_form(client), "num_images": " 2 ", "seed": "12"})
    assert accepted.status_code == 302 and GenerationRequest.objects.get().seed == 12


def test_api_malformed_json_and_refused_captions(db, active_model, no_broker, users, api):
    response = api.generic("POST", "/api/v1/requests/", b'{"caption": "a cat",', content_type="application/json")
    assert response.status_code == 400
    response = api.generic("POST", "/api/v1/requests/", b'{"caption": "\xff\xfe"}', content_type="application/json")
    assert response.status_code == 400
    refused = api.post("/api/v1/requests/", {"caption": "a n.u.d.e beach"}, format="json")
    assert refused.status_code == 422
    assert refused.json()["refused_because"][0]["rule_id"] == "usage.blocked.sexual_content"
    accepted = api.post("/api/v1/requests/", {"caption": "a red apple", "num_images": 1}, format="json")
    assert accepted.status_code == 202 and accepted.json()["state"] == "queued"
    assert api.get(f"/api/v1/requests/{accepted.json()['id']}/").json()["state"] == "queued"


def test_api_verify_endpoint(db, active_model, no_broker, users, api, api_key_for):
    asset = make_assets(users[0], 1)[0]
    with asset.file.open("rb") as handle:
        data = handle.read()
    # A reviewer learns which pending asset the file is; the editor's key only that it is ours.
    reviewer = api_key_for(users[1], "verify")
    response = reviewer.post("/api/v1/verify/", {"file": io.BytesIO(data)}, format="multipart")
    assert response.status_code == 200 and response.json()["state"] == "Trusted"
    assert response.json()["asset"]["public_id"] == str(asset.public_id) and response.json()["asset"]["state"] == "pending_review"
    response = api.post("/api/v1/verify/", {"file": io.BytesIO(data)}, format="multipart")
    assert response.status_code == 200 and response.json()["state"] == "Trusted"
    assert response.json()["asset"]["state"] == "not disclosed" and response.json()["asset"]["public_id"] is None
    not_image = api.post("/api/v1/verify/", {"file": io.BytesIO(b"plain text")}, format="multipart")
    assert not_image.status_code == 400 and "file" in not_image.json()
    assert api.post("/api/v1/verify/", {}, format="multipart").status_code == 400


def test_api_verify_says_when_the_approved_file_was_revoked(db, active_model, no_broker, users, api):
    asset = make_assets(users[0], 1)[0]
    services.approve_asset(asset.pk, users[1])
    asset.refresh_from_db()
    with asset.approved_file.open("rb") as handle:
        approved = handle.read()
    services.revoke_asset(asset.pk, users[1], "the model card forbids this use")
    gone = api.get(f"/api/v1/assets/{asset.public_id}/").json()
    # The copy a client holds is exactly the approved file: it learns what a 410 would tell it.
    body = api.post("/api/v1/verify/", {"file": io.BytesIO(approved)}, format="multipart").json()
    assert body["asset"]["state"] == "revoked" and body["asset"]["public_id"] == str(asset.public_id)
    assert body["asset"]["reason"] == gone["reason"] == "the model card forbids this use"
    assert body["asset"]["revoked_at"] == gone["revoked_at"] and body["asset"]["id"] is None
    # The generated file was never given to clients: still not disclosed to them.
    with asset.file.open("rb") as handle:
        generated = handle.read()
    body = api.post("/api/v1/verify/", {"file": io.BytesIO(generated)}, format="multipart").json()
    assert body["asset"]["state"] == "not disclosed"


def test_openapi_schema(db, api):
    response = api.get("/api/v1/schema/?format=json")
    assert response.status_code == 200 and "/api/v1/assets/" in response.json()["paths"]


# -- admin ------------------------------------------------------------------------------------------

def new_request_form(client) -> dict:
    """The new-request page's fields, with the one-time token it rendered."""
    page = client.get("/admin/stackgan_django/generationrequest/add/")
    assert page.status_code == 200
    token = page.context["form"].initial["submission_key"]
    return {"caption": "a red apple", "num_images": 2, "seed": "", "purpose": "editorial", "submission_key": token}


def test_editor_submits_in_the_admin_and_sees_refusals_in_plain_words(db, active_model, no_broker, users, client):
    client.force_login(users[0])
    response = client.post("/admin/stackgan_django/generationrequest/add/", new_request_form(client), follow=True)
    created = GenerationRequest.objects.get()
    assert created.state == "queued" and response.redirect_chain[-1][0].endswith(f"/{created.pk}/change/")
    assert b"Queued: 2 image(s)" in response.content and b"number 1 in the queue" in response.content
    assert b"added successfully" not in response.content

    refused = client.post("/admin/stackgan_django/generationrequest/add/",
                          {**new_request_form(client), "caption": "a n.u.d.e beach"}, follow=True)
    body = refused.content.decode()
    assert "Refused by the usage policy" in body and "usage.blocked.sexual_content" in body and "n.u.d.e" in body
    assert "added successfully" not in body and "Queued" not in body and "Generate again" not in body

    too_many = client.post("/admin/stackgan_django/generationrequest/add/", {**new_request_form(client), "num_images": 50})
    assert too_many.status_code == 200 and b"Ask for between 1 and 8 images" in too_many.content
    empty = client.post("/admin/stackgan_django/generationrequest/add/", {**new_request_form(client), "caption": ""})
    assert empty.status_code == 200 and b"This field is required" in empty.content
    no_token = client.post("/admin/stackgan_django/generationrequest/add/", {**new_request_form(client), "submission_key": ""})
    assert no_token.status_code == 200
    assert GenerationRequest.objects.count() == 2


def test_request_list_shows_human_formats_and_own_requests_only(db, active_model, no_broker, users, client, desk_assets):
    editor, _ = users
    other = type(editor).objects.create_user("other-editor", password="pw-other-1", is_staff=True)
    other.user_permissions.set(editor.user_permissions.all())
    desk_assets(editor, 1, caption="a yellow sun over hills")
    desk_assets(other, 1, caption="a green frog on a leaf")
    GenerationRequest.objects.filter(caption__contains="sun").update(compute_seconds=2.7029713549999883)
    client.force_login(editor)
    page = client.get("/admin/stackgan_django/generationrequest/").content.decode()
    assert "a yellow sun" in page and "a green frog" not in page
    assert "2.7 s" in page and "2.7029713549999883" not in page
    assert "icon-yes.svg" not in page and "icon-no.svg" not in page  # no tick for "flagged"


def test_reviewer_approves_on_the_asset_page_and_editors_cannot(db, active_model, no_broker, users, client, desk_assets):
    editor, reviewer = users
    first, second = desk_assets(editor, 2)
    client.force_login(editor)
    assert client.post(f"/admin/stackgan_django/asset/{first.pk}/review/", {"decision": "approve"}).status_code == 403
    client.post("/admin/stackgan_django/asset/", {"action": "approve_selected", "_selected_action": [first.pk]})
    assert Asset.objects.get(pk=first.pk).state == "pending_review"

    client.force_login(reviewer)
    page = client.get(f"/admin/stackgan_django/asset/{first.pk}/change/")
    body = page.content.decode()
    assert page.status_code == 200 and 'data-provenance="Trusted"' in body and "our own signing certificate" in body
    assert 'value="approve"' in body and 'value="reject"' in body
    assert "shapes" in body and "CC0-1.0 (16 items)" in body  # the training-data table from the lineage
    assert "{&#x27;" not in body and "{'" not in body  # no Python dict dumps
    response = client.post(f"/admin/stackgan_django/asset/{first.pk}/review/", {"decision": "approve", "note": "fine"})
    # Approving moves on to the next asset waiting in the queue.
    assert response.status_code == 302 and response["Location"].endswith(f"/asset/{second.pk}/change/")
    approved = Asset.objects.get(pk=first.pk)
    assert approved.state == "approved" and approved.reviews.get().note == "fine"

    no_note = client.post(f"/admin/stackgan_django/asset/{second.pk}/review/", {"decision": "reject", "note": "  "}, follow=True)
    assert b"Write a note saying why the image is rejected" in no_note.content
    assert Asset.objects.get(pk=second.pk).state == "pending_review"
    client.post(f"/admin/stackgan_django/asset/{second.pk}/review/", {"decision": "reject", "note": "too noisy"})
    assert Asset.objects.get(pk=second.pk).state == "rejected"


def test_bulk_approval_is_one_audited_approval_each_and_flagged_ones_need_a_note(
        db, active_model, no_broker, users, client, desk_assets):
    editor, reviewer = users
    plain = desk_assets(editor, 2)
    flagged = desk_assets(editor, 1, flagged=True)
    client.force_login(reviewer)
    desk = client.get("/admin/stackgan_django/asset/").content.decode()
    # Flagged first, then oldest first.
    assert desk.index(f"/asset/{flagged[0].pk}/change/") < desk.index(f"/asset/{plain[0].pk}/change/") \
        < desk.index(f"/asset/{plain[1].pk}/change/")
    ids = [a.pk for a in plain + flagged]
    response = client.post("/admin/stackgan_django/asset/", {"action": "approve_selected", "_selected_action": ids,
                                                             "note": ""}, follow=True)
    assert b"A policy rule flagged this image" in response.content
    assert sorted(Asset.objects.filter(state="approved").values_list("pk", flat=True)) == sorted(a.pk for a in plain)
    assert AuditEvent.objects.filter(action="asset.approved").count() == 2
    client.post("/admin/stackgan_django/asset/", {"action": "approve_selected", "_selected_action": [flagged[0].pk],
                                                  "note": "checked: a toy, not a weapon"})
    assert Asset.objects.get(pk=flagged[0].pk).state == "approved"
    assert verify_chain().ok


def test_desk_list_filters_take_any_number_without_a_500(db, users, client, desk_assets, admin_user):
    asset = desk_assets(users[0], 1)[0]
    client.force_login(admin_user)
    huge = "9" * 23  # past SQLite's 64-bit INTEGER: it raised OverflowError
    for parameter in ("requester", "model"):
        for value in (huge, str(2**63), "-1", "0", "²", "１", "abc", ""):
            response = client.get("/admin/stackgan_django/asset/", {parameter: value, "review": "all"})
            assert response.status_code == 200, (parameter, value)
            assert (f"asset {asset.pk}" in response.content.decode()) == (value in ("-1", "²", "１", "abc", "")), value
        good = str(asset.request.requested_by_id if parameter == "requester" else asset.request.model_version_id)
        assert f"asset {asset.pk}" in client.get("/admin/stackgan_django/asset/", {parameter: good, "review": "all"}).content.decode()
    # The other lists' filters are on fields Django validates itself (a bad value asks again, ?e=1).
    for url, parameter in (("/admin/stackgan_django/generationrequest/", "flagged__exact"),
                           ("/admin/stackgan_django/auditevent/", "object_type"),
                           ("/admin/stackgan_django/policydecision/", "rule_id"),
                           ("/admin/stackgan_django/apikey/", "revoked__exact")):
        assert client.get(url, {parameter: huge}).status_code in (200, 302), url


def test_a_missing_file_is_a_clear_error_and_does_not_stop_a_bulk_approval(db, users, client, desk_assets, api):
    bad, good = desk_assets(users[0], 2)
    bad.file.storage.delete(bad.file.name)
    client.force_login(users[1])
    response = client.post(f"/admin/stackgan_django/asset/{bad.pk}/review/", {"decision": "approve", "note": ""},
                           follow=True)
    assert response.status_code == 200 and b"cannot be read from storage" in response.content
    # Nothing half-written: still pending, no approved file, no audit event; retryable once restored.
    assert Asset.objects.get(pk=bad.pk).state == "pending_review" and not Asset.objects.get(pk=bad.pk).approved_file
    response = client.post("/admin/stackgan_django/asset/", {"action": "approve_selected",
                                                             "_selected_action": [bad.pk, good.pk], "note": ""},
                           follow=True)
    assert response.status_code == 200 and b"cannot be read from storage" in response.content
    assert Asset.objects.get(pk=good.pk).state == "approved" and Asset.objects.get(pk=bad.pk).state == "pending_review"
    assert not AuditEvent.objects.filter(action="asset.approved", object_id=str(bad.pk)).exists()
    assert verify_chain().ok
    good.refresh_from_db()
    good.approved_file.storage.delete(good.approved_file.name)
    for path in ("manifest", "file"):
        response = api.get(f"/api/v1/assets/{good.public_id}/{path}/")
        assert response.status_code == 404 and "missing" in response.json()["detail"]


def test_verify_page_says_first_whether_the_file_is_an_approved_asset(db, active_model, no_broker, users, client, desk_assets):
    asset = desk_assets(users[0], 1)[0]
    client.force_login(users[1])
    with asset.file.open("rb") as handle:
        body = client.post("/admin/stackgan_django/asset/verify/", {"file": handle}).content.decode()
    assert "NOT approved" in body and body.index("NOT approved") < body.index("data-provenance=")
    services.approve_asset(asset.pk, users[1], note="ok")
    asset.refresh_from_db()
    with asset.approved_file.open("rb") as handle:
        body = client.post("/admin/stackgan_django/asset/verify/", {"file": handle}).content.decode()
    assert f"Approved asset #{asset.pk} of ours, unaltered" in body and 'data-provenance="Trusted"' in body
    # Judged by its header first, as on the API: the page names the problem and checks nothing.
    response = client.post("/admin/stackgan_django/asset/verify/", {"file": io.BytesIO(b"GIF89a broken")})
    assert response.status_code == 200 and b"GIF files are not checked" in response.content
    assert b"Not one of our assets" not in response.content
    empty = client.post("/admin/stackgan_django/asset/verify/", {})
    assert empty.status_code == 200 and b"This field is required" in empty.content


def test_audit_log_shows_the_chain_state_and_searches(db, active_model, no_broker, users, client, desk_assets):
    from django.contrib.auth.models import Permission

    asset = desk_assets(users[0], 1)[0]
    services.reject_asset(asset.pk, users[1], note="no")
    users[1].user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    client.force_login(users[1])
    page = client.get("/admin/stackgan_django/auditevent/").content.decode()
    assert 'data-chain="ok"' in page and "The chain verifies" in page
    found = client.get("/admin/stackgan_django/auditevent/", {"q": f"asset {asset.pk}"}).context["cl"].result_list
    assert [e.action for e in found] == ["asset.rejected"]
    by_actor = client.get("/admin/stackgan_django/auditevent/", {"q": "user:reviewer"}).context["cl"].result_list
    assert [e.action for e in by_actor] == ["asset.rejected"]
    # Edit an event behind the log's back: the page says the chain is broken.
    AuditEvent.objects.filter(action="asset.rejected").update(actor="user:someone-else")
    assert 'data-chain="broken"' in client.get("/admin/stackgan_django/auditevent/").content.decode()
