"""Changes to who may do what are audit events on the hash chain, like every workflow change: a user
made staff, superuser or inactive, a password set, a user put in or taken out of a group, a
permission given to a user or a group. Django's admin history (LogEntry) records no values, misses
changes made outside the admin, and can be edited by anyone with database access; a reviewer's
permission given and taken back again would otherwise leave no trace in the log that matters.

The acting person comes from the request being served (``CurrentActorMiddleware``, after Django's
AuthenticationMiddleware); a change made by a command or a shell is recorded as ``system``."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save

from stackgan_django.audit import record_event

# The flags that decide what a user may do; a change of any of them is an event.
WATCHED_FLAGS = ("is_active", "is_staff", "is_superuser")

_current_request: ContextVar[Any] = ContextVar("stackgan_django_current_request", default=None)


class CurrentActorMiddleware:
    """Remembers the request being served, so that a signal can name who made a change."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def current_actor() -> Any:
    """The authenticated user of the request being served, else None (recorded as "system")."""
    user = getattr(_current_request.get(), "user", None)
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def _record(action: str, obj: Any, **data: Any) -> None:
    # A savepoint when the change runs in a transaction (the admin's), which then holds both; a
    # transaction of its own when it does not (record_event locks the chain's head).
    with transaction.atomic():
        record_event(action, obj, current_actor(), **data)


def _permission_names(pks: set[int] | None) -> list[str]:
    if not pks:
        return []
    return sorted(f"{app}.{codename}" for app, codename in
                  Permission.objects.filter(pk__in=pks).values_list("content_type__app_label", "codename"))


def _flags(user: Any) -> dict[str, Any]:
    return {name: getattr(user, name) for name in WATCHED_FLAGS if hasattr(user, name)}


def _remember_before(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    # A save of other fields only (every log-in saves last_login) changes no access: no query.
    if raw or instance.pk is None or (update_fields is not None
                                      and not set(update_fields) & {*WATCHED_FLAGS, "password"}):
        return
    before = sender.objects.filter(pk=instance.pk).values(*_flags(instance), "password").first()
    instance._access_before = before


def _user_saved(sender, instance, created, raw=False, **kwargs) -> None:
    if raw:
        return
    if created:
        _record("access.user_created", instance, username=instance.get_username(), **_flags(instance))
        return
    before = getattr(instance, "_access_before", None)
    instance._access_before = None
    if before is None:
        return
    changes = {name: [before[name], value] for name, value in _flags(instance).items() if before.get(name) != value}
    password_changed = before.get("password") != instance.password
    if changes or password_changed:
        _record("access.user_changed", instance, username=instance.get_username(), changes=changes,
                password_changed=password_changed)


def _user_deleted(sender, instance, **kwargs) -> None:
    _record("access.user_deleted", None, username=instance.get_username(), user_id=instance.pk)


def _group_deleted(sender, instance, **kwargs) -> None:
    _record("access.group_deleted", None, group=instance.name, group_id=instance.pk)


def _m2m_action(action: str) -> str | None:
    return {"post_add": "added", "post_remove": "removed", "pre_clear": "removed"}.get(action)


def _memberships_changed(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    change = _m2m_action(action)
    if change is None:
        return
    user_model = get_user_model()
    if not reverse:  # user.groups.add(group, ...)
        groups = pk_set if action != "pre_clear" else set(instance.groups.values_list("pk", flat=True))
        if groups:
            names = sorted(Group.objects.filter(pk__in=groups).values_list("name", flat=True))
            _record("access.groups_changed", instance, username=instance.get_username(), **{change: names})
        return
    # group.user_set.add(user, ...): one event per user, on the user as for the forward side.
    users = pk_set if action != "pre_clear" else set(instance.user_set.values_list("pk", flat=True))
    for user in user_model.objects.filter(pk__in=users or ()):
        _record("access.groups_changed", user, username=user.get_username(), **{change: [instance.name]})


def _user_permissions_changed(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    change = _m2m_action(action)
    if change is None:
        return
    if reverse:  # permission.user_set.add(user, ...)
        for user in get_user_model().objects.filter(pk__in=pk_set or instance.user_set.values_list("pk", flat=True)):
            _record("access.permissions_changed", user, username=user.get_username(),
                    **{change: _permission_names({instance.pk})})
        return
    pks = pk_set if action != "pre_clear" else set(instance.user_permissions.values_list("pk", flat=True))
    if pks:
        _record("access.permissions_changed", instance, username=instance.get_username(),
                **{change: _permission_names(pks)})


def _group_permissions_changed(sender, instance, action, reverse, model, pk_set, **kwargs) -> None:
    change = _m2m_action(action)
    if change is None:
        return
    if reverse:  # permission.group_set.add(group, ...)
        for group in Group.objects.filter(pk__in=pk_set or instance.group_set.values_list("pk", flat=True)):
            _record("access.group_permissions_changed", group, group=group.name,
                    **{change: _permission_names({instance.pk})})
        return
    pks = pk_set if action != "pre_clear" else set(instance.permissions.values_list("pk", flat=True))
    if pks:
        _record("access.group_permissions_changed", instance, group=instance.name, **{change: _permission_names(pks)})


def connect_signals() -> None:
    user_model = get_user_model()
    uid = "stackgan_django.access_audit."
    pre_save.connect(_remember_before, sender=user_model, dispatch_uid=uid + "remember")
    post_save.connect(_user_saved, sender=user_model, dispatch_uid=uid + "user_saved")
    post_delete.connect(_user_deleted, sender=user_model, dispatch_uid=uid + "user_deleted")
    post_delete.connect(_group_deleted, sender=Group, dispatch_uid=uid + "group_deleted")
    if hasattr(user_model, "groups"):
        m2m_changed.connect(_memberships_changed, sender=user_model.groups.through, dispatch_uid=uid + "groups")
    if hasattr(user_model, "user_permissions"):
        m2m_changed.connect(_user_permissions_changed, sender=user_model.user_permissions.through,
                            dispatch_uid=uid + "user_permissions")
    m2m_changed.connect(_group_permissions_changed, sender=Group.permissions.through,
                        dispatch_uid=uid + "group_permissions")
