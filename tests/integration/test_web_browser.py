"""The web page in a real browser: Debian's chromium, driven by Playwright (nothing downloaded),
against the real registry and the real proxy, with images pushed by skopeo.

Set MREG_UI_SCREENSHOTS=FOLDER to keep the screenshots the tests take (docs/ui.md shows them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

from helpers import require_tool
from imagegen import make_oci_layout
from live import ADMIN, READER, Mreg, http, run

pytestmark = pytest.mark.integration

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync",
]
# what a pusher may write into labels, history lines and annotations
HOSTILE = '<script>window.pwned = 1</script>"><img src=x onerror="window.pwned = 2">'
TAGS = ("1.0", "1.2", "1.10", "gone")


def playwright_api() -> Any:
    try:
        from playwright import sync_api
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("playwright not installed: CI must install it (.ci/run, the test extra)")
        pytest.skip("playwright not installed")
    return sync_api


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    executable = require_tool("chromium")
    with playwright_api().sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def push(mreg: Mreg, layout: Path, reference: str) -> None:
    result = run([require_tool("skopeo"), "copy", "--dest-tls-verify=false", "--dest-creds", ":".join(ADMIN),
                  f"oci:{layout}:latest", f"docker://{mreg.host}/{reference}"])
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def pushed(mreg: Mreg, tmp_path_factory: pytest.TempPathFactory) -> None:
    """webui/app with four tags (one of them to delete), webui/evil with a pusher's markup."""
    for seed, tag in enumerate(TAGS):
        layout = tmp_path_factory.mktemp("web") / "img"
        make_oci_layout(layout, [4096, 1000], seed=500 + seed, config={
            "Labels": {"org.opencontainers.image.title": f"app {tag}"}, "Env": ["PATH=/usr/bin"],
            "Entrypoint": ["/app"], "Cmd": ["--serve"], "ExposedPorts": {"8080/tcp": {}},
        }, history=[{"created_by": "COPY app /app"}, {"created_by": "RUN make"}])
        push(mreg, layout, f"webui/app:{tag}")
    evil = tmp_path_factory.mktemp("web") / "evil"
    make_oci_layout(evil, [512], seed=600, config={"Labels": {"note": HOSTILE}, "Env": [f"X={HOSTILE}"]},
                    history=[{"created_by": HOSTILE}], annotations={"org.example.note": HOSTILE})
    push(mreg, evil, "webui/evil:1")


@pytest.fixture
def page(chromium: Any, mreg: Mreg, pushed: None) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1000, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=mreg.url)
    page = context.new_page()
    page.set_default_timeout(30_000)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    try:
        yield page
    finally:
        context.close()


def log_in(page: Any, mreg: Mreg, who: tuple[str, str]) -> None:
    page.goto(mreg.url + "/")
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button:has-text('Log in')")
    page.wait_for_selector("h1:has-text('Repositories')")


def screenshot(page: Any, name: str) -> None:
    folder = os.environ.get("MREG_UI_SCREENSHOTS")
    if folder:
        page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_log_in_find_an_image_copy_its_pull_line_and_log_out(page: Any, mreg: Mreg) -> None:
    page.goto(mreg.url + "/")
    screenshot(page, "login")
    log_in(page, mreg, ADMIN)
    page.fill("input[name=q]", "webui")
    page.click("button:has-text('Search')")
    screenshot(page, "repositories")
    page.click("a:has-text('webui/app')")
    page.wait_for_selector("h1:has-text('webui/app')")
    assert page.locator("p.count").inner_text().startswith("4 tags · newest first")
    page.click("a:has-text('by name')")
    assert page.locator("section.tag h2 a").all_inner_texts() == ["1.0", "1.2", "1.10", "gone"]
    screenshot(page, "repository")
    row = page.locator("section.tag", has=page.locator("h2 a", has_text="1.10"))
    expected = f"podman pull --tls-verify=false {mreg.host}/webui/app:1.10"
    assert row.locator("code.pull").inner_text() == expected
    row.locator("button.copy[data-copy^='podman pull']").click()
    assert page.evaluate("navigator.clipboard.readText()") == expected
    page.click("button:has-text('Log out')")
    page.wait_for_selector("input[name=password]")
    page.goto(mreg.url + "/ui/r/webui/app")
    assert page.locator("input[name=password]").count() == 1  # sent back to the login form


def test_an_admin_deletes_one_tag_and_the_image_stays(page: Any, mreg: Mreg) -> None:
    log_in(page, mreg, ADMIN)
    page.goto(mreg.url + "/ui/r/webui/app?sort=name")
    row = page.locator("section.tag", has=page.locator("h2 a", has_text="gone"))
    row.locator("a:has-text('Delete tag')").click()
    page.wait_for_selector("h1:has-text('Delete tag gone?')")
    screenshot(page, "confirm")
    page.click("button:has-text('Delete webui/app:gone')")
    page.wait_for_selector("text=Tag gone deleted.")
    assert "gone" not in page.locator("section.tag h2 a").all_inner_texts()
    status, _headers, body = http("GET", f"{mreg.url}/v2/webui/app/tags/list", auth=READER)
    assert status == 200 and sorted(json.loads(body)["tags"]) == ["1.0", "1.10", "1.2"]
    page.click("a:has-text('Retention (dry run)')")  # read-only; this proxy's policy file has no rule
    page.wait_for_selector("h1:has-text('Retention (dry run)')")
    assert page.locator("dd:has-text('no rule: never touched')").count() == 1


def test_a_readers_pages_have_no_delete_buttons(page: Any, mreg: Mreg) -> None:
    log_in(page, mreg, READER)
    page.goto(mreg.url + "/ui/r/webui/app")
    page.wait_for_selector("section.tag")
    assert page.locator("text=Delete").count() == 0 and page.locator("text=Retention").count() == 0
    page.click("section.tag h2 a >> nth=0")
    page.wait_for_selector("text=Raw manifest")
    assert page.locator("text=Delete").count() == 0
    assert page.locator("a:has-text('Users')").count() == 0


def test_a_pushers_markup_shows_as_text(page: Any, mreg: Mreg) -> None:
    log_in(page, mreg, ADMIN)
    page.goto(mreg.url + "/ui/r/webui/evil@1")
    page.wait_for_selector("text=Raw manifest")
    screenshot(page, "image")
    assert page.locator("table.kv td").all_inner_texts().count(HOSTILE) == 2  # the label, the annotation
    assert f"X={HOSTILE}" in page.locator("ul.plain code").all_inner_texts()
    assert HOSTILE in page.locator("code.history").all_inner_texts()
    assert page.locator("img").count() == 0
    assert page.evaluate("window.pwned === undefined") and page.dialogs == []


def test_a_phone_sees_the_repository_page_without_scrolling_sideways(chromium: Any, mreg: Mreg, pushed: None) -> None:
    context = chromium.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, device_scale_factor=1)
    try:
        page = context.new_page()
        log_in(page, mreg, READER)
        page.goto(mreg.url + "/ui/r/webui/app?sort=name")
        page.wait_for_selector("section.tag")
        screenshot(page, "phone")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        context.close()
