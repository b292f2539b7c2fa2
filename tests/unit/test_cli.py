"""The command line round trip (CSV -> flow table -> ml_ops -> Spot's results) and bad input."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from spot_ae_job.schema import RESULT_COLUMNS


def run(*args, cwd=None):
    env = {**os.environ, "SPOT_AE_SPARK_LOGLEVEL": "ERROR"}
    return subprocess.run([sys.executable, "-m", "spot_ae_job", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


@pytest.fixture(scope="module")
def day(tmp_path_factory, data_dir):
    huser = tmp_path_factory.mktemp("huser")
    src = data_dir / "cicids2018" / "ishtiaq__Brute_Force_XSS.csv"
    r = run("load-csv", "--huser", str(huser), "--day", "20180222", str(src))
    assert r.returncode == 0, r.stderr
    r = run("ml-ops", "20180222", "flow", "25", "--huser", str(huser), "--epochs", "3", "--master", "local[2]")
    assert r.returncode == 0, r.stderr
    return huser, r


def test_ml_ops_writes_spots_result_layout(day):
    huser, _ = day
    out = huser / "flow" / "scored_results" / "20180222"
    with open(out / "scores" / "flow_results.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == RESULT_COLUMNS
    scores = [float(r[-1]) for r in rows[1:]]
    assert 0 < len(scores) <= 25 and scores == sorted(scores, reverse=True)
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["model"] == "ae" and run_json["flows_scored"] == 734 and run_json["written"] == len(scores)
    assert min(scores) > run_json["threshold"]
    assert (huser / "flow" / "models" / "LATEST").read_text().strip() == run_json["model_version"]


def test_progress_is_visible(day):
    _, r = day
    assert "epoch 3/3" in r.stdout and "scored 734 flows" in r.stdout


def test_saved_model_scores_a_day_without_retraining(day):
    huser, _ = day
    r = run("score", "--huser", str(huser), "--day", "20180222", "--max-results", "5", "--master", "local[2]")
    assert r.returncode == 0, r.stderr
    assert "epoch" not in r.stdout
    with open(huser / "flow" / "scored_results" / "20180222" / "scores" / "flow_results.csv") as fh:
        assert len(fh.readlines()) == 1 + 5


@pytest.mark.parametrize(
    "args,message",
    [
        (["ml-ops", "2018-02-22", "flow"], "day must be YYYYMMDD"),
        (["ml-ops", "20180231", "flow"], "not a calendar date"),
        (["ml-ops", "20180222", "flow", "1e-5"], "MAXRESULTS must be an integer"),
        (["ml-ops", "20180222", "flow", "10", "x"], "TOL must be a number"),
    ],
)
def test_bad_arguments_are_clear_errors_before_any_work(args, message):
    r = run(*args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_a_missing_day_is_a_clear_error(tmp_path):
    r = run("score", "--huser", str(tmp_path), "--day", "20180101")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no trained model" in r.stderr or "no flows" in r.stderr


def test_loading_a_non_cic_file_is_a_clear_error(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a,b\n1,2\n")
    r = run("load-csv", "--huser", str(tmp_path / "h"), str(f))
    assert r.returncode == 2 and "not a CICFlowMeter CSV" in r.stderr and "Traceback" not in r.stderr
