"""``GET /`` driven in a real headless Chromium, against a real uvicorn server on a real ONNX artifact.

The browser is the system's (Debian's ``chromium``), driven by playwright's driver; nothing is
downloaded. Every number the page shows is checked against the API's own answer for the same file,
and every page is checked for CSP violations and script errors when its test ends. Without a browser
(or playwright) the tests skip with the reason, except under CI, where they must run.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest

from livt.serving import ServeSettings, create_app

from .conftest import CLASSES, image_bytes, running_server

# Chromium as root needs --no-sandbox; the rest keep it from reaching out (this machine's network
# refuses background connections, and a test must not depend on them).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
MIN_IMAGES = 8  # the estimated prior's minimum, small so that a test reaches it
TIMEOUT_MS = 20_000

# Installed by the test before any page script: the page's CSP violations, as the page sees them,
# and the files of each prediction request.
INIT_SCRIPT = """
window.__csp = [];
// The files of each POST /v1/predict the page makes (the request goes on as it was).
window.__predicts = [];
const pageFetch = window.fetch;
window.fetch = (url, options = {}) => {
  if (String(url).includes("/v1/predict") && options.body instanceof FormData) {
    window.__predicts.push(options.body.getAll("files").map((f) => f.name));
  }
  return pageFetch(url, options);
};
document.addEventListener("securitypolicyviolation", (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI || "inline"}`);
});
"""
# A drop and a paste as the browser delivers them: files in a DataTransfer on a trusted-looking event.
# (An OS-level drag cannot be scripted; the page's handlers see exactly this.)
FILES = """([names, types, datas]) => {
  const dt = new DataTransfer();
  names.forEach((name, i) => {
    const bytes = Uint8Array.from(atob(datas[i]), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], name, { type: types[i] }));
  });
  return dt;
}"""
DROP = f"""async (args) => {{
  const dt = ({FILES})(args);
  const zone = document.getElementById("drop");
  zone.dispatchEvent(new DragEvent("dragover", {{ dataTransfer: dt, bubbles: true, cancelable: true }}));
  zone.dispatchEvent(new DragEvent("drop", {{ dataTransfer: dt, bubbles: true, cancelable: true }}));
}}"""
PASTE = f"""async (args) => {{
  const dt = ({FILES})(args);
  document.dispatchEvent(new ClipboardEvent("paste", {{ clipboardData: dt, bubbles: true, cancelable: true }}));
}}"""
LOADED = """() => !document.getElementById("model-line").textContent.startsWith("Loading")
  && !document.getElementById("estimate-status").textContent.startsWith("Loading")"""
SETTLED = """() => document.getElementById("status").textContent.includes("classified")
  || document.getElementById("status").className === "error" """


def _browser_missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_missing("playwright is not installed (pip install -e '.[dev]')")
    executable = (
        os.environ.get("LIVT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if executable is None or not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        _browser_missing(f"no Chromium ({executable or 'none on PATH'}; Debian: apt-get install chromium)")
    with sync_playwright() as pw:
        # launch() adds --headless and a fresh --user-data-dir of its own, removed at close.
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_server(artifact: Path) -> Iterator[str]:
    """A server whose estimated prior is ready after a few images and re-estimated often."""
    settings = ServeSettings(
        model=artifact, prior_min_images=MIN_IMAGES, prior_interval_s=0.5, prior_bootstrap=5
    )
    with running_server(create_app(settings)) as url:
        yield url


class PageWatch:
    """A fresh page on ``url``, with what it reported: console errors, script errors, CSP violations."""

    def __init__(self, browser, url: str):
        self.context = browser.new_context(viewport={"width": 1100, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console: list[str] = []
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.add_init_script(INIT_SCRIPT)
        # Intercepting file choosers is switched on without waiting for the browser's reply: on
        # from the start, so that a chooser opened later is never missed.
        self.page.on("filechooser", lambda chooser: None)
        response = self.page.goto(url)
        assert response is not None and response.ok
        assert "script-src 'self'" in response.headers["content-security-policy"]
        self.page.wait_for_function(LOADED)

    def predicts(self) -> list[list[str]]:
        """The file names of each ``POST /v1/predict`` the page made, in order."""
        return self.page.evaluate("() => window.__predicts")

    def csp_violations(self) -> list[str]:
        reported = self.page.evaluate("() => window.__csp")
        return reported + [m for m in self.console if "Content Security Policy" in m]

    def check_clean(self) -> None:
        assert self.csp_violations() == []
        assert self.errors == []
        # Failed requests the test made on purpose (a non-image: 415) log "Failed to load resource";
        # any other console error is the page's fault.
        unexpected = [
            m for m in self.console if m.startswith("error:") and "Failed to load resource" not in m
        ]
        assert unexpected == []

    def close(self) -> None:
        self.context.close()


@contextmanager
def open_page(browser, url: str) -> Iterator[PageWatch]:
    """A fresh page on ``url``, checked clean (no CSP violation, no script error) when left."""
    watch = PageWatch(browser, url)
    try:
        yield watch
        watch.check_clean()
    finally:
        watch.close()


@pytest.fixture
def watch(browser, page_server: str) -> Iterator[PageWatch]:
    with open_page(browser, page_server) as w:
        yield w


@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    """Real PNG files of different sizes and contents."""
    sizes = [(20, 20), (33, 24), (48, 48), (16, 40)]
    paths = []
    for i, size in enumerate(sizes):
        path = tmp_path / f"photo-{i}.png"
        path.write_bytes(image_bytes(size, seed=10 + i))
        paths.append(path)
    return paths


def api_predict(url: str, path: Path, prior: object = None, top_k: int = 5) -> dict:
    data = {"top_k": str(top_k)}
    if prior is not None:
        data["prior"] = prior if isinstance(prior, str) else json.dumps(prior)
    res = httpx.post(
        f"{url}/v1/predict", files=[("files", (path.name, path.read_bytes()))], data=data, timeout=30
    )
    assert res.status_code == 200, res.text
    return res.json()


def shown(p: float) -> set[str]:
    """What the page may show for probability ``p`` (a tie rounds either way in JS and in Python)."""
    if p < 0.0005:
        return {"<0.1 %"}
    if 0.9995 <= p < 1:
        return {">99.9 %"}
    x = Decimal(p * 100)  # the exact double, as JS's toFixed reads it
    return {f"{x.quantize(Decimal('0.1'), rounding=r)} %" for r in (ROUND_HALF_UP, ROUND_HALF_EVEN)}


def card(page, name: str):
    return page.locator(".card", has=page.locator(".name", has_text=name))


def wait_settled(page) -> None:
    page.wait_for_function(SETTLED)


def check_card(page, name: str, answer: dict) -> None:
    """The card of ``name`` shows the API's top-k: labels in order, percentages, and bar lengths."""
    rows = card(page, name).locator(".bars li")
    expected = answer["predictions"][0]["top_k"]
    assert rows.count() == len(expected)
    for row, item in zip(rows.all(), expected, strict=True):
        assert row.locator(".label").inner_text() == item["label"]
        assert row.locator(".pct").inner_text() in shown(item["probability"])
        # The drawn length, not only the style: a style the CSP blocked would draw nothing.
        drawn = row.evaluate(
            "li => li.querySelector('.bar span').getBoundingClientRect().width"
            " / li.querySelector('.bar').getBoundingClientRect().width"
        )
        assert drawn == pytest.approx(item["probability"], abs=0.01)


def file_args(paths: list[Path], types: list[str]) -> list[list[str]]:
    return [[p.name for p in paths], types, [base64.b64encode(p.read_bytes()).decode() for p in paths]]


def test_choose_several_by_keyboard_bars_match_the_api(watch: PageWatch, page_server: str, pngs: list[Path]):
    page = watch.page
    assert "re-weighted by" in page.locator("#prior-help").inner_text()
    page.locator("#drop").focus()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    assert chooser.value.is_multiple()
    chooser.value.set_files([str(p) for p in pngs[:3]])
    wait_settled(page)
    # One card per image, in the order chosen, from one request for the three.
    assert page.locator(".card .name").all_inner_texts() == [p.name for p in pngs[:3]]
    assert watch.predicts() == [[p.name for p in pngs[:3]]]
    for path in pngs[:3]:
        check_card(page, path.name, api_predict(page_server, path))
    answer = api_predict(page_server, pngs[0])
    assert page.locator("#status").inner_text().startswith("3 of 3 images classified")
    assert f"prior: {answer['prior']}" in page.locator("#status").inner_text()

    # The enlarged preview: the image itself, many times the size of its pixels, closed by Escape.
    card(page, pngs[0].name).locator(".thumb").click()
    viewer = page.locator("#viewer")
    assert viewer.evaluate("d => d.open")
    assert page.locator("#viewer-title").inner_text().startswith(pngs[0].name)
    size = page.locator("#viewer-img").evaluate(
        "img => [img.naturalWidth, img.getBoundingClientRect().width, img.classList.contains('small')]"
    )
    assert size[0] == 20 and size[1] >= 300 and size[2]  # 20 px shown at 300+ px, pixels kept sharp
    page.keyboard.press("Escape")
    assert not viewer.evaluate("d => d.open")


def test_drop_paste_and_a_non_image(watch: PageWatch, page_server: str, pngs: list[Path], tmp_path: Path):
    page = watch.page
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    refused = httpx.post(f"{page_server}/v1/predict", files=[("files", (notes.name, notes.read_bytes()))])
    assert refused.status_code == 415
    server_error = refused.json()["error"]
    assert server_error.startswith("image 0: ")  # what the page must not show as it is

    page.evaluate(DROP, file_args([pngs[0], notes, pngs[1]], ["image/png", "text/plain", "image/png"]))
    wait_settled(page)
    bad = card(page, notes.name)
    assert bad.locator(".card-status").inner_text() == f"notes.txt: {server_error.removeprefix('image 0: ')}"
    assert bad.locator(".card-status").get_attribute("role") == "alert"
    assert bad.locator(".thumb").is_disabled()  # nothing to enlarge
    assert "image 0" not in page.locator("body").inner_text()
    assert "image 1" not in page.locator("body").inner_text()
    # The other images of the drop still get their answers.
    check_card(page, pngs[0].name, api_predict(page_server, pngs[0]))
    check_card(page, pngs[1].name, api_predict(page_server, pngs[1]))
    assert page.locator("#status").inner_text().startswith("2 of 3 images classified")
    # The three in one request, refused for the text file, then the two images again.
    assert watch.predicts() == [[pngs[0].name, notes.name, pngs[1].name], [pngs[0].name, pngs[1].name]]

    page.evaluate(PASTE, file_args([pngs[2]], ["image/png"]))
    wait_settled(page)
    assert page.locator(".card .name").first.inner_text() == "pasted-1.png"
    check_card(page, "pasted-1.png", api_predict(page_server, pngs[2]))


def test_prior_switch_and_custom_prior(watch: PageWatch, page_server: str, pngs: list[Path]):
    page = watch.page
    page.set_input_files("#file", [str(pngs[3])])
    wait_settled(page)
    options = page.locator("#prior option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["model", "balanced", "train", "estimated", "custom"]
    for prior in ("balanced", "train"):
        page.select_option("#prior", prior)
        wait_settled(page)
        check_card(page, pngs[3].name, api_predict(page_server, pngs[3], prior))
        assert f"prior: {prior}" in page.locator("#status").inner_text()
        assert prior in page.locator("#prior-hint").inner_text()

    page.select_option("#prior", "custom")
    wait_settled(page)
    assert page.locator("#custom").is_visible()
    # One number per class, each entered by its class name; a zero share makes that class <0.1 %.
    custom = [1000, 1, 1, 0]
    for name, value in zip(CLASSES, custom, strict=True):
        page.get_by_label(name, exact=True).fill(str(value))
    page.get_by_role("button", name="Apply").click()
    wait_settled(page)
    answer = api_predict(page_server, pngs[3], custom)
    assert answer["prior"] == "custom"
    check_card(page, pngs[3].name, answer)
    assert "<0.1 %" in card(page, pngs[3].name).locator(".pct").all_inner_texts()
    assert "prior: custom" in page.locator("#status").inner_text()

    # Nothing is sent for a prior that cannot be one; the page says why.
    for name in CLASSES:
        page.get_by_label(name, exact=True).fill("0")
    page.get_by_role("button", name="Apply").click()
    assert page.locator("#custom-error").inner_text() == "At least one class needs a share above 0."
    check_card(page, pngs[3].name, answer)  # the last answer stays

    page.get_by_role("button", name="train").click()  # fill with the training frequencies
    wait_settled(page)
    check_card(page, pngs[3].name, api_predict(page_server, pngs[3], "train"))


def test_estimated_prior_panel(browser, artifact: Path, pngs: list[Path], tmp_path: Path):
    settings = ServeSettings(
        model=artifact, prior_min_images=MIN_IMAGES, prior_interval_s=1.0, prior_bootstrap=5
    )
    with running_server(create_app(settings)) as url, open_page(browser, url) as watch:
        page = watch.page
        assert "No estimate yet" in page.locator("#estimate-status").inner_text()
        page.select_option("#prior", "estimated")
        page.set_input_files("#file", [str(pngs[0])])
        wait_settled(page)
        # Not ready: balanced is used, and the page shows the server's note saying so.
        assert "prior: balanced" in page.locator("#status").inner_text()
        note = page.locator("#prior-note")
        assert note.is_visible()
        assert (
            "estimated prior not ready" in note.inner_text()
            and f"of {MIN_IMAGES} images" in note.inner_text()
        )

        more = []
        for i in range(MIN_IMAGES + 2):
            path = tmp_path / f"more-{i}.png"
            path.write_bytes(image_bytes((24, 24), seed=100 + i))
            more.append(path)
        page.set_input_files("#file", [str(p) for p in more])
        wait_settled(page)
        # The estimate catches up with every image seen (nothing else is sent meanwhile).
        deadline = time.monotonic() + 20
        while True:
            estimate = httpx.get(f"{url}/v1/prior").json()
            if estimate["ready"] and estimate["images"] == estimate["seen"]:
                break
            assert time.monotonic() < deadline, estimate
            time.sleep(0.2)
        # Another prior sends the same images again, with observe=false: the server counts none twice.
        page.select_option("#prior", "balanced")
        wait_settled(page)
        page.select_option("#prior", "estimated")
        wait_settled(page)
        assert "prior: estimated" in page.locator("#status").inner_text()
        assert httpx.get(f"{url}/v1/prior").json()["seen"] == estimate["seen"]
        page.get_by_role("button", name="Refresh").click()
        page.wait_for_selector(f'#estimate[data-updated="{estimate["updated_at"]}"]')
        summary = page.locator("#estimate-summary").inner_text()
        assert summary == f"— ready · {estimate['images']} images"
        status = page.locator("#estimate-status").inner_text()
        assert status.startswith(f"Ready: rests on the last {estimate['images']} images")
        assert f"{estimate['distance_to_train']:.2f}" in status
        rows = page.locator("#estimate-table tbody tr")
        assert rows.count() == len(CLASSES)
        for i, row in enumerate(rows.all()):
            cells = row.locator("th, td").all_inner_texts()
            assert cells[0] == estimate["classes"][i]
            assert cells[1].strip() in shown(estimate["estimate"][i])
            assert cells[2] == f"± {estimate['std'][i] * 100:.1f}"
            assert cells[3] in shown(estimate["train"][i])

        # Ready: the page's own request gets the estimated prior, with no note. Its images join the
        # window, so the estimate may move between the page's request and the API's; retried.
        for _ in range(5):
            before = httpx.get(f"{url}/v1/prior").json()["updated_at"]
            page.get_by_role("button", name="Clear").click()
            page.set_input_files("#file", [str(pngs[1])])
            wait_settled(page)
            answer = api_predict(url, pngs[1], "estimated")
            if httpx.get(f"{url}/v1/prior").json()["updated_at"] == before:
                break
        assert answer["prior"] == "estimated" and answer["prior_note"] is None
        check_card(page, pngs[1].name, answer)
        assert "prior: estimated" in page.locator("#status").inner_text()
        assert not page.locator("#prior-note").is_visible()


def test_no_estimate_without_a_window(browser, artifact: Path, pngs: list[Path]):
    with running_server(create_app(ServeSettings(model=artifact, prior_window=0))) as url:
        refused = httpx.get(f"{url}/v1/prior")
        assert refused.status_code == 409
        with open_page(browser, url) as watch:
            page = watch.page
            page.wait_for_function("() => document.getElementById('estimate').classList.contains('off')")
            status = page.locator("#estimate-status").inner_text()
            assert status.startswith(f"This server does not estimate the prior: {refused.json()['error']}")
            assert "not offered" in status
            option = page.locator('#prior option[value="estimated"]')
            assert option.evaluate("o => o.hidden && o.disabled")
            # The other priors still work.
            page.select_option("#prior", "balanced")
            page.set_input_files("#file", [str(pngs[0])])
            wait_settled(page)
            check_card(page, pngs[0].name, api_predict(url, pngs[0], "balanced"))


def test_a_csp_violation_would_be_caught(browser, page_server: str):
    """The check the other tests end with can fail: an inline style is refused and reported."""
    watch = PageWatch(browser, page_server)
    try:
        watch.page.evaluate("() => document.body.setAttribute('style', 'color: red')")
        watch.page.wait_for_function("() => window.__csp.length > 0")
        assert any("style-src" in v for v in watch.csp_violations())
        with pytest.raises(AssertionError):
            watch.check_clean()
    finally:
        watch.close()


def test_api_key_and_a_request_wide_error(browser, artifact: Path, pngs: list[Path]):
    settings = ServeSettings(model=artifact, api_key="s3cret")
    with running_server(create_app(settings)) as url, open_page(browser, url) as watch:
        page = watch.page
        assert page.locator("#model-line").inner_text().endswith("needs an API key: enter it above")
        assert page.locator("#estimate-status").inner_text().startswith("The estimate needs the API key")
        # A wrong key: every card says what the server said, as it said it.
        page.fill("#apikey", "wrong")
        page.set_input_files("#file", [str(pngs[0]), str(pngs[1])])
        wait_settled(page)
        refused = httpx.post(
            f"{url}/v1/predict",
            files=[("files", ("a.png", pngs[0].read_bytes()))],
            headers={"X-API-Key": "x"},
        )
        assert refused.status_code == 401
        for path in pngs[:2]:
            assert card(page, path.name).locator(".card-status").inner_text() == refused.json()["error"]
        assert page.locator("#status").inner_text() == refused.json()["error"]

        page.fill("#apikey", "s3cret")
        page.locator("#apikey").press("Tab")  # a change event: the page reloads what needs the key
        page.wait_for_function("() => document.getElementById('model-line').textContent.includes('classes')")
        page.wait_for_function(
            "() => document.getElementById('estimate-status').textContent.startsWith('No estimate yet')"
            " || document.getElementById('estimate-status').textContent.startsWith('Not ready')"
        )
        page.select_option("#prior", "train")
        wait_settled(page)
        res = httpx.post(
            f"{url}/v1/predict",
            files=[("files", (pngs[0].name, pngs[0].read_bytes()))],
            data={"prior": "train"},
            headers={"Authorization": "Bearer s3cret"},
        )
        check_card(page, pngs[0].name, res.json())
