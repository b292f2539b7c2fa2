"""Continuous scoring: Spark Structured Streaming follows the flow table and scores each new file.

Source: Spark's file source on the table's Parquet files (`{huser}/flow/hive/y=/m=/d=/h=/*.parquet`)
with the one flow schema plus the partition columns; Spark discovers the `y=/m=/d=/h=` directories
itself, including hours created after the query started. Ingest commits each file by an atomic
rename from a hidden name, so the source never sees half a file.

Sink: `foreachBatch`. Each micro-batch is scored with the model LATEST names (re-read before every
batch: a newly trained model scores from the next micro-batch on) and written, per day, under
`scored_results/YYYYMMDD/stream/`:

    all_scores/batch=<id>/    every flow: flow columns, y/m/d/h, score, suspicious, model_version
    suspicious/batch=<id>/    the flagged flows only, in Spot's result columns + model_version
    rejected/batch=<id>/      rows the model must not see, with the reason (quarantine, not loss)

Exactly once: the file source logs which files make batch N in the checkpoint (on HDFS) before N
runs, and a restarted query re-runs an uncommitted N with the same files. Every output of N is
written in `overwrite` mode to a directory named by N, so a re-run replaces what a crash left
instead of adding to it. Readers (the OA) take a batch directory only once Spark's `_SUCCESS`
marker is in it.
"""
from __future__ import annotations

import functools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from spot_ae_job import fsutil, incidents
from spot_ae_job.alerts import write_alerts
from spot_ae_job.context import WINDOWS, add_context
from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import MODEL_VERSION, SCORE, Day, Layout
from spot_ae_job.mlops import model_facts, validate_rows
from spot_ae_job.model import AEModel
from spot_ae_job.schema import FLOW_COLUMNS, PARTITION_COLUMNS, PARTITIONED_FLOW_SCHEMA, RESULT_COLUMNS
from spot_ae_job.score import flag_suspicious

APP_NAME = "spot-ae-stream"  # the name the ResourceManager UI shows
BATCH_ID = "batch_id"
DAY = "_day"
# Days of one micro-batch written side by side (a backlog, or the stream catching up after a stop,
# spans several): a day's writes are ~20 small Spark jobs (results, alerts, incidents, run.json)
# that wait mostly on scheduling round trips, and Spark's scheduler runs the jobs of
# several driver threads at once.
DAY_WRITERS = 2


def stream_location(day: str, huser: str) -> str:
    return Layout(huser).results(Day.parse(day)).stream


def default_checkpoint(huser: str) -> str:
    return Layout(huser).stream_checkpoint


@dataclass
class StreamOptions:
    huser: str
    checkpoint: str | None = None
    trigger_seconds: float = 10.0
    max_files_per_trigger: int = 100
    model_poll_seconds: float = 30.0
    available_now: bool = False  # process what is there, then stop (catch-up runs, tests)


class ModelFollower:
    """The model LATEST names, reloaded only when LATEST changes (one small read per batch)."""

    def __init__(self, spark: SparkSession, huser: str, say: Callable[[str], None] = print):
        self.spark, self.models, self.say = spark, Layout(huser).models, say
        self.model: AEModel | None = None

    def latest_version(self) -> str | None:
        pointer = f"{self.models}/LATEST"
        if not fsutil.exists(self.spark, pointer):
            return None
        return fsutil.read_text(self.spark, pointer).strip() or None

    def current(self) -> AEModel:
        version = self.latest_version()
        if version is None:
            if self.model is None:
                raise SpotAEError(f"no trained model under {self.models}")
            return self.model  # LATEST vanished (being rewritten): keep scoring with what we have
        if self.model is None or self.model.version != version:
            was = self.model.version if self.model else None
            self.model = AEModel.load(self.spark, self.models, version)
            self.say(f"model {version} loaded" + (f" (was {was})" if was else ""))
        return self.model

    def wait(self, poll_seconds: float, give_up_after: float | None = None) -> AEModel:
        """Block until a model exists: a stream started before the first training waits, logging."""
        t0 = time.monotonic()
        while self.latest_version() is None:
            if give_up_after is not None and time.monotonic() - t0 > give_up_after:
                raise SpotAEError(f"no trained model under {self.models} after {give_up_after:.0f} s")
            self.say(f"no model yet under {self.models}: waiting {poll_seconds:.0f} s "
                     "(train one with `spot-ae ml-ops YYYYMMDD flow` or `spot-ae train`)")
            time.sleep(poll_seconds)
        return self.current()


