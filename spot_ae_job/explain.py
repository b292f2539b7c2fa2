"""Why a flow was flagged: the three inputs the autoencoder reconstructed worst.

A flow's score is the mean of its squared per-input reconstruction errors (the 18 flow metrics,
plus the host context of context.py for ae-context); the largest three say what was unusual
about it: for a flood, "flows from source in the hour" far above its benign median. Each comes with the flow's value and the benign training
median of that feature, in the flow's own units (the log features are turned back with expm1,
so `ibyt` reads as bytes and `tdur` as seconds), and its squared error in the model's scaled
units (`expl1_error` >= `expl2_error` >= `expl3_error`; their sum is at most 18 x score).

Only suspicious rows are explained (a day has few), by a pandas UDF over the saved weights:
whole Arrow batches, one numpy pass each.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spot_ae_job.context import COUNTS as CONTEXT_COUNTS
from spot_ae_job.context import DISPLAY_NAMES as CONTEXT_NAMES
from spot_ae_job.features import FEATURE_COLUMNS, FEATURE_PREFIX, FEATURES, add_features
from spot_ae_job.schema import EXPLANATION_COLUMNS, EXPLANATION_SCHEMA
from spot_ae_job.schema import EXPLANATION_TOP as TOP

# Names an analyst knows: the flow column a feature comes from (flags and protocol keep theirs).
DISPLAY_NAMES = {
    "sport_log": "sport", "dport_log": "dport", "dur_log": "tdur",
    "ipkt_log": "ipkt", "ibyt_log": "ibyt", "opkt_log": "opkt", "obyt_log": "obyt",
    "ibpp_log": "ibyt/ipkt", "obpp_log": "obyt/opkt",
}
DISPLAY_NAMES.update(CONTEXT_NAMES)


def _is_log(features: list[str]) -> np.ndarray:
    """Inputs that are log1p of a count (the flow metrics named *_log, the context counts)."""
    return np.array([f.endswith("_log") or f in CONTEXT_COUNTS for f in features])


def to_flow_units(values: np.ndarray, features: list[str] = FEATURES) -> np.ndarray:
    """Input values (last axis in `features` order) -> the flow's units: expm1 undoes log1p."""
    v = np.asarray(values, dtype=np.float64)
    return np.round(np.where(_is_log(features), np.expm1(v), v), 4)


def benign_medians(features: DataFrame, columns: list[str] = FEATURE_COLUMNS) -> dict[str, float]:
    """Median of each input over the benign training rows (one aggregation), saved with the model."""
    names = [c[len(FEATURE_PREFIX):] for c in columns]
    row = features.agg(*[F.percentile_approx(c, 0.5, 10_000).alias(f) for c, f in zip(columns, names)]).first()
    return {f: float(row[f]) for f in names}


def explain(model, raw: np.ndarray) -> pd.DataFrame:
    """Unscaled input rows (n x the model's inputs) -> the explanation columns, largest error first."""
    feats = model.scaler.features
    w1, b1, w2, b2 = (np.asarray(w, dtype=np.float64) for w in model.weights)
    x = raw * model.scaler.scale + model.scaler.offset
    err = (np.tanh(x @ w1 + b1) @ w2 + b2 - x) ** 2
    top = np.argsort(-err, axis=1, kind="stable")[:, :TOP]
    med = model.meta.get("benign_medians") or {}
    medians = to_flow_units(np.array([med.get(f, np.nan) for f in feats]), feats)
    values = to_flow_units(raw, feats)
    names = np.array([DISPLAY_NAMES.get(f, f) for f in feats], dtype=object)
    rows = np.arange(len(raw))[:, None]
    out = {}
    for i in range(TOP):
        j = top[:, i]
        out[f"expl{i + 1}_feature"] = names[j]
        out[f"expl{i + 1}_value"] = values[rows[:, 0], j]
        out[f"expl{i + 1}_benign_median"] = medians[j]
        out[f"expl{i + 1}_error"] = err[rows[:, 0], j]
    return pd.DataFrame(out, columns=EXPLANATION_COLUMNS)


def add_explanations(model, flows: DataFrame) -> DataFrame:
    """Flow rows (with the context columns for ae-context) -> the same rows + the explanation
    columns (computed for every row given: pass only the suspicious ones)."""
    if getattr(model, "kind", None) not in ("ae", "ae-context"):
        return with_null_explanations(flows)

    @F.pandas_udf(EXPLANATION_SCHEMA)
    def why(feats: pd.DataFrame) -> pd.DataFrame:
        return explain(model, feats.to_numpy(dtype=np.float64))

    cols = flows.columns
    with_f = add_features(flows.drop(*[c for c in FEATURE_COLUMNS if c in cols]))
    inputs = model.feature_columns
    return with_f.select(*cols, why(F.struct(*inputs)).alias("_why")).select(*cols, "_why.*")


def with_null_explanations(df: DataFrame) -> DataFrame:
    """The same columns, all null: rows that are not suspicious, or a model with no per-feature error."""
    return df.select("*", *[F.lit(None).cast(f.dataType).alias(f.name) for f in EXPLANATION_SCHEMA.fields])
