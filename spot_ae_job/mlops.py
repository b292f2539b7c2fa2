"""The day pipeline: Spot's `ml_ops.sh YYYYMMDD flow` as one Spark job, in one place.

    ml_ops = read -> train (or load) -> threshold -> score -> write -> alert -> forward

Every command that touches a day (`ml-ops`, `train`, `score`, `demo`) enters here with a parsed
`Day`, a `Layout` and `RunOptions`; each stage is called once, in that order. Models come from
the registry (registry.py), so nothing below asks which kind it holds.

Spot trained and scored the same day and kept no model. We keep that default (so the command
means what Spot users expect) and add what analysts need: a saved, versioned model that can
score later days (`--model-version`), benign-only training when the day has ground truth,
feedback verdicts that persist across days, and quarantined input rows.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import math
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, LongType
from pyspark.sql.window import Window

from spot_ae_job import allowlist, drift, explain, forward, fsutil, incidents, metrics, registry, thresholds
from spot_ae_job import verdicts as verdict_store
from spot_ae_job.alerts import write_alerts
from spot_ae_job.context import CONTEXT_COLUMNS, add_context
from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import SCORE, SUSPICIOUS, Day, Layout, is_day
from spot_ae_job.schema import FEEDBACK_SCHEMA, FLOW_COLUMNS, FLOW_SCHEMA, IS_ATTACK, LABEL_COLUMNS, REJECT_REASON, RESULT_COLUMNS
from spot_ae_job.score import flag_suspicious

DUPFACTOR = 1000
Say = Callable[[str], None]


@dataclass
class RunOptions:
    """What a day run was asked to do, parsed and checked by the CLI (or a test) beforehand."""

    model: str = registry.AUTO  # a registry choice: auto, ae, ae-context, lda
    model_version: str | None = None  # score with this saved model ("latest" too) instead of training
    train: registry.TrainOptions = field(default_factory=registry.TrainOptions)
    dupfactor: int = DUPFACTOR
    max_results: int | None = None
    tol: float | None = None
    threshold_mode: str | None = None  # a mode asked for at scoring time (None: the model's own)
    threshold_value: float | None = None
    drift_limit: float = drift.PSI_LIMIT
    forward: forward.ForwardConfig | None = None  # loaded (and so checked) before Spark starts


def read_day(spark: SparkSession, layout: Layout, day: Day, labelled: bool = False) -> DataFrame:
    """One day of the flow table (or of its labelled twin), validated against the schema."""
    root = layout.labelled if labelled else layout.flow_table
    path = layout.day_flows(day, labelled)
    if not fsutil.exists(spark, path):
        raise SpotAEError(f"no flows for {day}: {path} does not exist")
    df = spark.read.option("basePath", root).parquet(path)
    want = {f.name: f.dataType for f in FLOW_SCHEMA.fields}
    have = {f.name: f.dataType for f in df.schema.fields}
    # a table written before sas/das became bigint holds them as int: widened, nothing lost
    widened = {c: F.col(c).cast(t) for c, t in want.items() if isinstance(t, LongType) and isinstance(have.get(c), IntegerType)}
    bad = [f"{c} ({have.get(c)} instead of {t.simpleString()})" for c, t in want.items() if have.get(c) != t and c not in widened]
    if bad:
        raise SpotAEError(f"{path} does not match Spot's flow schema: " + ", ".join(bad))
    extra = LABEL_COLUMNS if labelled else []
    return df.withColumns(widened).select(*FLOW_COLUMNS, *[c for c in extra if c in df.columns])


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


def has_labels(spark: SparkSession, layout: Layout, day: Day) -> bool:
    return fsutil.exists(spark, layout.day_flows(day, labelled=True))


def training_day_rows(spark: SparkSession, layout: Layout, day: Day, progress: Say = print) -> tuple[DataFrame, bool]:
    """(every scorable row of the day, whether it carries ground truth). The caller keeps the
    benign ones after computing anything that depends on the whole day (host context)."""
    labelled = has_labels(spark, layout, day)
    if labelled:
        progress(f"{day} has ground truth: training on its benign flows only")
    else:
        progress(f"{day} has no labels: training on all its flows (Spot's assumption: mostly benign)")
    return validate_rows(read_day(spark, layout, day, labelled=labelled))[0], labelled


def benign_only(rows: DataFrame, labelled: bool) -> DataFrame:
    return rows.where(F.col(IS_ATTACK) == F.lit(False)) if labelled else rows


def with_day_context(spark: SparkSession, layout: Layout, rows: DataFrame) -> DataFrame:
    """Host context for flows of any days (analyst feedback), each counted against its own day
    of the flow table, as scoring that day counted it."""
    days = [Day(r[0], r[1], r[2]) for r in rows.select("tryear", "trmonth", "trday").distinct().collect() if r[0]]
    parts = [read_day(spark, layout, d) for d in days if fsutil.exists(spark, layout.day_flows(d))]
    universe = validate_rows(functools.reduce(DataFrame.unionByName, parts))[0] if parts else rows
    return add_context(rows, universe)


def feedback_rows(spark: SparkSession, layout: Layout, progress: Say = print, dupfactor: int = DUPFACTOR,
                  at: dt.datetime | None = None) -> DataFrame | None:
    """Flows an analyst marked low risk (sev 3) on any day, looked up in that day's scores: from
    the verdict store (verdicts.py: only verdicts in force at `at`, default now) and from Spot's
    per-day ml_feedback.csv files (kept for data written by Spot's own OA)."""
    parts = []
    for name in fsutil.list_dirs(spark, layout.scored_results):
        if not is_day(name):
            continue
        res = layout.results(Day.parse(name))
        fb, scores = res.feedback_csv, res.all_scores
        if not (fsutil.exists(spark, fb) and fsutil.exists(spark, scores)):
            continue
        verdicts = spark.read.option("header", True).schema(FEEDBACK_SCHEMA).csv(fb).where(F.col("sev") == 3)
        flows = spark.read.parquet(scores)
        cond = [
            flows.treceived == verdicts.tstart, flows.sip == verdicts.srcIP, flows.dip == verdicts.dstIP,
            flows.sport == verdicts.sport, flows.dport == verdicts.dport,
            flows.ipkt == verdicts.ipkt, flows.ibyt == verdicts.ibyt,
        ]
        parts.append(flows.join(verdicts, cond, "left_semi").select(*FLOW_COLUMNS))
    stored = verdict_store.training_flows(spark, layout.huser, at)
    if stored is not None:
        parts.append(stored)
    if not parts:
        return None
    out = functools.reduce(DataFrame.unionByName, parts).distinct().cache()  # a verdict in both places counts once; counted here and again for the model's metadata
    n = out.count()
    if n == 0:
        return None
    progress(f"feedback: {n} low-risk flows from analyst verdicts, each added {dupfactor} times")
    return out


@dataclass
class RunSummary:
    day: Day
    model_version: str
    threshold: float
    flows_scored: int
    suspicious: int
    rejected: int
    results_uri: str
    threshold_mode: str = thresholds.P95
    drift: dict | None = None
    labelled: dict | None = None  # recall, benign FPR, ROC-AUC, PR-AUC where the day has ground truth


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


def _labelled_figures(flagged: DataFrame, threshold: float, higher: bool) -> dict | None:
    """What ground truth says about this run: recall and benign FPR at the threshold, and the
    threshold-free ROC-AUC / PR-AUC of the day's scores (metrics.py, exact)."""
    if IS_ATTACK not in flagged.columns:
        return None
    (m,) = metrics.binary_metrics(flagged.select(SCORE, IS_ATTACK), threshold, higher_is_suspicious=higher, fprs=(0.05,))
    attacks, benign = m["tp"] + m["fn"], m["fp"] + m["tn"]
    if not attacks and not benign:
        return None
    return {"attacks": attacks, "benign": benign, "recall": m["recall"] if attacks else None,
            "benign_fpr": m["fpr"] if benign else None, "roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"],
            "recall_at_benign_fpr_0.05": m.get("recall_at_fpr_0.05")}


