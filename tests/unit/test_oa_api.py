"""The OA's JSON API, through Flask's test client and through a real server on a loopback port.

The day of results is built in Spot's documented layout (SPEC §2, the contracts in the brief)
from real CIC-IDS2018 excerpt rows; the OA computes no scores, so each row gets a score here and
the expected answers are computed independently from the files on disk (csv module, pandas).
"""
from __future__ import annotations

import csv
import http.cookiejar
import io
import json
import math
import re
import shutil
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from werkzeug.security import generate_password_hash
from werkzeug.serving import make_server

from spot_ae_job.oa.app import create_app
from spot_ae_job.oa.config import OAConfig, User
from spot_ae_job.oa.results import FLOW_ARROW_TYPES
from spot_ae_job.schema import FEEDBACK_COLUMNS, FLOW_COLUMNS, RESULT_COLUMNS

DAY = "20180216"
PASSWORD = "correct horse battery"
VIEWER_PASSWORD = "viewer password 1"


def _flows_from_excerpt(data_dir: Path, day: str) -> pd.DataFrame:
    """Real rows of one day of the excerpt, mapped to the flow table's fields (Fwd -> i*, Bwd -> o*)."""
    raw = pd.read_csv(data_dir / "cicids2018" / "aegmm__toy_dataset.csv")
    raw = raw[raw["Timestamp"].str.startswith(f"{day[:4]}-{day[4:6]}-{day[6:]}")].reset_index(drop=True)
    ts = pd.to_datetime(raw["Timestamp"]).dt.floor("s")
    df = pd.DataFrame({c: pd.Series([None] * len(raw)) for c in FLOW_COLUMNS})
    df["treceived"] = ts.dt.strftime("%Y-%m-%d %H:%M:%S")
    df["unix_tstamp"] = ts.astype("int64") // 10**9
    for c, part in [("tryear", "year"), ("trmonth", "month"), ("trday", "day"), ("trhour", "hour"), ("trminute", "minute"), ("trsec", "second")]:
        df[c] = getattr(ts.dt, part)
    df["tdur"] = raw["Flow Duration"] / 1e6
    df["sip"], df["dip"] = raw["Src IP"], raw["Dst IP"]
    df["sport"], df["dport"] = raw["Src Port"], raw["Dst Port"]
    df["proto"] = raw["Protocol"].map({6: "TCP", 17: "UDP", 0: "HOPOPT", 1: "ICMP"})
    df["flag"] = ""
    df["ipkt"], df["ibyt"] = raw["Total Fwd Packet"], raw["Total Length of Fwd Packet"]
    df["opkt"], df["obyt"] = raw["Total Bwd packets"], raw["Total Length of Bwd Packet"]
    # a score the OA only displays: attacks high, then by volume, with no ties
    vol = np.log10(2 + df["ibyt"] + df["obyt"])
    df["score"] = (raw["Label"] != "BENIGN") * 1.0 + vol / 10 + np.arange(len(df)) * 1e-9
    return df


