"""Training throughput and convergence of the autoencoder, printed against issue 23's goals (no assertions).

Rows: the benign rows of every CIC-IDS2018 excerpt in `../shared/data/cicids2018` (9,470 real
flows) repeated to `--rows`, byte counts nudged per copy as bench_score.py does, written to Parquet,
and turned into the paper model's 18 scaled features and the training job's cached blocks once.
Every run below trains on those SAME blocks (same partitions, same validation rows: the last 20%
of each partition), from the same initial weights, on `--master` (default local[2]):

  before     today's settings through today's loop (kept here, as it was in model.py): Elephas'
             `SparkModel.fit` once per epoch, an RDD of one pickled (row, row) pair per flow,
             batch 32, Keras' validation_split; `--legacy-epochs` of them (90 = the full curve)
  batch 32   the job's loop (model.elephas_train) at batch 32 for all 90 epochs, no stopping:
             the reference loss ("today's batch-32, 90-epoch loss"), same algorithm as `before`
  after      the job's defaults: batch from the data size (model.auto_batch_size), stopping on
             convergence (model.Convergence), the paper's 90 epochs as the cap
  keras fit  in-process Keras `fit` (one process, one model, no Spark) on the same training rows
             and the same batch sizes, `--keras-epochs` epochs: the ceiling Elephas adds to;
             compiled as the job compiles it, and with steps_per_execution=64 (Keras' own way
             to run many batches per call into TensorFlow, as the job's loop runs an epoch)

Validation losses are all the same quantity: the mean squared reconstruction error of the
averaged (driver) weights after an epoch on the same validation rows. The rows are repeats of
9,470 flows, so validation rows have copies in the training rows: the curves show optimisation
(convergence), not generalisation, and this bench says nothing about detection.

A flow-epoch is one training row (the 80% not held for validation) passed through one epoch;
rates are wall-clock, including Spark jobs, broadcasts and validation passes.

    .venv/bin/python benchmarks/bench_train.py                     # 200,000 rows (make bench BENCH=train)
    .venv/bin/python benchmarks/bench_train.py --rows 20000 --legacy-epochs 90 --out var/bench-train.json
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_score import PeakRSS  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spot_ae_job.cli import default_data  # noqa: E402
from spot_ae_job.features import FEATURE_COLUMNS, Scaler, add_features  # noqa: E402
from spot_ae_job.ingest.cicids import read_cicids  # noqa: E402
from spot_ae_job.model import (  # noqa: E402
    DEFAULT_EPOCHS, PATIENCE, _split_validation, auto_batch_size, build_network, elephas_train, forward, training_blocks,
)
from spot_ae_job.schema import FLOW_COLUMNS  # noqa: E402
from spot_ae_job.spark import session  # noqa: E402

VALIDATION = 0.2
GOAL_KERAS_SHARE, GOAL_RATE, GOAL_LOSS = 0.5, 100_000, 0.05


def legacy_train(blocks, n_inputs: int, epochs: int, seed: int, val_rows: np.ndarray):
    """Today's loop before issue 23 (model.py at main 71f7ef6): one Elephas `fit(epochs=1)` per
    epoch over an RDD of (row, row) pairs, batch 32, Keras' validation_split. Its rows come from the
    same blocks in the same order, so Keras holds out the same validation rows."""
    from elephas.spark_model import SparkModel

    pairs = blocks.flatMap(lambda b: ((r, r) for r in b)).cache()
    pairs.count()
    net = build_network(seed, n_inputs)
    sm = SparkModel(net, num_workers=None, batch_size=32)
    curve = []
    t = time.perf_counter()
    for _ in range(epochs):
        with contextlib.redirect_stdout(io.StringIO()):
            sm.fit(pairs, epochs=1, batch_size=32, verbose=0, validation_split=VALIDATION, shuffle=True)
        curve.append(val_loss(sm.master_network.get_weights(), val_rows))
    dt = time.perf_counter() - t
    pairs.unpersist()
    return curve, dt


def val_loss(weights, x: np.ndarray) -> float:
    return float(forward([np.asarray(w, dtype=np.float32) for w in weights], x).mean())


def keras_fit_rate(x: np.ndarray, batch_size: int, epochs: int, seed: int, steps_per_execution: bool) -> float:
    """In-process Keras fit on x (one process, all its threads), flow-epochs/s, after a warm-up epoch."""
    import keras

    net = build_network(seed, x.shape[1])
    if steps_per_execution:  # Keras running 64 batches per call into TensorFlow, as the job's loop runs a whole epoch
        net.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse", steps_per_execution=64)
    net.fit(x[: max(batch_size * 4, 1000)], x[: max(batch_size * 4, 1000)], epochs=1, batch_size=batch_size, verbose=0)
    t = time.perf_counter()
    net.fit(x, x, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return len(x) * epochs / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="the cap, and the reference run's epochs")
    ap.add_argument("--legacy-epochs", type=int, default=3, help="epochs of today's loop (90 for its full curve)")
    ap.add_argument("--keras-epochs", type=int, default=3)
    ap.add_argument("--patience", type=int, default=PATIENCE)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default=None, help="write every curve and figure as JSON here")
    a = ap.parse_args()
    mem = PeakRSS()
    spark = session(a.master, app="bench-train")
    data = default_data() / "cicids2018"
    base = read_cicids(spark, str(data)).flows.where(~F.col("is_attack")).select(*FLOW_COLUMNS).cache()
    n_base = base.count()
    reps = -(-a.rows // n_base)
    big = base.crossJoin(spark.range(reps).withColumnRenamed("id", "rep")).withColumn(
        "ibyt", F.col("ibyt") + F.col("rep") % 7).drop("rep").limit(a.rows)
    tmp = tempfile.mkdtemp(prefix="bench-train-")
    big.write.parquet(f"file://{tmp}/flows")
    base.unpersist()
    feats = add_features(spark.read.parquet(f"file://{tmp}/flows")).select(*FEATURE_COLUMNS).cache()
    n = feats.count()
    scaler = Scaler.fit(feats, FEATURE_COLUMNS)
    workers = spark.sparkContext.defaultParallelism
    t = time.perf_counter()
    blocks = training_blocks(feats, scaler, workers, a.seed)
    n_rows = int(blocks.map(len).sum())
    t_blocks = time.perf_counter() - t
    parts = blocks.mapPartitions(lambda it: [np.concatenate(list(it))]).collect()  # bench only: rows for Keras and validation
    train_x = np.concatenate([_split_validation(p, VALIDATION)[0] for p in parts])
    val_x = np.concatenate([_split_validation(p, VALIDATION)[1] for p in parts])
    n_fit = len(train_x)
    auto = auto_batch_size(n_fit // workers)
    print(f"rows: {n:,} ({n_base:,} real benign CIC-IDS2018 flows repeated {reps}x), {workers} partitions on {a.master}; "
          f"{n_fit:,} training + {len(val_x):,} validation rows; blocks built and cached in {t_blocks:.1f} s")
    print(f"batch size the job picks for {n_fit // workers:,} training rows a worker: {auto}")
    init = build_network(a.seed, 18).get_weights()
    res: dict = {"rows": n, "training_rows": n_fit, "validation_rows": len(val_x), "master": a.master,
                 "auto_batch": auto, "initial_val_loss": val_loss(init, val_x)}

    def job_loop(batch_size, patience, label):
        net = build_network(a.seed, 18)
        t = time.perf_counter()
        weights, hist, facts = elephas_train(blocks, net, epochs=a.epochs, batch_size=batch_size,
                                             validation_split=VALIDATION, patience=patience, progress=lambda m: None)
        dt = time.perf_counter() - t
        rate = n_fit * len(hist) / dt
        final = val_loss(weights, val_x)
        print(f"{label:10s}: batch {batch_size}, {len(hist)} epochs (best {facts['best_epoch']}) in {dt:,.1f} s = "
              f"{rate:,.0f} flow-epochs/s; final validation loss {final:.6f}")
        return {"batch": batch_size, "seconds": dt, "rate": rate, "curve": [h["val_loss"] for h in hist],
                "train_loss": [h["loss"] for h in hist], "final_val_loss": final, **facts}

    # keras first: the Spark runs below leave Python workers and a JVM busy in the background
    keras = {}
    for bs in sorted({32, auto}):
        keras[bs] = {"steps_per_execution": keras_fit_rate(train_x, bs, a.keras_epochs, a.seed, True),
                     "keras_default": keras_fit_rate(train_x, bs, a.keras_epochs, a.seed, False)}
        print(f"keras fit : batch {bs}, in-process, {a.keras_epochs} epochs: {keras[bs]['keras_default']:,.0f} "
              f"flow-epochs/s compiled as the job compiles, {keras[bs]['steps_per_execution']:,.0f} with "
              f"steps_per_execution=64")
    res["keras_fit"] = keras

    legacy_curve, legacy_s = legacy_train(blocks, 18, a.legacy_epochs, a.seed, val_x)
    res["before"] = {"batch": 32, "epochs": a.legacy_epochs, "seconds": legacy_s,
                     "rate": n_fit * a.legacy_epochs / legacy_s, "curve": legacy_curve}
    print(f"before    : batch 32, {a.legacy_epochs} epochs of today's loop in {legacy_s:,.1f} s = "
          f"{res['before']['rate']:,.0f} flow-epochs/s; validation loss after them {legacy_curve[-1]:.6f}")
    res["batch32"] = job_loop(32, 0, "batch 32")
    res["after"] = job_loop(auto, a.patience, "after")

    # per-epoch fixed cost of the job's loop: an epoch's Spark job with no training (broadcast,
    # tasks, validation forward pass), the floor under every epoch
    net = build_network(a.seed, 18)
    t = time.perf_counter()
    elephas_train(blocks.context.parallelize([np.zeros((0, 18), np.float32)] * workers, workers), net, epochs=5,
                  batch_size=32, validation_split=VALIDATION, patience=0, progress=lambda m: None)
    res["empty_epoch_seconds"] = (time.perf_counter() - t) / 5
    blocks.unpersist()

    b, r, after = res["before"], res["batch32"], res["after"]
    print()
    print("validation loss per epoch (same rows; before = today's loop, batch 32 = its reference, after = the defaults)")
    print(f"{'epoch':>5} {'before':>10} {'batch 32':>10} {'after':>10}")
    shown = sorted({1, 2, 3, 5, *range(10, a.epochs + 1, 10), len(after["curve"]), a.legacy_epochs})
    for e in shown:
        cell = lambda c: f"{c[e - 1]:10.6f}" if e <= len(c) else f"{'':>10}"  # noqa: E731
        print(f"{e:>5} {cell(b['curve'])} {cell(r['curve'])} {cell(after['curve'])}")
    ceiling = max(keras[auto].values())  # the faster of the two: the stricter goal
    share = after["rate"] / ceiling
    loss_gap = after["final_val_loss"] / r["final_val_loss"] - 1
    res["goals"] = {"share_of_keras_fit": share, "rate": after["rate"], "loss_vs_batch32": loss_gap}
    print()
    print(f"per-epoch floor of the job's loop (a Spark job, broadcast, no rows): {res['empty_epoch_seconds']:.2f} s")
    print(f"speed-up after / before (flow-epochs/s)      : {after['rate'] / b['rate']:,.1f}x "
          f"({after['rate']:,.0f} vs {b['rate']:,.0f}); wall time of a 90-epoch batch-32 run vs after: "
          f"{r['seconds']:,.0f} s vs {after['seconds']:,.0f} s")
    print(f"goal: Elephas >= 50% of in-process Keras fit : {share:.0%} of {ceiling:,.0f} (batch {auto}, the faster Keras fit) "
          f"-> {'MET' if share >= GOAL_KERAS_SHARE else f'MISSED by {GOAL_KERAS_SHARE - share:.0%}'}; "
          f"{after['rate'] / min(keras[auto].values()):.0%} of the slower one")
    short = 1 - after["rate"] / GOAL_RATE
    print(f"goal: >= 100k flow-epochs/s on {a.master:9s}   : {after['rate']:,.0f} -> "
          f"{'MET' if short <= 0 else f'MISSED by {short:.0%}'}")
    print(f"goal: final validation loss within 5% of batch-32/90 epochs: {after['final_val_loss']:.6f} vs "
          f"{r['final_val_loss']:.6f} ({loss_gap:+.1%}) -> {'MET' if loss_gap <= GOAL_LOSS else 'MISSED'}")
    print(f"peak RSS (driver + JVM + Python workers)     : {mem.stop() / 2**20:,.0f} MiB; cores: {os.cpu_count()}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1, default=float))
        print(f"curves and figures: {a.out}")
    spark.stop()


if __name__ == "__main__":
    main()
