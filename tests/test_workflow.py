"""Services, state machines, the audit chain, checks and bad input (database, no worker)."""

from __future__ import annotations

import io
import json
import secrets
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone
from PIL import Image

from policies import Decision, Outcome, Verdict
from stackgan_django import services
from stackgan_django.audit import verify_chain
from stackgan_django.models import AppendOnlyError, Asset, AuditEvent, GenerationRequest, ModelVersion, PolicyDecision
from tests.conftest import SHAPES_LINEAGE

State = GenerationRequest.State


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"caption": ""}, "caption"), ({"caption": "   \u00a0 "}, "caption"), ({"caption": "x" * 1001}, "caption"),
    ({"caption": 42}, "caption"), ({"num_images": 0}, "num_images"), ({"num_images": 9}, "num_images"),
    ({"num_images": "4"}, "num_images"), ({"num_images": True}, "num_images"), ({"seed": -1}, "seed"),
    ({"seed": 2**64}, "seed"), ({"seed": 1.5}, "seed"),
    # Only characters that show nothing: zero-width, joiners, BOM, soft hyphen, Hangul filler, a lone accent.
    ({"caption": "\u200b\u200c\u200d\u2060\ufeff\u00ad"}, "caption"), ({"caption": "\u3164\u2800 \u0301"}, "caption"),
])
def test_bad_submissions_are_refused_and_write_nothing(db, active_model, no_broker, kwargs, field):
    events_before = AuditEvent.objects.count()
    with pytest.raises(services.InvalidSubmission) as info:
        services.submit_request(**{"caption": "a cat", "num_images": 2, **kwargs})
    assert field in info.value.errors and info.value.errors[field]
    assert GenerationRequest.objects.count() == 0 and AuditEvent.objects.count() == events_before
    assert no_broker == []


def test_submission_without_an_active_model_is_refused(db, no_broker):
    with pytest.raises(services.NoActiveModel, match="No model version is active"):
        services.submit_request(caption="a cat")
    assert GenerationRequest.objects.count() == 0


def test_word_pasted_captions_are_tidied(db, active_model, no_broker):
    request = services.submit_request(caption="  a \u201cquoted\u201d\u00a0cat \U0001F431  ", num_images=1)
    assert request.caption == "a \u201cquoted\u201d cat \U0001F431" and request.state == State.QUEUED


def test_denied_caption_is_recorded_and_never_queued(db, active_model, no_broker, users):
    request = services.submit_request(caption="a n.u.d.e figure", num_images=2, user=users[0])
    assert request.state == State.POLICY_DENIED and no_broker == []
    decision = request.decisions.get(outcome="deny")
    assert decision.rule_id == "usage.blocked.sexual_content" and decision.evidence["matched"] == "n.u.d.e"
    assert decision.policy_version == request.policy_version and len(request.policy_version) == 64
    assert AuditEvent.objects.get(action="request.denied").object_id == str(request.pk)


