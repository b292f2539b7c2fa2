"""Host context for the `ae-context` model: what a flow's hosts did around it.

One flow of an HTTP flood, a brute force or a scan looks like ordinary traffic (one request, one
login, one SYN); what gives it away is rate and repetition per host: the same source sending the
same request to the same service hundreds of times, one source touching many ports, one target
hit by many sources. For every flow, over the flows of the same day in the flow's clock minute
(`1m`) or in that minute and the 59 before it (`1h`), with `failed` = a RST, or a SYN never
acknowledged (nfdump's flag string):

  src_flows_1m, src_flows_1h   flows from the flow's source IP
  src_dports_1h, src_dips_1h   distinct destination ports / IPs that source contacted
  src_failed_1h                share of that source's flows that failed
  dst_flows_1h, dst_sips_1h    flows to the flow's destination IP, and distinct sources sending them
  svc_flows_1m, svc_flows_1h   flows of the same source -> destination:port/protocol (repetition)
  src_repeat_1h                share of the source's flows in the hour that are this flow again: same
                               destination service, same reply size (`obyt`), the flow itself not counted
  dsvc_repeat_1h               share of the flows to the flow's destination service (dip, dport, proto)
                               in the hour, from any source, with this flow's reply size, itself not counted

Why repetition: a flood, a brute force or a slow-connection DoS asks one service the same thing
over and over, and the service answers the same bytes each time (the same error page, the same
login banner, nothing at all) while the requests vary (random URLs, headers, passwords); a DDoS
does it from many sources at once, so the destination service's flows are nearly all one reply.
Benign traffic to a service gets varied answers. Both are shares, so a uniform sample of a day
keeps them (the counts above fall with the sampling rate; a share of repeats does not), and
`(same - 1) / all` pulls a host with few flows in the window (a quiet host, or any host of a
thin sample) towards 0 instead of calling its one flow a 100% repeat. Why the reply size and not
packets: packet counts vary with TCP segmentation and retransmission for the same answer.

Counts enter the network as log1p; every input has a FIXED scale (`FIXED_BOUNDS`: log counts
over [0, log1p(1000)], shares over [0, 1]) instead of the min-max of the training rows. Why:
the benign rows of a sampled excerpt (or a quiet network) give nearly constant context, and a
min-max fitted on a near-constant column either drops it (the earlier variant mapped a constant
column to 0, so a flood of 100 flows a minute scored exactly like a lone flow, and the model
inverted) or blows any later value up past every per-flow feature. A fixed scale keeps a context
deviation comparable in size to a per-flow one whatever the training day looked like. The cap
(1,000 flows of a host in a window maps to +1; more extrapolates past it) puts a 100x jump in a
host's rate at about the squared error of one badly reconstructed per-flow metric; a cap of
100,000 squeezed that jump below the per-flow noise (on the demo day, DoS Hulk's first minutes
scored under benign p99: docs/detection.md).

Windows are whole clock minutes so that they are cheap on a full day (counts per host and minute,
then a sum over at most 60 rows; distinct counts by counting when each value enters and leaves
the window), and so that a stream gets the batch result: the value of a flow depends only on the
flows of its day in its window, so a micro-batch computed against the flow table's earlier flows
of those minutes (`add_context(batch, universe=...)`) equals the day computed at once.

Sampling: in a uniform sample of a day (the CIC-IDS2018 excerpts) every count is thinned by the
sampling rate, so absolute counts are lower than on the full day, and a model trained on a
sample and scoring a full day (or a capture) sees larger counts than it learned. Within one data
set (train and score the same network, the ml-ops default) both sides are thinned alike; across
data sets the fixed scale bounds how far a benign density change moves the score, and the
per-flow inputs keep their say. docs/detection.md has what the excerpts can and cannot show.

Flows without a source IP or a timestamp (the 79/80-column CIC-IDS2018 layouts) have no context:
they get the values of a flow alone in its window (1 flow, 1 port, 1 peer, its own failed flag).
"""
from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from spot_ae_job.features import FEATURE_PREFIX

WINDOWS = {"1m": 1, "1h": 60}  # minutes: the flow's own clock minute, and it plus the 59 before
SRC, DST, SVC = ("sip",), ("dip",), ("sip", "dip", "dport", "proto")
DSVC = ("dip", "dport", "proto")  # the destination service, whoever talks to it
REPLY = "obyt"  # what makes two flows to one service "the same": the bytes the service answered
COUNTS = ["src_flows_1m", "src_flows_1h", "src_dports_1h", "src_dips_1h",
          "dst_flows_1h", "dst_sips_1h", "svc_flows_1m", "svc_flows_1h"]
