"""Detection metrics: hand-checked on tiny cases, and Spark's distributed figures equal numpy's."""
from __future__ import annotations

import math

import numpy as np
import pytest

from spot_ae_job import metrics

# 3 attacks, 5 benign. Worked by hand:
#   threshold 0.5 flags 0.9 (attack), 0.8 (attack), 0.7 (benign): tp 2, fp 1, fn 1, tn 4
#   ROC-AUC: attack 0.9 and 0.8 beat all 5 benign, 0.3 beats 4 of 5 -> 14 / 15
#   ranked 0.9 A, 0.8 A, 0.7 B, 0.3 A: precision at each attack 1, 1, 3/4 -> AP = 2.75 / 3
#   benign FPR <= 0.2 (1 of 5) allows flagging down to 0.3: recall 1, precision 3/4
#   benign FPR 0 allows flagging down to 0.8: recall 2/3, precision 1
Y = [True, True, True, False, False, False, False, False]
S = [0.9, 0.8, 0.3, 0.7, 0.2, 0.1, 0.1, 0.05]
HAND = {
    "tp": 2, "fp": 1, "tn": 4, "fn": 1,
    "accuracy": 6 / 8, "precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "fpr": 1 / 5,
    "roc_auc": 14 / 15, "pr_auc": 2.75 / 3,
    "recall_at_fpr_0.2": 1.0, "precision_at_fpr_0.2": 0.75,
    "recall_at_fpr_0": 2 / 3, "precision_at_fpr_0": 1.0,
}


def _close(a: dict, b: dict, keys) -> None:
    for k in keys:
        x, y = a[k], b[k]
        if isinstance(y, float) and math.isnan(y):
            assert math.isnan(x), k
        else:
            assert x == pytest.approx(y, abs=1e-9), k


def test_numpy_reference_matches_the_hand_worked_example():
    got = metrics.reference_metrics(Y, S, 0.5, fprs=(0.2, 0.0))
    _close(got, HAND, HAND.keys())


def test_low_is_suspicious_mirrors_the_same_figures():
    """LDA scores are probabilities where low = suspicious; negating gives the AE's view."""
    got = metrics.reference_metrics(Y, [-s for s in S], -0.5, higher_is_suspicious=False, fprs=(0.2, 0.0))
    _close(got, HAND, HAND.keys())


def test_tied_scores_count_one_half():
    assert metrics.roc_auc([True, False], [0.5, 0.5]) == 0.5
    assert metrics.average_precision([True, False], [0.5, 0.5]) == 0.5


def test_undefined_figures_are_nan_not_zero():
    c = metrics.confusion([False, False], [False, False])
    r = metrics.rates(c)
    assert math.isnan(r["precision"]) and math.isnan(r["recall"]) and r["accuracy"] == 1.0
    assert math.isnan(metrics.roc_auc([False, False], [0.1, 0.2]))


def test_spark_matches_the_hand_worked_example(spark):
    df = spark.createDataFrame(list(zip(S, Y)), "score double, is_attack boolean")
    (got,) = metrics.binary_metrics(df, 0.5, fprs=(0.2, 0.0))
    _close(got, HAND, HAND.keys())
    assert got["unscored"] == 0


def test_spark_counts_null_scores_as_unscored_and_skips_null_labels(spark):
    rows = list(zip(S, Y)) + [(None, True), (None, False), (0.99, None)]
    df = spark.createDataFrame(rows, "score double, is_attack boolean")
    (got,) = metrics.binary_metrics(df, 0.5, fprs=(0.2, 0.0))
    _close(got, HAND, HAND.keys())
    assert got["unscored"] == 2


