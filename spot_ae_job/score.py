"""Scoring every flow of a day on Spark, by one of two scorers that give the same scores.

The JVM scorer (the default for the paper's model, when the session has the scorer jar:
jvm/AeScore.java, built by scripts/build-jar.sh) computes the 18 features and the forward pass
per row inside Spark's generated code, with the model as one binary literal: no data leaves the
JVM. It exists because Spark 4.0 hands rows to Python by writing Arrow value by value, and on 2
cores that hop alone caps any Python scorer near 1.5 M flows/s (benchmarks/bench_score.py
prints it). tests/unit/test_score_jvm.py holds it to the numpy scorer below on real flows.

The Arrow scorer (model variants such as ae-context, a session without the jar, or
SPOT_AE_SCORER=arrow): only the nine flow columns the features read cross from the JVM into Python, as whole Arrow
batches (tens of thousands of rows); the other columns stay in the JVM and get the score joined
back by position. In Python one batch is: the features (features.feature_matrix, whole
columns), the scaling, two small matrix products and a row-wise sum, so no Python code runs per
row. Computing the features here rather than in Spark SQL costs less: Spark's per-row string
functions (upper, contains) on `proto` and `flag` were the most expensive part of the old plan,
and 9 input columns are half the Arrow traffic of 18 feature columns.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spot_ae_job.errors import SpotAEError
from spot_ae_job.features import FEATURE_COLUMNS, FEATURE_INPUTS, feature_matrix

SCORE = "score"
SCORERS = ("auto", "jvm", "arrow")
JVM_UDF, JVM_CLASS = "spot_ae_score", "spotae.AeScore"
# The Java UDF's argument types (UDF10<String, String, Integer, Integer, Float, Long x4, byte[]>):
# Spark passes a Java UDF its inputs unconverted, so they are cast to exactly these.
_JVM_INPUT_TYPES = {"proto": "string", "flag": "string", "sport": "int", "dport": "int", "tdur": "float",
                    "ipkt": "bigint", "ibyt": "bigint", "opkt": "bigint", "obyt": "bigint"}
_log = logging.getLogger(__name__)
_jvm_missing_logged = False


def _scorer_udf(model, features: Callable[[pd.DataFrame], np.ndarray]):
    """A scalar pandas UDF: a batch's input columns -> `features` (unscaled, n x k float32) ->
    mean squared reconstruction error per row."""
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float32) for w in model.weights)
    scale = model.scaler.scale.astype(np.float32)
    offset = model.scaler.offset.astype(np.float32)

    @F.pandas_udf(T.DoubleType())
    def score(inputs: pd.DataFrame) -> pd.Series:
        x = features(inputs)
        x *= scale
        x += offset
        d = np.tanh(x @ w1 + b1) @ w2 + b2
        d -= x
        return pd.Series(np.einsum("ij,ij->i", d, d) / x.shape[1], dtype="float64")

    return score


def score_features(model, df: DataFrame) -> DataFrame:
    """df holding the model's f_* feature columns (and anything else) -> the other columns + `score`."""
    cols = model.feature_columns
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns: {missing}")
    udf = _scorer_udf(model, lambda f: f.to_numpy(dtype=np.float32))
    return df.withColumn(SCORE, udf(F.struct(*cols))).drop(*cols)


def jvm_weights(model) -> bytes:
    """The model as AeScore.java reads it: little-endian doubles nIn, nHid, scale, offset, w1,
    b1, w2, b2. Scale, offset and weights go through float32 first, as the numpy scorer uses them."""
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float32) for w in model.weights)
    scale = model.scaler.scale.astype(np.float32)
    offset = model.scaler.offset.astype(np.float32)
    parts = [np.array(w1.shape, dtype=np.float64), scale, offset, w1.ravel(), b1, w2.ravel(), b2]
    return np.concatenate([p.astype("<f8") for p in parts]).tobytes()


def _jvm_available(spark) -> bool:
    """Register the Java UDF on this session: cheap, and done on every call because a stream's
    micro-batches each come with a session of their own. False if the jar is missing (logged
    once per process)."""
    global _jvm_missing_logged
    try:
        spark.udf.registerJavaFunction(JVM_UDF, JVM_CLASS, T.DoubleType())
        return True
    except Exception as e:  # py4j wraps the ClassNotFoundException
        if not _jvm_missing_logged:
            _log.warning("JVM scorer unavailable (%s: run scripts/build-jar.sh); scoring with the Arrow scorer",
                         str(e).splitlines()[0][:200])
            _jvm_missing_logged = True
        return False


def score_flows(model, flows: DataFrame, scorer: str | None = None) -> DataFrame:
    """Flow-table rows (plus any extra columns, e.g. labels) -> the same rows + `score`.

    The paper's model reads only the 9 input columns: with `scorer` jvm (what `auto`, the
    default, picks when the jar is there) per row in the JVM, with arrow in numpy per Arrow
    batch. A variant with inputs beyond the 18 (ae-context) first adds them with its own Spark
    step (`model.features`, window functions) and is scored from its feature columns by the
    Arrow scorer."""
    scorer = scorer or os.environ.get("SPOT_AE_SCORER", "auto")
    if scorer not in SCORERS:
        raise SpotAEError(f"unknown scorer {scorer!r} (SPOT_AE_SCORER): one of {', '.join(SCORERS)}")
    cols = model.feature_columns
    if cols != FEATURE_COLUMNS:
        return score_features(model, model.features(flows))
    missing = [c for c in FEATURE_INPUTS if c not in flows.columns]
    if missing:
        raise ValueError(f"missing columns for scoring: {missing}")
    drop = [c for c in cols if c in flows.columns]
    if scorer != "arrow" and _jvm_available(flows.sparkSession):
        args = [F.col(c).cast(_JVM_INPUT_TYPES[c]) for c in FEATURE_INPUTS]
        call = F.call_udf(JVM_UDF, *args, F.lit(bytearray(jvm_weights(model))))
        return flows.withColumn(SCORE, call).drop(*drop)
    if scorer == "jvm":
        raise SpotAEError("the JVM scorer was asked for but its jar is not on this Spark session (scripts/build-jar.sh)")
    udf = _scorer_udf(model, feature_matrix)
    return flows.withColumn(SCORE, udf(F.struct(*FEATURE_INPUTS))).drop(*drop)


def flag_suspicious(scored: DataFrame, threshold: float, higher_is_suspicious: bool = True) -> DataFrame:
    cond = F.col(SCORE) > threshold if higher_is_suspicious else F.col(SCORE) < threshold
    return scored.withColumn("suspicious", F.coalesce(cond, F.lit(False)))
