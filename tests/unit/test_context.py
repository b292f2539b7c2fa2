"""Per-host context features: counted by hand on a tiny flow set, neutral where a flow has no
source IP or timestamp, and carried by an ae-context model through save, load and scoring."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from spot_ae_job.context import CONTEXT_COLUMNS, add_context, raw_context
from spot_ae_job.features import FEATURE_COLUMNS, Scaler
from spot_ae_job.schema import FLOW_SCHEMA

T0 = 1_518_800_000

# (id, sip, dip, dport, seconds after T0, flag)
# host A: four flows within a minute to 2 IPs on 3 ports, one RST, one bare SYN; a fifth flow
# 60 s after the fourth sees only itself and that fourth flow (the first three are > 60 s old).
# host B: a single flow. The last two rows have no IP / no timestamp: neutral values.
ROWS = [
    (1, "10.0.0.1", "10.0.0.9", 80, 0, ".A..P..."),
    (2, "10.0.0.1", "10.0.0.9", 443, 10, ".A.R...."),
    (3, "10.0.0.1", "10.0.0.8", 22, 30, "......S."),
    (4, "10.0.0.1", "10.0.0.9", 80, 60, ".A..P..F"),
    (5, "10.0.0.1", "10.0.0.7", 25, 120, ".A..P..."),
    (6, "10.0.0.2", "10.0.0.9", 80, 5, ".A..P..."),
    (7, None, None, 53, None, "......S."),
    (8, "10.0.0.3", "10.0.0.9", 80, None, ".A..P..."),
]
# id -> (flows, distinct dports, distinct dips, failed share), counted by hand from ROWS
EXPECTED = {
    1: (1, 1, 1, 0.0),
    2: (2, 2, 1, 1 / 2),
    3: (3, 3, 2, 2 / 3),
    4: (4, 3, 2, 2 / 4),   # [0, 60] holds flows 1-4
    5: (2, 2, 2, 0.0),     # [60, 120] holds flows 4 and 5
    6: (1, 1, 1, 0.0),
    7: (1, 1, 1, 1.0),     # no IP, no timestamp: alone, its own SYN-without-ACK
    8: (1, 1, 1, 0.0),     # IP but no timestamp
}


@pytest.fixture(scope="module")
def flows(spark):
    names = [f.name for f in FLOW_SCHEMA.fields]
    data = []
    for i, sip, dip, dport, dt, flag in ROWS:
        r = dict.fromkeys(names)
        r.update(sip=sip, dip=dip, dport=dport, flag=flag, proto="TCP", sport=40000 + i, tdur=0.5,
                 ipkt=3, ibyt=300, opkt=2, obyt=200, unix_tstamp=None if dt is None else T0 + dt)
        data.append(tuple(r[n] for n in names))
    return spark.createDataFrame(data, FLOW_SCHEMA).withColumn("id", F.col("sport") - 40000)


def test_window_counts_match_the_hand_count(flows):
    got = {r["id"]: (r["ctx_flows"], r["ctx_dports"], r["ctx_dips"], r["ctx_failed"]) for r in raw_context(flows).collect()}
    assert set(got) == set(EXPECTED)
    for i, (n, ports, ips, share) in EXPECTED.items():
        assert got[i][:3] == (n, ports, ips), i
        assert got[i][3] == pytest.approx(share), i


def test_model_inputs_are_log_counts_and_the_rows_are_kept(flows):
    out = add_context(flows)
    assert out.columns == flows.columns + CONTEXT_COLUMNS
    got = {r["id"]: r for r in out.collect()}
    assert got[4][CONTEXT_COLUMNS[0]] == pytest.approx(math.log1p(4), rel=1e-6)
    assert got[3][CONTEXT_COLUMNS[1]] == pytest.approx(math.log1p(3), rel=1e-6)
    assert got[7][CONTEXT_COLUMNS[2]] == pytest.approx(math.log1p(1), rel=1e-6)
    assert out.count() == len(ROWS)


def test_a_scaler_saved_before_the_feature_list_was_generalised_loads_as_the_18():
    old = {"features": [c[2:] for c in FEATURE_COLUMNS], "min": [0.0] * 18, "max": [1.0] * 18}
    s = Scaler.from_json(old)
    assert list(s.columns) == FEATURE_COLUMNS
    wide = Scaler(np.zeros(22), np.ones(22), tuple(FEATURE_COLUMNS + CONTEXT_COLUMNS))
    assert Scaler.from_json(wide.to_json()).columns == wide.columns
    with pytest.raises(ValueError, match="trained on features"):
        Scaler.from_json({**old, "features": old["features"] + ["made_up"], "min": [0.0] * 19, "max": [1.0] * 19})


def test_an_ae_context_model_trains_saves_loads_and_scores_through_the_same_scorer(spark, flows, tmp_path):
    from spot_ae_job.model import AEModel, train_autoencoder
    from spot_ae_job.score import score_flows

    m = train_autoencoder(flows.unionByName(flows), epochs=1, progress=lambda _: None, variant="ae-context")
    assert m.kind == "ae-context" and m.feature_columns == FEATURE_COLUMNS + CONTEXT_COLUMNS
    assert m.weights[0].shape == (22, 12) and m.meta["architecture"] == "22-12(tanh)-22"
    uri = m.save(spark, (tmp_path / "models").as_uri())
    back = AEModel.load(spark, (tmp_path / "models").as_uri(), m.version)
    assert back.kind == "ae-context" and back.feature_columns == m.feature_columns and uri.endswith(m.version)
    scored = {r["id"]: r["score"] for r in score_flows(back, flows).collect()}
    assert len(scored) == len(ROWS) and all(np.isfinite(v) for v in scored.values())
