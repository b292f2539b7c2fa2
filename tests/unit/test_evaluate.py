"""`spot-ae evaluate`: every day present gets a row for every model, threshold mode and treatment
of failed attempts; the figures are the metrics of the scores it wrote; bad input ends in one
clear line and a non-zero exit."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from spot_ae_job import evaluate, metrics
from spot_ae_job.ingest.cicids import read_cicids


ATTEMPTED_LABEL = "DDoS-LOIC-HTTP"


@pytest.fixture(scope="module")
def inputs(data_dir, tmp_path_factory):
    """timestamps and IPs (10 days) + a file with neither (a "day" of its own, no LDA documents).
    Every row of the improved excerpt has Attempted Category -1, so the copy marks its LOIC-HTTP
    rows as failed attempts the way the improved files do (category 1, label "... - Attempted")."""
    d = data_dir / "cicids2018"
    copy = tmp_path_factory.mktemp("attempted") / "aegmm_with_attempts.csv"
    with (d / "aegmm__toy_dataset.csv").open(newline="") as f, copy.open("w", newline="") as g:
        rd, wr = csv.reader(f), csv.writer(g)
        head = next(rd)
        wr.writerow(head)
        li, ai = head.index("Label"), head.index("Attempted Category")
        for row in rd:
            if row[li] == ATTEMPTED_LABEL:
                row[li], row[ai] = ATTEMPTED_LABEL + " - Attempted", "1"
            wr.writerow(row)
    return [str(copy), str(d / "ishtiaq__SQL_Injection.csv")]


@pytest.fixture(scope="module")
def run(spark, inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluation")
    argv = [a for p in inputs for a in ("--data", p)]
    argv += ["--epochs", "1", "--topics", "5", "--lda-iter", "5", "--out", str(out), "--master", "local[2]",
             "--bootstrap", "50", "--shuffle-partitions", "2"]  # keep the shared test session as conftest made it
    assert evaluate.main(argv) == 0
    with (out / "evaluation.csv").open() as f:
        rows = list(csv.DictReader(f))
    return out, rows, json.loads((out / "evaluation.json").read_text())


def _paper(rows, how="attack"):
    return [r for r in rows if r["threshold_mode"] == evaluate.PAPER_MODE and r["attempted_as"] == how]


@pytest.fixture(scope="module")
def expected_days(spark, inputs):
    """Days and their counts as the project's reader sees the same files."""
    flows = evaluate.with_day(read_cicids(spark, inputs).flows)
    return {r[evaluate.DAY]: (r["n"], r["a"]) for r in flows.groupBy(evaluate.DAY).agg(
        F.count("*").alias("n"), F.sum(F.col("is_attack").cast("int")).alias("a")).collect()}


MODES = [evaluate.PAPER_MODE, "p95", "benign-fpr 0.01", "benign-fpr 0.001", "alerts-per-day 1000"]


def test_every_day_has_a_row_for_every_model_mode_and_attempted_treatment(run, expected_days):
    _, rows, summary = run
    assert "file:ishtiaq__SQL_Injection.csv" in expected_days and len(expected_days) == 11
    keys = [(r["day"], r["model"], r["attempted_as"], r["threshold_mode"]) for r in rows]
    assert len(keys) == len(set(keys))
    assert set(keys) == {(d, m, how, mode) for d in expected_days for m in ("ae", "ae-context", "lda")
                         for how in ("attack", "benign", "exclude") for mode in MODES}
    assert summary["threshold_modes"] == MODES and set(summary["thresholds"]) == {"ae", "ae-context", "lda"}
    for r in _paper(rows):
        assert (int(r["flows"]), int(r["attacks"])) == expected_days[r["day"]]
    # every fitted mode has its own threshold and confusion matrix on the days a model scored
    for r in rows:
        if int(r["scored"] or 0) > 0:
            assert float(r["threshold"]) == summary["thresholds"][r["model"]][r["threshold_mode"]]
            assert int(r["alerts"]) == int(r["tp"]) + int(r["fp"])


