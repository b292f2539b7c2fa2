"""The paper's autoencoder: 18 -> 12 (tanh) -> 18, Adam, trained with Elephas on Spark.

Training is Elephas' synchronous mode (its `SparkModel.fit` algorithm): every epoch one Spark
job in which each partition trains one epoch from the broadcast weights with a fresh Adam, and
the driver averages the updates with Elephas' own `average_and_subtract`. We run that loop
ourselves (`elephas_train`) for what Elephas' worker spends on every task of every epoch and not
on training: it unpickles one (row, row) pair per flow, rebuilds and recompiles the Keras model
and re-traces TensorFlow's training function (~2-6 s an epoch here, whatever the data size).
Here the rows are cached once as scaled float32 blocks, each Python worker keeps its compiled
network across epochs, and an epoch is one call into TensorFlow; the validation loss is that of
the averaged weights (Elephas reports each worker's own), which is what convergence stopping
(`Convergence`) watches. docs/scoring.md ("Training") has the measurements.

Two variants share the family: `ae`, the paper's 18 per-flow metrics, and `ae-context`, the
same network fed in addition the per-host windowed features of `context.py` (18 + 4 inputs).
The model's scaler carries its input list, so scoring, saving and loading need no variant switch
beyond `AEModel.features` (which computes those inputs from flow rows).

A trained model is one versioned artifact directory: `model.json` (version, scaler, threshold
with its mode and the held-out benign quantiles to re-fit it, drift reference bins, benign
feature medians for explanations, training facts), `weights.npz` (the four arrays the
vectorized scorer needs) and `model.keras` (the same network for Keras/Elephas predict).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from pyspark.sql import DataFrame, SparkSession

from spot_ae_job import __version__, drift, explain, fsutil, thresholds
from spot_ae_job.context import CONTEXT_COLUMNS, FIXED_BOUNDS, add_context
from spot_ae_job.errors import SpotAEError
from spot_ae_job.features import FEATURE_COLUMNS, FEATURES, N_FEATURES, Scaler, add_features
from spot_ae_job.schema import SCHEMA_VERSION
from spot_ae_job.score import score_flows

HIDDEN = 12
VARIANTS = ("ae", "ae-context")
DEFAULT_EPOCHS = 90
# Training (docs/scoring.md, "Training", has the measurements behind each number)
PATIENCE = 10              # epochs without a MIN_DELTA improvement of the validation loss before stopping
MIN_DELTA = 0.001          # relative
AUTO_BATCH_STEPS = 1000    # batch_size=None: grow the batch while a worker-epoch has over 2x this many batches
MAX_AUTO_BATCH = 512
BLOCK_ROWS = 65_536        # rows per cached training block


def forward(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Reconstruction error (mean squared, per row) of scaled rows x, in plain numpy."""
    w1, b1, w2, b2 = weights
    h = np.tanh(x @ w1 + b1)
    r = h @ w2 + b2
    d = r - x
    return np.einsum("ij,ij->i", d, d) / x.shape[1]