def write_day(huser: Path, df: pd.DataFrame, day: str) -> dict:
    """Spot's result layout for one day: scores/flow_results.csv, all_scores/ (2 parts), run.json."""
    out = huser / "flow" / "scored_results" / day
    (out / "scores").mkdir(parents=True)
    (out / "all_scores").mkdir()
    threshold = float(np.percentile(df["score"], 95))
    df = df.copy()
    df["suspicious"] = df["score"] > threshold
    order = df[df["suspicious"]].sort_values("score", ascending=False).index
    df["rank"] = pd.Series(pd.NA, index=df.index, dtype="Int32")
    df.loc[order, "rank"] = np.arange(1, len(order) + 1)
    fields = [pa.field(c, FLOW_ARROW_TYPES[c]) for c in FLOW_COLUMNS] + [
        pa.field("score", pa.float64()), pa.field("suspicious", pa.bool_()), pa.field("rank", pa.int32())]
    table = pa.Table.from_pandas(df[FLOW_COLUMNS + ["score", "suspicious", "rank"]], schema=pa.schema(fields), preserve_index=False)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), out / "all_scores" / "part-00000-x.snappy.parquet")
    pq.write_table(table.slice(half), out / "all_scores" / "part-00001-x.snappy.parquet")
    (out / "all_scores" / "_SUCCESS").write_text("")
    df.loc[order, RESULT_COLUMNS].to_csv(out / "scores" / "flow_results.csv", index=False)
    counts, edges = np.histogram(df["score"], bins=20)
    run = {
        "day": day, "model": "ae", "model_version": "ae-test", "threshold": threshold, "threshold_mode": "p95",
        "higher_is_suspicious": True, "flows_scored": len(df), "suspicious": int(df["suspicious"].sum()),
        "rejected": 0, "training_day": day, "created": "2026-11-23T00:00:00+00:00",
        "score_histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }
    (out / "run.json").write_text(json.dumps(run))
    return run


@pytest.fixture(scope="module")
def built_huser(tmp_path_factory, data_dir) -> Path:
    root = tmp_path_factory.mktemp("oa") / "user" / "spot"
    write_day(root, _flows_from_excerpt(data_dir, DAY), DAY)
    # things that are not days must not show up as days
    for junk in ["notaday", "20181340", "2018021"]:
        (root / "flow" / "scored_results" / junk / "scores").mkdir(parents=True)
    (root / "flow" / "scored_results" / "20180215").mkdir()  # a day folder without results yet
    return root


@pytest.fixture()
def huser(built_huser, tmp_path) -> Path:
    """A fresh copy per test: tests write feedback."""
    root = tmp_path / "user" / "spot"
    shutil.copytree(built_huser, root)
    return root


# Real werkzeug hashes, made once; pbkdf2 with few rounds keeps the many logins of the tests quick.
_HASHES = {}


def _config(**kw) -> OAConfig:
    if not _HASHES:
        _HASHES["alice"] = generate_password_hash(PASSWORD, "pbkdf2:sha256:1000")
        _HASHES["victor"] = generate_password_hash(VIEWER_PASSWORD, "pbkdf2:sha256:1000")
    cfg = OAConfig(huser="", secret_key="x" * 32, **kw)
    cfg.users = {"alice": User("alice", _HASHES["alice"], "analyst"), "victor": User("victor", _HASHES["victor"], "viewer")}
    return cfg


@pytest.fixture()
def app(huser):
    cfg = _config()
    cfg.huser = f"file://{huser}"
    return create_app(cfg)


@pytest.fixture()
def client(app):
    return app.test_client()


def login(client, user="alice", password=PASSWORD) -> str:
    r = client.post("/api/v1/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.json
    return r.json["csrf_token"]


def results_csv(huser: Path, day: str = DAY) -> list[dict]:
    with open(huser / "flow" / "scored_results" / day / "scores" / "flow_results.csv", newline="") as f:
        return list(csv.DictReader(f))


def feedback_rows(huser: Path, day: str = DAY) -> list[dict]:
    p = huser / "flow" / "scored_results" / day / "feedback" / "ml_feedback.csv"
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


API_GETS = [
    "/api/v1/days", f"/api/v1/days/{DAY}/suspicious", f"/api/v1/days/{DAY}/connections?sip=1.2.3.4&dip=5.6.7.8",
    f"/api/v1/days/{DAY}/network", f"/api/v1/days/{DAY}/model", f"/api/v1/days/{DAY}/feedback", "/api/v1/ingest/summary",
    "/api/v1/session",
]


# -- login and authorization -------------------------------------------------------------------
def test_health_needs_no_login_and_names_the_storage_kind_but_not_its_path(client, huser):
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json["status"] == "ok" and r.json["storage"] == "file"
    assert str(huser) not in r.get_data(as_text=True)


@pytest.mark.parametrize("path", API_GETS)
def test_every_api_read_refuses_anonymous_callers_with_json_401(client, path):
    r = client.get(path)
    assert r.status_code == 401
    assert r.is_json and r.json["status"] == 401


@pytest.mark.parametrize("path", ["/", f"/days/{DAY}", f"/days/{DAY}/network", f"/days/{DAY}/model", "/ingest"])
def test_pages_send_anonymous_users_to_the_login_page(client, path):
    r = client.get(path)
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


def test_wrong_password_is_refused_and_unknown_user_looks_the_same(client):
    a = client.post("/api/v1/login", json={"username": "alice", "password": "nope"})
    b = client.post("/api/v1/login", json={"username": "mallory", "password": "nope"})
    assert a.status_code == b.status_code == 401
    assert a.json["message"] == b.json["message"]
    assert client.get("/api/v1/days").status_code == 401


def test_repeated_failed_logins_are_throttled(client):
    codes = [client.post("/api/v1/login", json={"username": "alice", "password": f"guess{i}"}).status_code for i in range(12)]
    assert codes[:10] == [401] * 10 and codes[10:] == [429, 429]


def test_login_sets_an_httponly_samesite_session_cookie(client):
    r = client.post("/api/v1/login", json={"username": "alice", "password": PASSWORD})
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert r.json["role"] == "analyst"


def test_responses_carry_a_strict_content_security_policy(client):
    login(client)
    h = client.get(f"/days/{DAY}").headers
    assert "script-src 'self'" in h["Content-Security-Policy"] and h["X-Frame-Options"] == "DENY"


def test_form_login_without_its_csrf_token_is_refused(client):
    r = client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403


def test_form_login_redirects_only_to_same_site_paths(client):
    client.get("/login")
    with client.session_transaction() as s:
        token = s["csrf"]
    r = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "//evil.example/x"})
    assert r.status_code == 302 and r.headers["Location"] == "/"