def test_allowed_caption_is_queued_after_commit_with_an_allow_record(db, active_model, no_broker, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        request = services.submit_request(caption="a red apple", num_images=2)
    assert no_broker == [request.pk]
    assert request.seed is not None  # a seed is always stored, so any image can be made again
    assert list(request.decisions.values_list("rule_id", flat=True)) == ["usage.no_rule_fired"]


def test_review_outcome_flags_the_request(db, active_model, no_broker):
    request = services.submit_request(caption="a toy gun", num_images=1)
    assert request.state == State.QUEUED and request.flagged


def test_broken_policy_files_fail_closed(db, active_model, no_broker, settings, tmp_path):
    (tmp_path / "usage.toml").write_text("[limits\n")
    settings.STACKGAN = {"POLICY_DIR": str(tmp_path)}
    request = services.submit_request(caption="a red apple")
    assert request.state == State.POLICY_DENIED
    assert request.decisions.get().rule_id == "policy.unavailable"


def allowed_verdict():
    return Verdict("output", "v", [])


def stamped_output(request, index, seed=1, verdict=None):
    """An image as the worker hands it over: checked, and (when allowed) watermarked and signed."""
    image = Image.effect_noise((64, 64), 60).convert("RGB")
    output = services.GeneratedOutput(index, seed, image, verdict or allowed_verdict())
    return output if output.verdict.denied else services.stamp_output(request, output)


def test_worker_transitions_and_idempotence(db, active_model, no_broker):
    request = services.submit_request(caption="a red apple", num_images=2)
    started = services.start_request(request.pk)
    assert started.state == State.RUNNING and started.attempts == 1
    assert services.start_request(request.pk) is None  # running elsewhere, not stale: leave it
    denied = Verdict("output", "v", [Decision(Outcome.DENY, "output.degenerate.blank", "flat")])
    assets = services.finish_request(request.pk, [stamped_output(request, 0), stamped_output(request, 1, verdict=denied)], 0.5)
    assert [a.index for a in assets] == [0]
    assert PolicyDecision.objects.filter(request=request, rule_id="output.degenerate.blank").exists()
    request.refresh_from_db()
    assert request.state == State.DONE and request.compute_seconds == 0.5
    assert services.start_request(request.pk) is None  # done: a duplicate message does nothing
    with pytest.raises(services.TransitionError):
        services.finish_request(request.pk, [stamped_output(request, 1)], 0.1)
    assert Asset.objects.filter(request=request).count() == 1
    with pytest.raises(services.UnknownRequest):
        services.start_request(123456)


def test_failures_retry_then_fail_and_a_person_can_retry(db, active_model, no_broker, settings):
    settings.STACKGAN = {"MAX_ATTEMPTS": 2}
    request = services.submit_request(caption="a red apple", num_images=1)
    services.start_request(request.pk)
    assert services.fail_request(request.pk, "CUDA out of memory").state == State.QUEUED
    services.start_request(request.pk)
    failed = services.fail_request(request.pk, "CUDA out of memory")
    assert failed.state == State.FAILED and failed.error == "CUDA out of memory"
    assert not failed.assets.exists()
    retried = services.retry_request(request.pk)
    assert retried.state == State.QUEUED and retried.attempts == 0
    with pytest.raises(services.TransitionError, match="Only failed requests"):
        services.retry_request(request.pk)


def test_sweeper_requeues_stale_requests(db, active_model, no_broker):
    stuck = services.submit_request(caption="a red apple", num_images=1)
    running = services.submit_request(caption="a blue bird", num_images=1)
    fresh = services.submit_request(caption="a green tree", num_images=1)
    services.start_request(running.pk)
    past = timezone.now() - timedelta(hours=2)
    GenerationRequest.objects.filter(pk__in=[stuck.pk, running.pk]).update(queued_at=past)
    GenerationRequest.objects.filter(pk=running.pk).update(started_at=past)
    no_broker.clear()
    swept = services.sweep_stale_requests()
    assert sorted(swept) == sorted([stuck.pk, running.pk]) and fresh.pk not in swept
    assert GenerationRequest.objects.get(pk=running.pk).state == State.QUEUED


def make_asset(request_id):
    services.start_request(request_id)
    request = GenerationRequest.objects.get(pk=request_id)
    return services.finish_request(request_id, [stamped_output(request, 0)], 0.1)[0]


def test_review_state_machine(db, active_model, no_broker, users):
    _, reviewer = users
    request = services.submit_request(caption="a red apple", num_images=1)
    asset = make_asset(request.pk)
    with pytest.raises(services.TransitionError):
        services.revoke_asset(asset.pk, reviewer)  # only approved assets can be revoked
    services.approve_asset(asset.pk, reviewer, note="good")
    with pytest.raises(services.TransitionError, match="approved"):
        services.reject_asset(asset.pk, reviewer)
    # The reason clients are given with the revocation (410, verification): never blank.
    for blank in ("", "   "):
        with pytest.raises(services.NoteRequired, match="why the approval is revoked"):
            services.revoke_asset(asset.pk, reviewer, note=blank)
    assert Asset.objects.get(pk=asset.pk).state == Asset.State.APPROVED
    revoked = services.revoke_asset(asset.pk, reviewer, note="licence question")
    assert revoked.state == Asset.State.REVOKED
    assert list(revoked.reviews.values_list("decision", flat=True)) == ["approve", "revoke"]


def test_audit_chain_detects_edits_deletions_and_is_append_only(db, active_model, no_broker):
    for caption in ("a red apple", "a blue bird", "a green tree"):
        services.submit_request(caption=caption, num_images=1)
    assert verify_chain().ok
    event = AuditEvent.objects.get(sequence=3)
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()
    # A quiet edit straight in the database is caught, and the first broken link is named.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE stackgan_django_auditevent SET actor = 'someone else' WHERE sequence = 3")
    report = verify_chain()
    assert not report.ok and report.broken_at == 3 and "edited" in report.problem
    out = io.StringIO()
    with pytest.raises(CommandError, match="BROKEN at event #3"):
        call_command("verify_audit_chain", stdout=out)


def test_audit_chain_detects_a_removed_event(db, active_model, no_broker):
    for caption in ("a red apple", "a blue bird"):
        services.submit_request(caption=caption, num_images=1)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM stackgan_django_auditevent WHERE sequence = 2")
    report = verify_chain()
    assert not report.ok and report.broken_at == 2 and "missing" in report.problem


def test_audit_anchors_reveal_the_newest_events_deleted_or_the_chain_rewritten(db, active_model, no_broker,
                                                                              settings, tmp_path):
    """Deleting the newest events leaves a valid chain; the head anchored outside the database by
    the maintenance task shows it, and a chain rewritten from some event on too."""
    anchors = tmp_path / "anchors" / "audit-anchors.jsonl"
    settings.STACKGAN = {"AUDIT_ANCHOR_FILE": str(anchors), "AUDIT_ANCHOR_SECONDS": 300}
    start = timezone.now()
    services.submit_request(caption="a red apple", num_images=1)
    services.run_maintenance(start)
    head = AuditEvent.objects.order_by("-sequence").first()
    first = json.loads(anchors.read_text().splitlines()[-1])
    assert (first["sequence"], first["hash"]) == (head.sequence, head.hash)
    services.run_maintenance(start + timedelta(seconds=10))  # the head did not move: nothing written
    services.submit_request(caption="a blue bird", num_images=1)
    services.run_maintenance(start + timedelta(seconds=60))  # it moved, but too soon after the last anchor
    assert len(anchors.read_text().splitlines()) == 1
    services.run_maintenance(start + timedelta(seconds=301))
    lines = anchors.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["sequence"] == AuditEvent.objects.order_by("-sequence").first().sequence
    report = verify_chain(anchors)
    assert report.ok and report.anchored == 2 and "all 2 anchors found" in str(report)
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    assert "all 2 anchors found" in out.getvalue()
    # The newest events deleted straight in the database: the links alone still verify.
    newest = json.loads(lines[1])["sequence"]
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM stackgan_django_auditevent WHERE sequence >= %s", [newest])
    assert verify_chain().ok
    report = verify_chain(anchors)
    assert not report.ok and report.broken_at == newest and "cut short" in report.problem
    with pytest.raises(CommandError, match="cut short"):
        call_command("verify_audit_chain", stdout=io.StringIO())
    call_command("verify_audit_chain", "--no-anchors", stdout=io.StringIO())  # links only: intact
    # A chain rewritten from the first anchored event on (valid links, other content) is not the one anchored.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE stackgan_django_auditevent SET hash = %s WHERE sequence = %s",
                       ["f" * 64, first["sequence"]])
    report = verify_chain(anchors)
    assert not report.ok  # the links break here first; with them rewritten too, the anchor would
    fake = tmp_path / "rewritten.jsonl"
    fake.write_text(json.dumps({"sequence": first["sequence"], "hash": "0" * 64, "at": "then"}) + "\n")
    with connection.cursor() as cursor:
        cursor.execute("UPDATE stackgan_django_auditevent SET hash = %s WHERE sequence = %s",
                       [first["hash"], first["sequence"]])
    report = verify_chain(fake)
    assert not report.ok and "rewritten" in report.problem
    # A damaged anchor file is reported, not ignored.
    fake.write_text("not json\n")
    report = verify_chain(fake)
    assert not report.ok and "cannot be read" in str(report)


