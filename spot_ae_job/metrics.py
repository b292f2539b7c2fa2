"""Detection metrics computed by Spark on (score, is_attack) rows, per group (e.g. per day).

A full CIC-IDS2018 day is millions of flows: nothing here collects rows to the driver. The
threshold-free curves (ROC-AUC, average precision, recall at a benign FPR) are exact and
sort-based: Spark counts attacks/benign per distinct score, range-sorts those counts, and running
sums inside each sorted partition plus the (tiny) per-partition totals give the cumulative
confusion matrix at every threshold. Only one row per (group, partition) and one row per group
ever reach the driver.

Conventions (the same in the numpy reference below, which the tests compare against):
- "positive" = attack; a flow is flagged when score > threshold (AE) or score < threshold (LDA:
  `higher_is_suspicious=False`). Rows with a null score or a null label are not counted
  (reported as `unscored` / left to the caller).
- ROC-AUC: trapezoidal area over all distinct thresholds, so tied scores count one half.
- PR-AUC is average precision: sum over thresholds of (recall step) x precision, as scikit-learn
  defines it (no interpolation).
- recall/precision at a benign FPR x: the largest flagged set (thresholds taken at distinct scores)
  whose benign false-positive rate is <= x.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

DEFAULT_FPRS = (0.001, 0.01, 0.05)

# ---------------------------------------------------------------- numpy reference (small inputs)


def confusion(y_true: np.ndarray, flagged: np.ndarray) -> dict:
    y, f = np.asarray(y_true, bool), np.asarray(flagged, bool)
    return {"tp": int((y & f).sum()), "fp": int((~y & f).sum()), "tn": int((~y & ~f).sum()), "fn": int((y & ~f).sum())}


def rates(c: dict) -> dict:
    """accuracy, precision, recall, F1, benign FPR from a confusion matrix (NaN where undefined)."""
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    n = tp + fp + tn + fn
    div = lambda a, b: a / b if b else float("nan")  # noqa: E731
    prec, rec = div(tp, tp + fp), div(tp, tp + fn)
    f1 = div(2 * tp, 2 * tp + fp + fn)
    return {"accuracy": div(tp + tn, n), "precision": prec, "recall": rec, "f1": f1, "fpr": div(fp, fp + tn)}


def _curve(y_true, scores, higher_is_suspicious=True):
    y = np.asarray(y_true, bool)
    s = np.asarray(scores, float)
    s = s if higher_is_suspicious else -s
    distinct = np.unique(s)[::-1]  # most suspicious first
    tp = np.array([(y & (s == v)).sum() for v in distinct], float)
    fp = np.array([(~y & (s == v)).sum() for v in distinct], float)
    return distinct, np.cumsum(tp), np.cumsum(fp), tp, fp


def roc_auc(y_true, scores, higher_is_suspicious=True) -> float:
    _, ctp, cfp, tp, fp = _curve(y_true, scores, higher_is_suspicious)
    P, N = ctp[-1] if len(ctp) else 0, cfp[-1] if len(cfp) else 0
    if P == 0 or N == 0:
        return float("nan")
    return float(np.sum(fp * (2 * ctp - tp)) / (2 * P * N))


def average_precision(y_true, scores, higher_is_suspicious=True) -> float:
    _, ctp, cfp, tp, _ = _curve(y_true, scores, higher_is_suspicious)
    P = ctp[-1] if len(ctp) else 0
    if P == 0:
        return float("nan")
    return float(np.sum(tp / P * ctp / (ctp + cfp)))


def at_fpr(y_true, scores, fpr: float, higher_is_suspicious=True) -> dict:
    _, ctp, cfp, _, _ = _curve(y_true, scores, higher_is_suspicious)
    P, N = (ctp[-1], cfp[-1]) if len(ctp) else (0, 0)
    ok = cfp <= fpr * N
    if not ok.any() or P == 0:
        return {"recall": 0.0 if P else float("nan"), "precision": float("nan"), "fpr": 0.0}
    i = np.where(ok)[0][-1]
    return {"recall": float(ctp[i] / P), "precision": float(ctp[i] / (ctp[i] + cfp[i])) if ctp[i] + cfp[i] else float("nan"),
            "fpr": float(cfp[i] / N) if N else float("nan")}


def reference_metrics(y_true, scores, threshold: float, higher_is_suspicious=True, fprs: Sequence[float] = DEFAULT_FPRS) -> dict:
    """The same figures as `binary_metrics`, in plain numpy, for tests and small inputs."""
    s = np.asarray(scores, float)
    flagged = s > threshold if higher_is_suspicious else s < threshold
    c = confusion(y_true, flagged)
    out = {**c, **rates(c), "roc_auc": roc_auc(y_true, s, higher_is_suspicious),
           "pr_auc": average_precision(y_true, s, higher_is_suspicious)}
    for x in fprs:
        r = at_fpr(y_true, s, x, higher_is_suspicious)
        out[f"recall_at_fpr_{x:g}"] = r["recall"]
        out[f"precision_at_fpr_{x:g}"] = r["precision"]
    return out


# ---------------------------------------------------------------- Spark (any size)


def _group_cols(group_col):
    if group_col is None:
        return []
    return [group_col] if isinstance(group_col, str) else list(group_col)


def binary_metrics(
    df: DataFrame,
    threshold: float,
    *,
    score_col: str = "score",
    label_col: str = "is_attack",
    higher_is_suspicious: bool = True,
    group_col: str | Sequence[str] | None = None,
    fprs: Sequence[float] = DEFAULT_FPRS,
) -> list[dict]:
    """One dict per group: confusion matrix at `threshold`, accuracy, precision, recall, F1, FPR,
    ROC-AUC, PR-AUC (average precision) and recall/precision at each benign FPR in `fprs`."""
    keys = _group_cols(group_col)
    gk = keys if keys else []
    lab = F.col(label_col)
    sc = F.col(score_col)
    # the confusion matrix at the threshold: one pass of conditional sums
    flagged = (sc > F.lit(threshold)) if higher_is_suspicious else (sc < F.lit(threshold))
    base = df.where(lab.isNotNull())
    scored = base.where(sc.isNotNull() & ~F.isnan(sc))
    cm = base.groupBy(*gk).agg(
        F.sum(F.when(sc.isNull() | F.isnan(sc), 1).otherwise(0)).alias("unscored"),
        F.sum(F.when(sc.isNotNull() & ~F.isnan(sc) & lab & flagged, 1).otherwise(0)).alias("tp"),
        F.sum(F.when(sc.isNotNull() & ~F.isnan(sc) & ~lab & flagged, 1).otherwise(0)).alias("fp"),
        F.sum(F.when(sc.isNotNull() & ~F.isnan(sc) & ~lab & ~flagged, 1).otherwise(0)).alias("tn"),
        F.sum(F.when(sc.isNotNull() & ~F.isnan(sc) & lab & ~flagged, 1).otherwise(0)).alias("fn"),
    ).collect()
    results = {}
    for r in cm:
        key = tuple(r[k] for k in gk)
        c = {k: int(r[k]) for k in ("tp", "fp", "tn", "fn")}
        results[key] = {**{k: r[k] for k in gk}, **c, "unscored": int(r["unscored"]), **rates(c)}

    curves = _curve_metrics(scored, gk, score_col, label_col, higher_is_suspicious, fprs)
    out = []
    for key, res in sorted(results.items(), key=lambda kv: tuple(str(v) for v in kv[0])):
        res.update(curves.get(key, _empty_curve(fprs)))
        out.append(res)
    return out


def _empty_curve(fprs) -> dict:
    d = {"roc_auc": float("nan"), "pr_auc": float("nan")}
    for x in fprs:
        d[f"recall_at_fpr_{x:g}"] = float("nan")
        d[f"precision_at_fpr_{x:g}"] = float("nan")
    return d


def _curve_metrics(scored: DataFrame, gk: list[str], score_col: str, label_col: str, higher: bool, fprs) -> dict:
    spark = scored.sparkSession
    s = F.col(score_col).cast("double") if higher else -F.col(score_col).cast("double")
    # attacks / benign per distinct score: the size of the curve, not of the data
    per_score = scored.groupBy(*gk, s.alias("_s")).agg(
        F.sum(F.col(label_col).cast("long")).alias("_tp"),
        F.sum((~F.col(label_col)).cast("long")).alias("_fp"),
    )
    # range-sort (most suspicious first inside each group), remember each row's partition, freeze it
    ordered = per_score.orderBy(*[F.col(k).asc() for k in gk], F.col("_s").desc()).withColumn("_pid", F.spark_partition_id())
    ordered = ordered.localCheckpoint(eager=True)
    totals = ordered.groupBy(*gk, "_pid").agg(F.sum("_tp").alias("t"), F.sum("_fp").alias("f")).collect()
    # offsets: everything of the same group that sits in an earlier partition
    by_group: dict = {}
    for r in totals:
        by_group.setdefault(tuple(r[k] for k in gk), []).append((r["_pid"], int(r["t"]), int(r["f"])))
    offsets, group_tot = [], {}
    for key, parts in by_group.items():
        parts.sort()
        acc_t = acc_f = 0
        for pid, t, f in parts:
            offsets.append((*key, pid, acc_t, acc_f))
            acc_t += t
            acc_f += f
        group_tot[key] = (acc_t, acc_f)
    off_schema = ", ".join([f"`{k}` {dict(scored.dtypes)[k]}" for k in gk] + ["_pid int", "_ot long", "_of long"])
    off = spark.createDataFrame(offsets, off_schema) if offsets else None
    if off is None:
        return {}
    tot_schema = ", ".join([f"`{k}` {dict(scored.dtypes)[k]}" for k in gk] + ["_P long", "_N long"])
    tot = spark.createDataFrame([(*k, v[0], v[1]) for k, v in group_tot.items()], tot_schema)

    w = Window.partitionBy(*gk, "_pid").orderBy(F.col("_s").desc()).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    cum = ordered.join(F.broadcast(off), [*gk, "_pid"])
    cum = cum.join(F.broadcast(tot), gk) if gk else cum.crossJoin(F.broadcast(tot))
    cum = cum.withColumn("_ctp", F.sum("_tp").over(w) + F.col("_ot")).withColumn("_cfp", F.sum("_fp").over(w) + F.col("_of"))
    P, N = F.col("_P").cast("double"), F.col("_N").cast("double")
    aggs = [
        # try_divide: a day without attacks (P = 0) or without benign flows (N = 0) has no curve
        F.try_divide(F.sum(F.col("_fp") * (2 * F.col("_ctp") - F.col("_tp"))), 2 * P * N).alias("roc_auc"),
        F.try_divide(F.sum(F.col("_tp") * F.col("_ctp") / (F.col("_ctp") + F.col("_cfp"))), P).alias("pr_auc"),
    ]
    for i, x in enumerate(fprs):
        ok = F.col("_cfp") <= F.lit(float(x)) * N
        # the largest flagged set within budget = the one with the most flows (cumulative counts grow)
        aggs.append(F.max(F.when(ok, F.struct((F.col("_ctp") + F.col("_cfp")).alias("n"), "_ctp", "_cfp"))).alias(f"_b{i}"))
    rows = cum.groupBy(*gk, "_P", "_N").agg(*aggs).collect()
    out = {}
    for r in rows:
        key = tuple(r[k] for k in gk)
        Pv, Nv = r["_P"], r["_N"]
        d = {
            "roc_auc": float(r["roc_auc"]) if Pv and Nv else float("nan"),
            "pr_auc": float(r["pr_auc"]) if Pv else float("nan"),
        }
        for i, x in enumerate(fprs):
            b = r[f"_b{i}"]
            if not Pv:
                rec, prec = float("nan"), float("nan")
            elif b is None:
                rec, prec = 0.0, float("nan")
            else:
                rec = b["_ctp"] / Pv
                prec = b["_ctp"] / b["n"] if b["n"] else float("nan")
            d[f"recall_at_fpr_{x:g}"] = float(rec)
            d[f"precision_at_fpr_{x:g}"] = float(prec)
        out[key] = d
    return out


def confusion_at(
    df: DataFrame,
    thresholds: dict[str, float],
    *,
    score_col: str = "score",
    label_col: str = "is_attack",
    higher_is_suspicious: bool = True,
    group_col: str | Sequence[str] | None = None,
) -> dict:
    """The confusion matrix at several named thresholds in one Spark pass:
    {group key tuple: {name: {tp, fp, tn, fn, accuracy, precision, recall, f1, fpr, alerts}}}.
    Rows with a null score or label are not counted, as in `binary_metrics`."""
    gk = _group_cols(group_col)
    lab, sc = F.col(label_col), F.col(score_col)
    ok = lab.isNotNull() & sc.isNotNull() & ~F.isnan(sc)
    aggs, names = [], list(thresholds)
    for i, name in enumerate(names):
        t = F.lit(float(thresholds[name]))
        flagged = (sc > t) if higher_is_suspicious else (sc < t)
        for k, cond in (("tp", lab & flagged), ("fp", ~lab & flagged), ("tn", ~lab & ~flagged), ("fn", lab & ~flagged)):
            aggs.append(F.sum(F.when(ok & cond, 1).otherwise(0)).alias(f"{k}_{i}"))
    if not aggs:
        return {}
    out = {}
    for r in df.groupBy(*gk).agg(*aggs).collect():
        per = {}
        for i, name in enumerate(names):
            c = {k: int(r[f"{k}_{i}"]) for k in ("tp", "fp", "tn", "fn")}
            per[name] = {**c, **rates(c), "alerts": c["tp"] + c["fp"]}
        out[tuple(r[k] for k in gk)] = per
    return out


# ---------------------------------------------------------------- bootstrap intervals (driver, bounded)

# "Enough rows" for a bootstrap interval: at least this many attacks and this many benign flows in
# the group. Below it a resample often has a handful of one class and the interval says nothing.
MIN_PER_CLASS = 30
# Rows per class the bootstrap resamples at most (a seeded Spark sample beyond that): the interval of
# a larger group is then that of a 20k-per-class subsample, i.e. wider than the truth (conservative).
MAX_PER_CLASS = 20_000


def _weighted_curve_metrics(order_groups: np.ndarray, y_sorted: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """ROC-AUC and average precision of rows already sorted most-suspicious first, each counted w
    times; `order_groups` are the start indices of runs of tied scores (ties share a threshold)."""
    tp = np.add.reduceat(np.where(y_sorted, w, 0), order_groups).astype(float)
    fp = np.add.reduceat(np.where(y_sorted, 0, w), order_groups).astype(float)
    ctp, cfp = np.cumsum(tp), np.cumsum(fp)
    P, N = ctp[-1], cfp[-1]
    if P == 0 or N == 0:
        return float("nan"), float("nan")
    auc = float(np.sum(fp * (2 * ctp - tp)) / (2 * P * N))
    ap = float(np.sum(tp / P * ctp / np.maximum(ctp + cfp, 1)))
    return auc, ap


def bootstrap_auc(y_true, scores, higher_is_suspicious: bool = True, n_boot: int = 200, seed: int = 7,
                  level: float = 0.95) -> dict:
    """Percentile bootstrap intervals for ROC-AUC and PR-AUC (average precision), resampling attacks
    and benign flows separately (each class keeps its size, so every resample has both). NaN
    bounds when the rows are fewer than MIN_PER_CLASS of either class."""
    y = np.asarray(y_true, bool)
    s = np.asarray(scores, float)
    s = s if higher_is_suspicious else -s
    nan = {"roc_auc_lo": float("nan"), "roc_auc_hi": float("nan"), "pr_auc_lo": float("nan"), "pr_auc_hi": float("nan")}
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if len(pos) < MIN_PER_CLASS or len(neg) < MIN_PER_CLASS:
        return nan
    order = np.argsort(-s, kind="stable")
    ys, ss = y[order], s[order]
    starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    rng = np.random.default_rng(seed)
    aucs, aps = np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        w = np.zeros(len(s), dtype=np.int64)
        np.add.at(w, inv[rng.choice(pos, len(pos))], 1)
        np.add.at(w, inv[rng.choice(neg, len(neg))], 1)
        aucs[b], aps[b] = _weighted_curve_metrics(starts, ys, w)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {"roc_auc_lo": float(np.percentile(aucs, lo)), "roc_auc_hi": float(np.percentile(aucs, hi)),
            "pr_auc_lo": float(np.percentile(aps, lo)), "pr_auc_hi": float(np.percentile(aps, hi))}


def bootstrap_intervals(
    df: DataFrame,
    *,
    score_col: str = "score",
    label_col: str = "is_attack",
    higher_is_suspicious: bool = True,
    group_col: str | Sequence[str] | None = None,
    n_boot: int = 200,
    seed: int = 7,
) -> dict:
    """{group key tuple: bootstrap_auc(...)} for the groups with enough rows of both classes.
    At most MAX_PER_CLASS rows per class and group reach the driver (a seeded Spark sample)."""
    gk = _group_cols(group_col)
    lab, sc = F.col(label_col), F.col(score_col)
    rows = df.where(lab.isNotNull() & sc.isNotNull() & ~F.isnan(sc))
    counts = {(tuple(r[k] for k in gk), bool(r[label_col])): int(r["n"])
              for r in rows.groupBy(*gk, label_col).count().withColumnRenamed("count", "n").collect()}
    keys = {k for k, _ in counts}
    enough = [k for k in keys if counts.get((k, True), 0) >= MIN_PER_CLASS and counts.get((k, False), 0) >= MIN_PER_CLASS]
    if not enough:
        return {}
    keep = F.lit(False)
    for k in enough:
        match = F.lit(True)
        for c, v in zip(gk, k):
            match = match & (F.col(c) == F.lit(v))
        for cls in (True, False):
            frac = min(1.0, MAX_PER_CLASS / counts[(k, cls)])
            keep = keep | (match & (lab == F.lit(cls)) & (F.rand(seed) < F.lit(frac)))
    picked: dict = {}
    for r in rows.where(keep).select(*gk, label_col, score_col).collect():
        ys, ss = picked.setdefault(tuple(r[k] for k in gk), ([], []))
        ys.append(bool(r[label_col]))
        ss.append(float(r[score_col]))
    return {k: bootstrap_auc(v[0], v[1], higher_is_suspicious, n_boot=n_boot, seed=seed) for k, v in picked.items()}


def is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


__all__ = ["binary_metrics", "confusion_at", "bootstrap_auc", "bootstrap_intervals", "MIN_PER_CLASS", "reference_metrics", "confusion", "rates", "roc_auc", "average_precision", "at_fpr", "DEFAULT_FPRS"]