def test_a_viewer_can_read_but_not_record_verdicts(client, huser):
    token = login(client, "victor", VIEWER_PASSWORD)
    assert client.get(f"/api/v1/days/{DAY}/suspicious").status_code == 200
    r = client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}, headers={"X-CSRF-Token": token})
    assert r.status_code == 403
    assert not (huser / "flow" / "scored_results" / DAY / "feedback").exists()


# -- days, suspicious connects -----------------------------------------------------------------
def test_days_lists_only_real_days_with_results(client):
    login(client)
    days = client.get("/api/v1/days").json["days"]
    assert [d["day"] for d in days] == [DAY]


def test_suspicious_default_order_is_the_files_order_with_ranks(client, huser):
    login(client)
    want = results_csv(huser)
    got = client.get(f"/api/v1/days/{DAY}/suspicious?size=500").json
    assert got["total"] == len(want) > 20
    assert [r["rank"] for r in got["rows"]] == list(range(1, len(want) + 1))
    assert [(r["sip"], r["dip"], r["treceived"]) for r in got["rows"]] == [(w["sip"], w["dip"], w["treceived"]) for w in want]
    assert [r["score"] for r in got["rows"]] == [float(w["score"]) for w in want]


def _all_pages(client, query: str, size: int = 7) -> list[dict]:
    rows, page = [], 1
    while True:
        d = client.get(f"/api/v1/days/{DAY}/suspicious?{query}&size={size}&page={page}").json
        rows += d["rows"]
        if page >= d["pages"]:
            return rows
        page += 1


@pytest.mark.parametrize("key,numeric", [("score", True), ("ibyt", True), ("dport", True), ("sip", False), ("treceived", False), ("tdur", True)])
@pytest.mark.parametrize("order", ["asc", "desc"])
def test_sorting_pages_through_every_row_once_in_order(client, huser, key, numeric, order):
    login(client)
    want = results_csv(huser)
    conv = float if numeric else str
    rows = _all_pages(client, f"sort={key}&order={order}")
    assert sorted(r["rank"] for r in rows) == list(range(1, len(want) + 1))
    vals = [r[key] for r in rows]
    assert vals == sorted((conv(w[key]) for w in want), reverse=(order == "desc"))


def test_filters_match_a_brute_force_scan_of_the_file(client, huser):
    login(client)
    want = results_csv(huser)
    ip = want[0]["dip"]
    port = want[3]["dport"]
    expect_ip = [i + 1 for i, w in enumerate(want) if ip in (w["sip"], w["dip"])]
    expect_port = [i + 1 for i, w in enumerate(want) if port in (w["sport"], w["dport"])]
    expect_both = [i + 1 for i, w in enumerate(want) if ip in (w["sip"], w["dip"]) and port in (w["sport"], w["dport"]) and w["proto"] == "TCP"]
    assert [r["rank"] for r in _all_pages(client, f"ip={ip}")] == expect_ip
    assert [r["rank"] for r in _all_pages(client, f"port={port}")] == expect_port
    assert [r["rank"] for r in _all_pages(client, f"ip={ip}&port={port}&proto=tcp")] == expect_both
    floor = float(want[10]["score"])
    assert [r["rank"] for r in _all_pages(client, f"min_score={floor}")] == [i + 1 for i, w in enumerate(want) if float(w["score"]) >= floor]
    assert client.get(f"/api/v1/days/{DAY}/suspicious?ip=203.0.113.9").json["total"] == 0


