"""The autoencoder trained with Elephas on benign flows flags the attacks of a real excerpt."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from spot_ae_job.features import FEATURE_COLUMNS, add_features
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.errors import SpotAEError
from spot_ae_job.model import MAX_AUTO_BATCH, AEModel, Convergence, auto_batch_size, elephas_fit, forward, train_autoencoder
from spot_ae_job.score import score_flows
from spot_ae_job.explain import add_explanations
from spot_ae_job.thresholds import split_holdout

EPOCHS = 20
# Measured: DDoS LOIC-UDP recall 1.000 at 20 and at 90 epochs (held-out benign FPR ~0.05).
RECALL_BOUND = 0.9


@pytest.fixture(scope="module")
def loic(spark, data_dir):
    flows = read_cicids(spark, str(data_dir / "cicids2018" / "ishtiaq__DDOS_attack-LOIC-UDP.csv")).flows
    benign = flows.where(~F.col("is_attack"))
    train, held_out = benign.randomSplit([0.8, 0.2], seed=3)
    return flows.cache(), train.cache(), held_out.cache()


@pytest.fixture(scope="module")
def model(loic):
    _, train, _ = loic
    return train_autoencoder(train, epochs=EPOCHS, progress=lambda m: None, training_day="test")


def test_network_is_the_papers_18_12_18(model):
    w1, b1, w2, b2 = model.weights
    assert w1.shape == (18, 12) and b1.shape == (12,) and w2.shape == (12, 18) and b2.shape == (18,)
    assert [l.activation.__name__ for l in model.keras().layers] == ["tanh", "linear"]
    history = model.meta["history"]
    assert [h["epoch"] for h in history] == list(range(1, model.meta["epochs_run"] + 1)) and len(history) <= EPOCHS
    assert all(np.isfinite(h["val_loss"]) for h in history)
    assert history[-1]["loss"] < history[0]["loss"] and history[-1]["val_loss"] < history[0]["val_loss"]
    # the kept weights are those of the best epoch, and its validation loss is the recorded minimum
    assert model.meta["best_val_loss"] == min(h["val_loss"] for h in history)
    assert model.meta["batch_size"] == 32  # a small training set keeps Keras' default batch


def test_threshold_is_the_95th_percentile_of_held_out_benign_errors(model, loic):
    _, train, _ = loic
    _, held = split_holdout(train)  # the slice train_autoencoder kept out of training (same seed)
    scores = np.array([r.score for r in score_flows(model, held).select("score").collect()])
    assert model.meta["holdout_rows"] == len(scores) > 0 and model.meta["threshold_mode"] == "p95"
    above = (scores > model.threshold).mean()
    assert 0.04 <= above <= 0.06


def test_a_flow_with_one_feature_blown_up_is_explained_by_that_feature_first(model, loic):
    _, train, _ = loic
    flow = train.orderBy("tdur").limit(1)
    blown = flow.withColumn("tdur", F.lit(1e7).cast("float"))  # 115 days
    row = add_explanations(model, blown).first()
    assert row["expl1_feature"] == "tdur" and row["expl1_value"] == pytest.approx(1e7, rel=1e-4)
    assert row["expl1_benign_median"] == pytest.approx(math.expm1(model.meta["benign_medians"]["dur_log"]), abs=1e-3)
    assert row["expl1_error"] > row["expl2_error"]


def test_attacks_of_the_excerpt_are_flagged(model, loic):
    flows, _, held_out = loic
    scored = score_flows(model, flows)
    attacks = scored.where(F.col("is_attack"))
    recall = attacks.where(F.col("score") > model.threshold).count() / attacks.count()
    assert recall >= RECALL_BOUND
    fpr = score_flows(model, held_out).where(F.col("score") > model.threshold).count() / held_out.count()
    assert fpr <= 0.15  # p95 of a held-out benign slice; other unseen benign rows stay near 5%


def test_vectorized_scorer_equals_keras_predict(model, loic):
    flows, _, _ = loic
    sample = add_features(flows.limit(500))
    rows = sample.select(*FEATURE_COLUMNS, "sip").collect()
    x = model.scaler.transform(np.array([r[:18] for r in rows], dtype=np.float64))
    keras_err = ((model.keras().predict(x, verbose=0) - x) ** 2).mean(axis=1)
    ours = np.array([r.score for r in score_flows(model, flows.limit(500)).select("score").collect()])
    np.testing.assert_allclose(ours, keras_err, rtol=1e-4, atol=1e-7)


def test_saved_model_scores_identically(model, loic, spark, tmp_path):
    flows, _, _ = loic
    uri = "file://" + str(tmp_path / "models")
    model.save(spark, uri)
    back = AEModel.load(spark, uri)
    assert back.version == model.version and back.threshold == model.threshold
    a = score_flows(model, flows.limit(200)).select("score").collect()
    b = score_flows(back, flows.limit(200)).select("score").collect()
    assert a == b


def test_convergence_stops_after_patience_epochs_without_improvement_and_keeps_the_best_weights():
    stop = Convergence(patience=3, min_delta=0.01)
    curve = [1.0, 0.5, 0.3, 0.299, 0.2985, 0.31, 0.2999]  # after epoch 3 nothing improves by 1%
    stopped_at = next(e for e, v in enumerate(curve, 1) if stop.update(e, v, [np.full(2, e)]))
    assert stopped_at == 6 and stop.best_epoch == 5 and stop.best == 0.2985
    assert stop.best_weights[0].tolist() == [5, 5]


def test_patience_zero_trains_every_epoch():
    stop = Convergence(patience=0)
    assert not any(stop.update(e, 1.0, [np.zeros(1)]) for e in range(1, 200))


def test_the_batch_grows_with_the_training_set_only_where_each_worker_keeps_many_steps():
    assert auto_batch_size(80) == auto_batch_size(20_000) == 32  # the demo, the excerpts: Keras' default
    assert auto_batch_size(800_000) == MAX_AUTO_BATCH == 512     # a 5.5 M-flow day's 2 M sample, 2 workers
    for rows in (10_000, 100_000, 300_000, 10**7):
        b = auto_batch_size(rows)
        assert b & (b - 1) == 0 and 32 <= b <= MAX_AUTO_BATCH


def test_in_process_training_stops_on_a_plateau_and_returns_its_best_epoch():
    # rows with no structure: once 12 hidden units have learned what they can, the loss stalls
    x = np.random.default_rng(3).uniform(-1, 1, (1000, 18)).astype(np.float32)
    w, history, facts = elephas_fit(x, epochs=90, batch_size=32, seed=7, validation_split=0.2, workers=2, patience=2)
    vals = [h["val_loss"] for h in history]
    assert facts["stopped_early"] and len(history) < 90 and facts["epochs_run"] == len(history)
    assert facts["best_val_loss"] == min(vals) and vals[facts["best_epoch"] - 1] == min(vals)
    # the returned weights are the best epoch's: recomputing its validation loss gives the same value
    order = np.random.default_rng(7).permutation(len(x))
    val = np.concatenate([p[int(len(p) * 0.8):] for p in (x[order[i::2]] for i in range(2))])
    assert forward(w, val).mean() == pytest.approx(min(vals), rel=1e-5)


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"batch_size": 0}, {"patience": -1}])
def test_bad_training_settings_are_one_clear_error(loic, kw):
    _, train, _ = loic
    with pytest.raises(SpotAEError, match="training needs epochs >= 1, batch size >= 1 and patience >= 0"):
        train_autoencoder(train, progress=lambda m: None, **kw)
