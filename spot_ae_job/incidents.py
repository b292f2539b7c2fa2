"""From suspicious flows to incidents (issue 24): one stage, after the alerts, batch and stream alike.

An analyst triages incidents, not 5% of a day's flows one row at a time. Two suspicious flows
belong to the same incident when they share a host (as source or target) within `GAP_SECONDS` of
each other; chains merge (A->B and B->C within the gap make one incident). In Spark, without
collecting the day:

1. every flow gives one row per host it has (sip, dip); per host, rows sorted by time are cut
   into sessions wherever two consecutive flows are more than the gap apart (a window per host);
2. each (host, session) is a node and each flow an edge between its source's and its target's
   node; connected components of that graph, labelled in one task (`components`: the graph is
   of suspicious flows only), are the incidents.
   Flows with no IP address at all are an incident each.

An incident's id is the first 32 hex digits of sha256("incident" | day | the alert id of its
earliest flow): alert ids are deterministic (alerts.py), so a re-run gives the same incident ids,
and a streamed incident keeps its id while later batches extend it.

Streaming: an incident is **open** while a new flow's time is within the gap of the incident's
last seen flow and it shares one of the incident's hosts; such a flow extends it (same id)
instead of opening a new incident. A batch that links two open incidents merges them into the
earlier one (the other's latest row says `merged_into`).

Severity (0-100), from the incident's own figures, each mapped to [0, 1] and weighted:

    severity = 100 * (0.40 * s_score + 0.25 * s_flows + 0.20 * s_hosts + 0.15 * s_bytes)
    s_score = min(1, log2(max(1, worst score / threshold)) / 4)   16x the threshold (or more) = 1
    s_flows = min(1, log10(flows) / 4)                            10,000 flows = 1
    s_hosts = min(1, log2(hosts) / 8)                             256 hosts = 1
    s_bytes = min(1, log10(1 + bytes) / 9)                        1 GB = 1

(for a model where low scores are suspicious, the ratio is threshold / worst score); levels:
low < 25 <= medium < 50 <= high < 75 <= critical. The weights are a reading aid for sorting,
chosen before looking at any data, not a fitted probability.

Allow-listed flows never form incidents: `eligible()` is the one place where flows are left out
before grouping (flows an allow-list rule in force covers, and connections a low-risk verdict in
force covers, as the alerts leave them out).
"""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from spot_ae_job import allowlist, family, fsutil, verdicts
from spot_ae_job.alerts import _FLOW_KEY, ALERT_ID, ECS_VERSION, alert_id
from spot_ae_job.layout import INCIDENT_ID, SCORE, SUSPICIOUS, Day, Layout

GAP_SECONDS = 900  # two flows of a host more than 15 minutes apart start a new session
ECS_MAX_IDS = 1000  # alert ids and IPs listed in one ECS document (the Parquet tables hold them all)
LEVELS = ((75, "critical"), (50, "high"), (25, "medium"), (0, "low"))
BATCH_ID = "batch_id"
TS = "_ts"

# what a member flow keeps (incident_members/): enough to list it and to re-aggregate its incident
MEMBER_COLUMNS = [ALERT_ID, INCIDENT_ID, "unix_tstamp", "treceived", "sip", "sport", "dip", "dport", "proto",
                  "ipkt", "ibyt", "opkt", "obyt", SCORE, "rank", "expl1_feature", "family", "family_confidence"]

_HOST = T.StructType([T.StructField("ip", T.StringType()), T.StructField("as_source", T.LongType()),
                      T.StructField("as_target", T.LongType())])
_COUNT = lambda name, t: T.StructType([T.StructField(name, t), T.StructField("flows", T.LongType())])  # noqa: E731


# ------------------------------------------------------------------------------ which flows

def eligible(spark: SparkSession, suspicious: DataFrame, huser: str, day: str,
             at: dt.datetime | None = None, rules: list[allowlist.Rule] | None = None) -> DataFrame:
    """The suspicious flows that may form incidents. THE one filter: it leaves out flows an
    allow-list rule in force covers (allowlist.py; `rules`, or those read now) and connections a
    low-risk verdict in force covers (as write_alerts does), so an incident never lists an alert
    that was held back."""
    rules = allowlist.read_rules_spark(spark, huser) if rules is None else rules
    suspicious = allowlist.suppress(suspicious, rules, day)
    low = verdicts.in_force_df(spark, huser, at, sev=(3,))
    if low is None:
        return suspicious
    return suspicious.join(F.broadcast(low.select(*verdicts.KEY).distinct()), verdicts.KEY, "left_anti")


RULES_KEY = "allowlist_rules"  # incidents_summary.json: the ids of the rules the grouping left flows out by


def rule_ids(rules: list[allowlist.Rule]) -> list[str]:
    return sorted(r.id for r in rules)


def grouped_under_other_rules(spark: SparkSession, layout: Layout, day: Day) -> bool:
    """Whether the day's batch incidents were grouped under allow-list rules other than those in
    force now (a summary from before rules were recorded counts as grouped under none)."""
    res = layout.results(day)
    if not fsutil.exists(spark, res.incidents_summary):
        return False
    summary = json.loads(fsutil.read_text(spark, res.incidents_summary))
    return summary.get(RULES_KEY, []) != rule_ids(allowlist.read_rules_spark(spark, layout.huser))


