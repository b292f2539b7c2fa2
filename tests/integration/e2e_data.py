"""What the end-to-end harness sends, and the two measures it checks: conservation and recall.

Shared by tests/integration/test_e2e.py (the cluster) and by the offline run that measures the
recall bound the cluster must reach (`python -m tests.integration.e2e_data`, docs/e2e.md).

A flow is identified on both sides by the fields the wire carries and nfdump gives back:
addresses, ports, start second and the four counters. On the improved CIC-IDS2018 excerpt
these keys are unique, so "conserved" can be checked flow by flow, as a multiset: a lost flow and
a duplicated one both show, which totals alone would let cancel out.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from spot_ae_job.ingest.cicids import detect_columns
from spot_ae_job.ingest.replay import Flow, ReplayStats, cicids_flows

REPO = Path(__file__).resolve().parents[2]
EXCERPT = "cicids2018/aegmm__toy_dataset.csv"  # the improved extraction: IPs, ports, timestamps
PCAP = "pcap/zeek/bruteforce.pcap"             # FTP brute force, flows dated 2014-01-14
TRAIN_DAY = "20180222"   # the excerpt's rows of 22/02 are all benign: Spot's assumption holds
TEST_DAY = "20180228"    # NMAP Portscan day (37 of 318 flows), scored with the saved model (the paper's protocol)
EPOCHS = 10              # the cluster run's training settings; the bound below is for these
BATCH_SIZE = 4           # 237 rows: small batches give enough updates in few (costly) epochs
# Recall on TEST_DAY's attack flows at the p95 threshold, measured offline with the same data,
# TRAIN_DAY and EPOCHS on local[2] (docs/e2e.md has the command and its output).
RECALL_BOUND = 15 / 37
# What the cluster run must show instead of reaching that bound: the p95 threshold is fitted on a
# held-out 15% of 22/02's 237 benign rows (about 35 rows, so p95 is their second-highest score),
# and training is not bit-for-bit repeatable, so how MANY flows a run flags swings (12 to 50 of
# 318 seen) and recall with it (7 to 36 of 37). What does not depend on that swing is whether
# the flows it flags are attacks far more often than chance: the probability of at least that
# many attack flows in a random draw of that many flows (hypergeometric) must be below this.
ENRICHMENT_P = 1e-3

Key = tuple  # (sip, dip, sport, dport, start second, ipkt, ibyt, opkt, obyt)


def flow_key(f: Flow) -> Key:
    return (f.src, f.dst, f.sport, f.dport, f.start_ms // 1000, f.ipkt, f.ibyt, f.opkt, f.obyt)


def row_key(r: dict) -> Key:
    """The same key from a flow-table row or an OA/result row (treceived is the start, UTC)."""
    if "unix_tstamp" in r:
        ts = int(r["unix_tstamp"])
    else:
        ts = int(datetime.strptime(r["treceived"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp())
    return (r["sip"], r["dip"], int(r["sport"]), int(r["dport"]), ts,
            int(r["ipkt"]), int(r["ibyt"]), int(r["opkt"]), int(r["obyt"]))


@dataclass
class Sent:
    """The excerpt as the replayer sends it, with each flow's ground truth (never sent)."""

    keys: Counter
    attack: dict  # key -> bool

    def day(self, yyyymmdd: str) -> list[Key]:
        d = datetime.strptime(yyyymmdd, "%Y%m%d").replace(tzinfo=timezone.utc).timestamp()
        return [k for k in self.keys if d <= k[4] < d + 86400]


def excerpt_flows(path: str | os.PathLike) -> Sent:
    """The replayer's own parse of the CSV, zipped with the CSV's labels row by row."""
    stats = ReplayStats()
    flows = cicids_flows(path, stats, default_start_ms=0)
    if stats.skipped:
        raise ValueError(f"{path}: {stats.skipped} rows not sent ({stats.skip_reasons}); labels would not line up")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        label = detect_columns(reader.fieldnames or [])["label"]
        labels = [(row[label] or "").strip() for row in reader]
    attack = {}
    for fl, lab in zip(flows, labels, strict=True):
        attack[flow_key(fl)] = lab.upper() != "BENIGN"
    return Sent(Counter(flow_key(f) for f in flows), attack)


def chance_probability(total: int, attacks: int, flagged: int, hits: int) -> float:
    """P(at least `hits` attack flows among `flagged` flows drawn at random from `total` flows of
    which `attacks` are attacks): the hypergeometric upper tail."""
    if flagged > total or attacks > total:
        raise ValueError("more flagged or attack flows than flows")
    tail = sum(math.comb(attacks, i) * math.comb(total - attacks, flagged - i) for i in range(hits, min(attacks, flagged) + 1))
    return tail / math.comb(total, flagged)


def recall(sent: Sent, day: str, suspicious: list[dict]) -> tuple[float, int, int]:
    """Share of the day's replayed attack flows among the suspicious results: (recall, hits, attacks)."""
    attacks = {k for k in sent.day(day) if sent.attack[k]}
    hits = attacks & {row_key(r) for r in suspicious}
    return (len(hits) / len(attacks) if attacks else float("nan")), len(hits), len(attacks)


# --- offline: the same path on this host (nfcapd, the watcher into file://, local[2] Spark) ----

def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_offline(data_dir: Path, work: Path, epochs: int, master: str) -> dict:
    """Replay the excerpt to a local nfcapd, land it with the watcher, train on TRAIN_DAY, score
    TEST_DAY with the saved model, and return the recall the cluster run is held to."""
    spot = [sys.executable, "-m", "spot_ae_job"]
    huser = f"file://{work / 'spot'}"
    port = _free_udp_port()
    watch = subprocess.Popen([*spot, "ingest", "watch", "--huser", huser, "--listen", f"127.0.0.1:{port}",
                              "--spool", str(work / "spool"), "--interval", "5"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)  # nfcapd binds its socket
        subprocess.run([*spot, "ingest", "replay-csv", "--to", f"127.0.0.1:{port}", str(data_dir / EXCERPT)], check=True)
        time.sleep(15)  # two rotations: the file with the flows is closed and landed
    finally:
        watch.send_signal(signal.SIGTERM)
        watch.wait(timeout=120)
    train = ["--epochs", str(epochs), "--batch-size", str(BATCH_SIZE)]
    for day, extra in ((TRAIN_DAY, train), (TEST_DAY, ["--model-version", "latest"])):
        subprocess.run([*spot, "ml-ops", day, "flow", "--huser", huser, "--master", master, *extra], check=True)
    res = work / "spot" / "flow" / "scored_results" / TEST_DAY / "scores" / "flow_results.csv"
    with open(res, newline="") as f:
        rows = list(csv.DictReader(f))
    r, hits, attacks = recall(excerpt_flows(data_dir / EXCERPT), TEST_DAY, rows)
    return {"recall": r, "hits": hits, "attacks": attacks, "suspicious": len(rows), "epochs": epochs,
            "train_day": TRAIN_DAY, "test_day": TEST_DAY, "master": master}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="measure the recall bound of the end-to-end harness offline")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("SPOT_AE_DATA", REPO.parent / "shared" / "data")))
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="spot-ae-e2e-bound-"))
    try:
        print(json.dumps(measure_offline(args.data, work, args.epochs, args.master)))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
