"""Issue 22, the OA as an attacker and a careless operator find it: open redirects, sessions that
outlive logout, one bad file taking a whole page down, half-written verdicts, error answers that
are bare 500s or name server paths, a health check that says ok for nothing, and config and start-up
mistakes that end in tracebacks. Same app, same real day of excerpt rows as test_oa_api.py.
"""
from __future__ import annotations

import json
import shutil
import socket

import numpy as np
import pytest

from spot_ae_job.oa import validate as V
from spot_ae_job.oa.app import create_app
from test_oa_api import (  # noqa: F401 - fixtures are found by name
    DAY, PASSWORD, _config, _flows_from_excerpt, app, built_huser, client, feedback_rows, huser, login, results_csv, write_day,
)
from test_oa_parts import oa


def _form_login(client, nxt: str):
    client.get("/login")
    with client.session_transaction() as s:
        token = s["csrf"]
    return client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": nxt})


# -- open redirect -----------------------------------------------------------------------------
@pytest.mark.parametrize("nxt", [
    "/\t/evil.example/x",  # browsers drop tab, CR and LF inside URLs: "/\t/evil" is "//evil"
    "/\n/evil.example/",
    "/\r/evil.example/",
    "/\x0b/evil.example/",
    "/\\evil.example/",
    "//evil.example/",
    "/\r\nSet-Cookie: planted=1",
    "https://evil.example/",
    " /days",
])
def test_login_never_redirects_to_a_path_a_browser_turns_into_another_host(client, nxt):
    r = _form_login(client, nxt)
    assert r.status_code == 302, r.get_data(as_text=True)
    assert r.headers["Location"] == "/"
    assert "planted" not in r.headers.get("Set-Cookie", "")


def test_login_keeps_a_plain_same_site_next_path(client):
    r = _form_login(client, f"/days/{DAY}?sort=score&order=desc")
    assert r.status_code == 302 and r.headers["Location"] == f"/days/{DAY}?sort=score&order=desc"


def test_the_login_page_does_not_echo_an_unsafe_next_into_its_form(client):
    page = client.get("/login?next=/%09/evil.example/").get_data(as_text=True)
    assert "evil.example" not in page


def test_https_deployments_get_strict_transport_security(huser):
    cfg = _config(secure_cookies=True)
    cfg.huser = f"file://{huser}"
    r = create_app(cfg).test_client().get("/login")
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"


# -- sessions ----------------------------------------------------------------------------------
def _copy_cookie(src, dst):
    dst.set_cookie("spot_oa_session", src.get_cookie("spot_oa_session").value)


def test_api_logout_ends_the_session_for_every_copy_of_its_cookie(app):
    a, thief = app.test_client(), app.test_client()
    token = login(a)
    _copy_cookie(a, thief)
    assert thief.get("/api/v1/days").status_code == 200  # the copy works while the session lives
    assert a.post("/api/v1/logout", headers={"X-CSRF-Token": token}).status_code == 200
    assert thief.get("/api/v1/days").status_code == 401
    assert a.get("/api/v1/days").status_code == 401


def test_form_logout_ends_the_session_too(app):
    a, thief = app.test_client(), app.test_client()
    login(a)
    _copy_cookie(a, thief)
    with a.session_transaction() as s:
        token = s["csrf"]
    assert a.post("/logout", data={"csrf_token": token}).status_code == 302
    assert thief.get("/api/v1/session").status_code == 401


def test_a_new_login_gets_a_new_session_not_the_one_it_came_with(app):
    a = app.test_client()
    login(a)
    before = a.get_cookie("spot_oa_session").value
    thief = app.test_client()
    thief.set_cookie("spot_oa_session", before)
    token = login(a)  # logging in again replaces the session the client had
    assert a.get("/api/v1/days").status_code == 200
    assert thief.get("/api/v1/days").status_code == 401
    assert a.post("/api/v1/logout", headers={"X-CSRF-Token": token}).status_code == 200


def test_a_session_idle_longer_than_idle_minutes_is_over(huser):
    cfg = _config()
    cfg.huser = f"file://{huser}"
    cfg.idle_minutes = 0  # every gap between two requests is then too long
    c = create_app(cfg).test_client()
    login(c)
    assert c.get("/api/v1/days").status_code == 401


