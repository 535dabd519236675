"""What a requester learns from the policy, and how often: the reason in words on every page, API
answer and message they see, never the semantic layer's scores, thresholds or nearest examples
(compliance staff keep them); and the admin's submissions count under the API's `requests` rate,
so the refusal pages are no fast oracle for captions that score just under a threshold."""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from PIL import Image

from policies import Verdict
from stackgan_django import services
from stackgan_django.disclosure import requester_message
from stackgan_django.models import GenerationRequest, PolicyDecision

ADMIN = "/admin/stackgan_django"
# Refused by the semantic layer (sexual content) with a nearest example that is not the caption.
DENIED = "two people having intercourse on a sofa"
# Sent to review by the semantic layer (minors), again with an example of its own.
REVIEWED = "a toddler at bathtime, nothing on"


def undisclosed(decision: PolicyDecision) -> list[str]:
    """The pieces of a semantic decision's evidence no requester may see."""
    evidence = decision.evidence
    assert evidence["nearest_example"] and evidence["nearest_example"] not in (DENIED, REVIEWED)
    return [evidence["nearest_example"], f"{evidence['score']}", f"threshold: {evidence['threshold']}",
            "closest example", "nearest example"]


def assert_none_in(pieces: list[str], text: str, where: str) -> None:
    for piece in pieces:
        assert piece not in text, (where, piece)


def semantic_decision(request: GenerationRequest, outcome: str) -> PolicyDecision:
    return request.decisions.filter(rule_id__startswith="usage.semantic.", outcome=outcome).first()


def with_demo_permissions(user, group: str) -> None:
    """The demo's groups: Editors read policy decisions (their own refusals), Compliance everyone's."""
    from stackgan_django.management.commands.bootstrap_demo import GROUP_PERMISSIONS

    user.user_permissions.set(Permission.objects.filter(codename__in=GROUP_PERMISSIONS[group]))


def test_requester_messages_keep_the_reason_and_drop_examples_and_scores():
    denied = "The caption describes sexual or nude content, which this site does not generate."
    assert requester_message(f"{denied} (closest example: “a couple on a leather couch”)",
                             {"nearest_example": "a couple on a leather couch"}) == denied
    assert requester_message(
        "The caption asks for instructions that could be used to hurt people. (asked for as instructions: "
        "“how to build a pipe bomb”; closest harmful act: “build a pipe bomb”)") == (
        "The caption asks for instructions that could be used to hurt people. (asked for as instructions: "
        "“how to build a pipe bomb”)")
    assert requester_message(
        f"{denied} (closest example: “a rave, people high on molly”); the caption negates it (“no drugs”), so the "
        "images get an extra review instead.") == (
        "The caption describes sexual or nude content, which this site does not generate; the caption negates it "
        "(“no drugs”), so the images get an extra review instead.")
    assert requester_message("The caption names a weapon. Review lifted: the caption's meaning is far from weapons "
                             "(every score below 0.3).") == (
        "The caption names a weapon. Review lifted: the caption's meaning is far from weapons.")
    # Worded in a way the patterns do not know: the reason before the details, not the example.
    assert requester_message("Too close to “an example”; change the caption.",
                             {"nearest_example": "an example"}) == "Too close to"
    word_rule = "The caption mentions a weapon; the images will get an extra review. (matched “bomb”)"
    assert requester_message(word_rule, {"matched": "bomb"}) == word_rule  # the editor's own word stays


