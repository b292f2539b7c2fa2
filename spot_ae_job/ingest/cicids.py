"""CIC-IDS2018 CICFlowMeter CSVs -> rows of Spot's flow table, with ground truth kept apart.

Three layouts exist in the wild and all are read: the original "Processed Traffic Data for ML"
files (80 columns, or 79 without Timestamp, sometimes 84 with Flow ID/Src IP/Src Port/Dst IP),
the same columns renamed to snake_case, and the 91-column "improved" re-extraction
(Liu, Engelen et al.) with IPs, ports, ISO timestamps and `Attempted Category`. Column names are
matched after normalising (lower case, letters and digits only), so the three spellings meet.

Mapping to nfdump's convention (SPEC §3): Fwd = the flow's initiator = ipkt/ibyt, Bwd = opkt/obyt.
Rows that cannot be trusted are returned as rejects with a reason, never dropped silently:
repeated header rows, numbers that are missing/NaN/Infinity, negative durations or counts, and
timestamps that do not parse or fall before 2000 (the dataset has a few 1970 dates).
"""
from __future__ import annotations

import re
from typing import NamedTuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spot_ae_job import fsutil
from spot_ae_job.errors import SpotAEError
from spot_ae_job.schema import (
    ATTEMPTED, FLOW_SCHEMA, IS_ATTACK, LABEL, REJECT_REASON, SOURCE_FILE,
)


class ReadResult(NamedTuple):
    flows: DataFrame  # FLOW_COLUMNS + LABEL_COLUMNS
    rejects: DataFrame  # source_file, raw (the row's fields as JSON), reject_reason


# normalised header name -> canonical field (several spellings per field)
_ALIASES = {
    "dst_port": ["dstport"],
    "protocol": ["protocol"],
    "timestamp": ["timestamp"],
    "duration_us": ["flowduration"],
    "fwd_pkts": ["totfwdpkts", "totalfwdpacket", "totalfwdpackets"],
    "bwd_pkts": ["totbwdpkts", "totalbwdpackets", "totalbwdpacket"],
    "fwd_bytes": ["totlenfwdpkts", "totallengthoffwdpacket", "totallengthoffwdpackets"],
    "bwd_bytes": ["totlenbwdpkts", "totallengthofbwdpacket", "totallengthofbwdpackets"],
    "fin": ["finflagcnt", "finflagcount"],
    "syn": ["synflagcnt", "synflagcount"],
    "rst": ["rstflagcnt", "rstflagcount"],
    "psh": ["pshflagcnt", "pshflagcount"],
    "ack": ["ackflagcnt", "ackflagcount"],
    "urg": ["urgflagcnt", "urgflagcount"],
    "cwr": ["cweflagcount", "cwrflagcount", "cweflagcnt", "cwrflagcnt"],  # CIC misspells CWR
    "ece": ["eceflagcnt", "eceflagcount"],
    "label": ["label"],
    "src_ip": ["srcip"],
    "dst_ip": ["dstip"],
    "src_port": ["srcport"],
    "attempted": ["attemptedcategory"],
}
_REQUIRED = ["dst_port", "protocol", "duration_us", "fwd_pkts", "bwd_pkts", "fwd_bytes", "bwd_bytes"]
_NUMERIC = _REQUIRED + ["fin", "syn", "rst", "psh", "ack", "urg", "cwr", "ece"]

# IANA protocol numbers -> the names nfdump prints; others stay as their number, as nfdump does.
_PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 2: "IGMP", 47: "GRE", 50: "ESP", 58: "ICMP6", 132: "SCTP"}
# nfdump 1.7's 8-character flag string: CWR ECE URG ACK PSH RST SYN FIN, '.' when unset.
_FLAG_ORDER = [("cwr", "C"), ("ece", "E"), ("urg", "U"), ("ack", "A"), ("psh", "P"), ("rst", "R"), ("syn", "S"), ("fin", "F")]

_UNLABELLED = ["", "cic", "needmanuallabel", "nan", "unknown"]
_TS_FORMATS = ["dd/MM/yyyy HH:mm:ss", "yyyy-MM-dd HH:mm:ss.SSSSSS", "yyyy-MM-dd HH:mm:ss", "dd/MM/yyyy hh:mm:ss a"]


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def detect_columns(header: list[str]) -> dict[str, str]:
    """Canonical field -> the file's own column name. Raises if a required field is missing."""
    by_norm = {_norm(h): h for h in header}
    found = {}
    for field, aliases in _ALIASES.items():
        for a in aliases:
            if a in by_norm:
                found[field] = by_norm[a]
                break
    missing = [f for f in _REQUIRED + ["label"] if f not in found]
    if missing:
        raise SpotAEError(
            "not a CICFlowMeter CSV: no column for " + ", ".join(missing)
            + f" (header starts {', '.join(header[:6])})"
        )
    return found


def _num(c: str) -> Column:
    return F.expr(f"try_cast(trim(`{c}`) as double)")


