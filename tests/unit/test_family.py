"""The attack-family classifier of incidents (issue 24, part 2, spot_ae_job/family.py), end to end
on a small real slice: trained on some CIC-IDS2018 files, saved, loaded, and asked about a file it
never saw; and the day pipeline's incidents naming a family with it."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from spot_ae_job import family, incidents
from spot_ae_job.evaluate import with_day
from spot_ae_job.features import N_FEATURES, Scaler
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.layout import Day, Layout
from spot_ae_job.model import HIDDEN, AEModel


def labels_in(path) -> set[str]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        head = [h.strip().lower() for h in next(rows)]
        i = head.index("label")
        return {r[i] for r in rows if len(r) > i}


def test_every_attack_label_of_the_shared_data_has_a_family(data_dir):
    labels = set().union(*(labels_in(p) for p in sorted((data_dir / "cicids2018").glob("*.csv"))))
    fams = {lab: family.family_of(lab) for lab in labels}
    assert {lab for lab, f in fams.items() if f == family.BENIGN} == {"Benign", "BENIGN"}
    assert family.UNKNOWN not in fams.values()
    assert fams["Infiltration - NMAP Portscan"] == "scan" and fams["Infilteration"] == "infiltration"
    assert fams["Brute Force -XSS"] == "web" and fams["SSH-Bruteforce"] == "brute_force" and fams["Bot"] == "c2"
    assert fams["DDOS attack-LOIC-UDP"] == "dos" and fams["DoS attacks-SlowHTTPTest"] == "dos"


def test_scores_from_a_confusion_table():
    counts = {("dos", "dos"): 8, ("dos", "unknown"): 2, ("web", "web"): 3, ("web", "dos"): 1, ("benign", "dos"): 2,
              ("benign", "unknown"): 10}
    s = family.scores(counts)
    assert s["confusion"]["web"]["dos"] == 1 and s["confusion"]["benign"]["unknown"] == 10
    assert s["per_family"]["dos"]["precision"] == pytest.approx(8 / 11) and s["per_family"]["dos"]["recall"] == pytest.approx(0.8)
    assert s["per_family"]["web"] == pytest.approx({"support": 4, "precision": 1.0, "recall": 0.75, "f1": 6 / 7})
    assert s["macro_f1"] == pytest.approx((2 * (8 / 11) * 0.8 / (8 / 11 + 0.8) + 6 / 7) / 2)
    assert s["unknown_share_attacks"] == pytest.approx(2 / 14)


def test_trained_on_some_files_it_names_the_web_attacks_of_a_file_it_never_saw(spark, tmp_path, data_dir):
    cic = data_dir / "cicids2018"
    train_files = [str(cic / n) for n in ("cstub__validation.csv", "ishtiaq__SQL_Injection.csv",
                                          "ishtiaq__Brute_Force_XSS.csv", "mahdi__ids2018_sample.csv")]
    flows = with_day(read_cicids(spark, train_files).flows).where(F.col("is_attack").isNotNull())
    clf = family.train(flows, train_files, say=lambda *_: None)
    root = f"file://{tmp_path}/spot/flow/models/family"
    clf.save(spark, root)
    loaded = family.FamilyClassifier.load(spark, root)
    assert loaded.version == clf.version and loaded.families == family.CLASSES

    unseen = with_day(read_cicids(spark, str(cic / "ishtiaq__Brute_Force_Web.csv")).flows).cache()
    pred = loaded.predict(unseen).select("label", "family", "family_confidence").cache()
    share = {r["label"]: r["web"] / r["n"] for r in pred.groupBy("label").agg(
        F.count("*").alias("n"), F.sum((F.col("family") == "web").cast("int")).alias("web")).collect()}
    # held-out web attacks are named "web" far more often than the same file's benign flows are
    assert share["Brute Force -Web"] > share["Benign"] + 0.3, share
    assert pred.where(F.col("family_confidence").isNull() | (F.col("family_confidence") > 1.0)).count() == 0
    # the saved model answers as the one that was trained
    again = clf.predict(unseen).select("family").collect()
    assert [r[0] for r in again] == [r[0] for r in pred.select("family").collect()]

    # the day pipeline's incidents name a family with it (these rows have no IPs: an incident each)
    w = [np.zeros((N_FEATURES, HIDDEN), np.float32), np.zeros(HIDDEN, np.float32),
         np.zeros((HIDDEN, N_FEATURES), np.float32), np.zeros(N_FEATURES, np.float32)]
    model = AEModel(w, Scaler(np.zeros(N_FEATURES), np.ones(N_FEATURES)), 1.0, {"version": "v1", "kind": "ae"})
    attacks = (unseen.where("is_attack").limit(60).withColumn("score", F.lit(2.0)).withColumn("suspicious", F.lit(True))
               .withColumn("rank", F.row_number().over(Window.orderBy(F.monotonically_increasing_id()))))  # as write_results ranks
    lay = Layout(f"file://{tmp_path}/spot")
    summary = incidents.write_day_incidents(spark, attacks, model, Day.parse("20180222"), lay, 1.0, classifier=loaded,
                                            progress=lambda *_: None)
    inc = spark.read.parquet(lay.results(Day.parse("20180222")).incidents)
    assert summary["incidents"] == inc.count() == 60 and summary["family_model"] == clf.version
    named = {r["family"]: r["count"] for r in inc.groupBy("family").count().collect()}
    assert max(named, key=named.get) == "web", named