@dataclass
class AEModel:
    weights: list[np.ndarray]
    scaler: Scaler
    threshold: float
    meta: dict = field(default_factory=dict)

    higher_is_suspicious = True

    @property
    def kind(self) -> str:
        """`ae` (the paper's) or `ae-context`; models saved before variants existed are `ae`."""
        return self.meta.get("kind", "ae")

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def feature_columns(self) -> list[str]:
        """The f_* columns this model reads, in weight order (the scorer's one source)."""
        return list(self.scaler.columns)

    @property
    def scores_each_row_alone(self) -> bool:
        """True when a flow's score depends on that flow's columns only (the paper's 18
        features; not ae-context, whose inputs count the source's other flows)."""
        return self.feature_columns == FEATURE_COLUMNS

    def features(self, flows: DataFrame) -> DataFrame:
        """Flow rows -> the same rows + this model's unscaled input columns (feature_columns)."""
        return variant_features(flows, self.kind)

    def score(self, flows: DataFrame) -> DataFrame:
        """Flow rows -> the same rows + `score`; the interface ml-ops shares with the LDA."""
        return score_flows(self, flows)

    def errors(self, raw_features: np.ndarray) -> np.ndarray:
        """Unscaled feature rows (n x 18) -> reconstruction errors."""
        return forward(self.weights, self.scaler.transform(raw_features))

    def keras(self):
        net = build_network(n_inputs=len(self.feature_columns))
        net.set_weights(self.weights)
        return net

    # ---- persistence: one directory per version ----
    def save(self, spark: SparkSession, models_uri: str) -> str:
        """Write to `{models_uri}/{version}/` (file:// or hdfs://) and return that URI."""
        with tempfile.TemporaryDirectory(prefix="spot-ae-model-") as tmp:
            d = Path(tmp) / self.version
            d.mkdir()
            np.savez(d / "weights.npz", *self.weights)
            meta = {**self.meta, "threshold": self.threshold, "scaler": self.scaler.to_json()}
            (d / "model.json").write_text(json.dumps(meta, indent=2))
            self.keras().save(d / "model.keras")
            target = f"{models_uri.rstrip('/')}/{self.version}"
            fsutil.delete(spark, target)
            fsutil.put_dir(spark, str(d), target)
        fsutil.write_text(spark, f"{models_uri.rstrip('/')}/LATEST", self.version + "\n")
        return target

    @classmethod
    def load(cls, spark: SparkSession, models_uri: str, version: str = "latest") -> "AEModel":
        local = fsutil.get_dir(spark, fsutil.model_dir(spark, models_uri, version))
        try:
            meta = json.loads((local / "model.json").read_text())
            with np.load(local / "weights.npz") as z:
                weights = [z[f"arr_{i}"] for i in range(4)]
        finally:
            shutil.rmtree(local.parent, ignore_errors=True)
        try:
            scaler = Scaler.from_json(meta.pop("scaler"))
        except ValueError as e:
            raise SpotAEError(f"model {meta.get('version')}: {e}") from None
        kind = meta.get("kind", "ae")
        if list(scaler.columns) != variant_columns(kind):
            raise SpotAEError(f"model {meta.get('version')} ({kind}) was trained on inputs {scaler.features}; this code "
                              f"computes {[c[2:] for c in variant_columns(kind)]} for {kind}: re-train it")
        return cls(weights, scaler, float(meta.pop("threshold")), meta)


def variant_columns(variant: str = "ae") -> list[str]:
    """The input columns of a variant, in weight order."""
    if variant not in VARIANTS:
        raise SpotAEError(f"unknown autoencoder variant {variant!r}; known: {', '.join(VARIANTS)}")
    if variant == "ae-context":
        return FEATURE_COLUMNS + CONTEXT_COLUMNS
    return list(FEATURE_COLUMNS)


def variant_features(flows: DataFrame, variant: str = "ae") -> DataFrame:
    """Flow rows -> + the variant's unscaled input columns (the 18, plus the context for ae-context).

    Columns already present are kept, not recomputed: the evaluation computes the context over a
    whole day's flows (attacks included, as scoring sees them) and then trains on the benign ones."""
    variant_columns(variant)
    feats = flows if all(c in flows.columns for c in FEATURE_COLUMNS) else add_features(flows)
    if variant == "ae-context" and not all(c in feats.columns for c in CONTEXT_COLUMNS):
        feats = add_context(feats)
    return feats


def build_network(seed: int | None = None, n_inputs: int = N_FEATURES):
    """The paper's 18-12(tanh)-18 network, Adam, mean squared error."""
    import keras  # lazy: TensorFlow costs seconds and memory; only training builds a network (scoring uses the saved weights)

    if seed is not None:
        keras.utils.set_random_seed(seed)
    net = keras.Sequential(
        [
            keras.Input(shape=(n_inputs,)),
            keras.layers.Dense(HIDDEN, activation="tanh", name="encoder"),
            keras.layers.Dense(n_inputs, name="decoder"),
        ],
        name="spot_ae",
    )
    net.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mse")
    return net


def auto_batch_size(train_rows_per_worker: int) -> int:
    """The batch size `batch_size=None` trains with: 32 (Keras' default) until a worker's epoch
    would take more than AUTO_BATCH_STEPS batches, then the power of two that keeps it near that
    many, at most MAX_AUTO_BATCH. Small days keep the paper's many small updates; a full day
    (800 k rows per worker) gets 512 rows a batch, ~1,560 Adam steps a worker-epoch, which
    reaches the batch-32 loss (measured: docs/scoring.md) at ~10x the throughput."""
    b = 32
    while b < MAX_AUTO_BATCH and train_rows_per_worker / b > AUTO_BATCH_STEPS * 2:
        b *= 2
    return b


