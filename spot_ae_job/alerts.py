"""Suspicious flows as alerts in Elastic Common Schema (ECS) JSON lines, for a SIEM (issue 11).

One function, `write_alerts`, called by the batch job (mlops.write_results) and by a streaming
scorer per micro-batch. Spark writes the alerts next to Spot's results:

    scored_results/YYYYMMDD/alerts/part-*.txt      one ECS document per line
    scored_results/YYYYMMDD/alerts_summary.json    counts, and how many alerts each verdict suppressed
    scored_results/YYYYMMDD/alerts_allowlisted/    alerts an allow-list rule holds back (allowlist.py), kept
                                                   verbatim so that removing the rule restores them

An alert's id is a hash of the day, the flow's key and the model version, so scoring the same day
with the same model again gives the same ids, and the forwarder (forward.py) never sends one twice.
Only ECS fields with ECS types are used at the top level; Spot-AE's own lineage (model, threshold,
training days, feature schema version, rank, explanation) lives under the custom `spot_ae.*` key,
as ECS asks of custom fields.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from dataclasses import dataclass, field

import communityid
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spot_ae_job import allowlist, fsutil, verdicts
from spot_ae_job.layout import ALLOWLISTED, Day, Layout
from spot_ae_job.schema import PROTO_NUMBERS, SCHEMA_VERSION

ECS_VERSION = "8.11.0"
ALERT_ID = "alert_id"
COMMUNITY_ID = "community_id"
_EXPL = re.compile(r"^expl(\d+)_(feature|value)$")


def alerts_location(day: str, huser: str) -> str:
    return Layout(huser).results(Day.parse(str(day))).alerts


def held_location(day: str, huser: str) -> str:
    return Layout(huser).results(Day.parse(str(day))).alerts_allowlisted


def summary_location(day: str, huser: str) -> str:
    return Layout(huser).results(Day.parse(str(day))).alerts_summary


# ---- Community ID v1 ------------------------------------------------------------------------

def community_ids(sip: pd.Series, dip: pd.Series, sport: pd.Series, dport: pd.Series, proto: pd.Series) -> pd.Series:
    """Community ID v1 (seed 0, base64) of each flow, with Corelight's `communityid` library.

    The library has no vector API, so this loops in Python (about 6,000 flows/s); the job uses
    it only where the Spark SQL form below does not apply (IPv6, ICMP, other protocols). ICMP: nfdump keeps type and code in the destination port
    (type << 8 | code); the library maps them to the spec's port pair."""
    cid = communityid.CommunityID()
    out = []
    for s, d, sp, dp, pr in zip(sip, dip, sport, dport, proto):
        num = PROTO_NUMBERS.get(str(pr).upper()) if not str(pr).isdigit() else int(pr)
        try:
            if num in (1, 58):
                t, c = int(dp) >> 8, int(dp) & 0xFF
                tpl = (communityid.FlowTuple.make_icmp if num == 1 else communityid.FlowTuple.make_icmp6)(s, d, t, c)
            elif num in (6, 17, 132):
                tpl = communityid.FlowTuple(num, s, d, int(sp), int(dp))
            elif num is not None:
                tpl = communityid.FlowTuple.make_ip(s, d, num)
            else:
                out.append(None)
                continue
            out.append(cid.calc(tpl))
        except Exception:  # noqa: BLE001 - an address the spec cannot hash has no Community ID
            out.append(None)
    return pd.Series(out, dtype="object")


_community_id_udf = F.pandas_udf(community_ids, T.StringType())
_V4 = r"^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])([.](25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){3}$"
_PORT_PROTOS = {"TCP": 6, "UDP": 17, "SCTP": 132}


def _hex(col, width: int):
    return F.lpad(F.hex(col), width, "0")


def _community_id_sql():
    """Community ID v1 of an IPv4 TCP/UDP/SCTP flow in Spark SQL (JVM, no Python per row): the
    spec's packed tuple (seed, the smaller endpoint first, protocol, pad, ports) built as hex,
    then sha1 and base64. The same bytes the library hashes; the tests check both on the vectors."""
    num = F.coalesce(*[F.when(F.upper("proto") == k, F.lit(v)) for k, v in _PORT_PROTOS.items()])
    s = F.concat(*[_hex(F.split("sip", "[.]").getItem(i).cast("int"), 2) for i in range(4)])
    d = F.concat(*[_hex(F.split("dip", "[.]").getItem(i).cast("int"), 2) for i in range(4)])
    sp, dp = _hex(F.col("sport"), 4), _hex(F.col("dport"), 4)
    swap = (s > d) | ((s == d) & (F.col("sport") > F.col("dport")))  # fixed-width hex sorts as numbers
    packed = F.concat(
        F.lit("0000"), F.when(swap, d).otherwise(s), F.when(swap, s).otherwise(d), _hex(num, 2), F.lit("00"),
        F.when(swap, dp).otherwise(sp), F.when(swap, sp).otherwise(dp),
    )
    return F.concat(F.lit("1:"), F.base64(F.unhex(F.sha1(F.unhex(packed)))))