def test_failed_attempts_are_counted_three_ways(run, expected_days):
    _, rows, _ = run
    n = 205  # LOIC-HTTP rows of 20/02 in the excerpt, marked as attempts by the fixture
    by = {(r["attempted_as"], r["model"]): r for r in rows
          if r["day"] == "2018-02-20" and r["threshold_mode"] == evaluate.PAPER_MODE}
    flows, attacks = expected_days["2018-02-20"]
    for m in ("ae", "ae-context", "lda"):
        assert int(by[("attack", m)]["attempted"]) == n
        assert (int(by[("attack", m)]["flows"]), int(by[("attack", m)]["attacks"])) == (flows, attacks)
        assert (int(by[("benign", m)]["flows"]), int(by[("benign", m)]["attacks"])) == (flows, attacks - n)
        assert int(by[("benign", m)]["benign"]) == int(by[("attack", m)]["benign"]) + n
        assert (int(by[("exclude", m)]["flows"]), int(by[("exclude", m)]["attacks"])) == (flows - n, attacks - n)
        assert int(by[("exclude", m)]["scored"]) <= flows - n


def test_recall_per_attack_type_for_every_model_and_mode(run):
    out, _, _ = run
    with (out / "per_attack.csv").open() as f:
        per = list(csv.DictReader(f))
    attempted = {(r["model"], r["attempted_as"]) for r in per if r["attack"] == ATTEMPTED_LABEL + " - Attempted"}
    assert attempted == {(m, "attack") for m in ("ae", "ae-context", "lda")}  # benign or left out otherwise
    hulk = [r for r in per if r["attack"] == "DoS Hulk" and r["attempted_as"] == "attack"]
    assert {(r["model"], r["threshold_mode"]) for r in hulk} == {(m, x) for m in ("ae", "ae-context", "lda") for x in MODES}
    for r in hulk:
        assert int(r["flows"]) == 1275 and float(r["recall"]) == pytest.approx(int(r["flagged"]) / 1275)


def test_auc_intervals_where_there_are_enough_rows(run):
    _, rows, _ = run
    for r in _paper(rows):
        if r["model"] == "ae" and r["day"] == "2018-02-16":  # 1275 attacks, 253 benign: enough
            assert float(r["roc_auc_lo"]) <= float(r["roc_auc"]) <= float(r["roc_auc_hi"])
            assert float(r["pr_auc_lo"]) <= float(r["pr_auc"]) <= float(r["pr_auc_hi"])
        if r["day"] == "2018-02-15":  # 22 attacks: too few for an interval
            assert r["roc_auc_lo"] == "" and r["roc_auc"] != ""


def test_one_training_day_and_the_rest_are_test_days(run):
    _, rows, summary = run
    train = {r["day"] for r in rows if r["role"] == "train"}
    assert train == {summary["train_day"]}
    # the default picks the day with the most benign flows that carry IPs
    days = summary["days"]
    assert summary["train_day"] == max(days, key=lambda d: (days[d]["benign_with_ips"], days[d]["benign"]))


def test_lda_is_reported_not_applicable_where_flows_have_no_ips(run):
    _, rows, _ = run
    (lda,) = [r for r in _paper(rows) if r["day"] == "file:ishtiaq__SQL_Injection.csv" and r["model"] == "lda"]
    (ae,) = [r for r in _paper(rows) if r["day"] == "file:ishtiaq__SQL_Injection.csv" and r["model"] == "ae"]
    assert "not applicable" in lda["note"] and lda["f1"] == "" and lda["roc_auc"] == ""
    assert int(lda["unscored"]) == int(lda["flows"])
    assert ae["f1"] != "" and int(ae["scored"]) == int(ae["flows"])


def test_figures_are_the_metrics_of_the_scores_written(spark, run):
    """Recompute one day per model with the numpy reference from the Parquet scores."""
    out, rows, summary = run
    scores = spark.read.parquet(str(out / "scores"))
    for model, higher in (("ae", True), ("ae-context", True), ("lda", False)):
        pts = scores.where((F.col("model") == model) & (F.col(evaluate.DAY) == "2018-02-16")).collect()
        y = np.array([p["is_attack"] for p in pts])
        s = np.array([p["score"] for p in pts], dtype=float)
        for mode in (evaluate.PAPER_MODE, "benign-fpr 0.01"):
            (r,) = [r for r in rows if r["day"] == "2018-02-16" and r["model"] == model
                    and r["threshold_mode"] == mode and r["attempted_as"] == "attack"]
            ref = metrics.reference_metrics(y, s, summary["thresholds"][model][mode], higher_is_suspicious=higher)
            for k in ("tp", "fp", "tn", "fn"):
                assert int(r[k]) == ref[k], (model, mode, k)
            for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "recall_at_fpr_0.01"):
                if math.isnan(ref[k]):  # e.g. precision when a threshold flags nothing: an empty cell
                    assert r[k] == "", (model, mode, k)
                else:
                    assert float(r[k]) == pytest.approx(ref[k], abs=1e-9), (model, mode, k)
            assert float(r["threshold"]) == summary["thresholds"][model][mode]


