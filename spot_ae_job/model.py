"""The paper's autoencoder: 18 -> 12 (tanh) -> 18, Adam, trained with Elephas on Spark.

Training uses Elephas' synchronous mode: every epoch each Spark partition trains one pass
from the current weights and the driver averages the updates. We drive the epoch loop
ourselves (one Elephas `fit(epochs=1)` per epoch, which is exactly what Elephas does
internally) so that progress can be printed as it happens.

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
import io
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
from pyspark.sql import functions as F

from spot_ae_job import __version__, drift, explain, fsutil, thresholds
from spot_ae_job.context import CONTEXT_COLUMNS, FIXED_BOUNDS, add_context
from spot_ae_job.errors import SpotAEError
from spot_ae_job.features import FEATURE_COLUMNS, FEATURES, N_FEATURES, Scaler, add_features
from spot_ae_job.schema import SCHEMA_VERSION
from spot_ae_job.score import score_flows

HIDDEN = 12
VARIANTS = ("ae", "ae-context")
DEFAULT_EPOCHS = 90


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


def _scaled_pairs(scale: np.ndarray, offset: np.ndarray):
    """Partition function: feature rows -> (x, x) pairs for Elephas, scaled in bulk."""

    def run(rows):
        block = np.asarray([tuple(r) for r in rows], dtype=np.float32)
        if block.size == 0:
            return iter(())
        x = (block * scale + offset).astype(np.float32)
        return ((row, row) for row in x)

    return run


def train_autoencoder(
    flows: DataFrame,
    *,
    epochs: int = DEFAULT_EPOCHS,
    batch_size: int = 32,
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
    `variant="ae-context"` adds the per-host context inputs (computed over the rows as given)."""
    from elephas.spark_model import SparkModel  # lazy: imports TensorFlow (see build_network)

    spark = flows.sparkSession
    t0 = time.time()
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
    # Round-robin spread, then a seeded shuffle inside each partition: Keras' validation_split
    # takes the last 20% of each worker's rows, which must be a random 20%, not the latest flows.
    ordered = feats.repartition(workers).sortWithinPartitions(F.rand(seed))
    rdd = ordered.rdd.mapPartitions(_scaled_pairs(scaler.scale, scaler.offset)).cache()
    n_train = rdd.count()
    progress(f"training on {n_train} benign flows ({n_all} available), {workers} Elephas workers, {epochs} epochs")

    net = build_network(seed, len(cols))
    sm = SparkModel(net, num_workers=None, batch_size=batch_size)
    history = []
    for epoch in range(1, epochs + 1):
        before = len(sm.training_histories)
        with contextlib.redirect_stdout(io.StringIO()):  # Elephas prints two banner lines per call
            sm.fit(rdd, epochs=1, batch_size=batch_size, verbose=0, validation_split=validation_split, shuffle=True)
        hs = [h for h in sm.training_histories[before:] if h]
        loss = float(np.mean([h["loss"][-1] for h in hs])) if hs else float("nan")
        val = float(np.mean([h["val_loss"][-1] for h in hs if "val_loss" in h])) if hs else float("nan")
        history.append({"epoch": epoch, "loss": loss, "val_loss": val})
        if epoch == 1 or epoch == epochs or epoch % 10 == 0:
            progress(f"epoch {epoch}/{epochs} loss={loss:.5f} val_loss={val:.5f} ({time.time() - t0:.0f}s)")
    weights = [np.asarray(w) for w in sm.master_network.get_weights()]
    rdd.unpersist()

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
                                  validation_split=validation_split, workers=workers)
            q = thresholds.quantiles_of(oof)
            model.threshold = thresholds.threshold_from_quantiles(q, threshold_mode, threshold_value, flows_per_day=per_day)
            thr_meta.update(benign_quantiles=q, threshold_fitted_on=(
                f"out-of-fold scores of all {n_benign} distinct benign training flows ({thresholds.CROSSFIT_FOLDS}-fold "
                f"cross-fitting: each fold scored by the same network trained on the other folds as Elephas trains, in-process); "
                f"the held-out slice ({n_held}) was too small"))
            res = thresholds.resolution(n_benign, fraction, f"{thresholds.CROSSFIT_FOLDS}-fold cross-fitting",
                                        above=int((oof > model.threshold).sum()))
    thr_meta["threshold_resolution"] = res
    drift_ref = drift.reference(feats.select(*FEATURE_COLUMNS).toDF(*FEATURES), FEATURES)
    drift_ref.update(drift.reference(held_scores, [drift.SCORE]))
    held_scores.unpersist()
    medians = explain.benign_medians(feats, cols)
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
        "validation_split": validation_split,
        "training_day": training_day,
        "training_rows": n_train,
        **thr_meta,
        "benign_medians": medians,
        "drift_reference": drift_ref,
        "history": history,
        "train_seconds": round(time.time() - t0, 1),
        **(extra_meta or {}),
    }
    progress(f"threshold ({thresholds.describe(threshold_mode, threshold_value)}) = {model.threshold:.6f}; "
             f"{thresholds.describe_resolution(res)}; model {model.version}")
    return model


