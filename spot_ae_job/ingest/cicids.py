"""CICFlowMeter CSVs (CIC-IDS2017, CSE-CIC-IDS2018) -> rows of Spot's flow table, ground truth apart.

Every dialect CIC's data sets and CICFlowMeter releases write is read, and named in
`ReadResult.files` (`DIALECTS`): CIC-IDS2018's "Processed Traffic Data for ML" files
(CICFlowMeter-V3's short names: 80 columns, 79 without Timestamp, 84 with Flow ID/Src IP/Src
Port/Dst IP, as CICFlowMeter 4 also writes), the same columns renamed to snake_case, the
91-column "improved" re-extraction (Liu, Engelen et al.: IPs, ISO timestamps, `Attempted
Category`), and CIC-IDS2017's long names with leading spaces (` Destination Port`, `Total
Backward Packets`; MachineLearningCVE without Flow ID/IPs/Protocol/Timestamp, TrafficLabelling
with them, times like `7/7/2017 3:30`). Column names are matched after normalising (lower case,
letters and digits only).

A line is its fields split at commas: CICFlowMeter writes no quotes (no value holds a comma),
so a line whose field count differs from the header's can only be a damaged row, and Spark's
CSV reader would silently drop its extra field and shift the rest. It is a reject. A line that
is not UTF-8 is read as Windows-1252 (CIC-IDS2017 was written on Windows: its web-attack labels
hold byte 0x96, an en dash).

The clock: CICFlowMeter prints times with Java's `hh` (12-hour) and no AM/PM. A file whose
day-first times show an hour of 0 or 13-23 is on a 24-hour clock and read as written. Otherwise
the hour is inferred by office hours: 8-12 as written, 1-7 as 13-19. The captures ran in office
hours: the improved re-extraction's excerpt, on a 24-hour clock (UTC; the site is UTC-4), has
every one of its flows between 08:00 and 19:59 local time, and each attack of the original
files lands in its published time slot this way (SSH-Bruteforce on 14/02, written 02:24-03:31,
ran 14:01-15:31). A flow really
captured between 20:00 and 07:59 would be placed 12 hours off; `ReadResult.files` says per file
which clock was assumed and how many hours were read as afternoon.

Mapping to nfdump's convention (SPEC §3): Fwd = the flow's initiator = ipkt/ibyt, Bwd = opkt/obyt.
Rows that cannot be trusted are returned as rejects with a reason, never dropped or changed:
a wrong field count, control characters or quotes, repeated header rows, numbers that are
missing/NaN/Infinity, counts or ports with a fraction or beyond their column's range, negative
durations or counts, timestamps that do not parse or fall before 2000 (the dataset has a few
1970 dates). Labels that are placeholders (CICFlowMeter's `CIC`, `NeedManualLabel`, `No Label`,
empty) are no ground truth: `is_attack` is null, never an attack.
"""
from __future__ import annotations

import re
from typing import NamedTuple

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from spot_ae_job import fsutil
from spot_ae_job.errors import SpotAEError
from spot_ae_job.schema import (
    ATTEMPTED, FLOW_SCHEMA, IS_ATTACK, LABEL, REJECT_REASON, SOURCE_FILE,
)


class ReadResult(NamedTuple):
    flows: DataFrame  # FLOW_COLUMNS + LABEL_COLUMNS
    rejects: DataFrame  # source_file, raw (the row's fields as JSON; a line that does not split: the line), reject_reason
    files: tuple = ()  # per input file: {source_file, dialect, clock, hours_read_as_pm (rows, loaded or rejected)}


# normalised header name -> canonical field (several spellings per field)
_ALIASES = {
    "dst_port": ["dstport", "destinationport"],
    "protocol": ["protocol"],
    "timestamp": ["timestamp"],
    "duration_us": ["flowduration"],
    "fwd_pkts": ["totfwdpkts", "totalfwdpacket", "totalfwdpackets"],
    "bwd_pkts": ["totbwdpkts", "totalbwdpackets", "totalbwdpacket", "totalbackwardpackets"],
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
    "src_ip": ["srcip", "sourceip"],
    "dst_ip": ["dstip", "destinationip"],
    "src_port": ["srcport", "sourceport"],
    "attempted": ["attemptedcategory"],
}
_REQUIRED = ["dst_port", "duration_us", "fwd_pkts", "bwd_pkts", "fwd_bytes", "bwd_bytes", "label"]
_COUNTS = ["fwd_pkts", "bwd_pkts", "fwd_bytes", "bwd_bytes"]
_FLAGS = ["fin", "syn", "rst", "psh", "ack", "urg", "cwr", "ece"]
# integer fields -> (min, max) of what their column can hold
_INT_RANGE = {"dst_port": (0, 65535), "src_port": (0, 65535), "protocol": (0, 255), "attempted": (-2**31, 2**31 - 1),
              **{c: (None, 2**63 - 1) for c in _COUNTS}}  # (negative counts have their own reason)
