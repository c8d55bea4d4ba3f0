"""The web page and the API reference in headless Chromium, against a real server serving the
digits model that the real training CLI made (``digits_repo``), with API keys on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import browser
from tests.helpers.servers import HTTP, Server, start_server

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
UI_KEY = "ui-key"


@pytest.fixture(scope="module")
def digits_server(digits_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("browser"), digits_repo, api_keys=UI_KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    chrome = browser.start_browser()
    yield chrome
    chrome.quit()


def digit_pngs(digits_repo: Path, labels: tuple[str, ...] = ("7", "3")) -> list[Path]:
    """Real PNG files of the data set the model was trained on (written by the fixture)."""
    return [min((digits_repo.parent / "data" / label).glob("*.png")) for label in labels]


def classify(server: Server, pngs: list[Path], **fields: str) -> dict[str, Any]:
    files = [("image", (p.name, p.read_bytes(), "image/png")) for p in pngs]
    r = HTTP.post(
        f"{server.http}/classify", files=files, data=fields, headers={"X-API-Key": UI_KEY}
    )
    assert r.status_code == 200, r.text
    return r.json()


def curve_point(curve: dict[str, list[float]], threshold: float) -> tuple[str, str]:
    """Validation precision/recall at ``threshold``, as the page should print them."""
    i = next((i for i, t in enumerate(curve["thresholds"]) if t >= threshold - 1e-6), -1)
    return f"{curve['precision'][i]:.3f}", f"{curve['recall'][i]:.3f}"


def open_page(driver: Any, server: Server, forget_key: bool = False) -> None:
    """Open the page; give the API key when it asks for one (it stays in sessionStorage)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{server.http}/")
    if forget_key:
        driver.execute_script("sessionStorage.clear()")
        driver.refresh()
    rows = "#models tbody tr[data-status]"
    browser.wait_for(
        driver,
        lambda d: d.find_elements(By.CSS_SELECTOR, rows) or d.find_element(By.ID, "status").text,
    )
    if not driver.find_elements(By.CSS_SELECTOR, rows):
        assert "API key" in driver.find_element(By.ID, "status").text  # says why it is refused
        driver.find_element(By.ID, "api-key").send_keys(UI_KEY, Keys.ENTER)
        browser.wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, rows))


def test_upload_read_the_bars_and_retarget_precision(
    driver: Any, digits_server: Server, digits_repo: Path
) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, digits_server, forget_key=True)  # asks for the key, then lists models
    row = driver.find_element(By.CSS_SELECTOR, "#models tbody tr[data-model=digits]")
    assert row.get_attribute("data-status") == "ready"

    pngs = digit_pngs(digits_repo)
    browser.upload(driver, pngs)
    expected = classify(digits_server, pngs, top_k="3")
    bars = browser.label_bars(driver)
    assert len(bars) == len(pngs)
    for shown, prediction in zip(bars, expected["predictions"], strict=True):
        assert set(shown) == set(prediction["probabilities"])
        for label, bar in shown.items():
            assert bar["probability"] == pytest.approx(prediction["probabilities"][label], abs=1e-7)
            assert bar["threshold"] == pytest.approx(expected["thresholds"][label], abs=1e-7)
            assert bar["above"] == (label in prediction["labels"])

    card = HTTP.get(
        f"{digits_server.http}/models/digits/1/card", headers={"X-API-Key": UI_KEY}
    ).json()
    curves = card["thresholds"]["curves"]
    before = browser.threshold_rows(driver)
    browser.retarget(driver, "precision", 0.99)
    after = browser.threshold_rows(driver)
    wanted = classify(digits_server, pngs, target_precision="0.99")["thresholds"]
    moved = [
        label
        for label in wanted
        if float(after[label]["applied"]) != float(before[label]["applied"])
    ]
    assert moved, "re-targeting to precision 0.99 moved no class's threshold"
    for label, threshold in wanted.items():
        assert float(after[label]["applied"]) == pytest.approx(threshold, abs=1e-7)
        shown = (after[label]["precision"], after[label]["recall"])
        assert shown == curve_point(curves[label], threshold)
    for label, bar in browser.label_bars(driver)[0].items():
        assert bar["threshold"] == pytest.approx(wanted[label], abs=1e-7)
    applied_dots = driver.find_elements(By.CSS_SELECTOR, "#pr-curves svg circle.applied")
    assert len(applied_dots) == len(wanted)


