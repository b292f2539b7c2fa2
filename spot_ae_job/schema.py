"""The one definition of Spot's flow table, its results and its feedback (SPEC §2).

Ingest, the ML job, the OA and the table DDL all import from here, so a column
can change in exactly one place. Order matters: it is the order of Spot's
`spot.flow` table and of `flow_results.csv`.

One departure from Spot's DDL: `sas`/`das` are bigint, not int. AS numbers are unsigned
32-bit (RFC 6793) and real exporters send ones above 2^31-1 (4294967295 included); a signed int
cannot hold them, so such flows were rejected.

Columns are (name, Hive type): plain data, so the processes that never touch Spark (ingest, the
OA, both without pyspark in their images) take names and types from here too (they build Arrow
types from the Hive names). The Spark StructTypes are built from the same lists on first use
(`__getattr__` below), the one place this module imports pyspark.
"""
from __future__ import annotations

import functools

from spot_ae_job.layout import HUSER, Day, Layout

SCHEMA_VERSION = 1
FLOW_TABLE = "spot.flow"

# (name, Hive type) of Spot's flow table, in Spot's order.
FLOW_FIELDS: list[tuple[str, str]] = [
    ("treceived", "string"),
    ("unix_tstamp", "bigint"),
    ("tryear", "int"),
    ("trmonth", "int"),
    ("trday", "int"),
    ("trhour", "int"),
    ("trminute", "int"),
    ("trsec", "int"),
    ("tdur", "float"),
    ("sip", "string"),
    ("dip", "string"),
    ("sport", "int"),
    ("dport", "int"),
    ("proto", "string"),
    ("flag", "string"),
    ("fwd", "int"),
    ("stos", "int"),
    ("ipkt", "bigint"),
    ("ibyt", "bigint"),
    ("opkt", "bigint"),
    ("obyt", "bigint"),
    ("input", "int"),
    ("output", "int"),
    ("sas", "bigint"),  # Spot's DDL: int; see the module docstring
    ("das", "bigint"),
    ("dtos", "int"),
    ("dir", "int"),
    ("rip", "string"),
]

# Hive-style partitions of the table: y=YYYY/m=M/d=D/h=H (integers, not zero-padded).
PARTITION_FIELDS: list[tuple[str, str]] = [
    ("y", "smallint"),
    ("m", "tinyint"),
    ("d", "tinyint"),
    ("h", "tinyint"),
]

FLOW_COLUMNS: list[str] = [name for name, _ in FLOW_FIELDS]
PARTITION_COLUMNS: list[str] = [name for name, _ in PARTITION_FIELDS]

# Ground truth travels beside a flow, never inside the flow table and never into a model.
LABEL = "label"  # the data set's label text, e.g. "Benign", "DoS attacks-Hulk"
IS_ATTACK = "is_attack"  # boolean derived from LABEL
ATTEMPTED = "attempted_category"  # improved CIC-IDS2018: -1 = not an attempt, else the attempt class
SOURCE_FILE = "source_file"  # which input file a row came from (evaluation groups by it)
LABEL_COLUMNS = [LABEL, IS_ATTACK, ATTEMPTED, SOURCE_FILE]
_LABEL_FIELDS = [(LABEL, "string"), (IS_ATTACK, "boolean"), (ATTEMPTED, "int"), (SOURCE_FILE, "string")]

# The attack families an incident is named with (family.py) and an analyst's verdict may name.
ATTACK_FAMILIES = ["scan", "brute_force", "dos", "c2", "infiltration", "web"]  # bulk transfer / infiltration: "infiltration"

# IANA protocol numbers of the names nfdump, Zeek and the CIC-IDS2018 readers write into `proto`.
PROTO_NUMBERS = {"ICMP": 1, "IGMP": 2, "TCP": 6, "UDP": 17, "GRE": 47, "ESP": 50, "ICMP6": 58, "SCTP": 132}