def with_alert_ids(rows: DataFrame, day: str, model_version: str) -> DataFrame:
    """The alert id write_alerts gives each row (the rank joins the key where the batch has one)."""
    key = _FLOW_KEY + (["rank"] if "rank" in rows.columns else [])
    return rows.withColumn(ALERT_ID, alert_id(day, model_version, key))


# ------------------------------------------------------------------------------ grouping

def _host_rows(flows: DataFrame) -> DataFrame:
    """(alert_id, host, ts) for each end of each flow that has an address."""
    ts = F.coalesce(F.col("unix_tstamp"), F.lit(0)).cast("long")
    ends = [flows.select(ALERT_ID, F.col(c).alias("host"), ts.alias(TS)) for c in ("sip", "dip")]
    return ends[0].unionByName(ends[1]).where(F.col("host").isNotNull() & (F.col("host") != ""))


def sessions(flows: DataFrame, gap: int = GAP_SECONDS) -> DataFrame:
    """(alert_id, host, node, first, last): the host's session a flow belongs to, one row per end.
    A session = the host's flows with no gap longer than `gap` seconds between consecutive ones."""
    w = Window.partitionBy("host").orderBy(TS, ALERT_ID)
    new = F.coalesce((F.col(TS) - F.lag(TS).over(w)) > gap, F.lit(True)).cast("int")
    run = w.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    rows = _host_rows(flows).withColumn("_new", new).withColumn("_s", F.sum("_new").over(run))
    rows = rows.withColumn("node", F.concat_ws("#", F.col("host"), F.col("_s").cast("string")))
    span = Window.partitionBy("node")
    return rows.select(ALERT_ID, "host", "node", F.min(TS).over(span).alias("first"), F.max(TS).over(span).alias("last"))


def _labelled(batches):
    """mapInPandas: every edge (a, b) of the graph -> (node, comp) for every node. Min-label
    propagation with pointer jumping on integer codes: each round a node takes the smallest label
    among itself and its neighbours, then the label of its label; at the fixed point every node of
    a component holds the component's minimum. Codes follow the names' sorted order, so the
    smallest code is the smallest name."""
    frames = list(batches)
    if not frames:  # a graph with no edges gets no batch at all
        return
    e = pd.concat(frames, ignore_index=True)
    names, codes = np.unique(np.concatenate([e["a"].to_numpy(object), e["b"].to_numpy(object)]), return_inverse=True)
    a, b = codes[: len(e)], codes[len(e):]
    label = np.arange(len(names))
    while True:
        step = label.copy()
        np.minimum.at(step, a, label[b])
        np.minimum.at(step, b, label[a])
        step = step[step]
        if np.array_equal(step, label):
            break
        label = step
    yield pd.DataFrame({"node": names, "comp": names[label]})


def components(edges: DataFrame) -> DataFrame:
    """Undirected edges (a, b) -> (node, comp), comp = the smallest node name of its component.

    One Spark task labels the whole graph with numpy (`_labelled`), computed once here (a local
    checkpoint) because the stream reads the labels twice. Why one task: the graph is of a day's
    (or a micro-batch's) suspicious flows, the share of the day a threshold lets through, two
    names per flow: a few tens of MB at 275 k suspicious flows (a 5.5 M-flow day at p95).
    Label propagation as Spark joins, the earlier way, ran a job or two per round and took 3.9 s
    of the 14.6 s incidents stage for the demo day's 51 suspicious flows (local[2]; 1.7 s now)."""
    return edges.select("a", "b").coalesce(1).mapInPandas(_labelled, "node string, comp string").localCheckpoint()


def group(flows: DataFrame, gap: int = GAP_SECONDS, open_nodes: DataFrame | None = None) -> tuple[DataFrame, DataFrame | None]:
    """Flows (with alert_id) -> ((alert_id, comp), (comp, incident_id) or None): the connected
    component of each flow, and which open incidents each component reached.

    `open_nodes` (stream): (node, host, first, last) of incidents still open, each an extra node
    `open#<incident id>` linked to a batch's session of the same host that starts within `gap`
    of the incident's end (and does not end more than `gap` before it began)."""
    s = sessions(flows, gap).cache()
    per_flow = s.groupBy(ALERT_ID).agg(F.min("node").alias("a"), F.max("node").alias("b"))
    edges = per_flow.select("a", "b")
    if open_nodes is not None:
        sess = s.select("host", "node", "first", "last").distinct()
        link = sess.join(open_nodes.select("host", F.col("node").alias("_open"), F.col("last").alias("_olast"),
                                           F.col("first").alias("_ofirst")), "host")
        link = link.where((F.col("first") - F.col("_olast") <= gap) & (F.col("_ofirst") - F.col("last") <= gap))
        edges = edges.unionByName(link.select(F.col("node").alias("a"), F.col("_open").alias("b")))
    comp = components(edges)
    out = per_flow.join(comp.withColumnRenamed("node", "a"), "a").select(ALERT_ID, "comp")
    lonely = flows.select(ALERT_ID).join(per_flow.select(ALERT_ID), ALERT_ID, "left_anti") \
                  .select(ALERT_ID, F.concat(F.lit("flow#"), F.col(ALERT_ID)).alias("comp"))
    reached = None
    if open_nodes is not None:
        reached = (comp.where(F.col("node").startswith("open#"))
                   .select("comp", F.expr("substring(node, 6)").alias(INCIDENT_ID)))
    # computed now, while the sessions are cached: the callers read it several times, and a lazy
    # result would compute the sessions again after they are unpersisted
    out = out.unionByName(lonely).distinct().localCheckpoint()
    s.unpersist()
    return out, reached


