"""Headless Chromium (Debian's package) driven through chromedriver: the browser test and
``scripts/screenshots.py`` share it, so the screenshots show what the test checked."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver",)
VIEWPORT = (1280, 800)


def _first(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if Path(p).exists()), None) or shutil.which(name)


def missing() -> str | None:
    """Why no browser can start here (None when chromium and chromedriver are installed)."""
    if _first(CHROMIUM, "chromium") is None:
        return "chromium is not installed (scripts/install.sh installs Debian's package)"
    if _first(CHROMEDRIVER, "chromedriver") is None:
        return "chromedriver is not installed (scripts/install.sh installs chromium-driver)"
    return None


def start_browser(download_dir: Path | None = None) -> Any:
    """A headless Chromium whose *viewport* is 1280x800 (the window is sized to fit it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = _first(CHROMIUM, "chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--hide-scrollbars", "--force-device-scale-factor=1",
                f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}"):  # fmt: skip
        options.add_argument(arg)
    service = Service(executable_path=_first(CHROMEDRIVER, "chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    outer = driver.get_window_size()
    driver.set_window_size(
        outer["width"] + VIEWPORT[0] - inner[0], outer["height"] + VIEWPORT[1] - inner[1]
    )
    return driver


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def requests_done(driver: Any) -> int:
    """How many /classify answers the page has drawn (app.js counts them on <body>)."""
    return int(driver.execute_script("return Number(document.body.dataset.requests || 0)"))


def upload(driver: Any, paths: list[Path], timeout: float = 60) -> None:
    """Choose files in the page's file input, as a user picking them would."""
    from selenium.webdriver.common.by import By

    before = requests_done(driver)
    driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in paths))
    wait_for(driver, lambda d: requests_done(d) > before, timeout)


def label_bars(driver: Any) -> list[dict[str, dict[str, float]]]:
    """Per result card: label → {probability, threshold} as the bars show them."""
    return driver.execute_script(
        """return [...document.querySelectorAll('.result')].map(card => Object.fromEntries(
             [...card.querySelectorAll('.bar-row')].map(row => [row.dataset.label,
               {probability: Number(row.dataset.probability),
                threshold: Number(row.dataset.threshold),
                above: row.classList.contains('above')}])))"""
    )


def threshold_rows(driver: Any) -> dict[str, dict[str, str]]:
    """The thresholds table: label → calibrated/applied threshold, validation P/R, the lower
    bound and whether each target is certified, as shown."""
    return driver.execute_script(
        """const cell = (tr, f) => tr.querySelector(`[data-field=${f}]`);
           return Object.fromEntries([...document.querySelectorAll('#threshold-table tbody tr')]
             .map(tr => [tr.dataset.label, {calibrated: tr.dataset.calibrated,
               applied: tr.dataset.applied,
               precision: cell(tr, 'precision').textContent,
               recall: cell(tr, 'recall').textContent,
               bound: cell(tr, 'bound').textContent,
               calibrated_bound: cell(tr, 'calibrated-bound').textContent,
               calibrated_certified: cell(tr, 'calibrated-verdict').dataset.certified,
               certified: cell(tr, 'verdict').dataset.certified,
               verdict: cell(tr, 'verdict').textContent}]))"""
    )


def retarget(driver: Any, metric: str, value: float) -> None:
    """Pick "target precision/recall" and move the slider with the arrow keys to ``value``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.find_element(By.CSS_SELECTOR, f"input[name=policy][value={metric}]").click()
    slider = driver.find_element(By.ID, "target-value")
    steps = round((value - float(slider.get_attribute("value"))) / 0.01)
    slider.send_keys(*([Keys.ARROW_RIGHT if steps > 0 else Keys.ARROW_LEFT] * abs(steps)))
    wanted = f"target {metric} {value:g}"
    wait_for(driver, lambda d: wanted in d.find_element(By.ID, "threshold-source").text)


def open_try_it_out(driver: Any, operation_id: str, tag: str = "inference") -> Any:
    """Expand an operation in Swagger UI and press "Try it out"; returns the operation block."""
    from selenium.webdriver.common.by import By

    block_id = f"operations-{tag}-{operation_id}"
    block = wait_for(driver, lambda d: d.find_element(By.ID, block_id))
    if not block.find_elements(By.CSS_SELECTOR, ".try-out__btn"):
        block.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait_for(driver, lambda d: block.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    return block


def authorize_swagger(driver: Any, key: str) -> None:
    """Swagger UI's "Authorize" dialog: give the X-API-Key scheme ``key``."""
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, "button.authorize")).click()
    dialog = wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, ".auth-container"))
    dialog.find_element(By.CSS_SELECTOR, "input").send_keys(key)
    dialog.find_element(By.CSS_SELECTOR, "button.modal-btn.auth.authorize").click()
    driver.find_element(By.CSS_SELECTOR, "button.btn-done").click()


def loaded_urls(driver: Any) -> list[str]:
    """Every resource the current page loaded (scripts, styles, images, fetches)."""
    return driver.execute_script(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]"
    )


def unlabelled_controls(driver: Any) -> list[str]:
    """Form controls a screen reader could not name (no <label>, aria-label or title)."""
    return driver.execute_script(
        """return [...document.querySelectorAll('input, select, textarea, button')]
             .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label')
                          && !c.getAttribute('title') && !c.textContent.trim())
             .map(c => c.outerHTML)"""
    )


def drop(driver: Any, path: Path) -> None:
    """Drop a file on the drop zone: the drag-and-drop a user does, as DOM events."""
    import base64

    before = requests_done(driver)
    driver.execute_script(
        """const [name, b64] = arguments;
           const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
           const data = new DataTransfer();
           data.items.add(new File([bytes], name, {type: 'image/png'}));
           const zone = document.getElementById('drop-zone');
           for (const type of ['dragover', 'drop'])
             zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true}));""",
        path.name,
        base64.b64encode(path.read_bytes()).decode(),
    )
    wait_for(driver, lambda d: requests_done(d) > before)
