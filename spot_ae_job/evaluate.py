"""`spot-ae evaluate`: the paper's protocol, AE (and its context variant) against Spot's LDA.

Protocol (Priovolos et al., SPEC §1): pick a training day; train on its benign flows (the
autoencoder holds 20% of them out for validation); threshold at the 95th percentile of the
benign training scores (mirrored for LDA, whose low scores are suspicious: the 5th percentile);
score every other day and report accuracy, precision, recall and F1 per day, plus what the paper
lacks: ROC-AUC, PR-AUC (average precision) and recall/precision at fixed benign FPRs.

Days come from the flows' timestamps. Rows without a timestamp (some CIC-IDS2018 excerpts drop
the column) are grouped by file: each such file is a "day" named `file:NAME`.

Beyond the paper (issue 10): the training day's benign flows are split, 80% train every model and
20% are held out to fit the threshold modes of `thresholds.py` (p95, benign FPR, alerts per day),
never on training rows; the paper's own threshold (the one the model saved) is kept as
`paper-p95`. Failed attempts of the improved CIC-IDS2018 (`Attempted Category` != -1) are counted
three ways, all reported: as attacks, as benign, left out. Every (day, model, attempted-as,
threshold mode) is one row of evaluation.csv; recall per attack type goes to per_attack.csv;
ROC-AUC and PR-AUC carry bootstrap 95% intervals where a day has enough rows of both classes.

Everything is Spark: the CSVs are read by the project's reader, models score lazily, scores are
written once as Parquet under OUT/scores/ and the metrics are Spark aggregations over them, so a
directory of full CIC-IDS2018 days streams through without any day sitting in driver memory.
Outputs in OUT: evaluation.csv (one row per day and model), table_1.md (laid out like the paper's
Table I, with the paper's figures beside ours where the day matches), fig_1_f1.png (F1 per day,
AE vs LDA, like Fig. 1) and evaluation.json (settings, models, timings, rejected rows).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spot_ae_job.context import CONTEXT_COLUMNS, add_context
from spot_ae_job.errors import SpotAEError, run_command
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.lda import fit_lda
from spot_ae_job.metrics import DEFAULT_FPRS, MIN_PER_CLASS, binary_metrics, bootstrap_intervals, confusion_at
from spot_ae_job.model import train_autoencoder
from spot_ae_job.schema import ATTEMPTED, FLOW_COLUMNS, IS_ATTACK, LABEL, SOURCE_FILE
from spot_ae_job.score import score_flows
from spot_ae_job.spark import session
from spot_ae_job.thresholds import ALERTS_PER_DAY, BENIGN_FPR, P95, fit_threshold

DAY = "eval_day"
SPLIT = "eval_split"  # train / heldout (the training day's benign rows) / test (everything else)
MODELS = ("ae", "ae-context", "lda")
MODEL_NAMES = {"ae": "AE", "ae-context": "AE-context", "lda": "LDA"}
ATTEMPTED_AS = ("attack", "benign", "exclude")
PAPER_MODE = "paper-p95"  # the threshold the model saved: the paper's rule as training applies it

# The paper's Table I (SPEC §1), shown beside our figures for the days it covers. Reference only.
PAPER_TABLE_I = {
    "02-14": {"ae": (95.5, 11.9, 100.0, 0.21), "lda": (51.4, 3.04, 28.3, 0.05)},
    "02-15": {"ae": (95.4, 8.3, 87.4, 0.15), "lda": (52.4, 0.8, 46.8, 0.01)},
    "02-16": {"ae": (95.5, 11.9, 100.0, 0.21), "lda": (51.6, 0.82, 13.8, 0.01)},
    "02-20": {"ae": (94.8, 34.2, 77.0, 0.47), "lda": (50.4, 1.7, 16.8, 0.03)},
}

CSV_FIELDS = [
    "day", "role", "model", "flows", "attacks", "benign", "attempted", "scored", "unscored",
    "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "fpr", "roc_auc", "pr_auc",
    *[f"{m}_at_fpr_{x:g}" for x in DEFAULT_FPRS for m in ("recall", "precision")],
    "threshold", "threshold_mode", "higher_is_suspicious", "training_day", "model_version", "files", "note",
    "paper_accuracy", "paper_precision", "paper_recall", "paper_f1",
]
# one row per (day, model, attempted_as, threshold_mode): the keys first, intervals beside the AUCs
CSV_FIELDS = CSV_FIELDS[:3] + ["attempted_as", "threshold_mode"] + [
    f for f in CSV_FIELDS[3:] if f != "threshold_mode"]
CSV_FIELDS[CSV_FIELDS.index("pr_auc") + 1:CSV_FIELDS.index("pr_auc") + 1] = ["roc_auc_lo", "roc_auc_hi", "pr_auc_lo", "pr_auc_hi"]
CSV_FIELDS.insert(CSV_FIELDS.index("fpr") + 1, "alerts")
PER_ATTACK_FIELDS = ["model", "attempted_as", "threshold_mode", "attack", "flows", "flagged", "recall", "days"]


def _say(msg: str) -> None:
    print(f"[spot-ae evaluate {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def default_data() -> Path:
    """$SPOT_AE_DATA/cicids2018, else the shared data folder beside the repository."""
    root = os.environ.get("SPOT_AE_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[2] / "shared" / "data"
    return base / "cicids2018"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spot-ae evaluate",
        description="The paper's protocol on CIC-IDS2018 CSVs: train on one day's benign flows, "
        "threshold at the 95th percentile, test on every other day; AE and Spot's LDA side by side.",
    )
    p.add_argument("--data", action="append", default=None,
                   help="CIC-IDS2018 CSV file or directory (repeatable; default $SPOT_AE_DATA/cicids2018)")
    p.add_argument("--train-day", default=None,
                   help="YYYY-MM-DD, YYYYMMDD, DD/MM[/YYYY] or a file name for files without timestamps "
                   "(default: the day with the most benign flows that carry IPs)")
    p.add_argument("--model", default=",".join(MODELS), help="comma-separated models: ae, ae-context, lda (default all)")
    p.add_argument("--epochs", type=int, default=90, help="autoencoder epochs (paper: 90)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--topics", type=int, default=20, help="LDA topics (Spot: TOPIC_COUNT=20)")
    p.add_argument("--lda-iter", type=int, default=20, help="LDA iterations")
    p.add_argument("--lda-binning", choices=["log2", "quantile"], default="log2",
                   help="word bins: Spot's last release (log2) or its older quantile cuts")
    p.add_argument("--attempted", choices=["attack", "benign", "exclude"], default="attack",
                   help="the treatment of failed attempts (Attempted Category != -1) shown in table_1.md and the chart; "
                   "evaluation.csv always has all three")
    p.add_argument("--holdout", type=float, default=0.2,
                   help="share of the training day's benign flows held out to fit the threshold modes (default 0.2)")
    p.add_argument("--benign-fpr", type=float, action="append", default=None,
                   help="benign-FPR threshold mode(s) to evaluate (repeatable; default 0.01 and 0.001)")
    p.add_argument("--alerts-per-day", type=float, default=1000, help="alerts-per-day mode: alerts (default 1000)")
    p.add_argument("--flows-per-day", type=int, default=5_500_000,
                   help="flows a day on the network the alert budget is for (default 5,500,000: a CIC-IDS2018 day, SPEC §3)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the AUC intervals (0: none)")
    p.add_argument("--split-files", dest="split_files", action="store_true", default=True,
                   help="the default: a date that several input files carry is one day per file (FILE:DATE)")
    p.add_argument("--pool-files", dest="split_files", action="store_false",
                   help="pool the rows of every input file that share a date into one day (the old default)")
    p.add_argument("--out", default="evaluation", help="output directory (default ./evaluation)")
    p.add_argument("--master", default=os.environ.get("SPOT_AE_MASTER", "local[*]"), help="Spark master (default local[*])")
    p.add_argument("--no-family", action="store_true",
                   help="skip the attack-family classifier's evaluation (family.py; trained and tested on alternate days)")
    p.add_argument("--no-incidents", action="store_true",
                   help="skip grouping the flagged test flows into incidents and measuring their label purity")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--shuffle-partitions", type=int, default=None,
                   help="spark.sql.shuffle.partitions (default: 2 x cores on a local master, Spark's own on a cluster)")
    return p


# ------------------------------------------------------------------------------ days

def with_day(flows: DataFrame, split_files: bool = True) -> DataFrame:
    """Add the evaluation day: the flow's date, or `file:NAME` when the row has no timestamp.

    A date that rows of more than one input file carry becomes one day per file, `NAME:DATE`
    (unless `split_files` is False): different files are different captures, often different
    CICFlowMeter extractions and layouts, and pooling them puts one capture's artefacts among the
    other's benign flows. On the shared excerpts, pooling 20/02 put 23 benign rows of cstub's
    validation file (no IPs, no source port: it counts as 0) among the IP-carrying excerpt's, and
    they alone took the context model's recall at 5% benign FPR on LOIC-HTTP from 0.97 to 0.06
    (docs/evaluation.md)."""
    dated = F.col("treceived").isNotNull()
    date = F.substring(F.col("treceived"), 1, 10)
    day = F.when(dated, date).otherwise(F.concat(F.lit("file:"), F.col(SOURCE_FILE)))
    if split_files:
        shared = [r[0] for r in flows.where(dated).groupBy(date.alias("_d"))
                  .agg(F.countDistinct(SOURCE_FILE).alias("_files")).where("_files > 1").collect()]
        if shared:
            day = F.when(dated & date.isin(shared), F.concat(F.col(SOURCE_FILE), F.lit(":"), date)).otherwise(day)
    return flows.withColumn(DAY, day)


def attempted_label(how: str):
    """The ground truth with failed attempts counted `how`: attack, benign, or left out (null)."""
    attempted = F.coalesce(F.col(ATTEMPTED), F.lit(-1)) != -1
    if how == "benign":
        return F.when(attempted, F.lit(False)).otherwise(F.col(IS_ATTACK))
    if how == "exclude":
        return F.when(attempted, F.lit(None).cast("boolean")).otherwise(F.col(IS_ATTACK))
    return F.col(IS_ATTACK)


def threshold_modes(args) -> list[tuple[str, str, float | None]]:
    """(row label, thresholds.py mode, value) of every mode evaluated besides the paper's own."""
    fprs = args.benign_fpr or [0.01, 0.001]
    return ([("p95", P95, None)] + [(f"benign-fpr {x:g}", BENIGN_FPR, x) for x in fprs]
            + [(f"alerts-per-day {args.alerts_per_day:g}", ALERTS_PER_DAY, args.alerts_per_day)])


