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

Windows are whole clock minutes so that they are cheap on a full day, and so that a stream gets
the batch result: the value of a flow depends only on the flows of its day in its window, so a
micro-batch computed against the flow table's earlier flows of those minutes
(`add_context(batch, universe=...)`) equals the day computed at once. How (raw_context): every
value is a function of the flow's (sip, dip, dport, proto, obyt, minute), so the work is on those
keys with their flow counts, each source's keys in one partition and then each destination's, where
numpy counts a window as a difference of running sums and distinct values by when each enters and
leaves the window.

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

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

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
_N, _NF = "_ctx_n", "_ctx_nf"  # flows of the universe with the key, and how many of them failed
_Q = "_ctx_q"  # 1: the key is one of the flows' to describe
_KEY = ("sip", "dip", "dport", "proto", REPLY, _MIN)  # every context value is a function of these (and `by`)
_SRC_OUT = ["src_flows_1m", "src_flows_1h", "src_dports_1h", "src_dips_1h", "src_failed_1h", "svc_flows_1m",
            "svc_flows_1h", "src_repeat_1h"]
_DST_OUT = ["dst_flows_1h", "dst_sips_1h", "dsvc_repeat_1h"]


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


class _Windows:
    """Counts over the universe rows of one Spark partition (a row: a key with its flow count), read
    at chosen rows, with numpy: rows sorted by (key, minute) once, so a count over the minutes
    (m - span, m] is two binary searches and a difference of running sums."""

    def __init__(self, pdf: pd.DataFrame, at: np.ndarray):
        self.pdf, self.at = pdf, at
        self.u = pdf[_N].to_numpy() > 0
        m = pdf[_MIN].to_numpy(dtype=np.int64)
        self.minute = m - m.min() + 61  # >= 61, so m - 60 stays >= 1
        self.width = int(self.minute.max()) + 122  # room past every m + 60
        self._memo: dict[tuple, object] = {}

    def code(self, cols: tuple[str, ...]) -> np.ndarray:
        """A dense int per distinct value of `cols`: one factorization per column, then of pairs of ints."""
        if cols not in self._memo:
            if len(cols) == 1:
                c = pd.factorize(self.pdf[cols[0]], use_na_sentinel=False)[0]
            else:
                head, last = self.code(cols[:-1]), self.code(cols[-1:])
                c = pd.factorize(head * (int(last.max()) + 1) + last)[0]
            self._memo[cols] = c.astype(np.int64, copy=False)
        return self._memo[cols]

    def _sorted(self, cols: tuple[str, ...]):
        """(key, minute) as one int64, of the universe rows and of the rows asked about, each sorted
        (binary searches of sorted needles stay in cache), with both orders."""
        if ("sorted", cols) not in self._memo:
            flat = self.code(cols) * self.width + self.minute
            u, q = flat[self.u], flat[self.at]
            uo, qo = np.argsort(u, kind="stable"), np.argsort(q, kind="stable")
            self._memo[("sorted", cols)] = (uo, u[uo], qo, q[qo])
        return self._memo[("sorted", cols)]

    def count(self, cols: tuple[str, ...], span: int, weight: str = _N) -> np.ndarray:
        """Per row asked about: the universe's flows (or failed flows) of its key in the `span`
        minutes ending at its minute."""
        uo, s, qo, q = self._sorted(cols)
        c = np.concatenate([[0], np.cumsum(self.pdf[weight].to_numpy(dtype=np.int64)[self.u][uo])])
        out = np.empty(len(q), dtype=np.int64)
        out[qo] = c[np.searchsorted(s, q, "right")] - c[np.searchsorted(s, q - span, "right")]
        return out

    def distinct(self, cols: tuple[str, ...], value: str, span: int = WINDOWS["1h"]) -> np.ndarray:
        """Per row asked about: distinct `value`s of its key's universe flows in the `span` minutes
        ending at its minute. A value counts from each minute it occurs until `span` minutes later
        or its next occurrence; the count is the running sum of those +1/-1 events (each key's
        events sum to 0, so one running sum over all keys in order serves them all)."""
        key, val = self.code(cols)[self.u], self.code((*cols, value))[self.u]
        if not len(val):
            return np.zeros(int(self.at.sum()), dtype=np.int64)
        occ = np.unique(val * self.width + self.minute[self.u])  # sorted by (key and value, minute)
        v, m = occ // self.width, occ % self.width
        key_of = np.zeros(int(val.max()) + 1, dtype=np.int64)
        key_of[val] = key
        k = key_of[v]
        nxt = np.where(np.r_[v[1:] == v[:-1], False], np.r_[m[1:], 0], m + span)
        ev = np.concatenate([k * self.width + m, k * self.width + np.minimum(m + span, nxt)])
        d = np.r_[np.ones(len(m), dtype=np.int64), -np.ones(len(m), dtype=np.int64)]
        order = np.argsort(ev, kind="stable")
        ev, run = ev[order], np.cumsum(d[order])
        i = np.searchsorted(ev, self.code(cols)[self.at] * self.width + self.minute[self.at], "right") - 1
        return np.where(i >= 0, run[np.maximum(i, 0)], 0)


