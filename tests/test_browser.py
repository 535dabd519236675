"""The desks in a real browser: Playwright driving Debian's Chromium (never a downloaded one) against
Django's live server, with a real Celery worker where images must appear. Each page is saved as a
screenshot under var/screenshots/ for people to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from stackgan_django.models import Asset, AuditEvent, GenerationRequest

CHROMIUM = os.environ.get("STACKGAN_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"
playwright_api = pytest.importorskip("playwright.sync_api")

# CI sets STACKGAN_REQUIRE_BROWSER=1 (and installs Chromium), so a missing browser fails there
# instead of skipping silently; elsewhere the tests skip with the command that fixes it.
if shutil.which(CHROMIUM) is None and os.environ.get("STACKGAN_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"STACKGAN_REQUIRE_BROWSER=1 but there is no Chromium at {CHROMIUM}; apt-get install chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser():
    # Playwright's sync API keeps an event loop in this thread; the ORM calls the tests make between
    # browser steps are plain synchronous ones, which Django would otherwise refuse in that state.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Person:
    """One person's browser session, counting the clicks they make."""

    def __init__(self, browser, live_server):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.url = live_server.url
        self.clicks = 0

    def click(self, selector: str) -> None:
        self.page.click(selector)
        self.clicks += 1

    def log_in(self, username: str, password: str) -> None:
        self.page.goto(f"{self.url}/admin/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        self.click("input[type=submit]")
        self.page.wait_for_selector("#user-tools")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser, live_server):
    opened = []

    def open_session() -> Person:
        opened.append(Person(browser, live_server))
        return opened[-1]

    yield open_session
    for session in opened:
        session.close()


def test_editor_watches_images_appear_and_reviewer_approves_and_rejects(celery_worker, active_model, users, person):
    editor = person()
    editor.log_in("editor", "pw-editor-1")
    editor.click("a.addlink[href$='/generationrequest/add/']")
    editor.page.fill("#id_caption", "a red apple with a green leaf")
    editor.page.fill("#id_num_images", "2")
    # A fixed seed: the tiny test network's images pass the output policy for it.
    editor.page.fill("#id_seed", "12345")
    editor.click("#content-main button[type=submit]")
    editor.page.wait_for_selector("#sg-status")
    editor.page.evaluate("window.sgNoReload = true")  # gone if the page were reloaded
    images = editor.page.locator(".sg-image img")
    images.nth(1).wait_for(timeout=90_000)
    assert editor.page.evaluate("window.sgNoReload") is True
    # An inserted <img> loads after it appears (the file is fetched through the login-checked
    # view), so wait for both to finish loading rather than asserting at the moment they appear.
    editor.page.wait_for_function(
        "Array.from(document.querySelectorAll('.sg-image img'))"
        ".every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    editor.page.wait_for_function(
        "document.querySelector('#sg-status').innerText.includes('Done: 2 images waiting for review')",
        timeout=30_000,
    )
    editor.shot("request-page-with-images")
    request = GenerationRequest.objects.get()
    assert request.state == "done" and request.requested_by == users[0]
    first, second = request.assets.order_by("index")

    reviewer = person()
    reviewer.log_in("reviewer", "pw-reviewer-1")
    reviewer.click("a[href$='/stackgan_django/asset/']")
    reviewer.page.wait_for_selector("#result_list")
    reviewer.shot("review-desk")
    reviewer.click(f"#result_list a[href$='/asset/{first.pk}/change/']")
    assert reviewer.page.get_attribute("[data-provenance]", "data-provenance") == "Trusted"
    reviewer.shot("asset-page")
    reviewer.click("button[value=approve]")
    reviewer.page.wait_for_selector(f"[data-asset='{second.pk}']")  # on to the next asset in the queue
    clicks_to_approved = editor.clicks + reviewer.clicks
    assert Asset.objects.get(pk=first.pk).state == "approved"
    assert AuditEvent.objects.filter(action="asset.approved", object_id=str(first.pk)).count() == 1

    # Reject with the keyboard: "r" without a note is stopped in the page, with the reason.
    reviewer.page.keyboard.press("r")
    assert "Write a note" in reviewer.page.inner_text("#sg-note-error")
    assert Asset.objects.get(pk=second.pk).state == "pending_review"
    reviewer.page.fill("#sg-note", "the leaf is missing")
    reviewer.click("button[value=reject]")
    reviewer.page.wait_for_selector(".messagelist")
    assert Asset.objects.get(pk=second.pk).state == "rejected"
    assert Asset.objects.get(pk=second.pk).reviews.get().note == "the leaf is missing"
    print(f"clicks from log-in to an approved image: {clicks_to_approved} "
          f"(editor {editor.clicks}, reviewer {clicks_to_approved - editor.clicks}), plus typing")
    assert clicks_to_approved <= 7


def test_refused_caption_shows_its_rule(transactional_db, active_model, users, person):
    editor = person()
    editor.log_in("editor", "pw-editor-1")
    editor.page.goto(f"{editor.url}/admin/stackgan_django/generationrequest/add/")
    editor.page.fill("#id_caption", "a n.u.d.e figure on a beach")
    editor.shot("new-request-form")
    editor.click("#content-main button[type=submit]")
    status = editor.page.inner_text("#sg-status")
    assert "Refused by the usage policy" in status and "usage.blocked.sexual_content" in status
    messages = editor.page.inner_text(".messagelist")
    assert "Refused" in messages and "added successfully" not in messages
    editor.shot("refused-request")
    assert GenerationRequest.objects.get().state == "policy_denied"


def test_editor_cannot_open_another_editors_request(transactional_db, users, person, desk_assets):
    other = type(users[0]).objects.create_user("other-editor", password="pw-other-1", is_staff=True)
    other.user_permissions.set(users[0].user_permissions.all())
    asset = desk_assets(other, 1, caption="a secret green frog")[0]
    editor = person()
    editor.log_in("editor", "pw-editor-1")
    response = editor.page.goto(f"{editor.url}/admin/stackgan_django/generationrequest/{asset.request_id}/change/")
    assert response.status == 404 and "secret green frog" not in editor.page.content()
    image = editor.page.goto(f"{editor.url}/admin/stackgan_django/asset/{asset.pk}/image/")
    assert image.status == 404
    editor.page.goto(f"{editor.url}/admin/stackgan_django/generationrequest/")
    assert "secret green frog" not in editor.page.content()


def test_pilot_report_renders_its_chart(transactional_db, users, person, desk_assets, settings):
    from django.contrib.auth.models import Permission

    settings.STACKGAN = {**settings.STACKGAN, "COST_PER_GPU_HOUR": 2.5}
    desk_assets(users[0], 2)
    users[1].user_permissions.add(Permission.objects.get(codename="view_pilot_report"))
    reviewer = person()
    reviewer.log_in("reviewer", "pw-reviewer-1")
    reviewer.page.goto(f"{reviewer.url}/admin/stackgan_django/generationrequest/pilot-report/")
    chart = reviewer.page.locator("figure.sg-chart svg").first
    assert chart.is_visible() and chart.bounding_box()["height"] > 100
    assert "Images per day by review outcome" in reviewer.page.inner_html("figure.sg-chart")
    figures = reviewer.page.locator(".sg-card .sg-figure").all_inner_texts()
    assert figures[0] == "1" and figures[2] == "2"  # one request, two images made
    assert reviewer.page.input_value("#id_start")  # the range is shown in the date fields
    reviewer.shot("pilot-report")
