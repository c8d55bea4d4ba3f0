"""The web page and the API reference in headless Chromium, against a real server serving the
digits model that the real training CLI made (``digits_repo``), with API keys on, reached
through a reverse proxy on loopback that serves it under ``/visor/`` (as an ingress with a
path prefix does) and counts the requests the page makes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import browser
from tests.helpers.proxy import PrefixProxy
from tests.helpers.servers import HTTP, Server, start_server

pytestmark = pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))
UI_KEY = "ui-key"


@pytest.fixture(scope="module")
def digits_server(digits_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One worker: the live view is the answering worker's windows (docs/http.md).
    srv = start_server(tmp_path_factory.mktemp("browser"), digits_repo, api_keys=UI_KEY, workers=1)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxy(digits_server: Server) -> Iterator[PrefixProxy]:
    behind = PrefixProxy(digits_server.http, "/visor")
    yield behind
    assert behind.outside == [], "the page asked for paths outside its prefix"
    behind.close()


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


def open_page(driver: Any, proxy: PrefixProxy, forget_key: bool = False) -> None:
    """Open the page under its prefix; give the API key when it asks for one (it stays in
    sessionStorage)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(proxy.url)
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


def choices(server: Server, metric: str, target: float) -> dict[str, dict[str, Any]]:
    r = HTTP.get(
        f"{server.http}/models/digits/1/thresholds",
        params={f"target_{metric}": str(target)},
        headers={"X-API-Key": UI_KEY},
    )
    assert r.status_code == 200, r.text
    return {c["label"]: c for c in r.json()["per_class"]}


def test_upload_read_the_bars_and_retarget_precision(
    driver: Any, digits_server: Server, proxy: PrefixProxy, digits_repo: Path
) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, proxy, forget_key=True)  # asks for the key, then lists models
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
    calibrated = {c["label"]: c for c in card["thresholds"]["per_class"]}
    before = browser.threshold_rows(driver)
    for label, entry in calibrated.items():  # certified or not, as the metadata says
        assert before[label]["calibrated_certified"] == str(entry["certified"]).lower()
        assert before[label]["calibrated_bound"] == f"{entry['lower_bound']:.3f}"
    sent = proxy.count("POST", "/classify")
    browser.retarget(driver, "precision", 0.99)
    after = browser.threshold_rows(driver)
    assert proxy.count("POST", "/classify") == sent, "re-targeting sent the images again"
    wanted = classify(digits_server, pngs, target_precision="0.99")
    moved = [
        label
        for label in wanted["thresholds"]
        if float(after[label]["applied"]) != float(before[label]["applied"])
    ]
    assert moved, "re-targeting to precision 0.99 moved no class's threshold"
    chosen = choices(digits_server, "precision", 0.99)
    for label, threshold in wanted["thresholds"].items():
        assert float(after[label]["applied"]) == pytest.approx(threshold, abs=1e-7)
        shown = (after[label]["precision"], after[label]["recall"])
        assert shown == curve_point(curves[label], threshold)
        # certified as /classify says, and an uncertified class says what it would need
        assert after[label]["certified"] == str(wanted["certified"][label]).lower()
        assert chosen[label]["certified"] == wanted["certified"][label]
        if not wanted["certified"][label]:
            assert (
                f"best certified {chosen[label]['best_certified']:.3f}" in after[label]["verdict"]
            )
            needed = chosen[label]["needed"]
            assert (f"needs ≈{needed} images" if needed else "cannot certify") in after[label][
                "verdict"
            ]
    assert not all(wanted["certified"].values()), "0.99 should leave a class uncertified"
    uncertified = driver.find_elements(By.CSS_SELECTOR, "#pr-curves svg.uncertified")
    assert len(uncertified) == sum(not c for c in wanted["certified"].values())
    for shown, prediction in zip(browser.label_bars(driver), wanted["predictions"], strict=True):
        for label, bar in shown.items():
            assert bar["threshold"] == pytest.approx(wanted["thresholds"][label], abs=1e-7)
            assert bar["above"] == (label in prediction["labels"])
    applied_dots = driver.find_elements(By.CSS_SELECTOR, "#pr-curves svg circle.applied")
    assert len(applied_dots) == len(wanted["thresholds"])


