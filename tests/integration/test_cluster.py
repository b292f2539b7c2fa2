"""The compose cluster itself: healthy HDFS and YARN, data crossing containers through HDFS,
Spark on YARN with the job's venv, and the CSV loader on YARN. The data path (replay -> ingest ->
AE on YARN -> OA) and its fault cases are test_e2e.py."""
from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request

import pytest

pytestmark = pytest.mark.docker

HUSER = "hdfs://namenode:8020/user/spot"
EXCERPT = "cicids2018/aegmm__toy_dataset.csv"  # real CICFlowMeter rows with IPs and timestamps


def get_json(url: str, opener=None) -> dict:
    """A daemon's or the OA's JSON API (the other integration tests use these helpers too)."""
    with (opener or urllib.request.build_opener()).open(url, timeout=60) as r:
        return json.load(r)


def yarn_apps(cluster) -> list[dict]:
    apps = get_json(cluster.url("resourcemanager", 8088, "/ws/v1/cluster/apps"))["apps"]
    return (apps or {}).get("app", [])


def ended_apps_since(list_apps, before: set[str], timeout: float = 120) -> list[dict]:
    """The batch applications started since `before`, once YARN says each has ended. A client-mode
    driver exits before its ApplicationMaster unregisters, so for a few seconds the ResourceManager
    can still list a finished job as RUNNING. The long-running stream is not a batch job."""
    deadline = time.monotonic() + timeout
    while True:
        new = [a for a in list_apps() if a["id"] not in before and a["name"] != "spot-ae-stream"]
        if all(a["state"] in ("FINISHED", "FAILED", "KILLED") for a in new) or time.monotonic() > deadline:
            return new
        time.sleep(2)


def test_hdfs_has_left_safe_mode_with_both_datanodes_live(spot_cluster):
    out = spot_cluster.exec("ml-client", "hdfs", "dfsadmin", "-safemode", "get").stdout.decode()
    assert "Safe mode is OFF" in out
    beans = get_json(spot_cluster.url("namenode", 9870, "/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"))
    live = json.loads(beans["beans"][0]["LiveNodes"])
    assert sorted(name.split(":")[0] for name in live) == ["datanode1", "datanode2"]


def test_yarn_has_both_nodemanagers_running(spot_cluster):
    metrics = get_json(spot_cluster.url("resourcemanager", 8088, "/ws/v1/cluster/metrics"))["clusterMetrics"]
    assert metrics["activeNodes"] == 2
    nodes = spot_cluster.exec("ml-client", "yarn", "node", "-list").stdout.decode()
    running = {l.split()[0] for l in nodes.splitlines() if "RUNNING" in l}
    assert running == {"nodemanager:45454", "nodemanager2:45454"}, nodes  # fixed ports (config/hadoop.env)


def test_spots_layout_exists_on_hdfs_owned_by_spot(spot_cluster):
    listing = spot_cluster.hdfs("-ls", "/user/spot/flow")
    for d in ("hive", "labelled", "scored_results", "models", "ingest_summary"):
        line = next((l for l in listing.splitlines() if l.endswith(f"/user/spot/flow/{d}")), None)
        assert line is not None, f"{d} missing:\n{listing}"
        assert line.split()[2] == "spot", line


def test_a_file_written_from_one_container_is_read_back_from_another(spot_cluster):
    data = secrets.token_bytes(3 * 1024 * 1024)  # a few MB of random bytes, not a string echo
    path = f"/tmp/cross-{secrets.token_hex(4)}"
    spot_cluster.exec("datanode1", "hdfs", "dfs", "-put", "-", path, stdin=data)
    back = spot_cluster.exec("ml-client", "hdfs", "dfs", "-cat", path).stdout
    assert back == data
    # Two replicas, as configured: the block lives on both DataNodes.
    assert spot_cluster.hdfs("-stat", "%r", path).strip() == "2"
    spot_cluster.hdfs("-rm", "-skipTrash", path)


def test_a_spark_job_on_yarn_completes_with_the_jobs_venv_on_the_executors(spot_cluster):
    n = 5000
    out = f"hdfs://namenode:8020/tmp/smoke-{secrets.token_hex(4)}.parquet"
    r = spot_cluster.exec("ml-client", "timeout", "900", "spark-submit", "--master", "yarn",
                          "/opt/spot-ae/smoke_job.py", str(n), out)
    said = " ".join(l.removeprefix("smoke: ") for l in r.stdout.decode().splitlines() if l.startswith("smoke: "))
    facts = dict(kv.split("=", 1) for kv in said.split())
    assert facts["master"] == "yarn"
    assert int(facts["rows"]) == n
    assert int(facts["sum_sq"]) == sum(i * i for i in range(n))  # computed on the executors
    assert int(facts["flow_columns"]) > 0  # the executors imported spot_ae_job from the venv
    app = next(a for a in yarn_apps(spot_cluster) if a["id"] == facts["app"])
    assert (app["state"], app["finalStatus"], app["user"]) == ("FINISHED", "SUCCEEDED", "spot")
    # The event log reached HDFS for the history server.
    assert facts["app"] in spot_cluster.hdfs("-ls", "/spark-history")


def test_load_csv_on_yarn_puts_an_excerpt_in_a_flow_table_with_its_labels_apart(spot_cluster, data_dir):
    """`cluster.sh load-csv`'s path: the CSV on HDFS, `spot-ae load-csv` on YARN. Into a root of
    its own, so the flow table the end-to-end harness fills by replay (test_e2e.py) stays exact."""
    assert (data_dir / EXCERPT).is_file()
    root = f"/tmp/loadcsv-{secrets.token_hex(4)}"
    name = EXCERPT.rsplit("/", 1)[1]
    spot_cluster.hdfs("-mkdir", "-p", f"{root}/in")
    spot_cluster.hdfs("-put", "-f", f"/input/{EXCERPT}", f"{root}/in/")
    r = spot_cluster.exec("ml-client", "spot-ae", "load-csv", "--huser", f"hdfs://namenode:8020{root}/spot",
                          "--master", "yarn", f"hdfs://namenode:8020{root}/in/{name}")
    said = r.stdout.decode() + r.stderr.decode()
    assert re.search(r": 5000 flows -> \d+ partitions of ", said), said  # every row of the excerpt
    for d in ("hive", "labelled"):
        assert "/d=16/h=" in spot_cluster.hdfs("-ls", "-R", f"{root}/spot/flow/{d}/y=2018/m=2/d=16")
    spot_cluster.hdfs("-rm", "-r", "-skipTrash", root)