def incident_id(day: str, first_alert):
    return F.substring(F.sha2(F.concat_ws("|", F.lit("incident"), F.lit(day), first_alert), 256), 1, 32)


# ------------------------------------------------------------------------------ summaries

def _member_parts(members: DataFrame, n_families: int) -> DataFrame:
    """Each member flow as a one-flow incident summary, so one aggregation (`combine`) serves a
    batch (members only) and a stream (earlier summaries + the batch's members)."""
    ts = F.col("unix_tstamp").cast("long")
    hosts = F.filter(F.array(
        F.struct(F.col("sip").alias("ip"), F.lit(1).cast("long").alias("as_source"), F.lit(0).cast("long").alias("as_target")),
        F.struct(F.col("dip").alias("ip"), F.lit(0).cast("long").alias("as_source"), F.lit(1).cast("long").alias("as_target"))),
        lambda h: h["ip"].isNotNull())
    expl = F.when(F.col("expl1_feature").isNotNull(),
                  F.array(F.struct(F.col("expl1_feature").alias("feature"), F.lit(1).cast("long").alias("flows"))))
    votes = F.col("_votes") if "_votes" in members.columns else F.lit(None)
    return members.select(
        INCIDENT_ID, ts.alias("first_seen"), ts.alias("last_seen"), F.lit(1).cast("long").alias("flows"),
        (F.coalesce(F.col("ibyt"), F.lit(0)) + F.coalesce(F.col("obyt"), F.lit(0))).cast("long").alias("bytes"),
        F.col(SCORE).cast("double").alias("max_score"), F.col(SCORE).cast("double").alias("min_score"),
        F.col(SCORE).cast("double").alias("sum_score"), hosts.cast(T.ArrayType(_HOST)).alias("hosts"),
        F.when(F.col("dport").isNotNull(), F.array(F.struct(F.col("dport").cast("int").alias("port"),
                                                           F.lit(1).cast("long").alias("flows"))))
         .cast(T.ArrayType(_COUNT("port", T.IntegerType()))).alias("ports"),
        F.coalesce(expl, F.array()).cast(T.ArrayType(_COUNT("feature", T.StringType()))).alias("explanations"),
        votes.cast(T.ArrayType(T.DoubleType())).alias("family_votes"),
        F.array().cast("array<string>").alias("absorbed"),
    )


def combine(parts: DataFrame) -> DataFrame:
    """Summaries (several per incident id) -> one per id: sums, extremes, and the per-host,
    per-port and per-explanation flow counts added up (every host kept: exact, not capped)."""
    scal = parts.groupBy(INCIDENT_ID).agg(
        F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen"), F.sum("flows").alias("flows"),
        F.sum("bytes").alias("bytes"), F.max("max_score").alias("max_score"), F.min("min_score").alias("min_score"),
        F.sum("sum_score").alias("sum_score"), F.array_distinct(F.flatten(F.collect_list("absorbed"))).alias("absorbed"))
    h = (parts.select(INCIDENT_ID, F.explode("hosts").alias("h")).groupBy(INCIDENT_ID, "h.ip")
         .agg(F.sum("h.as_source").alias("as_source"), F.sum("h.as_target").alias("as_target"))
         .groupBy(INCIDENT_ID).agg(F.sort_array(F.collect_list(F.struct(
             (-(F.col("as_source") + F.col("as_target"))).alias("_k"), "ip", "as_source", "as_target"))).alias("_h")))
    hosts = h.select(INCIDENT_ID, F.transform("_h", lambda x: F.struct(x["ip"].alias("ip"), x["as_source"].alias("as_source"),
                                                                        x["as_target"].alias("as_target"))).alias("hosts"))

    def counted(col: str, name: str):
        c = (parts.select(INCIDENT_ID, F.explode(col).alias("x")).groupBy(INCIDENT_ID, F.col(f"x.{name}").alias(name))
             .agg(F.sum("x.flows").alias("flows")).groupBy(INCIDENT_ID)
             .agg(F.sort_array(F.collect_list(F.struct((-F.col("flows")).alias("_k"), name, "flows"))).alias("_c")))
        return c.select(INCIDENT_ID, F.transform("_c", lambda x: F.struct(x[name].alias(name), x["flows"].alias("flows"))).alias(col))

    votes = (parts.where(F.col("family_votes").isNotNull())
             .select(INCIDENT_ID, F.posexplode("family_votes").alias("i", "v")).groupBy(INCIDENT_ID, "i")
             .agg(F.sum("v").alias("v")).groupBy(INCIDENT_ID)
             .agg(F.transform(F.sort_array(F.collect_list(F.struct("i", "v"))), lambda x: x["v"]).alias("family_votes")))
    return (scal.join(hosts, INCIDENT_ID, "left").join(counted("ports", "port"), INCIDENT_ID, "left")
            .join(counted("explanations", "feature"), INCIDENT_ID, "left").join(votes, INCIDENT_ID, "left")
            .select(INCIDENT_ID, "first_seen", "last_seen", "flows", "bytes", "max_score", "min_score", "sum_score",
                    F.coalesce("hosts", F.array().cast(T.ArrayType(_HOST))).alias("hosts"),
                    F.coalesce("ports", F.array().cast(T.ArrayType(_COUNT("port", T.IntegerType())))).alias("ports"),
                    F.coalesce("explanations", F.array().cast(T.ArrayType(_COUNT("feature", T.StringType())))).alias("explanations"),
                    "family_votes", "absorbed"))