@pytest.mark.parametrize("query,fragment", [
    ("sort=password", "sort must be one of"),
    ("sort=rank;drop", "sort must be one of"),
    ("order=up", "order must be one of"),
    ("size=501", "size must be in 1..500"),
    ("size=0", "size must be in 1..500"),
    ("page=0", "page must be in"),
    ("page=-1", "page must be an integer"),
    ("ip=999.1.1.1", "ip must be an IPv4 or IPv6 address"),
    ("ip=10.0.0.0/8", "ip must be an IPv4 or IPv6 address"),
    ("port=70000", "port must be in 0..65535"),
    ("port=80a", "port must be an integer"),
    ("proto=TCP%27%20OR%201=1", "proto must be a protocol name"),
    ("min_score=nan", "min_score must be a finite number"),
    ("colour=red", "unknown parameter(s): colour"),
])
def test_bad_query_parameters_get_a_400_that_says_why(client, query, fragment):
    login(client)
    r = client.get(f"/api/v1/days/{DAY}/suspicious?{query}")
    assert r.status_code == 400 and r.is_json
    assert fragment in r.json["message"]


@pytest.mark.parametrize("bad", ["2018-02-16", "201802161", "2018021", "20180230", "20181301", "abcdefgh", "00000000"])
def test_malformed_dates_are_400(client, bad):
    login(client)
    for path in [f"/api/v1/days/{bad}/suspicious", f"/api/v1/days/{bad}/model", f"/api/v1/days/{bad}/network"]:
        r = client.get(path)
        assert r.status_code == 400, path
        assert "day" in r.json["message"]


def test_unknown_days_are_404_even_with_a_folder_but_no_results(client):
    login(client)
    for day in ["20190101", "20180215"]:
        r = client.get(f"/api/v1/days/{day}/suspicious")
        assert r.status_code == 404 and r.json["message"] == f"no scored results for day {day}"
    assert client.get("/days/20190101").status_code == 404


@pytest.mark.parametrize("path", [
    "/api/v1/days/..%2F..%2F..%2Fetc/model", "/api/v1/days/%2e%2e/model", "/api/v1/days/../../etc/passwd",
    "/api/v1/days/20180216%2F..%2F..%2F/model", "/api/v1/days/....//model",
])
def test_path_traversal_attempts_never_reach_storage(client, path):
    login(client)
    r = client.get(path, follow_redirects=True)  # werkzeug merges '//' with a redirect first
    assert r.status_code in (400, 404)
    assert b"root:" not in r.data


def test_connection_page_rejects_non_ip_parameters(client):
    login(client)
    r = client.get(f"/api/v1/days/{DAY}/connections?sip=../../etc/passwd&dip=1.2.3.4")
    assert r.status_code == 400 and "sip must be" in r.json["message"]
    assert client.get(f"/api/v1/days/{DAY}/connections?sip=1.2.3.4").status_code == 400


# -- details, network, model -------------------------------------------------------------------
def test_connection_details_are_every_flow_between_the_two_ips_both_ways(client, huser):
    login(client)
    top = results_csv(huser)[0]
    all_scores = pd.read_parquet(huser / "flow" / "scored_results" / DAY / "all_scores")
    pair = {top["sip"], top["dip"]}
    expect = all_scores[all_scores["sip"].isin(pair) & all_scores["dip"].isin(pair) & (all_scores["sip"] != all_scores["dip"])]
    d = client.get(f"/api/v1/days/{DAY}/connections?sip={top['sip']}&dip={top['dip']}").json
    assert d["count"] == len(expect) >= 1
    assert sorted((f["treceived"], f["sip"], f["sport"]) for f in d["flows"]) == sorted(
        zip(expect["treceived"], expect["sip"], expect["sport"].astype(int)))
    assert sum(f["suspicious"] for f in d["flows"]) == int(expect["suspicious"].sum())
    assert any(f["rank"] == 1 for f in d["flows"])