SHARES = ["src_failed_1h", "src_repeat_1h", "dsvc_repeat_1h"]
CONTEXT_FEATURES: list[str] = COUNTS[:4] + SHARES[:1] + COUNTS[4:] + SHARES[1:]
CONTEXT_COLUMNS = [FEATURE_PREFIX + f for f in CONTEXT_FEATURES]
COUNT_CAP = 1_000  # log1p of this maps to +1 (see the module docstring)
FIXED_BOUNDS: dict[str, tuple[float, float]] = {
    **{FEATURE_PREFIX + c: (0.0, math.log1p(COUNT_CAP)) for c in COUNTS},
    **{FEATURE_PREFIX + c: (0.0, 1.0) for c in SHARES},
}
# what an analyst reads in an explanation
DISPLAY_NAMES = {  # no commas: they land in flow_results.csv cells
    "src_flows_1m": "flows from source in the minute", "src_flows_1h": "flows from source in the hour",
    "src_dports_1h": "ports the source contacted in the hour", "src_dips_1h": "hosts the source contacted in the hour",
    "src_failed_1h": "failed share of the source's flows in the hour",
    "dst_flows_1h": "flows to destination in the hour", "dst_sips_1h": "sources of the destination in the hour",
    "svc_flows_1m": "same source-service flows in the minute", "svc_flows_1h": "same source-service flows in the hour",
    "src_repeat_1h": "share of the source's hour repeating this flow to its service",
    "dsvc_repeat_1h": "share of the service's hour with this flow's reply size",
}
_MIN = "_ctx_min"
_HAS = "_ctx_has"


def failed(flag: Column | None = None) -> Column:
    """1.0 when the flow saw a RST, or a SYN that was never acknowledged (nfdump's flag string)."""
    f = F.coalesce(flag if flag is not None else F.col("flag"), F.lit(""))
    return F.when(f.contains("R") | (f.contains("S") & ~f.contains("A")), 1.0).otherwise(0.0)


def _keyed(df: DataFrame) -> DataFrame:
    """Null-free join keys (a missing port or protocol is its own value) and the clock minute."""
    return df.withColumns({
        "dport": F.coalesce(F.col("dport"), F.lit(-1)), "proto": F.coalesce(F.col("proto"), F.lit("")),
        REPLY: F.coalesce(F.col(REPLY), F.lit(-1)),
        _MIN: F.floor(F.col("unix_tstamp") / 60).cast("long"),
    })


def _counts(u: DataFrame, key: tuple[str, ...], prefix: str, with_failed: bool = False) -> DataFrame:
    """(key, minute) -> flows in each window ending at that minute (and failed flows in 1h)."""
    per = u.groupBy(*key, _MIN).agg(F.count("*").alias("_n"), F.sum(failed()).alias("_f"))
    w = Window.partitionBy(*key).orderBy(_MIN)
    cols = [F.sum("_n").over(w.rangeBetween(-(m - 1), 0)).alias(f"{prefix}_flows_{name}") for name, m in WINDOWS.items()]
    if with_failed:
        cols.append(F.sum("_f").over(w.rangeBetween(-(WINDOWS["1h"] - 1), 0)).alias(f"_{prefix}_failed_n"))
    return per.select(*key, _MIN, *cols)


def _distinct(u: DataFrame, key: tuple[str, ...], value: str, name: str, minutes: int = WINDOWS["1h"]) -> DataFrame:
    """(key, minute) -> distinct `value`s of the key in the window ending at that minute.

    Each (key, value, minute) occurrence keeps its value in the window from its minute until
    `minutes` later or the value's next occurrence, whichever is first; the distinct count at a
    minute is the running sum of those +1 / -1 events. One sort per key, no per-row sets."""
    occ = u.select(*key, value, _MIN).distinct()
    nxt = F.lead(_MIN).over(Window.partitionBy(*key, value).orderBy(_MIN))
    occ = occ.withColumn("_end", F.least(F.col(_MIN) + minutes, F.coalesce(nxt, F.col(_MIN) + minutes)))
    events = (occ.select(*key, F.col(_MIN), F.lit(1).alias("_d"))
              .unionByName(occ.select(*key, F.col("_end").alias(_MIN), F.lit(-1).alias("_d")))
              .groupBy(*key, _MIN).agg(F.sum("_d").alias("_d")))
    run = Window.partitionBy(*key).orderBy(_MIN).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    return events.select(*key, _MIN, F.sum("_d").over(run).alias(name))


