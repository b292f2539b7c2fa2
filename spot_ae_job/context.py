"""Per-host context for the `ae-context` variant: what the flow's source did in the last minute.

A single flow of a DoS, a scan or a brute force often looks like ordinary traffic (one HTTP
request, one SYN, one failed login); what gives it away is how many such flows the same host
sent just before. For every flow, over the flows of the same source IP whose timestamp lies in
[t - 60 s, t] (the flow itself included, so a lone flow counts 1):

  ctx_flows_log     log1p(number of flows)
  ctx_dports_log    log1p(number of distinct destination ports)
  ctx_dips_log      log1p(number of distinct destination IPs)
  ctx_failed_share  share of those flows that failed: RST seen, or SYN without ACK

Computed with Spark window functions (a range frame over `unix_tstamp`, a numeric order key as
range frames require; partitioned by source IP), so it runs on YARN like every other stage.
Distinct counts are `size(collect_set(...))` over the frame: exact; the frame holds one host's
last minute, which stays small except for the busiest sources.

Flows without a source IP or a timestamp (the 79/80-column CIC-IDS2018 layouts) have no context
to compute: they get neutral values, those of a flow alone in its window (1 flow, 1 port, 1 IP,
its own failed flag), never a guess from other rows. Windows end where the input ends: scoring
one day does not see the previous day's last minute.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spot_ae_job.features import FEATURE_PREFIX

WINDOW_SECONDS = 60
CONTEXT_FEATURES: list[str] = ["ctx_flows_log", "ctx_dports_log", "ctx_dips_log", "ctx_failed_share"]
CONTEXT_COLUMNS = [FEATURE_PREFIX + f for f in CONTEXT_FEATURES]


def failed(flag: Column | None = None) -> Column:
    """1.0 when the flow saw a RST, or a SYN that was never acknowledged (nfdump's flag string)."""
    f = F.coalesce(flag if flag is not None else F.col("flag"), F.lit(""))
    return F.when(f.contains("R") | (f.contains("S") & ~f.contains("A")), 1.0).otherwise(0.0)


def raw_context(flows: DataFrame, window_seconds: int = WINDOW_SECONDS) -> DataFrame:
    """flows -> flows + ctx_flows, ctx_dports, ctx_dips, ctx_failed (counts, not yet logged)."""
    has_ctx = F.col("sip").isNotNull() & F.col("unix_tstamp").isNotNull()
    w = Window.partitionBy("sip").orderBy(F.col("unix_tstamp")).rangeBetween(-window_seconds, 0)
    fail = failed()
    windowed = flows.where(has_ctx).select(
        "*",
        F.count(F.lit(1)).over(w).alias("ctx_flows"),
        F.size(F.collect_set(F.coalesce(F.col("dport"), F.lit(-1))).over(w)).alias("ctx_dports"),
        F.size(F.collect_set(F.coalesce(F.col("dip"), F.lit(""))).over(w)).alias("ctx_dips"),
        F.avg(fail).over(w).alias("ctx_failed"),
    )
    # rows without context never enter the window: all of them would share one null key and one
    # frame (every row a peer of every other), quadratic on a file without IPs
    alone = flows.where(~has_ctx).select(
        "*", F.lit(1).cast("long").alias("ctx_flows"), F.lit(1).alias("ctx_dports"), F.lit(1).alias("ctx_dips"),
        fail.alias("ctx_failed"))
    return windowed.unionByName(alone)


def add_context(flows: DataFrame, window_seconds: int = WINDOW_SECONDS) -> DataFrame:
    """flows -> flows + the CONTEXT_COLUMNS (unscaled, like add_features' f_* columns)."""
    raw = raw_context(flows, window_seconds)
    return raw.select(
        *flows.columns,
        F.log1p(F.col("ctx_flows").cast("double")).cast("float").alias(CONTEXT_COLUMNS[0]),
        F.log1p(F.col("ctx_dports").cast("double")).cast("float").alias(CONTEXT_COLUMNS[1]),
        F.log1p(F.col("ctx_dips").cast("double")).cast("float").alias(CONTEXT_COLUMNS[2]),
        F.col("ctx_failed").cast("float").alias(CONTEXT_COLUMNS[3]),
    )


__all__ = ["CONTEXT_FEATURES", "CONTEXT_COLUMNS", "WINDOW_SECONDS", "add_context", "raw_context", "failed"]
