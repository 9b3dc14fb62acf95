"""A real browser on the dashboard: see the group and its lag, open a dead letter, replay it.

Uses Debian's chromium and chromium-driver (installed here by the test setup when
missing, as root); headless, loopback only. Screenshots go to `artifacts/`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flask")
webdriver = pytest.importorskip("selenium.webdriver")

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from kafka_jobs.testing import wait_until  # noqa: E402
from kafka_jobs.web import DashboardServer  # noqa: E402
from tests import ROOT  # noqa: E402

ARTIFACTS = Path(os.environ.get("KAFKA_JOBS_TEST_ARTIFACTS", ROOT / "artifacts"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _install_chromium() -> None:
    """Debian's chromium and its driver, from the package registry (root only)."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(
            "the browser test needs Debian's chromium and chromium-driver (apt-get as root)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, timeout=600, capture_output=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"],
        check=True,
        timeout=1200,
        capture_output=True,
        env=env,
    )


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    _install_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_see_the_group_open_a_dead_letter_replay_it_and_see_it_run(known_state, browser) -> None:
    app, _worker, slow_topic, fast_topic, ran = known_state
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # The live part is replaced every refresh: elements found a moment ago go stale.
    wait = WebDriverWait(
        browser,
        30,
        poll_frequency=0.2,
        ignored_exceptions=(StaleElementReferenceException, NoSuchElementException),
    )
    group = app.settings.group_id
    with DashboardServer(app, port=0, sample_interval=0.3, live_refresh=1.0) as server:
        browser.get(server.url)
        # The page refreshes itself: wait for the worker and the dead letter to show up.
        wait.until(lambda d: f"{fast_topic}.dlq" in d.find_element(By.ID, "live").text)
        wait.until(lambda d: "1 worker(s)" in d.find_element(By.ID, f"group-{group}").text)

        def shown(d: webdriver.Chrome) -> bool:
            section = d.find_element(By.ID, f"group-{group}")
            row = section.find_element(By.CSS_SELECTOR, f'tr[data-topic="{slow_topic}"]')
            return (
                row.text.split()[-2:-1] == ["yes"]  # the long job keeps its partition paused
                # The held record is the group's whole lag: nothing else is left.
                and section.find_element(By.CLASS_NAME, "group-lag").text == "1"
                and "card declined for 13" in section.text  # recent failures
            )

        wait.until(shown)
        browser.save_screenshot(str(ARTIFACTS / "dashboard-overview.png"))

        def open_letters(d: webdriver.Chrome) -> bool:
            # The link may be replaced by a refresh between finding and clicking it.
            d.find_element(By.LINK_TEXT, f"{fast_topic}.dlq").click()
            return True

        wait.until(open_letters)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.letter"))
        letter_row = browser.find_element(By.CSS_SELECTOR, 'tr.letter[data-place="0:0"]')
        assert "pending" in letter_row.text
        letter_row.find_element(By.LINK_TEXT, "0").click()
        wait.until(lambda d: "traceback" in d.page_source)
        assert "card declined for 13" in browser.page_source
        browser.save_screenshot(str(ARTIFACTS / "dashboard-dead-letter.png"))

        browser.find_element(By.ID, "replay-one").click()
        wait.until(lambda d: d.find_elements(By.ID, "confirm-replay"))
        assert "replay 1 dead letter(s)" in browser.page_source
        browser.find_element(By.ID, "confirm-replay").click()
        wait.until(lambda d: d.find_element(By.ID, "replay-state").text == "done")
        assert wait_until(lambda: ran.count(13) == 2, timeout=30), "the replayed job did not run"
        browser.save_screenshot(str(ARTIFACTS / "dashboard-replay.png"))

        browser.get(f"{server.url}/dead-letters/{fast_topic}.dlq")
        row = browser.find_element(By.CSS_SELECTOR, 'tr.letter[data-place="0:0"]')
        assert "replayed" in row.text
