"""The JVM scorer (jvm/AeScore.java) gives the numpy scorer's scores, flow for flow.

The numpy code (features.feature_matrix + model.forward) is the definition; the Java UDF is a
second implementation kept for speed, so it is held to the first on real flows of every source
(CIC-IDS2018 layouts, nfdump's decode of a real nfcapd file) and on the odd values real
exporters send (missing fields, negative counts, lower-case protocol names, NaN durations).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from spot_ae_job.features import FEATURE_INPUTS, Scaler, add_features, feature_matrix
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.ingest.nfdump import decode_file
from spot_ae_job.model import AEModel, HIDDEN, forward
from spot_ae_job.schema import FLOW_COLUMNS, FLOW_SCHEMA
from spot_ae_job.score import score_flows


@pytest.fixture(scope="module")
def flows(spark, data_dir):
    cic = read_cicids(spark, [str(data_dir / "cicids2018" / n) for n in
                              ("aegmm__toy_dataset.csv", "mahdi__ids2018_sample.csv", "ishtiaq__Brute_Force_XSS.csv")]).flows
    nf = decode_file(data_dir / "nfcapd" / "nfcapd.sample").flows.to_pylist()[:5000]
    nfdump = spark.createDataFrame(nf, FLOW_SCHEMA)
    return cic.select(*FLOW_COLUMNS).unionByName(nfdump).cache()


def model_for(spark, flows, seed: int) -> AEModel:
    """An 18-12-18 model with random weights and a scaler fitted on the flows: the two scorers
    must agree for any weights, not only for trained ones."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, (18, HIDDEN)), rng.normal(0, 0.1, HIDDEN),
               rng.normal(0, 0.5, (HIDDEN, 18)), rng.normal(0, 0.1, 18)]
    scaler = Scaler.fit(add_features(flows))
    return AEModel([w.astype(np.float32) for w in weights], scaler, threshold=0.1, meta={"version": f"test-{seed}"})


@pytest.mark.parametrize("seed", [1, 2])
def test_jvm_and_numpy_scorers_agree_on_real_flows(spark, flows, seed):
    model = model_for(spark, flows, seed)
    df = flows.withColumn("rid", F.monotonically_increasing_id()).cache()
    jvm = {r.rid: r.score for r in score_flows(model, df, scorer="jvm").select("rid", "score").collect()}
    arrow = {r.rid: r.score for r in score_flows(model, df, scorer="arrow").select("rid", "score").collect()}
    assert len(jvm) == len(arrow) == df.count() > 5000
    ids = sorted(jvm)
    np.testing.assert_allclose([jvm[i] for i in ids], [arrow[i] for i in ids], rtol=1e-4, atol=1e-7)
    # and the two orders agree: the same flows come out on top
    top = lambda s: set(sorted(s, key=s.get, reverse=True)[:100])  # noqa: E731
    assert len(top(jvm) & top(arrow)) >= 99


def test_jvm_scorer_handles_what_exporters_really_send(spark, flows):
    model = model_for(spark, flows, 3)
    base = flows.first().asDict()
    odd = [
        {"proto": "icmp6", "flag": None, "sport": None, "dport": None},
        {"proto": None, "flag": "UAPRSF", "ipkt": -5, "ibyt": -1},
        {"proto": "GRE", "flag": "", "tdur": float("nan"), "opkt": None, "obyt": None},
        {"proto": "udp", "flag": "....A...", "ipkt": 0, "ibyt": 10**12, "tdur": 0.001},
        {"proto": "Tcp", "flag": ".AP.SF", "sport": 65535, "dport": 0, "tdur": -3.0},
        {"proto": "TCP", "flag": "S", "tdur": float("inf"), "ibyt": 2**62, "ipkt": 3},
    ]
    rows = [{**base, **o} for o in odd]
    df = spark.createDataFrame(rows, FLOW_SCHEMA)
    jvm = [r.score for r in score_flows(model, df, scorer="jvm").collect()]
    want = forward(model.weights, model.scaler.transform(feature_matrix(df.select(*FEATURE_INPUTS).toPandas())))
    assert all(math.isfinite(s) for s in jvm)
    np.testing.assert_allclose(jvm, want, rtol=1e-4, atol=1e-7)


def test_only_the_nine_inputs_matter(spark, flows):
    """Scores do not depend on the columns the features do not read (addresses, times)."""
    model = model_for(spark, flows, 4)
    df = flows.limit(300).withColumn("rid", F.monotonically_increasing_id()).cache()
    other = df.withColumn("sip", F.lit("10.9.9.9")).withColumn("treceived", F.lit("2000-01-01 00:00:00"))
    a = score_flows(model, df, scorer="jvm").select("rid", "score").orderBy("rid").collect()
    b = score_flows(model, other, scorer="jvm").select("rid", "score").orderBy("rid").collect()
    assert a == b and set(FEATURE_INPUTS) <= set(FLOW_COLUMNS)


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