def apply_attempted(flows: DataFrame, how: str) -> DataFrame:
    """Improved CIC-IDS2018 rows with Attempted Category != -1 are failed attacks (SPEC §3)."""
    attempted = F.coalesce(F.col(ATTEMPTED), F.lit(-1)) != -1
    if how == "benign":
        return flows.withColumn(IS_ATTACK, F.when(attempted, F.lit(False)).otherwise(F.col(IS_ATTACK)))
    if how == "exclude":
        return flows.where(~attempted)
    return flows


def resolve_day(spec: str, days: list[str]) -> str:
    """Match a user's day spelling against the days present."""
    s = spec.strip()
    cands = [s, f"file:{s}"]
    m = re.fullmatch(r"(\d{4})(\d{2})(\d{2})", s)
    if m:
        cands.append("-".join(m.groups()))
    m = re.fullmatch(r"(\d{1,2})/(\d{1,2})(?:/(\d{4}))?", s)
    if m:
        d, mo, y = m.groups()
        cands += [f"{y}-{int(mo):02d}-{int(d):02d}"] if y else [x for x in days if x[4:] == f"-{int(mo):02d}-{int(d):02d}"]
    for c in cands:
        if c in days:
            return c
    hits = [x for x in days if x.endswith(":" + s) or x.endswith(s)]
    if len(hits) == 1:
        return hits[0]
    raise SpotAEError(f"training day {spec!r} is not in the data; days present: {', '.join(days)}")


