"""nfcapd files -> Parquet on a real HDFS: exactly once, through crashes and NameNode outages."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from spot_ae_job.ingest import summary
from spot_ae_job.ingest.nfdump import ARROW_FLOW_SCHEMA, decode_file
from spot_ae_job.ingest.watcher import StoreConfig, Watcher, ingest_file
from spot_ae_job.schema import FLOW_SCHEMA, flow_table_location
from spot_ae_job.storage import WebHDFS, open_storage

pytest_plugins = ["tests.hdfs_local"]
REPO = Path(__file__).resolve().parents[2]


def table_files(client: WebHDFS, huser: str) -> dict[str, bytes]:
    """Every committed Parquet file of the flow table: {relative path: bytes}."""
    out = {}

    def walk(path, rel):
        for e in client.list(path):
            name = e["pathSuffix"]
            if e["type"] == "DIRECTORY":
                walk(f"{path}/{name}", f"{rel}{name}/")
            elif name.endswith(".parquet") and not name.startswith("."):
                out[rel + name] = client.read(f"{path}/{name}")
    root = WebHDFS.hdfs_path(flow_table_location(huser))
    if client.status(root):
        walk(root, "")
    return out


def rows_of(files: dict[str, bytes]) -> int:
    return sum(pq.read_table(io.BytesIO(b)).num_rows for b in files.values())


@pytest.fixture(scope="module")
def split_inputs(tmp_path_factory, data_dir):
    """Distinct real nfcapd files: the sample split by nfdump filters on source port."""
    d = tmp_path_factory.mktemp("split")
    bounds = [0, 80, 443, 1024, 20000, 40000, 50000, 60000, 65536]
    files = []
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        f = d / f"nfcapd.2023012518{i:02d}"
        subprocess.run(["nfdump", "-r", str(data_dir / "nfcapd" / "nfcapd.sample"), "-w", str(f),
                        f"src port >= {lo} and src port <= {hi - 1}"], check=True, capture_output=True)
        files.append(f)
    expected = sum(decode_file(f).flows.num_rows for f in files)
    return files, expected


def test_a_commit_into_a_new_directory_lands_whole_and_never_replaces_a_committed_name(hdfs_local, hdfs_huser):
    """put = CREATE a hidden temporary name (parents made on the way) + RENAME onto the final
    name: the rename refuses an existing name, so a second put changes nothing and leaves no
    temporary file behind."""
    store = open_storage(hdfs_huser, hdfs_local.http_url)
    uri = f"{hdfs_huser}/flow/hive/y=2023/m=1/d=25/h=18/nf-x.parquet"
    assert store.put(uri, b"first") is True
    assert store.put(uri, b"second") is False
    assert store.read(uri) == b"first"
    assert [e.name for e in store.list(f"{hdfs_huser}/flow/hive/y=2023/m=1/d=25/h=18")] == ["nf-x.parquet"]


def test_one_file_lands_in_its_hour_partition_with_the_flow_schema(hdfs_local, hdfs_huser, data_dir, spark):
    store = StoreConfig(hdfs_huser, hdfs_local.http_url).open()
    src = data_dir / "nfcapd" / "nfcapd.sample"
    want = decode_file(src)
    res = ingest_file(store, src)
    files = table_files(hdfs_local.client(), hdfs_huser)
    assert list(files) == [f"y=2023/m=1/d=25/h=18/{res.tag}.parquet"]
    t = pq.read_table(io.BytesIO(files[next(iter(files))]))
    assert t.schema.remove_metadata() == ARROW_FLOW_SCHEMA and t.equals(want.flows)
    # rejects are kept on HDFS, and the summary counts what landed
    rej = pq.read_table(io.BytesIO(hdfs_local.client().read(WebHDFS.hdfs_path(f"{hdfs_huser}/flow/quarantine/nfdump/{res.tag}.parquet"))))
    assert rej.num_rows == want.rejects.num_rows
    per_day, per_hour = summary.totals(summary.read_summary(store))
    assert per_day == {"2023-01-25": want.flows.num_rows} and per_hour == {("2023-01-25", 18): want.flows.num_rows}
    # Spark reads the table from hdfs:// with the one schema and discovers the partition
    df = spark.read.schema(FLOW_SCHEMA).parquet(flow_table_location(hdfs_huser))
    assert df.count() == want.flows.num_rows
    assert spark.read.parquet(flow_table_location(hdfs_huser)).select("y", "m", "d", "h").distinct().collect()[0].asDict() == \
        {"y": 2023, "m": 1, "d": 25, "h": 18}


def test_ingesting_the_same_file_again_changes_nothing(hdfs_local, hdfs_huser, data_dir):
    store = StoreConfig(hdfs_huser, hdfs_local.http_url).open()
    src = data_dir / "nfcapd" / "nfcapd.sample"
    first = ingest_file(store, src)
    before = table_files(hdfs_local.client(), hdfs_huser)
    again = ingest_file(store, src)
    assert (first.status, again.status) == ("ingested", "already-ingested")
    assert table_files(hdfs_local.client(), hdfs_huser) == before


def _watch_once(spool: Path, huser: str, webhdfs: str, workers: int = 1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "spot_ae_job", "ingest", "watch", "--once", "--no-collector", "--spool", str(spool),
         "--huser", huser, "--webhdfs", webhdfs, "--workers", str(workers)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_mid_batch_the_restart_neither_loses_nor_duplicates(hdfs_local, hdfs_huser, split_inputs, tmp_path):
    files, expected = split_inputs
    spool = tmp_path / "spool"
    (spool / "nfcapd").mkdir(parents=True)
    for f in files:
        (spool / "nfcapd" / f.name).write_bytes(f.read_bytes())
    client = hdfs_local.client()
    ledger = WebHDFS.hdfs_path(f"{hdfs_huser}/flow/ingest_state")
    proc = _watch_once(spool, hdfs_huser, hdfs_local.http_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (client.status(ledger) and len(client.list(ledger)) >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no clean shutdown: a crash mid-batch
    proc.wait()
    partial = rows_of(table_files(client, hdfs_huser))
    assert 0 < partial < expected, "the kill should land mid-batch"
    left = list((spool / "nfcapd").iterdir())
    assert left, "unfinished files stay in the spool"

    proc = _watch_once(spool, hdfs_huser, hdfs_local.http_url, workers=2)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    landed = table_files(client, hdfs_huser)
    assert rows_of(landed) == expected
    tags = [p.rsplit("/", 1)[1] for p in landed]
    assert len(tags) == len(set(tags)) == len(files)  # one file per input: nothing twice
    assert not list((spool / "nfcapd").iterdir()) and len(list((spool / "done").iterdir())) == len(files)


def test_namenode_down_for_a_while_means_waiting_not_losing(hdfs_local, hdfs_huser, split_inputs, tmp_path):
    files, expected = split_inputs
    spool = tmp_path / "spool"
    (spool / "nfcapd").mkdir(parents=True)
    for f in files:
        (spool / "nfcapd" / f.name).write_bytes(f.read_bytes())
    hdfs_local.stop_namenode()
    try:
        proc = _watch_once(spool, hdfs_huser, hdfs_local.http_url, workers=2)
        time.sleep(6)
        assert proc.poll() is None, "the watcher must wait for HDFS, not give up or drop files"
    finally:
        hdfs_local.start_namenode(wait=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "retry" in out
    assert rows_of(table_files(hdfs_local.client(), hdfs_huser)) == expected


def test_corrupt_and_truncated_files_are_quarantined_while_the_rest_flows(hdfs_local, hdfs_huser, data_dir, tmp_path, caplog):
    spool = tmp_path / "spool"
    w = Watcher(StoreConfig(hdfs_huser, hdfs_local.http_url), spool, workers=2)
    good = data_dir / "nfcapd" / "nfcapd.sample"
    (w.incoming / "nfcapd.202301251800").write_bytes((data_dir / "nfcapd" / "nfcapd-corrupt").read_bytes())
    (w.incoming / "nfcapd.202301251801").write_bytes(good.read_bytes()[:300_000])
    (w.incoming / "nfcapd.202301251802").write_bytes(b"garbage from a full disk")
    (w.incoming / "nfcapd.202301251803").write_bytes(good.read_bytes())
    (w.incoming / "nfcapd.current.4242").write_bytes(b"still being written")  # not closed: left alone
    with caplog.at_level("ERROR", logger="spot_ae.ingest"):
        stats = w.run(until_idle=True)
    assert stats["quarantined"] == 3 and stats["ingested"] == 1
    q = sorted(p.name for p in w.quarantine_dir.iterdir())
    assert q == sorted([f"nfcapd.20230125180{i}{s}" for i in range(3) for s in ("", ".reason")])
    assert "Corrupt data file" in (w.quarantine_dir / "nfcapd.202301251800.reason").read_text()
    assert "not an nfcapd file" in (w.quarantine_dir / "nfcapd.202301251802.reason").read_text()
    assert sum("QUARANTINED" in r.getMessage() for r in caplog.records) == 3
    assert rows_of(table_files(hdfs_local.client(), hdfs_huser)) == decode_file(good).flows.num_rows
    assert [p.name for p in w.incoming.iterdir()] == ["nfcapd.current.4242"]