@dataclass
class Convergence:
    """Stop when the validation loss has not improved by `min_delta` (relative) for `patience`
    epochs, and keep the weights of the best epoch; `patience=0` trains every epoch (the cap).
    The cap stays the paper's 90 epochs: stopping only ever shortens a run."""

    patience: int = PATIENCE
    min_delta: float = MIN_DELTA
    best: float = math.inf
    best_epoch: int = 0
    best_weights: list | None = None
    _mark: float = math.inf
    _mark_epoch: int = 0

    def update(self, epoch: int, val_loss: float, weights: list) -> bool:
        """Record the validation loss of the weights after `epoch`; True when training should stop."""
        if val_loss < self.best:
            self.best, self.best_epoch, self.best_weights = val_loss, epoch, [np.array(w, copy=True) for w in weights]
        if val_loss < self._mark * (1.0 - self.min_delta):
            self._mark, self._mark_epoch = val_loss, epoch
        return self.patience > 0 and epoch - self._mark_epoch >= self.patience


# Per Python worker process: the compiled network, kept across the epochs' tasks (PySpark reuses
# its Python workers), so a task does not rebuild, recompile and re-trace it as Elephas' own
# worker does in every task of every epoch (~2 s an epoch here, more than a small day's training).
_WORKER_NETS: dict = {}


def _worker_network(n_inputs: int):
    net = _WORKER_NETS.get(n_inputs)
    if net is None:
        import tensorflow as tf  # lazy (see build_network)

        with contextlib.suppress(RuntimeError):  # already initialised in this process: keep its setting
            # one Spark task = one core: TensorFlow's own thread pool would fight the other task for it
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        net = _WORKER_NETS[n_inputs] = build_network(n_inputs=n_inputs)
    return net


def _epoch_function(net, batch_size: int):
    """A compiled function running one shuffled epoch of Keras' own `train_step` over a whole
    array, batch after batch inside TensorFlow: what `fit` does per step, without `fit`'s per-call
    cost (a new tf.data pipeline and iterator, ~0.2-1 s a call here: more than a small day's epoch).
    Traced once per network and batch size; returns the epoch's mean loss, as `fit`'s history."""
    cache = net.__dict__.setdefault("_spot_epoch_fns", {})
    if batch_size not in cache:
        import tensorflow as tf  # lazy (see build_network)

        # an explicit while_loop, not AutoGraph: AutoGraph re-reads this file's source to convert a loop
        @tf.function(input_signature=[tf.TensorSpec([None, net.input_shape[-1]], tf.float32)], autograph=False)
        def run(x):
            n = tf.shape(x)[0]
            order = tf.random.shuffle(tf.range(n))

            def step(i, _):
                xb = tf.gather(x, order[i * batch_size:tf.minimum((i + 1) * batch_size, n)])
                return i + 1, tf.cast(net.train_step((xb, xb))["loss"], tf.float32)

            steps = (n + batch_size - 1) // batch_size
            _, loss = tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0), tf.constant(float("nan"))))
            return loss

        cache[batch_size] = run
    return cache[batch_size]


def train_one_epoch(net, weights: list, x: np.ndarray, batch_size: int) -> tuple[list, float]:
    """One Elephas worker-epoch: from `weights`, with a fresh Adam (Elephas builds a new optimizer
    per task), one shuffled pass over `x` in batches of `batch_size`; returns (weights before -
    after, mean training loss of the epoch)."""
    net.set_weights(weights)
    opt = net.optimizer
    if not opt.built:
        opt.build(net.trainable_variables)
    for v in opt.variables:
        if "learning_rate" not in v.name:
            v.assign(np.zeros(v.shape, dtype=v.dtype))
    net.reset_metrics()
    loss = float(_epoch_function(net, batch_size)(np.ascontiguousarray(x, dtype=np.float32)))
    return [a - b for a, b in zip(weights, net.get_weights())], loss