def _clip01(c):
    return F.least(F.greatest(c, F.lit(0.0)), F.lit(1.0))


def severity(threshold: float, higher: bool):
    """The documented severity formula (module docstring) as a column of a combined summary."""
    worst = F.col("max_score") if higher else F.col("min_score")
    ratio = worst / F.lit(threshold) if higher else F.lit(threshold) / F.greatest(worst, F.lit(1e-12))
    if not threshold or threshold <= 0:
        ratio = F.lit(1.0)
    s_score = _clip01(F.log2(F.greatest(ratio, F.lit(1.0))) / 4)
    s_flows = _clip01(F.log10(F.greatest(F.col("flows"), F.lit(1))) / 4)
    s_hosts = _clip01(F.log2(F.greatest(F.size("hosts"), F.lit(1))) / 8)
    s_bytes = _clip01(F.log10(F.col("bytes") + 1) / 9)
    return F.round(100 * (0.40 * s_score + 0.25 * s_flows + 0.20 * s_hosts + 0.15 * s_bytes)).cast("int")


def finish(combined: DataFrame, day: str, model, threshold: float, families: list[str] | None = None,
           bar: float = 0.0) -> DataFrame:
    """A combined summary -> the incident row: severity, the main host and its role, peers,
    counts, and the likely family (the classifier's mean probability over the member flows;
    `unknown` below `bar` or without a classifier)."""
    higher = model.higher_is_suspicious
    sev = severity(threshold, higher)
    level = F.lit(LEVELS[-1][1])
    for lo, name in reversed(LEVELS[:-1]):
        level = F.when(sev >= lo, F.lit(name)).otherwise(level)
    main = F.try_element_at(F.col("hosts"), F.lit(1))  # null for flows without addresses
    role = F.when(main.isNull(), F.lit(None).cast("string")).when(main["as_source"] > 0, F.when(main["as_target"] > 0, "both").otherwise("source")).otherwise("target")
    if families:
        best = F.array_max(F.col("family_votes"))
        conf = best / F.col("flows")
        idx = F.array_position(F.col("family_votes"), best) - 1
        fam_name = F.try_element_at(F.array(*[F.lit(f) for f in families]), (idx + 1).cast("int"))
        family = (F.when(F.col("family_votes").isNull() | (conf < bar) | (fam_name == "benign"), "unknown")
                  .otherwise(fam_name))  # "benign": looks like none of the known families
        confidence = F.round(conf, 4)
    else:
        family, confidence = F.lit("unknown"), F.lit(None).cast("double")
    return combined.select(
        INCIDENT_ID, F.lit(day).alias("day"), "first_seen", "last_seen", "flows", "bytes", "max_score", "min_score",
        "sum_score", sev.alias("severity"), level.alias("severity_level"),
        main["ip"].alias("main_host"), role.alias("main_role"), "hosts",
        F.slice(F.transform("hosts", lambda h: h["ip"]), 2, 1 << 20).alias("peers"),
        F.size("hosts").alias("n_hosts"), F.size(F.filter("hosts", lambda h: h["as_source"] > 0)).alias("n_sources"),
        F.size(F.filter("hosts", lambda h: h["as_target"] > 0)).alias("n_targets"),
        "ports", F.size("ports").alias("n_ports"), "explanations", F.slice("explanations", 1, 3).alias("top_explanations"),
        family.alias("family"), confidence.alias("family_confidence"), "family_votes",
        F.lit(model.version).alias("model_version"), "absorbed", F.lit(None).cast("string").alias("merged_into"),
    )


def _members(rows: DataFrame, comp: DataFrame, day: str) -> DataFrame:
    """The flows with their incident id: the id comes from the component's earliest flow."""
    m = rows.join(comp, ALERT_ID)
    first = Window.partitionBy("comp").orderBy(F.col("unix_tstamp").asc_nulls_last(), ALERT_ID)
    return m.withColumn(INCIDENT_ID, incident_id(day, F.first(ALERT_ID).over(first.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing))))


