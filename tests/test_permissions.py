"""Who may do what on the desks (a role x action matrix through the test client), and the bad input
a real office produces: double submissions, decisions on decided assets, two reviewers at once,
forged POSTs, someone else's request by URL. Each leaves the database and audit log consistent."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client

from stackgan_django import services
from stackgan_django.audit import verify_chain
from stackgan_django.models import Asset, AuditEvent, GenerationRequest, Review

ADMIN = "/admin/stackgan_django"
LOGIN = 302  # the admin sends anyone not signed in to its log-in page

# The actions, each on the editor's own request or asset; {r} is the request, {a} its asset.
ACTIONS = {
    "list requests": ("get", f"{ADMIN}/generationrequest/"),
    "new request form": ("get", f"{ADMIN}/generationrequest/add/"),
    "request page": ("get", f"{ADMIN}/generationrequest/{{r}}/change/"),
    "live status": ("get", f"{ADMIN}/generationrequest/{{r}}/status/"),
    "generate again": ("post", f"{ADMIN}/generationrequest/{{r}}/again/"),
    "image": ("get", f"{ADMIN}/asset/{{a}}/image/"),
    "review desk": ("get", f"{ADMIN}/asset/"),
    "asset page": ("get", f"{ADMIN}/asset/{{a}}/change/"),
    "verify page": ("get", f"{ADMIN}/asset/verify/"),
    "audit log": ("get", f"{ADMIN}/auditevent/"),
    "pilot report": ("get", f"{ADMIN}/generationrequest/pilot-report/"),
    "approve": ("post", f"{ADMIN}/asset/{{a}}/review/"),  # last: it changes the asset
}

# Expected status per role, in the order of ACTIONS. 404 where the object exists but is not theirs:
# the answer is the same as for one that does not exist, so nothing leaks.
MATRIX = {
    "anonymous":    [LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN],
    "editor":       [200, 200, 200, 200, 302, 200, 200, 200, 200, 403, 403, 403],
    "other editor": [200, 200, 404, 404, 404, 404, 200, 404, 200, 403, 403, 403],
    "reviewer":     [403, 403, 403, 403, 403, 200, 200, 200, 200, 403, 403, 302],
    "sponsor":      [200, 403, 200, 200, 403, 404, 403, 403, 403, 200, 200, 403],
    "superuser":    [200, 200, 200, 200, 302, 200, 200, 200, 200, 200, 200, 302],
}


def make_role(role: str, users):
    editor, reviewer = users
    model = get_user_model()
    if role == "editor":
        return editor
    if role == "reviewer":
        return reviewer
    if role == "other editor":
        other = model.objects.create_user("other-editor", password="pw-other-1", is_staff=True)
        other.user_permissions.set(editor.user_permissions.all())
        return other
    if role == "sponsor":  # sees everything that was asked and decided, decides nothing
        sponsor = model.objects.create_user("sponsor", password="pw-sponsor-1", is_staff=True)
        sponsor.user_permissions.set(Permission.objects.filter(codename__in=[
            "view_generationrequest", "view_all_requests", "view_pilot_report", "view_auditevent"]))
        return sponsor
    if role == "superuser":
        return model.objects.create_superuser("root", password="pw-root-1")
    return None


@pytest.mark.parametrize("role", list(MATRIX))
def test_role_action_matrix(db, active_model, no_broker, users, desk_assets, role):
    asset = desk_assets(users[0], 1)[0]
    user = make_role(role, users)
    client = Client()
    if user is not None:
        client.force_login(user)
    observed = {}
    for name, (method, url) in ACTIONS.items():
        url = url.format(r=asset.request_id, a=asset.pk)
        data = {"decision": "approve", "note": "matrix"} if name == "approve" else {}
        observed[name] = getattr(client, method)(url, data).status_code
    assert observed == dict(zip(ACTIONS, MATRIX[role]))
    approved = Asset.objects.get(pk=asset.pk).state == "approved"
    assert approved == (role in ("reviewer", "superuser"))
    assert AuditEvent.objects.filter(action="asset.approved").count() == int(approved)
    assert verify_chain().ok


def test_desk_lists_show_only_what_the_role_may_see(db, active_model, no_broker, users, desk_assets):
    editor, reviewer = users
    mine = desk_assets(editor, 1, caption="a yellow sun")[0]
    other = make_role("other editor", users)
    theirs = desk_assets(other, 1, caption="a green frog")[0]
    client = Client()
    client.force_login(editor)
    assert [a.pk for a in client.get(f"{ADMIN}/asset/").context["cl"].result_list] == [mine.pk]
    assert [r.pk for r in client.get(f"{ADMIN}/generationrequest/").context["cl"].result_list] == [mine.request_id]
    # Editors never see the "everyone" filter; asking for it by URL changes nothing.
    asked = client.get(f"{ADMIN}/generationrequest/?who=all", follow=True)
    assert [r.pk for r in asked.context["cl"].result_list] == [mine.request_id]
    client.force_login(reviewer)
    assert {a.pk for a in client.get(f"{ADMIN}/asset/").context["cl"].result_list} == {mine.pk, theirs.pk}
    sponsor = make_role("sponsor", users)
    client.force_login(sponsor)
    # "My requests" by default, everyone's on asking.
    assert list(client.get(f"{ADMIN}/generationrequest/").context["cl"].result_list) == []
    everyone = client.get(f"{ADMIN}/generationrequest/?who=all").context["cl"].result_list
    assert {r.pk for r in everyone} == {mine.request_id, theirs.request_id}


def test_seeing_everyones_requests_is_not_seeing_their_unreviewed_images(db, active_model, no_broker, users,
                                                                         desk_assets):
    """A role that sees every request and may view assets (a sponsor given view_asset) gets other
    editors' images only once approved, at the admin's image door as at the API's: an attacker's
    probe found this door serving other people's pending images to such a user."""
    editor, reviewer = users
    pending, approved = desk_assets(editor, 2)
    services.approve_asset(approved.pk, reviewer, "fine")
    sponsor = make_role("sponsor", users)
    sponsor.user_permissions.add(Permission.objects.get(codename="view_asset"))
    client = Client()
    client.force_login(sponsor)
    assert client.get(f"{ADMIN}/asset/{pending.pk}/image/").status_code == 404
    assert client.get(f"{ADMIN}/asset/{approved.pk}/image/?file=approved").status_code == 200
    assert client.get(f"/api/v1/staff/files/{pending.file.name}").status_code == 404
    # The editor who asked still sees the pending image on the request page's door.
    client.force_login(editor)
    assert client.get(f"{ADMIN}/asset/{pending.pk}/image/").status_code == 200


