"""The OA's incidents (issue 24 part 4): a day's incident list, an incident, its member flows, a
verdict on a whole incident, and a host, through the JSON API.

The day is real CIC-IDS2018 excerpt rows in Spot's layout (test_oa_api.write_day), scored by
volume so that many hosts' flows are suspicious, and its incidents are made by the real stage
(incidents.write_day_incidents) on local Spark, while a low-risk verdict on one connection is in
force (its flows form no incident, as in a real run); the verdict file is gone afterwards, as
when it expires. Expected answers are read independently from the Parquet files with pandas.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spot_ae_job import family, incidents, verdicts
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.layout import SUSPICIOUS, Day, Layout
from spot_ae_job.oa.app import create_app
from spot_ae_job.schema import ATTACK_FAMILIES
from test_incidents import model
from test_oa_api import DAY, PASSWORD, VIEWER_PASSWORD, _config, _flows_from_excerpt, login, results_csv, write_day

OLD_DAY = "20180215"  # scored before incidents existed: no incidents/ written
NEXT_DAY = "20180217"


def _scored_by_volume(data_dir: Path, day: str) -> pd.DataFrame:
    df = _flows_from_excerpt(data_dir, day)
    df["score"] = np.log10(2 + df["ibyt"] + df["obyt"]) + np.arange(len(df)) * 1e-9
    return df


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory, data_dir) -> dict:
    root = tmp_path_factory.mktemp("oa-incidents") / "user" / "spot"
    huser = f"file://{root}"
    run = write_day(root, _scored_by_volume(data_dir, DAY), DAY)
    flagged = pd.DataFrame(results_csv(root))
    held = flagged.iloc[10]  # a connection a low-risk verdict covers while the incidents are made
    v = verdicts.new_verdict(sip=held["sip"], dip=held["dip"], dport=int(held["dport"]), proto=held["proto"], sev=3, who="ana", day=DAY)
    vfile = root / "flow" / verdicts.file_name(v)
    vfile.parent.mkdir(parents=True)
    vfile.write_bytes(verdicts.to_line(v))
    scored = spark.read.parquet(f"{huser}/flow/scored_results/{DAY}/all_scores")
    incidents.write_day_incidents(spark, scored, model("ae-test", run["threshold"]), Day.parse(DAY), Layout(huser),
                                  run["threshold"], progress=lambda *_: None)
    vfile.unlink()
    write_day(root, _flows_from_excerpt(data_dir, OLD_DAY), OLD_DAY)
    res = root / "flow" / "scored_results" / DAY
    return {"root": root, "held": (held["sip"], held["dip"], int(held["dport"]), held["proto"]),
            "incidents": pd.read_parquet(res / "incidents"), "members": pd.read_parquet(res / "incident_members"),
            "hosts": pd.read_parquet(res / "hosts")}


@pytest.fixture()
def huser(built, tmp_path) -> Path:
    """A fresh copy per test: tests write verdicts."""
    root = tmp_path / "user" / "spot"
    shutil.copytree(built["root"], root)
    return root


@pytest.fixture()
def client(huser):
    cfg = _config()
    cfg.huser = f"file://{huser}"
    return create_app(cfg).test_client()


def all_pages(client, path: str, size: int = 7) -> list[dict]:
    rows, page = [], 1
    while True:
        sep = "&" if "?" in path else "?"
        r = client.get(f"{path}{sep}size={size}&page={page}")
        assert r.status_code == 200, r.json
        rows += r.json["rows"]
        if page >= r.json["pages"]:
            return rows
        page += 1


def biggest(built) -> str:
    return built["incidents"].sort_values(["flows", "incident_id"], ascending=[False, True])["incident_id"].iloc[0]


# -- the day page -------------------------------------------------------------------------------
def test_the_day_page_opens_on_its_incidents_with_the_flow_list_one_click_away(client):
    login(client)
    day = client.get(f"/days/{DAY}").get_data(as_text=True)
    assert 'id="incidents"' in day and f'href="/days/{DAY}/flows"' in day
    assert 'id="suspicious"' in client.get(f"/days/{DAY}/flows").get_data(as_text=True)


def test_incidents_are_listed_most_severe_first_and_paged_on_the_server(client, built):
    login(client)
    want = built["incidents"].set_index("incident_id")
    first = client.get(f"/api/v1/days/{DAY}/incidents?size=7").json
    assert (first["available"], first["total"], first["pages"], len(first["rows"])) == (True, len(want), -(-len(want) // 7), 7)
    rows = all_pages(client, f"/api/v1/days/{DAY}/incidents")
    ids = [r["incident_id"] for r in rows]
    assert len(ids) == len(set(ids)) and set(ids) == set(want.index)
    sev = [r["severity"] for r in rows]
    assert sev == sorted(sev, reverse=True)
    for r in rows:
        w = want.loc[r["incident_id"]]
        assert (r["flows"], r["bytes"], r["main_host"], r["severity_level"], r["n_hosts"]) == \
               (w["flows"], w["bytes"], w["main_host"], w["severity_level"], w["n_hosts"])
    by_flows = [r["flows"] for r in all_pages(client, f"/api/v1/days/{DAY}/incidents?sort=flows&order=asc")]
    assert by_flows == sorted(want["flows"])
    late = all_pages(client, f"/api/v1/days/{DAY}/incidents?sort=first_seen&order=desc")
    assert [r["first_seen"] for r in late] == sorted(want["first_seen"], reverse=True)


def test_incidents_filter_by_host_family_and_severity(client, built):
    login(client)
    inc = built["incidents"]
    per_host = inc[["incident_id", "hosts"]].explode("hosts")
    per_host["ip"] = per_host["hosts"].map(lambda h: h["ip"])
    ip = per_host["ip"].value_counts().index[0]
    want = set(per_host.loc[per_host["ip"] == ip, "incident_id"])
    assert len(want) > 1
    got = all_pages(client, f"/api/v1/days/{DAY}/incidents?host={ip}")
    assert {r["incident_id"] for r in got} == want
    cut = int(inc["severity"].median())
    got = all_pages(client, f"/api/v1/days/{DAY}/incidents?min_severity={cut}")
    assert {r["incident_id"] for r in got} == set(inc.loc[inc["severity"] >= cut, "incident_id"]) and len(got) < len(inc)
    level = inc["severity_level"].iloc[0]
    assert client.get(f"/api/v1/days/{DAY}/incidents?level={level}").json["total"] == int((inc["severity_level"] == level).sum())
    # no family model was trained for this root: every incident is "unknown"
    assert client.get(f"/api/v1/days/{DAY}/incidents?family=unknown").json["total"] == len(inc)
    assert client.get(f"/api/v1/days/{DAY}/incidents?family=dos").json["total"] == 0


def test_every_suspicious_flow_is_one_click_from_the_day_page(client, built):
    """Each incident row opens its member flows; flows in no incident are in the flow list,
    which names each flow's incident."""
    login(client)
    listed = client.get(f"/api/v1/days/{DAY}/incidents").json
    ranks: dict[int, str] = {}
    for row in all_pages(client, f"/api/v1/days/{DAY}/incidents", size=500):
        for f in all_pages(client, f"/api/v1/days/{DAY}/incidents/{row['incident_id']}/flows", size=500):
            assert f["rank"] not in ranks
            ranks[f["rank"]] = row["incident_id"]
    flagged = results_csv(built["root"])
    held = [i + 1 for i, r in enumerate(flagged) if (r["sip"], r["dip"], int(r["dport"]), r["proto"]) == built["held"]]
    assert held and listed["unassigned"] == len(held)
    assert not set(ranks) & set(held) and set(ranks) | set(held) == set(range(1, len(flagged) + 1))
    flat = all_pages(client, f"/api/v1/days/{DAY}/suspicious", size=500)
    assert {r["rank"]: r["incident_id"] for r in flat} == {k: ranks.get(k) for k in range(1, len(flagged) + 1)}