def test_model_activation_checks_lineage_against_the_data_policy(db, tiny_checkpoint, tmp_path):
    import json
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_checkpoint, bad)
    lineage = SHAPES_LINEAGE.to_dict()
    lineage["datasets"][0].update(name="apple64", licences={"LicenseRef-Apple-proprietary-emoji": 10})
    (bad / "lineage.json").write_text(json.dumps(lineage))
    with pytest.raises(services.WorkflowError, match="cannot be activated.*LicenseRef-Apple"):
        services.register_model_version("bad", bad, activate=True)
    good = services.register_model_version("good", tiny_checkpoint, activate=True)
    assert good.is_active
    assert AuditEvent.objects.filter(action="model.activated").count() == 1


@pytest.mark.parametrize("hostile", ["[" * 100_000 + "]" * 100_000, "NaN", "Infinity", "-Infinity"])
def test_register_model_refuses_a_hostile_lineage_with_a_message_and_no_row(db, tiny_checkpoint, tmp_path, hostile):
    """A lineage.json nested past the parser's stack, or holding NaN / Infinity (valid to Python, refused
    by every database's JSON column), is a clear error before anything is written, not a traceback."""
    import shutil

    folder = tmp_path / "hostile"
    shutil.copytree(tiny_checkpoint, folder)
    lineage = SHAPES_LINEAGE.to_dict()
    text = json.dumps(lineage)[:-1] + f', "extra": {hostile}}}'
    (folder / "lineage.json").write_text(text)
    with pytest.raises(CommandError, match="not readable JSON"):
        call_command("register_model", str(folder), "--name", "hostile")
    assert not ModelVersion.objects.filter(name="hostile").exists()


