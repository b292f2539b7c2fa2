"""Spot's `ml_ops.sh YYYYMMDD flow` as a Spark job: read a day, train, score, write results.

Spot trained and scored the same day and kept no model. We keep that default (so the command
means what Spot users expect) and add what analysts need: a saved, versioned model that can
score later days (`--model-version`), benign-only training when the day has ground truth,
feedback verdicts that persist across days, and quarantined input rows.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from spot_ae_job import drift, explain, fsutil, thresholds
from spot_ae_job import fsutil
from spot_ae_job import verdicts as verdict_store
from spot_ae_job.alerts import write_alerts
from spot_ae_job.errors import SpotAEError
from spot_ae_job.schema import (
    FEEDBACK_SCHEMA, FLOW_COLUMNS, FLOW_SCHEMA, IS_ATTACK, LABEL_COLUMNS, PARTITION_COLUMNS,
    REJECT_REASON, RESULT_COLUMNS, flow_table_location, scored_results_location,
)
from spot_ae_job.score import SCORE, flag_suspicious

DUPFACTOR = 1000
_DAY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


def parse_day(day: str) -> tuple[int, int, int]:
    m = _DAY.match(day or "")
    if not m:
        raise SpotAEError(f"day must be YYYYMMDD, got {day!r}")
    y, mo, d = map(int, m.groups())
    try:
        dt.date(y, mo, d)
    except ValueError:
        raise SpotAEError(f"not a calendar date: {day}") from None
    return y, mo, d


def models_location(huser: str) -> str:
    return f"{huser.rstrip('/')}/flow/models"


def labelled_location(huser: str) -> str:
    return f"{huser.rstrip('/')}/flow/labelled"


def _day_path(root: str, day: str) -> str:
    y, m, d = parse_day(day)
    return f"{root}/y={y}/m={m}/d={d}"


def read_day(spark: SparkSession, huser: str, day: str, labelled: bool = False) -> DataFrame:
    """One day of the flow table (or of its labelled twin), validated against the schema."""
    root = labelled_location(huser) if labelled else flow_table_location(huser)
    path = _day_path(root, day)
    if not fsutil.exists(spark, path):
        raise SpotAEError(f"no flows for {day}: {path} does not exist")
    df = spark.read.option("basePath", root).parquet(path)
    want = {f.name: f.dataType for f in FLOW_SCHEMA.fields}
    have = {f.name: f.dataType for f in df.schema.fields}
    bad = [f"{c} ({have.get(c)} instead of {t.simpleString()})" for c, t in want.items() if have.get(c) != t]
    if bad:
        raise SpotAEError(f"{path} does not match Spot's flow schema: " + ", ".join(bad))
    extra = LABEL_COLUMNS if labelled else []
    return df.select(*FLOW_COLUMNS, *[c for c in extra if c in df.columns])


def validate_rows(df: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Split rows the model can score from rows it must not see (returned with a reason).

    Only what the features read is checked: a flow without a timestamp (a CIC-IDS2018 layout
    loaded with --day) can still be scored."""
    reason = (
        F.when(F.col("tdur").isNull() | F.isnan("tdur") | (F.col("tdur") < 0), "bad_duration")
        .when(
            F.col("ipkt").isNull() | F.col("ibyt").isNull() | (F.col("ipkt") < 0) | (F.col("ibyt") < 0)
            | (F.col("opkt") < 0) | (F.col("obyt") < 0),
            "bad_counts",
        )
    )
    tagged = df.withColumn(REJECT_REASON, reason)
    return tagged.where(F.col(REJECT_REASON).isNull()).drop(REJECT_REASON), tagged.where(F.col(REJECT_REASON).isNotNull())


