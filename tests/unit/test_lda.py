"""Spot's flow LDA: words built the way Spot's last release built them, and scores that follow
the topic model (unseen words most suspicious, no IPs = not applicable, same after save/load)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from spot_ae_job import lda
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.schema import FLOW_COLUMNS, FLOW_SCHEMA


def _flow(**kw):
    row = {c: None for c in FLOW_COLUMNS}
    row.update({"trhour": 13, "proto": "TCP", "ibyt": 0, "ipkt": 0, "sip": "10.0.0.1", "dip": "10.0.0.2"})
    row.update(kw)
    return row


def _words(spark, rows):
    df = spark.createDataFrame([_flow(**r) for r in rows], FLOW_SCHEMA)
    return [(r["src_word"], r["dst_word"]) for r in lda.add_words(df).collect()]


def test_port_class_and_side_mark_follow_spots_rules(spark):
    got = _words(spark, [
        {"sport": 51000, "dport": 443},  # client -> server: the server (dst) side is marked
        {"sport": 443, "dport": 51000},  # reply direction: the server is the source
        {"sport": 22, "dport": 1000},  # both privileged
        {"sport": 5000, "dport": 6000},  # both high
        {"sport": 0, "dport": 0},  # no ports (ICMP-like)
        {"sport": 0, "dport": 8080},  # only the destination has a port
        {"sport": 8080, "dport": 0},  # only the source has a port
        {"sport": 1024, "dport": 1025},  # 1024 still counts as a low port
    ])
    assert got == [
        ("443_TCP_13_0_0", "-1_443_TCP_13_0_0"),
        ("-1_443_TCP_13_0_0", "443_TCP_13_0_0"),
        ("111111_TCP_13_0_0", "111111_TCP_13_0_0"),
        ("333333_TCP_13_0_0", "333333_TCP_13_0_0"),
        ("0_TCP_13_0_0", "0_TCP_13_0_0"),
        ("8080_TCP_13_0_0", "-1_8080_TCP_13_0_0"),
        ("-1_8080_TCP_13_0_0", "8080_TCP_13_0_0"),
        ("-1_1024_TCP_13_0_0", "1024_TCP_13_0_0"),
    ]


def test_byte_and_packet_bins_are_ceil_log2_of_count_plus_one(spark):
    counts = [0, 1, 2, 3, 4, 7, 8, 1023, 1024, 2**40 - 1, 2**40]
    rows = [{"sport": 51000, "dport": 80, "ibyt": n, "ipkt": n} for n in counts]
    got = [w[0].split("_")[-2:] for w in _words(spark, rows)]
    # integer reference: ceil(log2(n + 1)) is the bit length of n
    assert got == [[str(n.bit_length())] * 2 for n in counts]
    # and the hand-known values
    assert [g[0] for g in got] == ["0", "1", "2", "2", "3", "3", "4", "10", "11", "40", "41"]


def test_hour_and_protocol_are_in_the_word(spark):
    (udp, tcp) = _words(spark, [
        {"sport": 51000, "dport": 53, "proto": "UDP", "trhour": 0, "ibyt": 70, "ipkt": 1},
        {"sport": 51000, "dport": 53, "proto": "TCP", "trhour": 23, "ibyt": 70, "ipkt": 1},
    ])
    assert udp == ("53_UDP_0_7_1", "-1_53_UDP_0_7_1")
    assert tcp == ("53_TCP_23_7_1", "-1_53_TCP_23_7_1")


def test_a_flow_missing_a_part_of_its_word_gets_no_word(spark):
    got = _words(spark, [{"sport": None, "dport": 80}, {"sport": 5, "dport": 80, "trhour": None}])
    assert got == [(None, None), (None, None)]


def test_quantile_binning_uses_the_cuts_given(spark):
    cuts = {"tod": [3600.0 * h for h in range(2, 24, 2)][:9], "ibyt": [10.0, 100.0], "ipkt": [1.0, 5.0]}
    df = spark.createDataFrame([_flow(sport=51000, dport=80, trhour=3, trminute=0, trsec=0, ibyt=100, ipkt=6)], FLOW_SCHEMA)
    (r,) = lda.add_words(df, cuts).collect()
    # 10800 s is past the 2h cut only -> bin 1; 100 bytes is not past 100 -> bin 1; 6 packets -> bin 2
    assert r["src_word"] == "80_TCP_1_1_2"


# ------------------------------------------------------------------ on real CIC-IDS2018 rows

@pytest.fixture(scope="module")
def aegmm(spark, data_dir):
    """The improved CIC-IDS2018 sample (IPs, ports, timestamps), read by the project's reader."""
    flows = read_cicids(spark, str(data_dir / "cicids2018" / "aegmm__toy_dataset.csv")).flows
    return flows.withColumn("day", F.substring("treceived", 1, 10)).cache()


