"""Is today's traffic still the traffic the model learned? The population stability index.

At training time each feature and the score get reference bins: cuts at the deciles of the
training data (the score's from the held-out benign slice, the scores a new benign day should
resemble) and the share of rows in each bin. A scored day is put in the same bins and compared:

    PSI = sum over bins of (day share - training share) * ln(day share / training share)

(an empty bin counts as a share of 1e-4, so one new value cannot make it infinite). The usual
reading: below 0.1 stable, 0.1-0.25 worth a look, above 0.25 the population has shifted and
the threshold's false-alarm rate no longer holds. A day whose score PSI exceeds the limit is
marked drifted in its run.json, and the OA shows it.

Cuts and counts are Spark aggregations (percentile_approx, one grouped count over all columns
at once): only the few numbers per column reach the driver, never the rows.
"""
from __future__ import annotations

import math

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from spot_ae_job.features import FEATURE_COLUMNS, FEATURES, add_features
from spot_ae_job.layout import SCORE

PSI_LIMIT = 0.25
BINS = 10
EMPTY_SHARE = 1e-4


def named_features(flows: DataFrame, keep: tuple[str, ...] = ()) -> DataFrame:
    """Flow rows -> the 18 model features under their plain names (+ `keep` columns)."""
    return add_features(flows).select(*keep, *[F.col(c).alias(f) for c, f in zip(FEATURE_COLUMNS, FEATURES)])


def _bucket(col: str, cuts: list[float]) -> Column:
    """Bin index of a value: how many cuts lie strictly below it (0 .. len(cuts))."""
    c = F.col(col).cast("double")
    idx = F.lit(0)
    for cut in cuts:
        idx = idx + F.when(c > F.lit(float(cut)), 1).otherwise(0)
    return idx


def fit_cuts(df: DataFrame, cols: list[str], bins: int = BINS) -> dict[str, list[float]]:
    """Decile cuts of each column (repeated values collapse: a 0/1 flag gets one cut)."""
    levels = [i / bins for i in range(1, bins)]
    row = df.agg(*[F.percentile_approx(c, levels, 10_000).alias(c) for c in cols]).first()
    return {c: sorted({float(v) for v in (row[c] or []) if v is not None and math.isfinite(v)}) for c in cols}


def counts(df: DataFrame, cuts: dict[str, list[float]]) -> dict[str, list[int]]:
    """Rows per bin of every column, in one grouped count (nulls and NaNs are left out)."""
    cols = list(cuts)
    pairs = F.explode(F.array(*[
        F.struct(F.lit(c).alias("col"), F.when(F.col(c).isNotNull() & ~F.isnan(c), _bucket(c, cuts[c])).alias("bin"))
        for c in cols
    ])).alias("p")
    rows = df.select(pairs).select("p.col", "p.bin").where(F.col("bin").isNotNull()).groupBy("col", "bin").count().collect()
    out = {c: [0] * (len(cuts[c]) + 1) for c in cols}
    for r in rows:
        out[r["col"]][r["bin"]] += int(r["count"])
    return out


def reference(df: DataFrame, cols: list[str], bins: int = BINS) -> dict:
    """{column: {"cuts": [...], "counts": [...]}} of the training rows, saved in model.json."""
    cuts = fit_cuts(df, cols, bins)
    n = counts(df, cuts)
    return {c: {"cuts": cuts[c], "counts": n[c]} for c in cols}


def psi(expected: list[int] | np.ndarray, actual: list[int] | np.ndarray) -> float:
    """Population stability index of two bin-count lists over the same bins."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), EMPTY_SHARE)
    a = np.maximum(a / a.sum(), EMPTY_SHARE)
    return float(np.sum((a - e) * np.log(a / e)))


def measure(ref: dict, day: DataFrame, limit: float = PSI_LIMIT) -> dict:
    """A day's PSI against the reference, for every column the reference and the day share.

    `drifted` follows the score's PSI: that is what moves the false-alarm rate; the feature
    figures say where a shift came from."""
    cols = [c for c in ref if c in day.columns]
    got = counts(day, {c: ref[c]["cuts"] for c in cols})
    figures = {c: psi(ref[c]["counts"], got[c]) for c in cols}
    feats = {c: round(v, 6) for c, v in figures.items() if c != SCORE and math.isfinite(v)}
    score_psi = figures.get(SCORE, float("nan"))
    top = max(feats, key=feats.get) if feats else None
    return {
        "score_psi": round(score_psi, 6) if math.isfinite(score_psi) else None,
        "feature_psi": feats,
        "largest_feature": top,
        "limit": limit,
        "drifted": bool(math.isfinite(score_psi) and score_psi > limit),
        "score_counts": got.get(SCORE),
    }
