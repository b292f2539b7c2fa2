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
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

FEATURES: list[str] = [
    "proto_tcp", "proto_udp", "proto_icmp",
    "flag_fin", "flag_syn", "flag_rst", "flag_psh", "flag_ack", "flag_urg",
    "sport_log", "dport_log", "dur_log",
    "ipkt_log", "ibyt_log", "opkt_log", "obyt_log", "ibpp_log", "obpp_log",
]
N_FEATURES = len(FEATURES)
FEATURE_PREFIX = "f_"
FEATURE_COLUMNS = [FEATURE_PREFIX + f for f in FEATURES]


# The flow-table columns the features read: the only ones that cross into Python.
FEATURE_INPUTS: list[str] = ["proto", "flag", "sport", "dport", "tdur", "ipkt", "ibyt", "opkt", "obyt"]


def feature_matrix(flows: pd.DataFrame) -> np.ndarray:
    """The one definition of the 18 features: flow columns -> n x 18 float32, whole columns at a
    time. Training, the scaler and the scorer all come through here, so they cannot disagree.

    `proto` and `flag` have few distinct values (a handful of protocols, at most 64 flag sets),
    so they are factorized and their columns worked out once per distinct value, then gathered:
    no string work per row. A missing value counts as 0 (no port, no packets, no flag); a
    missing protocol sets none of the three protocol columns. Negative counts are clipped to 0
    (validate_rows keeps such rows from the model anyway)."""
    n = len(flows)
    x = np.zeros((n, N_FEATURES), dtype=np.float32)
    if n == 0:
        return x
    x[:, 0:3] = _per_value(flows["proto"], _proto_columns, 3)
    x[:, 3:9] = _per_value(flows["flag"], _flag_columns, 6)
    num = {c: np.maximum(np.nan_to_num(pd.to_numeric(flows[c]).to_numpy(dtype=np.float64, na_value=0.0), nan=0.0), 0.0)
           for c in _NUMERIC}
    for k, c in enumerate(_NUMERIC):
        x[:, 9 + k] = np.log1p(num[c])
    x[:, 16] = np.log1p(num["ibyt"] / np.maximum(num["ipkt"], 1.0))
    x[:, 17] = np.log1p(num["obyt"] / np.maximum(num["opkt"], 1.0))
    return x


_NUMERIC = ("sport", "dport", "tdur", "ipkt", "ibyt", "opkt", "obyt")


def _proto_columns(proto) -> list[bool]:
    p = proto.upper() if isinstance(proto, str) else ""
    return [p == "TCP", p == "UDP", p in ("ICMP", "ICMP6")]


def _flag_columns(flag) -> list[bool]:
    # nfdump prints flags as a fixed-width string with '.' for unset ('...AP.SF' or '.AP.SF')
    f = flag if isinstance(flag, str) else ""
    return [letter in f for letter in "FSRPAU"]


def _per_value(col: pd.Series, columns, width: int) -> np.ndarray:
    """A low-cardinality column -> its derived columns, computed once per distinct value."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    table = np.array([columns(u) for u in uniques] + [columns(None)], dtype=np.float32).reshape(-1, width)
    return table[codes]  # code -1 (missing) picks the last row


def add_features(df: DataFrame) -> DataFrame:
    """df (flow-table columns) -> df + the 18 unscaled feature columns f_* (float)."""
    struct = T.StructType([T.StructField(c, T.FloatType()) for c in FEATURE_COLUMNS])

    @F.pandas_udf(struct)
    def features(inputs: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(feature_matrix(inputs), columns=FEATURE_COLUMNS)

    tmp = "__spot_ae_features"
    # Non-deterministic so the optimizer keeps one UDF call instead of one per struct field.
    call = features.asNondeterministic()(F.struct(*FEATURE_INPUTS))
    return df.withColumn(tmp, call).select(*df.columns, *[F.col(f"{tmp}.{c}").alias(c) for c in FEATURE_COLUMNS])


@dataclass(frozen=True)
class Scaler:
    """Min-max to [-1, 1], fitted on training rows; a constant feature maps to 0.

    It carries the names of the columns it was fitted on (the 18 by default, more for a variant
    such as `ae-context`), so a saved model says which inputs its weights expect. Models saved
    before the list was generalised hold exactly the 18 and load unchanged. Scoring does not clip:
    a flow outside the benign range is exactly what should reconstruct badly."""

    minimum: np.ndarray
    maximum: np.ndarray
    columns: tuple[str, ...] = tuple(FEATURE_COLUMNS)

    @classmethod
    def fit(cls, features_df: DataFrame, columns: list[str] | None = None,
            fixed: dict[str, tuple[float, float]] | None = None) -> "Scaler":
        """Min-max of the training rows per column, except where `fixed` gives a column's bounds
        (the context inputs: their scale must not depend on how busy the training day was)."""
        cols = list(columns or FEATURE_COLUMNS)
        fixed = fixed or {}
        fit = [c for c in cols if c not in fixed]
        aggs = [F.min(c).alias("min_" + c) for c in fit] + [F.max(c).alias("max_" + c) for c in fit] + [F.count("*").alias("_n")]
        row = features_df.agg(*aggs).first()
        if row is None or not row["_n"]:
            raise ValueError("cannot fit the scaler on zero rows")
        lo = np.array([fixed[c][0] if c in fixed else row["min_" + c] for c in cols], dtype=np.float64)
        hi = np.array([fixed[c][1] if c in fixed else row["max_" + c] for c in cols], dtype=np.float64)
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
        """The saved bounds; which feature list a model kind must have is the model's check."""
        names = list(d.get("features") or FEATURES)
        if names[: len(FEATURES)] != FEATURES:
            raise ValueError(f"model was trained on features {names[:len(FEATURES)]}, this code computes {FEATURES}")
        lo, hi = np.array(d["min"], dtype=np.float64), np.array(d["max"], dtype=np.float64)
        if lo.shape != (len(names),) or hi.shape != (len(names),):
            raise ValueError(f"scaler has {lo.size}/{hi.size} bounds for {len(names)} features")
        return cls(lo, hi, tuple(FEATURE_PREFIX + n for n in names))


def dumps(scaler: Scaler) -> str:
    return json.dumps(scaler.to_json())
