"""Analyst verdicts that outlive the day they were given on (issue 11).

Spot's feedback (`scored_results/YYYYMMDD/feedback/ml_feedback.csv`) only changed a re-run of the
same day and ignored high/medium verdicts. Here a verdict is about a *connection* (source IP,
destination IP, destination port, protocol), holds who gave it, when, and an optional expiry, and
is one immutable JSON file under `{huser}/flow/verdicts/`: the OA writes a new file per verdict
(temporary name, then rename, so a reader never sees half of one) and nothing is rewritten, so two
analysts cannot lose each other's verdicts. The newest verdict on a connection is the one in force.

What a verdict does:
- sev 3 (low risk): the flow it was given on joins every later training baseline DUPFACTOR
  times (Spot's rule) and matching alerts are suppressed, both until it expires;
- sev 1/2 (high/medium): never enters training (an attacker who gets a flow marked "benign" could
  otherwise teach the model his traffic; a confirmed attack must not become baseline either) and
  counts as a confirmed alert in the precision figure of the model version that raised it.

The record layout and the "which verdicts are in force" rule live here once; the OA (pure Python,
no JVM) and the Spark job (DataFrames) both use them.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging

from spot_ae_job.errors import SpotAEError
from spot_ae_job.schema import ATTACK_FAMILIES

VERDICTS_DIR = "verdicts"  # under {huser}/flow
KEY = ["sip", "dip", "dport", "proto"]
SEVERITIES = {1: "high", 2: "medium", 3: "low"}

# One verdict record, in file order. `tstart, sport, ipkt, ibyt` name the flow the verdict was
# given on (its day's `all_scores` row): that flow is what training repeats DUPFACTOR times.
FIELDS = [
    "id", "sip", "dip", "dport", "proto", "sev", "who", "when", "expires",
    "day", "model_version", "tstart", "sport", "ipkt", "ibyt",
]
# Optional: set on the records of a verdict given on a whole incident (one file holds them all).
INCIDENT = "incident_id"
# Optional, on a confirmed attack (sev 1/2): the attack family the analyst names (schema.ATTACK_FAMILIES).
# `spot-ae train-family` learns that family from the flows the verdict covers (family.named_flows).
FAMILY = "family"
OPTIONAL = [INCIDENT, FAMILY]
RECORD_FIELDS = [*FIELDS, *OPTIONAL]  # a record's keys in file order; the optional ones only when set


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def check_family(family: str | None, sev: int) -> None:
    """A verdict may name one of the attack families, and only on a confirmed attack (sev 1/2)."""
    if family is None:
        return
    if family not in ATTACK_FAMILIES:
        raise SpotAEError(f"family must be one of {', '.join(ATTACK_FAMILIES)}, got {family!r}")
    if sev == 3:
        raise SpotAEError("a family names a confirmed attack: give it with sev 1 (high) or 2 (medium), not 3 (low risk)")


def new_verdict(
    *, sip: str, dip: str, dport: int, proto: str, sev: int, who: str, day: str,
    model_version: str | None = None, tstart: str | None = None, sport: int | None = None,
    ipkt: int | None = None, ibyt: int | None = None, expires: dt.datetime | None = None,
    now: dt.datetime | None = None, incident_id: str | None = None, family: str | None = None,
) -> dict:
    """A checked verdict record; its id is a hash of its content, so it names this one verdict."""
    if sev not in SEVERITIES:
        raise SpotAEError(f"sev must be 1 (high), 2 (medium) or 3 (low), got {sev!r}")
    check_family(family, sev)
    for name, ip in (("sip", sip), ("dip", dip)):
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SpotAEError(f"{name} must be an IP address, got {ip!r}") from None
    if not (isinstance(dport, int) and 0 <= dport <= 65535):
        raise SpotAEError(f"dport must be 0..65535, got {dport!r}")
    now = now or dt.datetime.now(dt.timezone.utc)
    if expires is not None and expires <= now:
        raise SpotAEError("the expiry must be in the future")
    rec = {
        "sip": str(sip), "dip": str(dip), "dport": int(dport), "proto": str(proto), "sev": int(sev),
        "who": str(who), "when": _iso(now), "expires": _iso(expires) if expires else None, "day": day,
        "model_version": model_version, "tstart": tstart, "sport": sport, "ipkt": ipkt, "ibyt": ibyt,
    }
    if incident_id is not None:
        rec[INCIDENT] = str(incident_id)
    if family is not None:
        rec[FAMILY] = family
    rec["id"] = "v" + hashlib.sha256(json.dumps(rec, sort_keys=True).encode()).hexdigest()[:20]
    return {k: rec[k] for k in RECORD_FIELDS if k in rec}


def incident_verdicts(flows: list[dict], *, incident_id: str, sev: int, who: str, day: str,
                      model_version: str | None = None, expires: dt.datetime | None = None,
                      now: dt.datetime | None = None, family: str | None = None) -> list[dict]:
    """A verdict on an incident: one record per connection of its member `flows` (most suspicious
    first: the first flow of each connection is the one training repeats), all with the same time
    and the incident id. Written together as ONE file (named by the smallest id, `to_lines`), so
    the verdict is all there or not at all; in force per connection like any other verdict."""
    now = now or dt.datetime.now(dt.timezone.utc)
    out, seen = [], set()
    for f in flows:
        key = (f["sip"], f["dip"], f["dport"], f["proto"])
        if key in seen:
            continue
        seen.add(key)
        out.append(new_verdict(sip=f["sip"], dip=f["dip"], dport=f["dport"], proto=f["proto"], sev=sev, who=who, day=day,
                               model_version=model_version, tstart=f.get("tstart"), sport=f.get("sport"), ipkt=f.get("ipkt"),
                               ibyt=f.get("ibyt"), expires=expires, now=now, incident_id=incident_id, family=family))
    if not out:
        raise SpotAEError(f"incident {incident_id} has no member flows")
    return out


def file_name(v: dict) -> str:
    """`verdicts/<when>-<id>.json`: names sort by time, and never collide."""
    return f"{VERDICTS_DIR}/{parse_time(v['when']).strftime('%Y%m%dT%H%M%SZ')}-{v['id']}.json"


def to_line(v: dict) -> bytes:
    rec = {k: v.get(k) for k in FIELDS}
    rec.update({k: v[k] for k in OPTIONAL if v.get(k) is not None})
    return (json.dumps(rec) + "\n").encode("utf-8")


def to_lines(records: list[dict]) -> bytes:
    return b"".join(to_line(v) for v in records)


def in_force(verdicts: list[dict], at: dt.datetime | None = None) -> list[dict]:
    """The newest verdict per connection, if it is not expired at `at` (default now).

    Newest first, then expiry: a later sev-1 verdict lifts an earlier sev-3 one, and an expired
    verdict does not bring an older one back."""
    at = at or dt.datetime.now(dt.timezone.utc)
    newest: dict[tuple, dict] = {}
    for v in verdicts:
        if parse_time(v["when"]) > at:
            continue
        k = tuple(v[c] for c in KEY)
        if k not in newest or (v["when"], v["id"]) > (newest[k]["when"], newest[k]["id"]):
            newest[k] = v
    return [v for v in newest.values() if not v.get("expires") or parse_time(v["expires"]) > at]


def precision_by_model(verdicts: list[dict]) -> list[dict]:
    """confirmed / (confirmed + dismissed) per model version, over the newest verdict on each
    (connection, model version): sev 1/2 confirm an alert, sev 3 dismisses it."""
    newest: dict[tuple, dict] = {}
    for v in verdicts:
        k = (v.get("model_version"), *(v[c] for c in KEY))
        if k not in newest or (v["when"], v["id"]) > (newest[k]["when"], newest[k]["id"]):
            newest[k] = v
    out: dict[str, dict] = {}
    for (mv, *_), v in newest.items():
        row = out.setdefault(mv or "unknown", {"model_version": mv or "unknown", "confirmed": 0, "dismissed": 0})
        row["confirmed" if v["sev"] in (1, 2) else "dismissed"] += 1
    for row in out.values():
        n = row["confirmed"] + row["dismissed"]
        row["precision"] = row["confirmed"] / n if n else None
    return sorted(out.values(), key=lambda r: r["model_version"])


# ---- the Spark side (imported lazily so the OA never needs pyspark's JVM) -----------------------

def spark_schema():
    from pyspark.sql import types as T

    types = {"dport": T.IntegerType(), "sev": T.IntegerType(), "sport": T.IntegerType(),
             "ipkt": T.LongType(), "ibyt": T.LongType()}
    return T.StructType([T.StructField(f, types.get(f, T.StringType()), True) for f in RECORD_FIELDS])


def _row(v: dict) -> tuple:
    return tuple(v.get(f) for f in RECORD_FIELDS)


def read_all(spark, huser: str) -> list[dict]:
    """Every verdict record on HDFS/local. Verdicts are few (one per analyst click), so they are
    read to the driver: the rule for which one is in force stays one Python function."""
    from spot_ae_job import fsutil
    from spot_ae_job.layout import Layout, is_day

    root = Layout(huser).verdicts
    if not fsutil.list_files(spark, root, (".json",)):
        return []
    rows = [r.asDict() for r in spark.read.schema(spark_schema()).json(root).collect()]
    # a malformed verdict file (Spark reads it as nulls) fails alone, as in the OA: it is skipped
    good = [r for r in rows if is_day(r.get("day")) and r.get("sev") in (1, 2, 3)]
    if len(good) < len(rows):
        logging.getLogger(__name__).warning("%d unreadable verdict record(s) under %s skipped", len(rows) - len(good), root)
    return good


def in_force_df(spark, huser: str, at: dt.datetime | None = None, sev: tuple[int, ...] = (1, 2, 3)):
    """The verdicts in force at `at` with the given severities, as a small DataFrame (or None)."""
    rows = [v for v in in_force(read_all(spark, huser), at) if v["sev"] in sev]
    if not rows:
        return None
    return spark.createDataFrame([_row(v) for v in rows], spark_schema())


def training_flows(spark, huser: str, at: dt.datetime | None = None):
    """The flows low-risk verdicts in force were given on, from their day's `all_scores`.

    Only sev 3 joins training; sev 1/2 never does (the poisoning guard is this filter)."""
    from pyspark.sql import functions as F

    from spot_ae_job import fsutil
    from spot_ae_job.schema import FLOW_COLUMNS, scored_results_location

    low = [v for v in in_force(read_all(spark, huser), at) if v["sev"] == 3 and v.get("tstart") is not None]
    parts = []
    for day in sorted({v["day"] for v in low}):
        scores = f"{scored_results_location(day, huser)}/all_scores"
        if not fsutil.exists(spark, scores):
            continue
        mine = spark.createDataFrame([_row(v) for v in low if v["day"] == day], spark_schema())
        flows = spark.read.parquet(scores)
        cond = [flows[c] == mine[c] for c in ("sip", "dip", "sport", "dport", "ipkt", "ibyt")] + [flows.treceived == mine.tstart]
        parts.append(flows.join(F.broadcast(mine), cond, "left_semi").select(*FLOW_COLUMNS))
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out
