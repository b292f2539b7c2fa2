"""Scoring and training throughput of the ML job, printed (no assertions).

Builds a Parquet day of N flows by repeating the real rows of the CIC-IDS2018 excerpts, trains
a model with Elephas on local[2] (training flows/s), then scores the SAME rows in one run: the
job's two Spark scorers from Parquet (the JVM scorer, and the Arrow scorer: Arrow batches +
numpy), each giving a score only and keeping every column; the JVM scorer also on the same rows
stored without Parquet dictionaries and from rows (a filter in front of it); what bounds them (Spark reading the
columns with no scoring, the Arrow round trip with Python doing nothing); plain in-process numpy
doing the Arrow scorer's per-batch work (features + forward pass; and the forward pass alone);
Keras `predict` and Elephas' `predict` (on a slice, as they are orders of magnitude slower;
their rate is per row). Prints rates and ratios, and
peak memory (RSS of this process and its children, i.e. the JVM and Python workers).

    .venv/bin/python benchmarks/bench_score.py --rows 8000000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from spot_ae_job.cli import default_data  # noqa: E402
from spot_ae_job.context import CONTEXT_COLUMNS, add_context  # noqa: E402
from spot_ae_job.features import FEATURE_INPUTS, feature_matrix  # noqa: E402
from spot_ae_job.ingest.cicids import read_cicids  # noqa: E402
from spot_ae_job.model import forward, train_autoencoder  # noqa: E402
from spot_ae_job.schema import FLOW_COLUMNS  # noqa: E402
from spot_ae_job.score import score_flows  # noqa: E402
from spot_ae_job.spark import session  # noqa: E402


class PeakRSS:
    """Samples RSS of this process tree every 100 ms."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
                self.peak = max(self.peak, rss)
            except psutil.Error:
                pass
            time.sleep(0.1)

    def stop(self):
        self._stop.set()
        return self.peak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=8_000_000)
    ap.add_argument("--train-rows", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--slow-rows", type=int, default=100_000,
                    help="rows for Keras/Elephas predict (Elephas' fixed start-up cost makes a small slice look slower)")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--no-context", action="store_true", help="skip the ae-context model's rates")
    ap.add_argument("--context-only", action="store_true",
                    help="only the paper model's JVM scorer and the ae-context model, and their ratio (a shorter run)")
    a = ap.parse_args()
    if a.context_only and a.no_context:
        ap.error("--context-only and --no-context exclude each other")
    mem = PeakRSS()
    spark = session(a.master, app="bench-score")
    data = default_data() / "cicids2018"
    base = read_cicids(spark, [str(data / "aegmm__toy_dataset.csv"), str(data / "ishtiaq__DDOS_attack-LOIC-UDP.csv")]).flows
    base = base.select(*FLOW_COLUMNS).cache()
    n_base = base.count()
    reps = -(-a.rows // n_base)
    # Repeat the real rows, nudging byte counts so rows are not byte-identical copies.
    big = base.crossJoin(spark.range(reps).withColumnRenamed("id", "rep")).withColumn(
        "ibyt", F.col("ibyt") + F.col("rep") % 7
    ).drop("rep").limit(a.rows)
    tmp = tempfile.mkdtemp(prefix="bench-score-")
    pq = f"file://{tmp}/flows"
    big.repartition(4).write.parquet(pq)
    # The same rows without Parquet dictionaries: a real day has far more distinct values than
    # these repeated rows, and a column chunk whose dictionary overflows is stored plain.
    plain = f"file://{tmp}/flows-plain"
    if not a.context_only:
        spark.read.parquet(pq).write.option("parquet.enable.dictionary", "false").parquet(plain)
    base.unpersist()
    flows = spark.read.parquet(pq)
    n = flows.count()
    print(f"rows: {n:,} (real excerpt rows repeated {reps}x) in Parquet at {pq}")

    t = time.perf_counter()
    model = train_autoencoder(flows.limit(a.train_rows), epochs=a.epochs, progress=lambda m: None)
    dt = time.perf_counter() - t
    print(f"training (Elephas, {a.master}): {a.train_rows:,} rows x {a.epochs} epochs in {dt:.1f} s "
          f"= {a.train_rows * a.epochs / dt:,.0f} flow-epochs/s (includes threshold scoring)")

    # Spark from Parquet, two scorers x two outputs, every run forced by the noop sink:
    # "score only" = a score for every flow (what the threshold and ranking need; Parquet lets
    # Spark read just the 9 input columns); "all columns" = every flow column kept beside it.
    def rate(make) -> float:
        """Best of 5 after 2 warm-up runs: the JIT needs a few runs over the generated code and
        the scorer; a fresh JVM's first runs are up to half as fast (docs/scoring.md)."""
        for _ in range(2):
            make().write.format("noop").mode("overwrite").save()
        best = 0.0
        for _ in range(5):
            t = time.perf_counter()
            make().write.format("noop").mode("overwrite").save()
            best = max(best, n / (time.perf_counter() - t))
        return best

    day = lambda: spark.read.parquet(pq)  # noqa: E731
    spark_rates = {}
    for scorer in ("jvm",) if a.context_only else ("jvm", "arrow"):
        spark_rates[scorer, "score"] = rate(lambda: score_flows(model, day(), scorer=scorer, columns=[]))
        if a.context_only:
            print(f"spark jvm   scorer (Parquet -> score, {a.master}): score only {spark_rates[scorer, 'score']:,.0f} flows/s (best of 5)")
            break
        spark_rates[scorer, "all"] = rate(lambda: score_flows(model, day(), scorer=scorer))
        print(f"spark {scorer:5s} scorer (Parquet -> score, {a.master}): score only {spark_rates[scorer, 'score']:,.0f} flows/s, "
              f"all columns kept {spark_rates[scorer, 'all']:,.0f} flows/s (best of 5)")
    if not a.context_only:
        spark_rates["plain", "score"] = rate(lambda: score_flows(model, spark.read.parquet(plain), scorer="jvm", columns=[]))
        spark_rates["rows", "score"] = rate(lambda: score_flows(model, day().where("ipkt >= 0"), scorer="jvm", columns=[]))
        print(f"spark jvm   scorer, the same rows stored without Parquet dictionaries: {spark_rates['plain', 'score']:,.0f} flows/s; "
              f"from rows (a filter before it): {spark_rates['rows', 'score']:,.0f} flows/s (score only, best of 5)")
    spark_rate = spark_rates["jvm", "score"]

    # The host-context model (the default where flows carry IPs), same rows, same run: its cost is
    # the context step (context.py: two shuffles of the day's keys, numpy counts, one join back) plus the
    # same scorer on 29 inputs instead of 18 (the JVM scorer reads the 11 context columns from the
    # rows). Timed end to end from the flow Parquet, and from rows whose context was already
    # written (the scorer's part alone; and by the Arrow scorer, which scored this model before).
    ctx_rates = {}
    if not a.no_context:
        train_ctx = add_context(flows.limit(a.train_rows))
        ctx_model = train_autoencoder(train_ctx, epochs=a.epochs, progress=lambda m: None, variant="ae-context")
        ctx_pq = f"file://{tmp}/flows-context"
        add_context(day()).write.parquet(ctx_pq)

        def rate_few(make, runs=2) -> float:
            """Best of `runs` after one warm-up: each run sorts the whole day, so fewer runs."""
            make().write.format("noop").mode("overwrite").save()
            best = 0.0
            for _ in range(runs):
                t = time.perf_counter()
                make().write.format("noop").mode("overwrite").save()
                best = max(best, n / (time.perf_counter() - t))
            return best

        ctx_rates["end to end"] = rate_few(lambda: score_flows(ctx_model, add_context(day()), columns=[]))
        ctx_rates["context step"] = rate_few(lambda: add_context(day()).select(*CONTEXT_COLUMNS))
        ctx_rates["scorer, context given"] = rate(lambda: score_flows(ctx_model, spark.read.parquet(ctx_pq), columns=[]))
        ctx_rates["same, Arrow scorer"] = rate(lambda: score_flows(ctx_model, spark.read.parquet(ctx_pq), scorer="arrow", columns=[]))
        for k, v in ctx_rates.items():
            print(f"ae-context ({a.master}), {k:22s}: {v:,.0f} flows/s (score only)")
    if a.context_only:
        print(f"ratio ae-context / paper JVM scorer  : {ctx_rates['end to end'] / spark_rate:.3f} end to end (aim >= 0.3), "
              f"{ctx_rates['scorer, context given'] / spark_rate:.2f} with the context already computed")
        spark.stop()
        return

    # What bounds them, same rows, same run: Spark reading the columns with no scoring at all,
    # and the JVM -> Python -> JVM Arrow round trip of the 9 inputs with Python doing nothing.
    import pyarrow as pa

    def nothing(batches):
        for b in batches:
            yield pa.RecordBatch.from_arrays([pa.array(np.zeros(b.num_rows))], ["score"])

    floor = {
        "read 9 inputs": rate(lambda: day().select(*FEATURE_INPUTS)),
        "read all columns": rate(day),
        "arrow round trip, no work": rate(lambda: day().select(*FEATURE_INPUTS).mapInArrow(nothing, "score double")),
    }
    for k, v in floor.items():
        print(f"spark bound, {k:26s}: {v:,.0f} flows/s")

    # The same rows in this process, plain numpy: (a) the same work the scorer's batches do
    # (features from the Arrow input columns + forward pass), (b) the forward pass alone.
    import pyarrow.parquet as pq_

    table = pq_.read_table(pq.removeprefix("file://"), columns=FEATURE_INPUTS)
    w = [np.asarray(v, dtype=np.float32) for v in model.weights]
    batches = table.to_batches(max_chunksize=65536)

    def numpy_full():
        for b in batches:
            forward(w, model.scaler.transform(feature_matrix(b.to_pandas())))

    x = model.scaler.transform(np.vstack([feature_matrix(b.to_pandas()) for b in batches]))

    def numpy_forward():
        for i in range(0, len(x), 65536):
            forward(w, x[i : i + 65536])

    rates = {}
    for name, fn in (("full", numpy_full), ("forward", numpy_forward)):
        best = 0.0
        for _ in range(3):
            t = time.perf_counter()
            fn()
            best = max(best, len(x) / (time.perf_counter() - t))
        rates[name] = best
    numpy_rate = rates["full"]
    print(f"plain numpy in-process, features + forward from Arrow (1 process): {numpy_rate:,.0f} flows/s")
    print(f"plain numpy in-process, forward pass alone (1 process)          : {rates['forward']:,.0f} flows/s")

    xs = x[: a.slow_rows]
    net = model.keras()
    net.predict(xs[:1000], verbose=0)
    keras_rate = 0.0
    for _ in range(3):  # best of 3, as the Spark figures are best-of runs
        t = time.perf_counter()
        net.predict(xs, batch_size=32, verbose=0)
        keras_rate = max(keras_rate, len(xs) / (time.perf_counter() - t))
    print(f"keras predict (batch 32, in-process): {keras_rate:,.0f} flows/s on {len(xs):,} rows (best of 3)")

    from elephas.spark_model import SparkModel

    sm = SparkModel(net)
    rdd = spark.sparkContext.parallelize(list(xs), 2)
    t = time.perf_counter()
    preds = sm.predict(rdd)
    elephas_rate = len(preds) / (time.perf_counter() - t)
    print(f"elephas predict ({a.master}): {elephas_rate:,.0f} flows/s on {len(xs):,} rows")

    print()
    print("(the job's scorer = the JVM scorer, score only; the Arrow scorer and all-columns figures beside it)")
    print(f"ratio spark scorer / elephas predict : {spark_rate / elephas_rate:,.1f}x  (target >= 300x)")
    print(f"ratio spark scorer / keras predict   : {spark_rate / keras_rate:,.1f}x  (target >= 300x)")
    print(f"ratio spark scorer / numpy in-process: {spark_rate / numpy_rate:.2f}   (target >= 0.50; same work: features + forward)")
    print(f"ratio spark scorer / numpy forward   : {spark_rate / rates['forward']:.2f}   (the arithmetic alone)")
    print(f"ratio spark scorer, no dictionaries / elephas, keras: {spark_rates['plain', 'score'] / elephas_rate:,.1f}x, "
          f"{spark_rates['plain', 'score'] / keras_rate:,.1f}x")
    print(f"ratio JVM / Arrow scorer             : {spark_rate / spark_rates['arrow', 'score']:.2f}x score only, "
          f"{spark_rates['jvm', 'all'] / spark_rates['arrow', 'all']:.2f}x all columns")
    print(f"ratio Arrow scorer / its no-work trip: {spark_rates['arrow', 'score'] / floor['arrow round trip, no work']:.2f}")
    print(f"spark scorer absolute                : {spark_rate / 1e6:.2f} M flows/s score only, "
          f"{spark_rates['jvm', 'all'] / 1e6:.2f} M all columns (target >= 3 M on 2 cores)")
    if ctx_rates:
        print(f"ratio ae-context / paper JVM scorer  : {ctx_rates['end to end'] / spark_rate:.3f} end to end (aim >= 0.3), "
              f"{ctx_rates['scorer, context given'] / spark_rate:.2f} with the context already computed")
    print(f"peak RSS (driver + JVM + workers)    : {mem.stop() / 2**20:,.0f} MiB; cores: {os.cpu_count()}")
    spark.stop()


if __name__ == "__main__":
    main()
