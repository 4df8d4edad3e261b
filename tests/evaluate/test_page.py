"""`pipeline serve`: the page's prediction endpoint gives the API's mask, a bad file is a message on the page, and
in a real headless browser an uploaded image comes back as an overlay (screenshot kept for a person to look at)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.cli import PIPELINE
from tests.fixtures.images import photo, photo_files
from tests.fixtures.stores import contrasting_run

SCREENSHOT = Path("/tmp/hairdiff-serve-screenshot.png")  # a copy outside pytest's tmp dirs, to look at


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, extractor):
    """(a model folder of a head that marks part of each image as hair, a test image of it)."""
    pytest.importorskip("gradio")
    from hairdiff import HairSegmenter

    tmp = tmp_path_factory.mktemp("serve")
    image = photo_files(tmp / "images", [(50, 37)])[0]
    run = contrasting_run(tmp, extractor, photo(50, 37, 0))
    HairSegmenter.from_pretrained(run, backbone=False).save_pretrained(tmp / "model")
    return tmp / "model", image


@pytest.fixture(scope="module")
def page(model_dir):
    """The page `pipeline serve` builds, served from this process (the endpoint test's case: no browser needed)."""
    from hairdiff import HairSegmenter
    from hairdiff.evaluate.page import build_page

    model, image = model_dir
    app = build_page(HairSegmenter.from_pretrained(model, device="cpu"))
    _, url, _ = app.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, ssr_mode=False,
                           mcp_server=False, show_error=False)
    yield url, model, image, app.hairdiff_out_dir
    app.close()


@pytest.fixture(scope="module")
def served(model_dir):
    """`pipeline serve MODEL_DIR --port 0` as a user starts it; yields (url, model folder, a test image)."""
    model, image = model_dir
    # As many threads as this process: the test compares the page's mask with the API's computed here.
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([*PIPELINE, "serve", str(model), "--port", "0", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # the address, printed once the page is up
        assert line.startswith("http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        yield line.strip(), model, image
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_prediction_endpoint_gives_the_api_mask_and_names_a_bad_file(page, tmp_path):
    from gradio_client import Client, handle_file

    from hairdiff import HairSegmenter

    url, model, image, out_dir = page
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    client = Client(url, verbose=False, download_files=str(tmp_path / "got"), analytics_enabled=False)
    overlays, text, masks = client.predict([handle_file(str(image)), handle_file(str(broken))], api_name="/segment")
    want = HairSegmenter.from_pretrained(model, device="cpu")(image).mask
    assert 0 < want.mean() < 1
    assert len(masks) == 1 and np.array_equal(np.asarray(Image.open(masks[0])), want * 255)
    assert len(overlays) == 1 and f"hair {want.mean():.1%} of the image" in overlays[0]["caption"]
    shown = np.asarray(Image.open(overlays[0]["image"]))
    assert shown.shape[0] > want.shape[0] and shown.shape[1] >= want.shape[1]  # the picture, its colour key under it
    assert "**broken.png: not segmented.** broken.png: cannot decode the image" in text
    assert "Traceback" not in text and f"hair covers {want.mean():.1%} of the image" in text

    # a request's files are kept an hour: the next request after that removes them
    (written,) = list(out_dir.iterdir())
    os.utime(written, (time.time() - 7200, time.time() - 7200))
    client.predict([handle_file(str(image))], api_name="/segment")
    assert not written.exists() and len(list(out_dir.iterdir())) == 1


def _chromium():
    """(browser, driver) of Debian's chromium and chromium-driver packages, or a reason to skip."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no headless browser here: apt-get install chromium chromium-driver (Debian) to run this test")
    pytest.importorskip("selenium", reason="selenium is in the test extra: pip install -e '.[test]'")
    return browser, driver


def test_a_browser_uploads_an_image_and_sees_its_overlay(tmp_path, request):
    browser, driver = _chromium()  # before the server starts: without a browser there is nothing to start it for
    served = request.getfixturevalue("served")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _, image = served
    broken = tmp_path / "notes.png"
    broken.write_text("not an image")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1400"):
        opts.add_argument(arg)
    web = webdriver.Chrome(service=Service(driver), options=opts)
    try:
        web.get(url)
        upload = WebDriverWait(web, 60).until(lambda w: w.find_elements(By.CSS_SELECTOR, "#images input[type=file]"))
        upload[0].send_keys(f"{image}\n{broken}")  # dropped or picked: the same input receives the files
        WebDriverWait(web, 120).until(lambda w: w.find_elements(By.CSS_SELECTOR, "#overlays img"))
        WebDriverWait(web, 30).until(lambda w: "not segmented" in w.find_element(By.ID, "status").text)
        status = web.find_element(By.ID, "status").text
        assert "img0.png: hair covers" in status and "notes.png: not segmented." in status, status
        assert "cannot decode the image" in status and "Traceback" not in web.page_source
        assert "The numbers on this card mean nothing" in web.find_element(By.ID, "card").text
        time.sleep(1)  # the gallery's image fades in
        shot = tmp_path / "serve.png"
        web.save_screenshot(str(shot))
    finally:
        web.quit()
    assert Image.open(shot).size[0] > 0
    shutil.copyfile(shot, SCREENSHOT)
    print(f"screenshot: {shot} (copied to {SCREENSHOT})", file=sys.stderr)