@pytest.fixture(scope="module")
def fitted(aegmm):
    train = aegmm.where((F.col("day") == "2018-02-28") & ~F.col("is_attack"))
    return lda.fit_lda(train, topics=5, max_iter=10, training_day="20180228", progress=lambda m: None)


def test_threshold_is_the_5th_percentile_of_the_training_scores(fitted, aegmm):
    train = aegmm.where((F.col("day") == "2018-02-28") & ~F.col("is_attack"))
    s = np.array([r["score"] for r in fitted.score(train).collect()])
    assert fitted.higher_is_suspicious is False
    assert fitted.threshold == pytest.approx(np.quantile(s, 0.05, method="inverted_cdf"))
    assert fitted.meta["training_day"] == "20180228" and fitted.version.startswith("lda-")


def test_score_is_the_least_of_the_two_words_probabilities_under_their_ips_topic_mixes(fitted, aegmm):
    day = aegmm.where(F.col("day") == "2018-02-14")
    scored = lda.add_words(fitted.score(day)).collect()
    mixes = {r["ip"]: np.array(r["mix"]) for r in fitted.topic_mixes(day).collect()}
    tm = fitted.lda.topicsMatrix().toArray()
    tm = tm / tm.sum(axis=0, keepdims=True)  # P(word | topic), columns = topics
    vocab = {r["word"]: r["idx"] for r in fitted.words.select("word", "idx").collect()}

    def p(word, ip):
        return float(mixes[ip] @ tm[vocab[word]]) if word in vocab else 0.0

    assert len(scored) == day.count()
    seen = unseen = 0
    for r in scored:
        expect = min(p(r["src_word"], r["sip"]), p(r["dst_word"], r["dip"]))
        assert r["score"] == pytest.approx(expect, rel=1e-9, abs=1e-15)
        seen += r["src_word"] in vocab and r["dst_word"] in vocab
        unseen += r["src_word"] not in vocab or r["dst_word"] not in vocab
    assert seen > 0 and unseen > 0  # both branches were exercised on real rows
    assert all(r["score"] == 0.0 for r in scored if r["src_word"] not in vocab)


def test_flows_without_ips_are_not_scored_rather_than_guessed(spark, fitted, data_dir):
    """The original CIC-IDS2018 files carry no IPs: there is no document to score against."""
    flows = read_cicids(spark, str(data_dir / "cicids2018" / "cstub__validation.csv")).flows
    assert flows.where(F.col("sip").isNotNull()).count() == 0
    scores = {r["score"] for r in fitted.score(flows).collect()}
    assert scores == {None}


def test_saved_model_scores_the_same(spark, fitted, aegmm, tmp_path):
    uri = fitted.save(spark, f"file://{tmp_path}/models")
    back = lda.LDAModelBundle.load(spark, f"file://{tmp_path}/models")
    assert uri.endswith(back.version) and back.version == fitted.version
    assert back.threshold == fitted.threshold and back.kind == "lda"
    day = aegmm.where(F.col("day") == "2018-03-02")
    a = sorted((r["sip"], r["dip"], r["sport"], r["treceived"], r["score"]) for r in fitted.score(day).collect())
    b = sorted((r["sip"], r["dip"], r["sport"], r["treceived"], r["score"]) for r in back.score(day).collect())
    assert [x[:4] for x in a] == [x[:4] for x in b]
    assert all(math.isclose(x[4], y[4], rel_tol=1e-9, abs_tol=1e-15) for x, y in zip(a, b))


def test_documents_are_split_by_the_keys_given(fitted, aegmm):
    """Scoring several days at once: an IP's topic mix on a day comes from that day's flows only."""
    two = aegmm.where(F.col("day").isin("2018-02-14", "2018-02-15"))
    together = {(r["day"], r["sip"], r["dip"], r["treceived"], r["sport"], r["dport"], r["ibyt"], r["ipkt"]): r["score"] for r in fitted.score(two, ["day"]).collect()}
    alone = {}
    for d in ("2018-02-14", "2018-02-15"):
        for r in fitted.score(aegmm.where(F.col("day") == d)).collect():
            alone[(r["day"], r["sip"], r["dip"], r["treceived"], r["sport"], r["dport"], r["ibyt"], r["ipkt"])] = r["score"]
    assert together.keys() == alone.keys()
    assert all(math.isclose(together[k], alone[k], rel_tol=1e-9, abs_tol=1e-15) for k in alone)