def _write_alerts(spark: SparkSession, suspicious: DataFrame, model: AEModel, day: str, huser: str, batch_id: int) -> None:
    # The one place alerts are written, once per micro-batch and day. `suspicious` carries
    # batch_id: a re-run of the same batch after a crash calls this again with the same rows, so
    # the batch's alerts go to their own batch=<id> directory, overwritten.
    write_alerts(spark, suspicious, model, day, huser, batch_id=batch_id)


class BatchScorer:
    """The foreachBatch function: score one micro-batch and write it per day, idempotently."""

    def __init__(self, huser: str, models: ModelFollower, say: Callable[[str], None] = print):
        self.huser, self.models, self.say = huser, models, say

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        t0 = time.monotonic()
        model = self.models.current()
        day = F.format_string("%04d%02d%02d", F.col("y"), F.col("m"), F.col("d"))
        rows = batch.withColumn(DAY, day).persist()
        try:
            good, rejects = validate_rows(rows)
            if not model.scores_each_row_alone:  # host context counts the day's earlier flows too
                good = self._with_context(spark, good)
            scored = (flag_suspicious(model.score(good), model.threshold, model.higher_is_suspicious)
                      .withColumn(MODEL_VERSION, F.lit(model.version))
                      .withColumn(BATCH_ID, F.lit(batch_id).cast("long")))
            scored = scored.select(*FLOW_COLUMNS, *PARTITION_COLUMNS, SCORE, "suspicious", MODEL_VERSION, BATCH_ID, DAY).persist()
            counts = {r[DAY]: (r["n"], r["s"]) for r in scored.groupBy(DAY).agg(
                F.count("*").alias("n"), F.sum(F.col("suspicious").cast("int")).alias("s")).collect()}
            rejected = {r[DAY]: r["count"] for r in rejects.groupBy(DAY).count().collect()}
            # decorated here: each writer thread runs its jobs with this thread's local properties
            # (the streaming query's job group, so stopping the query cancels them too)
            write = inheritable_thread_target(lambda d: self._write_day(
                spark, scored.where(F.col(DAY) == d).drop(DAY), rejects.where(F.col(DAY) == d).drop(DAY),
                model, d, batch_id, rejected.get(d, 0)))
            with ThreadPoolExecutor(DAY_WRITERS) as pool:
                list(pool.map(write, sorted(set(counts) | set(rejected))))  # list(): a day's error is raised here
            scored.unpersist()
        finally:
            rows.unpersist()
        n = sum(c[0] for c in counts.values())
        s = sum(c[1] or 0 for c in counts.values())
        self.say(f"batch {batch_id}: {n} flows scored with {model.version}, {s} suspicious, "
                 f"{sum(rejected.values())} rejected, days {sorted(counts) or sorted(rejected)} "
                 f"({time.monotonic() - t0:.1f} s)")

    def _with_context(self, spark: SparkSession, good: DataFrame) -> DataFrame:
        """The batch's flows + host context counted against the flow table's flows of the same day
        and minutes (earlier batches included), so a streamed flow gets the value a batch run of
        its day gives it (context.py: the windows look back at most 59 minutes). One pass for all
        the batch's days: the day is a key, and only those days' partitions are read."""
        r = good.agg(F.min("unix_tstamp").alias("lo"), F.max("unix_tstamp").alias("hi"),
                     F.collect_set(DAY).alias("days")).first()
        if r["lo"] is None:
            return add_context(good)
        lo, hi = (r["lo"] // 60 - (WINDOWS["1h"] - 1)) * 60, (r["hi"] // 60 + 1) * 60
        days = [Day.parse(d) for d in r["days"]]
        on_days = functools.reduce(lambda a, b: a | b, [(F.col("y") == d.year) & (F.col("m") == d.month) & (F.col("d") == d.day)
                                                        for d in days])
        table = spark.read.schema(PARTITIONED_FLOW_SCHEMA).parquet(Layout(self.huser).flow_table)
        earlier = (table.where(on_days & F.col("unix_tstamp").between(lo, hi - 1))  # partition columns: only those days are read
                   .withColumn(DAY, F.format_string("%04d%02d%02d", F.col("y"), F.col("m"), F.col("d"))))
        return add_context(good, universe=validate_rows(earlier)[0], by=(DAY,))

    def _write_day(self, spark, scored: DataFrame, rejects: DataFrame, model: AEModel, day: str,
                   batch_id: int, n_rejected: int) -> None:
        paths = Layout(self.huser).results(Day.parse(day))
        name = f"batch={batch_id}"
        # all_scores first, suspicious last: the OA lists suspicious/, so a batch shows there only
        # once everything else of it is in place.
        scored.write.mode("overwrite").parquet(f"{paths.stream_all_scores}/{name}")
        # Then every later step reads the batch back, as a batch run reads its all_scores/, and
        # plans over a file scan instead of the batch's own plan (context over the table's earlier
        # flows, the scorer), which the incidents stage would join a dozen times more. Without
        # this the driver (1 GB) ran out of heap in those joins on the 11th day of a backlog batch.
        scored = spark.read.parquet(f"{paths.stream_all_scores}/{name}")
        if n_rejected:
            rejects.write.mode("overwrite").parquet(f"{paths.stream_rejected}/{name}")
        else:
            fsutil.delete(spark, f"{paths.stream_rejected}/{name}")  # a crashed attempt may have left one
        flagged = scored.where("suspicious")
        flagged.select(*RESULT_COLUMNS, MODEL_VERSION, BATCH_ID).coalesce(1) \
            .write.mode("overwrite").parquet(f"{paths.stream_suspicious}/{name}")
        _write_alerts(spark, flagged, model, day, self.huser, batch_id)
        touched = incidents.extend_stream(spark, scored, model, day, self.huser, batch_id, progress=self.say)
        facts = model_facts(model, Day.parse(day), model.threshold,
                            {"threshold_mode": model.meta.get("threshold_mode"), "threshold_value": model.meta.get("threshold_value")})
        fsutil.write_text(spark, paths.stream_run_json,
                          json.dumps({**facts, "streamed": True, "last_batch": batch_id,
                                      "incidents": touched}, indent=2))


def flow_stream(spark: SparkSession, huser: str, max_files_per_trigger: int) -> DataFrame:
    """The flow table as a stream. The schema is given (a streaming file source cannot infer it
    safely); the partition columns in it are filled from the y=/m=/d=/h= directory names."""
    table = Layout(huser).flow_table
    fs, p = fsutil._fs(spark, table)
    fs.mkdirs(p)  # the source needs its directory to exist when the query starts
    return (spark.readStream.schema(PARTITIONED_FLOW_SCHEMA)
            .option("maxFilesPerTrigger", max_files_per_trigger)
            .parquet(table))


def start(spark: SparkSession, opts: StreamOptions, say: Callable[[str], None] = print):
    """Wait for a model, then start the query; returns the StreamingQuery."""
    follower = ModelFollower(spark, opts.huser, say)
    model = follower.wait(opts.model_poll_seconds)
    checkpoint = opts.checkpoint or default_checkpoint(opts.huser)
    if not spark.sparkContext.getConf().contains("spark.sql.shuffle.partitions"):
        # Adaptive execution, which coalesces a batch job's shuffles, is off in streaming: a
        # micro-batch would run Spark's 200 shuffle tasks per window for a few thousand flows.
        spark.conf.set("spark.sql.shuffle.partitions", str(max(2, spark.sparkContext.defaultParallelism)))
    writer = (flow_stream(spark, opts.huser, opts.max_files_per_trigger).writeStream
              .queryName(APP_NAME)
              .foreachBatch(BatchScorer(opts.huser, follower, say))
              .option("checkpointLocation", checkpoint))
    if opts.available_now:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=f"{opts.trigger_seconds:g} seconds")
    say(f"following {Layout(opts.huser).flow_table} (model {model.version}, checkpoint {checkpoint}, "
        f"{'until caught up' if opts.available_now else f'every {opts.trigger_seconds:g} s'}, "
        f"at most {opts.max_files_per_trigger} files per batch)")
    return writer.start()
