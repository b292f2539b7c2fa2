"""`spot-ae evaluate`: the paper's protocol, AE against Spot's LDA, as one rerunnable command.

Protocol (Priovolos et al., SPEC §1): pick a training day; train on its benign flows (the
autoencoder holds 20% of them out for validation); threshold at the 95th percentile of the
benign training scores (mirrored for LDA, whose low scores are suspicious: the 5th percentile);
score every other day and report accuracy, precision, recall and F1 per day, plus what the paper
lacks: ROC-AUC, PR-AUC (average precision) and recall/precision at fixed benign FPRs.

Days come from the flows' timestamps. Rows without a timestamp (some CIC-IDS2018 excerpts drop
the column) are grouped by file: each such file is a "day" named `file:NAME`.

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

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spot_ae_job.errors import SpotAEError
from spot_ae_job.metrics import DEFAULT_FPRS, binary_metrics
from spot_ae_job.schema import ATTEMPTED, FLOW_COLUMNS, IS_ATTACK, SOURCE_FILE

DAY = "eval_day"
MODELS = ("ae", "lda")
MODEL_NAMES = {"ae": "AE", "lda": "LDA"}

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
    p.add_argument("--model", default="ae,lda", help="comma-separated models: ae, lda (default both)")
    p.add_argument("--epochs", type=int, default=90, help="autoencoder epochs (paper: 90)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--topics", type=int, default=20, help="LDA topics (Spot: TOPIC_COUNT=20)")
    p.add_argument("--lda-iter", type=int, default=20, help="LDA iterations")
    p.add_argument("--lda-binning", choices=["log2", "quantile"], default="log2",
                   help="word bins: Spot's last release (log2) or its older quantile cuts")
    p.add_argument("--attempted", choices=["attack", "benign", "exclude"], default="attack",
                   help="how to count rows the improved CIC-IDS2018 marks as failed attempts (Attempted Category != -1)")
    p.add_argument("--split-files", action="store_true",
                   help="never pool rows of different input files into one day (day = file + date)")
    p.add_argument("--out", default="evaluation", help="output directory (default ./evaluation)")
    p.add_argument("--master", default=os.environ.get("SPOT_AE_MASTER", "local[*]"), help="Spark master (default local[*])")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--shuffle-partitions", type=int, default=None,
                   help="spark.sql.shuffle.partitions (default: 4 x cores on a local master, Spark's own on a cluster)")
    return p


# ------------------------------------------------------------------------------ days

def with_day(flows: DataFrame, split_files: bool = False) -> DataFrame:
    """Add the evaluation day: the flow's date, or `file:NAME` when the row has no timestamp."""
    date = F.substring(F.col("treceived"), 1, 10)
    day = F.when(F.col("treceived").isNotNull(), date).otherwise(F.concat(F.lit("file:"), F.col(SOURCE_FILE)))
    if split_files:
        day = F.when(F.col("treceived").isNotNull(), F.concat(F.col(SOURCE_FILE), F.lit(":"), date)).otherwise(day)
    return flows.withColumn(DAY, day)


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
    from spot_ae_job.ingest.cicids import read_cicids
    from spot_ae_job.spark import session

    models = _models(args.model)
    if args.epochs < 1:
        raise SpotAEError("--epochs must be at least 1")
    data = args.data or [str(default_data())]
    for d in data:
        if "://" not in d and not Path(d).exists():
            raise SpotAEError(f"no such file or directory: {d} (set --data or SPOT_AE_DATA)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    extra = {}
    if args.shuffle_partitions:
        extra["spark.sql.shuffle.partitions"] = str(args.shuffle_partitions)
    elif args.master.startswith("local"):
        # Spark's default of 200 shuffle partitions is sized for clusters; locally, with a few
        # cores, 200 tiny tasks per shuffle dominate an excerpt's run time.
        extra["spark.sql.shuffle.partitions"] = str(4 * (os.cpu_count() or 2))
    spark = session(args.master, app="spot-ae-evaluate", extra=extra)

    res = read_cicids(spark, data)
    rejected = {r[0]: int(r[1]) for r in res.rejects.groupBy("reject_reason").count().collect()}
    if rejected:
        _say(f"rejected input rows (kept out, by reason): {rejected}")
    flows = with_day(apply_attempted(res.flows, args.attempted), args.split_files)
    unlabelled = flows.where(F.col(IS_ATTACK).isNull()).count()
    if unlabelled:
        _say(f"{unlabelled} rows carry no ground truth (placeholder labels) and are left out")
    flows = flows.where(F.col(IS_ATTACK).isNotNull()).persist(StorageLevel.MEMORY_AND_DISK)

    has_ips = F.col("sip").isNotNull() & F.col("dip").isNotNull()
    inv_rows = flows.groupBy(DAY).agg(
        F.count("*").alias("flows"),
        F.sum(F.col(IS_ATTACK).cast("int")).alias("attacks"),
        F.sum((~F.col(IS_ATTACK)).cast("int")).alias("benign"),
        F.sum((F.coalesce(F.col(ATTEMPTED), F.lit(-1)) != -1).cast("int")).alias("attempted"),
        F.sum((has_ips & ~F.col(IS_ATTACK)).cast("int")).alias("benign_with_ips"),
        F.sum(has_ips.cast("int")).alias("with_ips"),
        F.sort_array(F.collect_set(SOURCE_FILE)).alias("files"),
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
    _say(f"training day {train_day}: {inventory[train_day]['benign']} benign flows")
    train = flows.where((F.col(DAY) == train_day) & ~F.col(IS_ATTACK)).select(*FLOW_COLUMNS)

    fitted, notes, timings = {}, {}, {}
    if "ae" in models:
        from spot_ae_job.model import train_autoencoder

        t = time.time()
        fitted["ae"] = train_autoencoder(train, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                         training_day=train_day, progress=_say)
        timings["ae_train_s"] = round(time.time() - t, 1)
    if "lda" in models:
        from spot_ae_job.lda import fit_lda

        t = time.time()
        if inventory[train_day]["benign_with_ips"] == 0:
            notes["lda"] = f"LDA not applicable: the training day {train_day} has no flows with IP addresses (LDA's documents are IPs)"
            _say(notes["lda"])
        else:
            fitted["lda"] = fit_lda(train, topics=args.topics, max_iter=args.lda_iter, binning=args.lda_binning,
                                    seed=args.seed, training_day=train_day, progress=_say)
        timings["lda_train_s"] = round(time.time() - t, 1)

    # score everything once, to Parquet; the metrics read that back
    scores_uri = (out / "scores").resolve().as_uri()
    keep = [DAY, IS_ATTACK]
    for name, m in fitted.items():
        t = time.time()
        if name == "ae":
            from spot_ae_job.score import score_flows

            scored = score_flows(m, flows.select(*FLOW_COLUMNS, *keep))
        else:
            scored = m.score(flows.select(*FLOW_COLUMNS, *keep), doc_keys=[DAY])
        (scored.select(*keep, "score").withColumn("model", F.lit(name))
         .write.mode("overwrite").partitionBy("model").option("partitionOverwriteMode", "dynamic").parquet(scores_uri))
        timings[f"{name}_score_s"] = round(time.time() - t, 1)
        _say(f"{MODEL_NAMES[name]} scored every flow -> {scores_uri}/model={name}")
    flows.unpersist()

    rows = []
    for name in models:
        m = fitted.get(name)
        per_day = {}
        if m is not None:
            sc = spark.read.parquet(scores_uri).where(F.col("model") == name)
            per_day = {r[DAY]: r for r in binary_metrics(sc, m.threshold, higher_is_suspicious=m.higher_is_suspicious, group_col=DAY)}
        for d in days:
            inv = inventory[d]
            r = {k: inv[k] for k in ("flows", "attacks", "benign", "attempted")}
            r.update(day=d, role="train" if d == train_day else "test", model=name, files=";".join(inv["files"]))
            got = per_day.get(d)
            note = notes.get(name, "")
            if got:
                r.update({k: v for k, v in got.items() if k != DAY})
                r["scored"] = got["tp"] + got["fp"] + got["tn"] + got["fn"]
                if name == "lda" and got["unscored"]:
                    note = f"LDA scored only the {r['scored']} flows with IP addresses; {got['unscored']} have none"
            if m is not None:
                r.update(threshold=m.threshold, threshold_mode=m.meta.get("threshold_mode"),
                         higher_is_suspicious=m.higher_is_suspicious, training_day=train_day, model_version=m.version)
            if name == "lda" and m is not None and not r.get("scored"):
                note = "LDA not applicable: no flow of this day has IP addresses (LDA's documents are IPs)"
            if d == train_day:
                note = ("training day (benign rows were the training set)" + ("; " + note if note else ""))
            r["note"] = note
            pk = paper_key(d)
            if pk:
                r.update(zip(("paper_accuracy", "paper_precision", "paper_recall", "paper_f1"), PAPER_TABLE_I[pk][name]))
            rows.append(r)

    write_csv(out / "evaluation.csv", rows)
    (out / "table_1.md").write_text(markdown(rows, models, train_day, args))
    plot_f1(out / "fig_1_f1.png", rows, models, train_day)
    summary = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data": data, "train_day": train_day, "models": models, "epochs": args.epochs, "topics": args.topics,
        "lda_iter": args.lda_iter, "lda_binning": args.lda_binning, "attempted": args.attempted,
        "split_files": args.split_files, "master": args.master,
        "thresholds": {k: m.threshold for k, m in fitted.items()},
        "model_versions": {k: m.version for k, m in fitted.items()},
        "notes": notes, "rejected_input_rows": rejected, "unlabelled_rows": unlabelled,
        "timings_s": {**timings, "total_s": round(time.time() - t0, 1)},
        "days": {d: {k: v for k, v in inventory[d].items() if k != DAY} for d in days},
    }
    (out / "evaluation.json").write_text(json.dumps(summary, indent=2, default=str))
    _say(f"done in {time.time() - t0:.0f}s: {out}/evaluation.csv, {out}/table_1.md, {out}/fig_1_f1.png")
    return {"rows": rows, "summary": summary}


# ------------------------------------------------------------------------------ outputs

def _fmt(v, pct=False, digits=None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if pct:
        return f"{100 * v:.1f}"
    return f"{v:.{digits or 2}f}"


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None or (isinstance(r.get(k), float) and math.isnan(r[k])) else r.get(k)) for k in CSV_FIELDS})


