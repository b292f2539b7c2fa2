"""Incidents (issue 24, spot_ae_job/incidents.py): hand-built flow sequences grouped on real
local Spark, ids that survive a re-run, a stream that extends an open incident, and the ECS
documents that link the alerts write_alerts wrote for the same flows."""
from __future__ import annotations

import ipaddress
import json

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from spot_ae_job import fsutil, incidents
from spot_ae_job.alerts import read_alerts, write_alerts
from spot_ae_job.features import N_FEATURES, Scaler
from spot_ae_job.layout import Day, Layout
from spot_ae_job.model import HIDDEN, AEModel
from spot_ae_job.schema import FLOW_COLUMNS, FLOW_SCHEMA

DAY = "20230125"
T0 = 1674640800  # 2023-01-25 10:00 UTC


def model(version: str = "v1", threshold: float = 1.0) -> AEModel:
    w = [np.zeros((N_FEATURES, HIDDEN), np.float32), np.zeros(HIDDEN, np.float32),
         np.zeros((HIDDEN, N_FEATURES), np.float32), np.zeros(N_FEATURES, np.float32)]
    return AEModel(w, Scaler(np.zeros(N_FEATURES), np.ones(N_FEATURES)), threshold, {"version": version, "kind": "ae"})


def flows(spark, rows, ranked: bool = True, quiet=()):
    """(seconds after T0, sip, dip, dport, score) -> suspicious scored rows, as write_results has
    them (ranked); `quiet`: more rows of the same shape that are not suspicious."""
    recs = []
    for t, sip, dip, dport, score in [*rows, *quiet]:
        d = dict.fromkeys(FLOW_COLUMNS)
        d.update(treceived=f"2023-01-25 10:{t // 60:02d}:{t % 60:02d}" if t < 3600 else str(T0 + t), unix_tstamp=T0 + t,
                 tryear=2023, trmonth=1, trday=25, tdur=1.0, sip=sip, dip=dip, sport=40000 + t % 1000, dport=dport,
                 proto="TCP", flag=".AP.S.", ipkt=3, ibyt=300, opkt=2, obyt=200)
        recs.append((tuple(d[c] for c in FLOW_COLUMNS), score))
    df = spark.createDataFrame([r + (s,) for r, s in recs], T.StructType(FLOW_SCHEMA.fields + [T.StructField("score", T.DoubleType())]))
    quiet_keys = [(T0 + q[0], q[1], q[2]) for q in quiet]
    is_quiet = F.lit(False)
    for t, s, d in quiet_keys:
        is_quiet = is_quiet | ((F.col("unix_tstamp") == t) & (F.col("sip") == s) & (F.col("dip") == d))
    df = df.withColumn("suspicious", ~is_quiet)
    if ranked:
        df = df.withColumn("rank", F.when(F.col("suspicious"), F.row_number().over(
            Window.partitionBy("suspicious").orderBy(F.col("score").desc(), "unix_tstamp"))))
    return df


def by_members(spark, uri: str) -> dict[frozenset, dict]:
    """incident rows keyed by the set of (sip, dip, time) of their member flows."""
    mem = spark.read.parquet(uri)
    groups = {}
    for r in mem.collect():
        groups.setdefault(r["incident_id"], set()).add((r["sip"], r["dip"], r["unix_tstamp"] - T0))
    return {frozenset(v): k for k, v in groups.items()}


# A: 10.0.0.1 scans two hosts, then again after 2 hours (a new incident: the gap);
# B, C, D: a chain 10.0.1.1 -> .2 -> .3 -> .4 within minutes (one incident);
# E: two unrelated hosts at the same time as A (their own incident).
SEQUENCE = [
    (0, "10.0.0.1", "10.0.0.9", 22, 3.0), (60, "10.0.0.1", "10.0.0.8", 22, 2.5),
    (7200, "10.0.0.1", "10.0.0.7", 22, 1.5),
    (10, "10.0.1.1", "10.0.1.2", 445, 5.0), (300, "10.0.1.2", "10.0.1.3", 445, 4.0), (800, "10.0.1.3", "10.0.1.4", 445, 1.2),
    (30, "192.168.5.5", "192.168.5.6", 80, 1.1),
]


QUIET = [(100, "10.0.0.1", "10.0.9.9", 443, 0.2), (200, "10.0.9.9", "10.0.0.5", 53, 0.1)]


@pytest.fixture(scope="module")
def day_run(spark, tmp_path_factory):
    """One scored day, as write_results leaves it: alerts, then incidents (+ the host ranking)."""
    huser = f"file://{tmp_path_factory.mktemp('day')}/spot"
    scored = flows(spark, SEQUENCE, quiet=QUIET)
    write_alerts(spark, scored, model(), DAY, huser, progress=lambda *_: None)
    summary = incidents.write_day_incidents(spark, scored, model(), Day.parse(DAY), Layout(huser), 1.0,
                                            progress=lambda *_: None)
    return huser, summary


