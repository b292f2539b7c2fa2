"""Live path: real exporter packets -> nfcapd -> ingest -> HDFS, checked against nfdump's decode."""
from __future__ import annotations

import io
import re
import socket
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spot_ae_job.ingest.collector import Collector
from spot_ae_job.ingest.nfdump import decode_file
from spot_ae_job.ingest.replay import replay_csv, replay_datagrams
from spot_ae_job.ingest.watcher import CLOSED_NFCAPD, StoreConfig, Watcher

from tests.unit.test_ingest_hdfs import table_files

pytest_plugins = ["tests.hdfs_local"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def collect(spool: Path, send) -> list[Path]:
    """Run a real nfcapd, let `send(port)` export to it, stop it: the closed files it wrote."""
    port = free_udp_port()
    with Collector(spool / "nfcapd", f"127.0.0.1:{port}", interval=60):
        send(port)
        time.sleep(1.0)  # let nfcapd drain its socket before SIGTERM closes the file
    return sorted(p for p in (spool / "nfcapd").iterdir() if CLOSED_NFCAPD.match(p.name))


def landed(hdfs_local, huser) -> pa.Table:
    files = table_files(hdfs_local.client(), huser)
    return pa.concat_tables([pq.read_table(io.BytesIO(b)) for b in files.values()]) if files else None


@pytest.mark.parametrize("version", [10, 9])
def test_replayed_cicids_rows_arrive_on_hdfs_as_sent(hdfs_local, hdfs_huser, data_dir, tmp_path, version):
    csv_file = data_dir / "cicflowmeter" / "2018-02-02_Flow.csv"  # real CICFlowMeter rows with IPs and times
    sent = {}
    closed = collect(tmp_path, lambda port: sent.update(stats=replay_csv([str(csv_file)], "127.0.0.1", port, version)))
    stats = sent["stats"]
    assert closed and stats.sent_flows > 900
    ref = [decode_file(f) for f in closed]  # nfdump on the collector's files: the reference
    nf_flows = sum(d.nfdump_flows for d in ref)
    assert nf_flows == stats.sent_flows  # nothing lost on the wire

    w = Watcher(StoreConfig(hdfs_huser, hdfs_local.http_url), tmp_path, workers=2)
    assert w.run(until_idle=True)["ingested"] == len(closed)
    t = landed(hdfs_local, hdfs_huser)
    rejected = sum(d.rejects.num_rows for d in ref)
    assert t.num_rows + rejected == nf_flows
    want = pa.concat_tables([d.flows for d in ref])
    for col in ("ipkt", "ibyt", "opkt", "obyt"):
        assert pa.compute.sum(t[col]).as_py() == pa.compute.sum(want[col]).as_py(), col
    if rejected == 0:  # and the totals are those of the CSV rows that went in
        assert [pa.compute.sum(t[c]).as_py() for c in ("ipkt", "ibyt", "opkt", "obyt")] == \
            [stats.ipkt, stats.ibyt, stats.opkt, stats.obyt]
    assert set(t["treceived"].to_pylist()) and min(t["treceived"].to_pylist()).startswith("2018-02-02")


def _exporter_groups(folder: Path) -> list[list[Path]]:
    """logstash-codec-netflow samples per exporter, template files first."""
    groups: dict[str, list[Path]] = {}
    for f in sorted(folder.glob("*.dat")):
        key = re.split(r"_(?:tpl|data|opttpl|tpldata|options)", f.stem)[0]
        groups.setdefault(key, []).append(f)
    return [sorted(g, key=lambda p: (0 if "tpl" in p.name and "data" not in p.name else 1, p.name))
            for _, g in sorted(groups.items())]


def test_real_exporter_samples_decode_as_nfdump_decodes_them(hdfs_local, hdfs_huser, data_dir, tmp_path):
    groups = _exporter_groups(data_dir / "netflow" / "logstash-codec-netflow")

    def send(port):
        for g in groups:
            replay_datagrams([str(p) for p in g], "127.0.0.1", port, rate=500)

    closed = collect(tmp_path, send)
    ref = [decode_file(f) for f in closed]
    nf_flows = sum(d.nfdump_flows for d in ref)
    assert nf_flows > 100  # most exporters decode to flows (data/README.md)
    w = Watcher(StoreConfig(hdfs_huser, hdfs_local.http_url), tmp_path, workers=2)
    w.run(until_idle=True)
    t = landed(hdfs_local, hdfs_huser)
    rows = t.num_rows if t is not None else 0
    rejected = sum(d.rejects.num_rows for d in ref)
    assert rows + rejected == nf_flows  # nothing lost, nothing invented
    reasons = {r for d in ref for r in d.rejects["reject_reason"].to_pylist()}
    assert any(r.startswith("timestamp before 2000") for r in reasons)  # relative-time exporters, kept aside
    # records with all-zero addresses (layer-2 / odd exporters) are kept exactly as nfdump shows them
    zero = sum(pa.compute.sum(pa.compute.equal(d.flows["sip"], "0.0.0.0")).as_py() or 0 for d in ref)
    assert (pa.compute.sum(pa.compute.equal(t["sip"], "0.0.0.0")).as_py() or 0) == zero