def _prepared(rows: DataFrame, classifier, universe: DataFrame | None) -> DataFrame:
    """The member columns (+ the classifier's per-flow probabilities as `_votes`; host context
    counted over `universe`, the run's flows, where the rows do not carry it)."""
    for c in ("rank", "expl1_feature"):
        if c not in rows.columns:
            rows = rows.withColumn(c, F.lit(None).cast("int" if c == "rank" else "string"))
    if classifier is not None:
        rows = classifier.predict(rows, universe)  # + family, family_confidence, _votes
    else:
        rows = rows.withColumn("family", F.lit(None).cast("string")).withColumn("family_confidence", F.lit(None).cast("double"))
    return rows


# ------------------------------------------------------------------------------ a day (batch)

def write_day_incidents(spark: SparkSession, scored: DataFrame, model, day: Day, layout: Layout, threshold: float,
                        classifier="latest", gap: int = GAP_SECONDS, progress=print) -> dict:
    """The batch run's stage: the day's suspicious flows (of `scored`, every flow of the day) ->
    incidents/, incident_members/, incidents_ecs/ and incidents_summary.json; returns the summary
    (run.json's "incidents"). `classifier`: the family classifier ("latest": the saved one, if any)."""
    res = layout.results(day)
    if classifier == "latest":
        classifier = family.latest(spark, layout)
    rules = allowlist.read_rules_spark(spark, layout.huser)
    rows = eligible(spark, scored.where(SUSPICIOUS), layout.huser, str(day), rules=rules)
    rows = _prepared(with_alert_ids(rows, str(day), model.version), classifier, scored).cache()
    members = _members(rows, group(rows, gap)[0], str(day)).cache()
    fams = classifier.families if classifier is not None else None
    bar = classifier.bar if classifier is not None else 0.0
    inc = finish(combine(_member_parts(members, len(fams or []))), str(day), model, threshold, fams, bar)
    inc.write.mode("overwrite").parquet(res.incidents)
    members.select(*MEMBER_COLUMNS).write.mode("overwrite").parquet(res.incident_members)
    rows.unpersist()
    members.unpersist()
    stored = spark.read.parquet(res.incidents)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    ecs_documents(stored, spark.read.parquet(res.incident_members), created).write.mode("overwrite").text(res.incidents_ecs)
    summary = _summary(stored, str(day), model, gap, res.incidents, classifier)
    summary[RULES_KEY] = rule_ids(rules)
    summary["hosts"] = write_host_ranking(scored, spark.read.parquet(res.incident_members), stored, model, res.hosts)
    fsutil.write_text(spark, res.incidents_summary, json.dumps(summary, indent=2))
    progress(f"{day}: {summary['incidents']} incidents from {summary['flows']} suspicious flows -> {res.incidents}")
    return summary


def _summary(stored: DataFrame, day: str, model, gap: int, uri: str, classifier) -> dict:
    live = stored.where(F.col("merged_into").isNull())
    r = live.agg(F.count("*").alias("n"), F.sum("flows").alias("f"), F.max("severity").alias("s")).first()
    levels = {x["severity_level"]: int(x["count"]) for x in live.groupBy("severity_level").count().collect()}
    fams = {x["family"]: int(x["count"]) for x in live.groupBy("family").count().collect()}
    return {"day": day, "model_version": model.version, "incidents": int(r["n"]), "flows": int(r["f"] or 0),
            "max_severity": r["s"], "by_severity": levels, "by_family": fams, "gap_seconds": gap,
            "family_model": getattr(classifier, "version", None), "uri": uri}


# ------------------------------------------------------------------------------ hosts

HOST_COLUMNS = ["host_rank", "ip", "max_severity", "incidents", "n_incidents", "suspicious", "flows",
                "src_flows", "src_suspicious", "src_worst_score", "src_mean_score",
                "dst_flows", "dst_suspicious", "dst_worst_score", "dst_mean_score"]


def host_ranking(scored: DataFrame, members: DataFrame, incidents: DataFrame, model) -> DataFrame:
    """Every IP of the day: how anomalous it was as source and as target (flows, suspicious
    flows, worst and mean score on each side) and the incidents it is in (ids, most severe).
    Ranked by its most severe incident, then its suspicious flows, then its worst score."""
    higher = model.higher_is_suspicious
    worst = F.max if higher else F.min

    def side(col: str, p: str) -> DataFrame:
        return scored.where(F.col(col).isNotNull()).groupBy(F.col(col).alias("ip")).agg(
            F.count("*").alias(f"{p}_flows"), F.sum(F.col(SUSPICIOUS).cast("int")).alias(f"{p}_suspicious"),
            worst(SCORE).alias(f"{p}_worst_score"), F.avg(SCORE).alias(f"{p}_mean_score"))

    sev = incidents.select(INCIDENT_ID, "severity")
    inc = (members.select(INCIDENT_ID, F.explode(F.array("sip", "dip")).alias("ip")).where(F.col("ip").isNotNull())
           .distinct().join(sev, INCIDENT_ID)
           .groupBy("ip").agg(F.max("severity").alias("max_severity"),
                              F.transform(F.sort_array(F.collect_list(F.struct((-F.col("severity")).alias("k"), INCIDENT_ID))),
                                          lambda x: x[INCIDENT_ID]).alias("incidents")))
    h = side("sip", "src").join(side("dip", "dst"), "ip", "full").join(inc, "ip", "left")
    h = h.fillna(0, subset=["src_flows", "src_suspicious", "dst_flows", "dst_suspicious"]).withColumns({
        "incidents": F.coalesce("incidents", F.array().cast("array<string>")),
        "suspicious": F.col("src_suspicious") + F.col("dst_suspicious"), "flows": F.col("src_flows") + F.col("dst_flows")})
    h = h.withColumn("n_incidents", F.size("incidents"))
    w_score = F.greatest("src_worst_score", "dst_worst_score") if higher else F.least("src_worst_score", "dst_worst_score")
    order = [F.col("max_severity").desc_nulls_last(), F.col("suspicious").desc(),
             (w_score.desc_nulls_last() if higher else w_score.asc_nulls_last()), F.col("ip")]
    return h.withColumn("host_rank", F.row_number().over(Window.orderBy(*order))).select(*HOST_COLUMNS)