def test_migrations_are_up_to_date(db):
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_check_is_clean_and_deploy_check_names_the_development_defaults(db, active_model, settings):
    from django.core.checks import run_checks

    # The tests run with DEBUG off on the development key, which is an error (E004, tested below);
    # with a key of its own the configuration is clean.
    development_key, settings.SECRET_KEY = settings.SECRET_KEY, secrets.token_urlsafe(50)
    assert [m for m in run_checks(include_deployment_checks=False) if m.is_serious()] == []
    settings.SECRET_KEY = development_key
    ids = {m.id for m in run_checks(include_deployment_checks=True)}

    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        assert "stackgan_django.W101" in ids
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        assert "stackgan_django.W102" in ids
    assert {"stackgan_django.W103", "stackgan_django.W104"} <= ids


def test_the_development_secret_key_is_an_error_while_debug_is_off(settings):
    from django.core.checks import ERROR, run_checks
    from django.core.exceptions import ImproperlyConfigured

    from stackgan_django.checks import check_secret_key, refuse_development_secret_key

    settings.DEBUG = False
    for published in (settings.DEVELOPMENT_SECRET_KEY, "django-insecure-" + "x" * 50):
        settings.SECRET_KEY = published
        errors = check_secret_key()
        assert [(e.id, e.level) for e in errors] == [("stackgan_django.E004", ERROR)]
        assert "DJANGO_SECRET_KEY" in errors[0].hint and "DJANGO_DEBUG=1" in errors[0].hint
        # Registered, so `manage.py check`, runserver, migrate and every command refuse to start.
        assert "stackgan_django.E004" in {m.id for m in run_checks() if m.is_serious()}
        with pytest.raises(ImproperlyConfigured, match="E004"):
            refuse_development_secret_key()  # config.wsgi: gunicorn runs no checks
    settings.SECRET_KEY = secrets.token_urlsafe(50)
    assert check_secret_key() == []
    refuse_development_secret_key()
    # Development on one's own machine (`make run`): DEBUG on, the key in the source is fine.
    settings.DEBUG, settings.SECRET_KEY = True, settings.DEVELOPMENT_SECRET_KEY
    assert check_secret_key() == []


