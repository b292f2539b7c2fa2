"""Scoring every flow of a day on Spark: Arrow batches through the saved weights in numpy.

`mapInArrow` hands each Python worker whole Arrow record batches (tens of thousands of rows);
the network is two small matrix products, so one numpy call per batch scores all its rows and
no Python code runs per row. The feature columns are computed by Spark SQL (JVM, codegen)
before the hop, from the same expressions the training used.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spot_ae_job.features import FEATURE_COLUMNS, add_features

SCORE = "score"


def _batch_scorer(model, feature_idx: list[int], keep_idx: list[int], keep_names: list[str]):
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float32) for w in model.weights)
    scale = model.scaler.scale.astype(np.float32)
    offset = model.scaler.offset.astype(np.float32)
    n = float(len(feature_idx))

    def run(batches):
        for b in batches:
            if b.num_rows == 0:
                continue
            x = np.empty((b.num_rows, len(feature_idx)), dtype=np.float32)
            for j, i in enumerate(feature_idx):
                x[:, j] = b.column(i).to_numpy(zero_copy_only=False)
            x *= scale
            x += offset
            d = np.tanh(x @ w1 + b1) @ w2 + b2
            d -= x
            err = np.einsum("ij,ij->i", d, d) / n
            cols = [b.column(i) for i in keep_idx] + [pa.array(err.astype(np.float64))]
            yield pa.RecordBatch.from_arrays(cols, names=keep_names + [SCORE])

    return run


def score_features(model, df: DataFrame) -> DataFrame:
    """df holding the f_* feature columns (and anything else) -> the other columns + `score`."""
    names = df.columns
    missing = [c for c in FEATURE_COLUMNS if c not in names]
    if missing:
        raise ValueError(f"missing feature columns: {missing}")
    feature_idx = [names.index(c) for c in FEATURE_COLUMNS]
    keep = [(i, f) for i, f in enumerate(df.schema.fields) if f.name not in FEATURE_COLUMNS]
    out_schema = T.StructType([f for _, f in keep] + [T.StructField(SCORE, T.DoubleType(), False)])
    return df.mapInArrow(
        _batch_scorer(model, feature_idx, [i for i, _ in keep], [f.name for _, f in keep]), out_schema
    )


def score_flows(model, flows: DataFrame) -> DataFrame:
    """Flow-table rows (plus any extra columns, e.g. labels) -> the same rows + `score`."""
    return score_features(model, add_features(flows))


def flag_suspicious(scored: DataFrame, threshold: float, higher_is_suspicious: bool = True) -> DataFrame:
    cond = F.col(SCORE) > threshold if higher_is_suspicious else F.col(SCORE) < threshold
    return scored.withColumn("suspicious", F.coalesce(cond, F.lit(False)))