def with_community_id(df: DataFrame) -> DataFrame:
    """Adds `community_id`: IPv4 TCP/UDP/SCTP flows (nearly all) in Spark SQL; the rest (IPv6,
    ICMP, other protocols) through the library in a pandas UDF. Row order is not kept."""
    sql_ok = (F.col("sip").rlike(_V4) & F.col("dip").rlike(_V4) & F.upper("proto").isin(*_PORT_PROTOS)
              & F.col("sport").between(0, 65535) & F.col("dport").between(0, 65535))
    tagged = df.withColumn("_cid_sql", F.coalesce(sql_ok, F.lit(False)))
    fast = tagged.where("_cid_sql").withColumn(COMMUNITY_ID, _community_id_sql())
    slow = tagged.where("NOT _cid_sql").withColumn(COMMUNITY_ID, _community_id_udf("sip", "dip", "sport", "dport", "proto"))
    return fast.unionByName(slow).drop("_cid_sql")


# ---- alert ids and the ECS document ----------------------------------------------------------

_FLOW_KEY = ["treceived", "unix_tstamp", "sip", "sport", "dip", "dport", "proto", "tdur", "ipkt", "ibyt", "opkt", "obyt"]


def alert_id(day: str, model_version: str, key: list[str] = _FLOW_KEY):
    """Deterministic id of a flow's alert: sha256(day | flow key | model version), 32 hex digits.

    The batch job adds the flow's rank to the key: files without timestamps can hold identical
    flows, which still are separate alerts, and swapping two identical flows' ranks gives the
    same set of ids, so a re-run still reproduces them."""
    parts = [F.lit(day)] + [F.coalesce(F.col(c).cast("string"), F.lit("")) for c in key] + [F.lit(model_version)]
    return F.substring(F.sha2(F.concat_ws("|", *parts), 256), 1, 32)


def _iso(col):
    return F.date_format(F.timestamp_seconds(col), "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'")


def _explanation(df: DataFrame):
    """`expl1_feature/expl1_value, expl2_...` (issue 10, part A) as [{feature, value}], in order."""
    idx = sorted({int(m.group(1)) for c in df.columns if (m := _EXPL.match(c))})
    pairs = [i for i in idx if f"expl{i}_feature" in df.columns and f"expl{i}_value" in df.columns]
    if not pairs:
        return None
    items = [F.struct(F.col(f"expl{i}_feature").cast("string").alias("feature"), F.col(f"expl{i}_value").cast("double").alias("value")) for i in pairs]
    return F.filter(F.array(*items), lambda x: x["feature"].isNotNull())


def lineage(model, threshold: float, threshold_mode: str) -> dict:
    meta = model.meta
    days = meta.get("training_days") or ([meta["training_day"]] if meta.get("training_day") else [])
    return {
        "model": {"id": f"spot-ae/{model.kind}", "version": model.version, "kind": model.kind,
                  "training_days": list(days)},
        "threshold": {"mode": threshold_mode, "value": float(threshold),
                      "higher_is_suspicious": bool(model.higher_is_suspicious)},
        "feature_schema_version": int(meta.get("schema_version", SCHEMA_VERSION)),
    }