def test_unknown_stackgan_settings_are_an_error(settings):
    from django.core.checks import run_checks

    settings.STACKGAN = {"MAX_IMAGE_PER_REQUEST": 3}
    errors = [m for m in run_checks() if m.id == "stackgan_django.E001"]
    assert errors and "MAX_IMAGE_PER_REQUEST" in errors[0].msg


def test_user_and_group_quotas_are_counted_here_and_limited_by_the_policy(db, active_model, no_broker, users, settings,
                                                                          tmp_path):
    import shutil

    from django.contrib.auth.models import Group

    from policies import DEFAULT_DIR

    folder = tmp_path / "policies"
    shutil.copytree(DEFAULT_DIR, folder)
    usage = (folder / "usage.toml").read_text().replace("per_user_per_day = 500", "per_user_per_day = 5")
    (folder / "usage.toml").write_text(usage + '\ndesk = 6\n')
    settings.STACKGAN = {**settings.STACKGAN, "POLICY_DIR": str(folder)}
    editor, reviewer = users
    desk = Group.objects.create(name="desk")
    editor.groups.add(desk)
    reviewer.groups.add(desk)
    assert services.submit_request(caption="a red apple", num_images=4, user=editor).state == State.QUEUED
    over_user = services.submit_request(caption="a red apple", num_images=2, user=editor)
    assert over_user.state == State.POLICY_DENIED and over_user.decisions.get().rule_id == "usage.quota.user"
    over_group = services.submit_request(caption="a blue bird", num_images=3, user=reviewer)
    assert over_group.state == State.POLICY_DENIED
    assert over_group.decisions.get().rule_id == "usage.quota.group"
    assert services.submit_request(caption="a blue bird", num_images=2, user=reviewer).state == State.QUEUED


def _failed_request(user=None, num_images=1):
    request = services.submit_request(caption="a red apple", num_images=num_images, user=user)
    services.start_request(request.pk)
    GenerationRequest.objects.filter(pk=request.pk).update(attempts=99)  # no attempts left: fails for good
    return services.fail_request(request.pk, "CUDA out of memory")


def test_a_retry_needs_an_active_model_and_moves_to_it(db, active_model, no_broker, tiny_checkpoint):
    from stackgan_django.models import ModelVersion

    failed = _failed_request()
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)  # withdrawn by compliance
    with pytest.raises(services.NoActiveModel, match="No model version is active"):
        services.retry_request(failed.pk)
    assert GenerationRequest.objects.get(pk=failed.pk).state == State.FAILED
    replacement = services.register_model_version("tiny-replacement", tiny_checkpoint, activate=True)
    retried = services.retry_request(failed.pk)
    assert retried.state == State.QUEUED and retried.model_version_id == replacement.pk
    event = AuditEvent.objects.filter(action="request.retried").latest("pk")
    assert event.data["previous_model_version"] == active_model.name


def test_the_worker_refuses_a_model_version_that_was_deactivated(db, active_model, no_broker):
    from stackgan_django.models import ModelVersion

    request = services.submit_request(caption="a red apple", num_images=1)
    ModelVersion.objects.filter(pk=active_model.pk).update(is_active=False)
    assert services.start_request(request.pk) is None
    request.refresh_from_db()
    assert request.state == State.FAILED and "was deactivated" in request.error and "retry" in request.error
    assert not request.assets.exists()


def test_the_worker_refuses_a_model_version_whose_files_were_replaced(db, no_broker, tiny_checkpoint, tmp_path):
    """The data policy accepted the lineage registered with these weights, and manifests name their
    hash: a folder written over since (a fine-tune with FORCE=1, a promotion into models/default)
    is not drawn with under the old record."""
    import shutil

    from stackgan_django import generation

    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    model_version = services.register_model_version("tiny-replaced", folder, activate=True)
    request = services.submit_request(caption="a red apple", num_images=1)
    config = folder / "config.json"
    config.write_text(config.read_text() + "\n")  # other files now: what is drawn is not what was vetted
    generation._backends.clear()
    try:
        with pytest.raises(generation.CheckpointChanged, match="replaced after it was registered"):
            generation.backend_for(model_version)
        assert services.process_request(request.pk) == "failed"
    finally:
        generation._backends.clear()
    request.refresh_from_db()
    assert request.state in (State.QUEUED, State.FAILED) and "replaced after it was registered" in request.error
    assert str(folder) not in request.error  # editors see the request's error: no server paths
    assert not request.assets.exists()