def test_network_has_the_ips_and_pairs_of_the_top_flows_weighted_by_best_score(client, huser):
    login(client)
    top = results_csv(huser)[:15]
    d = client.get(f"/api/v1/days/{DAY}/network?top=15").json
    assert {n["id"] for n in d["nodes"]} == {w["sip"] for w in top} | {w["dip"] for w in top}
    best: dict = {}
    for w in top:
        k = (w["sip"], w["dip"])
        best[k] = max(best.get(k, -math.inf), float(w["score"]))
    assert {(e["source"], e["target"]): e["score"] for e in d["edges"]} == best
    assert client.get(f"/api/v1/days/{DAY}/network?top=100000").status_code == 400


def test_model_panel_reports_run_json(client, huser):
    login(client)
    run = json.loads((huser / "flow" / "scored_results" / DAY / "run.json").read_text())
    m = client.get(f"/api/v1/days/{DAY}/model").json
    for k in ["threshold", "model", "training_day", "flows_scored", "suspicious", "score_histogram"]:
        assert m[k] == run[k]


def test_explanation_columns_after_spots_are_read_and_a_drifted_day_says_so(client, huser):
    """ml-ops appends expl1_* .. expl3_* after Spot's columns and records drift in run.json."""
    out = huser / "flow" / "scored_results" / DAY
    df = pd.read_csv(out / "scores" / "flow_results.csv")
    for i in (1, 2, 3):
        df[f"expl{i}_feature"] = ["tdur", "ibyt", "dport"][i - 1]
        df[f"expl{i}_value"] = df["tdur"] if i == 1 else 1.5
        df[f"expl{i}_benign_median"] = 0.25
        df[f"expl{i}_error"] = 4.0 - i
    df.to_csv(out / "scores" / "flow_results.csv", index=False)
    run = json.loads((out / "run.json").read_text())
    run["drift"] = {"score_psi": 0.41, "feature_psi": {"dur_log": 0.5}, "largest_feature": "dur_log", "limit": 0.25, "drifted": True}
    (out / "run.json").write_text(json.dumps(run))
    login(client)
    rows = client.get(f"/api/v1/days/{DAY}/suspicious?size=500").json["rows"]
    assert len(rows) == len(df) and [r["score"] for r in rows] == df["score"].tolist()
    assert rows[0]["expl1_feature"] == "tdur" and rows[0]["expl1_value"] == df["tdur"][0] and rows[0]["expl3_error"] == 1.0
    m = client.get(f"/api/v1/days/{DAY}/model").json
    assert m["drift"]["drifted"] is True and m["drift"]["score_psi"] == 0.41


def test_a_results_file_whose_first_columns_are_not_spots_is_refused(client, huser):
    out = huser / "flow" / "scored_results" / DAY / "scores" / "flow_results.csv"
    df = pd.read_csv(out)
    df.insert(0, "extra", 1)
    df.to_csv(out, index=False)
    login(client)
    r = client.get(f"/api/v1/days/{DAY}/suspicious")
    assert r.status_code >= 400 and "result columns" in r.get_data(as_text=True)


# -- feedback ----------------------------------------------------------------------------------
def test_feedback_is_stored_in_spots_fields_from_the_results_row(client, huser):
    token = login(client)
    r = client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 3, "sev": 3}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201
    row = results_csv(huser)[2]
    stored = feedback_rows(huser)
    assert list(stored[0].keys()) == FEEDBACK_COLUMNS
    assert stored == [{"sev": "3", "tstart": row["treceived"], "srcIP": row["sip"], "dstIP": row["dip"], "sport": row["sport"],
                       "dport": row["dport"], "ipkt": row["ipkt"], "ibyt": row["ibyt"]}]
    # a new verdict on the same flow replaces the old one; another flow adds a row
    client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 3, "sev": 1}, headers={"X-CSRF-Token": token})
    client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 2}, headers={"X-CSRF-Token": token})
    stored = feedback_rows(huser)
    assert [(s["sev"], s["tstart"], s["srcIP"]) for s in stored] == [
        ("1", row["treceived"], row["sip"]), ("2", results_csv(huser)[0]["treceived"], results_csv(huser)[0]["sip"])]
    shown = client.get(f"/api/v1/days/{DAY}/feedback").json["feedback"]
    assert [{k: v for k, v in f.items() if k != "when"} for f in shown] == stored
    assert all(f["when"] for f in shown)  # when the verdict store got it: the newer of a flow's and its incident's shows
    leftovers = [p.name for p in (huser / "flow" / "scored_results" / DAY / "feedback").iterdir()]
    assert leftovers == ["ml_feedback.csv"]