def _split_validation(x: np.ndarray, validation_split: float) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, validation rows): the last `validation_split` of the (shuffled) rows, as
    Keras' `validation_split` takes them."""
    cut = int(math.floor(len(x) * (1.0 - validation_split)))
    return x[:cut], x[cut:]


def _sq_error_sum(weights: list, x: np.ndarray) -> float:
    return float(forward([np.asarray(w, dtype=np.float32) for w in weights], x).sum()) if len(x) else 0.0


def _epoch_task(params, batch_size: int, validation_split: float, train: bool):
    """Spark task of one synchronous epoch over a partition's cached blocks: the validation loss of
    the weights it was sent (the average of the previous epoch), then, if `train`, one worker-epoch.
    Validating the incoming weights is a forward pass over a fifth of the rows, inside the same job."""

    def run(blocks):
        parts = list(blocks)
        if not parts:  # an empty partition: a zero update, averaged in as Elephas averages it
            yield {"val_sum": 0.0, "val_rows": 0, "delta": None, "loss": None}
            return
        x = parts[0] if len(parts) == 1 else np.concatenate(parts)
        weights = params.value
        fit_rows, val = _split_validation(x, validation_split)
        out = {"val_sum": _sq_error_sum(weights, val), "val_rows": len(val), "delta": None, "loss": None}
        if train and len(x) > batch_size:  # Elephas fits a partition only when it holds more than one batch
            out["delta"], out["loss"] = train_one_epoch(_worker_network(x.shape[1]), weights, fit_rows, batch_size)
        yield out

    return run


def _scaled_blocks(scale: np.ndarray, offset: np.ndarray, columns: list[str], seed: int):
    """mapInArrow function: a partition's feature rows -> its rows scaled, shuffled (seeded by the
    partition) and cut into float32 blocks of BLOCK_ROWS, one binary value each. Built once; every
    epoch then reads a few arrays per partition instead of unpickling one Python object per row."""

    def run(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        mats = [np.column_stack([b.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in columns])
                for b in batches if b.num_rows]
        if not mats:
            return
        x = (np.concatenate(mats) * scale + offset).astype(np.float32)
        # Seeded shuffle: the validation rows (the last fifth of a partition) must be a random
        # fifth, not the latest flows.
        x = x[np.random.default_rng([seed, TaskContext.get().partitionId()]).permutation(len(x))]
        for i in range(0, len(x), BLOCK_ROWS):
            blk = np.ascontiguousarray(x[i:i + BLOCK_ROWS])
            yield pa.RecordBatch.from_arrays([pa.array([len(blk)], pa.int64()), pa.array([blk.tobytes()], pa.binary())],
                                             ["rows", "block"])

    return run


def training_blocks(feats: DataFrame, scaler: Scaler, workers: int, seed: int):
    """Feature rows -> a cached RDD of scaled float32 blocks, `workers` partitions (round robin)."""
    cols, n = list(scaler.columns), len(scaler.columns)
    blocks = (feats.select(*cols).repartition(workers)
              .mapInArrow(_scaled_blocks(scaler.scale, scaler.offset, cols, seed), "rows long, block binary")
              .rdd.map(lambda r: np.frombuffer(r["block"], dtype=np.float32).reshape(r["rows"], n)))
    return blocks.cache()


def elephas_train(blocks, net, *, epochs: int, batch_size: int, validation_split: float, patience: int,
                  progress: Callable[[str], None] = print, t0: float | None = None) -> tuple[list, list, dict]:
    """Elephas' synchronous training over cached blocks: every epoch one Spark job in which each
    partition trains one epoch from the broadcast weights and the driver averages the updates
    (`elephas.utils.average_and_subtract`, as Elephas' `SparkModel`); stops on convergence
    (`Convergence`) or at `epochs`. Returns (best weights, history, stopping facts); history[i] is
    epoch i+1's mean training loss and the validation loss of the averaged weights after it."""
    from elephas.utils import average_and_subtract  # lazy: imports TensorFlow (see build_network)

    sc = blocks.context
    t0 = t0 or time.time()
    weights = [np.asarray(w) for w in net.get_weights()]
    stop = Convergence(patience=patience)
    history: list[dict] = []

    def job(train: bool):
        params = sc.broadcast(weights)
        try:
            outs = blocks.mapPartitions(_epoch_task(params, batch_size, validation_split, train)).collect()
        finally:
            params.destroy()
        n_val = sum(o["val_rows"] for o in outs)
        val = sum(o["val_sum"] for o in outs) / n_val if n_val else float("nan")
        return outs, val

    stopped = False
    for epoch in range(1, epochs + 1):
        outs, val_before = job(train=True)
        if history:
            history[-1]["val_loss"] = val_before
            stopped = stop.update(epoch - 1, val_before, weights)
            _progress_line(progress, history[-1], epochs, t0)
            if stopped:
                break
        deltas = [o["delta"] if o["delta"] is not None else [np.zeros_like(w) for w in weights] for o in outs]
        losses = [o["loss"] for o in outs if o["loss"] is not None]
        weights = average_and_subtract(weights, deltas)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), "val_loss": None})
    if not stopped:  # the last epoch's validation loss: one more job, with no training
        _, history[-1]["val_loss"] = job(train=False)
        stop.update(history[-1]["epoch"], history[-1]["val_loss"], weights)
    _progress_line(progress, history[-1], epochs, t0, force=True)
    facts = {"epochs_run": len(history), "best_epoch": stop.best_epoch, "best_val_loss": stop.best,
             "stopped_early": stopped}
    return (stop.best_weights or weights), history, facts