# -- bad input ----------------------------------------------------------------------------------------

def form_token(client) -> str:
    return client.get(f"{ADMIN}/generationrequest/add/").context["form"].initial["submission_key"]


def at_once(count: int, call) -> tuple[list, list]:
    """Run ``call`` in ``count`` threads released together, each on its own database connection:
    (their results, the exceptions they raised). A failure in a thread must fail the test, so none is
    swallowed."""
    from django.db import connection

    barrier = threading.Barrier(count)
    results, errors = [], []

    def run():
        try:
            barrier.wait()
            results.append(call())
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results, errors


def test_double_submission_makes_one_request(db, active_model, no_broker, users):
    client = Client()
    client.force_login(users[0])
    form = {"caption": "a red apple", "num_images": 1, "seed": "", "purpose": "editorial", "submission_key": form_token(client)}
    first = client.post(f"{ADMIN}/generationrequest/add/", form)
    second = client.post(f"{ADMIN}/generationrequest/add/", form, follow=True)
    request = GenerationRequest.objects.get()
    assert first["Location"].endswith(f"/{request.pk}/change/")
    assert second.redirect_chain[-1][0].endswith(f"/{request.pk}/change/")
    assert b"This form was already sent" in second.content
    assert AuditEvent.objects.filter(action="request.queued").count() == 1