def ecs_documents(df: DataFrame, day: str, model, threshold: float, threshold_mode: str, created: str) -> DataFrame:
    """Flagged flows (+ `alert_id`, `community_id`) -> one column `value`: the ECS JSON line."""
    lin = lineage(model, threshold, threshold_mode)
    transport = F.lower(F.col("proto"))
    iana = F.coalesce(
        *[F.when(F.upper("proto") == k, F.lit(str(v))) for k, v in PROTO_NUMBERS.items()],
        F.when(F.col("proto").rlike("^[0-9]+$"), F.col("proto")),
    )
    spot = [
        F.lit(day).alias("day"),
        F.col("score").cast("double").alias("score"),
        (F.col("rank").cast("long") if "rank" in df.columns else F.lit(None).cast("long")).alias("rank"),
        F.struct(
            F.lit(lin["model"]["id"]).alias("id"), F.lit(lin["model"]["version"]).alias("version"),
            F.lit(lin["model"]["kind"]).alias("kind"),
            F.array(*[F.lit(d) for d in lin["model"]["training_days"]]).cast("array<string>").alias("training_days"),
        ).alias("model"),
        F.struct(F.lit(lin["threshold"]["mode"]).alias("mode"), F.lit(lin["threshold"]["value"]).alias("value"),
                 F.lit(lin["threshold"]["higher_is_suspicious"]).alias("higher_is_suspicious")).alias("threshold"),
        F.lit(lin["feature_schema_version"]).alias("feature_schema_version"),
    ]
    expl = _explanation(df)
    if expl is not None:
        spot.append(expl.alias("explanation"))
    doc = F.struct(
        F.coalesce(_iso("unix_tstamp"), F.lit(created)).alias("@timestamp"),  # ECS requires it; some inputs have no time
        F.struct(F.lit(ECS_VERSION).alias("version")).alias("ecs"),
        F.concat(F.lit("Spot-AE: suspicious "), F.col("proto"), F.lit(" flow "), F.col("sip"), F.lit(":"), F.col("sport").cast("string"),
                 F.lit(" -> "), F.col("dip"), F.lit(":"), F.col("dport").cast("string"), F.lit(" score "),
                 F.format_number(F.col("score"), 6)).alias("message"),
        F.struct(
            F.col(ALERT_ID).alias("id"),
            F.lit("alert").alias("kind"),
            F.array(F.lit("network")).alias("category"),
            F.array(F.lit("connection")).alias("type"),
            F.lit("spot_ae.flow").alias("dataset"),
            F.lit("spot-ae").alias("module"),
            _iso("unix_tstamp").alias("start"),
            _iso(F.col("unix_tstamp") + F.coalesce(F.col("tdur").cast("double"), F.lit(0.0))).alias("end"),
            (F.col("tdur").cast("double") * F.lit(1e9)).cast("long").alias("duration"),
            F.col("score").cast("double").alias("risk_score"),
            F.lit(created).alias("created"),
        ).alias("event"),
        F.struct(F.col("sip").alias("ip"), F.col("sport").cast("long").alias("port"),
                 F.col("ibyt").cast("long").alias("bytes"), F.col("ipkt").cast("long").alias("packets")).alias("source"),
        F.struct(F.col("dip").alias("ip"), F.col("dport").cast("long").alias("port"),
                 F.col("obyt").cast("long").alias("bytes"), F.col("opkt").cast("long").alias("packets")).alias("destination"),
        F.struct(transport.alias("transport"), iana.alias("iana_number"), F.col(COMMUNITY_ID).alias("community_id"),
                 (F.col("ibyt") + F.col("obyt")).cast("long").alias("bytes"),
                 (F.col("ipkt") + F.col("opkt")).cast("long").alias("packets")).alias("network"),
        F.struct(F.lit("Apache Spot").alias("vendor"), F.lit("spot-ae").alias("product")).alias("observer"),
        F.struct(*spot).alias("spot_ae"),
    )
    return df.select(F.to_json(doc).alias("value"))


# ---- the writer ------------------------------------------------------------------------------

@dataclass
class AlertSummary:
    day: str
    alerts: int
    suppressed: int
    uri: str
    by_verdict: dict = field(default_factory=dict)
    allowlisted: int = 0


