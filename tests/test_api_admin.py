"""The REST API and the admin, through Django's test client: what clients and staff actually see."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from rest_framework.test import APIClient

from policies import Verdict
from stackgan_django import services
from stackgan_django.models import Asset, GenerationRequest


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
])
def test_api_request_bad_input_is_400_and_writes_nothing(db, active_model, no_broker, users, api, payload, field):
    response = api.post("/api/v1/requests/", payload, format="json")
    assert response.status_code == 400 and field in response.json()
    assert GenerationRequest.objects.count() == 0


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


def test_openapi_schema(db, api):
    response = api.get("/api/v1/schema/?format=json")
    assert response.status_code == 200 and "/api/v1/assets/" in response.json()["paths"]


# -- admin ------------------------------------------------------------------------------------------

def test_editor_submits_in_the_admin_and_sees_refusals_in_plain_words(db, active_model, no_broker, users, client):
    client.force_login(users[0])
    response = client.post("/admin/stackgan_django/generationrequest/add/",
                           {"caption": "a red apple", "num_images": 2, "seed": "", "purpose": "editorial"}, follow=True)
    assert response.status_code == 200
    assert GenerationRequest.objects.get().state == "queued"
    response = client.post("/admin/stackgan_django/generationrequest/add/",
                           {"caption": "a n.u.d.e beach", "num_images": 2, "seed": "", "purpose": "editorial"}, follow=True)
    assert b"Refused by the usage policy" in response.content and b"n.u.d.e" in response.content
    response = client.post("/admin/stackgan_django/generationrequest/add/",
                           {"caption": "a cat", "num_images": 50, "seed": "", "purpose": "editorial"})
    assert response.status_code == 200 and b"Ask for between 1 and 8 images" in response.content
    response = client.post("/admin/stackgan_django/generationrequest/add/",
                           {"caption": "", "num_images": 2, "seed": "", "purpose": "editorial"})
    assert response.status_code == 200 and GenerationRequest.objects.count() == 2


def test_reviewer_approves_in_the_admin_and_editors_cannot(db, active_model, no_broker, users, client):
    editor, reviewer = users
    asset = make_assets(editor, 1)[0]
    client.force_login(editor)
    client.post("/admin/stackgan_django/asset/", {"action": "approve_selected", "_selected_action": [asset.pk]})
    assert Asset.objects.get(pk=asset.pk).state == "pending_review"
    client.force_login(reviewer)
    page = client.get(f"/admin/stackgan_django/asset/{asset.pk}/change/")
    assert page.status_code == 200 and b"Provenance: Trusted" in page.content
    client.post("/admin/stackgan_django/asset/", {"action": "approve_selected", "_selected_action": [asset.pk],
                                                  "note": "fine"})
    assert Asset.objects.get(pk=asset.pk).state == "approved"
    assert Asset.objects.get(pk=asset.pk).reviews.get().note == "fine"


def test_admin_verify_page_takes_any_upload(db, active_model, no_broker, users, client):
    asset = make_assets(users[0], 1)[0]
    client.force_login(users[1])
    with asset.file.open("rb") as handle:
        response = client.post("/admin/stackgan_django/asset/verify/", {"file": handle})
    assert response.status_code == 200 and b"Provenance: Trusted" in response.content
    response = client.post("/admin/stackgan_django/asset/verify/", {"file": io.BytesIO(b"GIF89a broken")})
    assert response.status_code == 200 and b"Not an image" in response.content