def test_flows_sharing_a_host_within_the_gap_form_one_incident_and_chains_merge(spark, day_run):
    huser, summary = day_run
    res = Layout(huser).results(Day.parse(DAY))
    groups = by_members(spark, res.incident_members)
    assert set(groups) == {
        frozenset({("10.0.0.1", "10.0.0.9", 0), ("10.0.0.1", "10.0.0.8", 60)}),
        frozenset({("10.0.0.1", "10.0.0.7", 7200)}),
        frozenset({("10.0.1.1", "10.0.1.2", 10), ("10.0.1.2", "10.0.1.3", 300), ("10.0.1.3", "10.0.1.4", 800)}),
        frozenset({("192.168.5.5", "192.168.5.6", 30)}),
    }
    assert summary["incidents"] == 4 and summary["flows"] == len(SEQUENCE)
    inc = {r["incident_id"]: r for r in spark.read.parquet(res.incidents).collect()}
    scan = inc[groups[frozenset({("10.0.0.1", "10.0.0.9", 0), ("10.0.0.1", "10.0.0.8", 60)})]]
    assert (scan["main_host"], scan["main_role"], scan["flows"], scan["n_targets"]) == ("10.0.0.1", "source", 2, 2)
    assert (scan["first_seen"], scan["last_seen"], scan["max_score"], scan["sum_score"]) == (T0, T0 + 60, 3.0, 5.5)
    assert sorted(scan["peers"]) == ["10.0.0.8", "10.0.0.9"] and [(p["port"], p["flows"]) for p in scan["ports"]] == [(22, 2)]
    chain = inc[groups[frozenset({("10.0.1.1", "10.0.1.2", 10), ("10.0.1.2", "10.0.1.3", 300), ("10.0.1.3", "10.0.1.4", 800)})]]
    assert chain["n_hosts"] == 4 and chain["bytes"] == 3 * 500
    # severity grows with what it combines: the chain (more flows, hosts, a higher score) ranks first
    assert chain["severity"] > scan["severity"] > 0
    run = json.loads(spark.sparkContext.wholeTextFiles(res.incidents_summary).first()[1])
    assert run["incidents"] == 4 and run["by_severity"]


def test_a_rerun_gives_the_same_incident_ids(spark, tmp_path):
    lay = Layout(f"file://{tmp_path}/spot")
    res = lay.results(Day.parse(DAY))
    ids = []
    for order in (SEQUENCE, list(reversed(SEQUENCE))):  # row order must not matter either
        incidents.write_day_incidents(spark, flows(spark, order), model(), Day.parse(DAY), lay, 1.0, progress=lambda *_: None)
        ids.append(by_members(spark, res.incident_members))
    assert ids[0] == ids[1] and len(ids[0]) == 4
    # a different model version scores different alerts: new ids
    incidents.write_day_incidents(spark, flows(spark, SEQUENCE), model("v2"), Day.parse(DAY), lay, 1.0, progress=lambda *_: None)
    assert set(by_members(spark, res.incident_members).values()).isdisjoint(ids[0].values())