@pytest.mark.django_db(transaction=True)
def test_double_submission_racing_in_two_threads_makes_one_request(active_model, no_broker, users):
    editor = users[0]
    results, errors = at_once(2, lambda: services.submit_once("same-form-token", user=editor, caption="a red apple",
                                                              num_images=1))
    assert errors == []
    assert sorted(created for _, created in results) == [False, True]
    assert len({request.pk for request, _ in results}) == 1
    assert GenerationRequest.objects.count() == 1 and AuditEvent.objects.filter(action="request.queued").count() == 1


def test_another_users_form_token_is_refused(db, active_model, no_broker, users):
    services.submit_once("token-of-the-editor", user=users[0], caption="a red apple", num_images=1)
    other = make_role("other editor", users)
    with pytest.raises(services.WorkflowError, match="submitted by someone else"):
        services.submit_once("token-of-the-editor", user=other, caption="a blue bird", num_images=1)
    assert GenerationRequest.objects.count() == 1


def test_approving_a_rejected_asset_says_so_and_changes_nothing(db, active_model, no_broker, users, desk_assets):
    editor, reviewer = users
    asset = desk_assets(editor, 1)[0]
    services.reject_asset(asset.pk, reviewer, note="blurry")
    events = AuditEvent.objects.count()
    client = Client()
    client.force_login(reviewer)
    response = client.post(f"{ADMIN}/asset/{asset.pk}/review/", {"decision": "approve", "note": "changed my mind"}, follow=True)
    assert response.status_code == 200 and b"is rejected; it cannot be approved" in response.content
    assert Asset.objects.get(pk=asset.pk).state == "rejected" and not Asset.objects.get(pk=asset.pk).approved_file
    assert Review.objects.filter(asset=asset).count() == 1 and AuditEvent.objects.count() == events
    # The page no longer offers the buttons.
    assert b'value="approve"' not in client.get(f"{ADMIN}/asset/{asset.pk}/change/").content


