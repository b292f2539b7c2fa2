"""The one definition of Spot's flow table, its results and its feedback (SPEC §2).

Ingest, the ML job, the OA and the table DDL all import from here, so a column
can change in exactly one place. Order matters: it is the order of Spot's
`spot.flow` table and of `flow_results.csv`.
"""
from __future__ import annotations

from pyspark.sql import types as T

SCHEMA_VERSION = 1

HUSER = "/user/spot"
FLOW_TABLE = "spot.flow"

# (name, Spark type, Hive type) of Spot's flow table, in Spot's order.
_FLOW_FIELDS: list[tuple[str, T.DataType, str]] = [
    ("treceived", T.StringType(), "string"),
    ("unix_tstamp", T.LongType(), "bigint"),
    ("tryear", T.IntegerType(), "int"),
    ("trmonth", T.IntegerType(), "int"),
    ("trday", T.IntegerType(), "int"),
    ("trhour", T.IntegerType(), "int"),
    ("trminute", T.IntegerType(), "int"),
    ("trsec", T.IntegerType(), "int"),
    ("tdur", T.FloatType(), "float"),
    ("sip", T.StringType(), "string"),
    ("dip", T.StringType(), "string"),
    ("sport", T.IntegerType(), "int"),
    ("dport", T.IntegerType(), "int"),
    ("proto", T.StringType(), "string"),
    ("flag", T.StringType(), "string"),
    ("fwd", T.IntegerType(), "int"),
    ("stos", T.IntegerType(), "int"),
    ("ipkt", T.LongType(), "bigint"),
    ("ibyt", T.LongType(), "bigint"),
    ("opkt", T.LongType(), "bigint"),
    ("obyt", T.LongType(), "bigint"),
    ("input", T.IntegerType(), "int"),
    ("output", T.IntegerType(), "int"),
    ("sas", T.IntegerType(), "int"),
    ("das", T.IntegerType(), "int"),
    ("dtos", T.IntegerType(), "int"),
    ("dir", T.IntegerType(), "int"),
    ("rip", T.StringType(), "string"),
]

# Hive-style partitions of the table: y=YYYY/m=M/d=D/h=H (integers, not zero-padded).
_PARTITION_FIELDS: list[tuple[str, T.DataType, str]] = [
    ("y", T.ShortType(), "smallint"),
    ("m", T.ByteType(), "tinyint"),
    ("d", T.ByteType(), "tinyint"),
    ("h", T.ByteType(), "tinyint"),
]

FLOW_COLUMNS: list[str] = [name for name, _, _ in _FLOW_FIELDS]
PARTITION_COLUMNS: list[str] = [name for name, _, _ in _PARTITION_FIELDS]

FLOW_SCHEMA = T.StructType([T.StructField(n, t, True) for n, t, _ in _FLOW_FIELDS])
PARTITIONED_FLOW_SCHEMA = T.StructType(
    FLOW_SCHEMA.fields + [T.StructField(n, t, True) for n, t, _ in _PARTITION_FIELDS]
)

# Ground truth travels beside a flow, never inside the flow table and never into a model.
LABEL = "label"  # the data set's label text, e.g. "Benign", "DoS attacks-Hulk"
IS_ATTACK = "is_attack"  # boolean derived from LABEL
ATTEMPTED = "attempted_category"  # improved CIC-IDS2018: -1 = not an attempt, else the attempt class
SOURCE_FILE = "source_file"  # which input file a row came from (evaluation groups by it)
LABEL_COLUMNS = [LABEL, IS_ATTACK, ATTEMPTED, SOURCE_FILE]
LABEL_SCHEMA = T.StructType(
    [
        T.StructField(LABEL, T.StringType(), True),
        T.StructField(IS_ATTACK, T.BooleanType(), True),
        T.StructField(ATTEMPTED, T.IntegerType(), True),
        T.StructField(SOURCE_FILE, T.StringType(), True),
    ]
)

# Rows that failed validation: the raw line's fields as text, plus why.
REJECT_REASON = "reject_reason"

# Spot's flow result layout, in order (flow_results.csv).
RESULT_COLUMNS: list[str] = [
    "treceived", "tryear", "trmonth", "trday", "trhour", "trminute", "trsec", "tdur",
    "sip", "dip", "sport", "dport", "proto", "ipkt", "ibyt", "opkt", "obyt", "score",
]

# Spot's analyst feedback file (feedback/ml_feedback.csv). sev 1 high, 2 medium, 3 low risk.
FEEDBACK_COLUMNS: list[str] = ["sev", "tstart", "srcIP", "dstIP", "sport", "dport", "ipkt", "ibyt"]
FEEDBACK_SCHEMA = T.StructType(
    [
        T.StructField("sev", T.IntegerType(), True),
        T.StructField("tstart", T.StringType(), True),
        T.StructField("srcIP", T.StringType(), True),
        T.StructField("dstIP", T.StringType(), True),
        T.StructField("sport", T.IntegerType(), True),
        T.StructField("dport", T.IntegerType(), True),
        T.StructField("ipkt", T.LongType(), True),
        T.StructField("ibyt", T.LongType(), True),
    ]
)


def flow_table_location(huser: str = HUSER) -> str:
    return f"{huser.rstrip('/')}/flow/hive"


def scored_results_location(day: str, huser: str = HUSER) -> str:
    """`${HUSER}/flow/scored_results/YYYYMMDD`: scores/, feedback/ and our extras live below."""
    return f"{huser.rstrip('/')}/flow/scored_results/{day}"


def flow_table_ddl(location: str | None = None) -> str:
    """Hive/Spark SQL DDL of `spot.flow`, generated from the same field list as everything else."""
    cols = ",\n  ".join(f"{n} {h}" for n, _, h in _FLOW_FIELDS)
    parts = ", ".join(f"{n} {h}" for n, _, h in _PARTITION_FIELDS)
    loc = location or flow_table_location()
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {FLOW_TABLE} (\n  {cols}\n)\n"
        f"PARTITIONED BY ({parts})\nSTORED AS PARQUET\nLOCATION '{loc}'"
    )
