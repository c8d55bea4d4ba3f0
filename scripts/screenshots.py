"""Screenshots of the web page and the API reference at 1280x800, for docs/ and the README.

    .venv/bin/python scripts/screenshots.py --models models --images build/data/digits --out docs

Starts a real server on the model repository (as tests/service/http does), behind the same
reverse proxy under /visor/ as the browser test, and drives Debian's headless Chromium through the
same helpers as tests/service/http/test_browser.py: uploads one image of each of the first
classes, re-targets precision, marks the true labels (feedback) and saves five PNGs (quantised, so
they stay small).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image

from tests.helpers import browser
from tests.helpers.proxy import PrefixProxy
from tests.helpers.servers import start_server


def save(driver: Any, path: Path) -> None:
    driver.save_screenshot(str(path))
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


def scroll_to(driver: Any, element_id: str) -> None:
    driver.execute_script(f"document.getElementById('{element_id}').scrollIntoView()")


def page_shots(driver: Any, base: str, images: list[Path], out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver.get(base)
    browser.wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#models tbody tr"))
    browser.upload(driver, images)
    save(driver, out / "ui-classify.png")
    browser.retarget(driver, "precision", 0.99)
    scroll_to(driver, "thresholds-section")
    save(driver, out / "ui-thresholds.png")
    for card, image in zip(driver.find_elements(By.CSS_SELECTOR, ".result"), images, strict=True):
        Select(card.find_element(By.CSS_SELECTOR, "select.truth")).select_by_value(
            image.parent.name
        )
        browser.wait_for(driver, lambda d, c=card: c.get_attribute("data-truth"))
    browser.wait_for(
        driver,
        lambda d: d.find_element(By.ID, "live").get_attribute("data-feedback") == str(len(images)),
    )
    scroll_to(driver, "live-section")
    save(driver, out / "ui-live.png")
    scroll_to(driver, "card-section")
    browser.wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#card figure img"))
    save(driver, out / "ui-model-card.png")


def reference_shot(driver: Any, base: str, out: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{base}docs")
    block = browser.open_try_it_out(driver, "post_classify")
    next(b for b in block.find_elements(By.TAG_NAME, "button") if "Add" in b.text).click()
    driver.execute_script("arguments[0].scrollIntoView()", block)
    save(driver, out / "api-reference.png")


def rollout_shot(models: Path, images: Path, out: Path, count: int = 60) -> None:
    """The Models section while a rollout evaluates: ``models`` holds a model with a
    rollout.yaml; ``count`` images of ``images`` are classified and their labels sent back."""
    import base64
    import json
    import random

    import httpx

    files = sorted(images.glob("*/*.png"))
    random.Random(0).shuffle(files)
    with tempfile.TemporaryDirectory() as work:
        server = start_server(Path(work), models.resolve(), workers=1)
        driver = browser.start_browser()
        try:
            for f in files[:count]:
                body = {"images": [base64.b64encode(f.read_bytes()).decode()]}
                answer = httpx.post(f"{server.http}/classify", json=body, timeout=30).json()
                truth = {"request_id": answer["request_id"], "labels": [f.parent.name]}
                httpx.post(f"{server.http}/feedback", content=json.dumps(truth), timeout=30,
                           headers={"Content-Type": "application/json"})  # fmt: skip
            driver.get(f"{server.http}/")
            browser.wait_for(driver, lambda d: d.execute_script(
                "return document.querySelector('#rollouts .rollout') !== null"))  # fmt: skip
            scroll_to(driver, "rollouts")
            save(driver, out / "ui-rollout.png")
        finally:
            driver.quit()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="a model repository")
    parser.add_argument("--images", type=Path, required=True, help="class folders of images")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--count", type=int, default=3, help="images to upload, one per class")
    parser.add_argument(
        "--rollout-models",
        type=Path,
        help="also docs/ui-rollout.png: a repository whose model has a rollout.yaml, fed "
        "feedback from --images (docs/service.md#rollouts-a-new-version-earns-its-traffic)",
    )
    args = parser.parse_args()
    if reason := browser.missing():
        sys.exit(reason)
    if args.rollout_models:
        rollout_shot(args.rollout_models, args.images, args.out)
    folders = sorted(p for p in args.images.iterdir() if p.is_dir())
    images = [min(f.glob("*.png")) for f in folders[: args.count]]
    with tempfile.TemporaryDirectory() as work:
        server = start_server(Path(work), args.models.resolve(), workers=1)
        proxy = PrefixProxy(server.http, "/visor")
        driver = browser.start_browser()
        try:
            page_shots(driver, proxy.url, images, args.out)
            reference_shot(driver, proxy.url, args.out)
        finally:
            driver.quit()
            proxy.close()
            server.stop()


if __name__ == "__main__":
    main()
