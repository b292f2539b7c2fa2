"""The JVM scorer (jvm/AeScore.java, jvm/AeBatch.java) gives the numpy scorer's scores, flow for flow.

The numpy code (features.feature_matrix + model.forward) is the definition; the Java scorer is a
second implementation kept for speed, so it is held to the first on real flows of every source
(CIC-IDS2018 layouts, nfdump's decode of a real nfcapd file) and on the odd values real
exporters send (missing fields, negative counts, lower-case protocol names, NaN durations), by
both of its ways in: straight from Spark's column vectors (Parquet with and without dictionary
encoding, a cached table) and from rows (any other plan).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from spot_ae_job.features import FEATURE_INPUTS, Scaler, feature_matrix
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.ingest.nfdump import decode_file
from spot_ae_job.context import CONTEXT_COLUMNS, FIXED_BOUNDS
from spot_ae_job.model import AEModel, HIDDEN, forward, variant_columns, variant_features
from spot_ae_job.schema import FLOW_COLUMNS, FLOW_SCHEMA
from spot_ae_job.score import jvm_path, score_flows


@pytest.fixture(scope="module")
def flows(spark, data_dir):
    cic = read_cicids(spark, [str(data_dir / "cicids2018" / n) for n in
                              ("aegmm__toy_dataset.csv", "mahdi__ids2018_sample.csv", "ishtiaq__Brute_Force_XSS.csv")]).flows
    nf = decode_file(data_dir / "nfcapd" / "nfcapd.sample").flows.to_pylist()[:5000]
    nfdump = spark.createDataFrame(nf, FLOW_SCHEMA)
    return cic.select(*FLOW_COLUMNS).unionByName(nfdump).cache()


def model_for(spark, flows, seed: int, variant: str = "ae") -> AEModel:
    """An n-12-n model of the variant's inputs (18 for the paper's) with random weights and a
    scaler fitted on the flows, as training fits it: the two scorers must agree for any weights,
    not only for trained ones."""
    cols = variant_columns(variant)
    n = len(cols)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, (n, HIDDEN)), rng.normal(0, 0.1, HIDDEN),
               rng.normal(0, 0.5, (HIDDEN, n)), rng.normal(0, 0.1, n)]
    scaler = Scaler.fit(variant_features(flows, variant), cols, fixed=FIXED_BOUNDS)
    return AEModel([w.astype(np.float32) for w in weights], scaler, threshold=0.1,
                   meta={"version": f"test-{seed}", "kind": variant})


def by_rid(scored) -> dict:
    return {r.rid: r.score for r in scored.select("rid", "score").collect()}


def assert_same_scores(got: dict, want: dict):
    assert len(got) == len(want) and set(got) == set(want)
    ids = sorted(want)
    np.testing.assert_allclose([got[i] for i in ids], [want[i] for i in ids], rtol=1e-4, atol=1e-7)
    # and the two orders agree: the same flows come out on top
    top = lambda s: set(sorted(s, key=s.get, reverse=True)[:100])  # noqa: E731
    assert len(top(got) & top(want)) >= 99


@pytest.mark.parametrize("seed", [1, 2])
def test_jvm_and_numpy_scorers_agree_on_real_flows_by_both_ways_in(spark, flows, tmp_path, seed):
    model = model_for(spark, flows, seed)
    path = str(tmp_path / "flows")
    flows.withColumn("rid", F.monotonically_increasing_id()).write.parquet(path)
    day = spark.read.parquet(path)  # the flow table as ml-ops reads it: column vectors
    assert jvm_path(day) == "columnar"
    arrow = by_rid(score_flows(model, day, scorer="arrow"))
    assert len(arrow) == day.count() > 5000
    assert_same_scores(by_rid(score_flows(model, day, scorer="jvm")), arrow)
    cached = day.where(F.col("rid") >= 0).cache()  # a filter, and a cached table with strings: rows
    assert jvm_path(cached) == "rows"
    assert_same_scores(by_rid(score_flows(model, cached, scorer="jvm")), arrow)
    cached.unpersist()


@pytest.mark.parametrize("dictionary", [True, False])
def test_parquet_is_scored_from_its_column_vectors_with_or_without_dictionaries(spark, flows, tmp_path, dictionary):
    """The flow table as ml-ops reads it: Parquet, whose columns the reader may keep
    dictionary-encoded (each distinct value worked out once) or not; with nulls in them."""
    model = model_for(spark, flows, 6)
    df = flows.withColumn("rid", F.monotonically_increasing_id())
    for i, c in enumerate(["proto", "flag", "sport", "tdur", "ipkt", "obyt"]):  # a null in every kind of column
        df = df.withColumn(c, F.when(F.col("rid") % 97 == i, None).otherwise(F.col(c)))
    path = str(tmp_path / "day")
    df.write.option("parquet.enable.dictionary", str(dictionary).lower()).parquet(path)
    day = spark.read.parquet(path)
    assert jvm_path(day) == "columnar"
    assert_same_scores(by_rid(score_flows(model, day, scorer="jvm")), by_rid(score_flows(model, day, scorer="arrow")))


def test_the_columns_kept_are_the_ones_asked_for_in_that_order(spark, flows):
    model = model_for(spark, flows, 7)
    df = flows.limit(500).withColumn("rid", F.monotonically_increasing_id()).cache()
    for frame in (df, df.where("rid >= 0")):  # both ways in
        assert score_flows(model, frame, columns=["rid", "sip"]).columns == ["rid", "sip", "score"]
        assert score_flows(model, frame, columns=[]).columns == ["score"]
        assert score_flows(model, frame).columns == df.columns + ["score"]
        assert score_flows(model, frame).schema["score"].dataType.simpleString() == "double"


def test_jvm_scorer_handles_what_exporters_really_send(spark, flows, tmp_path):
    model = model_for(spark, flows, 3)
    base = flows.first().asDict()
    odd = [
        {"proto": "icmp6", "flag": None, "sport": None, "dport": None},
        {"proto": None, "flag": "UAPRSF", "ipkt": -5, "ibyt": -1},
        {"proto": "GRE", "flag": "", "tdur": float("nan"), "opkt": None, "obyt": None},
        {"proto": "udp", "flag": "....A...", "ipkt": 0, "ibyt": 10**12, "tdur": 0.001},
        {"proto": "Tcp", "flag": ".AP.SF", "sport": 65535, "dport": 0, "tdur": -3.0},
        {"proto": "TCP", "flag": "S", "tdur": float("inf"), "ibyt": 2**62, "ipkt": 3},
        {"proto": "TCP", "flag": ".A....", "ipkt": 70000, "ibyt": 90000, "opkt": 65535, "obyt": 1},  # beyond the log table
    ]
    rows = [{**base, **o} for o in odd]
    df = spark.createDataFrame(rows, FLOW_SCHEMA)
    want = forward(model.weights, model.scaler.transform(feature_matrix(df.select(*FEATURE_INPUTS).toPandas())))
    path = str(tmp_path / "odd")
    df.coalesce(1).write.parquet(path)
    for frame in (df, spark.read.parquet(path)):  # rows, then column vectors (same row order: one file)
        got = [r.score for r in score_flows(model, frame, scorer="jvm").collect()]
        assert all(math.isfinite(s) for s in got)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_only_the_nine_inputs_matter(spark, flows):
    """Scores do not depend on the columns the features do not read (addresses, times)."""
    model = model_for(spark, flows, 4)
    df = flows.limit(300).withColumn("rid", F.monotonically_increasing_id()).cache()
    other = df.withColumn("sip", F.lit("10.9.9.9")).withColumn("treceived", F.lit("2000-01-01 00:00:00"))
    a = score_flows(model, df, scorer="jvm").select("rid", "score").orderBy("rid").collect()
    b = score_flows(model, other, scorer="jvm").select("rid", "score").orderBy("rid").collect()
    assert a == b and set(FEATURE_INPUTS) <= set(FLOW_COLUMNS)


def test_the_context_model_is_scored_by_the_jvm_as_by_numpy(spark, flows):
    """ae-context: Spark counts the host context; the JVM scorer reads those 11 columns ready-made
    beside the 9 flow columns and gives the Arrow scorer's scores (and keeps the context beside them)."""
    day = flows.withColumn("rid", F.monotonically_increasing_id()).cache()
    feats = variant_features(day, "ae-context").cache()
    model = model_for(spark, feats, 8, "ae-context")
    assert feats.where(F.col("sip").isNotNull()).count() > 5000  # real flows with hosts: the context is not all "alone"
    jvm, arrow = score_flows(model, day, scorer="jvm"), score_flows(model, day, scorer="arrow")
    assert jvm.columns == arrow.columns == [*day.columns, *CONTEXT_COLUMNS, "score"]
    assert_same_scores(by_rid(jvm), by_rid(arrow))
    with_ctx = score_flows(model, feats, scorer="jvm")  # context given: not counted again, same scores
    assert_same_scores(by_rid(with_ctx), by_rid(arrow))
    day.unpersist()
    feats.unpersist()


def test_without_the_jar_auto_falls_back_to_the_arrow_scorer_and_jvm_refuses(spark, flows, monkeypatch, caplog):
    import spot_ae_job.score as S
    from spot_ae_job.errors import SpotAEError

    model = model_for(spark, flows, 5)
    df = flows.limit(200).withColumn("rid", F.monotonically_increasing_id()).cache()
    want = score_flows(model, df, scorer="arrow").select("rid", "score").orderBy("rid").collect()
    monkeypatch.setattr(S, "JVM_CLASS", "spotae.NotBuilt")  # what a session without the jar finds
    monkeypatch.setattr(S, "_jvm_missing_logged", False)
    with caplog.at_level("WARNING"):
        got = score_flows(model, df).select("rid", "score").orderBy("rid").collect()
    assert got == want and "JVM scorer unavailable" in caplog.text
    with pytest.raises(SpotAEError, match="jar"):
        score_flows(model, df, scorer="jvm")
