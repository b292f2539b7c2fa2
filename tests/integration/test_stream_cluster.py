"""Continuous scoring in the compose cluster: the `stream` service runs "spot-ae-stream" on YARN;
flows replayed to the collector as IPFIX are rotated into nfcapd files (every 10 s here), landed
on HDFS by the ingest watcher, scored by the stream and shown by the OA API. Prints the latency
from the nfcapd rotation to the first suspicious flow visible through the OA API, and the
stream's throughput (figures, not assertions). Killing the stream's driver mid-stream must not
lose or duplicate a flow: compose restarts it and it resumes from its checkpoint on HDFS."""
from __future__ import annotations

import csv
import datetime as dt
import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_cluster import EXCERPT, HUSER, get_json, yarn_apps

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
TRAIN_DAY = "20180216"
SPOOL = "/var/spool/spot-ae"

# Counted in the ml-client over WebHDFS (a script run there), so a check reads HDFS itself and not
# the stream's own log: `rows(path, committed_only)` = Parquet rows under path (with
# committed_only, only in directories Spark committed). benchmarks/bench_stream_cluster.py uses it too.
ROWS = r"""
import io, json, sys, pyarrow.parquet as pq
from spot_ae_job.storage import WebHDFS
c = WebHDFS("http://namenode:9870", user="spot")

def ls(path):
    return c.list(path) if c.exists(path) else []

def rows(path, committed_only=False):
    entries = ls(path)
    names = [e["pathSuffix"] for e in entries]
    if committed_only and any(n.endswith(".parquet") for n in names) and "_SUCCESS" not in names:
        return 0
    n = 0
    for e in entries:
        name = e["pathSuffix"]
        if name.startswith((".", "_")):
            continue
        if e["type"] == "DIRECTORY":
            n += rows(path + "/" + name, committed_only)
        elif name.endswith(".parquet"):
            n += pq.ParquetFile(io.BytesIO(c.read(path + "/" + name))).metadata.num_rows
    return n
"""
# Rows of a day: in the flow table (every Parquet file under y=/m=/d=) and as streamed (every
# batch directory Spark committed).
COUNT_ROWS = ROWS + r"""
day = sys.argv[1]
y, m, d = int(day[:4]), int(day[4:6]), int(day[6:])
print(rows(f"/user/spot/flow/hive/y={y}/m={m}/d={d}"),
      rows(f"/user/spot/flow/scored_results/{day}/stream/all_scores", committed_only=True))
"""


def day_rows(cluster, day: str) -> tuple[int, int]:
    """(flows of `day` in the table, flows of `day` the stream scored)."""
    out = cluster.exec("ml-client", "python", "-c", COUNT_ROWS, day).stdout.decode().split()
    return int(out[0]), int(out[1])


def settled(cluster, day: str, every: float = 10.0):
    """The stream has caught up with the table for `day`, and stays caught up one more poll."""
    a = day_rows(cluster, day)
    if not (a[0] > 0 and a[0] == a[1]):
        return None
    time.sleep(every)
    return a if day_rows(cluster, day) == a else None


