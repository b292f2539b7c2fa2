"""Population stability index: hand-checked figures, and Spark's bins on constructed days."""
from __future__ import annotations

import math

import pytest

from spot_ae_job import drift


def test_psi_of_identical_shares_is_zero():
    assert drift.psi([10, 20, 70], [1, 2, 7]) == 0.0


def test_psi_hand_checked():
    # shares 0.5/0.5 -> 0.9/0.1: 0.4 ln(1.8) + (-0.4) ln(0.2) = 0.235115 + 0.643775
    assert drift.psi([50, 50], [90, 10]) == pytest.approx(0.4 * math.log(1.8) - 0.4 * math.log(0.2))
    assert drift.psi([50, 50], [90, 10]) == pytest.approx(0.878890, abs=1e-6)


def test_an_empty_bin_counts_as_a_tiny_share_not_infinity():
    # training shares 1 / 1e-4 (floor), day 0.5 / 0.5: -0.5 ln(0.5) + 0.4999 ln(5000)
    assert drift.psi([100, 0], [50, 50]) == pytest.approx(-0.5 * math.log(0.5) + 0.4999 * math.log(5000))


def _frame(spark, values, col="score"):
    return spark.createDataFrame([(float(v), float(v % 2)) for v in values], f"{col} double, flag double")


def test_reference_bins_are_the_training_deciles(spark):
    ref = drift.reference(_frame(spark, range(1000)), ["score", "flag"])
    assert ref["score"]["cuts"] == [99.0, 199.0, 299.0, 399.0, 499.0, 599.0, 699.0, 799.0, 899.0]
    assert ref["score"]["counts"] == [100] * 10
    assert ref["flag"] == {"cuts": [0.0, 1.0], "counts": [500, 500, 0]}  # a 0/1 feature: repeated deciles collapse


def test_an_identical_day_is_not_drifted_and_a_shifted_one_is(spark):
    ref = drift.reference(_frame(spark, range(1000)), ["score", "flag"])
    same = drift.measure(ref, _frame(spark, range(1000)))
    assert same["score_psi"] == 0.0 and same["feature_psi"] == {"flag": 0.0} and same["drifted"] is False

    shifted = drift.measure(ref, _frame(spark, range(500, 1500)))
    # 500..999 keep their bins 5..9; 1000..1499 all land in the top bin
    assert shifted["score_counts"] == [0, 0, 0, 0, 0, 100, 100, 100, 100, 600]
    assert shifted["score_psi"] == pytest.approx(drift.psi([100] * 10, shifted["score_counts"]), abs=1e-6)
    assert shifted["score_psi"] > drift.PSI_LIMIT and shifted["drifted"] is True
    assert shifted["limit"] == 0.25


def test_the_limit_is_configurable(spark):
    ref = drift.reference(_frame(spark, range(1000)), ["score"])
    slight = drift.measure(ref, _frame(spark, range(50, 1050)), limit=1.0)
    assert 0 < slight["score_psi"] < 1.0 and slight["drifted"] is False
    assert drift.measure(ref, _frame(spark, range(50, 1050)), limit=0.01)["drifted"] is True
