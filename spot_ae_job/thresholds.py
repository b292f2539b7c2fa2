"""Where a score becomes an alert: the paper's p95 rule and two alert budgets.

Every mode says the same kind of thing: "this fraction of benign flows may land on the
suspicious side", and the threshold is the matching quantile of benign scores that the model
never trained on (a held-out slice; training rows reconstruct better than new ones, so their
quantiles would under-count false alarms).

  p95             the paper's rule: 5% of benign flows alert, whatever the network's size.
  benign-fpr X    a fraction X of benign flows alert (X=0.001: one in a thousand).
  alerts-per-day N  about N benign alerts among a day's `flows_per_day` flows: X = N / flows.

For the LDA, low scores are suspicious, so the same fraction is taken from the bottom
(p95 becomes the 5th percentile). Quantiles are numpy's default (linear interpolation between
order statistics), so a fraction X of the benign scores lie strictly above the threshold,
down to the resolution the slice allows (1 / its size).

A model keeps its held-out benign quantiles on a fixed grid (`quantile_grid`), so the mode can
change at scoring time without re-training (`threshold_from_quantiles`).
"""
from __future__ import annotations

import numpy as np

from spot_ae_job.errors import SpotAEError

P95, BENIGN_FPR, ALERTS_PER_DAY = "p95", "benign-fpr", "alerts-per-day"
MODES: tuple[str, ...] = (P95, BENIGN_FPR, ALERTS_PER_DAY)
PAPER_FRACTION = 0.05  # the paper's p95: 5% of benign scores above the threshold


def flagged_fraction(mode: str, value: float | None = None, *, flows_per_day: int | None = None) -> float:
    """The fraction of benign flows a mode lets through as alerts."""
    if mode == P95:
        return PAPER_FRACTION
    if mode == BENIGN_FPR:
        if value is None or not 0 < value < 1:
            raise SpotAEError(f"--benign-fpr must be a fraction between 0 and 1 (0.001 = 0.1%), got {value}")
        return float(value)
    if mode == ALERTS_PER_DAY:
        if value is None or value <= 0:
            raise SpotAEError(f"--alerts-per-day must be a positive number of alerts, got {value}")
        if not flows_per_day or flows_per_day <= 0:
            raise SpotAEError("alerts-per-day needs the number of flows in a day to turn alerts into a fraction")
        if value >= flows_per_day:
            raise SpotAEError(f"--alerts-per-day {value:g} is not below the day's {flows_per_day} flows")
        return float(value) / flows_per_day
    raise SpotAEError(f"unknown threshold mode {mode!r}; choose one of {', '.join(MODES)}")


def quantile_level(mode: str, value: float | None = None, *, flows_per_day: int | None = None,
                   higher_is_suspicious: bool = True) -> float:
    """The quantile of benign scores that is the threshold: 1 - X, or X when low is suspicious."""
    x = flagged_fraction(mode, value, flows_per_day=flows_per_day)
    return 1.0 - x if higher_is_suspicious else x


def fit_threshold(scores: np.ndarray, mode: str, value: float | None = None, *,
                  flows_per_day: int | None = None, higher_is_suspicious: bool = True) -> float:
    """Held-out benign scores -> the threshold of `mode` (see the module docstring)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise SpotAEError("cannot fit a threshold on zero benign scores")
    q = quantile_level(mode, value, flows_per_day=flows_per_day, higher_is_suspicious=higher_is_suspicious)
    return float(np.quantile(s, q))


def quantile_grid() -> list[float]:
    """Quantile levels a model stores: both tails from 1e-6 (log-spaced, plus the round figures
    people ask for), so any fraction from 0.0001% to 50% can be re-fitted by interpolation."""
    tails = set(np.round(np.logspace(-6, np.log10(0.5), 49), 12).tolist())
    tails |= {1e-6, 1e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5}
    return sorted(tails | {round(1.0 - t, 12) for t in tails})


def threshold_from_quantiles(quantiles: dict, mode: str, value: float | None = None, *,
                             flows_per_day: int | None = None, higher_is_suspicious: bool = True) -> float:
    """Re-fit from a model's stored `{"levels": [...], "values": [...]}` (no scores needed)."""
    levels = np.asarray(quantiles["levels"], dtype=np.float64)
    values = np.asarray(quantiles["values"], dtype=np.float64)
    q = quantile_level(mode, value, flows_per_day=flows_per_day, higher_is_suspicious=higher_is_suspicious)
    if not levels[0] <= q <= levels[-1]:
        raise SpotAEError(
            f"the model's stored benign quantiles cover levels {levels[0]:g}..{levels[-1]:g}; "
            f"{mode} {value} needs {q:g} (a budget that small needs a larger held-out slice)"
        )
    return float(np.interp(q, levels, values))


def describe(mode: str, value: float | None = None) -> str:
    return {P95: "p95 (the paper's rule)", BENIGN_FPR: f"benign-fpr {value}", ALERTS_PER_DAY: f"alerts-per-day {value}"}.get(mode, mode)
