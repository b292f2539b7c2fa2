"""Browser test world: a REAL day of results made by the real job (`spot-ae demo` on the bundled
CIC-IDS2018 excerpt, few epochs), a real ingest summary (nfdump on a real nfcapd file), the OA
started with its real command line (`spot-ae oa serve`, waitress) on a free loopback port, and
Debian's Chromium driven by Playwright. Screenshots go to test-output/screenshots/."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "test-output" / "screenshots"
DAY = "20180216"
USER, PASSWORD = "alice", "browser-test-passphrase"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="session")
def oa_huser(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("oa-browser") / "user" / "spot"
    log = root.parent / "demo.log"
    root.mkdir(parents=True)
    with open(log, "w") as out:
        r = subprocess.run([sys.executable, "-m", "spot_ae_job", "demo", "--huser", f"file://{root}", "--epochs", "3",
                            "--day", DAY, "--master", "local[2]"], stdout=out, stderr=subprocess.STDOUT, timeout=900,
                           env={**os.environ, "SPOT_AE_DATA": str(data_dir)})
    assert r.returncode == 0, log.read_text()[-3000:]
    from spot_ae_job.storage import LocalStorage
    from spot_ae_job.ingest.watcher import ingest_file

    for name in ("nfcapd.sample", "nfcapd-small-lzo"):
        ingest_file(LocalStorage(f"file://{root}"), data_dir / "nfcapd" / name)
    return root


@pytest.fixture(scope="session")
def oa_server(oa_huser, tmp_path_factory):
    cfgdir = tmp_path_factory.mktemp("oa-config")
    h = subprocess.run([sys.executable, "-m", "spot_ae_job", "oa", "hash-password", "--password-stdin"],
                       input=PASSWORD + "\n", capture_output=True, text=True, check=True).stdout.strip()
    (cfgdir / "oa.toml").write_text(f'mode = "production"\nsecret_key = "{os.urandom(16).hex()}"\n\n[users.{USER}]\npassword_hash = "{h}"\nrole = "analyst"\n')
    port = free_port()
    log = open(cfgdir / "oa.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "spot_ae_job", "oa", "serve", "--huser", f"file://{oa_huser}",
                             "--config", str(cfgdir / "oa.toml"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(base + "/api/v1/health", timeout=2) as r:
                if json.loads(r.read())["status"] == "ok":
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail("OA server did not start: " + (cfgdir / "oa.log").read_text()[-2000:])
        time.sleep(0.3)
    yield base
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser, oa_server):
    ctx = browser.new_context(base_url=oa_server, viewport={"width": 1440, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.oa_errors = errors  # a test that provokes an HTTP error clears what it expected
    yield pg
    ctx.close()
    assert errors == [], f"browser errors: {errors}"


@pytest.fixture()
def logged_in(page):
    page.goto("/login")
    page.fill("#username", USER)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    page.wait_for_selector("#days-table a.day-link")
    return page


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    p = SHOTS / f"{name}.png"
    page.screenshot(path=str(p), full_page=True)
    return p
