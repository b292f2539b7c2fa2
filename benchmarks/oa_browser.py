"""The OA served for real on a big day, timed from a browser and from concurrent API clients:
PRINTS figures, asserts nothing.

Builds the same synthetic day as oa_suspicious.py (default 275,000 suspicious flows, the p95 of a
5.5 M-flow day, and all_scores/ of 5.5 M), starts the OA with its own command line (`spot-ae oa
serve`: waitress, 8 threads) on a loopback port, then:
  - Chromium (Playwright, as the browser tests drive it): the suspicious view's first page, from
    navigation until its rows are on screen; the first load of the day (the server parses it),
    then p50/p95 of --loads more, each in a fresh page of the logged-in session;
  - --clients API clients at once, each with its own login, each asking --requests times in turn
    for the views an analyst clicks through (first page, sorted, filtered by IP, by port, a deep
    page): p50/p95 per request and requests/s over the whole run.
The machine's two cores run the browser or the clients and the server together.

    .venv/bin/python benchmarks/oa_browser.py [--rows 275000] [--all-flows 5500000] [--loads 30]
                                              [--clients 8] [--requests 25]
"""
from __future__ import annotations

import argparse
import csv
import http.cookiejar
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from werkzeug.security import generate_password_hash

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.oa_suspicious import DAY, build  # noqa: E402
from tests.browser.conftest import CHROMIUM_ARGS  # noqa: E402
from tests.ports import free_port  # noqa: E402

USER, PASSWORD = "bench", "benchmark-passphrase"
ROWS = "#suspicious[data-state] tbody tr[data-rank]"  # the suspicious view once its first page is drawn


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def serve(root: Path, cfgdir: Path) -> tuple[subprocess.Popen, str]:
    (cfgdir / "oa.toml").write_text(f'mode = "production"\nsecret_key = "{os.urandom(16).hex()}"\n\n'
                                    f'[users.{USER}]\npassword_hash = "{generate_password_hash(PASSWORD)}"\nrole = "analyst"\n')
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "spot_ae_job", "oa", "serve", "--huser", f"file://{root}",
                             "--config", str(cfgdir / "oa.toml"), "--port", str(port)],
                            stdout=open(cfgdir / "oa.log", "w"), stderr=subprocess.STDOUT, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(base + "/api/v1/health", timeout=2):
                return proc, base
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("the OA did not start: " + (cfgdir / "oa.log").read_text()[-2000:])


def browser_loads(base: str, loads: int) -> tuple[float, list[float]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        ctx = b.new_context(base_url=base, viewport={"width": 1440, "height": 900})
        page = ctx.new_page()
        page.goto("/login")
        page.fill("#username", USER)
        page.fill("#password", PASSWORD)
        page.click("#login-submit")
        page.wait_for_selector("#days-table a.day-link")
        times = []
        for _ in range(loads + 1):
            pg = ctx.new_page()
            t = time.perf_counter()
            pg.goto(f"/days/{DAY}/flows")
            pg.wait_for_selector(ROWS)
            times.append(time.perf_counter() - t)
            pg.close()
        b.close()
    return times[0], times[1:]


def clients(base: str, n: int, requests: int, one_ip: str) -> tuple[list[float], float, int]:
    api = f"{base}/api/v1/days/{DAY}/suspicious"
    views = [api + "?size=50", api + "?sort=ibyt&order=desc&size=50", api + f"?ip={one_ip}&size=50",
             api + "?port=22&proto=TCP&size=50", api + "?size=500&page=100"]
    times: list[float] = []
    errors = [0]
    lock = threading.Lock()
    ready = threading.Barrier(n + 1)

    def client(i: int) -> None:
        o = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        o.open(urllib.request.Request(f"{base}/api/v1/login", method="POST", headers={"Content-Type": "application/json"},
                                      data=json.dumps({"username": USER, "password": PASSWORD}).encode()), timeout=60)
        ready.wait()
        mine = []
        for k in range(requests):
            t = time.perf_counter()
            try:
                with o.open(views[(i + k) % len(views)], timeout=60) as r:
                    r.read()
            except OSError:
                with lock:
                    errors[0] += 1
                continue
            mine.append(time.perf_counter() - t)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return times, time.perf_counter() - t0, errors[0]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=275_000, help="suspicious flows (flow_results.csv)")
    ap.add_argument("--all-flows", type=int, default=5_500_000, help="flows in all_scores/ (the whole day)")
    ap.add_argument("--loads", type=int, default=30, help="browser loads of the suspicious view after the first")
    ap.add_argument("--clients", type=int, default=8, help="API clients at once")
    ap.add_argument("--requests", type=int, default=25, help="requests per client")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "user" / "spot"
        t = time.perf_counter()
        build(root, a.rows, max(a.rows, a.all_flows))
        print(f"day {DAY}: {a.rows:,} suspicious flows, all_scores of {max(a.rows, a.all_flows):,} "
              f"(built in {time.perf_counter() - t:.0f} s)")
        proc, base = serve(root, Path(d))
        try:
            first, loads = browser_loads(base, a.loads)
            print(f"browser, suspicious view to its first page on screen: first load of the day {first * 1000:.0f} ms "
                  f"(the server parses the day); then p50 {pct(loads, .5) * 1000:.0f} ms, p95 {pct(loads, .95) * 1000:.0f} ms "
                  f"over {len(loads)} loads (goal: p95 < 500 ms)")
            with open(root / "flow" / "scored_results" / DAY / "scores" / "flow_results.csv", newline="") as f:
                one_ip = next(csv.DictReader(f))["sip"]
            times, wall, errors = clients(base, a.clients, a.requests, one_ip)
            print(f"{a.clients} API clients at once, {a.requests} requests each (first page, sorted, by IP, by port, "
                  f"a deep page, in turn): p50 {pct(times, .5) * 1000:.0f} ms, p95 {pct(times, .95) * 1000:.0f} ms, "
                  f"max {max(times) * 1000:.0f} ms; {len(times) / wall:.1f} requests/s; {errors} failed")
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
