"""Host context on hand-built flow sequences (a burst from one host, a scan of many ports, a quiet
host, hosts without IPs), counted by hand; the same values whether a day is computed at once or
a later slice of it against the flows before it (what the stream does); and an ae-context model
that trains, saves, loads and scores with its fixed context scale."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from spot_ae_job.context import CONTEXT_COLUMNS, CONTEXT_FEATURES, FIXED_BOUNDS, add_context, raw_context
from spot_ae_job.features import FEATURE_COLUMNS, Scaler
from spot_ae_job.schema import FLOW_SCHEMA

T0 = 1_518_739_200  # 2018-02-16 00:00:00 UTC, a minute boundary


def _flow(i, sip, dip, dport, second, flag=".A..P...", obyt=200, tdur=0.5, ibyt=300):
    return dict(id=i, sip=sip, dip=dip, dport=dport, flag=flag, t=None if second is None else T0 + second, obyt=obyt,
                tdur=tdur, ibyt=ibyt)


FLOWS = (
    # burst: A sends 30 requests to W:80 within minute 0
    [_flow(i, "10.0.0.1", "10.0.0.9", 80, i) for i in range(1, 31)]
    # scan: S probes 20 ports of V in minute 5, every probe a SYN never answered
    + [_flow(100 + p, "10.0.0.2", "10.0.0.5", p, 300 + p, "......S.") for p in range(1, 21)]
    # quiet: Q sends one flow to W:443 in minute 0
    + [_flow(200, "10.0.0.3", "10.0.0.9", 443, 10)]
    # sliding distinct: D talks to X (minute 0), Y (30), Z (61), X again (65)
    + [_flow(300, "10.0.0.4", "10.0.1.1", 53, 0), _flow(301, "10.0.0.4", "10.0.1.2", 53, 30 * 60),
       _flow(302, "10.0.0.4", "10.0.1.3", 53, 61 * 60), _flow(303, "10.0.0.4", "10.0.1.1", 53, 65 * 60)]
    # no source IP / no timestamp: values of a flow alone
    + [_flow(400, None, None, 53, None, "......S."), _flow(401, "10.0.0.6", "10.0.0.9", 80, None)]
)


def _expect(flows=1, dports=1, dips=1, failed=0.0, dflows=1, dsips=1, svc1m=1, svc1h=1, flows1m=None, repeat=0.0,
            dsvc_repeat=0.0):
    return {"src_flows_1m": flows if flows1m is None else flows1m, "src_flows_1h": flows, "src_dports_1h": dports,
            "src_dips_1h": dips, "src_failed_1h": failed, "dst_flows_1h": dflows, "dst_sips_1h": dsips,
            "svc_flows_1m": svc1m, "svc_flows_1h": svc1h, "src_repeat_1h": repeat, "dsvc_repeat_1h": dsvc_repeat}


# counted by hand from FLOWS (whole clock minutes: the flow's own, and it plus the 59 before)
EXPECTED = {
    # every flow of the burst gets the same 200-byte answer: 29 of the 30 are this flow again
    **{i: _expect(flows=30, dflows=31, dsips=2, svc1m=30, svc1h=30, repeat=29 / 30, dsvc_repeat=29 / 30) for i in range(1, 31)},
    **{100 + p: _expect(flows=20, dports=20, failed=1.0, dflows=20, svc1m=1, svc1h=1) for p in range(1, 21)},
    200: _expect(dflows=31, dsips=2),
    300: _expect(), 301: _expect(dips=2, flows=2, flows1m=1),   # X (0) and Y (30) in [0, 30]
    302: _expect(dips=2, flows=2, flows1m=1),                    # [2, 61]: Y and Z; X (minute 0) has left
    303: _expect(dips=3, flows=3, flows1m=1),                    # [6, 65]: Y, Z and X again
    400: _expect(failed=1.0), 401: _expect(),
}


def _frame(spark, flows):
    names = [f.name for f in FLOW_SCHEMA.fields]
    data = []
    for f in flows:
        r = dict.fromkeys(names)
        r.update(sip=f["sip"], dip=f["dip"], dport=f["dport"], flag=f["flag"], proto="TCP", sport=40000 + f["id"],
                 tdur=f["tdur"], ipkt=3, ibyt=f["ibyt"], opkt=2, obyt=f["obyt"], unix_tstamp=f["t"])
        data.append(tuple(r[n] for n in names))
    return spark.createDataFrame(data, FLOW_SCHEMA).withColumn("id", F.col("sport") - 40000)


@pytest.fixture(scope="module")
def flows(spark):
    return _frame(spark, FLOWS)


def test_counts_match_the_hand_count(flows):
    got = {r["id"]: r.asDict() for r in raw_context(flows).collect()}
    assert set(got) == set(EXPECTED)
    for i, want in EXPECTED.items():
        assert {k: got[i][k] for k in want} == pytest.approx(want), i


def test_a_burst_and_a_scan_stand_out_from_a_quiet_host(flows):
    got = {r["id"]: r.asDict() for r in raw_context(flows).collect()}
    assert got[30]["svc_flows_1m"] == 30 and got[200]["svc_flows_1m"] == 1
    assert got[120]["src_dports_1h"] == 20 and got[120]["src_failed_1h"] == 1.0 and got[200]["src_dports_1h"] == 1


# A DDoS: 10 sources each send 5 requests of varying size to W:80 in minute 0 and get the same 935-byte
# answer; a benign client of W:80 in the same minute gets a different page. A slow connection flood: one
# source holds 6 connections of 100 s to V:80, sending a few bytes, never answered (0 bytes). A quiet
# host: two flows to two different services, with different answers.
DDOS = [_flow(1000 + 10 * s + k, f"18.0.0.{s}", "10.0.0.9", 80, 5 * s + k, ibyt=280 + 7 * k, obyt=935)
        for s in range(10) for k in range(5)] + [_flow(1200, "10.0.0.7", "10.0.0.9", 80, 40, obyt=5120)]
SLOW = [_flow(1300 + k, "18.0.1.1", "10.0.0.5", 80, 10 * k, ".AP.R...", obyt=0, tdur=100.0, ibyt=16) for k in range(6)]
QUIET = [_flow(1400, "10.0.0.8", "10.0.2.1", 443, 0, obyt=4000), _flow(1401, "10.0.0.8", "10.0.2.2", 53, 20, obyt=90)]


def test_repetition_marks_a_ddos_fan_in_and_a_slow_flood_but_not_a_quiet_host(spark):
    got = {r["id"]: r.asDict() for r in raw_context(_frame(spark, DDOS + SLOW + QUIET)).collect()}
    for s in range(10):  # W:80 saw 51 flows in the hour; 49 others answered 935 bytes like this one
        for k in range(5):
            g = got[1000 + 10 * s + k]
            assert g["dsvc_repeat_1h"] == pytest.approx(49 / 51) and g["src_repeat_1h"] == pytest.approx(4 / 5)
            assert g["dst_sips_1h"] == 11 and g["svc_flows_1h"] == 5
    assert got[1200]["dsvc_repeat_1h"] == 0.0 and got[1200]["src_repeat_1h"] == 0.0  # its page differs
    assert all(got[1300 + k]["src_repeat_1h"] == pytest.approx(5 / 6) for k in range(6))
    assert all(got[1300 + k]["dsvc_repeat_1h"] == pytest.approx(5 / 6) for k in range(6))
    assert got[1400]["src_repeat_1h"] == 0.0 and got[1401]["dsvc_repeat_1h"] == 0.0 and got[1401]["src_flows_1h"] == 2


def test_repetition_is_a_share_so_a_thinned_sample_keeps_it(spark):
    """One flow in three of the DDoS (a uniform sample) still repeats as often: the counts fall
    threefold, the shares stay near the full day's."""
    full = {r["id"]: r.asDict() for r in raw_context(_frame(spark, DDOS)).collect()}
    kept = [f for i, f in enumerate(DDOS) if i % 3 == 0]
    thin = {r["id"]: r.asDict() for r in raw_context(_frame(spark, kept)).collect()}
    i = kept[0]["id"]
    assert thin[i]["svc_flows_1h"] < full[i]["svc_flows_1h"]
    assert full[i]["dsvc_repeat_1h"] == pytest.approx(49 / 51) and thin[i]["dsvc_repeat_1h"] == pytest.approx(16 / 17)


