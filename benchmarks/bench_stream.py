"""Throughput of the stream on local Spark, printed (no assertions).

Lands FILES flow files in a fresh file:// flow table the way the ingest watcher commits them
(real nfdump output of `nfcapd/nfcapd.sample`, 2,350 flows, repeated), saves a small model, then
runs `spot-ae stream --available-now` (the same query the cluster runs, stopping once caught up)
and prints per-batch and overall flows/s from the stream's own log lines.

    .venv/bin/python benchmarks/bench_stream.py --files 40 --per-batch 10 --master 'local[2]'
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spot_ae_job.cli import default_data  # noqa: E402
from spot_ae_job.ingest.nfdump import Decoded, decode_file  # noqa: E402
from spot_ae_job.ingest.watcher import commit_decoded  # noqa: E402
from spot_ae_job.storage import open_storage  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=4, help="copies of the sample's flows per file")
    ap.add_argument("--per-batch", type=int, default=10, help="--max-files-per-trigger")
    ap.add_argument("--master", default="local[2]")
    args = ap.parse_args()

    from tests.unit.test_stream import make_model  # the tests' small real model
    from spot_ae_job.spark import session

    dec = decode_file(default_data() / "nfcapd" / "nfcapd.sample")
    flows = pa.concat_tables([dec.flows] * args.repeat)
    with tempfile.TemporaryDirectory(prefix="spot-ae-bench-stream-") as tmp:
        huser = f"file://{tmp}/spot"
        store = open_storage(huser)
        for i in range(args.files):
            commit_decoded(store, Decoded(dec.source, flows, dec.rejects.slice(0, 0), flows.num_rows),
                           f"nf-{i:04d}", "nfcapd", f"f{i}")
        spark = session(args.master, app="bench-stream")
        make_model(spark, huser, 1, "ae-bench")
        spark.stop()
        total = args.files * flows.num_rows
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "spot_ae_job", "stream", "--huser", huser, "--master", args.master,
                            "--available-now", "--max-files-per-trigger", str(args.per_batch)],
                           capture_output=True, text=True, env={"PYTHONPATH": str(REPO), **__import__("os").environ})
        wall = time.monotonic() - t0
        if r.returncode != 0:
            sys.exit(r.stderr[-3000:])
        batches = [(int(n), float(s)) for n, s in re.findall(r"batch \d+: (\d+) flows scored .*\(([\d.]+) s\)", r.stdout)]
        for i, (n, s) in enumerate(batches):
            print(f"batch {i}: {n} flows in {s:.1f} s = {n / s:,.0f} flows/s")
        scored = sum(n for n, _ in batches)
        busy = sum(s for _, s in batches)
        print(f"stream, {args.master}: {scored:,} of {total:,} flows in {len(batches)} micro-batches; "
              f"{scored / busy:,.0f} flows/s of batch time, {scored / wall:,.0f} flows/s including start-up ({wall:.0f} s wall)")


if __name__ == "__main__":
    main()
