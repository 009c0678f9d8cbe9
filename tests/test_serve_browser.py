"""The search page in a real browser: headless Chromium driven by Playwright against a live server."""

import os
import shutil
import socket
import threading
import time

import pytest
import torch
import uvicorn

from personvl.data.synth import generate_world, read_world_records
from personvl.index import build_index, open_index
from personvl.models import create_model, save_model
from personvl.serve import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Locally a missing browser skips these tests; in CI (which installs it) it is a failure.
if CHROMIUM is None and not os.environ.get("CI"):
    pytest.skip("no chromium executable on PATH (Debian: apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

TOKEN = "browser-test-token"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    world = tmp_path_factory.mktemp("browser-world") / "w"
    generate_world(world, identities=12, images_per_identity=2, cameras=3, seed=7, scene_identities=2,
                   progress=False, workers=1)
    torch.manual_seed(2)
    model = save_model(create_model("tiny-unipt-vitb16"), tmp_path_factory.mktemp("model") / "tiny")
    out = tmp_path_factory.mktemp("browser-index") / "gallery.index"
    build_index(model, world / "records.jsonl", out, progress=False)
    return out, world


@pytest.fixture(scope="module")
def server(index_dir):
    """The service on a free port of 127.0.0.1, with a token, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(index_dir[0], token=TOKEN)
    live = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=live.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not live.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    live.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM is not None, "CI is set but there is no chromium executable on PATH"
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(browser, server):
    """A page of a browser session that opened the service with its token once."""
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(f"{server}/?token={TOKEN}")  # moves the token into a cookie and reloads /
    yield page
    context.close()


def result_ids(page) -> list[int]:
    return [int(value) for value in page.eval_on_selector_all("#results .result", "items => items.map(i => i.dataset.id)")]


def wait_for_thumbnails(page) -> None:
    page.wait_for_function("() => Array.from(document.querySelectorAll('#results img'))"
                           ".every(image => image.complete && image.naturalWidth > 0)")


def test_describe_submit_and_see_the_result_grid(page, server, index_dir, tmp_path):
    index_path, world = index_dir
    assert page.url == f"{server}/"
    page.wait_for_function("() => document.getElementById('gallery-info').textContent.includes('24 images')")

    description = "a woman in a black dress with a backpack"
    page.fill("#query-text", description)
    page.fill("#result-count", "6")
    page.click("#text-submit")
    page.wait_for_function("() => document.querySelectorAll('#results .result').length === 6")
    wait_for_thumbnails(page)
    assert f"6 results for “{description}”" in page.inner_text("#status")
    expected = open_index(index_path).search_text(description, k=6)
    assert result_ids(page) == [hit.id for hit in expected]
    first = page.locator("#results .result").first
    assert first.locator(".score").inner_text() == f"#1 · {expected[0].score:.3f}"
    assert first.locator(".path").inner_text() == expected[0].relative_path
    assert first.locator(".ids").inner_text() == f"person {expected[0].pid} · camera {expected[0].camid}"
    screenshot = tmp_path / "search_page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000

    clicked = result_ids(page)[2]
    page.locator("#results .result .similar").nth(2).click()
    page.wait_for_function(f"() => document.getElementById('status').textContent.includes('results for images like #{clicked}')")
    assert result_ids(page)[0] == clicked  # an image is its own nearest neighbour

    records = read_world_records(world)
    page.set_input_files("#query-image", str(world / records[10]["image"]))
    page.click("#image-submit")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('results for images like 0000')")
    assert result_ids(page)[0] == 10
    wait_for_thumbnails(page)


def test_the_page_shows_the_servers_refusal(page, server, tmp_path):
    page.goto(f"{server}/")
    page.wait_for_function("() => document.getElementById('gallery-info').textContent.includes('images')")
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_text("a text file with an image's name")
    page.set_input_files("#query-image", str(not_an_image))
    page.click("#image-submit")
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image in a supported format" in page.inner_text("#error")


def test_without_the_token_the_page_is_refused(browser, server):
    context = browser.new_context()  # no cookie from an earlier visit
    try:
        response = context.new_page().goto(f"{server}/")
        assert response.status == 401 and "API token is required" in response.text()
    finally:
        context.close()