def test_refusals_tell_editors_why_but_not_the_scores(db, active_model, no_broker, users, api_key_for):
    editor, reviewer = users
    with_demo_permissions(editor, "Editors")
    client = Client()
    client.force_login(editor)
    form = client.get(f"{ADMIN}/generationrequest/add/").context["form"].initial
    sent = client.post(f"{ADMIN}/generationrequest/add/", {
        "caption": DENIED, "num_images": 1, "seed": "", "purpose": "editorial",
        "submission_key": form["submission_key"]}, follow=True)
    denied = GenerationRequest.objects.get(caption=DENIED)
    decision = semantic_decision(denied, "deny")
    assert denied.state == "policy_denied" and decision is not None
    hidden = undisclosed(decision)
    reason = decision.message.split(" (closest example")[0]

    # The message after the form, the request page, its live fragment, the decision's own page.
    body = sent.content.decode()
    assert "Refused by the usage policy" in body and reason in body and decision.rule_id in body
    assert "sexual content" in body  # the category, in words
    assert_none_in(hidden, body, "request page after the form")
    status = client.get(f"{ADMIN}/generationrequest/{denied.pk}/status/").content.decode()
    assert reason in status
    assert_none_in(hidden, status, "status fragment")
    decision_page = client.get(f"{ADMIN}/policydecision/{decision.pk}/change/")
    assert decision_page.status_code == 200 and reason in decision_page.content.decode()
    assert_none_in(hidden, decision_page.content.decode(), "policy decision page")

    # The API's request detail and list: the rule, the category and the reason; no scores.
    api = api_key_for(editor, "requests:write")
    detail = api.get(f"/api/v1/requests/{denied.public_id}/")
    refusal = next(r for r in detail.json()["refused_because"] if r["rule_id"] == decision.rule_id)
    assert refusal == {"rule_id": decision.rule_id, "category": "sexual content", "message": reason}
    assert_none_in(hidden, detail.content.decode(), "API request detail")
    assert_none_in(hidden, api.get("/api/v1/requests/").content.decode(), "API request list")
    created = api.post("/api/v1/requests/", {"caption": DENIED, "num_images": 1}, format="json")
    assert created.status_code == 422
    assert_none_in(hidden, created.content.decode(), "API refusal")

    # Compliance staff keep the whole evidence.
    with_demo_permissions(reviewer, "Compliance")
    client.force_login(reviewer)
    full = client.get(f"{ADMIN}/policydecision/{decision.pk}/change/").content.decode()
    assert decision.evidence["nearest_example"] in full and f"{decision.evidence['score']}" in full


def test_a_flagged_requests_asset_page_shows_the_editor_no_evidence(db, active_model, no_broker, users):
    editor, reviewer = users
    request = services.submit_request(caption=REVIEWED, num_images=1, user=editor)
    services.start_request(request.pk)
    image = Image.effect_noise((64, 64), 50).convert("RGB")
    asset = services.finish_request(request.pk, [services.stamp_output(
        request, services.GeneratedOutput(0, request.seed, image, Verdict("output", "v")))], 0.1)[0]
    decision = semantic_decision(request, "review")
    assert request.flagged and decision is not None
    hidden = undisclosed(decision)
    client = Client()
    client.force_login(editor)
    page = client.get(f"{ADMIN}/asset/{asset.pk}/change/").content.decode()
    assert decision.message.split(" (closest example")[0] in page and decision.rule_id in page
    assert_none_in(hidden, page, "editor's asset page")
    client.force_login(reviewer)
    page = client.get(f"{ADMIN}/asset/{asset.pk}/change/").content.decode()
    assert decision.evidence["nearest_example"] in page and f"threshold: {decision.evidence['threshold']}" in page


def test_a_retry_the_policy_now_refuses_says_why_without_the_example(db, active_model, no_broker, users, client):
    """An editor retries their own failed request; a policy that refuses it now says why in the
    admin's message, in the words a requester may read."""
    editor = users[0]
    request = services.submit_request(caption="a red apple", num_images=1, user=editor)
    services.start_request(request.pk)
    GenerationRequest.objects.filter(pk=request.pk).update(attempts=99)  # no attempts left: fails for good
    services.fail_request(request.pk, "CUDA out of memory")
    # The policy has changed since (here: the caption, which only the test can change).
    GenerationRequest.objects.filter(pk=request.pk).update(caption=DENIED)
    with pytest.raises(services.TransitionError) as refused:
        services.retry_request(request.pk, editor)
    assert "sexual or nude content" in str(refused.value)
    assert "closest example" not in str(refused.value) and "leather couch" not in str(refused.value)
    client.force_login(editor)
    response = client.post(f"{ADMIN}/generationrequest/", {"action": "retry_selected", "_selected_action": [request.pk]},
                           follow=True)
    assert "sexual or nude content" in response.content.decode() and "closest example" not in response.content.decode()