def test_600_images_are_sent_in_parts_within_the_server_limit(
    driver: Any, proxy: PrefixProxy, digits_server: Server, digits_repo: Path
) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, proxy)
    limit = HTTP.get(f"{digits_server.http}/models", headers={"X-API-Key": UI_KEY}).json()
    limit = limit["limits"]["max_images_per_request"]
    pngs = sorted((digits_repo.parent / "data").glob("*/*.png"))[::2][:600]
    assert len(pngs) == 600
    sent = proxy.count("POST", "/classify")
    browser.upload(driver, pngs, timeout=300)
    parts = proxy.count("POST", "/classify") - sent
    assert parts == -(-600 // limit) and parts > 1
    assert len(driver.find_elements(By.CSS_SELECTOR, ".result")) == 600
    assert "Classified 600 image(s)" in driver.find_element(By.ID, "status").text
    names = driver.execute_script(
        "return [...document.querySelectorAll('.result h3')].map(e => e.textContent)"
    )
    assert names == [p.name for p in pngs]


def test_feedback_from_the_page_shows_in_the_live_view(
    driver: Any, proxy: PrefixProxy, digits_repo: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    open_page(driver, proxy)
    browser.wait_for(driver, lambda d: d.find_element(By.ID, "live").get_attribute("data-feedback"))
    before = int(driver.find_element(By.ID, "live").get_attribute("data-feedback"))
    pngs = digit_pngs(digits_repo, ("7", "3"))
    browser.upload(driver, pngs)
    for card, truth in zip(
        driver.find_elements(By.CSS_SELECTOR, ".result"), ("7", "3"), strict=True
    ):
        Select(card.find_element(By.CSS_SELECTOR, "select.truth")).select_by_value(truth)
        browser.wait_for(driver, lambda d, c=card: c.get_attribute("data-truth"))
    assert proxy.count("POST", "/feedback") >= 2
    browser.wait_for(
        driver,
        lambda d: int(d.find_element(By.ID, "live").get_attribute("data-feedback")) == before + 2,
        timeout=20,
    )
    live = driver.find_element(By.ID, "live")
    for label in ("7", "3"):  # a class appears once feedback touched it
        row = live.find_element(By.CSS_SELECTOR, f"tr[data-label='{label}']")
        assert int(row.find_element(By.CSS_SELECTOR, "[data-field=recall-support]").text) >= 1


def test_a_labelled_folder_is_evaluated(
    driver: Any, proxy: PrefixProxy, digits_repo: Path, tmp_path: Path
) -> None:
    import shutil

    from selenium.webdriver.common.by import By

    open_page(driver, proxy)
    folder = tmp_path / "labelled"
    for label in ("1", "8"):
        (folder / label).mkdir(parents=True)
        for png in sorted((digits_repo.parent / "data" / label).glob("*.png"))[:3]:
            shutil.copy(png, folder / label / png.name)
    sent = proxy.count("POST", "/evaluate")
    driver.find_element(By.ID, "eval-files").send_keys(str(folder))
    box = browser.wait_for(
        driver, lambda d: d.find_element(By.CSS_SELECTOR, "#evaluation[data-samples]")
    )
    assert box.get_attribute("data-samples") == "6"
    assert "accuracy" in box.find_element(By.CSS_SELECTOR, "[data-field=accuracy]").text
    assert proxy.count("POST", "/evaluate") == sent + 1
    assert {
        r.get_attribute("data-label") for r in box.find_elements(By.CSS_SELECTOR, "tbody tr")
    } >= {"1", "8"}


def test_a_dropped_image_is_classified(
    driver: Any, digits_server: Server, proxy: PrefixProxy, digits_repo: Path
) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, proxy)
    png = digit_pngs(digits_repo, ("4",))[0]
    browser.drop(driver, png)
    (bars,) = browser.label_bars(driver)
    expected = classify(digits_server, [png])["predictions"][0]["probabilities"]
    assert {k: v["probability"] for k, v in bars.items()} == pytest.approx(expected, abs=1e-7)
    title = driver.find_element(By.CSS_SELECTOR, ".result h3").text
    assert title == png.name


def test_tiff_and_other_pillow_formats_are_picked_and_classified(
    driver: Any, digits_server: Server, proxy: PrefixProxy, digits_repo: Path, tmp_path: Path
) -> None:
    from PIL import Image

    png = digit_pngs(digits_repo, ("5",))[0]
    files = [tmp_path / "five.tif", tmp_path / "five.pcx"]  # PCX: no MIME type in a browser
    for path in files:
        Image.open(png).save(path)
    open_page(driver, proxy)
    browser.upload(driver, files)
    bars = browser.label_bars(driver)
    expected = classify(digits_server, [png])["predictions"][0]["probabilities"]
    assert len(bars) == 2
    for shown in bars:
        assert {k: v["probability"] for k, v in shown.items()} == pytest.approx(expected, abs=1e-7)


def test_model_card_shows_the_report_figures(driver: Any, proxy: PrefixProxy) -> None:
    from selenium.webdriver.common.by import By

    open_page(driver, proxy)
    images = browser.wait_for(
        driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#card figure img") or None
    )
    alts = {img.get_attribute("alt") for img in images}
    assert {"Training curves of digits v1", "Confusion matrix of digits v1"} <= alts
    for img in images:  # decoded by the browser: a real PNG arrived
        assert driver.execute_script("return arguments[0].naturalWidth", img) > 100
    metrics = driver.find_element(By.CSS_SELECTOR, "#card table.metrics tbody")
    assert len(metrics.find_elements(By.TAG_NAME, "tr")) == 10
    card = driver.find_element(By.CSS_SELECTOR, "#card .model-card-html")
    assert card.find_elements(By.TAG_NAME, "h1") or card.find_elements(By.TAG_NAME, "h2")
    assert not card.find_elements(By.TAG_NAME, "script")


def test_try_it_out_uploads_a_file(driver: Any, proxy: PrefixProxy, digits_repo: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{proxy.url}docs")
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


@pytest.mark.parametrize("page", ["", "docs"])
def test_pages_load_nothing_from_other_hosts_or_outside_the_prefix(
    driver: Any, proxy: PrefixProxy, page: str
) -> None:
    from selenium.webdriver.common.by import By

    if page == "":
        open_page(driver, proxy)
    else:
        driver.get(f"{proxy.url}{page}")
    ready = "#card figure img" if page == "" else ".opblock"
    browser.wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ready))
    urls = browser.loaded_urls(driver)
    assert len(urls) > 3
    foreign = [u for u in urls if not u.startswith((proxy.url, "blob:", "data:"))]
    assert not foreign
    assert proxy.outside == []


def test_every_control_has_a_name_and_the_keyboard_reaches_the_upload(
    driver: Any, proxy: PrefixProxy
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    driver.get(proxy.url)
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