def test_stream_batches_extend_an_open_incident_and_open_new_ones_after_the_gap(spark, tmp_path):
    huser = f"file://{tmp_path}/spot"
    res = Layout(huser).results(Day.parse(DAY))
    m = model()
    say = lambda *_: None  # noqa: E731
    incidents.extend_stream(spark, flows(spark, [(0, "10.0.0.1", "10.0.0.9", 22, 2.0),
                                                 (5, "10.0.2.1", "10.0.2.2", 53, 2.0)], ranked=False),
                            m, DAY, huser, batch_id=0, progress=say)
    first = {r["main_host"]: r["incident_id"] for r in incidents.latest_stream_incidents(spark, res.stream_incidents).collect()}
    # batch 1: 10.0.0.1 again 10 minutes later (open: extends), 10.0.3.1 new (opens its own)
    incidents.extend_stream(spark, flows(spark, [(600, "10.0.0.1", "10.0.0.8", 22, 3.0),
                                                 (610, "10.0.3.1", "10.0.3.2", 80, 2.0)], ranked=False),
                            m, DAY, huser, batch_id=1, progress=say)
    now = {r["incident_id"]: r for r in incidents.latest_stream_incidents(spark, res.stream_incidents).collect()}
    scan = now[first["10.0.0.1"]]
    assert (scan["flows"], scan["first_seen"], scan["last_seen"], scan["max_score"]) == (2, T0, T0 + 600, 3.0)
    assert len(now) == 3
    # batch 2: 10.0.0.1 two hours later: the incident is closed, a new one opens
    incidents.extend_stream(spark, flows(spark, [(7800, "10.0.0.1", "10.0.0.7", 22, 2.0)], ranked=False),
                            m, DAY, huser, batch_id=2, progress=say)
    later = incidents.latest_stream_incidents(spark, res.stream_incidents)
    assert later.count() == 4 and later.where(F.col("incident_id") == first["10.0.0.1"]).first()["flows"] == 2
    # batch 3: one flow links two open incidents (10.0.2.2 and 10.0.3.1): they merge into the earlier one
    incidents.extend_stream(spark, flows(spark, [(900, "10.0.2.2", "10.0.3.1", 80, 2.0)], ranked=False),
                            m, DAY, huser, batch_id=3, progress=say)
    after = {r["incident_id"]: r for r in incidents.latest_stream_incidents(spark, res.stream_incidents).collect()}
    kept = after[first["10.0.2.1"]]
    assert kept["merged_into"] is None and kept["flows"] == 3 and kept["n_hosts"] == 4
    (gone,) = [r for r in after.values() if r["merged_into"] is not None]
    assert gone["merged_into"] == kept["incident_id"] and kept["absorbed"] == [gone["incident_id"]]
    # a re-run of batch 3 (after a crash) replaces its own output: nothing counted twice
    incidents.extend_stream(spark, flows(spark, [(900, "10.0.2.2", "10.0.3.1", 80, 2.0)], ranked=False),
                            m, DAY, huser, batch_id=3, progress=say)
    again = incidents.latest_stream_incidents(spark, res.stream_incidents).where(F.col("incident_id") == kept["incident_id"])
    assert again.first()["flows"] == 3


def test_a_stream_batch_reads_only_the_batches_that_can_hold_an_open_incident_and_gets_what_reading_all_gives(spark, tmp_path):
    batches = [[(0, "10.0.0.1", "10.0.0.9", 22, 2.0)],                                   # A: closed long before batch 2
               [(7200, "10.0.5.1", "10.0.5.2", 80, 2.0)],                                # B opens
               [(7300, "10.0.5.1", "10.0.5.3", 80, 3.0), (7310, "10.0.0.1", "10.0.0.8", 22, 2.0)]]  # B grows; A again: new
    say = lambda *_: None  # noqa: E731
    got = {}
    for how in ("index", "no index"):
        huser = f"file://{tmp_path}/{how.replace(' ', '-')}/spot"
        res = Layout(huser).results(Day.parse(DAY))
        for b, rows in enumerate(batches):
            if how == "no index":  # as a day streamed before the index existed: every batch read
                fsutil.delete(spark, res.stream_incidents_index)
            incidents.extend_stream(spark, flows(spark, rows, ranked=False), model(), DAY, huser, batch_id=b, progress=say)
        inc = incidents.latest_stream_incidents(spark, res.stream_incidents)
        docs = incidents.read_incident_documents(spark, DAY, huser)
        got[how] = (sorted((r["incident_id"], r["flows"], r["first_seen"], r["last_seen"], r["merged_into"]) for r in inc.collect()),
                    sorted((d["event"]["id"], tuple(d["spot_ae"]["incident"]["alert_ids"])) for d in docs))
        if how == "index":
            index = incidents.StreamIndex(spark, res.stream_incidents_index)
            # batch 2 starts at 7300: only batch 1 has incidents within the gap of it
            assert index.batch_dirs(res.stream_incidents, before=2, since=T0 + 7300 - incidents.GAP_SECONDS) == ["batch=1"]
    assert got["index"] == got["no index"]
    assert sorted(f for _, f, *_ in got["index"][0]) == [1, 1, 2]  # A's first flow, A's new one, B with its two


def _ips(v) -> bool:
    try:
        ipaddress.ip_address(v)
        return True
    except ValueError:
        return False


def test_incident_documents_are_ecs_and_link_the_alerts_written_for_the_same_flows(spark, day_run):
    huser, _ = day_run
    docs = incidents.read_incident_documents(spark, DAY, huser)
    alerts = {a["event"]["id"] for a in read_alerts(spark, DAY, huser)}
    assert len(docs) == 4
    linked = [i for d in docs for i in d["spot_ae"]["incident"]["alert_ids"]]
    assert sorted(linked) == sorted(alerts)  # every alert in exactly one incident
    for d in docs:
        assert set(d) == {"@timestamp", "ecs", "message", "event", "related", "network", "observer", "spot_ae"}
        assert d["event"]["kind"] == "alert" and d["event"]["dataset"] == "spot_ae.incident"
        assert d["event"]["id"].startswith(d["spot_ae"]["incident"]["id"])
        assert d["related"]["ip"] and all(_ips(ip) for ip in d["related"]["ip"])
        assert isinstance(d["event"]["severity"], int) and d["event"]["start"] <= d["event"]["end"]
        assert d["spot_ae"]["incident"]["alerts"] == len(d["spot_ae"]["incident"]["alert_ids"])
    # most severe first
    assert [d["event"]["severity"] for d in docs] == sorted((d["event"]["severity"] for d in docs), reverse=True)


