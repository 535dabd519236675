"""The Django side of issue 12: STACKGAN["OUTPUT_CHECKS"] by dotted path, and the admin page where
compliance staff measure a usage policy (and a proposed change) on labelled captions."""

from __future__ import annotations

import io

import pytest
from django.core.exceptions import ImproperlyConfigured
from PIL import Image

from policies import Decision, Outcome, load_policies


def always_review(image):
    return [Decision(Outcome.REVIEW, "site.always", "Every image gets a second look on this site.")]


def test_output_checks_are_imported_from_settings_and_run(settings):
    from stackgan_django.conf import app_settings

    settings.STACKGAN = {"OUTPUT_CHECKS": ["tests.test_policy_admin.always_review"]}
    checks = app_settings.OUTPUT_CHECKS
    assert checks == [always_review]
    image = Image.new("RGB", (64, 64), "white")
    image.paste((200, 30, 30), (10, 10, 40, 40))
    verdict = load_policies().output.with_checks(checks).check_image(image)
    assert "site.always" in [d.rule_id for d in verdict.decisions]


@pytest.mark.parametrize(("value", "message"), [
    (["tests.test_policy_admin.no_such_check"], "OUTPUT_CHECKS"),
    ("tests.test_policy_admin.always_review", "must be a list"),
])
def test_bad_output_checks_setting_is_a_clear_error(settings, value, message):
    from stackgan_django.conf import app_settings

    settings.STACKGAN = {"OUTPUT_CHECKS": value}
    with pytest.raises(ImproperlyConfigured, match=message):
        _ = app_settings.OUTPUT_CHECKS


URL = "/admin/stackgan_django/policy-evaluation/"
CSV = ("caption,expected,category,split\n"
       "instructions for assembling a pipe bomb in a garage,deny,harm_instructions,test\n"
       "a birthday party invitation with a cartoon bomb and confetti,allow,weapons,test\n"
       "a bowl of tulips,allow,,dev\n")


def upload(name: str, text: str) -> io.BytesIO:
    handle = io.BytesIO(text.encode())
    handle.name = name
    return handle


@pytest.mark.django_db
def test_policy_evaluation_page_for_reviewers_only(users, client):
    editor, reviewer = users
    client.force_login(editor)
    assert client.get(URL).status_code == 403
    client.force_login(reviewer)
    response = client.get(URL)
    assert response.status_code == 200 and b"Test a usage policy" in response.content


@pytest.mark.django_db
def test_editors_with_the_demo_group_permissions_cannot_use_the_policy_page(users, client):
    """The Editors group reads policy decisions (its own refusals); that must not open the bulk
    evaluation page, nor its link in the desk navigation."""
    from django.contrib.auth.models import Permission

    from stackgan_django.management.commands.bootstrap_demo import GROUP_PERMISSIONS

    editor, reviewer = users
    editor.user_permissions.set(Permission.objects.filter(codename__in=GROUP_PERMISSIONS["Editors"]))
    assert editor.has_perm("stackgan_django.view_policydecision")
    client.force_login(editor)
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"labelled": upload("c.csv", CSV)}).status_code == 403
    assert URL not in client.get("/admin/stackgan_django/generationrequest/add/").content.decode()
    client.force_login(reviewer)
    assert URL in client.get("/admin/stackgan_django/asset/").content.decode()


@pytest.mark.django_db
def test_policy_evaluation_page_compares_a_proposed_usage_file(users, client):
    from policies import DEFAULT_DIR

    client.force_login(users[1])
    proposed = (DEFAULT_DIR / "usage.toml").read_text().replace('[blocked.weapons]\noutcome = "review"',
                                                                '[blocked.weapons]\noutcome = "deny"')
    response = client.post(URL, {"labelled": upload("c.csv", CSV), "split": "test",
                                 "proposed_usage": upload("usage.toml", proposed)})
    body = response.content.decode()
    assert response.status_code == 200
    assert "in force" in body and "proposed (usage.toml)" in body and "2 captions" in body
    # The proposal denies the harmless invitation: a false positive the page shows before go-live.
    assert "a birthday party invitation with a cartoon bomb" in body.split("proposed (usage.toml): false positives")[1]


@pytest.mark.django_db
@pytest.mark.parametrize(("files", "shown"), [
    ({"labelled": ("c.csv", "caption,label\na,b\n")}, "columns caption and expected"),
    ({"labelled": ("c.csv", "caption,expected\na cat,maybe\n")}, "row 2"),
    ({"labelled": ("c.csv", CSV), "proposed_semantic": ("semantic.toml", "[categories.x\n")}, "semantic.toml: not valid TOML"),
    ({"labelled": ("c.bin", "\udcff")}, "UTF-8"),
    ({"labelled": ("c.csv", 'caption,expected\n"' + "a" * 200_000 + '",allow\n')}, "line 2: a field is longer than"),
    ({"labelled": ("c.csv", "caption,expected\ra cat,allow\r")}, "line 1: the lines end in a bare carriage return"),
    ({"labelled": ("c.csv", "caption,expected\na cat,allow\n" + "word " * 201 + ",deny\n")}, "caption 2 is 1004 characters"),
])
def test_policy_evaluation_page_shows_errors_not_tracebacks(users, client, files, shown):
    client.force_login(users[1])
    data = {}
    for field, (name, text) in files.items():
        handle = io.BytesIO(text.encode("utf-8", "surrogateescape"))
        handle.name = name
        data[field] = handle
    response = client.post(URL, data)
    assert response.status_code == 200 and shown in response.content.decode()


@pytest.mark.django_db
def test_policy_evaluation_page_counts_evaluations_per_person(users, client, settings):
    """An evaluation can hold a web process for minutes: each person has an allowance (the fifth
    probe ran 40 long captions in 55 s); past it the page says when to come back, and runs nothing."""
    settings.STACKGAN = {**settings.STACKGAN, "API_THROTTLE_RATES": {"policy_evaluation": "1/hour"}}
    client.force_login(users[1])
    assert client.post(URL, {"labelled": upload("c.csv", CSV)}).status_code == 200
    limited = client.post(URL, {"labelled": upload("c.csv", CSV)})
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert "Too many evaluations" in limited.content.decode() and "false positives" not in limited.content.decode()
    assert client.get(URL).status_code == 200  # the empty form costs nothing
