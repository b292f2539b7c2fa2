"""Threshold modes: hand-checked quantiles on tiny score lists.

numpy's linear quantile of n sorted scores at level q sits at position q * (n - 1). With the
21 scores 1..21 that position is a whole number for every level used here, so each threshold
can be read off the list by hand.
"""
from __future__ import annotations

import numpy as np
import pytest

from spot_ae_job.errors import SpotAEError
from spot_ae_job.thresholds import (
    MODES, fit_threshold, fpr_interval, quantile_grid, quantile_level, resolution, threshold_from_quantiles,
)

SCORES = np.random.default_rng(0).permutation(np.arange(1.0, 22.0))  # 1..21, order must not matter


def test_the_three_modes_are_offered():
    assert MODES == ("p95", "benign-fpr", "alerts-per-day")


def test_p95_is_the_95th_percentile():
    # level 0.95 -> position 0.95 * 20 = 19 -> the 20th smallest score
    assert fit_threshold(SCORES, "p95") == 20.0
    assert (SCORES > 20.0).sum() == 1


def test_benign_fpr_leaves_that_fraction_above():
    # X = 0.1 -> level 0.9 -> position 18 -> 19; the scores 20 and 21 lie above
    assert fit_threshold(SCORES, "benign-fpr", 0.1) == 19.0
    # X = 0.025 -> level 0.975 -> position 19.5 -> halfway between 20 and 21
    assert fit_threshold(SCORES, "benign-fpr", 0.025) == 20.5


def test_alerts_per_day_is_a_fraction_of_the_days_flows():
    # 200 alerts among 1,000 flows -> X = 0.2 -> level 0.8 -> position 16 -> 17
    assert fit_threshold(SCORES, "alerts-per-day", 200, flows_per_day=1000) == 17.0
    # 50 among 1,000 is the paper's 5%
    assert fit_threshold(SCORES, "alerts-per-day", 50, flows_per_day=1000) == fit_threshold(SCORES, "p95")


def test_low_is_suspicious_takes_the_mirror_quantile():
    # LDA: p95 -> the 5th percentile: position 0.05 * 20 = 1 -> 2
    assert fit_threshold(SCORES, "p95", higher_is_suspicious=False) == 2.0
    assert fit_threshold(SCORES, "benign-fpr", 0.1, higher_is_suspicious=False) == 3.0
    assert quantile_level("benign-fpr", 0.001, higher_is_suspicious=False) == 0.001


def test_non_finite_scores_are_ignored():
    assert fit_threshold(np.append(SCORES, [np.nan, np.inf]), "p95") == 20.0


@pytest.mark.parametrize(
    "mode, value, per_day, message",
    [
        ("p99", None, None, "unknown threshold mode"),
        ("benign-fpr", None, None, "--benign-fpr"),
        ("benign-fpr", 0.0, None, "--benign-fpr"),
        ("benign-fpr", 5.0, None, "--benign-fpr"),
        ("alerts-per-day", 100, None, "number of flows"),
        ("alerts-per-day", -1, 1000, "--alerts-per-day"),
        ("alerts-per-day", 1000, 1000, "not below"),
    ],
)
def test_bad_settings_are_clear_errors(mode, value, per_day, message):
    with pytest.raises(SpotAEError, match=message):
        fit_threshold(SCORES, mode, value, flows_per_day=per_day)


def test_empty_scores_are_a_clear_error():
    with pytest.raises(SpotAEError, match="zero benign scores"):
        fit_threshold(np.array([np.nan]), "p95")


def test_stored_quantiles_refit_any_mode_without_the_scores():
    grid = quantile_grid()
    assert {0.95, 0.99, 0.999, 0.05, 1e-6, 1 - 1e-6} <= set(grid)
    # scores spread evenly over [0, 1]: the quantile at level q is q itself
    scores = np.linspace(0.0, 1.0, 1_000_001)
    stored = {"levels": grid, "values": np.quantile(scores, grid).tolist()}
    assert threshold_from_quantiles(stored, "p95") == pytest.approx(0.95)
    assert threshold_from_quantiles(stored, "benign-fpr", 0.003) == pytest.approx(0.997)  # between grid points
    assert threshold_from_quantiles(stored, "alerts-per-day", 500, flows_per_day=100_000) == pytest.approx(0.995)
    assert threshold_from_quantiles(stored, "benign-fpr", 0.003, higher_is_suspicious=False) == pytest.approx(0.003)
    with pytest.raises(SpotAEError, match="stored benign quantiles"):
        threshold_from_quantiles(stored, "benign-fpr", 1e-8)


# ---- what a threshold promises: the benign FPR interval from order statistics

@pytest.mark.parametrize("n", [1, 19, 200])
def test_a_threshold_above_every_benign_score_promises_what_the_smallest_beta_says(n):
    # no benign score above it: its exceedance probability is Beta(1, n), whose CDF is 1 - (1 - x)^n
    lo, hi = fpr_interval(n, 0)
    assert lo == pytest.approx(1 - 0.975 ** (1 / n), rel=1e-6) and hi == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-6)


@pytest.mark.parametrize("n", [2, 35])
def test_a_threshold_below_all_but_one_benign_score_promises_what_the_largest_beta_says(n):
    # n-1 benign scores above it: Beta(n, 1), whose CDF is x^n
    lo, hi = fpr_interval(n, n - 1)
    assert lo == pytest.approx(0.025 ** (1 / n), rel=1e-6) and hi == pytest.approx(0.975 ** (1 / n), rel=1e-6)


def test_the_demos_old_threshold_could_not_resolve_five_percent():
    # 35 held-out flows, p95: the 2nd largest of 35 values; its true FPR anywhere from 0.7% to 15%
    r = resolution(35, 0.05, "held-out benign slice")
    assert r["benign_above"] == 1 and not r["resolves"]
    assert r["fpr_interval_95"][0] < 0.01 and r["fpr_interval_95"][1] > 0.14
    big = resolution(100_000, 0.05, "held-out benign slice")
    assert big["resolves"] and big["fpr_interval_95"][0] > 0.048 and big["fpr_interval_95"][1] < 0.052


def test_a_threshold_that_ties_and_flags_nothing_says_so_instead_of_promising_five_percent():
    # Spot's LDA scores every flow with an unseen word exactly 0: p5 of such a slice is 0, "< 0" flags none
    r = resolution(400, 0.05, "held-out benign slice", above=0)
    assert not r["resolves"] and r["fpr_interval_95"][1] < 0.01
    from spot_ae_job.thresholds import describe_resolution

    assert "NOT the asked 5.00%" in describe_resolution(r)