def write_host_ranking(scored: DataFrame, members: DataFrame, incidents: DataFrame, model, uri: str) -> dict:
    """The day's host ranking -> `hosts/` (Parquet, in rank order); its counts for the summary."""
    host_ranking(scored, members, incidents, model).orderBy("host_rank").write.mode("overwrite").parquet(uri)
    r = scored.sparkSession.read.parquet(uri).agg(F.count("*").alias("n"), F.sum((F.col("n_incidents") > 0).cast("int")).alias("i")).first()
    return {"hosts": int(r["n"]), "in_incidents": int(r["i"] or 0), "uri": uri}


# ------------------------------------------------------------------------------ the stream

def extend_stream(spark: SparkSession, scored: DataFrame, model, day: str, huser: str, batch_id: int,
                  threshold: float | None = None, classifier="latest", gap: int = GAP_SECONDS, progress=print) -> dict:
    """One micro-batch's suspicious flows of one day: extend the day's open incidents, open new
    ones. Writes stream/incidents/batch=<id>/ (every incident the batch touched, as it now stands),
    incident_members/batch=<id>/ and incidents_ecs/batch=<id>/, each overwritten, so a batch
    re-run after a crash replaces its own output; state is read from batches before this one.
    `scored`: the batch's flows of the day (the suspicious ones flagged)."""
    res = Layout(huser).results(Day.parse(day))
    if classifier == "latest":
        classifier = family.latest(spark, Layout(huser))
    threshold = model.threshold if threshold is None else threshold
    name = f"batch={batch_id}"
    index = StreamIndex(spark, res.stream_incidents_index)
    rows = eligible(spark, scored.where(SUSPICIOUS), huser, day)
    rows = _prepared(with_alert_ids(rows, day, model.version), classifier, scored).cache()
    if rows.isEmpty():
        rows.unpersist()
        for d in (res.stream_incidents, res.stream_incident_members, res.stream_incidents_ecs):
            fsutil.delete(spark, f"{d}/{name}")
        index.drop(batch_id)
        return {"batch": batch_id, "incidents_touched": 0}
    open_nodes = None
    lo = rows.agg(F.min(F.coalesce(F.col("unix_tstamp"), F.lit(0)))).first()[0]
    # only the batches that may hold an incident still open: the day's earlier batches are many
    prev = latest_stream_incidents(spark, res.stream_incidents, before=batch_id, index=index, since=lo - gap)
    if prev is not None:
        open_inc = prev.where(F.col("merged_into").isNull() & (F.col("last_seen") >= F.lit(lo - gap))).cache()
        open_nodes = open_inc.select(F.concat(F.lit("open#"), INCIDENT_ID).alias("node"), "first_seen", "last_seen",
                                     F.explode("hosts").alias("h")).select(
            "node", F.col("h.ip").alias("host"), F.col("first_seen").alias("first"), F.col("last_seen").alias("last"))
    comp, reached = group(rows, gap, open_nodes)
    # the id: the earliest open incident the component reaches, else its own earliest flow's
    members = _members(rows, comp, day)
    fams = classifier.families if classifier is not None else None
    bar = classifier.bar if classifier is not None else 0.0
    if open_nodes is not None:
        # which open incidents each component reached (through the component's open# nodes)
        reached = reached.join(open_inc.select(INCIDENT_ID, "first_seen"), INCIDENT_ID)
        w = Window.partitionBy("comp").orderBy("first_seen", INCIDENT_ID)
        keep = reached.withColumn("_keep", F.first(INCIDENT_ID).over(w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)))
        ids = keep.select("comp", F.col("_keep").alias("_id")).distinct()
        merged = keep.where(F.col(INCIDENT_ID) != F.col("_keep")).select(F.col(INCIDENT_ID).alias("_old"), F.col("_keep").alias("_new"))
        members = members.join(ids, "comp", "left").withColumn(INCIDENT_ID, F.coalesce("_id", INCIDENT_ID)).drop("_id")
        # earlier summaries of the reached incidents join the batch's members under the surviving id
        reached_ids = keep.select(F.col(INCIDENT_ID).alias("_old"), F.col("_keep").alias("_new")).distinct()
        earlier = (prev.join(reached_ids, prev[INCIDENT_ID] == reached_ids["_old"])
                   .withColumn("absorbed", F.when(F.col(INCIDENT_ID) != F.col("_new"),
                                                  F.array_union("absorbed", F.array(F.col(INCIDENT_ID)))).otherwise(F.col("absorbed")))
                   .withColumn(INCIDENT_ID, F.col("_new"))
                   .select(INCIDENT_ID, "first_seen", "last_seen", "flows", "bytes", "max_score", "min_score", "sum_score",
                           "hosts", "ports", "explanations", "family_votes", "absorbed"))
    else:
        earlier, merged = None, None
    members = members.cache()
    parts = _member_parts(members, len(fams or []))
    if earlier is not None:
        parts = parts.unionByName(earlier)
    combined = combine(parts)
    inc = finish(combined, day, model, threshold, fams, bar).withColumn(BATCH_ID, F.lit(batch_id).cast("long"))
    if merged is not None:
        gone = (prev.join(merged, prev[INCIDENT_ID] == merged["_old"]).drop("_old")
                .withColumn("merged_into", F.col("_new")).drop("_new").withColumn(BATCH_ID, F.lit(batch_id).cast("long")))
        inc = inc.unionByName(gone.select(*inc.columns))
    inc.write.mode("overwrite").parquet(f"{res.stream_incidents}/{name}")
    members.select(*MEMBER_COLUMNS).withColumn(BATCH_ID, F.lit(batch_id).cast("long")) \
        .write.mode("overwrite").parquet(f"{res.stream_incident_members}/{name}")
    members.unpersist()
    rows.unpersist()
    if prev is not None:
        open_inc.unpersist()
    stored = spark.read.parquet(f"{res.stream_incidents}/{name}")
    r = stored.agg(F.count("*").alias("n"), F.max("last_seen").alias("last"), F.min("first_seen").alias("first")).first()
    index.record(batch_id, r["last"])
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    # the touched incidents' members are in batches whose incidents reach their first flow
    mem = spark.read.parquet(*[f"{res.stream_incident_members}/{d}" for d in
                               index.batch_dirs(res.stream_incident_members, before=batch_id + 1, since=r["first"])])
    ecs_documents(stored.where(F.col("merged_into").isNull()), mem, created).write.mode("overwrite").text(f"{res.stream_incidents_ecs}/{name}")
    n = int(r["n"])
    progress(f"batch {batch_id} {day}: {n} incidents opened or extended")
    return {"batch": batch_id, "incidents_touched": n}


