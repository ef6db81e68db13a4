"""The web page at ``/`` in headless Chromium (Debian's chromium and chromium-driver, nothing
downloaded): enter the token, pick stems, upload a song; one <audio> per stem appears, playable
(its metadata loads: the right duration)."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
import soundfile as sf
import uvicorn

from services.separation.app import create_app
from services.separation.service import SeparationService
from services.separation.settings import ServeSettings
from tests.procs import free_port
from tests.services.serving import make_registry, song

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
TOKEN = "page-t0ken"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="needs Debian's chromium and chromium-driver (make chromium)")]


@pytest.fixture
def served(tmp_path):
    """The service under uvicorn in a thread of this process, on a free port."""
    registry = make_registry(tmp_path / "registry", name="sepcore-page")
    service = SeparationService(ServeSettings.from_env(
        {}, model=f"models:/{registry.name}@champion", poll=0, device="cpu",
        tracking_uri=registry.uri, cache_dir=str(tmp_path / "cache"), token=TOKEN))
    for _ in range(3):
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                               log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.started:
            break
        server.should_exit = True
        thread.join(timeout=10)
    else:
        raise AssertionError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path}/ud"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_a_song_and_the_stems_audio_appears(served, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    path = tmp_path / "song.wav"
    sf.write(path, song(seconds=2.0), 11025)
    wait = WebDriverWait(browser, 60)
    browser.get(f"{served}/")
    # without the token the page cannot read the model
    wait.until(ec.text_to_be_present_in_element((By.ID, "error"), "401"))
    browser.find_element(By.ID, "token").send_keys(TOKEN, Keys.TAB)  # change: reload the model
    wait.until(ec.text_to_be_present_in_element((By.ID, "model"), "sepcore-page v1"))
    boxes = {b.get_attribute("value"): b for b in browser.find_elements(By.NAME, "stem")}
    assert list(boxes) == ["vocals", "drums", "bass", "other", "accompaniment"]
    assert [s for s, b in boxes.items() if b.is_selected()] == ["vocals", "accompaniment"]
    boxes["drums"].click()
    browser.find_element(By.ID, "audio").send_keys(str(path))
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results audio")) == 3)
    audios = browser.find_elements(By.CSS_SELECTOR, "#results audio")
    assert [a.get_attribute("data-stem") for a in audios] == ["vocals", "drums", "accompaniment"]
    assert all(a.get_attribute("src").startswith("blob:") for a in audios)
    # each element decodes its stem: 2 s of audio
    durations = wait.until(lambda d: d.execute_script(
        "const a = [...document.querySelectorAll('#results audio')];"
        "return a.every(x => x.readyState >= 1) ? a.map(x => x.duration) : null;"))
    assert durations == pytest.approx([2.0] * 3, abs=0.01)
    assert browser.find_element(By.ID, "error").text == ""
    assert "Done with model v1" in browser.find_element(By.ID, "status").text
    links = browser.find_elements(By.CSS_SELECTOR, "#results a[download]")
    assert [a.get_attribute("download") for a in links] == ["vocals.wav", "drums.wav",
                                                           "accompaniment.wav"]