# -- the rate ----------------------------------------------------------------------------------------

def post_form(client: Client, caption: str, key: str | None = None):
    return client.post(f"{ADMIN}/generationrequest/add/", {
        "caption": caption, "num_images": 1, "seed": "", "purpose": "editorial",
        "submission_key": key or uuid.uuid4().hex})


@pytest.fixture
def two_requests_a_minute(settings):
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"requests": "2/minute"}}


def test_the_request_form_shares_the_apis_rate_per_person(db, active_model, no_broker, users, api_key_for,
                                                          two_requests_a_minute):
    editor, reviewer = users
    client = Client()
    client.force_login(editor)
    # A refused caption counts like an accepted one: each runs the policy and says why.
    assert post_form(client, "a n.u.d.e figure").status_code == 302
    assert post_form(client, "a red apple").status_code == 302
    assert GenerationRequest.objects.count() == 2
    limited = post_form(client, "a green pear")
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    body = limited.content.decode()
    assert "too often" in body and "nothing was checked or generated" in body
    assert "a green pear" in body  # the caption is kept to send again
    assert GenerationRequest.objects.count() == 2
    assert client.get(f"{ADMIN}/generationrequest/add/").status_code == 200  # the empty form costs nothing
    # One allowance with the API: the same person's key is past it too (for asking; reading the
    # requests counts apart, see below).
    api = api_key_for(editor, "requests:write")
    assert api.post("/api/v1/requests/", {"caption": "a green pear", "num_images": 1, "purpose": "editorial"},
                    format="json").status_code == 429
    assert api.get("/api/v1/requests/").status_code == 200
    other = get_other_editor(editor)
    client.force_login(other)
    assert post_form(client, "a green pear").status_code == 302  # another person, their own allowance


def test_generate_again_shares_the_rate(db, active_model, no_broker, users, api_key_for, two_requests_a_minute):
    editor = users[0]
    original = services.submit_request(caption="a red apple", num_images=1, user=editor)
    # The API's requests use up the person's allowance; the admin button is no way round it.
    api = api_key_for(editor, "requests:write")
    body = {"caption": "a green pear", "num_images": 1, "purpose": "editorial"}
    assert [api.post("/api/v1/requests/", body, format="json").status_code for _ in range(2)] == [202, 202]
    client = Client()
    client.force_login(editor)
    limited = client.post(f"{ADMIN}/generationrequest/{original.pk}/again/", {"submission_key": uuid.uuid4().hex})
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert "too often" in limited.content.decode() and "Generate again" in limited.content.decode()
    assert GenerationRequest.objects.count() == 3


def get_other_editor(editor):
    from django.contrib.auth import get_user_model

    other = get_user_model().objects.create_user("other-editor", password="pw-other-1", is_staff=True)
    other.user_permissions.set(editor.user_permissions.all())
    return other


def test_polling_a_request_does_not_use_up_the_allowance_for_asking(db, active_model, no_broker, users, api_key_for,
                                                                  settings):
    """A client polls its request for the result, as the README says; the reads used to count under
    the requests rate, so 30 polls left it (and its user's admin form) unable to ask for anything."""
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"requests": "2/minute", "request_status": "5/minute"}}
    api = api_key_for(users[0], "requests:write")
    body = {"caption": "a red apple", "num_images": 1, "purpose": "editorial"}
    created = api.post("/api/v1/requests/", body, format="json")
    assert created.status_code == 202
    url = f"/api/v1/requests/{created.json()['id']}/"
    assert [api.get(url).status_code for _ in range(5)] == [200] * 5
    assert api.get(url).status_code == 429  # reads have a rate of their own
    assert api.post("/api/v1/requests/", body, format="json").status_code == 202  # asking is untouched
    assert api.post("/api/v1/requests/", body, format="json").status_code == 429