def paper_key(day: str) -> str | None:
    m = re.search(r"(\d{4})-(\d{2})-(\d{2})$", day)
    if not m or m.group(1) != "2018":
        return None
    k = f"{m.group(2)}-{m.group(3)}"
    return k if k in PAPER_TABLE_I else None


# ------------------------------------------------------------------------------ the run

def _models(spec: str) -> list[str]:
    ms = [m.strip().lower() for m in spec.split(",") if m.strip()]
    bad = [m for m in ms if m not in MODELS]
    if bad or not ms:
        raise SpotAEError(f"--model takes a comma-separated list of {', '.join(MODELS)}; got {spec!r}")
    return list(dict.fromkeys(ms))


def run(args) -> dict:
    models = _models(args.model)
    if args.epochs < 1:
        raise SpotAEError("--epochs must be at least 1")
    if not 0 < args.holdout < 1:
        raise SpotAEError("--holdout must be a share between 0 and 1 (0.2 = 20%)")
    modes = threshold_modes(args)
    data = args.data or [str(default_data())]
    for d in data:
        if "://" not in d and not Path(d).exists():
            raise SpotAEError(f"no such file or directory: {d} (set --data or SPOT_AE_DATA)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    extra = {"spark.sql.shuffle.partitions": str(args.shuffle_partitions)} if args.shuffle_partitions else {}
    spark = session(args.master, app="spot-ae-evaluate", extra=extra)

    res = read_cicids(spark, data)
    rejected = {r[0]: int(r[1]) for r in res.rejects.groupBy("reject_reason").count().collect()}
    if rejected:
        _say(f"rejected input rows (kept out, by reason): {rejected}")
    dated = with_day(res.flows, args.split_files)  # one day assignment for the models and the family classifier
    unlabelled = dated.where(F.col(IS_ATTACK).isNull()).count()
    if unlabelled:
        _say(f"{unlabelled} rows carry no ground truth (placeholder labels) and are left out")
    flows = dated.where(F.col(IS_ATTACK).isNotNull())

    has_ips = F.col("sip").isNotNull() & F.col("dip").isNotNull()
    per_how = []
    for how in ATTEMPTED_AS:
        y = attempted_label(how)
        per_how += [F.sum(y.isNotNull().cast("int")).alias(f"flows_{how}"), F.sum(y.cast("int")).alias(f"attacks_{how}"),
                    F.sum((~y).cast("int")).alias(f"benign_{how}")]
    inv_rows = flows.groupBy(DAY).agg(
        F.count("*").alias("flows"),
        F.sum(F.col(IS_ATTACK).cast("int")).alias("attacks"),
        F.sum((~F.col(IS_ATTACK)).cast("int")).alias("benign"),
        F.sum((F.coalesce(F.col(ATTEMPTED), F.lit(-1)) != -1).cast("int")).alias("attempted"),
        F.sum((has_ips & ~F.col(IS_ATTACK)).cast("int")).alias("benign_with_ips"),
        F.sum(has_ips.cast("int")).alias("with_ips"),
        F.sort_array(F.collect_set(SOURCE_FILE)).alias("files"),
        *per_how,
    ).collect()
    if not inv_rows:
        raise SpotAEError(f"no labelled flows in {', '.join(data)}")
    inventory = {r[DAY]: r.asDict() for r in inv_rows}
    days = sorted(inventory)
    _say(f"{sum(r['flows'] for r in inventory.values())} labelled flows in {len(days)} days: " + ", ".join(
        f"{d} ({inventory[d]['flows']}, {inventory[d]['attacks']} attacks)" for d in days))

    if args.train_day:
        train_day = resolve_day(args.train_day, days)
    else:  # the day both models can learn most from: benign flows that also carry IPs for LDA
        key = (lambda d: (inventory[d]["benign_with_ips"], inventory[d]["benign"])) if "lda" in models else (lambda d: inventory[d]["benign"])
        train_day = max(days, key=key)
    if inventory[train_day]["benign"] < 10:
        raise SpotAEError(f"training day {train_day} has {inventory[train_day]['benign']} benign flows; pick one with more (--train-day)")
    # The training day's benign flows (benign in the data's own labels, whatever --attempted says):
    # most train the models, a seeded share is held out for fitting the threshold modes.
    train_benign = (F.col(DAY) == train_day) & ~F.col(IS_ATTACK)
    flows = flows.withColumn(SPLIT, F.when(train_benign & (F.rand(args.seed) < args.holdout), "heldout")
                             .when(train_benign, "train").otherwise("test")).persist(StorageLevel.MEMORY_AND_DISK)
    split_n = {r[0]: r[1] for r in flows.groupBy(SPLIT).count().collect()}
    _say(f"training day {train_day}: {split_n.get('train', 0)} benign flows train the models, "
         f"{split_n.get('heldout', 0)} are held out for the threshold modes")
    train = flows.where(F.col(SPLIT) == "train")
    context = None
    if "ae-context" in models:  # over all flows, as scoring sees them; the model trains on the benign ones
        context = add_context(flows).persist(StorageLevel.MEMORY_AND_DISK)

    fitted, notes, timings = {}, {}, {}
    for name in ("ae", "ae-context"):
        if name in models:
            t = time.time()
            src = context.where(F.col(SPLIT) == "train") if name == "ae-context" else train.select(*FLOW_COLUMNS)
            fitted[name] = train_autoencoder(src, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                             training_day=train_day, progress=_say, variant=name)
            timings[f"{name}_train_s"] = round(time.time() - t, 1)
    if "lda" in models:
        t = time.time()
        if inventory[train_day]["benign_with_ips"] == 0:
            notes["lda"] = f"LDA not applicable: the training day {train_day} has no flows with IP addresses (LDA's documents are IPs)"
            _say(notes["lda"])
        else:
            fitted["lda"] = fit_lda(train.select(*FLOW_COLUMNS), topics=args.topics, max_iter=args.lda_iter,
                                    binning=args.lda_binning, seed=args.seed, training_day=train_day, progress=_say)
        timings["lda_train_s"] = round(time.time() - t, 1)

    # score everything once, to Parquet; thresholds and metrics read that back
    scores_uri = (out / "scores").resolve().as_uri()
    keep = [DAY, SPLIT, IS_ATTACK, ATTEMPTED, LABEL]
    # incidents are measured on the default detector where it ran (ae-context), else the paper's
    grouped_by = next((n for n in ("ae-context", "ae") if n in fitted), None) if not args.no_incidents else None
    kept_scores = None
    for name, m in fitted.items():
        t = time.time()
        if name == "ae-context":
            scored = score_flows(m, context.select(*FLOW_COLUMNS, *keep, *CONTEXT_COLUMNS))
        elif name == "ae":
            scored = score_flows(m, flows.select(*FLOW_COLUMNS, *keep))
        else:
            scored = m.score(flows.select(*FLOW_COLUMNS, *keep), doc_keys=[DAY])
        if name == grouped_by:
            scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
            kept_scores = scored
        (scored.select(*keep, "score").withColumn("model", F.lit(name))
         .write.mode("overwrite").partitionBy("model").option("partitionOverwriteMode", "dynamic").parquet(scores_uri))
        timings[f"{name}_score_s"] = round(time.time() - t, 1)
        _say(f"{MODEL_NAMES[name]} scored every flow -> {scores_uri}/model={name}")
    flows.unpersist()
    if context is not None:
        context.unpersist()

    # threshold modes, each fitted on the held-out benign slice's scores (never on training rows)
    thresholds: dict[str, dict[str, float]] = {}
    for name, m in fitted.items():
        held = (spark.read.parquet(scores_uri).where((F.col("model") == name) & (F.col(SPLIT) == "heldout"))
                .where(F.col("score").isNotNull() & ~F.isnan("score")))
        n_held = held.count()
        if n_held > 2_000_000:  # the quantiles of a 2M-row sample are as good as the whole slice's
            held = held.sample(fraction=2_000_000 / n_held, seed=args.seed)
        s = np.array([r[0] for r in held.select("score").collect()], dtype=np.float64)
        thresholds[name] = {PAPER_MODE: float(m.threshold)}
        for label, mode, value in modes:
            try:
                thresholds[name][label] = fit_threshold(s, mode, value, flows_per_day=args.flows_per_day,
                                                        higher_is_suspicious=m.higher_is_suspicious)
            except SpotAEError as e:
                notes.setdefault(f"{name} {label}", f"{label} not fitted: {e}")
        _say(f"{MODEL_NAMES[name]} thresholds from {s.size} held-out benign scores: "
             + ", ".join(f"{k}={v:.6g}" for k, v in thresholds[name].items()))

    rows, per_attack = [], []
    mode_names = [PAPER_MODE] + [label for label, _, _ in modes]
    for name in models:
        m = fitted.get(name)
        sc = spark.read.parquet(scores_uri).where(F.col("model") == name) if m is not None else None
        for how in ATTEMPTED_AS:
            curves, cms, cis = {}, {}, {}
            if m is not None:
                lab = sc.withColumn("_y", attempted_label(how))
                hi = m.higher_is_suspicious
                curves = {r[DAY]: r for r in binary_metrics(lab, m.threshold, label_col="_y", higher_is_suspicious=hi, group_col=DAY)}
                cms = {k[0]: v for k, v in confusion_at(lab, thresholds[name], label_col="_y", higher_is_suspicious=hi,
                                                        group_col=DAY).items()}
                if args.bootstrap > 0:
                    cis = {k[0]: v for k, v in bootstrap_intervals(lab, label_col="_y", higher_is_suspicious=hi, group_col=DAY,
                                                                   n_boot=args.bootstrap, seed=args.seed).items()}
                per_attack += _per_attack(lab, name, how, thresholds[name], hi)
            for d in days:
                inv = inventory[d]
                got, note = curves.get(d), notes.get(name, "")
                base = {"flows": inv[f"flows_{how}"], "attacks": inv[f"attacks_{how}"], "benign": inv[f"benign_{how}"],
                        "attempted": inv["attempted"], "day": d, "role": "train" if d == train_day else "test",
                        "model": name, "attempted_as": how, "files": ";".join(inv["files"])}
                if got:
                    base.update({k: v for k, v in got.items()  # threshold-free figures; the confusion comes per mode
                                 if k not in (DAY, "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "fpr")})
                    base["scored"] = got["tp"] + got["fp"] + got["tn"] + got["fn"]
                    base.update(cis.get(d, {}))
                    if name == "lda" and got["unscored"]:
                        note = f"LDA scored only the {base['scored']} flows with IP addresses; {got['unscored']} have none"
                if name == "lda" and m is not None and not base.get("scored"):
                    note = "LDA not applicable: no flow of this day has IP addresses (LDA's documents are IPs)"
                if d == train_day:
                    note = ("training day (its benign rows trained the models or fitted the thresholds)" + ("; " + note if note else ""))
                pk = paper_key(d)
                if pk and name in PAPER_TABLE_I[pk]:
                    base.update(zip(("paper_accuracy", "paper_precision", "paper_recall", "paper_f1"), PAPER_TABLE_I[pk][name]))
                for mode in mode_names:
                    r = dict(base, threshold_mode=mode)
                    c = cms.get(d, {}).get(mode)
                    if c is not None:
                        r.update(c, threshold=thresholds[name][mode])
                    mnote = notes.get(f"{name} {mode}", "")
                    r["note"] = "; ".join(x for x in (note, mnote) if x)
                    if m is not None:
                        r.update(higher_is_suspicious=m.higher_is_suspicious, training_day=train_day, model_version=m.version)
                    rows.append(r)

    extra_sections = []
    if kept_scores is not None:
        t = time.time()
        m = fitted[grouped_by]
        flagged = kept_scores.where((F.col(SPLIT) == "test") & ((F.col("score") > m.threshold) if m.higher_is_suspicious
                                                                 else (F.col("score") < m.threshold)))
        purity = incident_purity(flagged)
        purity["model"] = grouped_by
        kept_scores.unpersist()
        timings["incidents_s"] = round(time.time() - t, 1)
        write_csv(out / "incidents.csv", purity["by_label"], INCIDENT_FIELDS)
        extra_sections += _incident_section(purity)
        _say(f"incidents ({grouped_by}, paper-p95, test days): {purity['incidents']} incidents, "
             f"{purity['benign_incidents']} benign; every flagged attack label in incidents >= 90% one label: "
             f"{'yes' if purity['goal_met'] else 'NO'}")
    fam = None
    if not args.no_family:
        from spot_ae_job import family

        t = time.time()
        fam = family.evaluate(dated.where(F.col(IS_ATTACK).isNotNull()), say=_say)
        timings["family_s"] = round(time.time() - t, 1)
        if "confusion" in fam:
            write_family(out, fam)
            extra_sections += _family_section(fam)
            _say(f"family classifier on held-out days {', '.join(fam['test_days'])}: macro-F1 {fam['macro_f1']:.3f}, "
                 f"unknown {fam['unknown_share_attacks']:.1%} of attack flows")
    write_csv(out / "evaluation.csv", rows)
    write_csv(out / "per_attack.csv", per_attack, PER_ATTACK_FIELDS)
    (out / "table_1.md").write_text(markdown(rows, models, train_day, args, per_attack) + "\n".join(extra_sections))
    plot_f1(out / "fig_1_f1.png", rows, models, train_day, args.attempted)
    summary = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data, "train_day": train_day, "models": models, "epochs": args.epochs, "topics": args.topics,
        "lda_iter": args.lda_iter, "lda_binning": args.lda_binning, "attempted": args.attempted,
        "attempted_as": list(ATTEMPTED_AS), "threshold_modes": mode_names, "holdout": args.holdout,
        "flows_per_day": args.flows_per_day, "bootstrap": args.bootstrap,
        "split_files": args.split_files, "master": args.master, "split_rows": split_n,
        "thresholds": thresholds,
        "model_versions": {k: m.version for k, m in fitted.items()},
        "notes": notes, "rejected_input_rows": rejected, "unlabelled_rows": unlabelled,
        "timings_s": {**timings, "total_s": round(time.time() - t0, 1)},
        "days": {d: {k: v for k, v in inventory[d].items() if k != DAY} for d in days},
        "incidents": None if kept_scores is None else {k: v for k, v in purity.items() if k != "by_label"},
        "family": fam,
    }
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2, default=str))
    _say(f"done in {time.time() - t0:.0f}s: {out}/evaluation.csv, {out}/per_attack.csv, {out}/table_1.md, {out}/fig_1_f1.png")
    return {"rows": rows, "per_attack": per_attack, "summary": summary}


def _per_attack(lab: DataFrame, model: str, how: str, thresholds: dict, higher: bool) -> list[dict]:
    """Recall per attack type (the data set's label) at every threshold mode, all days pooled."""
    sc = F.col("score")
    ok = sc.isNotNull() & ~F.isnan(sc)
    aggs = [F.count("*").alias("_n"), F.sort_array(F.collect_set(DAY)).alias("_days")]
    names = list(thresholds)
    for i, mode in enumerate(names):
        flagged = (sc > F.lit(thresholds[mode])) if higher else (sc < F.lit(thresholds[mode]))
        aggs.append(F.sum(F.when(ok & flagged, 1).otherwise(0)).alias(f"_f{i}"))
    out = []
    # attack rows a model could not score (LDA: no IPs) are left out here, as in the day rows
    for r in lab.where(F.col("_y") & (F.col(SPLIT) == "test") & ok).groupBy(LABEL).agg(*aggs).orderBy(LABEL).collect():
        for i, mode in enumerate(names):
            out.append({"model": model, "attempted_as": how, "threshold_mode": mode, "attack": r[LABEL], "flows": r["_n"],
                        "flagged": r[f"_f{i}"], "recall": r[f"_f{i}"] / r["_n"], "days": ";".join(r["_days"])})
    return out

# ------------------------------------------------------------------------------ incidents and families

INCIDENT_FIELDS = ["label", "flagged", "incidents", "min_purity", "flows_in_pure_incidents", "share_in_pure_incidents"]
PURE = 0.9  # the goal: an attack's incidents are >= 90% one label


def incident_purity(flagged: DataFrame) -> dict:
    """Group flagged test flows into incidents (incidents.group: the day pipeline's grouping, per
    evaluation day) and measure, for every label, the purity of the incidents its flows fall into:
    purity = the incident's most common label's share of its flows."""
    from spot_ae_job.alerts import ALERT_ID
    from spot_ae_job.incidents import group

    # the day is part of each host's name, so an evaluation day's incidents never join another's
    rows = flagged.select(
        F.monotonically_increasing_id().cast("string").alias(ALERT_ID), LABEL, DAY, "unix_tstamp",
        F.when(F.col("sip").isNotNull(), F.concat_ws("|", DAY, "sip")).alias("sip"),
        F.when(F.col("dip").isNotNull(), F.concat_ws("|", DAY, "dip")).alias("dip")).persist(StorageLevel.MEMORY_AND_DISK)
    comp, _ = group(rows)
    per = rows.join(comp, ALERT_ID).groupBy("comp", LABEL).count().persist(StorageLevel.MEMORY_AND_DISK)
    tot = per.groupBy("comp").agg(F.sum("count").alias("n"), F.max("count").alias("top"),
                                  F.max_by(LABEL, "count").alias("majority"))
    inc = tot.withColumn("purity", F.col("top") / F.col("n"))
    by = (per.join(inc, "comp").groupBy(LABEL).agg(
        F.sum("count").alias("flagged"), F.countDistinct("comp").alias("incidents"), F.min("purity").alias("min_purity"),
        F.sum(F.when(F.col("purity") >= PURE, F.col("count")).otherwise(0)).alias("flows_in_pure_incidents"))
        .orderBy(LABEL).collect())
    out = [{**r.asDict(), "share_in_pure_incidents": r["flows_in_pure_incidents"] / r["flagged"]} for r in by]
    benign = ("benign", "normal")
    r = inc.agg(F.count("*").alias("n"), F.sum(F.lower("majority").isin(*benign).cast("int")).alias("b"),
                F.sum((F.lower("majority").isin(*benign) & (F.col("n") == F.col("top"))).cast("int")).alias("pb")).first()
    rows.unpersist()
    per.unpersist()
    attacks = [x for x in out if x[LABEL].lower() not in benign]
    return {"incidents": int(r["n"] or 0), "benign_incidents": int(r["b"] or 0), "all_benign_incidents": int(r["pb"] or 0),
            "goal_met": all(x["min_purity"] >= PURE for x in attacks), "pure": PURE, "by_label": out}


def _incident_section(p: dict) -> list[str]:
    out = ["## Incidents (flagged test flows grouped as the day pipeline groups them)", "",
           f"{MODEL_NAMES[p['model']]} at the paper's p95; flows sharing a host within the gap form an incident "
           f"(incidents.py). {p['incidents']} incidents, {p['benign_incidents']} of them mostly benign "
           f"({p['all_benign_incidents']} all benign). Purity = an incident's most common label's share of its flows; "
           f"goal: every flagged attack label only in incidents >= {p['pure']:.0%} one label: "
           f"**{'met' if p['goal_met'] else 'not met'}**.", "",
           "| label | flagged flows | incidents | lowest purity | share in incidents >= 90% pure |", "|---|---|---|---|---|"]
    for r in p["by_label"]:
        out.append(f"| {r[LABEL]} | {r['flagged']} | {r['incidents']} | {r['min_purity']:.3f} | {r['share_in_pure_incidents']:.3f} |")
    return out + [""]


def write_family(out: Path, fam: dict) -> None:
    cols = list(next(iter(fam["confusion"].values())).keys())
    with (out / "family_confusion.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["true \\ predicted", *cols])
        for t, row in fam["confusion"].items():
            w.writerow([t, *[row[c] for c in cols]])
    with (out / "family.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["family", "support", "precision", "recall", "f1"])
        for k, v in fam["per_family"].items():
            w.writerow([k, v["support"], f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}"])
        w.writerow(["macro", "", "", "", f"{fam['macro_f1']:.4f}"])
        w.writerow(["unknown share (attack flows)", "", "", "", f"{fam['unknown_share_attacks']:.4f}"])


def _family_section(fam: dict) -> list[str]:
    cols = list(next(iter(fam["confusion"].values())).keys())
    out = ["## Attack family classifier (family.py), held-out days", "",
           f"Random forest trained on {', '.join(fam['train_days'])}; tested on {', '.join(fam['test_days'])} "
           f"(every labelled row; alternate dated days, fixed before any result). Below a mean probability of "
           f"{fam['bar']} (or when benign wins) the family is `unknown`. Macro-F1 over the attack families present: "
           f"**{fam['macro_f1']:.3f}**; `unknown`: {fam['unknown_share_attacks']:.1%} of attack flows, "
           f"{fam['unknown_share_all']:.1%} of all.", "",
           "| true \\ predicted | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for t, row in fam["confusion"].items():
        out.append(f"| {t} | " + " | ".join(str(row[c]) for c in cols) + " |")
    out += ["", "| family | test flows | precision | recall | F1 |", "|---|---|---|---|---|"]
    for k, v in fam["per_family"].items():
        out.append(f"| {k} | {v['support']} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |")
    return out + [""]


# ------------------------------------------------------------------------------ outputs

def _fmt(v, pct=False, digits=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if pct:
        return f"{100 * v:.1f}"
    return f"{v:.{digits or 2}f}"


def write_csv(path: Path, rows: list[dict], fields: list[str] = CSV_FIELDS) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k])) else r.get(k)) for k in fields})