# -- one incident ---------------------------------------------------------------------------------
def test_an_incident_has_its_timeline_hosts_graph_explanations_family_and_member_flows(client, built):
    login(client)
    iid = biggest(built)
    d = client.get(f"/api/v1/days/{DAY}/incidents/{iid}").json
    row = built["incidents"].set_index("incident_id").loc[iid]
    mem = built["members"][built["members"]["incident_id"] == iid]
    assert d["incident"]["flows"] == row["flows"] == len(mem) > 2
    assert (d["incident"]["family"], d["incident"]["family_confidence"], d["verdict"]) == ("unknown", None, None)
    assert d["incident"]["top_explanations"] == list(row["top_explanations"])
    tl = d["timeline"]
    assert (tl["binned"], tl["flows"], tl["untimed"]) == (False, len(mem), 0)
    assert [(p["t"], p["rank"], p["score"]) for p in tl["points"]] == sorted(zip(mem["unix_tstamp"], mem["rank"], mem["score"]))
    g = d["graph"]
    pairs = mem.groupby(["sip", "dip"]).size()
    assert g["edges_total"] == len(pairs) and sum(e["flows"] for e in g["edges"]) == len(mem)
    assert {(e["source"], e["target"]): e["flows"] for e in g["edges"]} == pairs.to_dict()
    assert {n["id"]: (n["as_source"], n["as_target"]) for n in g["nodes"]} == \
           {h["ip"]: (h["as_source"], h["as_target"]) for h in row["hosts"]}
    page = client.get(f"/api/v1/days/{DAY}/incidents/{iid}/flows?sort=score&order=desc&size=2&page=2").json
    assert (page["total"], page["pages"]) == (len(mem), -(-len(mem) // 2))
    assert [f["rank"] for f in page["rows"]] == list(mem.sort_values("score", ascending=False)["rank"])[2:4]
    assert client.get(f"/days/{DAY}/incidents/{iid}").status_code == 200


@pytest.mark.parametrize("path,status,fragment", [
    (f"/api/v1/days/{DAY}/incidents/{'0' * 32}", 404, "no incident 000"),
    (f"/api/v1/days/{DAY}/incidents/{'0' * 32}/flows", 404, "no incident 000"),
    (f"/api/v1/days/{DAY}/incidents/ABC", 400, "incident id must be 32 lowercase hex digits"),
    (f"/api/v1/days/{DAY}/incidents?sort=rank", 400, "sort must be one of severity"),
    (f"/api/v1/days/{DAY}/incidents?page=0", 400, "page must be in 1..10000000"),
    (f"/api/v1/days/{DAY}/incidents?size=501", 400, "size must be in 1..500"),
    (f"/api/v1/days/{DAY}/incidents?min_severity=101", 400, "min_severity must be in 0..100"),
    (f"/api/v1/days/{DAY}/incidents?family=DoS", 400, "family must be a name"),
    (f"/api/v1/days/{DAY}/incidents?host=10.0.0", 400, "host must be an IPv4 or IPv6 address"),
    (f"/api/v1/days/{DAY}/incidents?severity=high", 400, "unknown parameter(s): severity"),
    (f"/api/v1/days/{OLD_DAY}/incidents/{'0' * 32}", 404, "has no incidents (scored before incidents existed"),
    (f"/api/v1/days/20180230/incidents", 400, "not a calendar date"),
    (f"/api/v1/days/{DAY}/hosts/not-an-ip", 400, "ip must be an IPv4 or IPv6 address"),
])
def test_bad_incident_requests_get_a_one_line_error(client, path, status, fragment):
    login(client)
    r = client.get(path)
    assert r.status_code == status and r.json["status"] == status
    assert fragment in r.json["message"] and "\n" not in r.json["message"]


def test_a_day_without_incidents_says_so_and_counts_its_flows_for_the_flow_list(client):
    login(client)
    d = client.get(f"/api/v1/days/{OLD_DAY}/incidents").json
    assert (d["available"], d["total"], d["rows"]) == (False, 0, [])
    assert d["unassigned"] == client.get(f"/api/v1/days/{OLD_DAY}/suspicious").json["total"] > 0
    assert client.get(f"/days/{OLD_DAY}/incidents/{'0' * 32}").status_code == 404


# -- a verdict on an incident ---------------------------------------------------------------------
def _files(huser: Path) -> list[Path]:
    d = huser / "flow" / "verdicts"
    return sorted(d.glob("*.json")) if d.exists() else []


def test_a_verdict_on_an_incident_is_one_file_that_covers_each_member_flow(client, built, huser):
    token = login(client)
    mem = built["members"]
    conns = mem.groupby("incident_id").apply(lambda m: len(m.groupby(["sip", "dip", "dport", "proto"])), include_groups=False)
    iid = conns.sort_values(ascending=False, kind="stable").index[0]
    mine = mem[mem["incident_id"] == iid].sort_values("rank")
    assert conns[iid] > 1
    r = client.post(f"/api/v1/days/{DAY}/incidents/{iid}/verdict", json={"sev": 1, "expires_days": 30}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201, r.json
    assert (r.json["flows"], r.json["connections"], r.json["severity"]) == (len(mine), conns[iid], "high")
    [f] = _files(huser)
    recs = [json.loads(x) for x in f.read_text().splitlines()]
    firsts = mine.drop_duplicates(["sip", "dip", "dport", "proto"])  # the most suspicious flow of each connection
    assert [(v["sip"], v["dip"], v["dport"], v["proto"], v["tstart"], v["sport"]) for v in recs] == \
           list(zip(firsts["sip"], firsts["dip"], firsts["dport"], firsts["proto"], firsts["treceived"], firsts["sport"]))
    assert {(v["incident_id"], v["sev"], v["day"], v["who"], v["when"], v["expires"]) for v in recs} == \
           {(iid, 1, DAY, "alice", recs[0]["when"], r.json["expires"])}
    assert {tuple(v[k] for k in verdicts.KEY) for v in verdicts.in_force(recs)} == {tuple(v[k] for k in verdicts.KEY) for v in recs}
    # it shows on the incident and, through it, on each member flow of the day's list
    fb = client.get(f"/api/v1/days/{DAY}/feedback").json
    assert fb["incidents"][iid]["sev"] == 1 and fb["incidents"][iid]["id"] == r.json["verdict_id"]
    assert client.get(f"/api/v1/days/{DAY}/incidents/{iid}").json["verdict"]["sev"] == 1
    flat = all_pages(client, f"/api/v1/days/{DAY}/suspicious", size=500)
    assert sorted(x["rank"] for x in flat if x["incident_id"] == iid) == sorted(mine["rank"])
    # and on the verdicts page, one row per connection, each naming the incident
    listed = client.get("/api/v1/verdicts").json["verdicts"]
    assert len(listed) == conns[iid] and {v["incident_id"] for v in listed} == {iid}


def test_a_per_flow_verdict_carries_when_it_was_given_so_the_newer_one_shows(client, built):
    token = login(client)
    iid = biggest(built)
    rank = int(built["members"].loc[built["members"]["incident_id"] == iid, "rank"].min())
    assert client.post(f"/api/v1/days/{DAY}/feedback", json={"rank": rank, "sev": 2}, headers={"X-CSRF-Token": token}).status_code == 201
    assert client.post(f"/api/v1/days/{DAY}/incidents/{iid}/verdict", json={"sev": 3}, headers={"X-CSRF-Token": token}).status_code == 201
    fb = client.get(f"/api/v1/days/{DAY}/feedback").json
    [row] = fb["feedback"]
    assert row["sev"] == "2" and row["when"] is not None and row["when"] <= fb["incidents"][iid]["when"]


@pytest.mark.parametrize("who,csrf,body,status,fragment", [
    (None, False, {"sev": 3}, 401, "log in first"),
    ("alice", False, {"sev": 3}, 403, "CSRF"),
    ("victor", True, {"sev": 3}, 403, "may not record verdicts"),
    ("alice", True, {"sev": 4}, 400, "sev must be 1"),
    ("alice", True, {"sev": 3, "rank": 1}, 400, "unknown field(s): rank"),
    ("alice", True, {"sev": 3, "expires_days": 0}, 400, "expires_days must be an integer in 1..3650"),
    ("alice", True, {"sev": 1, "family": "worm"}, 400, "family must be one of scan, brute_force"),
    ("alice", True, {"sev": 3, "family": "dos"}, 400, "a family names a confirmed attack"),
])
def test_incident_verdicts_follow_the_verdict_endpoints_login_role_and_csrf_rules(client, built, huser, who, csrf, body, status, fragment):
    token = login(client, who, VIEWER_PASSWORD if who == "victor" else PASSWORD) if who else None
    r = client.post(f"/api/v1/days/{DAY}/incidents/{biggest(built)}/verdict", json=body,
                    headers={"X-CSRF-Token": token} if csrf else {})
    assert r.status_code == status and fragment in r.json["message"]
    assert _files(huser) == []


def test_a_low_risk_incident_verdict_reaches_later_days_as_per_flow_verdicts_do(spark, client, built, huser):
    token = login(client)
    iid = biggest(built)
    mine = built["members"][built["members"]["incident_id"] == iid].sort_values("rank")
    assert client.post(f"/api/v1/days/{DAY}/incidents/{iid}/verdict", json={"sev": 3}, headers={"X-CSRF-Token": token}).status_code == 201
    conns = set(zip(mine["sip"], mine["dip"], mine["dport"], mine["proto"]))
    low = verdicts.in_force_df(spark, f"file://{huser}", sev=(3,))
    assert {tuple(r) for r in low.select(*verdicts.KEY).collect()} == conns
    # the same flows on a later day: none of these connections forms an incident any more
    later = spark.read.parquet(f"file://{huser}/flow/scored_results/{DAY}/all_scores")
    left = incidents.eligible(spark, later.where(SUSPICIOUS), f"file://{huser}", NEXT_DAY)
    flagged = results_csv(huser)
    kept = [(r.sip, r.dip, r.dport, r.proto) for r in left.collect()]
    assert not set(kept) & conns
    assert len(kept) == len(flagged) - sum((f["sip"], f["dip"], int(f["dport"]), f["proto"]) in conns for f in flagged)
    # and its flows (the most suspicious of each connection) join training
    firsts = mine.drop_duplicates(["sip", "dip", "dport", "proto"])
    train = verdicts.training_flows(spark, f"file://{huser}")
    assert sorted((r.treceived, r.sip, r.sport) for r in train.collect()) == sorted(zip(firsts["treceived"], firsts["sip"], firsts["sport"]))


def test_the_api_document_offers_the_families_a_verdict_may_name(client):
    spec = client.get("/api/v1/openapi.json").json
    body = spec["paths"]["/api/v1/days/{day}/incidents/{incident_id}/verdict"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["properties"]["family"]["enum"] == ATTACK_FAMILIES


def test_a_verdict_naming_a_family_teaches_the_family_classifier_its_flows(spark, client, built, huser, data_dir):
    """The analyst confirms an incident as C2; `train-family`'s training then holds that
    incident's connections' suspicious flows as C2, though no CIC label it reads is C2."""
    token = login(client)
    iid = biggest(built)
    r = client.post(f"/api/v1/days/{DAY}/incidents/{iid}/verdict", json={"sev": 1, "family": "c2"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201 and r.json["family"] == "c2", r.json
    assert client.get(f"/api/v1/days/{DAY}/incidents/{iid}").json["verdict"]["family"] == "c2"
    assert {v["family"] for v in client.get("/api/v1/verdicts").json["verdicts"]} == {"c2"}

    mine = built["members"][built["members"]["incident_id"] == iid]
    conns = set(zip(mine["sip"], mine["dip"], mine["dport"], mine["proto"]))
    day = pd.read_parquet(huser / "flow" / "scored_results" / DAY / "all_scores")
    in_conns = np.array([k in conns for k in zip(day["sip"], day["dip"], day["dport"], day["proto"])])
    want = day[day["suspicious"] & in_conns]
    named = family.named_flows(spark, Layout(f"file://{huser}"), say=lambda *_: None).cache()
    assert named.count() == len(want) >= len(mine)
    assert {r[0] for r in named.select("label").distinct().collect()} == {"c2"}
    assert named.where(" or ".join(f"`{c}` is null" for c in family.INPUTS)).count() == 0  # inputs counted over the day

    cic = read_cicids(spark, str(data_dir / "cicids2018" / "ishtiaq__SQL_Injection.csv")).flows  # benign and web only
    clf = family.train(cic, ["sql"], say=lambda *_: None, named=named)
    assert clf.meta["rows_per_class"]["c2"] == len(want) and "analyst verdicts naming a family" in clf.meta["trained_on"]
    called = clf.predict(named).groupBy("family").count().collect()
    assert max(called, key=lambda r: r["count"])["family"] == "c2", called


# -- a host -----------------------------------------------------------------------------------
def test_a_host_has_its_day_ranking_its_incidents_and_its_history(client, built):
    login(client)
    hosts = built["hosts"].set_index("ip")
    ip = hosts.sort_values("host_rank").index[0]
    d = client.get(f"/api/v1/days/{DAY}/hosts/{ip}").json
    want = hosts.loc[ip]
    r = d["ranking"]
    assert (r["host_rank"], r["src_suspicious"], r["dst_suspicious"], r["n_incidents"]) == \
           (want["host_rank"], want["src_suspicious"], want["dst_suspicious"], want["n_incidents"])
    assert [x["day"] for x in d["history"]["days"]] == [DAY]
    listed = all_pages(client, f"/api/v1/days/{DAY}/incidents?host={ip}")
    assert {x["incident_id"] for x in listed} == set(want["incidents"]) and len(listed) == want["n_incidents"] > 0
    assert client.get(f"/days/{DAY}/hosts/{ip}").status_code == 200
    unseen = client.get(f"/api/v1/days/{DAY}/hosts/192.0.2.77").json
    assert (unseen["ranking"], unseen["history"]["days"]) == (None, [])


# -- a day only the stream has scored -------------------------------------------------------------
def test_a_streamed_day_shows_its_incidents_as_they_stand_after_the_last_batch(spark, tmp_path):
    """Three micro-batches written by the stream's own writer (results, alerts, incidents): the
    third links two open incidents, which merge. The OA lists the incidents as they stand, with
    every member flow (the earlier batches' under the surviving id) and each one's list rank."""
    from pyspark.sql import functions as F

    from spot_ae_job.stream import BATCH_ID, BatchScorer
    from test_incidents import DAY as SDAY, flows

    huser = tmp_path / "user" / "spot"
    m = model("v-stream", 1.0)
    writer = BatchScorer(f"file://{huser}", models=None, say=lambda *_: None)
    batches = [[(0, "10.0.0.1", "10.0.0.9", 22, 2.0), (5, "10.0.2.1", "10.0.2.2", 53, 2.5)],
               [(600, "10.0.0.1", "10.0.0.8", 22, 3.0), (610, "10.0.3.1", "10.0.3.2", 80, 2.2)],
               [(900, "10.0.2.2", "10.0.3.1", 80, 2.1)]]
    for b, rows in enumerate(batches):
        scored = (flows(spark, rows, ranked=False).withColumn("y", F.lit(2023)).withColumn("m", F.lit(1))
                  .withColumn("d", F.lit(25)).withColumn("h", F.lit(10))
                  .withColumn("model_version", F.lit(m.version)).withColumn(BATCH_ID, F.lit(b).cast("long")))
        writer._write_day(spark, scored, scored.limit(0), m, SDAY, b, 0)

    cfg = _config()
    cfg.huser = f"file://{huser}"
    client = create_app(cfg).test_client()
    login(client)
    d = client.get(f"/api/v1/days/{SDAY}/incidents").json
    assert d["available"] and d["total"] == 2 and d["unassigned"] == 0
    assert d["summary"]["incidents"] == 2 and d["summary"]["flows"] == 5
    by_host = {r["main_host"]: r for r in d["rows"]}
    assert by_host["10.0.0.1"]["flows"] == 2
    (merged,) = [r for r in d["rows"] if r["main_host"] != "10.0.0.1"]
    assert merged["flows"] == 3
    listed = client.get(f"/api/v1/days/{SDAY}/suspicious?size=50").json["rows"]
    members = client.get(f"/api/v1/days/{SDAY}/incidents/{merged['incident_id']}/flows?size=50").json["rows"]
    # batch 0's and batch 1's flows of the two incidents that merged, and batch 2's link
    assert sorted((r["sip"], r["dip"]) for r in members) == [("10.0.2.1", "10.0.2.2"), ("10.0.2.2", "10.0.3.1"),
                                                             ("10.0.3.1", "10.0.3.2")]
    ranks = {(r["sip"], r["dip"]): r["rank"] for r in listed}
    assert all(r["rank"] == ranks[(r["sip"], r["dip"])] for r in members)
    assert client.get(f"/api/v1/days/{SDAY}/incidents/{merged['incident_id']}").json["incident"]["flows"] == 3
    # each listed flow links to its incident
    assert {(r["sip"], r["dip"]): r["incident_id"] for r in listed} == {
        ("10.0.0.1", "10.0.0.9"): by_host["10.0.0.1"]["incident_id"], ("10.0.0.1", "10.0.0.8"): by_host["10.0.0.1"]["incident_id"],
        **{(r["sip"], r["dip"]): merged["incident_id"] for r in members}}