def _progress_line(progress, h: dict, epochs: int, t0: float, force: bool = False) -> None:
    e = h["epoch"]
    if force or e == 1 or e % 10 == 0:
        progress(f"epoch {e}/{epochs} loss={h['loss']:.5f} val_loss={h['val_loss']:.5f} ({time.time() - t0:.0f}s)")


def train_autoencoder(
    flows: DataFrame,
    *,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int | None = None,
    patience: int = PATIENCE,
    validation_split: float = 0.2,
    workers: int | None = None,
    max_rows: int = 2_000_000,
    seed: int = 7,
    training_day: str | None = None,
    extra_meta: dict | None = None,
    held_out: DataFrame | None = None,
    holdout: float = thresholds.HOLDOUT_FRACTION,
    threshold_mode: str = thresholds.P95,
    threshold_value: float | None = None,
    flows_per_day: int | None = None,
    progress: Callable[[str], None] = print,
    variant: str = "ae",
) -> AEModel:
    """Train on `flows` (flow-table rows the caller has already restricted to benign ones).

    The threshold is fitted on benign rows the network never saw: `held_out` if given (the
    caller split it off before adding anything that must not be held out, e.g. feedback
    copies), else a seeded `holdout` slice of `flows`. `flows_per_day` turns an
    alerts-per-day budget into a fraction (default: the number of benign flows given).
    `variant="ae-context"` adds the per-host context inputs (computed over the rows as given).
    `batch_size=None` picks it from the size of the data (`auto_batch_size`); `patience=0` trains
    all `epochs` (the paper's fixed 90), otherwise training stops on convergence (`Convergence`)."""

    spark = flows.sparkSession
    t0 = time.time()
    if epochs < 1 or patience < 0 or (batch_size is not None and batch_size < 1):
        raise SpotAEError(f"training needs epochs >= 1, batch size >= 1 and patience >= 0; got epochs {epochs}, "
                          f"batch size {batch_size}, patience {patience}")
    thresholds.flagged_fraction(threshold_mode, threshold_value, flows_per_day=flows_per_day or 1 << 62)  # fail fast
    if held_out is None:
        flows, held_out = thresholds.split_holdout(flows, holdout, seed)
    cols = variant_columns(variant)
    feats = variant_features(flows, variant).select(*cols)
    n_all = feats.count()
    if n_all < 10:
        raise SpotAEError(f"need at least 10 benign training flows, got {n_all}")
    if n_all > max_rows:
        feats = feats.sample(fraction=max_rows / n_all, seed=seed)
    scaler = Scaler.fit(feats, cols, fixed=FIXED_BOUNDS)
    workers = workers or max(1, spark.sparkContext.defaultParallelism)
    blocks = training_blocks(feats, scaler, workers, seed)
    n_train = int(blocks.map(len).sum())  # also fills the cache
    timings = {"prepare_s": round(time.time() - t0, 1)}  # features, sample, scaler, cached blocks
    if batch_size is None:
        batch_size = auto_batch_size(int(n_train * (1.0 - validation_split) / workers))
    progress(f"training on {n_train} benign flows ({n_all} available), {workers} Elephas workers, batch {batch_size}, "
             f"at most {epochs} epochs" + (f" (stopping when the validation loss has not improved {MIN_DELTA:.1%} "
                                           f"in {patience} epochs)" if patience else ""))
    net = build_network(seed, len(cols))
    weights, history, stopping = elephas_train(blocks, net, epochs=epochs, batch_size=batch_size,
                                               validation_split=validation_split, patience=patience,
                                               progress=progress, t0=t0)
    blocks.unpersist()
    timings["epochs_s"] = round(time.time() - t0 - sum(timings.values()), 1)

    # Threshold: the chosen mode's quantile of the held-out benign rows' errors (never the
    # training rows': those reconstruct better than new benign traffic does). Scored by the
    # scorer that will score the days (model.score), so a day's flow equal to a held-out one
    # lands exactly on the threshold, not a rounding step either side of it.
    model = AEModel(weights, scaler, threshold=float("nan"), meta={"kind": variant})
    held_scores = model.score(held_out).select(drift.SCORE).cache()
    n_held = held_scores.count()
    per_day = flows_per_day or n_all + n_held
    model.threshold, thr_meta = thresholds.fit_on_held_out(
        held_scores, threshold_mode, threshold_value, flows_per_day=per_day, fraction=holdout, seed=seed,
    )
    fraction = thresholds.flagged_fraction(threshold_mode, threshold_value, flows_per_day=per_day)
    res = thresholds.resolution(n_held, fraction, "held-out benign slice", above=thr_meta["holdout_beyond"])
    if not res["resolves"]:
        benign = feats.distinct().unionByName(variant_features(held_out, variant).select(*cols))
        n_benign = benign.count()
        if n_benign <= thresholds.CROSSFIT_MAX_ROWS:
            progress(f"{n_held} held-out benign flows cannot resolve a {fraction:.2%} rate: fitting the threshold on "
                     f"out-of-fold scores of all {n_benign} benign flows ({thresholds.CROSSFIT_FOLDS}-fold cross-fitting)")
            raw = np.asarray(benign.toPandas().to_numpy(dtype=np.float64))
            oof = crossfit_scores(scaler.transform(raw), epochs=epochs, batch_size=batch_size, seed=seed,
                                  validation_split=validation_split, workers=workers, patience=patience)
            q = thresholds.quantiles_of(oof)
            model.threshold = thresholds.threshold_from_quantiles(q, threshold_mode, threshold_value, flows_per_day=per_day)
            thr_meta.update(benign_quantiles=q, threshold_fitted_on=(
                f"out-of-fold scores of all {n_benign} distinct benign training flows ({thresholds.CROSSFIT_FOLDS}-fold "
                f"cross-fitting: each fold scored by the same network trained on the other folds as Elephas trains, in-process); "
                f"the held-out slice ({n_held}) was too small"))
            res = thresholds.resolution(n_benign, fraction, f"{thresholds.CROSSFIT_FOLDS}-fold cross-fitting",
                                        above=int((oof > model.threshold).sum()))
    thr_meta["threshold_resolution"] = res
    timings["threshold_s"] = round(time.time() - t0 - sum(timings.values()), 1)
    drift_ref = drift.reference(feats.select(*FEATURE_COLUMNS).toDF(*FEATURES), FEATURES)
    drift_ref.update(drift.reference(held_scores, [drift.SCORE]))
    held_scores.unpersist()
    medians = explain.benign_medians(feats, cols)
    timings["references_s"] = round(time.time() - t0 - sum(timings.values()), 1)  # drift bins, benign medians
    digest = hashlib.sha256(b"".join(w.tobytes() for w in weights)).hexdigest()[:10]
    now = dt.datetime.now(dt.timezone.utc)
    model.meta = {
        "version": f"{variant}-{now:%Y%m%dT%H%M%SZ}-{digest}",
        "kind": variant,
        "created": now.isoformat(timespec="seconds"),
        "package_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "features": scaler.features,
        "architecture": f"{len(cols)}-{HIDDEN}(tanh)-{len(cols)}",
        "epochs": epochs,
        "batch_size": batch_size,
        "patience": patience,
        **stopping,
        "validation_split": validation_split,
        "training_day": training_day,
        "training_rows": n_train,
        **thr_meta,
        "benign_medians": medians,
        "drift_reference": drift_ref,
        "history": history,
        "train_seconds": round(time.time() - t0, 1),
        "timings": timings,
        **(extra_meta or {}),
    }
    progress(f"threshold ({thresholds.describe(threshold_mode, threshold_value)}) = {model.threshold:.6f}; "
             f"{thresholds.describe_resolution(res)}; model {model.version}")
    return model