def test_paper_reference_numbers_sit_beside_the_matching_days(run):
    _, rows, _ = run
    (r,) = [r for r in _paper(rows) if r["day"] == "2018-02-20" and r["model"] == "ae"]
    assert float(r["paper_f1"]) == evaluate.PAPER_TABLE_I["02-20"]["ae"][3]
    (r,) = [r for r in _paper(rows) if r["day"] == "2018-02-22" and r["model"] == "ae"]
    assert r["paper_f1"] == ""


def test_table_and_chart_are_written(run, expected_days):
    out, _, _ = run
    md = (out / "table_1.md").read_text()
    for d in expected_days:
        assert f"| {d}" in md
    assert "AE F1" in md and "LDA F1" in md and "AE-context F1" in md and "| 2018-02-14 | paper |" in md
    assert "## Threshold modes" in md and "## Failed attempts" in md and "## Recall per attack type" in md
    png = (out / "fig_1_f1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_day_spellings_resolve_to_the_days_present():
    days = ["2018-02-14", "2018-02-28", "file:ishtiaq__SQL_Injection.csv"]
    assert evaluate.resolve_day("20180228", days) == "2018-02-28"
    assert evaluate.resolve_day("28/02", days) == "2018-02-28"
    assert evaluate.resolve_day("14/02/2018", days) == "2018-02-14"
    assert evaluate.resolve_day("ishtiaq__SQL_Injection.csv", days) == "file:ishtiaq__SQL_Injection.csv"
    with pytest.raises(evaluate.SpotAEError, match="not in the data"):
        evaluate.resolve_day("2018-03-09", days)


def test_a_date_two_files_carry_is_one_day_per_file_unless_pooled(spark):
    df = spark.createDataFrame([("2018-02-20 10:00:00", "a.csv"), ("2018-02-20 11:00:00", "b.csv"),
                                ("2018-02-21 10:00:00", "a.csv"), (None, "c.csv")], "treceived string, source_file string")
    split = [r[evaluate.DAY] for r in evaluate.with_day(df).collect()]
    assert split == ["a.csv:2018-02-20", "b.csv:2018-02-20", "2018-02-21", "file:c.csv"]
    pooled = [r[evaluate.DAY] for r in evaluate.with_day(df, split_files=False).collect()]
    assert pooled == ["2018-02-20", "2018-02-20", "2018-02-21", "file:c.csv"]
    assert evaluate.parser().parse_args([]).split_files and not evaluate.parser().parse_args(["--pool-files"]).split_files
    assert evaluate.paper_key("a.csv:2018-02-20") == "02-20"


def test_attempted_rows_can_count_as_benign_or_be_left_out(spark):
    df = spark.createDataFrame([(True, 3), (True, -1), (False, -1), (True, None)],
                               "is_attack boolean, attempted_category int")
    as_benign = [r["is_attack"] for r in evaluate.apply_attempted(df, "benign").collect()]
    assert as_benign == [False, True, False, True]
    assert evaluate.apply_attempted(df, "exclude").count() == 3
    assert evaluate.apply_attempted(df, "attack").count() == 4


@pytest.mark.parametrize("argv, message", [
    (["--model", "svm"], "--model takes"),
    (["--data", "/nonexistent/cicids"], "no such file or directory"),
    (["--epochs", "0"], "--epochs must be at least 1"),
])
def test_bad_input_is_one_clear_line_and_exit_2(argv, message, capsys, tmp_path):
    assert evaluate.main(argv + ["--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unknown_training_day_is_refused(spark, inputs, capsys, tmp_path):
    assert evaluate.main(["--data", inputs[1], "--train-day", "1999-01-01", "--out", str(tmp_path), "--master", "local[2]",
                          "--shuffle-partitions", "2"]) == 2
    assert "not in the data" in capsys.readouterr().err
