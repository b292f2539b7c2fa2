"""What a full-size day costs: load, train, threshold, score, drift, result files, alerts (no assertions).

It measures COST, NOT DETECTION: the day is built from a few thousand real flows repeated, so its
scores, alerts and AUCs say nothing about how well any model detects anything.

The day (`--flows`, default 5.5 M, about one CIC-IDS2018 day) is built by Spark from the real
rows of `../shared/data/cicids2018/aegmm__toy_dataset.csv` (5,000 CICFlowMeter flows of the
"improved" extraction with IPs and timestamps, 1,275 hosts, 2,500 benign and 2,500 attack), in
that file's own CSV layout, as copies k = 0, 1, ... of the file:
- hosts re-numbered per copy: the source's distinct IPs, sorted, get indexes j = 0..1,274, and in
  copy k an IP becomes the address 10.0.0.0 + (k * 1,275 + j + 1). Copies share no host, so every
  host's flows, peers and ports are those of one real host of the excerpt: per-host context stays
  what it was, only counted on one day (the excerpt's rows come from 10 days);
- timestamps shifted per copy: a row keeps its clock time, moved to the bench day and shifted by
  k * 86,400 / copies seconds (wrapping at midnight), so the copies spread over the whole day
  instead of piling into the excerpt's hours, and a copy's flows keep their spacing;
- attack rows only in every 10th copy (k % 10 == 0): ~9% of the day, near a real CIC day's share
  (the excerpt is 50/50, which would make alerts and the suspicious view ten times a real day's);
- Flow ID follows the new addresses; every other column is the source's text, unchanged.
Spark writes it as CSV files (never through the driver), then `load_csv` (what `spot-ae load-csv`
runs: the CIC reader, validation, quarantine, the partitioned flow table and its labelled twin)
loads it, and the day runs as `ml-ops` runs it (`mlops.obtain_model` = train + save, then
`mlops.score_day` = read, score, write results, drift, alerts, incidents), with the default model (`auto`:
ae-context for these flows) and with `--model lda`. After each end-to-end run, each stage is run
once more on its own and forced (Spark's noop sink where it writes nothing) for the breakdown:
features of the day, scoring, drift, alerts. Training's own split (prepare, epochs, threshold,
references) is what the model records in `meta["timings"]`.

Per stage: wall time, flows/s, and peak memory (PSS) of the driver (this Python process), the JVM and the
Python workers (sampled every 0.5 s). The day is never collected: only counts, the model and the
small summaries ml-ops itself collects reach the driver.

`--evaluate-days N` then runs `spot-ae evaluate` (evaluate.run, all three models, its defaults)
over N more days of `--evaluate-flows` flows in all (default 10 days, 16 M flows), built the same
way with dates following the bench day's, and prints its time, its own timings and peak memory;
`--models=` skips the bench day and its ml-ops. The day's rows are split over several CSV files by Spark, so they are
pooled into one day per date (`--pool-files`), not split per file.

    .venv/bin/python benchmarks/bench_day.py --flows 200000          # small (CI, a shared machine)
    .venv/bin/python benchmarks/bench_day.py                         # 5.5 M flows: an idle machine; ~40 min with --models auto
    .venv/bin/python benchmarks/bench_day.py --models= --evaluate-days 10 --evaluate-flows 16000000
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import StringType, StructField, StructType  # noqa: E402

from spot_ae_job import drift, evaluate, mlops, registry  # noqa: E402
from spot_ae_job.alerts import write_alerts  # noqa: E402
from spot_ae_job.cli import default_data  # noqa: E402
from spot_ae_job.ingest.flowtable import load_csv  # noqa: E402
from spot_ae_job.layout import SCORE, Day, Layout  # noqa: E402
from spot_ae_job.model import variant_features  # noqa: E402
from spot_ae_job.spark import session  # noqa: E402

SOURCE = "cicids2018/aegmm__toy_dataset.csv"
ATTACK_EVERY = 10
GOAL_MINUTES, GOAL_GIB = 60, 12


class Memory:
    """Peak memory of the driver, the JVM and the Python workers, sampled every 0.5 s; `mark()` starts
    a new stage's peaks (the whole run's are kept too). PSS, not RSS: PySpark forks its workers from
    one daemon, and RSS would count the pages they share once per worker."""

    def __init__(self):
        self.stage = {"driver": 0, "jvm": 0, "workers": 0, "total": 0}
        self.run = dict(self.stage)
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def sample(self) -> dict:
        me = psutil.Process()
        got = {"driver": me.memory_full_info().pss, "jvm": 0, "workers": 0}
        for c in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                pss = c.memory_full_info().pss
                got["jvm" if c.name() == "java" else "workers"] += pss
        got["total"] = sum(got.values())
        return got

    def _loop(self):
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                for k, v in self.sample().items():
                    self.stage[k] = max(self.stage[k], v)
                    self.run[k] = max(self.run[k], v)
            time.sleep(0.5)

    def mark(self) -> dict:
        peaks, self.stage = self.stage, {k: 0 for k in self.stage}
        return peaks

    def stop(self) -> dict:
        self._stop.set()
        return self.run


def build_day(spark, out_dir: str, flows: int, day: Day) -> int:
    """The bench day as CSV files under out_dir (module docstring: how); returns its flow count."""
    src = pd.read_csv(default_data() / SOURCE, dtype=str, keep_default_na=False)  # the 5,000-row source file
    ips = sorted(set(src["Src IP"]) | set(src["Dst IP"]))
    per_copy = (src["Label"] == "BENIGN").sum()
    attacks = len(src) - per_copy
    # smallest number of copies reaching `flows` (attack rows in every ATTACK_EVERY-th copy)
    copies = 1
    while copies * per_copy + math.ceil(copies / ATTACK_EVERY) * attacks < flows:
        copies += 1
    schema = StructType([StructField(c, StringType()) for c in src.columns])
    base = spark.createDataFrame(src, schema)
    index = spark.createDataFrame(pd.DataFrame({"ip": ips, "j": range(len(ips))}))
    k = F.col("k")

    def address(ip_col: str):
        n = k * len(ips) + F.col(ip_col) + 1
        return F.concat_ws(".", F.lit("10"), F.shiftright(n, 16) % 256, F.shiftright(n, 8) % 256, n % 256)

    start = int(pd.Timestamp(f"{day.year:04d}-{day.month:02d}-{day.day:02d}", tz="UTC").timestamp())
    ts = F.to_timestamp("Timestamp")
    clock = F.unix_micros(ts) / 1e6 - F.unix_timestamp(F.date_trunc("day", ts))
    shift = k * (86400.0 / copies)
    new_ts = F.timestamp_micros(((F.lit(start) + (clock + shift) % 86400) * 1e6).cast("long"))
    day_rows = (
        base.join(F.broadcast(index.withColumnRenamed("ip", "Src IP").withColumnRenamed("j", "js")), "Src IP")
        .join(F.broadcast(index.withColumnRenamed("ip", "Dst IP").withColumnRenamed("j", "jd")), "Dst IP")
        .crossJoin(spark.range(copies).withColumnRenamed("id", "k").repartition(max(2, copies // 50)))
        .where((F.col("Label") == "BENIGN") | (k % ATTACK_EVERY == 0))
        .withColumn("Src IP", address("js")).withColumn("Dst IP", address("jd"))
        .withColumn("Timestamp", F.date_format(new_ts, "yyyy-MM-dd HH:mm:ss.SSSSSS"))
        .withColumn("Flow ID", F.concat_ws("-", "Src IP", "Dst IP", "Src Port", "Dst Port", "Protocol"))
        .withColumn("id", F.concat_ws("-", "k", "id"))
        .select(*src.columns)
    )
    day_rows.write.option("header", True).csv(out_dir)
    return copies * per_copy + math.ceil(copies / ATTACK_EVERY) * attacks


def bench_ml_ops(spark, stage, rows: list, layout: Layout, work: Path, day: Day, a, models: list[str], results: dict) -> None:
    """The bench day built and loaded, then `ml-ops` end to end per model and each stage again on its own."""
    print(f"bench day {day}: ~{a.flows:,} flows from {SOURCE}, work folder {work}, {a.master}; measures cost, not detection")
    csv_dir = f"file://{work}/csv"
    n_day = stage("build the day's CSVs (not a pipeline stage)", lambda: build_day(spark, csv_dir, a.flows, day), a.flows)
    stage("load (load-csv: CIC reader -> flow table)", lambda: load_csv(spark, layout.huser, csv_dir, None, say=lambda m: None), n_day)
    n_day = mlops.read_day(spark, layout, day).count()
    print(f"  the day in the flow table: {n_day:,} flows")

    quiet = lambda m: None  # noqa: E731
    results["flows"] = n_day
    for choice in models:
        opts = mlops.RunOptions(model=choice, train=registry.TrainOptions(epochs=a.epochs))
        print(f"\nml-ops {day} flow --model {choice} (end to end, as ml_ops runs it):")
        first = len(rows)
        model = stage("train + threshold + save (obtain_model)", lambda: mlops.obtain_model(spark, layout, day, opts, quiet), n_day)
        summary = stage("score + results + drift + alerts + incidents (score_day)",
                        lambda: mlops.score_day(spark, layout, day, model, opts, quiet), n_day)
        e2e = sum(r["seconds"] for r in rows[first:])
        peak = max(r["peak_total_mib"] for r in rows[first:])
        print(f"  = ml-ops end to end: {e2e / 60:.1f} min, {n_day / e2e:,.0f} flows/s; peak {peak / 1024:.1f} GiB "
              f"(goal <= {GOAL_MINUTES} min and <= {GOAL_GIB} GiB: "
              f"{'MET' if e2e <= GOAL_MINUTES * 60 and peak <= GOAL_GIB * 1024 else 'MISSED'})")
        t = model.meta.get("timings")
        if t:
            print(f"  training's own split: prepare {t['prepare_s']} s, epochs {t['epochs_s']} s "
                  f"({model.meta.get('epochs_run')} epochs, batch {model.meta.get('batch_size')}, "
                  f"{model.meta.get('training_rows'):,} rows), threshold {t['threshold_s']} s, references {t['references_s']} s")
        print("  breakdown, each stage again on its own:")
        flows = mlops.read_day(spark, layout, day)
        if model.kind != registry.LDA_KIND:
            stage("features of the day (noop sink)",
                  lambda: variant_features(flows, model.kind).write.format("noop").mode("overwrite").save(), n_day)
        stage("scoring (score_valid, noop sink)",
              lambda: mlops.score_valid(model, flows)[0].write.format("noop").mode("overwrite").save(), n_day)
        res = layout.results(day)
        stored = spark.read.parquet(res.all_scores)
        if model.meta.get("drift_reference"):
            stage("drift (against the training data)",
                  lambda: drift.measure(model.meta["drift_reference"], drift.named_features(stored, keep=(SCORE,))), n_day)
        stage("alerts (ECS documents of the suspicious flows)",
              lambda: write_alerts(spark, stored, model, str(day), layout.huser, summary.threshold,
                                   summary.threshold_mode, progress=quiet), n_day)
        results["models"][choice] = {"kind": model.kind, "end_to_end_s": e2e, "peak_mib": peak,
                                     "suspicious": summary.suspicious, "timings": t, "stages": rows[first:]}


def bench_evaluate(spark, stage, work: Path, day: Day, a) -> dict:
    """`spot-ae evaluate` over `a.evaluate_days` days built like the bench day, dates after it."""
    per_day = a.evaluate_flows // a.evaluate_days
    first = dt.date(day.year, day.month, day.day) + dt.timedelta(days=1)
    dirs = [f"file://{work}/eval-csv/{first + dt.timedelta(days=i):%Y%m%d}" for i in range(a.evaluate_days)]
    print(f"\nevaluate over {a.evaluate_days} days of ~{per_day:,} flows each, from {first}:")
    n = sum(stage(f"build {Path(d).name}'s CSVs (not a pipeline stage)",
                  lambda d=d: build_day(spark, d, per_day, Day.parse(Path(d).name)), per_day) for d in dirs)
    data = [x for d in dirs for x in ("--data", d)]
    args = evaluate.parser().parse_args([*data, "--pool-files", "--out", f"{work}/evaluation", "--master", a.master,
                                         "--epochs", str(a.epochs)])
    out = stage("spot-ae evaluate (all models, every day)", lambda: evaluate.run(args), n)
    summary = out["summary"]
    print(f"  evaluate's own timings (s): {summary['timings_s']}")
    print(f"  days {len(summary['days'])}, training day {summary['train_day']}, "
          f"rows {sum(d['flows'] for d in summary['days'].values()):,}")
    return {"flows": n, "days": a.evaluate_days, "timings_s": summary["timings_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--flows", type=int, default=5_500_000, help="about this many flows (default 5.5 M)")
    ap.add_argument("--day", default="20180305", help="the bench day's date (default 20180305)")
    ap.add_argument("--models", default="auto,lda", help="comma-separated registry choices (default auto,lda)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--epochs", type=int, default=90)
    ap.add_argument("--work", default=None, help="folder for the CSVs and the flow table (default: a temporary one, removed)")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    ap.add_argument("--evaluate-days", type=int, default=0, help="then evaluate over this many more days (0: not)")
    ap.add_argument("--evaluate-flows", type=int, default=16_000_000, help="flows of those days together (default 16 M)")
    a = ap.parse_args()
    if a.flows < 10_000:
        sys.exit("bench_day: --flows must be at least 10000")
    day = Day.parse(a.day)
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-day-"))
    work.mkdir(parents=True, exist_ok=True)
    layout = Layout(f"file://{work}/spot")
    mem = Memory()
    spark = session(a.master, app="bench-day")
    rows: list[dict] = []

    def stage(name: str, fn, flows: int | None):
        mem.mark()
        t = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t
        peaks = mem.mark()
        rows.append({"stage": name, "seconds": secs, "flows": flows, "flows_per_s": flows / secs if flows else None,
                     **{f"peak_{k}_mib": v / 2**20 for k, v in peaks.items()}})
        rate = f"{flows / secs:>12,.0f}" if flows else f"{'':>12}"
        print(f"  {name:44s} {secs:9.1f} s {rate} flows/s   peak MiB: driver {peaks['driver'] / 2**20:6,.0f}  "
              f"JVM {peaks['jvm'] / 2**20:6,.0f}  workers {peaks['workers'] / 2**20:6,.0f}  all {peaks['total'] / 2**20:6,.0f}",
              flush=True)
        return out

    models = [m for m in a.models.split(",") if m]
    results: dict = {"day": str(day), "master": a.master, "models": {}}
    if models:  # --models= : only the evaluate part
        bench_ml_ops(spark, stage, rows, layout, work, day, a, models, results)
    if a.evaluate_days:
        results["evaluate"] = bench_evaluate(spark, stage, work, day, a)
    results["stages"] = rows
    run_peak = mem.stop()
    print(f"\npeak memory (PSS) of the whole run: driver {run_peak['driver'] / 2**20:,.0f} MiB, JVM {run_peak['jvm'] / 2**20:,.0f} MiB, "
          f"Python workers {run_peak['workers'] / 2**20:,.0f} MiB, together {run_peak['total'] / 2**20:,.0f} MiB; "
          f"cores: {os.cpu_count()}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(results, indent=1, default=str))
        print(f"figures: {a.out}")
    spark.stop()
    if not a.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
