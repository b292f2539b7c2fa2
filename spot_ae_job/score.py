"""Scoring every flow of a day on Spark: Arrow batches through the saved weights in numpy.

The feature columns are computed by Spark SQL (JVM, codegen) from the same expressions the
training used; a scalar pandas UDF then receives them as whole Arrow batches (tens of thousands
of rows). The network is two small matrix products, so one numpy call scores a batch and no
Python code runs per row.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spot_ae_job.features import add_features

SCORE = "score"


def _scorer_udf(model):
    """A scalar pandas UDF over the struct of the 18 features: Spark sends only those columns
    through Arrow (flow columns, strings included, stay in the JVM and are re-joined by position),
    and each batch is scored by two matrix products in numpy."""
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float32) for w in model.weights)
    scale = model.scaler.scale.astype(np.float32)
    offset = model.scaler.offset.astype(np.float32)

    @F.pandas_udf(T.DoubleType())
    def score(feats: pd.DataFrame) -> pd.Series:
        x = feats.to_numpy(dtype=np.float32)
        x *= scale
        x += offset
        d = np.tanh(x @ w1 + b1) @ w2 + b2
        d -= x
        return pd.Series(np.einsum("ij,ij->i", d, d) / x.shape[1], dtype="float64")

    return score


def score_features(model, df: DataFrame) -> DataFrame:
    """df holding the f_* feature columns (and anything else) -> the other columns + `score`."""
    cols = model.feature_columns
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"missing feature columns: {missing}")
    score = _scorer_udf(model)(F.struct(*cols))
    return df.withColumn(SCORE, score).drop(*cols)


def score_flows(model, flows: DataFrame) -> DataFrame:
    """Flow-table rows (plus any extra columns, e.g. labels) -> the same rows + `score`."""
    return score_features(model, model.features(flows))


def flag_suspicious(scored: DataFrame, threshold: float, higher_is_suspicious: bool = True) -> DataFrame:
    cond = F.col(SCORE) > threshold if higher_is_suspicious else F.col(SCORE) < threshold
    return scored.withColumn("suspicious", F.coalesce(cond, F.lit(False)))