def _ci(r: dict, k: str) -> str:
    lo, hi = r.get(f"{k}_lo"), r.get(f"{k}_hi")
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return _fmt(r.get(k), digits=3)
    return f"{_fmt(r.get(k), digits=3)} [{lo:.2f}, {hi:.2f}]"


def _pooled(rows: list[dict]) -> dict:
    """Confusion counts summed over rows (test days): recall, benign FPR, alerts."""
    c = {k: sum(int(r.get(k) or 0) for r in rows) for k in ("tp", "fp", "tn", "fn")}
    return {**c, "recall": c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else float("nan"),
            "fpr": c["fp"] / (c["fp"] + c["tn"]) if c["fp"] + c["tn"] else float("nan"), "alerts": c["tp"] + c["fp"]}


def markdown(rows: list[dict], models: list[str], train_day: str, args, per_attack: list[dict] | None = None) -> str:
    all_rows = rows
    rows = [r for r in rows if r["threshold_mode"] == PAPER_MODE and r["attempted_as"] == args.attempted]
    by = {(r["day"], r["model"]): r for r in rows}
    days = sorted({r["day"] for r in rows}, key=lambda d: (d != train_day, d))
    head = ["day", "flows (attacks)"]
    for m in models:
        n = MODEL_NAMES[m]
        head += [f"{n} acc %", f"{n} prec %", f"{n} rec %", f"{n} F1", f"{n} ROC-AUC", f"{n} PR-AUC"]
    head += ["paper (AE F1 / LDA F1)"]
    lines = [
        f"# {' vs '.join(MODEL_NAMES[m] for m in models)}, the paper's protocol (trained on {train_day})",
        "",
        f"Benign flows of {train_day} ({1 - args.holdout:.0%} of them; the rest fit the threshold modes below) trained "
        "every model; threshold = 95th percentile of their benign scores "
        "(5th for LDA, where low = suspicious). Accuracy, precision and recall are percentages at that threshold; "
        "ROC-AUC and PR-AUC (average precision) need no threshold. `n/a`: not computable "
        "(no attacks, or LDA without IP addresses). The training day's row is in-sample for its benign flows.",
        f"Settings: epochs {args.epochs}, LDA topics {args.topics} ({args.lda_binning} bins), "
        f"failed attempts counted as `{args.attempted}`.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for d in days:
        any_r = next(by[(d, m)] for m in models if (d, m) in by)
        cells = [d + (" (train)" if d == train_day else ""), f"{any_r['flows']} ({any_r['attacks']})"]
        for m in models:
            r = by.get((d, m), {})
            cells += [_fmt(r.get("accuracy"), pct=True), _fmt(r.get("precision"), pct=True), _fmt(r.get("recall"), pct=True),
                      _fmt(r.get("f1")), _ci(r, "roc_auc"), _ci(r, "pr_auc")]
        pk = paper_key(d)
        cells.append(f"{PAPER_TABLE_I[pk]['ae'][3]:.2f} / {PAPER_TABLE_I[pk]['lda'][3]:.2f}" if pk else "")
        lines.append("| " + " | ".join(cells) + " |")
    ref = [d for d in days if paper_key(d)]
    if ref:
        lines += ["", "## Beside the paper's Table I (full days there; excerpts here)", "",
                  "| day | | AE acc % | AE prec % | AE rec % | AE F1 | LDA acc % | LDA prec % | LDA rec % | LDA F1 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for d in ref:
            p = PAPER_TABLE_I[paper_key(d)]
            lines.append(f"| {d} | paper | " + " | ".join(f"{v:g}" for v in p["ae"] + p["lda"]) + " |")
            ours = []
            for m in ("ae", "lda"):
                r = by.get((d, m), {})
                ours += [_fmt(r.get("accuracy"), pct=True), _fmt(r.get("precision"), pct=True),
                         _fmt(r.get("recall"), pct=True), _fmt(r.get("f1"))]
            lines.append(f"| {d} | ours | " + " | ".join(ours) + " |")
    notes = sorted({f"{r['day']} {MODEL_NAMES[r['model']]}: {r['note']}" for r in rows if r.get("note")})
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    lines += ["", "ROC-AUC and PR-AUC: `[lo, hi]` is a stratified bootstrap 95% interval "
              f"({args.bootstrap} resamples), given where a day has at least {metrics_min()} attacks and as many benign flows.",
              "Per-day figures at fixed benign FPRs (0.1%, 1%, 5%) are in evaluation.csv.", ""]
    lines += _modes_section(all_rows, models, train_day, args)
    lines += _attempted_section(all_rows, models, train_day)
    if per_attack:
        lines += _per_attack_section(per_attack, models, args)
    return "\n".join(lines)


def metrics_min() -> int:
    return MIN_PER_CLASS


def _modes_section(rows, models, train_day, args) -> list[str]:
    modes = list(dict.fromkeys(r["threshold_mode"] for r in rows))
    out = ["## Threshold modes (test days pooled)", "",
           f"`{PAPER_MODE}`: the threshold the model saved (the paper's protocol). The others are fitted on the "
           f"held-out {args.holdout:.0%} of {train_day}'s benign flows, never on training rows "
           f"(alerts-per-day assumes {args.flows_per_day:,} flows a day). Failed attempts counted as `{args.attempted}`.", "",
           "| model | mode | threshold | recall | benign FPR | alerts |", "|---|---|---|---|---|---|"]
    for m in models:
        for mode in modes:
            sel = [r for r in rows if r["model"] == m and r["threshold_mode"] == mode and r["attempted_as"] == args.attempted
                   and r["day"] != train_day and r.get("tp") is not None]
            if not sel:
                out.append(f"| {MODEL_NAMES[m]} | {mode} | n/a | n/a | n/a | n/a |")
                continue
            p = _pooled(sel)
            out.append(f"| {MODEL_NAMES[m]} | {mode} | {sel[0].get('threshold', float('nan')):.6g} | {_fmt(p['recall'], digits=3)} | "
                       f"{_fmt(p['fpr'], digits=4)} | {p['alerts']} |")
    return out + [""]


def _attempted_section(rows, models, train_day) -> list[str]:
    out = ["## Failed attempts (`Attempted Category` != -1) counted three ways (test days pooled, paper-p95)", "",
           "| model | counted as | flows | attacks | recall | benign FPR |", "|---|---|---|---|---|---|"]
    for m in models:
        for how in ATTEMPTED_AS:
            sel = [r for r in rows if r["model"] == m and r["attempted_as"] == how and r["threshold_mode"] == PAPER_MODE
                   and r["day"] != train_day]
            p = _pooled([r for r in sel if r.get("tp") is not None])
            out.append(f"| {MODEL_NAMES[m]} | {how} | {sum(int(r['flows'] or 0) for r in sel)} | "
                       f"{sum(int(r['attacks'] or 0) for r in sel)} | {_fmt(p['recall'], digits=3)} | {_fmt(p['fpr'], digits=4)} |")
    attempted = sum(int(r["attempted"] or 0) for r in rows if r["model"] == models[0] and r["attempted_as"] == "attack"
                    and r["threshold_mode"] == PAPER_MODE and r["day"] != train_day)
    return out + ["", f"{attempted} test-day rows carry an `Attempted Category` other than -1.", ""]


def _per_attack_section(per_attack, models, args) -> list[str]:
    modes = list(dict.fromkeys(r["threshold_mode"] for r in per_attack))
    sel = [r for r in per_attack if r["attempted_as"] == args.attempted]
    attacks = sorted({r["attack"] for r in sel})
    by = {(r["model"], r["threshold_mode"], r["attack"]): r for r in sel}
    head = ["attack", "flows"] + [f"{MODEL_NAMES[m]} {mode}" for m in models for mode in modes]
    out = ["## Recall per attack type (every test row of that label)", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in attacks:
        n = next((r["flows"] for r in sel if r["attack"] == a), "")
        cells = [a, str(n)] + [_fmt(by[(m, mode, a)]["recall"], digits=2) if (m, mode, a) in by else "n/a"
                               for m in models for mode in modes]
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def plot_f1(path: Path, rows: list[dict], models: list[str], train_day: str, attempted: str = "attack") -> None:
    import matplotlib  # lazy: only --plot draws, and pyplot may be imported only after the backend is chosen

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["threshold_mode"] == PAPER_MODE and r["attempted_as"] == attempted]
    days = sorted({r["day"] for r in rows if r["day"] != train_day})
    by = {(r["day"], r["model"]): r for r in rows}
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(days) + 2), 4.2))
    colours = {"ae": "#1f77b4", "ae-context": "#2ca02c", "lda": "#ff7f0e"}
    for i, m in enumerate(models):
        vals = [by.get((d, m), {}).get("f1") for d in days]
        ys = [0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in vals]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(days))]
        ax.bar(xs, ys, width, label=MODEL_NAMES[m], color=colours.get(m))
        for x, v in zip(xs, vals):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                ax.text(x, 0.01, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(range(len(days)))
    ax.set_xticklabels([d.replace("file:", "") for d in days], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("F1 at the p95 threshold")
    ax.set_ylim(0, 1)
    ax.set_title(f"F1 per test day at the paper's p95 (trained on {train_day})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("spot-ae evaluate", run, args)


if __name__ == "__main__":
    sys.exit(main())