@pytest.mark.parametrize("edges,expected", [
    ([("a", "b"), ("c", "d"), ("b", "c")], {"a": "a", "b": "a", "c": "a", "d": "a"}),  # a chain, linked last
    ([("z", "y"), ("x", "w")], {"z": "y", "y": "y", "x": "w", "w": "w"}),
])
def test_components_label_every_node_with_its_component_minimum(spark, edges, expected):
    got = {r["node"]: r["comp"] for r in incidents.components(spark.createDataFrame(edges, "a string, b string")).collect()}
    assert got == expected


def test_the_host_ranking_says_how_anomalous_each_ip_was_as_source_and_target(spark, day_run):
    huser, summary = day_run
    hosts = {r["ip"]: r for r in spark.read.parquet(Layout(huser).results(Day.parse(DAY)).hosts).collect()}
    assert summary["hosts"]["hosts"] == len(hosts) == 12  # 10 addresses in SEQUENCE, 2 more in QUIET
    a = hosts["10.0.0.1"]
    assert (a["src_flows"], a["src_suspicious"], a["dst_flows"], a["n_incidents"], a["src_worst_score"]) == (4, 3, 0, 2, 3.0)
    quiet = hosts["10.0.9.9"]
    assert (quiet["suspicious"], quiet["n_incidents"], quiet["max_severity"]) == (0, 0, None)
    # the chain's hosts share its (the day's highest) severity; more suspicious flows, then the worst score, rank first
    ranked = [ip for ip, _ in sorted(hosts.items(), key=lambda kv: kv[1]["host_rank"])]
    assert ranked[:2] == ["10.0.1.2", "10.0.1.3"] and ranked[-1] in ("10.0.0.5", "10.0.9.9")


def test_a_hosts_history_across_days_for_the_oa(spark, day_run, tmp_path):
    from spot_ae_job import verdicts
    from spot_ae_job.oa.hosts import host_history
    from spot_ae_job.oa.results import Results
    from spot_ae_job.storage import open_storage

    huser, _ = day_run
    storage = open_storage(huser)
    # a low-risk verdict on one connection, then the next day: that flow forms no incident
    low = verdicts.new_verdict(sip="192.168.5.5", dip="192.168.5.6", dport=80, proto="TCP", sev=3, who="ana", day=DAY)
    high = verdicts.new_verdict(sip="10.0.0.1", dip="10.0.0.9", dport=22, proto="TCP", sev=1, who="ana", day=DAY)
    for v in (low, high):
        storage.write_atomic(verdicts.file_name(v), verdicts.to_line(v))
    nxt = incidents.write_day_incidents(spark, flows(spark, SEQUENCE), model(), Day.parse("20230126"), Layout(huser), 1.0,
                                        progress=lambda *_: None)
    assert nxt["incidents"] == 3 and nxt["flows"] == len(SEQUENCE) - 1
    h = host_history(Results(storage), "10.0.0.1")
    assert [d["day"] for d in h["days"]] == [DAY, "20230126"] and not h["unreadable"]
    assert [d["src_suspicious"] for d in h["days"]] == [3, 3] and [d["src_flows"] for d in h["days"]] == [4, 3]
    assert [v["id"] for v in h["verdicts"]] == [high["id"]]
    assert host_history(Results(storage), "192.168.5.5")["days"][-1]["n_incidents"] == 0
    with pytest.raises(ValueError):
        host_history(Results(storage), "not-an-ip")


def test_a_long_chain_and_its_separate_islands_each_join_into_one_component(spark):
    """A path whose names alternate ends (0, 399, 1, 398, ...) takes the most propagation rounds:
    its minimum sits at one end. Beside it, pairs that touch nothing else stay their own."""
    n = 400
    order = [i // 2 if i % 2 == 0 else n - 1 - i // 2 for i in range(n)]
    names = [f"h{v:04d}" for v in order]
    islands = [(f"z{i:03d}b", f"z{i:03d}a") for i in range(50)]
    edges = spark.createDataFrame(list(zip(names, names[1:])) + islands, "a string, b string")
    labels = {r["node"]: r["comp"] for r in incidents.components(edges).collect()}
    assert {labels[x] for x in names} == {"h0000"}
    assert all(labels[b] == labels[a] == a for b, a in islands)
    assert len(labels) == n + 2 * len(islands)