_INTEGER = r"^[+-]?[0-9]+(\.0*)?$"  # an integer, possibly written as 708.0

# dialect name -> normalised columns only it has (first match wins)
DIALECTS = [
    ("cic-improved-2022", ["attemptedcategory", "totalfwdpacket"]),
    ("cicids2017", ["totalbackwardpackets", "destinationport"]),
    ("cicflowmeter-v3-snake_case", ["tot_fwd_pkts"]),
    ("cicflowmeter-v3", ["totfwdpkts"]),
]

# IANA protocol numbers -> the names nfdump prints; others stay as their number, as nfdump does.
_PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 2: "IGMP", 47: "GRE", 50: "ESP", 58: "ICMP6", 132: "SCTP"}
# nfdump 1.7's 8-character flag string: CWR ECE URG ACK PSH RST SYN FIN, '.' when unset.
_FLAG_ORDER = [("cwr", "C"), ("ece", "E"), ("urg", "U"), ("ack", "A"), ("psh", "P"), ("rst", "R"), ("syn", "S"), ("fin", "F")]

_UNLABELLED = ["", "cic", "needmanuallabel", "nolabel", "nan", "unknown"]  # compared normalised
# times that say their own clock (24-hour or AM/PM); day-first times without AM/PM are _DAY_FIRST
_TS_FORMATS = ["yyyy-MM-dd HH:mm:ss.SSSSSS", "yyyy-MM-dd HH:mm:ss", "dd/MM/yyyy hh:mm:ss a"]
_DAY_FIRST = r"^([0-9]{1,2})/([0-9]{1,2})/([0-9]{4}) ([0-9]{1,2}):([0-9]{2})(:([0-9]{2}))?$"
# Windows-1252's characters for bytes 0x80-0x9f (ISO-8859-1 reads them as C1 controls)
_C1 = "".join(chr(b) for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D))
_CP1252 = bytes(ord(c) for c in _C1).decode("cp1252")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _detect(header: list[str]) -> tuple[dict[str, int], str]:
    """(canonical field -> column index, dialect name). Raises if a required field is missing."""
    by_norm: dict[str, int] = {}
    for i, h in enumerate(header):
        by_norm.setdefault(_norm(h), i)
    found = {}
    for fld, aliases in _ALIASES.items():
        for a in aliases:
            if a in by_norm:
                found[fld] = by_norm[a]
                break
    missing = [f for f in _REQUIRED if f not in found]
    if missing:
        raise SpotAEError(
            "not a CICFlowMeter CSV: no column for " + ", ".join(missing)
            + f" (header starts {', '.join(header[:6])})"
        )
    snake = {h.strip().lower() for h in header}
    dialect = next((name for name, marks in DIALECTS if any(m in by_norm or m in snake for m in marks)), "cicflowmeter")
    return found, dialect


def detect_columns(header: list[str]) -> dict[str, str]:
    """Canonical field -> the file's own column name. Raises if a required field (or Protocol) is missing."""
    found, _ = _detect(header)
    if "protocol" not in found:
        raise SpotAEError(f"not a CICFlowMeter CSV with protocols: no Protocol column (header starts {', '.join(header[:6])})")
    return {f: header[i] for f, i in found.items()}


def _text(value: Column) -> Column:
    """A line as text: UTF-8 as is, anything else as Windows-1252 (Spark 4 decodes only ISO-8859-1
    among single-byte charsets, so its C1 range is mapped to Windows-1252's characters)."""
    latin1 = F.decode(value.cast("binary"), "ISO-8859-1")
    return F.when(F.is_valid_utf8(value), value).otherwise(F.translate(latin1, _C1, _CP1252))


def _raw_names(header: list[str]) -> list[str]:
    """Header names for the reject JSON, made unique as pandas does (CIC-IDS2017 has two
    ` Fwd Header Length` columns)."""
    seen: dict[str, int] = {}
    out = []
    for h in header:
        n = seen.get(h, 0)
        seen[h] = n + 1
        out.append(h if n == 0 else f"{h}.{n}")
    return out