def raw_context(flows: DataFrame, universe: DataFrame | None = None, by: tuple[str, ...] = ()) -> DataFrame:
    """flows -> flows + the context counts (CONTEXT_FEATURES, not yet logged), each counted over
    `universe` (default: `flows` themselves), which must hold every flow of the windows asked
    about. `by`: columns of both that separate worlds whose flows never count for each other
    (the stream passes the day, so one pass serves a batch of several days as a run per day
    would). Rows without a source IP or timestamp get the values of a flow alone."""
    has = F.col("sip").isNotNull() & F.col("unix_tstamp").isNotNull()
    src_k, dst_k, svc_k, dsvc_k = ((*by, *k) for k in (SRC, DST, SVC, DSVC))
    u = _keyed((universe if universe is not None else flows).where(has))
    src = (_counts(u, src_k, "src", with_failed=True)
           .join(_distinct(u, src_k, "dport", "src_dports_1h"), [*src_k, _MIN])
           .join(_distinct(u, src_k, "dip", "src_dips_1h"), [*src_k, _MIN]))
    dst = _counts(u, dst_k, "dst").drop("dst_flows_1m").join(_distinct(u, dst_k, "sip", "dst_sips_1h"), [*dst_k, _MIN])
    svc = _counts(u, svc_k, "svc")
    dsvc = _counts(u, dsvc_k, "_dsvc").drop("_dsvc_flows_1m")
    # repetition: the flows of the window that are this flow again (same service, same reply size)
    svc_same = _counts(u, (*svc_k, REPLY), "_svcrep").drop("_svcrep_flows_1m")
    dsvc_same = _counts(u, (*dsvc_k, REPLY), "_dsvcrep").drop("_dsvcrep_flows_1m")
    orig = {"_dport0": F.col("dport"), "_proto0": F.col("proto"), "_reply0": F.col(REPLY)}
    keyed = _keyed(flows.withColumn(_HAS, has).withColumns(orig))
    out = (keyed.join(src, [*src_k, _MIN], "left").join(dst, [*dst_k, _MIN], "left").join(svc, [*svc_k, _MIN], "left")
           .join(dsvc, [*dsvc_k, _MIN], "left").join(svc_same, [*svc_k, REPLY, _MIN], "left")
           .join(dsvc_same, [*dsvc_k, REPLY, _MIN], "left"))
    alone = {c: F.lit(1).cast("long") for c in COUNTS}
    vals = {c: F.when(F.col(_HAS), F.col(c).cast("long")).otherwise(alone[c]) for c in COUNTS}
    vals["src_failed_1h"] = F.when(F.col(_HAS), F.col("_src_failed_n") / F.col("src_flows_1h")).otherwise(failed())
    # (same - 1) / all: the flow itself does not count as a repeat; a host with few flows in the
    # window (a quiet host, or any host of a thin sample) is pulled towards 0
    vals["src_repeat_1h"] = F.when(F.col(_HAS), (F.col("_svcrep_flows_1h") - 1) / F.col("src_flows_1h")).otherwise(0.0)
    vals["dsvc_repeat_1h"] = F.when(F.col(_HAS), (F.col("_dsvcrep_flows_1h") - 1) / F.col("_dsvc_flows_1h")).otherwise(0.0)
    restored = {"dport": "_dport0", "proto": "_proto0", REPLY: "_reply0"}
    return out.select(*[F.col(c) for c in flows.columns if c not in restored],
                      *[F.col(v).alias(k) for k, v in restored.items()],
                      *[vals[c].alias(c) for c in CONTEXT_FEATURES]).select(*flows.columns, *CONTEXT_FEATURES)


def add_context(flows: DataFrame, universe: DataFrame | None = None, by: tuple[str, ...] = ()) -> DataFrame:
    """flows -> flows + CONTEXT_COLUMNS (log1p of the counts, the share as is; unscaled, like
    add_features' f_* columns). `universe`, `by`: see raw_context."""
    raw = raw_context(flows, universe, by)
    logged = {c: F.log1p(F.col(c).cast("double")) for c in COUNTS}
    logged.update({c: F.col(c).cast("double") for c in SHARES})
    return raw.select(*flows.columns, *[logged[c].cast("float").alias(FEATURE_PREFIX + c) for c in CONTEXT_FEATURES])


__all__ = ["CONTEXT_FEATURES", "CONTEXT_COLUMNS", "COUNTS", "SHARES", "FIXED_BOUNDS", "WINDOWS", "DISPLAY_NAMES", "add_context",
           "raw_context", "failed"]