def crossfit_scores(x: np.ndarray, *, epochs: int, batch_size: int | None, seed: int, validation_split: float,
                    workers: int, patience: int = PATIENCE, folds: int = thresholds.CROSSFIT_FOLDS) -> np.ndarray:
    """Out-of-fold reconstruction errors of every (scaled) row: fold k is scored by the same
    network trained on the other folds the way Elephas trains the deployed one (`elephas_fit`).
    Only for small training sets (the held-out slice could not resolve the asked rate): in-process,
    because at this size Spark would only add overhead, and identical in method, because a fold
    model trained differently (plain Keras fit keeps Adam's state across epochs and does not
    average workers) reconstructs better than the deployed model and sets the threshold too low."""
    assign = np.random.default_rng(seed).permutation(len(x)) % folds
    out = np.empty(len(x), dtype=np.float64)
    net = build_network(seed, x.shape[1])  # one compiled network for every fold, as a Spark worker keeps one
    for k in range(folds):
        test = x[assign == k]
        if len(test) == 0:
            continue
        w, _, _ = elephas_fit(x[assign != k], epochs=epochs, batch_size=batch_size, seed=seed + k,
                              validation_split=validation_split, workers=workers, patience=patience, net=net)
        out[assign == k] = forward([np.asarray(a, dtype=np.float32) for a in w], test.astype(np.float32))
    return out


