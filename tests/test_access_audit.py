"""Changes of who may do what are on the hash-chained audit log, with the person who made them."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.checks import run_checks
from django.test import Client

from stackgan_django.audit import verify_chain
from stackgan_django.models import AuditEvent


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action).order_by("sequence"))


def test_flags_groups_and_permissions_changed_in_the_admin_are_audited_with_their_actor(db):
    users = get_user_model()
    root = users.objects.create_superuser("root", password="pw-root-123")
    assert events("access.user_created")[-1].data["is_superuser"] is True
    reviewer = users.objects.create_user("rita", password="pw-rita-1234")
    reviewers = Group.objects.create(name="reviewers")
    review = Permission.objects.get(codename="review_asset")
    browser = Client()
    browser.force_login(root)
    response = browser.post(f"/admin/auth/user/{reviewer.pk}/change/", {
        "username": "rita", "is_active": "on", "is_staff": "on", "groups": [reviewers.pk],
        "user_permissions": [review.pk], "last_login_0": "", "last_login_1": "",
        "date_joined_0": "2026-12-01", "date_joined_1": "09:00:00", "initial-date_joined_0": "2026-12-01",
        "initial-date_joined_1": "09:00:00"})
    assert response.status_code == 302, response.content[:2000]
    changed = events("access.user_changed")[-1]
    assert changed.actor == "user:root" and changed.object_id == str(reviewer.pk)
    assert changed.data["changes"] == {"is_staff": [False, True]} and changed.data["password_changed"] is False
    groups = events("access.groups_changed")[-1]
    assert groups.actor == "user:root" and groups.data == {"username": "rita", "added": ["reviewers"]}
    permissions = events("access.permissions_changed")[-1]
    assert permissions.actor == "user:root" and permissions.data["added"] == ["stackgan_django.review_asset"]
    # A group's permissions, from the group's admin page.
    response = browser.post(f"/admin/auth/group/{reviewers.pk}/change/", {"name": "reviewers",
                                                                          "permissions": [review.pk]})
    assert response.status_code == 302
    granted = events("access.group_permissions_changed")[-1]
    assert granted.actor == "user:root" and granted.data == {"group": "reviewers",
                                                             "added": ["stackgan_django.review_asset"]}
    assert verify_chain().ok


def test_changes_outside_a_request_are_audited_as_system_and_a_login_is_not_a_change(db):
    users = get_user_model()
    editor = users.objects.create_user("ed", password="pw-ed-12345", is_staff=True)
    group = Group.objects.create(name="editors")
    before = AuditEvent.objects.count()
    assert Client().login(username="ed", password="pw-ed-12345")  # last_login changes: not an access change
    assert AuditEvent.objects.count() == before
    editor.refresh_from_db()
    editor.is_staff = False
    editor.set_password("another-pw-987")
    editor.save()
    event = events("access.user_changed")[-1]
    assert event.actor == "system" and event.data["changes"] == {"is_staff": [True, False]}
    assert event.data["password_changed"] is True and "pbkdf2" not in str(event.data)
    group.user_set.add(editor)  # the reverse side of the relation
    assert events("access.groups_changed")[-1].data == {"username": "ed", "added": ["editors"]}
    editor.groups.clear()
    assert events("access.groups_changed")[-1].data == {"username": "ed", "removed": ["editors"]}
    editor.user_permissions.add(Permission.objects.get(codename="review_asset"))
    editor.user_permissions.remove(Permission.objects.get(codename="review_asset"))
    assert [e.data.get("added") or e.data.get("removed") for e in events("access.permissions_changed")] == [
        ["stackgan_django.review_asset"], ["stackgan_django.review_asset"]]
    editor_pk = editor.pk
    editor.delete()
    deleted = events("access.user_deleted")[-1]
    assert deleted.data == {"username": "ed", "user_id": editor_pk}
    group.delete()
    assert events("access.group_deleted")[-1].data["group"] == "editors"
    assert verify_chain().ok


def test_a_missing_actor_middleware_is_reported(settings):
    assert not [m for m in run_checks() if m.id == "stackgan_django.W140"]
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("CurrentActorMiddleware")]
    assert [m for m in run_checks() if m.id == "stackgan_django.W140"]
