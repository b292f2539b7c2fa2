"""How fast the OA answers on a big day: PRINTS figures, asserts nothing.

Builds a synthetic day of N suspicious flows (default 100,000) in Spot's result layout under a
temp dir (flow_results.csv written with the schema's RESULT_COLUMNS; IPs/ports drawn at random),
then measures through the real app (Flask test client, logged in):
  - the first request of the day (parse flow_results.csv + answer) vs a cached request: ratio;
  - sorted / filtered / deep-page requests on the cached day (median of R repeats);
  - memory of the cached day (pandas deep size).

    .venv/bin/python benchmarks/oa_suspicious.py [--rows 100000] [--repeats 20]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from werkzeug.security import generate_password_hash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spot_ae_job.oa.app import create_app  # noqa: E402
from spot_ae_job.oa.config import OAConfig, User  # noqa: E402
from spot_ae_job.schema import RESULT_COLUMNS  # noqa: E402

DAY = "20180216"


def build(root: Path, n: int) -> None:
    rng = np.random.default_rng(7)
    out = root / "flow" / "scored_results" / DAY / "scores"
    out.mkdir(parents=True)
    secs = np.sort(rng.integers(0, 86400, n))
    ts = pd.to_datetime("2018-02-16") + pd.to_timedelta(secs, unit="s")
    hosts = np.array([f"172.31.{a}.{b}" for a in range(64, 70) for b in range(1, 255)])
    df = pd.DataFrame({
        "treceived": ts.strftime("%Y-%m-%d %H:%M:%S"), "tryear": ts.year, "trmonth": ts.month, "trday": ts.day,
        "trhour": ts.hour, "trminute": ts.minute, "trsec": ts.second, "tdur": rng.exponential(3, n).round(6),
        "sip": rng.choice(hosts, n), "dip": rng.choice(hosts, n), "sport": rng.integers(1024, 65535, n),
        "dport": rng.choice([22, 80, 443, 21, 3389, 8080], n), "proto": rng.choice(["TCP", "UDP"], n, p=[0.8, 0.2]),
        "ipkt": rng.integers(1, 500, n), "ibyt": rng.integers(40, 10**6, n), "opkt": rng.integers(0, 500, n),
        "obyt": rng.integers(0, 10**6, n), "score": np.sort(rng.random(n))[::-1] + 1.0,
    })
    df[RESULT_COLUMNS].to_csv(out / "flow_results.csv", index=False)


def timed(client, url: str) -> float:
    t = time.perf_counter()
    r = client.get(url)
    dt = time.perf_counter() - t
    assert r.status_code == 200, r.json
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "user" / "spot"
        build(root, a.rows)
        size_mb = (root / "flow" / "scored_results" / DAY / "scores" / "flow_results.csv").stat().st_size / 2**20
        cfg = OAConfig(huser=f"file://{root}", secret_key="b" * 32)
        cfg.users = {"bench": User("bench", generate_password_hash("benchmark-pass", "pbkdf2:sha256:1000"))}
        app = create_app(cfg)
        c = app.test_client()
        c.post("/api/v1/login", json={"username": "bench", "password": "benchmark-pass"})
        base = f"/api/v1/days/{DAY}/suspicious"
        first = timed(c, base + "?size=50")
        cached = statistics.median(timed(c, base + "?size=50") for _ in range(a.repeats))
        table = app.extensions["spot_oa"]["results"].table(DAY)
        one_ip = table["sip"].iloc[0]
        cases = {
            "sorted by score asc": base + "?sort=score&order=asc&size=50",
            "sorted by ibyt desc": base + "?sort=ibyt&order=desc&size=50",
            "filter ip": base + f"?ip={one_ip}&size=50",
            "filter port+proto": base + "?port=22&proto=TCP&size=50",
            "deep page (size 500)": base + f"?size=500&page={a.rows // 500}",
        }
        print(f"day: {a.rows:,} suspicious flows, flow_results.csv {size_mb:.1f} MiB, cached frame "
              f"{table.memory_usage(deep=True).sum() / 2**20:.1f} MiB")
        print(f"first request (parse + answer): {first * 1000:8.1f} ms")
        print(f"cached request (rank, page 1):  {cached * 1000:8.1f} ms   first/cached = {first / cached:.1f}x")
        for name, url in cases.items():
            ms = statistics.median(timed(c, url) for _ in range(a.repeats)) * 1000
            print(f"{name:30s} {ms:8.1f} ms (median of {a.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