# -- one bad item fails alone ------------------------------------------------------------------
def _second_day(huser, day="20180217"):
    src = huser / "flow" / "scored_results" / DAY
    dst = huser / "flow" / "scored_results" / day
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("bad", [b"{not json", b"[1, 2]", b"\xff\xfe\x00garbage", b"[" * 5000 + b"]" * 5000],
                         ids=["not-json", "not-an-object", "not-utf8", "nested-5000-deep"])
def test_one_malformed_run_json_fails_alone_and_is_listed(client, huser, bad):
    (_second_day(huser) / "run.json").write_bytes(bad)
    login(client)
    r = client.get("/api/v1/days")
    assert r.status_code == 200
    days = {d["day"]: d for d in r.json["days"]}
    assert set(days) == {DAY, "20180217"}
    assert days[DAY]["flows_scored"] > 0 and "problem" not in days[DAY]
    assert days["20180217"]["flows_scored"] is None and "run.json of 20180217" in days["20180217"]["problem"]
    assert [u["day"] for u in r.json["unreadable"]] == ["20180217"]
    # the bad day's suspicious list still works: only its run.json is bad
    assert client.get("/api/v1/days/20180217/suspicious").status_code == 200


def test_one_bad_verdict_file_fails_alone_and_is_listed(client, huser):
    token = login(client)
    assert client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}, headers={"X-CSRF-Token": token}).status_code == 201
    vdir = huser / "flow" / "verdicts"
    good = json.loads(next(vdir.iterdir()).read_text())
    (vdir / "20260101T000000Z-broken.json").write_bytes(b"{half a record")
    (vdir / "20260101T000001Z-latin1.json").write_bytes(b"\xe9t\xe9\n")
    (vdir / "20260101T000002Z-nofields.json").write_text(json.dumps({"sev": 3}) + "\n")
    (vdir / "20260101T000003Z-badtime.json").write_text(json.dumps({**good, "when": "yesterday"}) + "\n")
    (vdir / "20260101T000004Z-badalert.json").write_text(json.dumps({**good, "sev": "3"}) + "\n")
    (vdir / "20260101T000005Z-badmodel.json").write_text(json.dumps({**good, "model_version": ["m"]}) + "\n")
    (huser / "flow" / "scored_results" / DAY / "alerts_summary.json").write_text('{"suppressed_by_verdict": {"v1": "many"}}')
    r = client.get("/api/v1/verdicts")
    assert r.status_code == 200
    assert [v["id"] for v in r.json["verdicts"]] == [good["id"]]
    bad = sorted(u["file"].rsplit("/", 1)[1] for u in r.json["unreadable"])
    assert bad == ["20260101T000000Z-broken.json", "20260101T000001Z-latin1.json", "20260101T000002Z-nofields.json",
                   "20260101T000003Z-badtime.json", "20260101T000004Z-badalert.json", "20260101T000005Z-badmodel.json",
                   "alerts_summary.json"]


# -- verdicts: a flow without IPs, and writes that belong together -----------------------------
@pytest.fixture()
def no_ip_day(tmp_path, data_dir):
    """A day as spot_ae_job/ingest/cicids.py loads the shared CIC files that have no IPs, source
    ports or timestamps (the ishtiaq__* and cstub__ files): those columns are null."""
    root = tmp_path / "noip" / "user" / "spot"
    df = _flows_from_excerpt(data_dir, DAY)
    for c in ("sip", "dip", "sport", "treceived"):
        df[c] = None
    df["unix_tstamp"] = np.nan
    write_day(root, df, DAY)
    cfg = _config()
    cfg.huser = f"file://{root}"
    return root, create_app(cfg).test_client()


def test_a_flow_without_ips_is_refused_a_verdict_with_a_reason_and_nothing_is_written(no_ip_day):
    root, c = no_ip_day
    token = login(c)
    assert c.get(f"/api/v1/days/{DAY}/suspicious").json["total"] > 0
    r = c.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}, headers={"X-CSRF-Token": token})
    assert r.status_code == 422 and r.is_json
    assert "no source/destination IP address" in r.json["message"]
    assert not (root / "flow" / "scored_results" / DAY / "feedback").exists()
    assert not (root / "flow" / "verdicts").exists()


def test_when_the_verdict_store_cannot_be_written_the_feedback_file_is_not_written_either(client, huser):
    (huser / "flow" / "verdicts").write_text("a file where the verdict store's folder should be")
    token = login(client)
    r = client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 2, "sev": 3}, headers={"X-CSRF-Token": token})
    assert r.status_code == 503 and r.is_json
    assert not (huser / "flow" / "scored_results" / DAY / "feedback" / "ml_feedback.csv").exists()


