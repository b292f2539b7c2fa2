"""Scoring every flow of a day on Spark, by one of two scorers that give the same scores.

The JVM scorer (the default for both autoencoders, when the session has the scorer jar:
jvm/AeScore.java + jvm/AeBatch.java, built by scripts/build-jar.sh) reads the flows where Spark
holds them and scores a block of rows at a time with loops the JIT vectorizes: a plain read of
the flow table (Parquet, or a cached table) is scored straight from Spark's column vectors, any
other DataFrame from its rows. No data leaves the JVM: Spark 4.0 hands rows to Python by
writing Arrow value by value, and on 2 cores that hop alone caps any Python scorer at 1.2-1.5 M
flows/s (benchmarks/bench_score.py prints it). tests/unit/test_score_jvm.py holds it to the
numpy scorer below on real flows.

A model with inputs past the 18 (ae-context's host context) gets them computed by Spark first
(context.py); the JVM scorer then reads them ready-made from the rows beside the nine flow columns.

The Arrow scorer (a session without the jar, or SPOT_AE_SCORER=arrow): only the columns the
model reads cross from the JVM into Python, as whole Arrow batches (tens of thousands of rows):
the nine flow columns, or a variant's f_* columns. The other columns stay in the JVM and get the score joined
back by position. In Python one batch is: the features (features.feature_matrix, whole
columns), the scaling, two small matrix products and a row-wise sum, so no Python code runs per
row.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import numpy as np
import pandas as pd
from py4j.java_gateway import JavaClass
from pyspark.sql import DataFrame
from pyspark.sql.classic.dataframe import DataFrame as _ClassicDataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spot_ae_job.errors import SpotAEError
from spot_ae_job.features import FEATURE_COLUMNS, FEATURE_INPUTS, feature_matrix
from spot_ae_job.layout import SCORE
from spot_ae_job.schema import FLOW_FIELDS

SCORERS = ("auto", "jvm", "arrow")
JVM_CLASS = "spotae.AeScore"
# The types the JVM scorer reads are the flow table's (AeScore.INPUT_TYPES): other types are cast first.
_JVM_INPUT_TYPES = {c: t for c, t in FLOW_FIELDS if c in FEATURE_INPUTS}
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
    """The model as AeBatch.java reads it: little-endian doubles nIn, nHid, scale, offset, w1,
    b1, w2, b2. Scale, offset and weights go through float32 first, as the numpy scorer uses them."""
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float32) for w in model.weights)
    scale = model.scaler.scale.astype(np.float32)
    offset = model.scaler.offset.astype(np.float32)
    parts = [np.array(w1.shape, dtype=np.float64), scale, offset, w1.ravel(), b1, w2.ravel(), b2]
    return np.concatenate([p.astype("<f8") for p in parts]).tobytes()


def _jvm_scorer(spark):
    """The JVM scorer's class on this session (py4j), or None if the jar is missing (logged
    once per process: py4j answers a missing class with a package object, not an error)."""
    global _jvm_missing_logged
    obj = spark._jvm
    for part in JVM_CLASS.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, JavaClass):
        return obj
    if not _jvm_missing_logged:
        _log.warning("JVM scorer unavailable (no class %s: run scripts/build-jar.sh); scoring with the Arrow scorer",
                     JVM_CLASS)
        _jvm_missing_logged = True
    return None


def jvm_path(flows: DataFrame) -> str | None:
    """How the JVM scorer reads `flows` for the paper's model: "columnar" (straight from Spark's
    column vectors) or "rows"; None without the jar. A model with ready-made inputs (ae-context)
    always reads rows."""
    cls = _jvm_scorer(flows.sparkSession)
    return None if cls is None else str(cls.path(flows._jdf))


def score_flows(model, flows: DataFrame, scorer: str | None = None, columns: list[str] | None = None) -> DataFrame:
    """Flow-table rows (plus any extra columns, e.g. labels) -> the same rows + `score`.

    `columns` = the columns of `flows` to keep beside the score (default: all; [] for the
    score alone, which lets a columnar read skip building the other columns).

    The paper's model reads only the 9 input columns: with `scorer` jvm (what `auto`, the
    default, picks when the jar is there) in the JVM a block of rows at a time, with arrow in
    numpy per Arrow batch. A variant with inputs beyond the 18 (ae-context) first adds them
    with its own Spark step (`model.features`: context.py's counts), kept beside the score
    (explanations and analysts read them); the JVM scorer reads them as they are, the Arrow
    scorer reads all the model's feature columns."""
    scorer = scorer or os.environ.get("SPOT_AE_SCORER", "auto")
    if scorer not in SCORERS:
        raise SpotAEError(f"unknown scorer {scorer!r} (SPOT_AE_SCORER): one of {', '.join(SCORERS)}")
    cols = model.feature_columns
    keep = [c for c in (flows.columns if columns is None else columns) if c not in cols and c != SCORE]
    ready = [c for c in cols if c not in FEATURE_COLUMNS]  # inputs past the 18, computed by Spark
    if ready:
        flows = model.features(flows)
    missing = [c for c in FEATURE_INPUTS if c not in flows.columns]  # a variant's f_* columns can stand in
    if missing and not ready:
        raise ValueError(f"missing columns for scoring: {missing}")
    cls = None if scorer == "arrow" or missing else _jvm_scorer(flows.sparkSession)
    if cls is not None:
        types = dict(flows.dtypes)
        casts = {c: F.col(c).cast(t) for c, t in _JVM_INPUT_TYPES.items() if types[c] != t}
        casts.update({c: F.col(c).cast("float") for c in ready if types[c] != "float"})
        typed = flows.withColumns(casts) if casts else flows
        if ready:  # not the 18 f_* columns model.features added: the scorer computes them, Spark need not
            typed = typed.select(*dict.fromkeys([*FEATURE_INPUTS, *keep, *ready]))
        jdf = cls.score(typed._jdf, bytearray(jvm_weights(model)), [*keep, *ready], SCORE, ready)
        return _ClassicDataFrame(jdf, flows.sparkSession)
    if scorer == "jvm":
        why = f"the flows lack its inputs {missing}" if missing else "its jar is not on this Spark session (scripts/build-jar.sh)"
        raise SpotAEError(f"the JVM scorer was asked for but {why}")
    if ready:  # the Arrow scorer reads every input from its f_* column; the ready-made ones stay beside the score
        return score_features(model, flows.withColumns({"_in_" + c: F.col(c) for c in ready})) \
            .withColumnsRenamed({"_in_" + c: c for c in ready}).select(*keep, *ready, SCORE)
    udf = _scorer_udf(model, feature_matrix)
    return flows.withColumn(SCORE, udf(F.struct(*FEATURE_INPUTS))).select(*keep, SCORE)


def flag_suspicious(scored: DataFrame, threshold: float, higher_is_suspicious: bool = True) -> DataFrame:
    cond = F.col(SCORE) > threshold if higher_is_suspicious else F.col(SCORE) < threshold
    return scored.withColumn("suspicious", F.coalesce(cond, F.lit(False)))
