"""Ingest throughput: nfcapd files -> Parquet on a real HDFS, against one single-core nfdump decode.

Prints figures, asserts nothing. Input: real nfcapd samples made larger with nfdump itself:
file i = the bundled `nfcapd.sample` concatenated COPIES+i times (`nfdump -R dir -w file`), so the
files differ (distinct tags) and hold real flows. HDFS: the tests' LocalHDFS (NameNode + DataNode
on this host), written through WebHDFS exactly as in production.

  .venv/bin/python benchmarks/bench_ingest.py [--files 4] [--copies 40] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spot_ae_job.ingest.watcher import StoreConfig, ingest_paths  # noqa: E402
from tests.hdfs_local import LocalHDFS  # noqa: E402

DATA = Path(os.environ.get("SPOT_AE_DATA", REPO.parent / "shared" / "data"))


def make_inputs(work: Path, n_files: int, copies: int) -> list[Path]:
    out = []
    for i in range(n_files):
        src = work / f"src{i}"
        src.mkdir()
        for k in range(copies + i):
            shutil.copy(DATA / "nfcapd" / "nfcapd.sample", src / f"nfcapd.20230125{k:04d}")
        f = work / f"nfcapd.20230125{18 + i:02d}00"
        subprocess.run(["nfdump", "-R", str(src), "-w", str(f)], check=True, capture_output=True)
        shutil.rmtree(src)
        out.append(f)
    return out


class PeakRSS:
    """Peak resident memory of this process plus its children (the decode workers), sampled."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                total = 0
            self.peak = max(self.peak, total)
            time.sleep(0.05)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="spot-ae-bench-"))
    try:
        files = make_inputs(work, args.files, args.copies)
        size = sum(f.stat().st_size for f in files)

        t0 = time.perf_counter()
        flows = 0
        for f in files:  # the baseline: one nfdump -o csv decode at a time, output discarded
            out = subprocess.run(["nfdump", "-r", str(f), "-o", "csv", "-q"], capture_output=True, check=True,
                                 env={**os.environ, "TZ": "UTC"}).stdout
            flows += out.count(b"\n")
        t_nfdump = time.perf_counter() - t0

        t0 = time.perf_counter()  # the same path into a local directory: what HDFS adds, by difference
        ingest_paths(StoreConfig("file://" + str(work / "local-huser")), files, work / "q", workers=args.workers)
        t_local = time.perf_counter() - t0

        with LocalHDFS() as hdfs:
            cfg = StoreConfig(f"{hdfs.huser}/bench", hdfs.http_url)
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                res = ingest_paths(cfg, files, work / "q", workers=args.workers)
                t_ingest = time.perf_counter() - t0
            landed = sum(r.flows + r.rejected for r in res)
            assert landed == flows, (landed, flows)

            csvs = []
            for f in files[:2]:
                c = work / (f.name + ".csv")
                c.write_bytes(subprocess.run(["nfdump", "-r", str(f), "-o", "csv"], capture_output=True, check=True,
                                             env={**os.environ, "TZ": "UTC"}).stdout)
                csvs.append(c)
            cfg2 = StoreConfig(f"{hdfs.huser}/bench-csv", hdfs.http_url)
            with PeakRSS() as mem_csv:
                t0 = time.perf_counter()
                res_csv = ingest_paths(cfg2, csvs, work / "q", workers=args.workers, kind="nfdump-csv")
                t_csv = time.perf_counter() - t0
            csv_flows = sum(r.flows + r.rejected for r in res_csv)

        print(f"input: {len(files)} nfcapd files, {flows} flows, {size / 1e6:.1f} MB; {os.cpu_count()} cores; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"nfdump -o csv, one at a time (single core): {t_nfdump:.2f} s  = {flows / t_nfdump:,.0f} flows/s")
        print(f"ingest nfcapd -> Parquet on HDFS ({args.workers} workers): {t_ingest:.2f} s  = {flows / t_ingest:,.0f} flows/s")
        print(f"same ingest into a local file:// root (no HDFS): {t_local:.2f} s  = {flows / t_local:,.0f} flows/s")
        print(f"ratio ingest / single nfdump decode: {t_nfdump / t_ingest:.2f}x  (target >= 1.5x)")
        print(f"peak RSS during nfcapd ingest (this process + workers): {mem.peak / 2**20:.0f} MiB")
        print(f"ingest nfdump CSV -> Parquet on HDFS: {t_csv:.2f} s for {csv_flows} flows = {csv_flows / t_csv:,.0f} flows/s; "
              f"peak RSS {mem_csv.peak / 2**20:.0f} MiB")
        print(f"max RSS of any child (getrusage): {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
