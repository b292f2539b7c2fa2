"""The OA over a REAL HDFS (NameNode + DataNode from tests/hdfs_local.py), reached via WebHDFS:
the same answers as from local files, and verdicts written to HDFS itself."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from urllib.parse import urlparse

import pytest

from spot_ae_job.oa.app import create_app
from spot_ae_job.schema import FEEDBACK_COLUMNS
from test_oa_api import DAY, PASSWORD, _config, _flows_from_excerpt, login, write_day

pytest_plugins = ["tests.hdfs_local"]


def _upload(client, local_root: Path, hdfs_root: str) -> None:
    for p in sorted(local_root.rglob("*")):
        if p.is_file():
            client.write(f"{hdfs_root}/{p.relative_to(local_root).as_posix()}", p.read_bytes())


@pytest.fixture()
def both(tmp_path, data_dir, hdfs_local, hdfs_huser):
    """The same day on local disk and on HDFS; an OA app on each."""
    local = tmp_path / "user" / "spot"
    write_day(local, _flows_from_excerpt(data_dir, DAY), DAY)
    hpath = urlparse(hdfs_huser).path
    _upload(hdfs_local.client(), local, hpath)
    apps = {}
    for name, huser, webhdfs in [("file", f"file://{local}", None), ("hdfs", hdfs_huser, hdfs_local.http_url)]:
        cfg = _config()
        cfg.huser, cfg.webhdfs = huser, webhdfs
        apps[name] = create_app(cfg)
    return apps, hdfs_local.client(), hpath


def test_hdfs_backend_gives_the_same_answers_as_local_files(both):
    apps, _, _ = both
    answers = {}
    for name, app in apps.items():
        c = app.test_client()
        login(c)
        top = c.get(f"/api/v1/days/{DAY}/suspicious?size=3").json["rows"][0]
        answers[name] = [
            c.get("/api/v1/days").json,
            c.get(f"/api/v1/days/{DAY}/suspicious?sort=ibyt&order=desc&size=20&page=2").json,
            c.get(f"/api/v1/days/{DAY}/connections?sip={top['sip']}&dip={top['dip']}").json,
            c.get(f"/api/v1/days/{DAY}/network?top=30").json,
            c.get(f"/api/v1/days/{DAY}/model").json,
        ]
    assert answers["hdfs"][1]["total"] > 0 and answers["hdfs"][2]["count"] > 0
    assert answers["hdfs"] == answers["file"]
    health = apps["hdfs"].test_client().get("/api/v1/health").json
    assert health["status"] == "ok" and health["storage"] == "webhdfs"


def test_verdicts_land_on_hdfs_in_spots_fields_and_replace_atomically(both):
    apps, client, hpath = both
    c = apps["hdfs"].test_client()
    token = login(c)
    rows = c.get(f"/api/v1/days/{DAY}/suspicious?size=5").json["rows"]
    for rank, sev in [(1, 3), (2, 1), (1, 2)]:
        assert c.post(f"/api/v1/days/{DAY}/feedback", json={"rank": rank, "sev": sev}, headers={"X-CSRF-Token": token}).status_code == 201
    fb_dir = f"{hpath}/flow/scored_results/{DAY}/feedback"
    assert [e["pathSuffix"] for e in client.list(fb_dir)] == ["ml_feedback.csv"]  # no temp or old files left
    stored = list(csv.DictReader(io.StringIO(client.read(f"{fb_dir}/ml_feedback.csv").decode())))
    assert list(stored[0]) == FEEDBACK_COLUMNS
    assert [(s["sev"], s["tstart"], s["srcIP"], s["dstIP"]) for s in stored] == [
        ("1", rows[1]["treceived"], rows[1]["sip"], rows[1]["dip"]),
        ("2", rows[0]["treceived"], rows[0]["sip"], rows[0]["dip"]),
    ]


def test_over_webhdfs_a_directory_for_a_file_is_named_without_the_hdfs_path(both):
    apps, client, hpath = both
    rel = f"{hpath}/flow/scored_results/{DAY}/scores/flow_results.csv"
    client.delete(rel)
    client.mkdirs(rel)
    c = apps["hdfs"].test_client()
    login(c)
    r = c.get(f"/api/v1/days/{DAY}/suspicious")
    assert r.status_code == 500 and r.json["error"] == "Malformed Results", r.json
    assert hpath not in r.get_data(as_text=True)


def test_over_webhdfs_a_missing_results_root_is_not_healthy(hdfs_local, hdfs_huser):
    cfg = _config()
    cfg.huser, cfg.webhdfs = hdfs_huser + "/never-made", hdfs_local.http_url
    r = create_app(cfg).test_client().get("/api/v1/health")
    assert r.status_code == 503 and r.json["status"] == "degraded"


def test_hdfs_down_is_a_503_with_a_message_not_a_crash(both, hdfs_local):
    apps, _, _ = both
    c = apps["hdfs"].test_client()
    login(c)
    hdfs_local.stop_namenode()
    try:
        r = c.get("/api/v1/days")
        assert r.status_code == 503 and "WebHDFS" in r.json["message"]
        assert c.get("/api/v1/health").status_code == 503
    finally:
        hdfs_local.start_namenode(wait=True)