def test_model_inputs_are_log_counts_and_every_row_is_kept_unchanged(flows):
    out = add_context(flows)
    assert out.columns == flows.columns + CONTEXT_COLUMNS and out.count() == len(FLOWS)
    got = {r["id"]: r for r in out.collect()}
    assert got[1]["f_src_flows_1h"] == pytest.approx(math.log1p(30), rel=1e-6)
    assert got[120]["f_src_failed_1h"] == 1.0
    assert got[400]["dport"] == 53 and got[400]["sip"] is None  # coalesced join keys never leak out
    before = {r["id"]: r for r in flows.collect()}
    assert all(got[i][c] == before[i][c] for i in before for c in flows.columns)


def test_a_later_slice_against_the_flows_before_it_equals_the_day_at_once(flows):
    day = {r["id"]: tuple(r[c] for c in CONTEXT_COLUMNS) for r in add_context(flows).collect()}
    later = flows.where(F.col("unix_tstamp") >= T0 + 61 * 60)  # a micro-batch: D's last two flows
    batch = {r["id"]: tuple(r[c] for c in CONTEXT_COLUMNS) for r in add_context(later, universe=flows).collect()}
    assert set(batch) == {302, 303} and all(batch[i] == day[i] for i in batch)
    alone = {r["id"]: r["f_src_dips_1h"] for r in add_context(later).collect()}
    assert alone[303] < day[303][CONTEXT_FEATURES.index("src_dips_1h")]  # without its past it would count less