class StreamIndex:
    """stream/incidents_index.json: for each batch of a day, the latest `last_seen` of the
    incidents it wrote. Why: a batch needs only the incidents still open and their members, and
    a day holds a batch a rotation (1,440 with 1-minute files); reading them all made each batch
    slower than the one before. An incident only grows, so its rows' last_seen never falls from
    one batch to the next: the batches holding an open incident's latest row, or any member of an
    incident that began at time t, are among those whose entry is >= that time. An entry is
    written after its batch's incidents and members (so it names complete directories) and
    re-written by a re-run; a batch directory without one (written before the index existed) is
    read if Spark finished it."""

    def __init__(self, spark: SparkSession, uri: str | None):
        self.spark, self.uri = spark, uri
        self.entries = json.loads(fsutil.read_text(spark, uri))["batches"] if uri and fsutil.exists(spark, uri) else {}

    def record(self, batch_id: int, last_seen) -> None:
        self.entries[str(batch_id)] = None if last_seen is None else int(last_seen)
        fsutil.write_text(self.spark, self.uri, json.dumps({"batches": self.entries}))

    def drop(self, batch_id: int) -> None:
        if str(batch_id) in self.entries:
            del self.entries[str(batch_id)]
            fsutil.write_text(self.spark, self.uri, json.dumps({"batches": self.entries}))

    def batch_dirs(self, root: str, before: int | None = None, since=None) -> list[str]:
        """The complete batch=<id> directories under `root` before batch `before` whose incidents
        reach `since` (all, when None)."""
        out = []
        for d in fsutil.list_dirs(self.spark, root):
            b = d.split("=", 1)[1] if d.startswith("batch=") else None
            if b is None or (before is not None and int(b) >= before):
                continue
            if b not in self.entries:
                if fsutil.exists(self.spark, f"{root}/{d}/_SUCCESS"):
                    out.append(d)
            elif since is None or self.entries[b] is None or self.entries[b] >= since:
                out.append(d)
        return out


def latest_stream_incidents(spark: SparkSession, root: str, before: int | None = None,
                            index: "StreamIndex | None" = None, since=None) -> DataFrame | None:
    """The stream's incidents of a day as they stand: each id's row from the latest batch that
    wrote it (only batches before `before`, when given; only complete batches; with an `index`,
    only those whose incidents reach `since`, which keeps every incident with last_seen >= since
    as it stands)."""
    if not fsutil.exists(spark, root):
        return None
    dirs = (index or StreamIndex(spark, None)).batch_dirs(root, before, since)
    if not dirs:
        return None
    df = spark.read.parquet(*[f"{root}/{d}" for d in dirs])
    w = Window.partitionBy(INCIDENT_ID).orderBy(F.col(BATCH_ID).desc())
    return df.withColumn("_r", F.row_number().over(w)).where("_r = 1").drop("_r")