def model_facts(model, day: Day, threshold: float, how: dict, tol: float | None = None) -> dict:
    """The run.json fields that say which model scored a day and how its threshold was set:
    the same for a batch run and for the stream's batches (stream/run.json)."""
    return {
        "day": str(day),
        "model": model.kind,
        "model_version": model.version,
        "threshold": float(threshold),
        **how,
        "threshold_fitted_on": None if tol is not None else model.meta.get("threshold_fitted_on"),
        "threshold_resolution": None if tol is not None else model.meta.get("threshold_resolution"),
        "higher_is_suspicious": model.higher_is_suspicious,
        "training_day": model.meta.get("training_day"),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_results(
    spark: SparkSession,
    scored: DataFrame,
    rejects: DataFrame,
    model,
    day: Day,
    layout: Layout,
    opts: RunOptions,
    progress: Say = print,
) -> RunSummary:
    """Spot's result layout for one day, plus the Parquet copy of every score and run.json.

    Suspicious rows get explanation columns after Spot's (explain.py); run.json records the
    threshold's mode and resolution and the day's drift against the training data (drift.py)."""
    res = layout.results(day)
    threshold, how = resolve_threshold(model, scored.count, opts.tol, opts.threshold_mode, opts.threshold_value)
    higher = model.higher_is_suspicious
    flagged = flag_suspicious(scored, threshold, higher).cache()
    order = F.col(SCORE).desc() if higher else F.col(SCORE).asc()
    ranked = flagged.where(SUSPICIOUS).withColumn("rank", F.row_number().over(Window.orderBy(order)))
    others = flagged.where(f"not {SUSPICIOUS}").withColumn("rank", F.lit(None).cast("int"))
    keep = [c for c in flagged.columns if c in FLOW_COLUMNS or c in CONTEXT_COLUMNS or c in (SCORE, SUSPICIOUS)]
    explained = explain.add_explanations(model, ranked.select(*keep, "rank"))
    all_scores = explained.unionByName(explain.with_null_explanations(others.select(*keep, "rank")))
    all_scores.write.mode("overwrite").parquet(res.all_scores)

    stored = spark.read.parquet(res.all_scores)
    top = stored.where(SUSPICIOUS).orderBy("rank")
    max_results = opts.max_results
    if max_results is not None and max_results >= 0:
        top = top.limit(max_results)
    tmp = res.tmp("scores")
    top.select(*RESULT_COLUMNS, *explain.EXPLANATION_COLUMNS).coalesce(1).write.mode("overwrite").option("header", True).csv(tmp)
    part = [f for f in fsutil.list_files(spark, tmp) if f.rsplit("/", 1)[-1].startswith("part-")]
    fsutil.rename(spark, part[0], res.scores_csv)
    fsutil.delete(spark, tmp)

    n_rej = rejects.count()
    if n_rej:
        rejects.write.mode("overwrite").parquet(res.rejected)
    counts = stored.agg(F.count("*").alias("n"), F.sum(F.col(SUSPICIOUS).cast("int")).alias("s")).first()
    summary = RunSummary(day, model.version, float(threshold), int(counts["n"]), int(counts["s"] or 0), n_rej, res.root,
                         threshold_mode=how["threshold_mode"])
    ref = model.meta.get("drift_reference")
    if ref:
        summary.drift = drift.measure(ref, drift.named_features(stored, keep=(SCORE,)), opts.drift_limit)
    summary.labelled = _labelled_figures(flagged, threshold, higher)
    run = {
        **model_facts(model, day, threshold, how, tol=opts.tol),
        "flows_scored": summary.flows_scored,
        "suspicious": summary.suspicious,
        "written": min(summary.suspicious, max_results) if max_results is not None and max_results >= 0 else summary.suspicious,
        "rejected": n_rej,
        "score_histogram": _histogram(stored),
        "drift": summary.drift,
        "labelled": summary.labelled,
    }
    al = write_alerts(spark, stored, model, str(day), layout.huser, threshold, run["threshold_mode"], progress=progress)
    run["alerts"] = {"written": al.alerts, "suppressed": al.suppressed, "uri": al.uri}
    run["incidents"] = incidents.write_day_incidents(spark, stored, model, day, layout, threshold, progress=progress)
    fsutil.write_text(spark, res.run_json, json.dumps(run, indent=2))
    flagged.unpersist()
    progress(
        f"{day}: scored {summary.flows_scored} flows, {summary.suspicious} {'above' if higher else 'below'} threshold {threshold:.6g}, "
        f"{n_rej} rejected -> {res.scores_csv}"
    )
    if summary.drift and summary.drift["drifted"]:
        d = summary.drift
        progress(f"{day}: DRIFT: score PSI {d['score_psi']:.3f} > {d['limit']} against the training data "
                 f"(largest feature shift: {d['largest_feature']}); the threshold's false-alarm rate may not hold")
    return summary


# ------------------------------------------------------------------------------ the day, end to end

class TrainingSets(NamedTuple):
    kind: str
    base: DataFrame  # the rows the model trains on (feedback copies included)
    held: DataFrame  # held-out benign rows, for the threshold only
    options: registry.TrainOptions
    rows: DataFrame  # the day's benign rows both come from, persisted


def training_sets(spark: SparkSession, layout: Layout, day: Day, opts: RunOptions, say: Say = print) -> TrainingSets:
    """(model kind, training rows, held-out benign rows, training options, their persisted source) for the day.

    Host context is computed over the whole day (attacks included, as scoring will see it)
    before the benign rows are kept. Flows an allow-list rule in force covers are left out of
    both sets (docs/allowlists.md): a rule is a policy not to alert, not a finding that the
    traffic is normal, and it must not teach the model (nor move the threshold) either way."""
    rows, labelled = training_day_rows(spark, layout, day, say)
    kind = registry.choose(opts.model, rows, say)
    context = kind == registry.AE_CONTEXT
    cols = FLOW_COLUMNS + (CONTEXT_COLUMNS if context else [])
    rules = allowlist.read_rules_spark(spark, layout.huser)
    # Computed once: the features, the scaler, the threshold, the drift bins and the medians all
    # read these rows, and the host context alone is dozens of Spark jobs (train_day unpersists).
    benign = benign_only(add_context(rows) if context else rows, labelled).select(*cols) \
        .persist(StorageLevel.MEMORY_AND_DISK)
    if rules:
        say(f"leaving out of training the flows {len(rules)} allow-list rule(s) cover")
    base, held = thresholds.split_holdout(allowlist.suppress(benign, rules, str(day)))
    topts = opts.train
    if opts.threshold_mode is not None:
        topts = dataclasses.replace(topts, threshold_mode=opts.threshold_mode, threshold_value=opts.threshold_value)
    if kind != registry.LDA_KIND:  # Spot's LDA never took feedback
        fb = feedback_rows(spark, layout, progress=say, dupfactor=opts.dupfactor)
        if fb is not None:
            fb_rows = allowlist.suppress(with_day_context(spark, layout, fb) if context else fb, rules)
            base = base.unionByName(fb_rows.withColumn("_k", F.explode(F.sequence(F.lit(1), F.lit(opts.dupfactor)))).drop("_k"))
        topts = dataclasses.replace(topts, extra_meta={**topts.extra_meta, "feedback_flows": 0 if fb is None else fb.count(),
                                                       "dupfactor": opts.dupfactor})
    return TrainingSets(kind, base, held, topts, benign)


def train_day(spark: SparkSession, layout: Layout, day: Day, opts: RunOptions, say: Say = print):
    """Train the asked kind on the day's benign flows (plus low-risk verdicts, `dupfactor` times);
    the threshold is fitted on a held-out benign slice cut before any feedback copy joins."""
    sets = training_sets(spark, layout, day, opts, say)
    try:
        return registry.train(sets.kind, sets.base, sets.held, sets.options, str(day), say)
    finally:
        sets.rows.unpersist()


def score_day(spark: SparkSession, layout: Layout, day: Day, model, opts: RunOptions, say: Say = print) -> RunSummary:
    """Score every flow of the day with `model` and write Spot's results, alerts and run.json."""
    flows = read_day(spark, layout, day, labelled=has_labels(spark, layout, day))
    scored, rejects = score_valid(model, flows)
    s = write_results(spark, scored, rejects, model, day, layout, opts, progress=say)
    lab = s.labelled
    if lab and lab["attacks"] and lab["benign"]:
        say(f"{day}: ground truth: {lab['attacks']} attack and {lab['benign']} benign flows; at the threshold recall "
            f"{lab['recall']:.3f}, benign FPR {lab['benign_fpr']:.3f}; ROC-AUC {metrics_fmt(lab['roc_auc'])}, "
            f"PR-AUC {metrics_fmt(lab['pr_auc'])}")
    elif lab and lab["attacks"]:
        say(f"{day}: ground truth: {lab['attacks']} attack flows, recall at the threshold = {lab['recall']:.3f}")
    return s


def metrics_fmt(v) -> str:
    return "n/a" if v is None or metrics.is_nan(v) else f"{v:.3f}"


def forward_day(spark: SparkSession, layout: Layout, day: Day, cfg, say: Say = print) -> dict:
    """`spot-ae alerts forward`: the day's alerts and incidents sent on. Incidents grouped under
    allow-list rules other than those in force (a rule added or removed since, in the OA or by
    `spot-ae allowlist`) are grouped again first, so what is sent is what the OA shows."""
    if incidents.grouped_under_other_rules(spark, layout, day):
        say(f"{day}: the allow-list rules changed since its incidents were grouped; grouping them again")
        regroup_incidents(spark, layout, day, say)
    return forward.forward_day(spark, str(day), layout.huser, cfg, progress=say)


def forward_alerts(spark: SparkSession, layout: Layout, day: Day, opts: RunOptions, say: Say = print) -> None:
    """Send the day's alerts on when the forwarding config asks for it after ml-ops."""
    if opts.forward is not None and opts.forward.after_ml_ops:
        forward_day(spark, layout, day, opts.forward, say)


def obtain_model(spark: SparkSession, layout: Layout, day: Day, opts: RunOptions, say: Say = print):
    """The saved model asked for (`--model-version`), or one trained on the day and saved."""
    if opts.model_version:
        model = registry.load(spark, layout, opts.model, opts.model_version)
        say(f"scoring with saved model {model.version}")
        return model
    model = train_day(spark, layout, day, opts, say)
    where = registry.save(spark, layout, model)
    say(f"saved model {model.version} -> {where}")
    return model


def ml_ops(spark: SparkSession, layout: Layout, day: Day, opts: RunOptions, say: Say = print) -> RunSummary:
    """Spot's ml_ops for one day: train (or load) -> threshold -> score -> write -> alert -> forward."""
    model = obtain_model(spark, layout, day, opts, say)
    summary = score_day(spark, layout, day, model, opts, say)
    forward_alerts(spark, layout, day, opts, say)
    return summary


def regroup_incidents(spark: SparkSession, layout: Layout, day: Day, say: Say = print) -> dict:
    """Group a scored day's suspicious flows into incidents again, under the allow-list rules and
    verdicts in force now. An allow-list change moves the day's alerts at once and without Spark
    (allowlist.reapply); this is its incidents' half, which needs the grouping stage. The day's
    all_scores/ and run.json say which flows were suspicious, under which model and threshold; the
    new figures replace run.json's "incidents"."""
    res = layout.results(day)
    if not fsutil.exists(spark, res.run_json) or not fsutil.exists(spark, res.all_scores):
        raise SpotAEError(f"{day} has no batch run to regroup (no run.json or all_scores/ under {res.root}); "
                          "a day only the stream scored groups its flows batch by batch")
    run = json.loads(fsutil.read_text(spark, res.run_json))
    model = registry.load(spark, layout, run["model"], run["model_version"])
    stored = spark.read.parquet(res.all_scores)
    run["incidents"] = incidents.write_day_incidents(spark, stored, model, day, layout, float(run["threshold"]), progress=say)
    fsutil.write_text(spark, res.run_json, json.dumps(run, indent=2))
    return run["incidents"]
