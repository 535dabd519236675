"""Hostile query strings and forms against the admin's change lists (an attacker probe's findings):
a list takes only the filters it shows, so no URL runs a regular expression or an out-of-range
lookup; a tampered action selection is a 400 with a message; nothing here is ever a 500."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client

from stackgan_django.admin_changelist import GuardedChangeListMixin
from stackgan_django.models import Asset, AuditEvent

ADMIN = "/admin/stackgan_django"
HUGE = "9" * 23  # past a 64-bit integer: SQLite raised OverflowError on it
# Nested quantifiers that backtrack catastrophically on a long hex string with no "x" in it.
BACKTRACKING = "^([0-9a-f]+)+x"

CHANGE_LISTS = ["generationrequest", "asset", "modelversion", "auditevent", "review", "policydecision", "apikey",
                "webhookdelivery"]
FILTERED_CHANGE_LISTS = [page for page in CHANGE_LISTS if page not in ("modelversion", "review")]


@pytest.fixture
def staff_client(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.mark.parametrize(("page", "query"), [
    ("asset", {"review": "all", "sha256__regex": BACKTRACKING}),
    ("generationrequest", {"caption__regex": BACKTRACKING}),
    ("generationrequest", {"caption__iregex": "a"}),
    ("generationrequest", {"caption__regex": "["}),
    ("generationrequest", {"attempts__range": "1"}),
    ("generationrequest", {"pk__in": f"1,{HUGE}"}),
    ("generationrequest", {"state__in": "queued,done"}),  # a lookup on a filtered field, but not the filter's own
    ("generationrequest", {"requested_by__username__regex": "a"}),
    ("asset", {"pk__in": f"1,{HUGE}"}),
    ("auditevent", {"data__contains": "{}"}),
    ("auditevent", {"data__note__regex": "("}),
    ("modelversion", {"lineage__regex": "("}),
    ("apikey", {"name__regex": "("}),
    ("webhookdelivery", {"payload__contains": "{}"}),
    ("generationrequest", {"purpose": "\x00"}),  # PostgreSQL refuses NUL in text: a 500 there
    ("asset", {"review": "all\x00"}),
    *[(page, {"created_at__year": "99999999999"}) for page in ("generationrequest", "asset", "policydecision",
                                                                "auditevent")],
])
def test_lookups_no_filter_offers_are_refused_with_a_400(db, staff_client, page, query):
    # Refused while the change list reads its parameters, before any query runs.
    response = staff_client.get(f"{ADMIN}/{page}/", query)
    assert response.status_code == 400, (page, query)


@pytest.mark.parametrize(("role", "page", "query"), [
    ("editor", "generationrequest", {"caption__regex": "["}),
    ("editor", "generationrequest", {"created_at__year": "99999999999"}),
    ("reviewer", "asset", {"review": "all", "sha256__regex": "("}),
    ("reviewer", "asset", {"request__caption__regex": "("}),
])
def test_desk_roles_get_the_same_400(db, users, desk_assets, role, page, query):
    # With rows to match (not the backtracking pattern: without the guard it would hang the test).
    editor, reviewer = users
    desk_assets(editor, 1)
    client = Client()
    client.force_login(editor if role == "editor" else reviewer)
    assert client.get(f"{ADMIN}/{page}/", query).status_code == 400


@pytest.mark.parametrize("page", FILTERED_CHANGE_LISTS)
def test_every_filter_link_a_change_list_shows_still_works(db, users, staff_client, desk_assets, page):
    desk_assets(users[0], 2, flagged=True)
    response = staff_client.get(f"{ADMIN}/{page}/", {"review": "all"} if page == "asset" else {})
    assert response.status_code == 200
    links = [choice["query_string"] for spec in response.context["cl"].filter_specs
             for choice in spec.choices(response.context["cl"])]
    assert links, page
    for link in links:
        followed = staff_client.get(f"{ADMIN}/{page}/{link}")
        assert followed.status_code == 200, (page, link)
        assert "e=1" not in followed.get("Location", ""), (page, link)


def test_the_desks_own_filters_and_links_keep_working(db, users, staff_client, desk_assets):
    editor, _ = users
    asset = desk_assets(editor, 1, flagged=True)[0]
    queries = [{"review": "all"}, {"review": "approved"}, {"flagged_by_policy": "yes"},
               {"requester": str(editor.pk), "review": "all"}, {"model": str(asset.request.model_version_id)},
               {"created_at__gte": "2000-01-01 00:00:00+00:00", "created_at__lt": "2999-01-01 00:00:00+00:00"}, {"q": "apple"}, {"o": "2"}]
    for query in queries:
        response = staff_client.get(f"{ADMIN}/asset/", query)
        assert response.status_code == 200, query
        assert asset in response.context["cl"].result_list or query.get("review") == "approved", query
    for query in [{"who": "all"}, {"state__exact": "done"}, {"flagged__exact": "1"}, {"purpose": "editorial"},
                  {"purpose__isnull": "False"}]:
        assert staff_client.get(f"{ADMIN}/generationrequest/", query).status_code == 200, query
    # The asset page links to the audit log by a search, not a lookup.
    assert staff_client.get(f"{ADMIN}/auditevent/", {"q": f"asset {asset.pk}"}).status_code == 200


@pytest.mark.parametrize(("page", "query"), [
    ("asset", {"created_at__gte": "yesterday"}),
    ("asset", {"created_at__gte": "99999-01-01"}),
    ("asset", {"created_at__lt": HUGE}),
    ("asset", {"requester": HUGE}),
    ("generationrequest", {"flagged__exact": "maybe"}),
    ("generationrequest", {"flagged__isnull": HUGE}),
    ("generationrequest", {"state__exact": "no-such-state"}),
    ("auditevent", {"object_type": HUGE}),
    ("policydecision", {"rule_id": "("}),
    ("apikey", {"created__gte": "2026-02-30"}),
    ("apikey", {"revoked__exact": HUGE}),
    ("webhookdelivery", {"state__exact": "("}),
])
def test_offered_filters_given_garbage_ask_again_or_show_nothing(db, users, staff_client, desk_assets, page, query):
    desk_assets(users[0], 1)
    response = staff_client.get(f"{ADMIN}/{page}/", query)
    # Django's answer to a value its field cannot take: back to the list with ?e=1.
    assert response.status_code == 200 or (response.status_code == 302 and response["Location"].endswith("?e=1"))


def test_a_date_hierarchy_takes_its_own_parameters_with_numbers_only(db, staff_client, monkeypatch):
    # No list of ours has a date hierarchy yet; the guard must not refuse its links when one does,
    # nor let a year of eleven digits reach Django's datetime (OverflowError, a 500).
    monkeypatch.setattr(admin.site._registry[AuditEvent], "date_hierarchy", "created_at")
    assert staff_client.get(f"{ADMIN}/auditevent/", {"created_at__year": "2026", "created_at__month": "5"}).status_code == 200
    for value in ("99999999999", "２０２６", "-1", ""):
        assert staff_client.get(f"{ADMIN}/auditevent/", {"created_at__year": value}).status_code == 400, value
    assert staff_client.get(f"{ADMIN}/auditevent/", {"created_at__week": "1"}).status_code == 400


def test_every_model_admin_of_the_app_guards_its_change_list():
    ours = [model_admin for model, model_admin in admin.site._registry.items()
            if model._meta.app_label == "stackgan_django"]
    assert len(ours) == len(CHANGE_LISTS)
    assert all(isinstance(model_admin, GuardedChangeListMixin) for model_admin in ours), ours


# -- action selections ------------------------------------------------------------------------------

MALFORMED_SELECTIONS = ["abc", "1.5", HUGE, "", "1e3", "0x10", "9" * 5000]


@pytest.mark.parametrize("selected", MALFORMED_SELECTIONS)
def test_a_malformed_selection_for_an_editors_retry_is_a_400(db, users, no_broker, active_model, selected):
    editor, _ = users
    client = Client()
    client.force_login(editor)
    # With "index" as the list's action bar sends it, and without, as a confirmation page would.
    for form in ({"index": "0"}, {}):
        response = client.post(f"{ADMIN}/generationrequest/", {"action": "retry_selected", "_selected_action": selected,
                                                               **form})
        assert response.status_code == 400
        assert "not a list of generation request ids" in response.content.decode()


@pytest.mark.parametrize("selected", MALFORMED_SELECTIONS)
def test_a_malformed_selection_for_a_reviewers_approval_is_a_400(db, users, desk_assets, selected):
    editor, reviewer = users
    asset = desk_assets(editor, 1)[0]
    client = Client()
    client.force_login(reviewer)
    # One good id beside the bad one: nothing is approved when any of the selection is malformed.
    response = client.post(f"{ADMIN}/asset/", {"action": "approve_selected", "index": "0", "note": "",
                                               "_selected_action": [str(asset.pk), selected]})
    assert response.status_code == 400 and "not a list of asset ids" in response.content.decode()
    assert Asset.objects.get(pk=asset.pk).state == Asset.State.PENDING_REVIEW


def test_a_well_formed_selection_still_acts(db, users, desk_assets):
    editor, reviewer = users
    asset = desk_assets(editor, 1)[0]
    client = Client()
    client.force_login(reviewer)
    # An id of no row (deleted meanwhile, say) is well formed: the action runs on the rows that exist.
    response = client.post(f"{ADMIN}/asset/", {"action": "approve_selected", "index": "0", "note": "",
                                               "_selected_action": [str(asset.pk), "123456789"]})
    assert response.status_code == 302
    assert Asset.objects.get(pk=asset.pk).state == Asset.State.APPROVED


def test_retrying_many_failed_requests_counts_under_the_persons_request_rate(db, users, no_broker, active_model,
                                                                             settings):
    # The fifth probe: one selection of failed requests ran the usage policy and queued images for
    # each, past the allowance the API, "Ask for images" and "Generate again" share.
    from django.core.cache import cache

    from stackgan_django import services
    from stackgan_django.models import GenerationRequest

    cache.clear()
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {**settings.STACKGAN.get("API_THROTTLE_RATES", {}),
                                                                      "requests": "3/hour"}}
    editor, _ = users
    failed = []
    for number in range(5):
        generation_request = services.submit_request(caption=f"a red apple number {number}", num_images=1, user=editor)
        GenerationRequest.objects.filter(pk=generation_request.pk).update(state=GenerationRequest.State.FAILED)
        failed.append(generation_request.pk)
    client = Client()
    client.force_login(editor)
    response = client.post(f"{ADMIN}/generationrequest/", {"action": "retry_selected", "index": "0",
                                                           "_selected_action": [str(pk) for pk in failed]}, follow=True)
    assert "too often" in response.content.decode()
    states = list(GenerationRequest.objects.filter(pk__in=failed).values_list("state", flat=True))
    assert states.count(GenerationRequest.State.QUEUED) == 3 and states.count(GenerationRequest.State.FAILED) == 2
    # The allowance is the person's: a further retry is refused outright.
    left = GenerationRequest.objects.filter(pk__in=failed, state=GenerationRequest.State.FAILED).first()
    response = client.post(f"{ADMIN}/generationrequest/", {"action": "retry_selected", "index": "0",
                                                           "_selected_action": [str(left.pk)]}, follow=True)
    assert "0 of the selected requests" in response.content.decode()
    assert GenerationRequest.objects.get(pk=left.pk).state == GenerationRequest.State.FAILED