@pytest.mark.parametrize("higher", [True, False])
def test_spark_equals_numpy_per_group_across_many_sorted_partitions(spark, higher):
    """Random scores with many ties, three groups, the sort spread over 7 partitions (AQE off so
    Spark cannot merge them): the cross-partition running sums must give numpy's exact figures."""
    rng = np.random.default_rng(3)
    rows = []
    for g, n, p in (("a", 400, 0.1), ("b", 250, 0.5), ("c", 60, 0.02), ("d", 30, 0.0)):  # d: no attacks
        y = rng.random(n) < p
        s = np.round(rng.normal(0, 1, n) + 1.2 * y, 1)  # one decimal: plenty of ties
        rows += [(g, float(a), bool(b)) for a, b in zip(s, y)]
    df = spark.createDataFrame(rows, "day string, score double, is_attack boolean")
    old = {k: spark.conf.get(k) for k in ("spark.sql.adaptive.enabled", "spark.sql.shuffle.partitions")}
    spark.conf.set("spark.sql.adaptive.enabled", "false")
    spark.conf.set("spark.sql.shuffle.partitions", "7")
    try:
        got = metrics.binary_metrics(df, 0.3, higher_is_suspicious=higher, group_col="day")
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)
    assert [g["day"] for g in got] == ["a", "b", "c", "d"]
    for g in got:
        sel = [r for r in rows if r[0] == g["day"]]
        ref = metrics.reference_metrics([r[2] for r in sel], [r[1] for r in sel], 0.3, higher_is_suspicious=higher)
        _close(g, ref, ref.keys())


def test_several_thresholds_in_one_pass_give_the_reference_confusion(spark):
    df = spark.createDataFrame(list(zip(S, Y)) + [(None, True)], "score double, is_attack boolean")
    got = metrics.confusion_at(df, {"low": 0.25, "mid": 0.5, "high": 0.85})[()]
    for name, t in (("low", 0.25), ("mid", 0.5), ("high", 0.85)):
        ref = metrics.confusion(Y, np.array(S) > t)
        assert {k: got[name][k] for k in ref} == ref, name
        assert got[name]["alerts"] == ref["tp"] + ref["fp"]
    low = metrics.confusion_at(df, {"t": -0.5}, higher_is_suspicious=False)[()]["t"]  # nothing below -0.5
    assert low["tp"] == 0 and low["fp"] == 0


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(11)
    y = rng.random(600) < 0.2
    s = np.round(rng.normal(0, 1, 600) + 1.0 * y, 2)
    ci = metrics.bootstrap_auc(y, s, n_boot=200, seed=1)
    auc, ap = metrics.roc_auc(y, s), metrics.average_precision(y, s)
    assert ci["roc_auc_lo"] < auc < ci["roc_auc_hi"] and ci["pr_auc_lo"] < ap < ci["pr_auc_hi"]
    assert ci["roc_auc_hi"] - ci["roc_auc_lo"] < 0.2  # 120 attacks, 480 benign: a few points wide
    # the resampling keeps each class's size, so the weighted curve at weight 1 is the point estimate
    order = np.argsort(-s, kind="stable")
    starts = np.flatnonzero(np.r_[True, s[order][1:] != s[order][:-1]])
    assert metrics._weighted_curve_metrics(starts, y[order], np.ones(600, int)) == pytest.approx((auc, ap))


def test_bootstrap_needs_enough_rows_of_each_class():
    y = [True] * (metrics.MIN_PER_CLASS - 1) + [False] * 100
    s = list(range(len(y)))
    assert all(math.isnan(v) for v in metrics.bootstrap_auc(y, s).values())


def test_spark_bootstrap_only_for_groups_with_enough_rows(spark):
    rng = np.random.default_rng(5)
    rows = [("big", float(v + a), bool(a)) for v, a in zip(rng.normal(0, 1, 400), rng.random(400) < 0.3)]
    rows += [("small", float(v), i < 5) for i, v in enumerate(rng.normal(0, 1, 50))]
    df = spark.createDataFrame(rows, "day string, score double, is_attack boolean")
    got = metrics.bootstrap_intervals(df, group_col="day", n_boot=100)
    assert set(got) == {("big",)}
    sel = [r for r in rows if r[0] == "big"]
    auc = metrics.roc_auc([r[2] for r in sel], [r[1] for r in sel])
    assert got[("big",)]["roc_auc_lo"] < auc < got[("big",)]["roc_auc_hi"]
