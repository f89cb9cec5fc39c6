"""Screenshots of the service's page (``GET /``) in headless Chromium, for docs/figures/page-*.png.

Runs ``livt-serve`` on a model (the demo's: ``make demo`` first) and drives the page with real
Fashion-MNIST test images, as tests/serving/test_page_browser.py does with a tiny model:

    .venv/bin/python scripts/page_screenshots.py --model runs/fmnist/export/model.onnx --out docs/figures

Needs playwright (the dev extra) and a Chromium (Debian: ``apt-get install chromium``); nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

# benchmarks/harness: the real server in a child process (and the run folder's state) that the
# benchmarks and tests use too; not part of the installed package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from harness.server import ServerProcess

from livt.data import build_dataset

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
VIEWPORT = {"width": 1100, "height": 860}
# The traffic the estimate is shown for: the long tail reversed (the rarest training class most common).
SHIFT = np.array([1, 1, 2, 3, 5, 8, 12, 18, 25, 25], dtype=float)
SETTLED = "() => document.getElementById('status').textContent.includes('classified')"


class TestImages:
    """The Fashion-MNIST-LT test set, its images by class, written as PNG files into ``work``."""

    def __init__(self, work: Path):
        self.test = build_dataset("fashion-mnist-lt", split="test")
        labels = np.asarray(self.test.targets)
        self.names = [c.lower().replace("/", "-").replace(" ", "-") for c in self.test.classes]
        self.by_class = {c: np.flatnonzero(labels == c) for c in range(len(self.names))}
        self.work = work

    def file(self, index: int) -> Path:
        image, label = self.test[int(index)]
        path = self.work / f"{index:04d}-{self.names[label]}.png"
        image.save(path)
        return path

    def png_of_class(self, label: int, rng: np.random.Generator) -> bytes:
        buf = io.BytesIO()
        self.test[int(rng.choice(self.by_class[label]))][0].save(buf, format="PNG")
        return buf.getvalue()


def open_page(pw: Any, chromium: str, url: str, viewport: dict[str, int]) -> tuple[Any, Any]:
    browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
    page = browser.new_page(viewport=viewport)
    page.goto(url)
    return browser, page


def shoot_uploads(page: Any, images: TestImages, out: Path) -> None:
    """Several images at once, one of them not an image; then the enlarged preview."""
    notes = images.work / "notes.txt"
    notes.write_text("meeting notes, not an image\n")
    shown = [images.file(images.by_class[c][1]) for c in (7, 0, 8, 3, 9, 6)]
    page.set_input_files("#file", [str(p) for p in [*shown, notes]])
    page.wait_for_function(SETTLED)
    page.screenshot(path=out / "page-predictions.png", full_page=True)
    page.locator(".thumb").nth(4).click()
    page.wait_for_timeout(300)
    page.screenshot(path=out / "page-preview.png")
    page.keyboard.press("Escape")


def shoot_estimate(page: Any, url: str, images: TestImages, out: Path) -> None:
    """The estimated prior asked for before the server has seen enough images, then after a shifted
    stream of traffic: the estimate and the predictions under it."""
    page.select_option("#prior", "estimated")
    page.wait_for_function(SETTLED)
    page.locator("#estimate").evaluate("d => { d.open = true; }")
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_timeout(500)
    page.screenshot(path=out / "page-estimate-not-ready.png")

    rng = np.random.default_rng(0)
    stream = rng.choice(len(images.names), size=400, p=SHIFT / SHIFT.sum())
    for start in range(0, len(stream), 32):
        uploads = [
            ("files", ("x.png", images.png_of_class(int(y), rng), "image/png"))
            for y in stream[start : start + 32]
        ]
        httpx.post(f"{url}/v1/predict", files=uploads, timeout=60).raise_for_status()
    deadline = time.monotonic() + 30
    while not httpx.get(f"{url}/v1/prior").json()["ready"] and time.monotonic() < deadline:
        time.sleep(0.3)
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_function("() => document.getElementById('estimate').dataset.ready === 'yes'")
    page.select_option("#prior", "estimated")
    page.wait_for_function(SETTLED)
    page.screenshot(path=out / "page-estimated-prior.png", full_page=True)


def shoot_custom_prior(page: Any, out: Path) -> None:
    """A custom prior, filled with the training counts: the long tail."""
    page.locator("#estimate").evaluate("d => { d.open = false; }")
    page.select_option("#prior", "custom")
    page.get_by_role("button", name="train").click()
    page.wait_for_function(SETTLED)
    page.screenshot(path=out / "page-custom-prior.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="an exported Fashion-MNIST model (.onnx)")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="livt-page-"))
    images = TestImages(work)
    args.out.mkdir(parents=True, exist_ok=True)
    flags = ["--prior-min-images", "200", "--prior-interval-s", "0.5"]
    with sync_playwright() as pw, ServerProcess(args.model, flags) as server:
        browser, page = open_page(pw, args.chromium, server.url, VIEWPORT)
        page.wait_for_function(
            "() => !document.getElementById('model-line').textContent.startsWith('Loading')"
        )
        page.locator("#estimate").evaluate("d => { d.open = false; }")
        shoot_uploads(page, images, args.out)
        shoot_estimate(page, server.url, images, args.out)
        shoot_custom_prior(page, args.out)
        browser.close()

    with ServerProcess(args.model, ["--prior-window", "0"]) as server, sync_playwright() as pw:
        browser, page = open_page(pw, args.chromium, server.url, {"width": VIEWPORT["width"], "height": 420})
        page.wait_for_function("() => document.getElementById('estimate').classList.contains('off')")
        page.screenshot(path=args.out / "page-no-estimate.png")
        browser.close()
    shutil.rmtree(work)
    for path in sorted(args.out.glob("page-*.png")):
        shrink(path)
        print(path, f"{path.stat().st_size // 1024} KiB")
    return 0


def shrink(path: Path) -> None:
    """A screenshot is flat colour and grey images: 256 colours keep it as it looks, at a third of the size
    (maximum coverage keeps every colour within 5 levels here; median cut and octree merged the text's
    green and the greys of the images)."""
    from PIL import Image

    with Image.open(path) as img:
        small = img.convert("RGB").quantize(
            colors=256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE
        )
    small.save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