# Rows that failed validation: the raw line's fields as text, plus why.
REJECT_REASON = "reject_reason"

# Spot's flow result layout, in order (flow_results.csv).
RESULT_COLUMNS: list[str] = [
    "treceived", "tryear", "trmonth", "trday", "trhour", "trminute", "trsec", "tdur",
    "sip", "dip", "sport", "dport", "proto", "ipkt", "ibyt", "opkt", "obyt", "score",
]

# Spot's analyst feedback file (feedback/ml_feedback.csv). sev 1 high, 2 medium, 3 low risk.
_FEEDBACK_FIELDS = [("sev", "int"), ("tstart", "string"), ("srcIP", "string"), ("dstIP", "string"),
                    ("sport", "int"), ("dport", "int"), ("ipkt", "bigint"), ("ibyt", "bigint")]
FEEDBACK_COLUMNS: list[str] = [name for name, _ in _FEEDBACK_FIELDS]

# Why a flow was flagged (explain.py): its EXPLANATION_TOP worst-reconstructed inputs, each as
# these four columns; after RESULT_COLUMNS in flow_results.csv and in all_scores.
EXPLANATION_TOP = 3
_EXPLANATION_PARTS = [("feature", "string"), ("value", "double"), ("benign_median", "double"), ("error", "double")]
EXPLANATION_FIELDS: list[tuple[str, str]] = [
    (f"expl{i}_{part}", hive) for i in range(1, EXPLANATION_TOP + 1) for part, hive in _EXPLANATION_PARTS
]
EXPLANATION_COLUMNS: list[str] = [name for name, _ in EXPLANATION_FIELDS]

# The Spark schemas, by name; built lazily from the (name, Hive type) lists above.
_SPARK_SCHEMAS = {
    "FLOW_SCHEMA": FLOW_FIELDS,
    "PARTITIONED_FLOW_SCHEMA": FLOW_FIELDS + PARTITION_FIELDS,
    "LABEL_SCHEMA": _LABEL_FIELDS,
    "FEEDBACK_SCHEMA": _FEEDBACK_FIELDS,
    "EXPLANATION_SCHEMA": EXPLANATION_FIELDS,
}


@functools.cache
def _spark_schema(name: str):
    from pyspark.sql import types as T  # lazy: see the module docstring

    spark_type = {"string": T.StringType(), "bigint": T.LongType(), "int": T.IntegerType(), "float": T.FloatType(),
                  "double": T.DoubleType(), "smallint": T.ShortType(), "tinyint": T.ByteType(),
                  "boolean": T.BooleanType()}
    return T.StructType([T.StructField(n, spark_type[h], True) for n, h in _SPARK_SCHEMAS[name]])


def __getattr__(name: str):
    """FLOW_SCHEMA, PARTITIONED_FLOW_SCHEMA, LABEL_SCHEMA, FEEDBACK_SCHEMA, EXPLANATION_SCHEMA (pyspark imported here)."""
    if name in _SPARK_SCHEMAS:
        return _spark_schema(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def flow_table_location(huser: str = HUSER) -> str:
    """The table's location under a user root (layout.py names every path)."""
    return Layout(huser).flow_table


def scored_results_location(day: str, huser: str = HUSER) -> str:
    """`${HUSER}/flow/scored_results/YYYYMMDD` (layout.py names every path)."""
    return Layout(huser).results(Day.parse(str(day))).root


def flow_table_ddl(location: str | None = None) -> str:
    """Hive/Spark SQL DDL of `spot.flow`, generated from the same field list as everything else."""
    cols = ",\n  ".join(f"{n} {h}" for n, h in FLOW_FIELDS)
    parts = ", ".join(f"{n} {h}" for n, h in PARTITION_FIELDS)
    loc = location or flow_table_location()
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {FLOW_TABLE} (\n  {cols}\n)\n"
        f"PARTITIONED BY ({parts})\nSTORED AS PARQUET\nLOCATION '{loc}'"
    )