def test_the_context_scale_is_fixed_whatever_the_training_rows_hold(flows):
    quiet = add_context(flows).where(F.col("id") == 200)  # every context input constant
    s = Scaler.fit(add_features_for(quiet), FEATURE_COLUMNS + CONTEXT_COLUMNS, fixed=FIXED_BOUNDS)
    k = FEATURE_COLUMNS.__len__()
    assert np.all(s.minimum[k:] == 0.0) and np.all(s.scale[k:] > 0)  # a constant context column still counts
    burst = np.zeros(len(s.columns))
    burst[k + CONTEXT_FEATURES.index("svc_flows_1m")] = math.log1p(30)
    assert s.transform(burst[None, :])[0, k + CONTEXT_FEATURES.index("svc_flows_1m")] > -1.0


def add_features_for(df):
    from spot_ae_job.features import add_features

    return add_features(df)


def test_an_ae_context_model_trains_saves_loads_and_scores_through_the_same_scorer(spark, flows, tmp_path):
    from spot_ae_job.model import AEModel, train_autoencoder
    from spot_ae_job.score import score_flows

    m = train_autoencoder(flows.unionByName(flows), epochs=1, progress=lambda _: None, variant="ae-context")
    n = 18 + len(CONTEXT_FEATURES)
    assert m.kind == "ae-context" and m.feature_columns == FEATURE_COLUMNS + CONTEXT_COLUMNS
    assert m.weights[0].shape == (n, 12) and m.meta["architecture"] == f"{n}-12(tanh)-{n}"
    assert m.meta["threshold_resolution"]["benign_flows"] > 0
    uri = m.save(spark, (tmp_path / "models").as_uri())
    back = AEModel.load(spark, (tmp_path / "models").as_uri(), m.version)
    assert back.kind == "ae-context" and back.feature_columns == m.feature_columns and uri.endswith(m.version)
    scored = {r["id"]: r for r in score_flows(back, flows).collect()}
    assert len(scored) == len(FLOWS) and all(np.isfinite(r["score"]) for r in scored.values())
    assert scored[1]["f_svc_flows_1m"] == pytest.approx(math.log1p(30), rel=1e-6)  # context kept for explanations


def test_a_scaler_saved_before_the_feature_list_was_generalised_loads_as_the_18():
    old = {"features": [c[2:] for c in FEATURE_COLUMNS], "min": [0.0] * 18, "max": [1.0] * 18}
    assert list(Scaler.from_json(old).columns) == FEATURE_COLUMNS
    wide = Scaler(np.zeros(18 + len(CONTEXT_COLUMNS)), np.ones(18 + len(CONTEXT_COLUMNS)), tuple(FEATURE_COLUMNS + CONTEXT_COLUMNS))
    assert Scaler.from_json(wide.to_json()).columns == wide.columns
    with pytest.raises(ValueError, match="trained on features"):
        Scaler.from_json({**old, "features": ["made_up"] + old["features"][1:]})
