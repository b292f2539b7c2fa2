"""The 18 features: count, names, values on known flows, and the [-1, 1] scaling."""
from __future__ import annotations

import math

import numpy as np
from pyspark.sql import Row

from spot_ae_job.features import FEATURE_COLUMNS, FEATURES, Scaler, add_features
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.schema import FLOW_SCHEMA


def _flow(**kw):
    base = {f.name: None for f in FLOW_SCHEMA.fields}
    base.update(kw)
    return Row(**base)


def test_there_are_eighteen_documented_features():
    import spot_ae_job.features as mod

    assert len(FEATURES) == 18 == len(set(FEATURES))
    for name in FEATURES:
        assert name.split("_")[0] in mod.__doc__


def test_feature_values_of_a_known_tcp_flow(spark):
    df = spark.createDataFrame(
        [_flow(proto="TCP", flag="...AP.SF", sport=51146, dport=443, tdur=2.0, ipkt=10, ibyt=1000, opkt=0, obyt=0)],
        FLOW_SCHEMA,
    )
    r = add_features(df).select(FEATURE_COLUMNS).first().asDict()
    assert (r["f_proto_tcp"], r["f_proto_udp"], r["f_proto_icmp"]) == (1.0, 0.0, 0.0)
    assert (r["f_flag_fin"], r["f_flag_syn"], r["f_flag_rst"], r["f_flag_psh"], r["f_flag_ack"], r["f_flag_urg"]) == (1, 1, 0, 1, 1, 0)
    assert math.isclose(r["f_dport_log"], math.log1p(443), rel_tol=1e-6)
    assert math.isclose(r["f_ibpp_log"], math.log1p(100), rel_tol=1e-6)
    assert r["f_obpp_log"] == 0.0 and r["f_opkt_log"] == 0.0


def test_missing_ports_and_flags_become_zero_not_null(spark):
    df = spark.createDataFrame([_flow(proto="UDP", tdur=0.0, ipkt=1, ibyt=32, opkt=0, obyt=0)], FLOW_SCHEMA)
    r = add_features(df).select(FEATURE_COLUMNS).first()
    assert all(v is not None for v in r)
    assert r["f_sport_log"] == 0.0 and r["f_proto_udp"] == 1.0


def test_scaled_training_rows_lie_in_minus_one_to_one(spark, data_dir):
    flows = read_cicids(spark, str(data_dir / "cicids2018" / "mahdi__ids2018_sample.csv")).flows
    feats = add_features(flows).select(FEATURE_COLUMNS)
    scaler = Scaler.fit(feats)
    x = scaler.transform(np.array(feats.collect(), dtype=np.float64))
    assert x.min() >= -1.0 - 1e-6 and x.max() <= 1.0 + 1e-6
    varying = scaler.maximum > scaler.minimum
    assert np.allclose(x[:, varying].min(axis=0), -1, atol=1e-6) and np.allclose(x[:, varying].max(axis=0), 1, atol=1e-6)
    assert np.all(x[:, ~varying] == 0)  # e.g. sport: this layout has no source port


def test_scaler_round_trips_and_refuses_other_features():
    s = Scaler(np.zeros(18), np.arange(18, dtype=float))
    back = Scaler.from_json(s.to_json())
    assert np.array_equal(back.minimum, s.minimum) and np.array_equal(back.maximum, s.maximum)
    bad = s.to_json()
    bad["features"] = bad["features"][::-1]
    try:
        Scaler.from_json(bad)
    except ValueError as e:
        assert "trained on features" in str(e)
    else:
        raise AssertionError("a model with other features must not load")
