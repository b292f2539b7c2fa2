"""CIC-IDS2018 readers: every layout in the shared data lands in Spot's flow schema."""
from __future__ import annotations

import csv

import pytest
from pyspark.sql import functions as F

from spot_ae_job.errors import SpotAEError
from spot_ae_job.ingest.cicids import detect_columns, read_cicids
from spot_ae_job.schema import FLOW_COLUMNS, FLOW_SCHEMA, LABEL_COLUMNS


def _csv_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_improved_layout_maps_fwd_to_initiator_and_keeps_ips(spark, data_dir):
    path = data_dir / "cicids2018" / "aegmm__toy_dataset.csv"
    res = read_cicids(spark, str(path))
    assert res.flows.columns == FLOW_COLUMNS + LABEL_COLUMNS
    assert [f.dataType for f in res.flows.schema.fields[: len(FLOW_COLUMNS)]] == [f.dataType for f in FLOW_SCHEMA.fields]
    first = _csv_rows(path)[0]
    row = res.flows.where(F.col("sport") == int(first["Src Port"])).where(F.col("sip") == first["Src IP"]).first()
    assert row.dip == first["Dst IP"] and row.dport == int(first["Dst Port"])
    assert row.ipkt == int(first["Total Fwd Packet"]) and row.opkt == int(first["Total Bwd packets"])
    assert row.ibyt == int(float(first["Total Length of Fwd Packet"]))
    assert row.tdur == pytest.approx(float(first["Flow Duration"]) / 1e6, rel=1e-6)
    assert row.treceived == first["Timestamp"][:19]
    assert row.proto == "TCP" and row.label == first["Label"] and row.is_attack is False
    assert res.flows.count() + res.rejects.count() == len(_csv_rows(path))


def test_flag_string_is_nfdumps_from_flag_counts(spark, data_dir):
    path = data_dir / "cicids2018" / "aegmm__toy_dataset.csv"
    rows = _csv_rows(path)
    want = {}
    for r in rows[:50]:
        bits = [("CWR Flag Count", "C"), ("ECE Flag Count", "E"), ("URG Flag Count", "U"), ("ACK Flag Count", "A"),
                ("PSH Flag Count", "P"), ("RST Flag Count", "R"), ("SYN Flag Count", "S"), ("FIN Flag Count", "F")]
        want[(r["Src IP"], int(r["Src Port"]), r["Timestamp"][:19])] = "".join(ch if float(r[c]) > 0 else "." for c, ch in bits)
    got = {(r.sip, r.sport, r.treceived): r.flag for r in read_cicids(spark, str(path)).flows.collect()}
    for k, flag in want.items():
        assert got[k] == flag


@pytest.mark.parametrize(
    "name,has_time",
    [("ishtiaq__SQL_Injection.csv", False), ("mahdi__ids2018_sample.csv", False), ("cstub__validation.csv", True)],
)
def test_original_layouts_read_without_losing_rows(spark, data_dir, name, has_time):
    path = data_dir / "cicids2018" / name
    res = read_cicids(spark, str(path))
    n_in = len(_csv_rows(path))
    assert res.flows.count() + res.rejects.count() == n_in
    assert (res.flows.where(F.col("unix_tstamp").isNotNull()).count() > 0) == has_time
    assert res.flows.where(F.col("is_attack").isNull()).count() == 0


def test_negative_durations_and_1970_dates_are_rejected_with_a_reason(spark, data_dir):
    path = data_dir / "cicids2018" / "cstub__validation.csv"
    negative = [r for r in _csv_rows(path) if float(r["flow_duration"]) < 0]
    res = read_cicids(spark, str(path))
    reasons = {r.reject_reason: r["count"] for r in res.rejects.groupBy("reject_reason").count().collect()}
    assert reasons.get("negative_duration") == len(negative) > 0
    assert res.flows.where(F.col("tryear") < 2000).count() == 0


def test_dirty_rows_are_counted_per_reason(spark, data_dir, tmp_path):
    """Repeated headers, Infinity/NaN and bad timestamps, as the full dataset has them."""
    src = data_dir / "cicids2018" / "cstub__validation.csv"
    lines = src.read_text().splitlines()
    header, good = lines[0], [l for l in lines[1:] if not l.split(",")[4].startswith("-") and "1970" not in l][:5]
    cols = header.split(",")
    i_dur, i_ts = cols.index("flow_duration"), cols.index("timestamp")

    def with_field(line, i, value):
        parts = line.split(",")
        parts[i] = value
        return ",".join(parts)

    dirty = [
        header,
        *good,
        header,  # repeated header mid-file
        with_field(good[0], i_dur, "Infinity"),
        with_field(good[1], i_dur, "NaN"),
        with_field(good[2], i_ts, "31/31/2018 99:00:00"),
    ]
    f = tmp_path / "dirty.csv"
    f.write_text("\n".join(dirty) + "\n")
    res = read_cicids(spark, str(f))
    reasons = {r.reject_reason: r["count"] for r in res.rejects.groupBy("reject_reason").count().collect()}
    assert reasons == {"repeated_header": 1, "non_numeric_or_non_finite": 2, "bad_timestamp": 1}
    assert res.flows.count() == 5
    assert res.rejects.where(F.col("raw").contains("Infinity")).count() == 1


def test_crlf_files_do_not_leak_carriage_returns_into_labels(spark, data_dir):
    res = read_cicids(spark, str(data_dir / "cicids2018" / "ishtiaq__Brute_Force_XSS.csv"))
    labels = {r.label for r in res.flows.select("label").distinct().collect()}
    assert labels == {"Benign", "Brute Force -XSS"}


def test_unlabelled_placeholder_is_no_ground_truth(spark, data_dir):
    res = read_cicids(spark, str(data_dir / "cicflowmeter" / "2018-02-02_Flow.csv"))
    assert res.flows.where(F.col("is_attack").isNotNull()).count() == 0
    assert res.flows.where(F.col("sip").isNull()).count() == 0


def test_a_file_that_is_not_cicflowmeter_is_a_clear_error(spark, tmp_path):
    f = tmp_path / "other.csv"
    f.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(SpotAEError, match="not a CICFlowMeter CSV"):
        read_cicids(spark, str(f))
    with pytest.raises(SpotAEError, match="no CSV files"):
        read_cicids(spark, str(tmp_path / "missing"))


def test_detect_columns_accepts_all_three_spellings():
    orig = detect_columns(["Dst Port", "Protocol", "Flow Duration", "Tot Fwd Pkts", "Tot Bwd Pkts", "TotLen Fwd Pkts", "TotLen Bwd Pkts", "Label"])
    snake = detect_columns(["dst_port", "protocol", "flow_duration", "tot_fwd_pkts", "tot_bwd_pkts", "totlen_fwd_pkts", "totlen_bwd_pkts", "label"])
    improved = detect_columns(["Dst Port", "Protocol", "Flow Duration", "Total Fwd Packet", "Total Bwd packets", "Total Length of Fwd Packet", "Total Length of Bwd Packet", "Label"])
    assert set(orig) == set(snake) == set(improved)
