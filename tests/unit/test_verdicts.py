"""Verdicts that persist (issue 11): which verdict is in force, precision per model, and a verdict
given in the OA on one day changing the next day's run (suppressed alerts, training rows)."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from spot_ae_job import cli, verdicts
from spot_ae_job.alerts import read_alerts
from spot_ae_job.errors import SpotAEError
from spot_ae_job.oa.app import create_app
from test_oa_api import _config, login

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
DAY1, DAY2 = "20180215", "20180216"


def v(sev, when_h, sip="10.0.0.1", expires_h=None, model="m1", dport=443, family=None):
    now = T0 + dt.timedelta(hours=when_h)
    exp = T0 + dt.timedelta(hours=expires_h) if expires_h is not None else None
    return verdicts.new_verdict(sip=sip, dip="10.0.0.2", dport=dport, proto="TCP", sev=sev, who="alice", day=DAY1,
                                model_version=model, expires=exp, now=now, family=family)


def test_the_newest_verdict_on_a_connection_is_in_force_until_it_expires():
    low = v(3, 0, expires_h=48)
    assert verdicts.in_force([low], T0 + dt.timedelta(hours=1)) == [low]
    assert verdicts.in_force([low], T0 + dt.timedelta(hours=49)) == []
    assert verdicts.in_force([low], T0 - dt.timedelta(hours=1)) == []  # not given yet


def test_a_later_high_verdict_lifts_a_low_one_and_an_expired_one_revives_nothing():
    low, high = v(3, 0), v(1, 5, expires_h=10)
    assert verdicts.in_force([low, high], T0 + dt.timedelta(hours=6)) == [high]
    assert verdicts.in_force([high, low], T0 + dt.timedelta(hours=11)) == []


def test_precision_per_model_version_counts_confirmed_over_all_verdicts():
    rows = [v(1, 0, "10.0.0.1"), v(2, 0, "10.0.0.3"), v(3, 0, "10.0.0.4"), v(3, 0, "10.0.0.5", model="m2"),
            v(3, 0, "10.0.0.6"), v(1, 1, "10.0.0.6")]  # the last one overrides the one before
    by = {r["model_version"]: r for r in verdicts.precision_by_model(rows)}
    assert by["m1"] == {"model_version": "m1", "confirmed": 3, "dismissed": 1, "precision": 0.75}
    assert by["m2"]["precision"] == 0.0


def test_bad_verdicts_are_refused():
    with pytest.raises(SpotAEError, match="sev must be"):
        v(4, 0)
    with pytest.raises(SpotAEError, match="expiry must be in the future"):
        v(3, 5, expires_h=1)
    with pytest.raises(SpotAEError, match="family must be one of"):
        v(1, 0, family="worm")
    with pytest.raises(SpotAEError, match="a family names a confirmed attack"):
        v(3, 0, family="scan")
    with pytest.raises(SpotAEError, match="sip must be an IP"):
        verdicts.new_verdict(sip="x", dip="10.0.0.2", dport=1, proto="TCP", sev=3, who="a", day=DAY1)


# ---- end to end: a verdict on day 1 changes day 2 ----------------------------------------

def _run(*args):
    assert cli.main(list(args)) == 0, args


def _key(a: dict) -> tuple:
    return (a["source"]["ip"], a["destination"]["ip"], a["destination"]["port"], a["network"]["transport"].upper())


@pytest.mark.slow
def test_a_verdict_given_on_day_1_changes_the_results_of_day_2(spark, tmp_path, data_dir, capsys):
    root = tmp_path / "user" / "spot"
    huser = f"file://{root}"
    common = ["--huser", huser, "--master", "local[2]"]
    _run("load-csv", *common, str(data_dir / "cicids2018" / "aegmm__toy_dataset.csv"))
    _run("ml-ops", DAY1, "flow", *common, "--epochs", "2")
    model1 = (root / "flow/models/LATEST").read_text().strip()
    # TOL 0 flags every flow, so that day 2's alerts include the connections day 1 also had
    _run("ml-ops", DAY2, "flow", *common, "--model-version", model1, "--tol", "0")
    _run("ml-ops", DAY1, "flow", *common, "--model-version", model1, "--tol", "0")
    before = read_alerts(spark, DAY2, huser)

    cfg = _config()
    cfg.huser = huser
    client = create_app(cfg).test_client()
    token = login(client)
    rows = client.get(f"/api/v1/days/{DAY1}/suspicious?size=500").json["rows"]
    day2_keys = {_key(a) for a in before}
    shared = [r for r in rows if (r["sip"], r["dip"], r["dport"], r["proto"]) in day2_keys]
    assert len(shared) >= 2, "the excerpt has connections seen on both days"
    low, high = shared[0], next(r for r in shared[1:] if (r["sip"], r["dip"], r["dport"]) != (shared[0]["sip"], shared[0]["dip"], shared[0]["dport"]))
    for row, sev in ((low, 3), (high, 1)):
        r = client.post(f"/api/v1/days/{DAY1}/feedback", json={"rank": row["rank"], "sev": sev, "expires_days": 30},
                        headers={"X-CSRF-Token": token})
        assert r.status_code == 201, r.json
    low_id = next(x["id"] for x in client.get("/api/v1/verdicts").json["verdicts"] if x["sev"] == 3)

    # day 2 scored again by the same model: exactly the low-risk connection's alerts are gone
    _run("ml-ops", DAY2, "flow", *common, "--model-version", model1, "--tol", "0")
    after = read_alerts(spark, DAY2, huser)
    low_key = (low["sip"], low["dip"], low["dport"], low["proto"])
    high_key = (high["sip"], high["dip"], high["dport"], high["proto"])
    gone = [a for a in before if _key(a) == low_key]
    assert sorted(a["event"]["id"] for a in after) == sorted(a["event"]["id"] for a in before if _key(a) != low_key)
    assert any(_key(a) == high_key for a in after)  # a high-risk verdict suppresses nothing
    summary = json.loads((root / "flow/scored_results" / DAY2 / "alerts_summary.json").read_text())
    assert summary["suppressed_by_verdict"] == {low_id: len(gone)}

    # the OA shows what the verdict changed
    seen = {x["id"]: x for x in client.get("/api/v1/verdicts").json["verdicts"]}
    assert seen[low_id]["in_force"] and seen[low_id]["in_training"] and seen[low_id]["who"] == "alice"
    assert seen[low_id]["suppressed_in"] == [{"day": DAY2, "model_version": model1, "created": summary["created"], "suppressed": len(gone)}]
    prec = {p["model_version"]: p for p in client.get("/api/v1/verdicts").json["precision"]}
    assert prec[model1] == {"model_version": model1, "confirmed": 1, "dismissed": 1, "precision": 0.5}

    # day 2 trained anew: the low-risk flow joins the baseline (once, though the OA also wrote
    # Spot's ml_feedback.csv), the high-risk one does not
    capsys.readouterr()
    _run("ml-ops", DAY2, "flow", *common, "--epochs", "2")
    assert "feedback: 1 low-risk flows from analyst verdicts" in capsys.readouterr().out
    model2 = (root / "flow/models/LATEST").read_text().strip()
    assert json.loads((root / "flow/models" / model2 / "model.json").read_text())["feedback_flows"] == 1


def test_a_malformed_verdict_file_is_skipped_by_the_spark_side_not_fatal(spark, tmp_path):
    root = tmp_path / "flow" / verdicts.VERDICTS_DIR
    root.mkdir(parents=True)
    good = v(3, 0)
    (tmp_path / "flow" / verdicts.file_name(good)).write_bytes(verdicts.to_line(good))
    (root / "20261101T000000Z-broken.json").write_text('{"sev": "high", "day": 20180215\n')
    (root / "20261101T000001Z-noday.json").write_text(json.dumps({**good, "id": "x", "day": None}))
    assert [r["id"] for r in verdicts.read_all(spark, tmp_path.as_uri())] == [good["id"]]