def test_feedback_without_or_with_a_wrong_csrf_token_is_refused(client):
    token = login(client)
    assert client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}).status_code == 403
    r = client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}, headers={"X-CSRF-Token": token[:-2] + "xx"})
    assert r.status_code == 403 and "CSRF" in r.json["message"]


@pytest.mark.parametrize("body,status,fragment", [
    ({"rank": 1, "sev": 4}, 400, "sev must be"),
    ({"rank": 1, "sev": "3"}, 400, "sev must be"),
    ({"rank": 1, "sev": True}, 400, "sev must be"),
    ({"rank": 0, "sev": 3}, 400, "rank must be"),
    ({"rank": 1.5, "sev": 3}, 400, "rank must be"),
    ({"rank": 99999, "sev": 3}, 404, "no suspicious flow ranked 99999"),
    ({"rank": 1, "sev": 3, "srcIP": "6.6.6.6"}, 400, "unknown field(s): srcIP"),
    ([1, 3], 400, "JSON object"),
])
def test_bad_feedback_bodies_are_refused_and_nothing_is_written(client, huser, body, status, fragment):
    token = login(client)
    r = client.post(f"/api/v1/days/{DAY}/feedback", json=body, headers={"X-CSRF-Token": token})
    assert r.status_code == status and fragment in r.json["message"]
    assert not (huser / "flow" / "scored_results" / DAY / "feedback").exists()


def test_feedback_must_be_json(client):
    token = login(client)
    r = client.post(f"/api/v1/days/{DAY}/feedback", data="rank=1&sev=3", content_type="application/x-www-form-urlencoded",
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 415


def test_oversize_requests_are_413(client):
    token = login(client)
    big = {"rank": 1, "sev": 3, "pad": "x" * 20000}
    r = client.post(f"/api/v1/days/{DAY}/feedback", json=big, headers={"X-CSRF-Token": token})
    assert r.status_code == 413 and r.is_json


# -- ingest summary ----------------------------------------------------------------------------
def test_ingest_summary_says_when_there_is_none(client):
    login(client)
    assert client.get("/api/v1/ingest/summary").json == {"available": False, "message": "no ingest summary", "hours": []}


# -- the API description -----------------------------------------------------------------------
def test_openapi_document_lists_exactly_the_api_routes(client, app):
    spec = client.get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.")
    documented = {(p, m.upper()) for p, ops in spec["paths"].items() for m in ops}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            routed |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routed
    for path, ops in spec["paths"].items():
        for op in ops.values():
            params = [spec["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p for p in op.get("parameters", [])]
            declared = {p["name"] for p in params if p["in"] == "path"}
            assert declared == set(re.findall(r"{(\w+)}", path)), path


# -- a real server on a loopback port ----------------------------------------------------------
@pytest.fixture()
def live(app):
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    t.join(5)


def test_real_server_login_read_write_and_refusals(live, huser):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def call(path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(live + path, data=data, headers={"Content-Type": "application/json", **(headers or {})},
                                     method="POST" if data is not None else "GET")
        try:
            with opener.open(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    assert call(f"/api/v1/days/{DAY}/suspicious")[0] == 401
    status, who = call("/api/v1/login", {"username": "alice", "password": PASSWORD})
    assert status == 200
    status, page = call(f"/api/v1/days/{DAY}/suspicious?sort=score&order=desc&size=5")
    assert status == 200 and [r["rank"] for r in page["rows"]] == [1, 2, 3, 4, 5]
    assert call(f"/api/v1/days/{DAY}/feedback", {"rank": 2, "sev": 3})[0] == 403
    status, res = call(f"/api/v1/days/{DAY}/feedback", {"rank": 2, "sev": 3}, {"X-CSRF-Token": who["csrf_token"]})
    assert status == 201 and feedback_rows(huser)[0]["tstart"] == results_csv(huser)[1]["treceived"]
    status, err = call(f"/api/v1/days/{DAY}/feedback", raw=b"{" + b" " * 40000 + b"}", headers={"X-CSRF-Token": who["csrf_token"]})
    assert status == 413 and err["status"] == 413
    assert call("/api/v1/days/2018-02-16/model")[0] == 400
