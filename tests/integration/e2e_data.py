"""What the end-to-end harness sends, and what it checks: conservation, and how the model ranks
the attack flows.

Shared by tests/integration/test_e2e.py (the cluster) and by the offline run that measures what
the cluster run is compared with (`python -m tests.integration.e2e_data`, docs/e2e.md).

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

import pyarrow.parquet as pq

from spot_ae_job import metrics
from spot_ae_job.ingest.cicids import detect_columns
from spot_ae_job.ingest.replay import Flow, ReplayStats, cicids_flows

REPO = Path(__file__).resolve().parents[2]
EXCERPT = "cicids2018/aegmm__toy_dataset.csv"  # the improved extraction: IPs, ports, timestamps
PCAP = "pcap/zeek/bruteforce.pcap"             # FTP brute force, flows dated 2014-01-14
TRAIN_DAY = "20180222"   # the excerpt's rows of 22/02 are all benign: Spot's assumption holds
TEST_DAY = "20180228"    # NMAP Portscan day (37 of 318 flows), scored with the saved model (the paper's protocol)
EPOCHS = 10              # the cluster run's training settings; the bound below is for these
BATCH_SIZE = 4           # 237 rows: small batches give enough updates in few (costly) epochs
# Recall on TEST_DAY's attack flows at the p95 threshold in one offline run with the same data,
# TRAIN_DAY and EPOCHS on local[2] (docs/e2e.md has the command and the other runs: 5 to 36 of
# 37). Printed by the cluster run beside its own; not a bound it is held to (below).
RECALL_BOUND = 15 / 37
# What the cluster run is held to. The p95 threshold is fitted on a held-out 15% of 22/02's 237
# benign rows (about 35 rows, so p95 is their second-highest score), and training is not
# bit-for-bit repeatable, so how MANY flows a run flags swings (11 to 50 of 318 seen) and recall
# with it (5 to 36 of 37); even the flagged flows' enrichment in attacks swung past a 1e-3 bound
# (17 flagged, 7 attacks: p = 1.4e-3, CI of 2026-12-02). What the threshold does not move is how
# the model RANKS the day: ROC-AUC of the 37 attack flows against the day's 281 benign flows, over
# every flow's score in all_scores/. A model that detects nothing ranks at 0.5 (+-0.05 for these
# class sizes); offline runs gave the values in docs/e2e.md.
AUC_BOUND = 0.8

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


def ranking_auc(sent: Sent, day: str, scored: list[dict]) -> tuple[float, int, int]:
    """ROC-AUC of the day's replayed attack flows against its benign ones, from every scored flow
    (all_scores rows: flow columns and score): (auc, attacks, flows). A scored flow that was not
    sent that day is an error, not a benign flow."""
    want = set(sent.day(day))
    keys = [row_key(r) for r in scored]
    unknown = [k for k in keys if k not in want]
    if unknown:
        raise AssertionError(f"{len(unknown)} scored flows of {day} were never sent, e.g. {unknown[:2]}")
    y = [sent.attack[k] for k in keys]
    return metrics.roc_auc(y, [float(r["score"]) for r in scored]), sum(y), len(y)


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
    TEST_DAY with the saved model; return recall at p95 and the ranking's ROC-AUC (AUC_BOUND's
    evidence)."""
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
    sent = excerpt_flows(data_dir / EXCERPT)
    r, hits, attacks = recall(sent, TEST_DAY, rows)
    scored = pq.read_table(res.parents[1] / "all_scores").to_pylist()
    auc, _, flows = ranking_auc(sent, TEST_DAY, scored)
    return {"recall": r, "hits": hits, "attacks": attacks, "suspicious": len(rows), "flows": flows, "auc": auc,
            "epochs": epochs,
            "train_day": TRAIN_DAY, "test_day": TEST_DAY, "master": master}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="measure offline what the end-to-end harness compares its cluster run with (recall at p95, ROC-AUC)")
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