@pytest.mark.parametrize("change", ["replaced", "removed", "added"])
def test_the_worker_refuses_a_near_copy_index_changed_after_registration(db, no_broker, tiny_checkpoint, tmp_path,
                                                                         change):
    """The near-copy index is what stops a memorised training image from being released: an index
    emptied, deleted or slipped in after registration would change that check under a vetted model."""
    import shutil

    from policies import NearCopyIndex
    from stackgan_django.services import worker

    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    index_file = folder / "near_copies.json"
    if change != "added":
        NearCopyIndex.build([("red", Image.new("RGB", (64, 64), (200, 30, 30)))]).save(index_file)
    model_version = services.register_model_version(f"tiny-index-{change}", folder, activate=True)
    assert services.near_copy_index(model_version) is not None or change == "added"
    if change == "replaced":
        NearCopyIndex.build([]).save(index_file)
    elif change == "removed":
        index_file.unlink()
    else:
        NearCopyIndex.build([("blue", Image.new("RGB", (64, 64), (30, 30, 200)))]).save(index_file)
    worker._near_copy_indexes.clear()
    request = services.submit_request(caption="a red apple", num_images=1)
    with pytest.raises(worker.NearCopyIndexChanged):
        services.near_copy_index(model_version)
    assert services.process_request(request.pk) == "failed"
    request.refresh_from_db()
    assert "near-copy index" in request.error and str(folder) not in request.error
    assert not request.assets.exists()
    # Registering the folder as it is now, under a new name, is the way back.
    worker._near_copy_indexes.clear()
    again = services.register_model_version(f"tiny-index-{change}-2", folder, activate=True)
    assert (services.near_copy_index(again) is None) == (change == "removed")
    with pytest.raises(services.WorkflowError, match="near-copy index"):
        services.register_model_version(f"tiny-index-{change}", folder)


@pytest.mark.parametrize(("raised", "summary"), [
    (RuntimeError("cannot open /srv/models/secret/generator.safetensors: permission denied"), "internal error"),
    (ValueError("connection to db.internal:5432 failed: password=hunter2"), "internal error"),
    (MemoryError("Tried to allocate 2.00 GiB on /dev/shm/torch_1234"), "out of memory"),
    (FileNotFoundError(2, "No such file or directory", "/var/lib/stackgan/media/x.png"), "No such file or directory"),
])
def test_a_failed_request_shows_its_editor_a_reference_never_the_exception(db, active_model, no_broker, settings,
                                                                           monkeypatch, raised, summary):
    """Editors read the request's error in the admin, the API and webhooks; exception text can name
    server paths, hosts and credentials. They get a summary and a reference; staff find the exception
    under that reference in the audit event (and the worker's log)."""
    from stackgan_django import generation

    class BrokenBackend:
        def generate(self, caption, seeds):
            raise raised

    settings.STACKGAN = {"MAX_ATTEMPTS": 1}
    monkeypatch.setattr(generation, "backend_for", lambda model_version: BrokenBackend())
    request = services.submit_request(caption="a red apple", num_images=1)
    assert services.process_request(request.pk) == "failed"
    request.refresh_from_db()
    assert request.state == State.FAILED and summary in request.error
    for secret in ("/srv", "/var/lib", "/dev/shm", "db.internal", "hunter2", type(raised).__name__):
        assert secret not in request.error
    reference = request.error.split("Reference ")[1].split(":")[0]
    event = AuditEvent.objects.filter(action="request.failed").latest("pk")
    assert event.data["error"] == request.error[:500]
    assert event.data["detail"].startswith(f"[{reference}] {type(raised).__name__}: ")
    assert str(raised) in event.data["detail"]