def score_valid(model, flows: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(scorable rows with `score`, rejects with a reason), for any model.

    A model whose score of a flow depends on that flow alone (the autoencoder) scores the day
    as read and the rejects are split off after: a plain read of the flow table is what the
    JVM scorer reads straight from Parquet's column vectors, and a filter before it would make
    it read rows. A model whose scores depend on the other flows (LDA infers each IP's topic
    mix from the day's flows) only ever sees the valid ones."""
    if getattr(model, "scores_each_row_alone", False):
        good, rejects = validate_rows(model.score(flows))
        return good, rejects.drop(SCORE)
    good, rejects = validate_rows(flows)
    return model.score(good), rejects


def training_flows(spark: SparkSession, huser: str, day: str, progress=print) -> DataFrame:
    """A day's rows to train on, for any model: its benign flows where the day has ground
    truth, otherwise all of them (Spot's assumption: mostly benign); only scorable rows."""
    if fsutil.exists(spark, _day_path(labelled_location(huser), day)):
        src = read_day(spark, huser, day, labelled=True)
        base = src.where(F.col(IS_ATTACK) == F.lit(False)).select(*FLOW_COLUMNS)
        progress(f"{day} has ground truth: training on its benign flows only")
    else:
        base = read_day(spark, huser, day)
        progress(f"{day} has no labels: training on all its flows (Spot's assumption: mostly benign)")
    return validate_rows(base)[0]


def feedback_rows(spark: SparkSession, huser: str, progress=print, at: dt.datetime | None = None) -> DataFrame | None:
    """Flows an analyst marked low risk (sev 3) on any day, looked up in that day's scores: from
    the verdict store (verdicts.py: only verdicts in force at `at`, default now) and from Spot's
    per-day ml_feedback.csv files (kept for data written by Spot's own OA)."""
    root = f"{huser.rstrip('/')}/flow/scored_results"
    parts = []
    for day in fsutil.list_dirs(spark, root):
        fb = f"{root}/{day}/feedback/ml_feedback.csv"
        scores = f"{root}/{day}/all_scores"
        if not (_DAY.match(day) and fsutil.exists(spark, fb) and fsutil.exists(spark, scores)):
            continue
        verdicts = spark.read.option("header", True).schema(FEEDBACK_SCHEMA).csv(fb).where(F.col("sev") == 3)
        flows = spark.read.parquet(scores)
        cond = [
            flows.treceived == verdicts.tstart, flows.sip == verdicts.srcIP, flows.dip == verdicts.dstIP,
            flows.sport == verdicts.sport, flows.dport == verdicts.dport,
            flows.ipkt == verdicts.ipkt, flows.ibyt == verdicts.ibyt,
        ]
        parts.append(flows.join(verdicts, cond, "left_semi").select(*FLOW_COLUMNS))
    stored = verdict_store.training_flows(spark, huser, at)
    if stored is not None:
        parts.append(stored)
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    out = out.distinct().cache()  # a verdict in both places counts once  # counted here and again for the model's metadata
    n = out.count()
    if n == 0:
        return None
    progress(f"feedback: {n} low-risk flows from analyst verdicts, each added {DUPFACTOR} times")
    return out


@dataclass
class RunSummary:
    day: str
    model_version: str
    threshold: float
    flows_scored: int
    suspicious: int
    rejected: int
    results_uri: str
    recall: float | None = None
    attacks: int | None = None
    threshold_mode: str = thresholds.P95
    drift: dict | None = None


def _histogram(scored: DataFrame, bins: int = 40) -> dict:
    lo, hi = scored.agg(F.min(F.when(F.col(SCORE) > 0, F.col(SCORE))), F.max(SCORE)).first()
    if lo is None or hi is None or hi <= lo:
        return {"edges": [], "counts": []}
    ratio = (hi / lo) ** (1.0 / bins)
    edges = [lo * ratio**i for i in range(bins + 1)]
    b = F.least(F.greatest(F.floor(F.log(F.col(SCORE) / lo) / math.log(ratio)), F.lit(0)), F.lit(bins - 1))
    rows = scored.where(F.col(SCORE) > 0).groupBy(b.cast("int").alias("b")).count().collect()
    counts = [0] * bins
    for r in rows:
        counts[r["b"]] += r["count"]
    return {"edges": edges, "counts": counts, "scale": "log"}


def resolve_threshold(model, day_flows: Callable[[], int], tol: float | None = None,
                      mode: str | None = None, value: float | None = None) -> tuple[float, dict]:
    """The threshold a scoring run uses, and how it was chosen, for run.json.

    TOL wins (Spot's override); then a mode asked for now, re-fitted from the benign quantiles
    the model keeps; then the model's own mode. An alerts-per-day budget is re-fitted on every
    day from that day's flow count (`day_flows`, called only then): the budget is per day."""
    if tol is not None:
        return float(tol), {"threshold_mode": "tol", "threshold_value": float(tol)}
    saved_mode = model.meta.get("threshold_mode", thresholds.P95)
    if mode is None:
        mode, value = saved_mode, model.meta.get("threshold_value")
    if mode == saved_mode and value == model.meta.get("threshold_value") and mode != thresholds.ALERTS_PER_DAY:
        return float(model.threshold), {"threshold_mode": mode, "threshold_value": value}
    stored = model.meta.get("benign_quantiles")
    if not stored:
        raise SpotAEError(f"model {model.version} keeps no held-out benign quantiles (trained before threshold "
                          f"modes existed): re-train it to score with --threshold-mode {mode}")
    per_day = day_flows() if mode == thresholds.ALERTS_PER_DAY else None
    thr = thresholds.threshold_from_quantiles(stored, mode, value, flows_per_day=per_day,
                                              higher_is_suspicious=model.higher_is_suspicious)
    return thr, {"threshold_mode": mode, "threshold_value": value, "threshold_flows_per_day": per_day}


def write_results(
    spark: SparkSession,
    scored: DataFrame,
    rejects: DataFrame,
    model,
    day: str,
    huser: str,
    max_results: int | None = None,
    tol: float | None = None,
    progress=print,
    threshold_mode: str | None = None,
    threshold_value: float | None = None,
    drift_limit: float = drift.PSI_LIMIT,
) -> RunSummary:
    """Spot's result layout for one day, plus the Parquet copy of every score and run.json.

    Suspicious rows get explanation columns after Spot's (explain.py); run.json records the
    threshold's mode and the day's drift against the training data (drift.py)."""
    out = scored_results_location(day, huser)
    threshold, how = resolve_threshold(model, scored.count, tol, threshold_mode, threshold_value)
    higher = model.higher_is_suspicious
    flagged = flag_suspicious(scored, threshold, higher).cache()
    order = F.col(SCORE).desc() if higher else F.col(SCORE).asc()
    ranked = flagged.where("suspicious").withColumn("rank", F.row_number().over(Window.orderBy(order)))
    others = flagged.where("not suspicious").withColumn("rank", F.lit(None).cast("int"))
    keep = [c for c in flagged.columns if c in FLOW_COLUMNS or c in (SCORE, "suspicious")]
    explained = explain.add_explanations(model, ranked.select(*keep, "rank"))
    all_scores = explained.unionByName(explain.with_null_explanations(others.select(*keep, "rank")))
    all_scores.write.mode("overwrite").parquet(f"{out}/all_scores")

    stored = spark.read.parquet(f"{out}/all_scores")
    top = stored.where("suspicious").orderBy("rank")
    if max_results is not None and max_results >= 0:
        top = top.limit(max_results)
    tmp = f"{out}/_scores_tmp"
    top.select(*RESULT_COLUMNS, *explain.EXPLANATION_COLUMNS).coalesce(1).write.mode("overwrite").option("header", True).csv(tmp)
    part = [f for f in fsutil.list_files(spark, tmp) if f.rsplit("/", 1)[-1].startswith("part-")]
    fsutil.rename(spark, part[0], f"{out}/scores/flow_results.csv")
    fsutil.delete(spark, tmp)

    n_rej = rejects.count()
    if n_rej:
        rejects.write.mode("overwrite").parquet(f"{out}/rejected")
    counts = stored.agg(F.count("*").alias("n"), F.sum(F.col("suspicious").cast("int")).alias("s")).first()
    summary = RunSummary(day, model.version, float(threshold), int(counts["n"]), int(counts["s"] or 0), n_rej, out,
                         threshold_mode=how["threshold_mode"])
    ref = model.meta.get("drift_reference")
    if ref:
        summary.drift = drift.measure(ref, drift.named_features(stored, keep=(SCORE,)), drift_limit)
    if IS_ATTACK in scored.columns:
        lab = flagged.where(F.col(IS_ATTACK)).agg(F.count("*").alias("a"), F.sum(F.col("suspicious").cast("int")).alias("hit")).first()
        if lab["a"]:
            summary.attacks, summary.recall = int(lab["a"]), float(lab["hit"]) / lab["a"]
    run = {
        "day": day,
        "model": model.kind,
        "model_version": model.version,
        "threshold": float(threshold),
        **how,
        "threshold_fitted_on": None if tol is not None else model.meta.get("threshold_fitted_on"),
        "higher_is_suspicious": higher,
        "flows_scored": summary.flows_scored,
        "suspicious": summary.suspicious,
        "written": min(summary.suspicious, max_results) if max_results is not None and max_results >= 0 else summary.suspicious,
        "rejected": n_rej,
        "training_day": model.meta.get("training_day"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "score_histogram": _histogram(stored),
        "drift": summary.drift,
        "labelled": {"attacks": summary.attacks, "recall": summary.recall} if summary.attacks else None,
    }
    al = write_alerts(spark, stored, model, day, huser, threshold, run["threshold_mode"], progress=progress)
    run["alerts"] = {"written": al.alerts, "suppressed": al.suppressed, "uri": al.uri}
    fsutil.write_text(spark, f"{out}/run.json", json.dumps(run, indent=2))
    flagged.unpersist()
    progress(
        f"{day}: scored {summary.flows_scored} flows, {summary.suspicious} {'above' if higher else 'below'} threshold {threshold:.6g}, "
        f"{n_rej} rejected -> {out}/scores/flow_results.csv"
    )
    if summary.drift and summary.drift["drifted"]:
        d = summary.drift
        progress(f"{day}: DRIFT: score PSI {d['score_psi']:.3f} > {d['limit']} against the training data "
                 f"(largest feature shift: {d['largest_feature']}); the threshold's false-alarm rate may not hold")
    return summary