def test_when_the_feedback_file_cannot_be_written_the_verdict_is_taken_back(client, huser):
    # a file where the day's feedback folder should be: reading finds no feedback, writing fails
    (huser / "flow" / "scored_results" / DAY / "feedback").write_text("not a folder")
    token = login(client)
    r = client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 2, "sev": 3}, headers={"X-CSRF-Token": token})
    assert r.status_code == 503 and r.is_json
    assert list((huser / "flow" / "verdicts").glob("*.json")) == []  # written first, then taken back


# -- error answers -----------------------------------------------------------------------------
def test_deeply_nested_json_is_a_400_even_before_login(client):
    body = '{"username": ' + "[" * 5000 + "]" * 5000 + ', "password": "x"}'
    r = client.post("/api/v1/login", data=body, content_type="application/json")
    assert r.status_code == 400 and r.is_json
    assert "nested too deeply" in r.json["message"]


def test_a_corrupt_parquet_part_fails_alone_in_connection_details_and_is_listed(client, huser):
    top = results_csv(huser)[0]
    d = huser / "flow" / "scored_results" / DAY / "all_scores"
    login(client)
    whole = client.get(f"/api/v1/days/{DAY}/connections?sip={top['sip']}&dip={top['dip']}").json
    (d / "part-00001-x.snappy.parquet").write_bytes(b"PAR1 this is not parquet PAR1")
    r = client.get(f"/api/v1/days/{DAY}/connections?sip={top['sip']}&dip={top['dip']}")
    assert r.status_code == 200
    assert [u["file"].rsplit("/", 1)[1] for u in r.json["unreadable"]] == ["part-00001-x.snappy.parquet"]
    assert 0 < r.json["count"] <= whole["count"]


def test_non_utf8_feedback_is_a_named_error_not_a_bare_500(client, huser):
    fb = huser / "flow" / "scored_results" / DAY / "feedback"
    fb.mkdir()
    (fb / "ml_feedback.csv").write_bytes("sev,tstart\n3,f\xe9vrier\n".encode("latin-1"))
    token = login(client)
    r = client.get(f"/api/v1/days/{DAY}/feedback")
    assert r.status_code == 500 and r.json["error"] == "Malformed Results"
    assert "ml_feedback.csv of 20180216 is not UTF-8" in r.json["message"]
    # a verdict must not overwrite a file it cannot read
    w = client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}, headers={"X-CSRF-Token": token})
    assert w.status_code == 500 and (fb / "ml_feedback.csv").read_bytes().endswith(b"f\xe9vrier\n")
    assert not (huser / "flow" / "verdicts").exists()


def test_a_directory_in_place_of_a_results_file_is_named_without_the_server_path(client, huser):
    csv_path = huser / "flow" / "scored_results" / DAY / "scores" / "flow_results.csv"
    csv_path.unlink()
    csv_path.mkdir()
    login(client)
    r = client.get(f"/api/v1/days/{DAY}/suspicious")
    assert r.status_code == 500 and r.json["error"] == "Malformed Results"
    assert "flow_results.csv is a directory" in r.json["message"]
    assert str(huser) not in r.get_data(as_text=True)


def test_health_is_503_for_a_results_root_that_does_not_exist(tmp_path):
    cfg = _config()
    cfg.huser = f"file://{tmp_path / 'no' / 'such' / 'root'}"
    r = create_app(cfg).test_client().get("/api/v1/health")
    assert r.status_code == 503 and r.json["status"] == "degraded"
    assert "does not exist" in r.json["detail"] and str(tmp_path) not in r.get_data(as_text=True)


@pytest.mark.parametrize("path", [f"/api/v1/days/{DAY}%0A/model", f"/api/v1/days/{DAY}%0A/suspicious"])
def test_a_day_with_a_trailing_newline_is_a_400(client, path):
    login(client)
    r = client.get(path)
    assert r.status_code == 400 and "day must be YYYYMMDD" in r.json["message"]


def test_the_day_validator_refuses_a_trailing_newline():
    with pytest.raises(V.Invalid):
        V.day(DAY + "\n")


# -- start-up ----------------------------------------------------------------------------------
def test_serve_on_a_port_in_use_is_one_line_not_a_traceback(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = oa("serve", "--dev", "--huser", f"file://{tmp_path}", "--port", str(port))
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
