"""How fast the OA answers a day's incidents: PRINTS figures, asserts nothing.

Builds a synthetic day (oa_suspicious.build: N suspicious flows among H hosts of 10.0.0.0/8),
makes its incidents with the real stage (incidents.write_day_incidents, local Spark), then
measures through the real app (Flask test client, logged in): the first incident-list request
(reads incidents/ and incident_members/) vs a cached one, sorted and filtered lists, the largest
incident's page data and member flows, and the flat list with each flow's incident.

    .venv/bin/python benchmarks/oa_incidents.py [--rows 50000] [--hosts 20000] [--repeats 20] [--master 'local[2]']
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from werkzeug.security import generate_password_hash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from oa_suspicious import DAY, build, timed  # noqa: E402

from spot_ae_job import incidents  # noqa: E402
from spot_ae_job.features import N_FEATURES, Scaler  # noqa: E402
from spot_ae_job.layout import Day, Layout  # noqa: E402
from spot_ae_job.model import HIDDEN, AEModel  # noqa: E402
from spot_ae_job.oa.app import create_app  # noqa: E402
from spot_ae_job.oa.config import OAConfig, User  # noqa: E402
from spot_ae_job.spark import session  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50_000, help="suspicious flows of the day")
    ap.add_argument("--hosts", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "user" / "spot"
        build(root, a.rows, a.rows, n_hosts=a.hosts)
        spark = session(a.master, app="bench-oa-incidents", extra={"spark.sql.shuffle.partitions": "4"})
        w = [np.zeros((N_FEATURES, HIDDEN), np.float32), np.zeros(HIDDEN, np.float32),
             np.zeros((HIDDEN, N_FEATURES), np.float32), np.zeros(N_FEATURES, np.float32)]
        model = AEModel(w, Scaler(np.zeros(N_FEATURES), np.ones(N_FEATURES)), 1.0, {"version": "bench", "kind": "ae"})
        t = time.perf_counter()
        scored = spark.read.parquet(f"file://{root}/flow/scored_results/{DAY}/all_scores")
        summary = incidents.write_day_incidents(spark, scored, model, Day.parse(DAY), Layout(f"file://{root}"), 1.0,
                                                classifier=None, progress=lambda *_: None)
        stage = time.perf_counter() - t
        spark.stop()
        cfg = OAConfig(huser=f"file://{root}", secret_key="b" * 32)
        cfg.users = {"bench": User("bench", generate_password_hash("benchmark-pass", "pbkdf2:sha256:1000"))}
        app = create_app(cfg)
        c = app.test_client()
        c.post("/api/v1/login", json={"username": "bench", "password": "benchmark-pass"})
        base = f"/api/v1/days/{DAY}/incidents"
        first = timed(c, base + "?size=50")
        cached = statistics.median(timed(c, base + "?size=50") for _ in range(a.repeats))
        top = c.get(base + "?sort=flows&order=desc&size=1").json["rows"][0]
        inc = f"{base}/{top['incident_id']}"
        cases = {
            "sorted by flows desc": base + "?sort=flows&order=desc&size=50",
            "filter host": base + f"?host={top['main_host']}&size=50",
            "filter min_severity": base + "?min_severity=20&size=50",
            f"largest incident ({top['flows']:,} flows)": inc,
            "its member flows, page 2": inc + "/flows?page=2&size=50",
            "flat list + incident per row": f"/api/v1/days/{DAY}/suspicious?size=500",
        }
        print(f"day: {a.rows:,} suspicious flows among {a.hosts:,} hosts -> {summary['incidents']:,} incidents; "
              f"incidents stage {stage:.1f} s on {a.master}")
        print(f"first incident list (read + answer): {first * 1000:8.1f} ms")
        print(f"cached incident list (page 1):       {cached * 1000:8.1f} ms   first/cached = {first / cached:.1f}x")
        for name, url in cases.items():
            ms = statistics.median(timed(c, url) for _ in range(a.repeats)) * 1000
            print(f"{name:36s} {ms:8.1f} ms (median of {a.repeats})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