def test_a_retry_passes_the_quota_again_counting_its_own_images_once(db, active_model, no_broker, users):
    editor = users[0]
    failed = _failed_request(editor, num_images=4)
    GenerationRequest.objects.create(caption="earlier", num_images=496, seed=1, requested_by=editor,
                                     model_version=active_model, state=State.DONE)
    assert services.retry_request(failed.pk).state == State.QUEUED  # 500 of 500: its own 4 count once
    GenerationRequest.objects.filter(pk=failed.pk).update(state=State.FAILED)
    GenerationRequest.objects.create(caption="more", num_images=1, seed=2, requested_by=editor,
                                     model_version=active_model, state=State.DONE)
    with pytest.raises(services.TransitionError, match="usage policy now refuses"):
        services.retry_request(failed.pk)
    assert GenerationRequest.objects.get(pk=failed.pk).state == State.FAILED


def test_the_requester_may_not_review_their_own_image_unless_allowed(db, active_model, no_broker, users, settings):
    from django.contrib.auth.models import Permission

    editor, reviewer = users
    editor.user_permissions.add(*Permission.objects.filter(codename="review_asset"))  # both roles
    request = services.submit_request(caption="a red apple", num_images=1, user=editor)
    services.start_request(request.pk)
    services.finish_request(request.pk, [stamped_output(request, 1)], 0.1)
    asset = Asset.objects.get(request=request)
    for decide in (services.approve_asset, services.reject_asset):
        with pytest.raises(services.SelfReview, match="another reviewer"):
            decide(asset.pk, editor, note="looks fine to me")
    assert Asset.objects.get(pk=asset.pk).state == Asset.State.PENDING_REVIEW
    separated = settings.STACKGAN
    settings.STACKGAN = {**separated, "ALLOW_SELF_REVIEW": True}
    assert services.approve_asset(asset.pk, editor, note="one-person pilot").state == Asset.State.APPROVED
    settings.STACKGAN = separated
    with pytest.raises(services.TransitionError):  # another reviewer, on a decided asset: the state says so first
        services.reject_asset(asset.pk, reviewer, note="late")


def test_the_demo_bootstrap_registers_a_shipped_model_replaced_since(db, tmp_path, monkeypatch):
    """After scripts/promote-run.py writes a new model into models/default, `make run` registers and
    activates it (the old record's files are gone, and workers refuse to draw under it)."""
    import shutil

    from django.core.management import call_command

    from generator.checkpoint import checkpoint_sha256
    from stackgan_django.management.commands import bootstrap_demo

    shipped = tmp_path / "default"
    shutil.copytree(bootstrap_demo.SHIPPED_MODEL_DIR, shipped)
    monkeypatch.setattr(bootstrap_demo, "SHIPPED_MODEL_DIR", shipped)
    printed = io.StringIO()
    call_command("bootstrap_demo", stdout=printed)
    # The usage policy's examples are embedded before the server starts, not on the first caption.
    assert "usage policy" in printed.getvalue() and "ready" in printed.getvalue()
    first = ModelVersion.objects.get(is_active=True)
    assert first.checkpoint_sha256 == checkpoint_sha256(shipped)
    config = json.loads((shipped / "config.json").read_text())
    (shipped / "config.json").write_text(json.dumps(config, indent=3) + "\n\n")  # other bytes: another hash
    call_command("bootstrap_demo", stdout=io.StringIO())
    active = ModelVersion.objects.get(is_active=True)
    assert active.pk != first.pk and active.checkpoint_sha256 == checkpoint_sha256(shipped)
    call_command("bootstrap_demo", stdout=io.StringIO())  # unchanged files: nothing new
    assert ModelVersion.objects.get(is_active=True).pk == active.pk