def test_a_dropped_image_is_classified(
    driver: Any, digits_server: Server, digits_repo: Path
) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, digits_server)
    png = digit_pngs(digits_repo, ("4",))[0]
    browser.drop(driver, png)
    (bars,) = browser.label_bars(driver)
    expected = classify(digits_server, [png])["predictions"][0]["probabilities"]
    assert {k: v["probability"] for k, v in bars.items()} == pytest.approx(expected, abs=1e-7)
    title = driver.find_element(By.CSS_SELECTOR, ".result h3").text
    assert title == png.name


def test_tiff_and_other_pillow_formats_are_picked_and_classified(
    driver: Any, digits_server: Server, digits_repo: Path, tmp_path: Path
) -> None:
    from PIL import Image

    png = digit_pngs(digits_repo, ("5",))[0]
    files = [tmp_path / "five.tif", tmp_path / "five.pcx"]  # PCX: no MIME type in a browser
    for path in files:
        Image.open(png).save(path)
    open_page(driver, digits_server)
    browser.upload(driver, files)
    bars = browser.label_bars(driver)
    expected = classify(digits_server, [png])["predictions"][0]["probabilities"]
    assert len(bars) == 2
    for shown in bars:
        assert {k: v["probability"] for k, v in shown.items()} == pytest.approx(expected, abs=1e-7)


def test_model_card_shows_the_report_figures(driver: Any, digits_server: Server) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, digits_server)
    images = browser.wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#card figure img") or None
    )
    alts = {img.get_attribute("alt") for img in images}
    assert {"Training curves of digits v1", "Confusion matrix of digits v1"} <= alts
    for img in images:  # decoded by the browser: a real PNG arrived
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 100
    metrics = driver.find_element(By.CSS_SELECTOR, "#card table.metrics tbody")
    assert len(metrics.find_elements(By.TAG_NAME, "tr")) == 10


def test_try_it_out_uploads_a_file(driver: Any, digits_server: Server, digits_repo: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{digits_server.http}/docs")
    browser.authorize_swagger(driver, UI_KEY)
    block = browser.open_try_it_out(driver, "post_classify")
    next(b for b in block.find_elements(By.TAG_NAME, "button") if "Add" in b.text).click()
    block.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(
        str(digit_pngs(digits_repo)[0])
    )
    block.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = browser.wait_for(
        driver,
        lambda d: block.find_element(
            By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"
        ),
    )
    body = block.find_element(By.CSS_SELECTOR, ".live-responses-table tbody .microlight").text
    assert status.text.strip() == "200", body
    assert '"predictions"' in body and '"model": "digits"' in body


@pytest.mark.parametrize("page", ["/", "/docs"])
def test_pages_load_nothing_from_other_hosts(driver: Any, digits_server: Server, page: str) -> None:
    from selenium.webdriver.common.by import By

    if page == "/":
        open_page(driver, digits_server)
    else:
        driver.get(f"{digits_server.http}{page}")
    ready = "#card figure img" if page == "/" else ".opblock"
    browser.wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    urls = browser.loaded_urls(driver)
    assert len(urls) > 3
    foreign = [u for u in urls if not u.startswith((digits_server.http, "blob:", "data:"))]
    assert not foreign


def test_every_control_has_a_name_and_the_keyboard_reaches_the_upload(
    driver: Any, digits_server: Server
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(f"{digits_server.http}/")
    browser.wait_for(
        driver,
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#models tbody tr")
            or d.find_element(By.ID, "status").text
        ),
    )
    assert browser.unlabelled_controls(driver) == []
    seen = []
    for _ in range(12):  # from the top of the page, Tab walks the controls in order
        ActionChains(driver).send_keys(Keys.TAB).perform()
        seen.append(driver.switch_to.active_element.get_attribute("id"))
    assert "files" in seen, seen
    assert seen.index("api-key") < seen.index("files") < seen.index("top-k")
