"""The stream at sustained load on the compose cluster, printed (no assertions).

Replays flows to the cluster's collector at a steady rate (default 640 flows/s, 10x the average
rate of a 5.5 M-flow day) for MINUTES (default 10), as a NetFlow exporter would: IPFIX over UDP
to nfcapd in the `ingest` container, which rotates a file every 60 s (the product's default);
the watcher lands each file on HDFS and the `spot-ae-stream` YARN application scores it with the
saved model (the default for flows with IPs: host context). Then it reads from HDFS and the spool
what happened to every rotated file and prints:
- per nfcapd file: rotation (the file's close time in the spool) -> landed (its ingest ledger
  entry on HDFS) -> scored (the commit of the micro-batch that listed it in the stream's
  checkpoint; a batch writes its results, alerts and incidents before it commits): p50/p95/max,
  and the same per minute of the replay, which shows whether the lag grows;
- flows sent, flows nfcapd wrote, flows in the table, flows the stream scored (lost or duplicated);
- the stream's micro-batches in the window (flows, seconds) from its own log.

The flows are the real rows of `cicids2018/aegmm__toy_dataset.csv` (5,000 flows with IPs),
repeated with hosts re-numbered per copy (every copy its own 1,275 hosts, as bench_day.py does)
and timestamps set to when each is sent, so each copy keeps its rows' order, not their spacing;
attack rows only in every 10th copy. It measures cost and latency, not detection.

    make cluster-up && .venv/bin/python benchmarks/bench_stream_cluster.py            # 640 flows/s, 10 min
    .venv/bin/python benchmarks/bench_stream_cluster.py --rate 64 --minutes 3         # a quick look

It uses the running cluster of project $SPOT_AE_PROJECT (default spot-ae; `make cluster-up` brings
it up, and this script calls it too, which is quick when it is up). If no model exists yet, it
loads the excerpt into the flow table and trains one in the ML client (`--epochs`, default 5:
cost, not detection), then waits for the stream to catch up before replaying.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spot_ae_job.cli import default_data  # noqa: E402
from spot_ae_job.ingest import replay  # noqa: E402
from tests.integration.test_stream_cluster import ROWS  # noqa: E402  (the tests' row count over WebHDFS)

SOURCE = "cicids2018/aegmm__toy_dataset.csv"
TRAIN_DAY = "20180216"
HUSER = "hdfs://namenode:8020/user/spot"
SPOOL = "/var/spool/spot-ae"
ATTACK_EVERY = 10
GOAL_P95_S = 120
PER_PACKET = replay.Exporter().per_packet

# Run in the ML client: what HDFS holds about the stream and the ingest of the replayed files.
HDFS_FACTS = ROWS + r"""
from spot_ae_job.layout import Day, Layout
lay = Layout("/user/spot")
days = json.loads(sys.argv[1])

ck = lay.stream_checkpoint
listed = {}
for e in ls(ck + "/sources/0"):
    for line in c.read(ck + "/sources/0/" + e["pathSuffix"]).decode().splitlines()[1:]:
        if line.strip():
            j = json.loads(line)
            listed[j["path"]] = j["batchId"]
marks = {k: {e["pathSuffix"]: e["modificationTime"] / 1000 for e in ls(f"{ck}/{k}")} for k in ("offsets", "commits")}
ledger = []
for e in ls(lay.ingest_state):
    j = json.loads(c.read(lay.ingest_state + "/" + e["pathSuffix"]))
    if j.get("source_kind") == "nfcapd":
        ledger.append({**j, "landed": e["modificationTime"] / 1000})
counts = {d: [rows(lay.day_flows(Day.parse(d))), rows(lay.results(Day.parse(d)).stream_all_scores, True)] for d in days}
print(json.dumps({"listed": listed, "offsets": marks["offsets"], "commits": marks["commits"], "ledger": ledger, "counts": counts}))
"""


class Compose:
    """The cluster's containers, as `scripts/cluster.sh` names them."""

    def __init__(self, project: str):
        self.base = [str(REPO / ".venv" / "bin" / "docker-compose"), "-p", project,
                     "-f", str(REPO / "compose" / "docker-compose.yml"), "--profile", "apps"]

    def run(self, *args: str, timeout: float = 1800) -> str:
        r = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            sys.exit(f"bench: `{' '.join(map(shlex.quote, args))}` failed ({r.returncode}): {r.stderr[-2000:]}")
        return r.stdout

    def exec(self, service: str, *cmd: str, timeout: float = 1800) -> str:
        return self.run("exec", "-T", service, *cmd, timeout=timeout)

    def succeeds(self, service: str, *cmd: str) -> bool:
        return subprocess.run([*self.base, "exec", "-T", service, *cmd], capture_output=True, timeout=300).returncode == 0


def hdfs_facts(c: Compose, days: list[str]) -> dict:
    return json.loads(c.exec("ml-client", "python", "-c", HDFS_FACTS, json.dumps(days)))