def markdown(rows: list[dict], models: list[str], train_day: str, args) -> str:
    by = {(r["day"], r["model"]): r for r in rows}
    days = sorted({r["day"] for r in rows}, key=lambda d: (d != train_day, d))
    head = ["day", "flows (attacks)"]
    for m in models:
        n = MODEL_NAMES[m]
        head += [f"{n} acc %", f"{n} prec %", f"{n} rec %", f"{n} F1", f"{n} ROC-AUC", f"{n} PR-AUC"]
    head += ["paper (AE F1 / LDA F1)"]
    lines = [
        f"# AE vs Spot's LDA, the paper's protocol (trained on {train_day})",
        "",
        f"Benign flows of {train_day} trained both models; threshold = 95th percentile of their benign scores "
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
                      _fmt(r.get("f1")), _fmt(r.get("roc_auc"), digits=3), _fmt(r.get("pr_auc"), digits=3)]
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
    lines += ["", "Per-day figures at fixed benign FPRs (0.1%, 1%, 5%) are in evaluation.csv.", ""]
    return "\n".join(lines)


def plot_f1(path: Path, rows: list[dict], models: list[str], train_day: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = sorted({r["day"] for r in rows if r["day"] != train_day})
    by = {(r["day"], r["model"]): r for r in rows}
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(days) + 2), 4.2))
    colours = {"ae": "#1f77b4", "lda": "#ff7f0e"}
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
    ax.set_title(f"F1 per test day, AE vs LDA (trained on {train_day})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
        return 0
    except SpotAEError as e:
        print(f"spot-ae evaluate: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a Spark failure: one line, the trace on request
        if os.environ.get("SPOT_AE_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:500]
        print(f"spot-ae evaluate: error: {type(e).__name__}: {first} (set SPOT_AE_DEBUG=1 for the full trace)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