def crossfit_scores(x: np.ndarray, *, epochs: int, batch_size: int, seed: int, validation_split: float, workers: int,
                    folds: int = thresholds.CROSSFIT_FOLDS) -> np.ndarray:
    """Out-of-fold reconstruction errors of every (scaled) row: fold k is scored by the same
    network trained on the other folds the way Elephas trains the deployed one (`elephas_fit`).
    Only for small training sets (the held-out slice could not resolve the asked rate): in-process,
    because at this size Spark would only add overhead, and identical in method, because a fold
    model trained differently (plain Keras fit keeps Adam's state across epochs and does not
    average workers) reconstructs better than the deployed model and sets the threshold too low."""
    assign = np.random.default_rng(seed).permutation(len(x)) % folds
    out = np.empty(len(x), dtype=np.float64)
    for k in range(folds):
        test = x[assign == k]
        if len(test) == 0:
            continue
        w = elephas_fit(x[assign != k], epochs=epochs, batch_size=batch_size, seed=seed + k,
                        validation_split=validation_split, workers=workers)
        out[assign == k] = forward([np.asarray(a, dtype=np.float32) for a in w], test.astype(np.float32))
    return out


def elephas_fit(x: np.ndarray, *, epochs: int, batch_size: int, seed: int, validation_split: float, workers: int) -> list:
    """Elephas' synchronous training, in one process: the rows split into `workers` partitions
    (shuffled once, as train_autoencoder orders them); every epoch each partition trains one
    epoch from the same weights with a fresh Adam (Elephas rebuilds the optimizer per task), a
    partition not larger than a batch contributes no update, and the updates are averaged."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    # Keras' validation_split holds out the last rows of each partition and never trains on them;
    # they are cut here, so no validation pass runs (its loss changes no weight)
    whole = [x[order[i::workers]] for i in range(max(1, workers))]
    parts = [(len(p), p[: int(math.floor(len(p) * (1.0 - validation_split)))]) for p in whole]
    net = build_network(seed, x.shape[1])
    weights = net.get_weights()
    for _ in range(epochs):
        deltas = []
        for rows, part in parts:
            if rows <= batch_size:  # Elephas fits a partition only when it holds more than one batch
                deltas.append([np.zeros_like(w) for w in weights])
                continue
            net.set_weights(weights)
            opt = net.optimizer
            for v in (v for v in opt.variables if "learning_rate" not in v.name) if opt.built else ():
                v.assign(np.zeros(v.shape, dtype=v.dtype))
            net.fit(part, part, epochs=1, batch_size=batch_size, verbose=0, shuffle=True)
            deltas.append([a - b for a, b in zip(weights, net.get_weights())])
        weights = [w - np.mean([d[i] for d in deltas], axis=0) for i, w in enumerate(weights)]
    return weights
