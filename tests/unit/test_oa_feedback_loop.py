"""End to end: a verdict given in the OA changes what the next ML run says (SPEC §2, issue 6).

The real job scores a day of the CIC-IDS2018 excerpt (`spot-ae demo`), the analyst marks the most
suspicious flow low risk (sev 3) through the OA's API, the real `spot-ae ml-ops` runs the day
again, and that flow's reconstruction error must go down (Spot adds sev-3 flows to training
DUPFACTOR times). Two short trainings, in this process.
"""
from __future__ import annotations

import re

import pandas as pd
import pytest

from spot_ae_job import cli
from spot_ae_job.oa.app import create_app
from test_oa_api import _config, login

DAY = "20180216"
pytestmark = pytest.mark.slow

KEY = ["treceived", "sip", "dip", "sport", "dport", "ipkt", "ibyt"]


def _job(*args: str) -> None:
    """`spot-ae ARGS` in this process: the test session's warm JVM (test_cli runs the CLI as processes)."""
    assert cli.main(list(args)) == 0, f"spot-ae {' '.join(args)} failed"


def _flow(huser, row: dict) -> dict:
    scores = pd.read_parquet(huser / "flow" / "scored_results" / DAY / "all_scores")
    hit = scores
    for k in KEY:
        hit = hit[hit[k] == row[k]]
    assert len(hit) >= 1
    score = float(hit.iloc[0]["score"])
    return {"score": score, "suspicious": bool(hit.iloc[0]["suspicious"]), "rank": hit.iloc[0]["rank"],
            "percentile": float((scores["score"] < score).mean())}


def test_a_low_risk_verdict_lowers_that_flows_score_on_the_next_run(spark, tmp_path, data_dir, capsys):
    huser = tmp_path / "user" / "spot"
    huser.mkdir(parents=True)
    _job("demo", "--huser", f"file://{huser}", "--epochs", "3", "--day", DAY, "--master", "local[2]")

    cfg = _config()
    cfg.huser = f"file://{huser}"
    c = create_app(cfg).test_client()
    token = login(c)
    top = c.get(f"/api/v1/days/{DAY}/suspicious?size=1").json["rows"][0]
    before = _flow(huser, top)
    assert before["suspicious"] and before["rank"] == 1
    r = c.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201

    capsys.readouterr()
    _job("ml-ops", DAY, "flow", "--huser", f"file://{huser}", "--epochs", "3", "--master", "local[2]")
    after = _flow(huser, top)
    assert re.search(r"feedback: [1-9][0-9]* low-risk flows", capsys.readouterr().out)
    assert after["score"] < before["score"]
    assert after["percentile"] < before["percentile"]
    print(f"marked flow: score {before['score']:.4f} -> {after['score']:.4f}, percentile "
          f"{before['percentile']:.3f} -> {after['percentile']:.3f}, suspicious {before['suspicious']} -> {after['suspicious']}")