def write_alerts(
    spark: SparkSession,
    flagged: DataFrame,
    model,
    day: str,
    huser: str,
    threshold: float | None = None,
    threshold_mode: str | None = None,
    mode: str = "overwrite",
    at: dt.datetime | None = None,
    progress=print,
    batch_id: int | None = None,
) -> AlertSummary:
    """Write the suspicious rows of `flagged` (a `suspicious` column, or all rows if none) as ECS
    alerts of `day`, leaving out those a low-risk verdict in force at `at` (default now) covers;
    those an allow-list rule covers go to `alerts_allowlisted/` instead (allowlist.py).

    `mode="overwrite"` (batch: a re-run replaces the day's alerts with the same ids) or "append"
    (each call adds files; the summary's counts add up). A streaming micro-batch passes its
    `batch_id`: its alerts go to `alerts/batch=<id>/`, overwritten, so a batch re-run after a
    crash replaces its own alerts instead of adding copies (a later batch run of the day
    replaces them all)."""
    threshold = model.threshold if threshold is None else threshold
    threshold_mode = threshold_mode or model.meta.get("threshold_mode", "p95")
    rows = flagged.where("suspicious") if "suspicious" in flagged.columns else flagged
    key = _FLOW_KEY + (["rank"] if "rank" in rows.columns else [])
    rows = rows.withColumn(ALERT_ID, alert_id(day, model.version, key))

    by_verdict: dict[str, int] = {}
    low = verdicts.in_force_df(spark, huser, at, sev=(3,))
    if low is not None:
        conn = verdicts.KEY
        hits = rows.join(F.broadcast(low.select(*conn, F.col("id").alias("_verdict"))), conn, "left")
        hits = hits.cache()
        by_verdict = {r["_verdict"]: int(r["count"]) for r in hits.where(F.col("_verdict").isNotNull()).groupBy("_verdict").count().collect()}
        rows = hits.where(F.col("_verdict").isNull()).drop("_verdict")

    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    out, held_out = alerts_location(day, huser), held_location(day, huser)
    if batch_id is not None:
        out, held_out, mode = f"{out}/batch={batch_id}", f"{held_out}/batch={batch_id}", "overwrite"

    def write(part: DataFrame, where: str) -> None:
        src = with_community_id(part)
        if "rank" in rows.columns:
            src = src.orderBy("rank")  # most suspicious first, as in flow_results.csv
        ecs_documents(src, day, model, threshold, threshold_mode, created).write.mode(mode).text(where)

    rules = allowlist.read_rules_spark(spark, huser)
    by_rule: dict[str, int] = {}
    if rules:
        marked = allowlist.mark(rows, rules, day).cache()
        write(marked.where(F.col(ALLOWLISTED).isNotNull()).drop(ALLOWLISTED), held_out)
        write(marked.where(F.col(ALLOWLISTED).isNull()).drop(ALLOWLISTED), out)
        by_rule = {r[ALLOWLISTED]: int(r["count"]) for r in marked.where(F.col(ALLOWLISTED).isNotNull()).groupBy(ALLOWLISTED).count().collect()}
        marked.unpersist()
    else:
        write(rows, out)
        if mode == "overwrite":  # nothing is held back now: held copies of an earlier run are in `out` again
            fsutil.delete(spark, held_out)

    summary_uri = summary_location(day, huser)
    prev = {}
    if (mode == "append" or batch_id is not None) and fsutil.exists(spark, summary_uri):
        prev = json.loads(fsutil.read_text(spark, summary_uri))
    suppressed = sum(by_verdict.values())
    by_batch = None
    if batch_id is not None:
        # per batch, so a batch re-run after a crash replaces its own counts instead of adding them again
        by_batch = {**prev.get("suppressed_by_batch", {}), str(batch_id): by_verdict}
        held_batch = {**prev.get("allowlisted_by_batch", {}), str(batch_id): by_rule}
        parts, held_parts = list(by_batch.values()), list(held_batch.values())
        # every batch's alerts of the day (and a batch run's, if one wrote there first)
        n = spark.read.option("recursiveFileLookup", "true").text(alerts_location(day, huser)).count()
    else:
        parts = [prev.get("suppressed_by_verdict", {}), by_verdict]
        held_parts = [prev.get("allowlisted_by_rule", {}), by_rule]
        n = spark.read.text(out).count()  # in append mode: every call's so far
    merged = dict(sum(map(Counter, parts), Counter()))  # verdict id -> suppressed alerts (counts >= 1)
    held = dict(sum(map(Counter, held_parts), Counter()))  # allow-list rule id -> alerts held back
    summary = {
        "day": day,
        "model_version": model.version,
        "alerts": n,
        "suppressed": sum(merged.values()),
        "suppressed_by_verdict": merged,
        "allowlisted": sum(held.values()),
        "allowlisted_by_rule": held,
        "threshold": {"mode": threshold_mode, "value": float(threshold)},
        "ecs_version": ECS_VERSION,
        "created": created,
        **({"suppressed_by_batch": by_batch, "allowlisted_by_batch": held_batch} if by_batch is not None else {}),
    }
    fsutil.write_text(spark, summary_uri, json.dumps(summary, indent=2))
    if low is not None:
        hits.unpersist()
    so_far = " (the day's so far)" if batch_id is not None else ""
    progress(f"{day}: {n} alerts{so_far} (ECS JSON lines) -> {out}; {suppressed} suppressed by low-risk verdicts, "
             f"{sum(by_rule.values())} held back by allow-list rules -> {held_out}")
    return AlertSummary(day, n, summary["suppressed"], out, merged, summary["allowlisted"])


def read_alerts(spark: SparkSession, day: str, huser: str) -> list[dict]:
    """The day's alert documents, in file order (driver-side: the forwarder's input)."""
    root = alerts_location(day, huser)
    dirs = [root] + [f"{root}/{d}" for d in fsutil.list_dirs(spark, root) if d.startswith("batch=")]
    dirs.sort(key=lambda d: int(d.rsplit("batch=", 1)[1]) if "batch=" in d else -1)
    out = []
    for d in dirs:
        for f in fsutil.list_files(spark, d):
            if not f.rsplit("/", 1)[-1].startswith("part-"):
                continue
            out.extend(json.loads(line) for line in fsutil.read_text(spark, f).splitlines() if line.strip())
    return out