@pytest.mark.django_db(transaction=True)
def test_two_reviewers_approving_at_once_make_one_approval(active_model, no_broker, users, desk_assets):
    editor, reviewer = users
    second_reviewer = get_user_model().objects.create_user("reviewer-2", password="pw-reviewer-2", is_staff=True)
    second_reviewer.user_permissions.set(reviewer.user_permissions.all())
    asset = desk_assets(editor, 1)[0]
    barrier = threading.Barrier(2)
    outcomes = []

    def approve(who):
        from django.db import connection

        try:
            barrier.wait()
            services.approve_asset(asset.pk, who, note=f"fine by {who.username}")
            outcomes.append("approved")
        except services.TransitionError as exc:
            outcomes.append(str(exc))
        except Exception as exc:  # anything else is a bug the test must show
            outcomes.append(f"unexpected {type(exc).__name__}: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(who,)) for who in (reviewer, second_reviewer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert sorted(outcomes) == sorted(["approved", f"Asset {asset.pk} is approved; it cannot be approved."])
    assert Review.objects.filter(asset=asset).count() == 1
    assert AuditEvent.objects.filter(action="asset.approved").count() == 1 and verify_chain().ok


def test_forged_posts_without_permission_or_token_change_nothing(db, active_model, no_broker, users, desk_assets):
    editor, reviewer = users
    asset = desk_assets(editor, 1)[0]
    events = AuditEvent.objects.count()
    forger = Client()
    forger.force_login(editor)  # signed in, but not a reviewer
    assert forger.post(f"{ADMIN}/asset/{asset.pk}/review/", {"decision": "approve", "note": "x"}).status_code == 403
    assert forger.post(f"{ADMIN}/asset/", {"action": "approve_selected", "_selected_action": [asset.pk], "note": "x"}).status_code in (200, 302)
    no_csrf = Client(enforce_csrf_checks=True)
    no_csrf.force_login(reviewer)  # a reviewer's session, but the POST comes from another site
    assert no_csrf.post(f"{ADMIN}/asset/{asset.pk}/review/", {"decision": "approve", "note": "x"}).status_code == 403
    reviewer_client = Client()
    reviewer_client.force_login(reviewer)
    bogus = reviewer_client.post(f"{ADMIN}/asset/{asset.pk}/review/", {"decision": "delete"}, follow=True)
    assert b"Choose approve or reject" in bogus.content
    assert reviewer_client.get(f"{ADMIN}/asset/{asset.pk}/review/").status_code == 405
    assert Asset.objects.get(pk=asset.pk).state == "pending_review" and AuditEvent.objects.count() == events


def test_notes_are_required_where_a_decision_must_be_explained(db, active_model, no_broker, users, desk_assets):
    editor, reviewer = users
    plain = desk_assets(editor, 1)[0]
    flagged = desk_assets(editor, 1, flagged=True)[0]
    with pytest.raises(services.NoteRequired, match="why the image is rejected"):
        services.reject_asset(plain.pk, reviewer, note="   ")
    with pytest.raises(services.NoteRequired, match="flagged"):
        services.approve_asset(flagged.pk, reviewer)
    assert services.approve_asset(plain.pk, reviewer).state == "approved"  # an unflagged approval needs none
    assert services.approve_asset(flagged.pk, reviewer, note="a toy, not a weapon").state == "approved"
    assert AuditEvent.objects.filter(action="asset.approved").count() == 2


# Notes that show nothing: zero-width space, non-joiner, joiner, word joiner, BOM, bidi controls and
# marks, a Hangul filler (a "letter" drawn blank), wide spaces, a combining accent alone, a soft
# hyphen, a Mongolian vowel separator, a Unicode tag character; and punctuation that explains nothing.
INVISIBLE_NOTES = ["\u200b", " \u200c\u200d ", "\u2060", "\ufeff", "\u202e\u202c", "\u200e\u200f\u061c", "\u3164",
                   "\u00a0\u2003\u3000", "\u0301", "\u00ad", "\t\n", "\u180e", "\U000e0041", "...", "\u200b-\u200b"]


def test_a_note_that_shows_nothing_does_not_explain_a_decision(db, active_model, no_broker, users, desk_assets):
    editor, reviewer = users
    flagged = desk_assets(editor, 1, flagged=True)[0]
    approved = desk_assets(editor, 1)[0]
    services.approve_asset(approved.pk, reviewer)
    client = Client()
    client.force_login(reviewer)
    for note in INVISIBLE_NOTES:
        # The probe's request: a flagged asset approved from its page with a zero-width space.
        response = client.post(f"{ADMIN}/asset/{flagged.pk}/review/", {"decision": "approve", "note": note}, follow=True)
        assert b"write a note saying why it may be approved" in response.content, ascii(note)
        with pytest.raises(services.NoteRequired, match="why the image is rejected"):
            services.reject_asset(flagged.pk, reviewer, note=note)
        with pytest.raises(services.NoteRequired, match="why the approval is revoked"):
            services.revoke_asset(approved.pk, reviewer, note=note)
    assert Asset.objects.get(pk=flagged.pk).state == "pending_review"
    assert Asset.objects.get(pk=approved.pk).state == "approved"
    assert not Review.objects.filter(decision__in=["reject", "revoke"]).exists()


def test_a_note_is_kept_as_written_without_the_whitespace_around_it(db, active_model, no_broker, users, desk_assets):
    editor, reviewer = users
    flagged, plain = desk_assets(editor, 1, flagged=True)[0], desk_assets(editor, 1)[0]
    # Letters in any script, or digits, explain; an invisible character among them stays as written.
    services.approve_asset(flagged.pk, reviewer, note=" \u200bok\u200d \n")
    services.reject_asset(plain.pk, reviewer, note="\u00a0 \u0928\u0939\u0940\u0902 \t")
    assert Review.objects.get(asset=flagged).note == "\u200bok\u200d"
    assert Review.objects.get(asset=plain).note == "\u0928\u0939\u0940\u0902"
    assert AuditEvent.objects.get(action="asset.rejected").data["note"] == "\u0928\u0939\u0940\u0902"


def test_someone_elses_or_missing_objects_by_url(db, active_model, no_broker, users, desk_assets):
    other = make_role("other editor", users)
    theirs = desk_assets(other, 1, caption="a secret green frog")[0]
    client = Client()
    client.force_login(users[0])
    for url in (f"{ADMIN}/generationrequest/{theirs.request_id}/change/", f"{ADMIN}/generationrequest/{theirs.request_id}/status/",
                f"{ADMIN}/asset/{theirs.pk}/image/", f"{ADMIN}/asset/{theirs.pk}/change/",
                f"{ADMIN}/generationrequest/999999/change/", f"{ADMIN}/asset/999999/image/", f"{ADMIN}/asset/nonsense/change/",
                f"{ADMIN}/generationrequest/nonsense/change/"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"secret green frog" not in response.content
    again = client.post(f"{ADMIN}/generationrequest/{theirs.request_id}/again/")
    assert again.status_code == 404 and GenerationRequest.objects.count() == 1


def again_token(client, request_id) -> str:
    return client.get(f"{ADMIN}/generationrequest/{request_id}/change/").context["again_key"]


def test_generate_again_uses_new_seeds_and_refused_captions_cannot_be_repeated(db, active_model, no_broker, users):
    client = Client()
    client.force_login(users[0])
    original = services.submit_request(caption="a red apple", num_images=2, user=users[0])
    response = client.post(f"{ADMIN}/generationrequest/{original.pk}/again/",
                           {"submission_key": again_token(client, original.pk)})
    again = GenerationRequest.objects.exclude(pk=original.pk).get()
    assert response["Location"].endswith(f"/{again.pk}/change/")
    assert (again.caption, again.num_images, again.resubmission_of_id) == ("a red apple", 2, original.pk)
    assert again.seed != original.seed and again.state == "queued"
    assert AuditEvent.objects.filter(action="request.resubmitted", object_id=str(again.pk)).exists()
    denied = services.submit_request(caption="a n.u.d.e figure", num_images=1, user=users[0])
    refused = client.post(f"{ADMIN}/generationrequest/{denied.pk}/again/", {"submission_key": "another-page"}, follow=True)
    assert b"change the caption" in refused.content and GenerationRequest.objects.count() == 3


def test_generate_again_twice_from_one_page_makes_one_request(db, active_model, no_broker, users):
    """A double click (or a re-sent POST) on "Generate again" leads to the request the first made."""
    client = Client()
    client.force_login(users[0])
    original = services.submit_request(caption="a red apple", num_images=2, user=users[0])
    url = f"{ADMIN}/generationrequest/{original.pk}/again/"
    page = client.get(f"{ADMIN}/generationrequest/{original.pk}/change/")
    token = page.context["again_key"]
    assert f'name="submission_key" value="{token}"' in page.content.decode()
    first = client.post(url, {"submission_key": token})
    second = client.post(url, {"submission_key": token}, follow=True)
    again = GenerationRequest.objects.get(resubmission_of=original)
    assert first["Location"].endswith(f"/{again.pk}/change/")
    assert second.redirect_chain[-1][0].endswith(f"/{again.pk}/change/")
    assert b"This form was already sent" in second.content
    assert AuditEvent.objects.filter(action="request.resubmitted").count() == 1
    # Without the page's token (a forged or stale POST) nothing is made.
    stale = client.post(url, follow=True)
    assert b"missing its submission token" in stale.content and GenerationRequest.objects.count() == 2
    # A new page load is a new click: a second "again" is then wanted.
    client.post(url, {"submission_key": again_token(client, original.pk)})
    assert GenerationRequest.objects.filter(resubmission_of=original).count() == 2


def test_live_status_reports_queue_position_and_progress(db, active_model, no_broker, users):
    client = Client()
    client.force_login(users[0])
    first = services.submit_request(caption="a red apple", num_images=1, user=users[0])
    second = services.submit_request(caption="a blue bird", num_images=1, user=users[0])
    status = client.get(f"{ADMIN}/generationrequest/{second.pk}/status/").content.decode()
    assert "number 2 in the queue" in status and 'hx-trigger="every 2s"' in status
    services.start_request(first.pk)
    assert "number 1 in the queue" in client.get(f"{ADMIN}/generationrequest/{second.pk}/status/").content.decode()
    assert services.record_progress(first.pk, "signing") is True
    running = client.get(f"{ADMIN}/generationrequest/{first.pk}/status/").content.decode()
    assert "signing their provenance" in running and 'class="sg-step-current">Signing' in running
    assert 'hx-trigger="every 1s"' in running  # polled faster while the worker is on it
    assert services.record_progress(second.pk, "signing") is False  # not running: nothing written
    with pytest.raises(services.WorkflowError, match="Unknown progress stage"):
        services.record_progress(first.pk, "dreaming")
    services.finish_request(first.pk, [], 0.5)
    done = client.get(f"{ADMIN}/generationrequest/{first.pk}/status/").content.decode()
    assert "hx-trigger" not in done and "Done" in done  # a finished request stops the polling


def test_check_names_a_missing_django_htmx(settings):
    from stackgan_django.checks import check_desk_apps

    assert check_desk_apps() == []
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_htmx"]
    assert [error.id for error in check_desk_apps()] == ["stackgan_django.E010"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_submissions_cannot_overrun_the_daily_quota(active_model, no_broker, users):
    """At 490 of 500, six simultaneous requests of 8 images: one may pass, not all six. Each thread
    has its own connection, so on PostgreSQL this is a real race (SQLite serialises writers)."""
    editor = users[0]
    GenerationRequest.objects.create(caption="earlier work", num_images=490, seed=1, purpose="editorial",
                                     requested_by=editor, model_version=active_model, state=GenerationRequest.State.DONE)
    results, errors = at_once(6, lambda: services.submit_request(caption="a red apple", num_images=8, user=editor))
    assert errors == []
    passed = [r for r in results if r.state != GenerationRequest.State.POLICY_DENIED]
    assert len(passed) == 1 and len(results) == 6
    assert services.images_requested_today(editor) == 498


@pytest.mark.django_db(transaction=True)
def test_the_caption_is_judged_before_the_quota_lock_and_the_quota_counted_under_it(active_model, no_broker, users,
                                                                                    monkeypatch):
    """The semantic layer takes tens of milliseconds a caption; under the quota lock (on SQLite the
    database's one write lock) every other submission would wait for it. The quota must still be
    counted inside the transaction that inserts the request."""
    from django.db import connection

    from policies import UsagePolicy

    seen = {}
    judge, count = UsagePolicy.check_caption, UsagePolicy.check_quotas

    def judging(self, *args, **kwargs):
        seen["judged_in_transaction"] = connection.in_atomic_block
        return judge(self, *args, **kwargs)

    def counting(self, *args, **kwargs):
        seen["counted_in_transaction"] = connection.in_atomic_block
        return count(self, *args, **kwargs)

    monkeypatch.setattr(UsagePolicy, "check_caption", judging)
    monkeypatch.setattr(UsagePolicy, "check_quotas", counting)
    editor = users[0]
    GenerationRequest.objects.create(caption="earlier work", num_images=498, seed=1, purpose="editorial",
                                     requested_by=editor, model_version=active_model, state=GenerationRequest.State.DONE)
    request = services.submit_request(caption="a red apple", num_images=4, user=editor)
    assert seen == {"judged_in_transaction": False, "counted_in_transaction": True}
    assert request.state == GenerationRequest.State.POLICY_DENIED
    assert "usage.quota.user" in set(request.decisions.values_list("rule_id", flat=True))