def _read_one(spark: SparkSession, uri: str) -> tuple[ReadResult, dict]:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    # The record number within the partition is the low 33 bits of monotonically_increasing_id:
    # the header is record 0 of the split that starts the file (one file per read here).
    lines = spark.read.text(uri).select(
        F.col("value"), (F.input_file_block_start() == 0).alias("first_block__"),
        F.monotonically_increasing_id().bitwiseAND(F.lit((1 << 33) - 1)).alias("rec__"))
    first = lines.limit(1).collect()
    if not first:
        raise SpotAEError("empty file: no header")
    header = first[0]["value"].lstrip("\ufeff").split(",")
    cols, dialect = _detect(header)
    n_fields = len(header)

    line = _text(F.col("value"))
    parts = F.split(line, ",", -1)
    fields = F.when(F.size(parts) == n_fields, parts)  # null for a line that does not split into the header's fields

    def field(f: str) -> Column:
        return F.trim(F.try_element_at(F.col("fields__"), F.lit(cols[f] + 1)))

    staged = (lines.where(~(F.col("first_block__") & (F.col("rec__") == 0)) & (F.length("value") > 0))
              .select(line.alias("line__"), fields.alias("fields__")))

    # numbers: doubles for the duration and flag counts, exact integers for ports, protocol, counts
    dbl = {f: field(f).try_cast("double") for f in ["duration_us", *_FLAGS] if f in cols}
    intf = [f for f in _INT_RANGE if f in cols]
    is_int = {f: field(f).rlike(_INTEGER) for f in intf}
    ival = {f: F.regexp_extract(field(f), r"^([+-]?[0-9]+)", 1).try_cast("bigint") for f in intf}
    label = field("label")
    ts_text = field("timestamp") if "timestamp" in cols else F.lit(None).cast("string")

    bad_number = F.lit(False)  # every numeric field the row has must be a finite number
    for f in [*dbl, *intf]:
        v = dbl[f] if f in dbl else field(f).try_cast("double")
        bad_number = bad_number | v.isNull() | F.isnan(v) | (F.abs(v) == float("inf"))
    non_integer = F.lit(False)
    out_of_range = F.lit(False)
    for f in intf:
        lo, hi = _INT_RANGE[f]
        non_integer = non_integer | ~is_int[f]
        v = ival[f]
        out_of_range = out_of_range | v.isNull() | (v > hi) | ((v < lo) if lo is not None else F.lit(False))
    negative_count = F.lit(False)
    for f in _COUNTS:
        negative_count = negative_count | (ival[f] < 0)

    # the clock: day-first times without AM/PM (CICFlowMeter's `hh`) vs times that say their clock
    day_first = F.regexp_extract(ts_text, _DAY_FIRST, 0) != ""
    h = F.regexp_extract(ts_text, _DAY_FIRST, 4).try_cast("int")

    def stamp_of(hour: Column) -> Column:
        parts = [F.regexp_extract(ts_text, _DAY_FIRST, i) for i in (3, 2, 1, 5, 7)]
        text = F.concat_ws("", parts[0], F.lit("-"), parts[1], F.lit("-"), parts[2], F.lit(" "), hour.cast("string"),
                           F.lit(":"), parts[3], F.lit(":"), F.when(parts[4] == "", "0").otherwise(parts[4]))
        return F.try_to_timestamp(text, F.lit("y-M-d H:m:s"))

    written = stamp_of(h)  # the hour as written, for the file's clock evidence
    staged = staged.withColumn("ts_text__", ts_text).withColumn("h__", F.when(day_first & written.isNotNull(), h))
    # On disk, not in memory: the split lines (every field as a string) are several times the
    # file's size, and unrolling 128 MB input splits into memory blocks ran a local[2] load of a
    # 3 GB file (5.5 M flows) out of its 4 GB heap. Most blocks went to disk anyway.
    staged = staged.persist(StorageLevel.DISK_ONLY)
    clock_row = {"h24": 0, "pm": 0, "day_first": 0}
    if "timestamp" in cols:  # (one pass over the file, which also fills the cache)
        clock_row = staged.agg(
            F.max(F.when((F.col("h__") == 0) | (F.col("h__") > 12), 1).otherwise(0)).alias("h24"),
            F.sum(F.when(F.col("h__").between(1, 7), 1).otherwise(0)).alias("pm"),
            F.count("h__").alias("day_first"),
        ).first()
    twelve = bool(clock_row["day_first"]) and not clock_row["h24"]
    clock = "none" if "timestamp" not in cols else ("12h, 1-7 read as 13-19" if twelve else "24h")
    info = {"source_file": name, "dialect": dialect, "clock": clock,
            "hours_read_as_pm": int(clock_row["pm"] or 0) if twelve else 0}

    hour = F.col("h__")
    if twelve:
        hour = F.when(hour.between(1, 7), hour + 12).otherwise(hour)
    ts = F.when(F.col("h__").isNotNull(), stamp_of(hour)).otherwise(
        F.coalesce(*[F.try_to_timestamp(F.col("ts_text__"), F.lit(fmt)) for fmt in _TS_FORMATS]))
    ts = F.when(F.col("h__").isNotNull() | ~day_first, ts)  # (a day-first text that is no date: no stamp)
    bad_ts = (ts.isNull() | (F.year(ts) < 2000)) if "timestamp" in cols else F.lit(False)

    # The first failing check names the reason; order = most basic first.
    fc = F.col("fields__")
    reason = (
        F.when(fc.isNull(), "wrong_field_count")
        .when(F.col("line__").rlike(r"[\x00-\x1f\x7f]"), "control_characters")
        .when(F.col("line__").contains('"'), "quoted_field")
        .when(F.lower(label) == "label", "repeated_header")
        .when(bad_number, "non_numeric_or_non_finite")
        .when(non_integer, "non_integer")
        .when(dbl["duration_us"] < 0, "negative_duration")
        .when(negative_count, "negative_count")
        .when(out_of_range, "out_of_range")
        .when(bad_ts, "bad_timestamp")
    )
    staged = staged.withColumn("ts__", ts).withColumn(REJECT_REASON, reason)

    raw_names = _raw_names(header)
    as_json = F.to_json(F.struct(*[F.try_element_at(fc, F.lit(i + 1)).alias(n) for i, n in enumerate(raw_names)]))
    rejects = staged.where(F.col(REJECT_REASON).isNotNull()).select(
        F.lit(name).alias(SOURCE_FILE),
        F.when(fc.isNull(), F.col("line__")).otherwise(as_json).alias("raw"),
        F.col(REJECT_REASON),
    )

    good = staged.where(F.col(REJECT_REASON).isNull())
    proto_num = ival["protocol"] if "protocol" in cols else F.lit(None).cast("bigint")
    proto = F.coalesce(*[F.when(proto_num == k, F.lit(v)) for k, v in _PROTO_NAMES.items()], proto_num.cast("string"))
    flag = F.concat(*[
        (F.when(dbl[f] > 0, F.lit(ch)).otherwise(F.lit(".")) if f in dbl else F.lit(".")) for f, ch in _FLAG_ORDER
    ])
    tsc = F.col("ts__")
    out = {
        "treceived": F.date_format(tsc, "yyyy-MM-dd HH:mm:ss"),
        "unix_tstamp": F.unix_timestamp(tsc),
        "tryear": F.year(tsc), "trmonth": F.month(tsc), "trday": F.dayofmonth(tsc),
        "trhour": F.hour(tsc), "trminute": F.minute(tsc), "trsec": F.second(tsc),
        "tdur": dbl["duration_us"] / 1e6,
        "sip": field("src_ip") if "src_ip" in cols else F.lit(None),
        "dip": field("dst_ip") if "dst_ip" in cols else F.lit(None),
        "sport": ival["src_port"] if "src_port" in cols else F.lit(None),
        "dport": ival["dst_port"],
        "proto": proto,
        "flag": flag,
        "ipkt": ival["fwd_pkts"], "ibyt": ival["fwd_bytes"], "opkt": ival["bwd_pkts"], "obyt": ival["bwd_bytes"],
    }
    select = [
        (out[f.name] if f.name in out else F.lit(None)).try_cast(f.dataType).alias(f.name) for f in FLOW_SCHEMA.fields
    ]
    # "Benign" is benign; a placeholder is no ground truth at all: is_attack stays null rather than guessing.
    norm_label = F.regexp_replace(F.lower(label), "[^a-z0-9]", "")
    attack = F.when(norm_label.isin(*_UNLABELLED) | label.isNull(), F.lit(None).cast("boolean")).otherwise(
        norm_label != "benign"
    )
    flows = good.select(
        *select,
        label.alias(LABEL),
        attack.alias(IS_ATTACK),
        (ival["attempted"] if "attempted" in cols else F.lit(None)).try_cast("int").alias(ATTEMPTED),
        F.lit(name).alias(SOURCE_FILE),
    )
    return ReadResult(flows, rejects), info


def read_cicids(spark: SparkSession, paths: list[str] | str) -> ReadResult:
    """Read CICFlowMeter CSV files or directories of them (any mix of dialects)."""
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
    flows = parts[0][0].flows
    rejects = parts[0][0].rejects
    for r, _ in parts[1:]:
        flows = flows.unionByName(r.flows)
        rejects = rejects.unionByName(r.rejects)
    return ReadResult(flows, rejects, tuple(info for _, info in parts))


__all__ = ["ReadResult", "read_cicids", "detect_columns", "DIALECTS"]
