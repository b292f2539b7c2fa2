"""The 18 flow metrics the autoencoder sees, and their scaling to [-1, 1].

The paper names the families (protocol and TCP flags, ports, duration, number and size of
incoming and outgoing packets) but not the list; this is ours, all computable from Spot's flow
table alone, so the same features come from nfdump, pcaps or CIC-IDS2018:

  1-3   proto_tcp, proto_udp, proto_icmp   one-hot of `proto` (anything else: all three 0)
  4-9   flag_fin, flag_syn, flag_rst, flag_psh, flag_ack, flag_urg
                                           TCP flag letters present in nfdump's `flag` string
  10-11 sport_log, dport_log               log1p of the ports (a missing port counts as 0)
  12    dur_log                            log1p of the duration in seconds
  13-16 ipkt_log, ibyt_log, opkt_log, obyt_log
                                           log1p of packets/bytes, initiator (i) and reply (o)
  17-18 ibpp_log, obpp_log                 log1p of mean bytes per packet each way

Counts and durations are heavy-tailed over 8+ orders of magnitude; without the log, min-max
scaling squeezes almost every flow into one corner of [-1, 1]. Scaling is min-max fitted on the
training rows and saved with the model. It is not clipped at scoring time: a flow outside the
benign range is exactly what should reconstruct badly.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

FEATURES: list[str] = [
    "proto_tcp", "proto_udp", "proto_icmp",
    "flag_fin", "flag_syn", "flag_rst", "flag_psh", "flag_ack", "flag_urg",
    "sport_log", "dport_log", "dur_log",
    "ipkt_log", "ibyt_log", "opkt_log", "obyt_log", "ibpp_log", "obpp_log",
]
N_FEATURES = len(FEATURES)
FEATURE_PREFIX = "f_"
FEATURE_COLUMNS = [FEATURE_PREFIX + f for f in FEATURES]


def _log1p(c: Column) -> Column:
    return F.log1p(F.greatest(F.coalesce(c.cast("double"), F.lit(0.0)), F.lit(0.0)))


def _flag(letter: str) -> Column:
    # nfdump prints flags as a fixed-width string with '.' for unset ('...AP.SF' or '.AP.SF')
    return F.when(F.coalesce(F.col("flag"), F.lit("")).contains(letter), 1.0).otherwise(0.0)


def feature_expressions() -> list[Column]:
    proto = F.upper(F.coalesce(F.col("proto"), F.lit("")))
    ipkt = F.coalesce(F.col("ipkt"), F.lit(0))
    opkt = F.coalesce(F.col("opkt"), F.lit(0))
    exprs = {
        "proto_tcp": F.when(proto == "TCP", 1.0).otherwise(0.0),
        "proto_udp": F.when(proto == "UDP", 1.0).otherwise(0.0),
        "proto_icmp": F.when(proto.isin("ICMP", "ICMP6"), 1.0).otherwise(0.0),
        "flag_fin": _flag("F"), "flag_syn": _flag("S"), "flag_rst": _flag("R"),
        "flag_psh": _flag("P"), "flag_ack": _flag("A"), "flag_urg": _flag("U"),
        "sport_log": _log1p(F.col("sport")),
        "dport_log": _log1p(F.col("dport")),
        "dur_log": _log1p(F.col("tdur")),
        "ipkt_log": _log1p(F.col("ipkt")), "ibyt_log": _log1p(F.col("ibyt")),
        "opkt_log": _log1p(F.col("opkt")), "obyt_log": _log1p(F.col("obyt")),
        "ibpp_log": _log1p(F.col("ibyt") / F.greatest(ipkt, F.lit(1))),
        "obpp_log": _log1p(F.col("obyt") / F.greatest(opkt, F.lit(1))),
    }
    return [exprs[f].cast("float").alias(FEATURE_PREFIX + f) for f in FEATURES]


def add_features(df: DataFrame) -> DataFrame:
    """df (flow-table columns) -> df + the 18 unscaled feature columns f_*."""
    return df.select("*", *feature_expressions())


@dataclass(frozen=True)
class Scaler:
    """Min-max to [-1, 1], fitted on training rows; a constant feature maps to 0.

    It carries the names of the columns it was fitted on (the 18 by default, more for a variant
    such as `ae-context`), so a saved model says which inputs its weights expect. Models saved
    before the list was generalised hold exactly the 18 and load unchanged."""

    minimum: np.ndarray
    maximum: np.ndarray
    columns: tuple[str, ...] = tuple(FEATURE_COLUMNS)

    @classmethod
    def fit(cls, features_df: DataFrame, columns: list[str] | None = None) -> "Scaler":
        cols = list(columns or FEATURE_COLUMNS)
        aggs = [F.min(c).alias("min_" + c) for c in cols] + [F.max(c).alias("max_" + c) for c in cols]
        row = features_df.agg(*aggs).first()
        if row is None or row["min_" + cols[0]] is None:
            raise ValueError("cannot fit the scaler on zero rows")
        lo = np.array([row["min_" + c] for c in cols], dtype=np.float64)
        hi = np.array([row["max_" + c] for c in cols], dtype=np.float64)
        return cls(lo, hi, tuple(cols))

    @property
    def features(self) -> list[str]:
        """Feature names without the column prefix, as model.json records them."""
        return [c[len(FEATURE_PREFIX):] if c.startswith(FEATURE_PREFIX) else c for c in self.columns]

    @property
    def scale(self) -> np.ndarray:
        span = self.maximum - self.minimum
        return np.where(span > 0, 2.0 / np.where(span > 0, span, 1.0), 0.0)

    @property
    def offset(self) -> np.ndarray:
        """x_scaled = x * scale + offset; constant features get scale 0 and offset 0."""
        span = self.maximum - self.minimum
        return np.where(span > 0, -1.0 - self.minimum * self.scale, 0.0)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.offset).astype(np.float32)

    def to_json(self) -> dict:
        return {"features": self.features, "min": self.minimum.tolist(), "max": self.maximum.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Scaler":
        from spot_ae_job.context import CONTEXT_FEATURES  # the only other features this code computes

        names = list(d.get("features") or FEATURES)
        if names[: len(FEATURES)] != FEATURES or any(n not in CONTEXT_FEATURES for n in names[len(FEATURES):]):
            raise ValueError(f"model was trained on features {names}, this code computes {FEATURES} (+ {CONTEXT_FEATURES})")
        lo, hi = np.array(d["min"], dtype=np.float64), np.array(d["max"], dtype=np.float64)
        if lo.shape != (len(names),) or hi.shape != (len(names),):
            raise ValueError(f"scaler has {lo.size}/{hi.size} bounds for {len(names)} features")
        return cls(lo, hi, tuple(FEATURE_PREFIX + n for n in names))


def dumps(scaler: Scaler) -> str:
    return json.dumps(scaler.to_json())