def caught_up(c: Compose) -> bool:
    """The stream has committed every batch it started, and started none for 30 s."""
    def last():
        f = hdfs_facts(c, [])
        ids = lambda d: max((int(k) for k in d if k.isdigit()), default=-1)  # noqa: E731
        return ids(f["offsets"]), ids(f["commits"])
    a = last()
    if a[0] < 0 or a[0] != a[1]:
        return False
    time.sleep(30)
    return last() == a


def wait(what: str, fn, timeout: float, every: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (got := fn()):
        if time.monotonic() > deadline:
            sys.exit(f"bench: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return got


def replay_csv(path: Path, flows: int, rate: float, start: float) -> list[str]:
    """The replay's rows as a CIC CSV (module docstring: how); returns the UTC days they fall on."""
    src = pd.read_csv(default_data() / SOURCE, dtype=str, keep_default_na=False)
    ips = {ip: j for j, ip in enumerate(sorted(set(src["Src IP"]) | set(src["Dst IP"])))}
    parts, n, k = [], 0, 0
    while n < flows:
        part = src if k % ATTACK_EVERY == 0 else src[src["Label"] == "BENIGN"]
        part = part.copy()
        for col in ("Src IP", "Dst IP"):
            h = part[col].map(ips) + k * len(ips) + 1
            part[col] = "10." + (h // 65536 % 256).astype(str) + "." + (h // 256 % 256).astype(str) + "." + (h % 256).astype(str)
        parts.append(part.iloc[: flows - n])
        n += len(parts[-1])
        k += 1
    out = pd.concat(parts, ignore_index=True)
    ts = pd.to_datetime(start + out.index / rate, unit="s", utc=True)
    out["Timestamp"] = ts.strftime("%Y-%m-%d %H:%M:%S.%f")
    out["Flow ID"] = out["Src IP"] + "-" + out["Dst IP"] + "-" + out["Src Port"] + "-" + out["Dst Port"] + "-" + out["Protocol"]
    out.to_csv(path, index=False)
    return sorted(set(ts.strftime("%Y%m%d")))


def rotations(c: Compose) -> dict[str, float]:
    """nfcapd file name -> its close time (mtime), for every rotated file still in the spool."""
    out = c.exec("ingest", "find", SPOOL, "-type", "f", "-name", "nfcapd.2*", "-printf", "%f %T@\\n")
    return {name: float(t) for name, t in (ln.split() for ln in out.splitlines())}


def per_file(facts: dict, rot: dict[str, float]) -> list[dict]:
    """Each rotated file (name -> close time) that landed with flows (an empty rotation has
    nothing to score): its flows, rotation -> landed and rotation -> scored (the last commit of
    the batches that listed its Parquet files; None until they all committed)."""
    by_tag = {e["tag"]: e for e in facts["ledger"] if e["source"] in rot and e["flows"] > 0}
    batch_of: dict[str, set] = {}
    for path, b in facts["listed"].items():
        tag = path.rsplit("/", 1)[1].removesuffix(".parquet")
        if tag in by_tag:
            batch_of.setdefault(tag, set()).add(b)
    files = []
    for tag, e in sorted(by_tag.items(), key=lambda kv: rot[kv[1]["source"]]):
        r = rot[e["source"]]
        commits = [facts["commits"].get(str(b)) for b in batch_of.get(tag, ())]
        scored = max(commits) if commits and None not in commits else None
        files.append({"file": e["source"], "flows": e["flows"], "nfdump_flows": e["nfdump_flows"], "rotated": r,
                      "landed_s": e["landed"] - r, "scored_s": None if scored is None else scored - r,
                      "batches": sorted(batch_of.get(tag, ()))})
    return files


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[max(0, math.ceil(q * len(xs)) - 1)]  # nearest rank


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rate", type=float, default=640.0, help="flows/s (default 640: 10x a 5.5 M-flow day's average)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--epochs", type=int, default=5, help="epochs of the model trained if none exists (cost, not detection)")
    ap.add_argument("--drain-minutes", type=float, default=20.0, help="how long to wait for the stream to catch up after the replay")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    a = ap.parse_args()
    project = os.environ.get("SPOT_AE_PROJECT", "spot-ae")
    c = Compose(project)

    t = time.monotonic()
    up = subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "up"], capture_output=True, text=True)
    if up.returncode != 0:
        sys.exit(f"bench: make cluster-up failed:\n{up.stderr[-3000:]}")
    print(f"cluster {project} up ({time.monotonic() - t:.0f} s)", flush=True)
    if not c.succeeds("ml-client", "hdfs", "dfs", "-test", "-e", "/user/spot/flow/models/LATEST"):
        t = time.monotonic()
        c.exec("ml-client", "spot-ae", "load-csv", "--huser", HUSER, "--master", "local[2]", f"file:///input/{SOURCE}")
        c.exec("ml-client", "spot-ae", "train", "--day", TRAIN_DAY, "--huser", HUSER, "--master", "local[2]",
               "--epochs", str(a.epochs))
        print(f"excerpt loaded and a model trained in the ML client ({time.monotonic() - t:.0f} s)", flush=True)
    model = c.exec("ml-client", "hdfs", "dfs", "-cat", "/user/spot/flow/models/LATEST").strip()
    t = time.monotonic()
    wait("the stream to catch up before the replay", lambda: caught_up(c), 1800)
    print(f"model {model}; the stream is caught up ({time.monotonic() - t:.0f} s)", flush=True)

    flows = int(a.rate * a.minutes * 60)
    port = int(c.run("port", "--protocol", "udp", "ingest", "2055").strip().rsplit(":", 1)[1])
    with tempfile.TemporaryDirectory(prefix="spot-ae-bench-stream-") as tmp:
        csv_path = Path(tmp) / "replay.csv"
        start = time.time() + 10
        days = replay_csv(csv_path, flows, a.rate, start)
        while time.time() < start:
            time.sleep(0.05)
        print(f"replaying {flows:,} flows at {a.rate:g} flows/s ({a.rate / PER_PACKET:.1f} IPFIX packets/s) to "
              f"127.0.0.1:{port} for {a.minutes:g} min; days {', '.join(days)}", flush=True)
        stats = replay.replay_csv([str(csv_path)], "127.0.0.1", port, 10, a.rate / PER_PACKET)
    sent_end = time.time()
    print(f"sent {stats.sent_flows:,} flows in {sent_end - start:.0f} s ({stats.skipped} rows skipped)", flush=True)

    def settled():
        """The replay's last file rotated; every replayed file landed and its batches committed;
        the stream scored every flow of the replay's days."""
        rot = rotations(c)
        if not any(t > sent_end for t in rot.values()):
            return None
        f = hdfs_facts(c, days)
        mine = {n: t for n, t in rot.items() if t >= start}
        files = per_file(f, mine)
        table, scored = map(sum, zip(*f["counts"].values()))
        landed = {e["source"] for e in f["ledger"]}
        done = set(mine) <= landed and all(x["scored_s"] is not None for x in files) and table == scored > 0
        return (f, files) if done else None

    t = time.monotonic()
    facts, files = wait("the stream to score every replayed flow", settled, a.drain_minutes * 60)
    print(f"the stream caught up {time.monotonic() - t:.0f} s after the last flow was sent", flush=True)
    print(f"\n{'nfcapd file':22s} {'flows':>7s} {'rotation->landed':>17s} {'rotation->scored':>17s}  batches")
    for f in files:
        s = "not scored" if f["scored_s"] is None else f"{f['scored_s']:.1f} s"
        print(f"{f['file']:22s} {f['flows']:7,d} {f['landed_s']:15.1f} s {s:>17s}  {f['batches']}")
    lat = [f["scored_s"] for f in files if f["scored_s"] is not None]
    land = [f["landed_s"] for f in files]
    nf = sum(f["nfdump_flows"] for f in files)
    table, scored = map(sum, zip(*facts["counts"].values()))
    logs = c.run("logs", "--no-color", "--since", dt.datetime.fromtimestamp(start, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "stream")
    batches = [(int(m.group(1)), float(m.group(2))) for m in re.finditer(r"batch \d+: (\d+) flows scored .*\(([\d.]+) s\)", logs)]
    res = {
        "rate": a.rate, "minutes": a.minutes, "model": model, "sent": stats.sent_flows, "nfcapd_flows": nf,
        "table_flows": table, "scored_flows": scored, "files": files,
        "rotation_to_scored_s": {"p50": statistics.median(lat), "p95": pct(lat, 0.95), "max": max(lat)} if lat else None,
        "rotation_to_landed_s": {"p50": statistics.median(land), "p95": pct(land, 0.95), "max": max(land)} if land else None,
        "batches": batches,
    }
    print(f"\nflows: sent {stats.sent_flows:,}; written by nfcapd {nf:,} (lost in UDP/collector: {stats.sent_flows - nf:,}); "
          f"in the table {table:,}; scored by the stream {scored:,} (lost {max(0, table - scored):,}, duplicated {max(0, scored - table):,})")
    if lat:
        print(f"rotation -> landed on HDFS: p50 {res['rotation_to_landed_s']['p50']:.1f} s, p95 {res['rotation_to_landed_s']['p95']:.1f} s")
        print(f"rotation -> scored, alerts written (batch committed): p50 {res['rotation_to_scored_s']['p50']:.1f} s, "
              f"p95 {res['rotation_to_scored_s']['p95']:.1f} s, max {res['rotation_to_scored_s']['max']:.1f} s over {len(lat)} files "
              f"(goal p95 < {GOAL_P95_S} s: {'MET' if res['rotation_to_scored_s']['p95'] < GOAL_P95_S else 'MISSED'})")
        half = len(lat) // 2
        if half:
            print(f"lag over the replay: mean of the first half of the files {statistics.mean(lat[:half]):.1f} s, "
                  f"of the second half {statistics.mean(lat[half:]):.1f} s")
    if batches:
        n, s = sum(b[0] for b in batches), sum(b[1] for b in batches)
        print(f"stream micro-batches in the window: {len(batches)}, {n:,} flows in {s:.0f} s of batch time "
              f"({n / s:,.0f} flows/s), longest {max(b[1] for b in batches):.1f} s")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1))
        print(f"figures: {a.out}")


if __name__ == "__main__":
    main()