def wait_for(what: str, fn, timeout: float, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def stream_app(cluster, not_in: set[str] = frozenset()) -> dict | None:
    return next((a for a in yarn_apps(cluster) if a["name"] == "spot-ae-stream" and a["state"] == "RUNNING"
                 and a["id"] not in not_in), None)


def replay_today(cluster, data_dir: Path, tmp_path: Path, limit: int, tag: str) -> tuple[int, float, str]:
    """Replay `limit` real excerpt rows with today's time (so they make a day of their own that
    only the stream has scored); returns (flows sent, wall clock when sending started, day)."""
    now = dt.datetime.now(dt.timezone.utc)
    src = tmp_path / f"replay-{tag}.csv"
    with open(data_dir / EXCERPT, newline="") as f, open(src, "w", newline="") as out:
        r = csv.DictReader(f)
        w = csv.DictWriter(out, fieldnames=r.fieldnames)
        w.writeheader()
        for i, row in enumerate(r):
            if i >= limit:
                break
            row["Timestamp"] = now.strftime("%d/%m/%Y %H:%M:%S")
            w.writerow(row)
    port = cluster.udp_port("ingest", 2055)
    started = time.time()
    sent = subprocess.run([str(REPO / ".venv" / "bin" / "spot-ae"), "ingest", "replay-csv", "--to", f"127.0.0.1:{port}",
                           str(src)], capture_output=True, text=True, timeout=300)
    assert sent.returncode == 0, sent.stderr
    m = re.search(r"sent (\d+) flows", sent.stdout + sent.stderr)
    assert m, sent.stdout + sent.stderr
    return int(m.group(1)), started, now.strftime("%Y%m%d")


def rotations_after(cluster, t: float) -> list[float]:
    """Close times (mtime) of the collector's nfcapd files closed after `t`, from the spool."""
    out = cluster.exec("ingest", "bash", "-c", f"find {SPOOL} -type f -name 'nfcapd.2*' -printf '%T@\\n'").stdout.decode()
    return sorted(x for x in map(float, out.split()) if x >= t)


def oa_login(cluster):
    jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    user = cluster.oa_user
    req = urllib.request.Request(cluster.url("oa", 8080, "/api/v1/login"), method="POST",
                                 headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": user.name, "password": user.password}).encode())
    jar.open(req, timeout=20)
    return jar


def oa_suspicious(cluster, jar, day: str) -> dict | None:
    try:
        return json.load(jar.open(cluster.url("oa", 8080, f"/api/v1/days/{day}/suspicious?size=5"), timeout=60))
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


def log_batches(logs: str) -> list[tuple[int, float, bool]]:
    """(flows, seconds, first batch of its application?) of each micro-batch the stream logged."""
    out, first = [], False
    for line in logs.splitlines():
        if "] following " in line:
            first = True
        m = re.search(r"batch \d+: (\d+) flows scored .*\(([\d.]+) s\)", line)
        if m:
            out.append((int(m.group(1)), float(m.group(2)), first))
            first = False
    return out


@pytest.fixture(scope="module", autouse=True)
def stream_running(spot_cluster) -> None:
    """The session's cluster comes up without the streaming scorer (conftest): start it here."""
    spot_cluster.start_service("stream")


@pytest.fixture(scope="module")
def model_version(spot_cluster, data_dir) -> str:
    """A model on HDFS, trained the way an analyst does it (load the excerpt, `spot-ae train`), in the
    ML client's own Spark: loading and training on YARN have tests of their own (test_cluster.py,
    test_e2e.py), and two more YARN applications here cost minutes of CI beside the stream's."""
    if not spot_cluster.apps:
        pytest.skip("ingest/OA services not started")
    spot_cluster.hdfs("-mkdir", "-p", "/tmp/excerpt")
    spot_cluster.hdfs("-put", "-f", f"/input/{EXCERPT}", "/tmp/excerpt/")
    name = EXCERPT.rsplit("/", 1)[1]
    spot_cluster.exec("ml-client", "spot-ae", "load-csv", "--huser", HUSER, "--master", "local[2]",
                      f"hdfs://namenode:8020/tmp/excerpt/{name}")
    # The paper's per-flow model: this module is about the long-running YARN application, its
    # restart and latency. The host-context model's stream = batch equality is a unit test
    # (tests/unit/test_stream.py); on this cluster its first batch (the excerpt's 10-day backlog)
    # once timed out a broadcast at 300 s before the stream read only its days' partitions in one
    # pass, and that fix has not run on the cluster yet (issue 23 measures the stream at load).
    spot_cluster.exec("ml-client", "spot-ae", "train", "--day", TRAIN_DAY, "--huser", HUSER, "--master", "local[2]",
                      "--epochs", "2", "--model", "ae")
    return spot_cluster.hdfs("-cat", "/user/spot/flow/models/LATEST").strip()


def test_the_stream_is_a_long_running_yarn_application(spot_cluster):
    app = wait_for("the spot-ae-stream YARN application", lambda: stream_app(spot_cluster), 300)
    assert app["user"] == "spot" and app["applicationType"] == "SPARK"


def test_replayed_flows_are_scored_by_the_stream_and_shown_by_the_oa(spot_cluster, model_version, data_dir, tmp_path):
    # The backlog (the excerpt day loaded before the model existed) is scored once a model exists.
    wait_for("the stream to score the excerpt day", lambda: day_rows(spot_cluster, TRAIN_DAY)[1] > 0, 600, 5)

    jar = oa_login(spot_cluster)
    n, sent_at, day = replay_today(spot_cluster, data_dir, tmp_path, 2000, "a")
    page = wait_for("the replayed day's suspicious flows in the OA",
                    lambda: (p := oa_suspicious(spot_cluster, jar, day)) and p["total"] > 0 and p, 600, 1)
    seen_at = time.time()
    rot = rotations_after(spot_cluster, sent_at)
    assert {r["model_version"] for r in page["rows"]} == {model_version}
    scores = [r["score"] for r in page["rows"]]
    assert scores == sorted(scores, reverse=True)
    landed, scored = wait_for("every landed flow scored", lambda: settled(spot_cluster, day), 600, 5)
    first_rotation = min(rot) if rot else sent_at
    print(f"\nstream: {n} flows replayed, {landed} landed, {scored} scored; nfcapd rotation -> first suspicious flow in the OA API: "
          f"{seen_at - first_rotation:.1f} s (rotation every 10 s, trigger every 10 s; machine shared)")

    # Kill the driver mid-stream (compose restarts the container), replay more meanwhile.
    before = {a["id"] for a in yarn_apps(spot_cluster)}
    n2, _, day2 = replay_today(spot_cluster, data_dir, tmp_path, 3000, "b")
    spot_cluster.exec("stream", "pkill", "-KILL", "-f", "spot-ae stream", check=False)
    wait_for("a new spot-ae-stream application after the kill", lambda: stream_app(spot_cluster, before), 600, 5)
    # Exactly once across the kill: the stream's rows of the day equal the table's, and stay so.
    landed2, scored2 = wait_for("the replays scored after the restart", lambda: settled(spot_cluster, day2, 25), 900, 5)
    assert landed2 >= (landed if day2 == day else 0) + 0.9 * n2, (landed2, n2)
    print(f"stream: killed mid-stream and restarted: {landed2} flows of {day2} in the table, {scored2} scored")

    batches = [b for b in log_batches(spot_cluster.compose.execute("logs --no-color stream").decode(errors="replace"))
               if b[0] > 0]
    for label, sel in (("all micro-batches", batches), ("warm (not an application's first batch)", [b for b in batches if not b[2]])):
        if sel:
            flows, secs = sum(b[0] for b in sel), sum(b[1] for b in sel)
            print(f"stream: throughput, {label}: {flows / secs:.0f} flows/s ({flows} flows in {len(sel)} batches, "
                  f"{secs:.1f} s of batch time; 1 executor, machine shared)")