# ------------------------------------------------------------------------------ ECS

def ecs_documents(incidents: DataFrame, members: DataFrame, created: str) -> DataFrame:
    """One ECS document per incident, linking its alerts: `event.kind` alert, dataset
    `spot_ae.incident`, `related.ip` its hosts, `spot_ae.incident.alert_ids` its alerts (most
    suspicious first, at most ECS_MAX_IDS; `alerts` is the full count). `event.id` is the incident id
    and its flow count, so a re-run repeats it and a grown streamed incident is a new revision."""
    ids = (members.groupBy(INCIDENT_ID).agg(F.slice(F.transform(F.sort_array(F.collect_list(
        F.struct((-F.col(SCORE)).alias("_k"), F.col(ALERT_ID).alias("id")))), lambda x: x["id"]), 1, ECS_MAX_IDS).alias("_ids")))
    df = incidents.join(ids, INCIDENT_ID, "left")
    iso = lambda c: F.date_format(F.timestamp_seconds(c), "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")  # noqa: E731
    ips = F.slice(F.transform("hosts", lambda h: h["ip"]), 1, ECS_MAX_IDS)
    doc = F.struct(
        F.coalesce(iso("first_seen"), F.lit(created)).alias("@timestamp"),
        F.struct(F.lit(ECS_VERSION).alias("version")).alias("ecs"),
        F.concat(F.lit("Spot-AE incident: "), F.col("flows").cast("string"), F.lit(" suspicious flows, "),
                 F.col("n_hosts").cast("string"), F.lit(" hosts around "), F.coalesce("main_host", F.lit("?")),
                 F.lit(" ("), F.coalesce("main_role", F.lit("no address")), F.lit("), severity "), F.col("severity").cast("string"),
                 F.lit(", likely "), F.coalesce("family", F.lit("unknown"))).alias("message"),
        F.struct(
            F.concat_ws("-", F.col(INCIDENT_ID), F.col("flows").cast("string")).alias("id"),
            F.lit("alert").alias("kind"), F.array(F.lit("network"), F.lit("intrusion_detection")).alias("category"),
            F.array(F.lit("info")).alias("type"), F.lit("spot_ae.incident").alias("dataset"), F.lit("spot-ae").alias("module"),
            iso("first_seen").alias("start"), iso("last_seen").alias("end"), F.col("severity").cast("long").alias("severity"),
            F.col("max_score").alias("risk_score"), F.lit(created).alias("created"),
        ).alias("event"),
        F.struct(ips.alias("ip")).alias("related"),
        F.struct(F.col("bytes").alias("bytes")).alias("network"),
        F.struct(F.lit("Apache Spot").alias("vendor"), F.lit("spot-ae").alias("product")).alias("observer"),
        F.struct(F.struct(
            F.col(INCIDENT_ID).alias("id"), F.col("day").alias("day"), F.col("flows").alias("alerts"),
            F.coalesce("_ids", F.array().cast("array<string>")).alias("alert_ids"),
            (F.col("flows") > ECS_MAX_IDS).alias("alert_ids_truncated"),
            F.col("severity_level").alias("severity_level"), F.col("main_host").alias("main_host"),
            F.col("main_role").alias("main_role"), F.col("n_sources").alias("sources"), F.col("n_targets").alias("targets"),
            F.slice("ports", 1, 20).alias("ports"), F.col("top_explanations").alias("explanations"),
            F.col("max_score").alias("max_score"), F.col("sum_score").alias("sum_score"),
            F.col("family").alias("family"), F.col("family_confidence").alias("family_confidence"),
            F.col("model_version").alias("model_version"),
        ).alias("incident")).alias("spot_ae"),
    )
    return df.orderBy(F.col("severity").desc(), INCIDENT_ID).select(F.to_json(doc).alias("value"))


def read_incident_documents(spark: SparkSession, day: str, huser: str) -> list[dict]:
    """The day's incident documents (batch run, then the stream's batches in order): the
    forwarder sends them after the alerts."""
    res = Layout(huser).results(Day.parse(day))
    dirs = [res.incidents_ecs] if fsutil.exists(spark, res.incidents_ecs) else []
    if fsutil.exists(spark, res.stream_incidents_ecs):
        b = sorted((d for d in fsutil.list_dirs(spark, res.stream_incidents_ecs) if d.startswith("batch=")),
                   key=lambda d: int(d.split("=", 1)[1]))
        dirs += [f"{res.stream_incidents_ecs}/{d}" for d in b]
    out = []
    for d in dirs:
        for f in fsutil.list_files(spark, d):
            if f.rsplit("/", 1)[-1].startswith("part-"):
                out.extend(json.loads(x) for x in fsutil.read_text(spark, f).splitlines() if x.strip())
    return out