def test_a_model_version_is_deleted_only_unused_and_inactive_and_the_deletion_is_audited(
        db, active_model, no_broker, tiny_checkpoint, tmp_path, admin_client):
    import shutil

    spare_folder = tmp_path / "spare"
    shutil.copytree(tiny_checkpoint, spare_folder)
    (spare_folder / "config.json").write_text((spare_folder / "config.json").read_text() + "\n")
    spare = services.register_model_version("spare", spare_folder)
    services.submit_request(caption="a red apple", num_images=1)
    # The active version, which has also served a request, is not offered and not deleted.
    with pytest.raises(services.WorkflowError, match="active"):
        services.delete_model_version(active_model.pk)
    page = admin_client.get(f"/admin/stackgan_django/modelversion/{active_model.pk}/delete/")
    assert page.status_code == 403
    services.activate_model_version(spare.pk)
    with pytest.raises(services.WorkflowError, match="generated requests"):
        services.delete_model_version(active_model.pk)
    assert admin_client.post(f"/admin/stackgan_django/modelversion/{active_model.pk}/delete/",
                             {"post": "yes"}).status_code == 403
    # An unused, inactive version goes, from its page, with an audit event saying what it was.
    services.activate_model_version(active_model.pk)
    listing = admin_client.get("/admin/stackgan_django/modelversion/")
    assert b"delete_selected" not in listing.content
    response = admin_client.post(f"/admin/stackgan_django/modelversion/{spare.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302 and not ModelVersion.objects.filter(pk=spare.pk).exists()
    event = AuditEvent.objects.get(action="model.deleted")
    assert event.actor == "user:admin" and event.object_id == str(spare.pk)
    assert event.data["name"] == "spare" and event.data["checkpoint_sha256"] == spare.checkpoint_sha256
    assert verify_chain().ok


def test_a_retried_old_request_counts_in_todays_quota(db, active_model, no_broker, users):
    """Today's quota counted requests by when they were made: a request made days ago, failed and
    retried today generated its images outside every later count, so an editor with old failed
    requests could draw past the daily limit by retrying them."""
    from datetime import timedelta

    from django.utils import timezone

    editor = users[0]
    failed = _failed_request(editor, num_images=4)
    days_ago = timezone.now() - timedelta(days=3)
    GenerationRequest.objects.filter(pk=failed.pk).update(created_at=days_ago, queued_at=days_ago)
    assert services.images_requested_today(editor) == 0
    assert services.retry_request(failed.pk).state == State.QUEUED
    assert services.images_requested_today(editor) == 4  # asked for again today
    GenerationRequest.objects.create(caption="earlier", num_images=496, seed=1, requested_by=editor,
                                     model_version=active_model, state=State.DONE)
    over = services.submit_request(caption="a blue bird", num_images=1, user=editor)
    assert over.state == State.POLICY_DENIED and over.decisions.get().rule_id == "usage.quota.user"
    # Retried again today (it failed once more), its images still count once.
    GenerationRequest.objects.filter(pk=failed.pk).update(state=State.FAILED)
    assert services.retry_request(failed.pk).state == State.QUEUED  # 500 of 500


def test_approval_refuses_a_generated_file_changed_in_storage_since_the_worker_stored_it(db, active_model, no_broker,
                                                                                        users):
    """Approval signs the stored generated file as the review manifest's parent. A file written over
    in storage since (any picture: no generator drew it, no output policy checked it) would come
    out as our approved, Trusted asset; now the hash the worker recorded must still hold."""
    from stackgan_django import provenance

    editor, reviewer = users
    request = services.submit_request(caption="a red apple", num_images=1, user=editor)
    services.start_request(request.pk)
    asset = services.finish_request(request.pk, [stamped_output(request, 0)], 0.1)[0]
    storage = asset.file.storage
    original = storage.open(asset.file.name).read()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 0, 0)).save(buffer, "PNG")
    storage.delete(asset.file.name)
    storage.save(asset.file.name, io.BytesIO(buffer.getvalue()))
    with pytest.raises(services.WorkflowError, match="changed in storage"):
        services.approve_asset(asset.pk, reviewer, note="looks fine")
    refused = Asset.objects.get(pk=asset.pk)
    assert refused.state == Asset.State.PENDING_REVIEW and not refused.approved_file
    # The file put back as the worker stored it, the approval goes through.
    storage.delete(asset.file.name)
    storage.save(asset.file.name, io.BytesIO(original))
    approved = services.approve_asset(asset.pk, reviewer, note="looks fine")
    assert approved.state == Asset.State.APPROVED
    with approved.approved_file.open("rb") as handle:
        assert provenance.verify_bytes(handle.read()).state == "Trusted"