def _side(describe, asked_only: bool):
    """A mapInPandas function: a partition's rows (every key of some sources, or of some
    destinations) -> its rows (`asked_only`: those of the flows to describe) with the values of
    describe(windows) -> {name: values} added."""
    def side(batches):
        frames = list(batches)
        if not frames:  # a partition with no rows gets no batch at all
            return
        pdf = pd.concat(frames, ignore_index=True)
        at = pdf[_Q].to_numpy() == 1 if asked_only else np.ones(len(pdf), dtype=bool)
        if at.any():
            out = pdf.loc[at].reset_index(drop=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                for name, values in describe(_Windows(pdf, at)).items():
                    out[name] = values
            yield out
    return side


def _src_values(by: tuple[str, ...]):
    src, svc = (*by, *SRC), (*by, *SVC)

    def describe(w: _Windows) -> dict:
        n = w.count(src, WINDOWS["1h"])
        # (same - 1) / all: the flow itself is no repeat; a host with few flows in the window is pulled to 0
        return {"src_flows_1m": w.count(src, 1), "src_flows_1h": n, "src_dports_1h": w.distinct(src, "dport"),
                "src_dips_1h": w.distinct(src, "dip"), "src_failed_1h": w.count(src, WINDOWS["1h"], _NF) / n,
                "svc_flows_1m": w.count(svc, 1), "svc_flows_1h": w.count(svc, WINDOWS["1h"]),
                "src_repeat_1h": (w.count((*svc, REPLY), WINDOWS["1h"]) - 1) / n}
    return describe


def _dst_values(by: tuple[str, ...]):
    dst, dsvc = (*by, *DST), (*by, *DSVC)

    def describe(w: _Windows) -> dict:
        return {"dst_flows_1h": w.count(dst, WINDOWS["1h"]), "dst_sips_1h": w.distinct(dst, "sip"),
                "dsvc_repeat_1h": (w.count((*dsvc, REPLY), WINDOWS["1h"]) - 1) / w.count(dsvc, WINDOWS["1h"])}
    return describe


def raw_context(flows: DataFrame, universe: DataFrame | None = None, by: tuple[str, ...] = ()) -> DataFrame:
    """flows -> flows + the context counts (CONTEXT_FEATURES, not yet logged), each counted over
    `universe` (default: `flows` themselves), which must hold every flow of the windows asked
    about. `by`: columns of both that separate worlds whose flows never count for each other
    (the stream passes the day, so one pass serves a batch of several days as a run per day
    would). Rows without a source IP or timestamp get the values of a flow alone.

    Every value is a function of the key (by, sip, dip, dport, proto, obyt, minute), so the work is
    on keys, each with its flow count: one shuffle puts each source's keys in one partition, where
    numpy counts its windows; a second does the same per destination; one join gives the flows
    their values. Spark's window frames over (host, minute) rows, the earlier way, took 5x as long
    on a 1 M-flow day (60.3 s against 12.0 s for the context columns, local[2]). The cost: a Python
    worker holds all the keys of its partition's hosts at once (~100 bytes a key), so one host with
    tens of millions of distinct keys in a day needs GBs there."""
    has = F.col("sip").isNotNull() & F.col("unix_tstamp").isNotNull()
    key = [*by, *_KEY]

    def rows(df: DataFrame, counted: bool, asked: bool) -> DataFrame:
        """Keys of `df`'s flows; `counted`: they are universe flows; `asked`: they are flows to describe."""
        n, nf = (F.lit(1), failed().cast("long")) if counted else (F.lit(0), F.lit(0))
        return _keyed(df.where(has)).select(*key, n.alias(_N), nf.alias(_NF), F.lit(int(asked)).alias(_Q))

    both = rows(flows, True, True) if universe is None else rows(universe, True, False).unionByName(rows(flows, False, True))
    keys = both.repartition(*by, *SRC).groupBy(*key).agg(
        F.sum(_N).alias(_N), F.sum(_NF).alias(_NF), F.max(_Q).alias(_Q))
    typed = lambda names: [T.StructField(c, T.DoubleType() if c in SHARES else T.LongType()) for c in names]  # noqa: E731
    src = keys.mapInPandas(_side(_src_values(by), asked_only=False), T.StructType([*keys.schema.fields, *typed(_SRC_OUT)]))
    ctx = src.repartition(*by, *DST).mapInPandas(_side(_dst_values(by), asked_only=True),
                                                 T.StructType([*src.schema.fields, *typed(_DST_OUT)]))
    orig = {"_dport0": F.col("dport"), "_proto0": F.col("proto"), "_reply0": F.col(REPLY)}
    out = _keyed(flows.withColumn(_HAS, has).withColumns(orig)).join(ctx.drop(_N, _NF, _Q), key, "left")
    alone = {c: F.lit(1).cast("long") for c in COUNTS}
    vals = {c: F.when(F.col(_HAS), F.col(c).cast("long")).otherwise(alone[c]) for c in COUNTS}
    vals["src_failed_1h"] = F.when(F.col(_HAS), F.col("src_failed_1h")).otherwise(failed())
    vals["src_repeat_1h"] = F.when(F.col(_HAS), F.col("src_repeat_1h")).otherwise(0.0)
    vals["dsvc_repeat_1h"] = F.when(F.col(_HAS), F.col("dsvc_repeat_1h")).otherwise(0.0)
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
