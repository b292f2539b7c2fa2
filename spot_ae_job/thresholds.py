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

import math

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spot_ae_job.errors import SpotAEError

P95, BENIGN_FPR, ALERTS_PER_DAY = "p95", "benign-fpr", "alerts-per-day"
MODES: tuple[str, ...] = (P95, BENIGN_FPR, ALERTS_PER_DAY)
PAPER_FRACTION = 0.05  # the paper's p95: 5% of benign scores above the threshold
HOLDOUT_FRACTION = 0.15  # of the benign training flows, kept out of training to fit the threshold


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


def split_holdout(flows: DataFrame, fraction: float = HOLDOUT_FRACTION, seed: int = 7) -> tuple[DataFrame, DataFrame]:
    """(training rows, held-out benign slice), seeded by a hash of the whole row.

    A hash, not rand(): Spark recomputes the split for every job that reads it and must get the
    same halves each time; and copies of one flow land on the same side, so the held-out slice
    never contains a flow the network was trained on."""
    if not 0 <= fraction < 1:
        raise SpotAEError(f"the held-out fraction must be in [0, 1), got {fraction}")
    bucket = F.pmod(F.xxhash64(*[F.col(c) for c in flows.columns], F.lit(seed)), F.lit(10_000))
    held = bucket < F.lit(int(round(fraction * 10_000)))
    return flows.where(~held), flows.where(held)


def benign_quantiles(scores: DataFrame, col: str = "score", accuracy: int = 100_000) -> dict:
    """The held-out benign scores' quantiles on `quantile_grid()`, in one Spark aggregation."""
    levels = quantile_grid()
    ok = scores.where(F.col(col).isNotNull() & ~F.isnan(col))
    row = ok.agg(F.percentile_approx(col, levels, accuracy).alias("q"), F.count("*").alias("n")).first()
    if not row["n"]:
        raise SpotAEError("no held-out benign flows to fit the threshold on: train on more benign flows")
    return {"levels": levels, "values": [float(v) for v in row["q"]], "n": int(row["n"])}


def fit_on_held_out(scores: DataFrame, mode: str = P95, value: float | None = None, *,
                    flows_per_day: int | None = None, higher_is_suspicious: bool = True,
                    fraction: float = HOLDOUT_FRACTION, seed: int = 7) -> tuple[float, dict]:
    """Held-out benign scores -> (threshold, the model.json fields that let it be re-fitted)."""
    q = benign_quantiles(scores)
    thr = threshold_from_quantiles(q, mode, value, flows_per_day=flows_per_day, higher_is_suspicious=higher_is_suspicious)
    beyond = F.col("score") > thr if higher_is_suspicious else F.col("score") < thr
    meta = {
        "holdout_beyond": int(scores.where(beyond).count()),  # what the threshold really flags of the slice
        "threshold_mode": mode,
        "threshold_value": value,
        "threshold_flows_per_day": flows_per_day,
        "threshold_fitted_on": f"held-out benign slice ({fraction:.0%} of the benign training flows, seed {seed})",
        "holdout_fraction": fraction,
        "holdout_rows": q["n"],
        "benign_quantiles": q,
    }
    return thr, meta


def describe(mode: str, value: float | None = None) -> str:
    return {P95: "p95 (the paper's rule)", BENIGN_FPR: f"benign-fpr {value}", ALERTS_PER_DAY: f"alerts-per-day {value}"}.get(mode, mode)


# ------------------------------------------------------------------------------ resolution

MIN_EXCEEDANCES = 10  # benign flows expected above a threshold before it can state its own rate
CROSSFIT_FOLDS = 5
CROSSFIT_MAX_ROWS = 20_000  # cross-fitting trains FOLDS in-process networks: only where data is small


def _log_binom_sf(n: int, a: int, x: float, logfact: np.ndarray) -> float:
    """log P(Binomial(n, x) >= a), summed exactly in log space."""
    if a <= 0:
        return 0.0
    if x <= 0.0:
        return -np.inf
    if x >= 1.0:
        return 0.0
    i = np.arange(a, n + 1)
    terms = logfact[n] - logfact[i] - logfact[n - i] + i * np.log(x) + (n - i) * np.log1p(-x)
    m = terms.max()
    return float(m + np.log(np.exp(terms - m).sum()))


def beta_quantile(a: int, b: int, q: float) -> float:
    """The q-quantile of Beta(a, b) for integer a, b >= 1, by bisection on its exact CDF
    (P(Beta(a, b) <= x) = P(Binomial(a + b - 1, x) >= a)); no SciPy needed."""
    n = a + b - 1
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.exp(_log_binom_sf(n, a, mid, logfact)) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fpr_interval(n: int, above: int, level: float = 0.95) -> tuple[float, float]:
    """The benign false-positive rate a threshold really promises when `above` of `n` benign
    scores it never trained on lie above it: that threshold is the (n - above)-th order statistic,
    whose exceedance probability is Beta(above + 1, n - above) distributed whatever the score
    distribution; this is that Beta's central `level` interval."""
    if n <= 0:
        return (0.0, 1.0)
    above = int(min(max(above, 0), n - 1))
    tail = (1 - level) / 2
    return beta_quantile(above + 1, n - above, tail), beta_quantile(above + 1, n - above, 1 - tail)


def resolution(n: int, fraction: float, method: str, above: int | None = None) -> dict:
    """What a threshold fitted on `n` benign scores for a flagged `fraction` can promise (model.json,
    run.json, the CLI and the OA model panel show it). `above`: how many of the n it really flags;
    it differs from n x fraction where scores tie at the threshold (Spot's LDA scores every flow
    with an unseen word exactly 0), and then the interval says what the threshold really does."""
    k = int(math.floor(n * fraction)) if above is None else int(above)
    lo, hi = fpr_interval(n, k)
    return {"method": method, "benign_flows": int(n), "target_fpr": float(fraction), "benign_above": k,
            "fpr_interval_95": [round(lo, 6), round(hi, 6)],
            "resolves": n * fraction >= MIN_EXCEEDANCES and lo <= fraction <= hi}


def describe_resolution(r: dict | None) -> str:
    if not r:
        return ""
    lo, hi = r["fpr_interval_95"]
    if r["resolves"]:
        warn = ""
    elif not lo <= r["target_fpr"] <= hi:
        warn = (f"; NOT the asked {r['target_fpr']:.2%}: {r['benign_above']} of the {r['benign_flows']} benign scores "
                "lie beyond it (ties at the threshold)")
    else:
        warn = (f"; too few benign flows to resolve a {r['target_fpr']:.2%} rate "
                f"(fewer than {MIN_EXCEEDANCES} expected above it)")
    return (f"{r['method']}, {r['benign_flows']} benign flows: true benign FPR in [{lo:.2%}, {hi:.2%}] "
            f"with 95% confidence{warn}")


def quantiles_of(scores: np.ndarray) -> dict:
    """Exact quantiles of in-memory benign scores on `quantile_grid()` (same shape as benign_quantiles)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise SpotAEError("cannot fit a threshold on zero benign scores")
    levels = quantile_grid()
    return {"levels": levels, "values": [float(v) for v in np.quantile(s, levels)], "n": int(s.size)}
