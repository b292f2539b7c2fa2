"""How fast the OA answers on a big day: PRINTS figures, asserts nothing.

Builds a synthetic day of N suspicious flows (default 100,000) in Spot's result layout under a
temp dir (flow_results.csv written with the schema's RESULT_COLUMNS; IPs/ports drawn at random),
then measures through the real app (Flask test client, logged in):
  - the first request of the day (parse flow_results.csv + answer) vs a cached request: ratio;
  - sorted / filtered / deep-page requests on the cached day (median of R repeats);
  - memory of the cached day (pandas deep size).

    .venv/bin/python benchmarks/oa_suspicious.py [--rows 100000] [--all-flows 1000000] [--repeats 20]
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
import pyarrow as pa
import pyarrow.parquet as pq
from werkzeug.security import generate_password_hash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spot_ae_job.oa.app import create_app  # noqa: E402
from spot_ae_job.oa.config import OAConfig, User  # noqa: E402
from spot_ae_job.oa.results import FLOW_ARROW_TYPES  # noqa: E402
from spot_ae_job.schema import FLOW_COLUMNS, RESULT_COLUMNS  # noqa: E402

DAY = "20180216"


def build(root: Path, n: int, n_all: int, n_hosts: int | None = None) -> None:
    """flow_results.csv with the n most suspicious of n_all flows; all_scores/ Parquet with all of
    them. IPs from 1,524 hosts, or from `n_hosts` hosts of 10.0.0.0/8 (fewer shared hosts: more incidents)."""
    rng = np.random.default_rng(7)
    out = root / "flow" / "scored_results" / DAY / "scores"
    out.mkdir(parents=True)
    n, n_sus = n_all, n
    secs = np.sort(rng.integers(0, 86400, n))
    ts = pd.to_datetime("2018-02-16") + pd.to_timedelta(secs, unit="s")
    hosts = np.array([f"172.31.{a}.{b}" for a in range(64, 70) for b in range(1, 255)] if n_hosts is None else
                     [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in rng.choice(1 << 24, n_hosts, replace=False)])
    df = pd.DataFrame({
        "treceived": ts.strftime("%Y-%m-%d %H:%M:%S"), "tryear": ts.year, "trmonth": ts.month, "trday": ts.day,
        "trhour": ts.hour, "trminute": ts.minute, "trsec": ts.second, "tdur": rng.exponential(3, n).round(6),
        "sip": rng.choice(hosts, n), "dip": rng.choice(hosts, n), "sport": rng.integers(1024, 65535, n),
        "dport": rng.choice([22, 80, 443, 21, 3389, 8080], n), "proto": rng.choice(["TCP", "UDP"], n, p=[0.8, 0.2]),
        "ipkt": rng.integers(1, 500, n), "ibyt": rng.integers(40, 10**6, n), "opkt": rng.integers(0, 500, n),
        "obyt": rng.integers(0, 10**6, n), "score": rng.random(n) + 1.0,
    })
    df = df.sort_values("score", ascending=False, ignore_index=True)
    df[RESULT_COLUMNS].head(n_sus).to_csv(out / "flow_results.csv", index=False)
    for c in FLOW_COLUMNS:
        if c not in df:
            df[c] = "" if FLOW_ARROW_TYPES[c] == pa.string() else 0
    df["unix_tstamp"] = secs[:n] + 1518739200
    df["suspicious"] = np.arange(n) < n_sus
    df["rank"] = pd.Series(np.arange(1, n + 1), dtype="Int32").where(df["suspicious"])
    fields = [pa.field(c, FLOW_ARROW_TYPES[c]) for c in FLOW_COLUMNS] + [
        pa.field("score", pa.float64()), pa.field("suspicious", pa.bool_()), pa.field("rank", pa.int32())]
    t = pa.Table.from_pandas(df.sample(frac=1, random_state=1)[FLOW_COLUMNS + ["score", "suspicious", "rank"]],
                             schema=pa.schema(fields), preserve_index=False)
    (out.parent / "all_scores").mkdir()
    for i in range(4):  # Spark writes several part files
        pq.write_table(t.slice(i * n // 4, n // 4 + 1), out.parent / "all_scores" / f"part-{i:05d}.snappy.parquet")


def timed(client, url: str) -> float:
    t = time.perf_counter()
    r = client.get(url)
    dt = time.perf_counter() - t
    assert r.status_code == 200, r.json
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--all-flows", type=int, default=1_000_000, help="flows in all_scores/ (the whole day)")
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "user" / "spot"
        build(root, a.rows, max(a.rows, a.all_flows))
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
        pair = f"/api/v1/days/{DAY}/connections?sip={table['sip'].iloc[0]}&dip={table['dip'].iloc[0]}"
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
        n_conn = len(c.get(pair).json["flows"])
        ms = statistics.median(timed(c, pair) for _ in range(max(3, a.repeats // 4))) * 1000
        print(f"connection details over all_scores ({max(a.rows, a.all_flows):,} flows, {n_conn} in the pair): {ms:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