def elephas_fit(x: np.ndarray, *, epochs: int, batch_size: int | None, seed: int, validation_split: float, workers: int,
                patience: int = PATIENCE, net=None) -> tuple[list, list, dict]:
    """Elephas' synchronous training as `elephas_train` runs it, in one process: the rows split into
    `workers` partitions (shuffled once); every epoch each partition trains one epoch from the same
    weights with a fresh Adam on all but its last `validation_split` rows (a partition not larger
    than a batch contributes no update), the updates are averaged, and the same `Convergence` rule
    stops it. Returns (best weights, history, stopping facts) as `elephas_train` does."""
    import keras  # lazy (see build_network)

    order = np.random.default_rng(seed).permutation(len(x))
    whole = [x[order[i::workers]].astype(np.float32) for i in range(max(1, workers))]
    parts = [(len(p), *_split_validation(p, validation_split)) for p in whole]
    if batch_size is None:
        batch_size = auto_batch_size(max(len(p[1]) for p in parts))
    if net is None:
        net = build_network(seed, x.shape[1])
    keras.utils.set_random_seed(seed)
    weights = [np.asarray(w) for w in build_network(seed, x.shape[1]).get_weights()]
    n_val = sum(len(p[2]) for p in parts)
    stop = Convergence(patience=patience)
    history = []
    for epoch in range(1, epochs + 1):
        deltas, losses = [], []
        for rows, fit_rows, _ in parts:
            if rows <= batch_size:  # Elephas fits a partition only when it holds more than one batch
                deltas.append([np.zeros_like(w) for w in weights])
                continue
            d, loss = train_one_epoch(net, weights, fit_rows, batch_size)
            deltas.append(d)
            losses.append(loss)
        weights = [w - np.mean([d[i] for d in deltas], axis=0) for i, w in enumerate(weights)]
        val = sum(_sq_error_sum(weights, v) for _, _, v in parts) / n_val if n_val else float("nan")
        history.append({"epoch": epoch, "loss": float(np.mean(losses)) if losses else float("nan"), "val_loss": val})
        if stop.update(epoch, val, weights) if n_val else False:
            break
    facts = {"epochs_run": len(history), "best_epoch": stop.best_epoch, "best_val_loss": stop.best,
             "stopped_early": len(history) < epochs, "batch_size": batch_size}
    return (stop.best_weights or weights), history, facts
