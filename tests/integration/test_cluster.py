"""The compose cluster end to end: healthy HDFS and YARN, data crossing containers through HDFS,
Spark on YARN, and the AE job scoring a CIC-IDS2018 excerpt day into Spot's layout on HDFS."""
from __future__ import annotations

import csv
import io
import json
import re
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spot_ae_job.schema import RESULT_COLUMNS

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
HUSER = "hdfs://namenode:8020/user/spot"
EXCERPT = "cicids2018/aegmm__toy_dataset.csv"  # real CICFlowMeter rows with IPs and timestamps
DAY = "20180216"


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=20) as r:
        return json.load(r)


def yarn_apps(cluster) -> list[dict]:
    apps = get_json(cluster.url("resourcemanager", 8088, "/ws/v1/cluster/apps"))["apps"]
    return (apps or {}).get("app", [])


def test_hdfs_has_left_safe_mode_with_both_datanodes_live(spot_cluster):
    out = spot_cluster.exec("ml-client", "hdfs", "dfsadmin", "-safemode", "get").stdout.decode()
    assert "Safe mode is OFF" in out
    beans = get_json(spot_cluster.url("namenode", 9870, "/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"))
    live = json.loads(beans["beans"][0]["LiveNodes"])
    assert sorted(name.split(":")[0] for name in live) == ["datanode1", "datanode2"]


def test_yarn_has_a_running_nodemanager(spot_cluster):
    metrics = get_json(spot_cluster.url("resourcemanager", 8088, "/ws/v1/cluster/metrics"))["clusterMetrics"]
    assert metrics["activeNodes"] >= 1
    nodes = spot_cluster.exec("ml-client", "yarn", "node", "-list").stdout.decode()
    assert "nodemanager" in nodes and "RUNNING" in nodes


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


@pytest.fixture(scope="module")
def excerpt_loaded(spot_cluster, data_dir):
    """The CIC-IDS2018 excerpt in the flow table, the way `cluster.sh load-csv` does it:
    CSV to HDFS, then `spot-ae load-csv` on YARN."""
    assert (data_dir / EXCERPT).is_file()
    spot_cluster.hdfs("-mkdir", "-p", "/tmp/excerpt")
    spot_cluster.hdfs("-put", "-f", f"/input/{EXCERPT}", "/tmp/excerpt/")
    name = EXCERPT.rsplit("/", 1)[1]
    spot_cluster.exec("ml-client", "spot-ae", "load-csv", "--huser", HUSER, "--master", "yarn",
                      f"hdfs://namenode:8020/tmp/excerpt/{name}")
    return data_dir / EXCERPT


@pytest.fixture(scope="module")
def scored_day(spot_cluster, excerpt_loaded) -> dict:
    """`spot-ae ml-ops DAY flow` on YARN, once; returns run.json and the YARN apps it started."""
    before = {a["id"] for a in yarn_apps(spot_cluster)}
    spot_cluster.exec("ml-client", "spot-ae", "ml-ops", DAY, "flow", "--huser", HUSER,
                      "--master", "yarn", "--epochs", "2")
    ran = [a for a in yarn_apps(spot_cluster) if a["id"] not in before]
    run = json.loads(spot_cluster.hdfs("-cat", f"/user/spot/flow/scored_results/{DAY}/run.json"))
    return {"run": run, "apps": ran}


def test_the_ae_job_scores_an_excerpt_day_on_yarn_into_spots_layout(spot_cluster, scored_day):
    ran, run = scored_day["apps"], scored_day["run"]
    assert ran and all(a["finalStatus"] == "SUCCEEDED" for a in ran), ran
    assert (run["day"], run["model"], run["higher_is_suspicious"]) == (DAY, "ae", True)
    assert run["flows_scored"] > 0

    out = f"/user/spot/flow/scored_results/{DAY}"
    rows = list(csv.reader(io.StringIO(spot_cluster.hdfs("-cat", f"{out}/scores/flow_results.csv"))))
    assert rows[0] == RESULT_COLUMNS
    body = rows[1:]
    assert len(body) == run["suspicious"]
    scores = [float(r[RESULT_COLUMNS.index("score")]) for r in body]
    assert scores == sorted(scores, reverse=True)  # most suspicious first
    assert all(s > run["threshold"] for s in scores)
    # The scored day comes from that day's partitions only.
    assert {(r[1], r[2].lstrip("0"), r[3].lstrip("0")) for r in body} <= {("2018", "2", "16")}
    # The model was saved in Spot's tree and the per-flow scores are Parquet on HDFS.
    assert run["model_version"] in spot_cluster.hdfs("-ls", "/user/spot/flow/models")
    assert "_SUCCESS" in spot_cluster.hdfs("-ls", f"{out}/all_scores")


def needs_apps(cluster) -> None:
    if not cluster.apps:
        pytest.skip("ingest/OA services not started (SPOT_AE_TEST_APPS=0)")


def test_the_oa_serves_the_day_the_job_scored_from_hdfs_after_login(spot_cluster, scored_day):
    needs_apps(spot_cluster)
    base = spot_cluster.url("oa", 8080, "/api/v1")
    assert get_json(f"{base}/health")["status"] == "ok"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        get_json(f"{base}/days")
    assert anonymous.value.code == 401

    jar = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    user = spot_cluster.oa_user
    login = urllib.request.Request(f"{base}/login", method="POST", headers={"Content-Type": "application/json"},
                                   data=json.dumps({"username": user.name, "password": user.password}).encode())
    assert json.load(jar.open(login, timeout=20))["user"] == user.name
    assert DAY in [d["day"] for d in json.load(jar.open(f"{base}/days", timeout=20))["days"]]
    page = json.load(jar.open(f"{base}/days/{DAY}/suspicious?size=10", timeout=60))
    assert page["total"] == scored_day["run"]["suspicious"]


def test_netflow_sent_to_the_published_udp_port_lands_on_hdfs(spot_cluster, data_dir):
    """Real IPFIX over UDP -> nfcapd in the ingest container -> Parquet on HDFS; the totals
    the replayer reports sending are the totals the ingest summary reports landing."""
    needs_apps(spot_cluster)
    port = spot_cluster.udp_port("ingest", 2055)
    sent = subprocess.run([str(REPO / ".venv" / "bin" / "spot-ae"), "ingest", "replay-csv", "--to", f"127.0.0.1:{port}",
                           "--limit", "200", str(data_dir / EXCERPT)], capture_output=True, text=True, timeout=300)
    assert sent.returncode == 0, sent.stderr
    m = re.search(r"sent (\d+) flows .*ipkt (\d+), ibyt (\d+), opkt (\d+), obyt (\d+)", sent.stdout + sent.stderr)
    assert m, sent.stdout + sent.stderr
    flows, ipkt, ibyt, opkt, obyt = map(int, m.groups())

    def landed() -> tuple[int, int, int]:
        r = spot_cluster.exec("ml-client", "bash", "-c",
                              "hdfs dfs -cat '/user/spot/flow/ingest_summary/*/*/*/*.csv' 2>/dev/null || true")
        rows = [row for row in csv.DictReader(io.StringIO(r.stdout.decode())) if row.get("flows", "").isdigit()]
        return (sum(int(x["flows"]) for x in rows), sum(int(x["bytes"]) for x in rows),
                sum(int(x["packets"]) for x in rows))

    deadline = time.monotonic() + 240  # nfcapd rotates every 10 s here; HDFS writes follow
    while landed()[0] < flows and time.monotonic() < deadline:
        time.sleep(10)
    assert landed() == (flows, ibyt + obyt, ipkt + opkt)