def _read_one(spark: SparkSession, uri: str) -> ReadResult:
    raw = spark.read.option("header", True).option("inferSchema", False).option("mode", "PERMISSIVE").csv(uri)
    # pandas-written files start with an unnamed index column that Spark calls _c0
    cols = detect_columns(raw.columns)
    raw = raw.withColumn(SOURCE_FILE, F.lit(uri.rstrip("/").rsplit("/", 1)[-1]))

    n = {f: _num(cols[f]) for f in _NUMERIC if f in cols}
    label = F.trim(F.col(f"`{cols['label']}`"))
    ts_text = F.trim(F.col(f"`{cols['timestamp']}`")) if "timestamp" in cols else F.lit(None).cast("string")
    ts = F.coalesce(*[F.expr(f"try_to_timestamp(ts_text__, '{fmt}')") for fmt in _TS_FORMATS])

    # The first failing check names the reason; order = most basic first.
    is_header = F.lower(label) == "label"
    bad_number = F.lit(False)
    for f in _REQUIRED:
        v = n[f]
        bad_number = bad_number | v.isNull() | F.isnan(v) | (F.abs(v) == float("inf"))
    for f in _NUMERIC:
        if f in n and f not in _REQUIRED:  # flag counts: absent value is an error too
            bad_number = bad_number | n[f].isNull() | F.isnan(n[f])
    negative_duration = n["duration_us"] < 0
    negative_count = (n["fwd_pkts"] < 0) | (n["bwd_pkts"] < 0) | (n["fwd_bytes"] < 0) | (n["bwd_bytes"] < 0)
    if "timestamp" in cols:
        bad_ts = F.col("ts__").isNull() | (F.year("ts__") < 2000)
    else:
        bad_ts = F.lit(False)
    reason = (
        F.when(is_header, "repeated_header")
        .when(bad_number, "non_numeric_or_non_finite")
        .when(negative_duration, "negative_duration")
        .when(negative_count, "negative_count")
        .when(bad_ts, "bad_timestamp")
    )
    staged = raw.withColumn("ts_text__", ts_text).withColumn("ts__", ts).withColumn(REJECT_REASON, reason)
    staged = staged.cache()

    original_cols = [c for c in raw.columns if c != SOURCE_FILE]
    rejects = staged.where(F.col(REJECT_REASON).isNotNull()).select(
        F.col(SOURCE_FILE),
        F.to_json(F.struct(*[F.col(f"`{c}`") for c in original_cols])).alias("raw"),
        F.col(REJECT_REASON),
    )

    good = staged.where(F.col(REJECT_REASON).isNull())
    proto_num = n["protocol"].cast("int")
    proto = F.coalesce(
        *[F.when(proto_num == k, F.lit(v)) for k, v in _PROTO_NAMES.items()], proto_num.cast("string")
    )
    flag = F.concat(*[
        (F.when(n[f] > 0, F.lit(ch)).otherwise(F.lit(".")) if f in n else F.lit(".")) for f, ch in _FLAG_ORDER
    ])
    tsc = F.col("ts__")
    out = {
        "treceived": F.date_format(tsc, "yyyy-MM-dd HH:mm:ss"),
        "unix_tstamp": F.unix_timestamp(tsc),
        "tryear": F.year(tsc), "trmonth": F.month(tsc), "trday": F.dayofmonth(tsc),
        "trhour": F.hour(tsc), "trminute": F.minute(tsc), "trsec": F.second(tsc),
        "tdur": n["duration_us"] / 1e6,
        "sip": F.trim(F.col(f"`{cols['src_ip']}`")) if "src_ip" in cols else F.lit(None),
        "dip": F.trim(F.col(f"`{cols['dst_ip']}`")) if "dst_ip" in cols else F.lit(None),
        "sport": _num(cols["src_port"]) if "src_port" in cols else F.lit(None),
        "dport": n["dst_port"],
        "proto": proto,
        "flag": flag,
        "ipkt": n["fwd_pkts"], "ibyt": n["fwd_bytes"], "opkt": n["bwd_pkts"], "obyt": n["bwd_bytes"],
    }
    select = [
        (out[f.name] if f.name in out else F.lit(None)).cast(f.dataType).alias(f.name) for f in FLOW_SCHEMA.fields
    ]
    # "Benign" is benign; a known placeholder (CICFlowMeter's default "CIC", "NeedManualLabel",
    # empty) is no ground truth at all: is_attack stays null rather than guessing.
    attack = F.when(F.lower(label).isin(*_UNLABELLED) | label.isNull(), F.lit(None).cast("boolean")).otherwise(
        ~F.lower(label).isin("benign")
    )
    flows = good.select(
        *select,
        label.alias(LABEL),
        attack.alias(IS_ATTACK),
        (_num(cols["attempted"]).cast("int") if "attempted" in cols else F.lit(None).cast("int")).alias(ATTEMPTED),
        F.col(SOURCE_FILE),
    )
    return ReadResult(flows, rejects)


def read_cicids(spark: SparkSession, paths: list[str] | str) -> ReadResult:
    """Read CIC-IDS2018 CSV files or directories of them (any mix of layouts)."""
    if isinstance(paths, str):
        paths = [paths]
    files: list[str] = []
    for p in paths:
        uri = fsutil.to_uri(p)
        found = fsutil.list_files(spark, uri, (".csv",))
        if not found:
            raise SpotAEError(f"no CSV files at {p}")
        files.extend(found)
    parts = []
    for f in files:
        try:
            parts.append(_read_one(spark, f))
        except SpotAEError as e:
            raise SpotAEError(f"{f}: {e}") from None
    flows = parts[0].flows
    rejects = parts[0].rejects
    for r in parts[1:]:
        flows = flows.unionByName(r.flows)
        rejects = rejects.unionByName(r.rejects)
    return ReadResult(flows, rejects)


__all__ = ["ReadResult", "read_cicids", "detect_columns"]
