"""Explanation columns: the feature the model reconstructs worst comes first, in flow units."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import Row

from spot_ae_job.explain import EXPLANATION_COLUMNS, add_explanations, explain, with_null_explanations
from spot_ae_job.features import FEATURES, N_FEATURES, Scaler
from spot_ae_job.model import HIDDEN, AEModel
from spot_ae_job.schema import FLOW_SCHEMA

# A network whose reconstruction is always the benign median (zero weights, the decoder bias
# set to the scaled medians): a feature's error is then its scaled distance from the median.
LO = np.zeros(N_FEATURES)
HI = np.full(N_FEATURES, 20.0)
MEDIAN = dict(zip(FEATURES, [1, 0, 0, 0, 1, 0, 0, 1, 0, 10.8, 6.1, 0.7, 1.1, 4.2, 0.7, 4.5, 3.1, 3.8]))


def _model():
    scaler = Scaler(LO, HI)
    med = np.array([MEDIAN[f] for f in FEATURES])
    weights = [np.zeros((N_FEATURES, HIDDEN)), np.zeros(HIDDEN), np.zeros((HIDDEN, N_FEATURES)), scaler.transform(med)]
    return AEModel(weights, scaler, threshold=0.0, meta={"version": "t", "benign_medians": MEDIAN})


def _flow(**kw):
    base = {f.name: None for f in FLOW_SCHEMA.fields}
    base.update(kw)
    return Row(**base)


def test_the_blown_up_feature_comes_first_with_its_value_and_the_benign_median():
    m = _model()
    raw = np.array([[MEDIAN[f] for f in FEATURES]])
    raw[0, FEATURES.index("dur_log")] = math.log1p(3600.0)  # an hour-long flow
    raw[0, FEATURES.index("dport_log")] = 7.0  # a little off too
    got = explain(m, raw).iloc[0]
    assert got["expl1_feature"] == "tdur" and got["expl1_value"] == pytest.approx(3600.0, rel=1e-6)
    assert got["expl1_benign_median"] == pytest.approx(math.expm1(0.7), abs=1e-4)
    assert got["expl2_feature"] == "dport"
    assert got["expl1_error"] > got["expl2_error"] >= got["expl3_error"] >= 0
    assert got["expl1_error"] == pytest.approx((0.1 * (math.log1p(3600.0) - 0.7)) ** 2)


def test_spark_adds_the_columns_after_the_flow_columns(spark):
    m = _model()
    flows = spark.createDataFrame(
        [_flow(proto="TCP", flag="...A.S.", sport=51000, dport=443, tdur=0.5, ipkt=2, ibyt=150, opkt=1, obyt=60),
         _flow(proto="TCP", flag="...A.S.", sport=51000, dport=443, tdur=0.5, ipkt=2, ibyt=10**9, opkt=1, obyt=60)],
        FLOW_SCHEMA,
    )
    out = add_explanations(m, flows)
    assert out.columns == flows.columns + EXPLANATION_COLUMNS
    big = out.where("ibyt = 1000000000").first()
    assert big["expl1_feature"] in ("ibyt", "ibyt/ipkt") and big["expl2_feature"] in ("ibyt", "ibyt/ipkt")
    assert big["expl1_value"] == pytest.approx(1e9 if big["expl1_feature"] == "ibyt" else 5e8, rel=1e-5)


def test_rows_not_explained_get_typed_nulls(spark):
    flows = spark.createDataFrame([_flow(proto="UDP")], FLOW_SCHEMA)
    out = with_null_explanations(flows)
    assert out.columns[-len(EXPLANATION_COLUMNS):] == EXPLANATION_COLUMNS
    assert all(out.first()[c] is None for c in EXPLANATION_COLUMNS)
    assert dict(out.dtypes)["expl1_error"] == "double" and dict(out.dtypes)["expl1_feature"] == "string"


def test_context_counts_are_shown_as_counts_and_context_shares_as_shares():
    from spot_ae_job.context import COUNTS, SHARES
    from spot_ae_job.explain import to_flow_units

    names = COUNTS + SHARES
    got = to_flow_units(np.array([math.log1p(30)] * len(COUNTS) + [0.8] * len(SHARES)), names)
    assert list(got) == pytest.approx([30.0] * len(COUNTS) + [0.8] * len(SHARES))
