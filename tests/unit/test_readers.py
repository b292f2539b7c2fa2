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
    assert res.files[0]["dialect"] == "cic-improved-2022" and res.files[0]["clock"] == "24h"  # ISO times


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


def test_a_row_with_one_field_too_many_or_too_few_is_a_reject_never_shifted(spark, data_dir, tmp_path):
    """Spark's PERMISSIVE CSV mode dropped an extra field and shifted the rest: a Benign row came
    out with proto 999 and is_attack=True. A line whose field count is not the header's is a reject."""
    src = (data_dir / "cicids2018" / "aegmm__toy_dataset.csv").read_text().splitlines()
    header, rows = src[0], src[1:21]
    benign = next(i for i, r in enumerate(rows) if r.rsplit(",", 2)[1] == "BENIGN")
    parts = rows[benign].split(",")
    extra = ",".join(parts[:4] + ["999"] + parts[4:])  # one field too many, after Src Port
    short = ",".join(parts[:-2] + parts[-1:])  # one field too few
    f = tmp_path / "shifted.csv"
    f.write_text("\n".join([header, *rows, extra, short]) + "\n")

    res = read_cicids(spark, str(f))
    reasons = {r.reject_reason: r["count"] for r in res.rejects.groupBy("reject_reason").count().collect()}
    assert reasons == {"wrong_field_count": 2}
    assert sorted(r.raw for r in res.rejects.collect()) == sorted([extra, short])  # the line, unchanged
    assert res.flows.count() == len(rows)
    assert res.flows.where(F.col("proto") == "999").count() == 0


# CIC-IDS2017's two CSV headers, byte for byte. No CIC-IDS2017 file is in ../shared/data, so the
# header lines are rebuilt from the column lists public code reads out of those files with pandas
# (`df.columns` of e.g. Wednesday-workingHours.pcap_ISCX.csv, MachineLearningCVE, and of
# Friday-WorkingHours-Afternoon-DDos.pcap_ISCX.csv, TrafficLabelling): names with and without a
# leading space exactly as there, and ` Fwd Header Length` twice (pandas shows the second as
# ` Fwd Header Length.1`).
CICIDS2017_ML_HEADER = (
    " Destination Port, Flow Duration, Total Fwd Packets, Total Backward Packets,Total Length of Fwd Packets,"
    " Total Length of Bwd Packets, Fwd Packet Length Max, Fwd Packet Length Min, Fwd Packet Length Mean,"
    " Fwd Packet Length Std,Bwd Packet Length Max, Bwd Packet Length Min, Bwd Packet Length Mean,"
    " Bwd Packet Length Std,Flow Bytes/s, Flow Packets/s, Flow IAT Mean, Flow IAT Std, Flow IAT Max, Flow IAT Min,"
    "Fwd IAT Total, Fwd IAT Mean, Fwd IAT Std, Fwd IAT Max, Fwd IAT Min,Bwd IAT Total, Bwd IAT Mean, Bwd IAT Std,"
    " Bwd IAT Max, Bwd IAT Min,Fwd PSH Flags, Bwd PSH Flags, Fwd URG Flags, Bwd URG Flags, Fwd Header Length,"
    " Bwd Header Length,Fwd Packets/s, Bwd Packets/s, Min Packet Length, Max Packet Length, Packet Length Mean,"
    " Packet Length Std, Packet Length Variance,FIN Flag Count, SYN Flag Count, RST Flag Count, PSH Flag Count,"
    " ACK Flag Count, URG Flag Count, CWE Flag Count, ECE Flag Count, Down/Up Ratio, Average Packet Size,"
    " Avg Fwd Segment Size, Avg Bwd Segment Size, Fwd Header Length,Fwd Avg Bytes/Bulk, Fwd Avg Packets/Bulk,"
    " Fwd Avg Bulk Rate, Bwd Avg Bytes/Bulk, Bwd Avg Packets/Bulk,Bwd Avg Bulk Rate,Subflow Fwd Packets,"
    " Subflow Fwd Bytes, Subflow Bwd Packets, Subflow Bwd Bytes,Init_Win_bytes_forward, Init_Win_bytes_backward,"
    " act_data_pkt_fwd, min_seg_size_forward,Active Mean, Active Std, Active Max, Active Min,Idle Mean, Idle Std,"
    " Idle Max, Idle Min, Label"
)
CICIDS2017_TL_HEADER = ("Flow ID, Source IP, Source Port, Destination IP, Destination Port, Protocol, Timestamp,"
                        + CICIDS2017_ML_HEADER.split(",", 1)[1])

# CIC-IDS2017 column (normalised) -> the improved CIC-IDS2018 column holding the same quantity
_FROM_IMPROVED = {"flowid": "Flow ID", "sourceip": "Src IP", "sourceport": "Src Port", "destinationip": "Dst IP",
                  "destinationport": "Dst Port", "protocol": "Protocol", "totalfwdpackets": "Total Fwd Packet",
                  "totalbackwardpackets": "Total Bwd packets", "totallengthoffwdpackets": "Total Length of Fwd Packet",
                  "totallengthofbwdpackets": "Total Length of Bwd Packet", "cweflagcount": "CWR Flag Count"}


def _norm(name):
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _local_12h(iso_utc):
    """The improved extraction's UTC time -> the capture site's local time (Atlantic, UTC-4 in
    February/March 2018) written as CIC-IDS2017 writes it: d/M/yyyy h:mm, 12-hour, no AM/PM."""
    import datetime as dt

    t = dt.datetime.strptime(iso_utc[:19], "%Y-%m-%d %H:%M:%S") - dt.timedelta(hours=4)
    return t, f"{t.day}/{t.month}/{t.year} {t.hour % 12 or 12}:{t.minute:02d}"


def _cicids2017_file(path, header, rows, labels=None):
    """Real flows (improved CIC-IDS2018 rows) written in a CIC-IDS2017 layout; bytes, as the
    web-attack labels of CIC-IDS2017 hold byte 0x96 (Windows-1252)."""
    names = header.split(",")
    lines = [header.encode()]
    for i, r in enumerate(rows):
        by_norm = {_norm(k): v for k, v in r.items()}
        vals = []
        for n in names:
            k = _norm(n)
            if k == "timestamp":
                vals.append(_local_12h(r["Timestamp"])[1].encode())
            elif k == "label":
                vals.append((labels or {}).get(i, r["Label"].encode()))
            else:
                vals.append(str(r[_FROM_IMPROVED[k]] if k in _FROM_IMPROVED else by_norm.get(k, "0")).encode())
        lines.append(b",".join(vals))
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")


def test_cicids2017_traffic_labelling_layout_is_read_with_its_clock_and_labels(spark, data_dir, tmp_path):
    improved = _csv_rows(data_dir / "cicids2018" / "aegmm__toy_dataset.csv")
    # why office hours: on the 24-hour clock of the improved extraction every flow of the excerpt
    # was captured between 08:00 and 19:59 local time, the window the 12-hour rule reads
    assert {_local_12h(r["Timestamp"])[0].hour for r in improved} <= set(range(8, 20))
    rows = [r for r in improved if r["Label"] == "BENIGN"][:30] + [r for r in improved if r["Label"] == "DoS Hulk"][:30]
    labels = {0: b"Web Attack \x96 Brute Force", 1: b"No Label", 2: b""}
    f = tmp_path / "Thursday-WorkingHours-Morning-WebAttacks.pcap_ISCX.csv"
    _cicids2017_file(f, CICIDS2017_TL_HEADER, rows, labels)

    res = read_cicids(spark, str(f))
    assert res.rejects.count() == 0
    got = {(r.sip, r.sport, r.dip): r for r in res.flows.collect()}
    assert len(got) == len(rows)
    for i, r in enumerate(rows):
        row = got[(r["Src IP"], int(r["Src Port"]), r["Dst IP"])]
        local, _ = _local_12h(r["Timestamp"])
        assert (row.trday, row.trhour, row.trminute) == (local.day, local.hour, local.minute)  # the 24-hour hour back
        assert (row.dport, row.ipkt, row.opkt) == (int(r["Dst Port"]), int(r["Total Fwd Packet"]), int(r["Total Bwd packets"]))
        want_label = labels[i].decode("cp1252") if i in labels else r["Label"]
        assert row.label == want_label
        assert row.is_attack == ({"BENIGN": False, "No Label": None, "": None}.get(want_label, True))
    assert res.files[0]["dialect"] == "cicids2017" and res.files[0]["clock"].startswith("12h")
    assert res.files[0]["hours_read_as_pm"] == sum(13 <= _local_12h(r["Timestamp"])[0].hour <= 19 for r in rows) > 0


def test_cicids2017_machine_learning_layout_without_protocol_or_time(spark, data_dir, tmp_path):
    rows = _csv_rows(data_dir / "cicids2018" / "aegmm__toy_dataset.csv")[:40]
    f = tmp_path / "Wednesday-workingHours.pcap_ISCX.csv"
    _cicids2017_file(f, CICIDS2017_ML_HEADER, rows)
    res = read_cicids(spark, str(f))
    assert res.rejects.count() == 0 and res.flows.count() == len(rows)
    assert sorted(r.dport for r in res.flows.collect()) == sorted(int(r["Dst Port"]) for r in rows)
    assert res.flows.where(F.col("proto").isNotNull() | F.col("unix_tstamp").isNotNull()).count() == 0
    assert res.files[0] == {"source_file": f.name, "dialect": "cicids2017", "clock": "none", "hours_read_as_pm": 0}


def test_twelve_hour_clock_puts_each_attack_in_its_published_slot(spark, data_dir):
    """The original CIC-IDS2018 files print 02:24 for 14:24. CIC's schedule for 14/02/2018
    (unb.ca/cic/datasets/ids-2018.html): FTP-BruteForce 10:32-12:09, SSH-Bruteforce 14:01-15:31."""
    res = read_cicids(spark, str(data_dir / "cicids2018" / "cstub__validation.csv"))
    hours = {r.label: sorted({r2.trhour for r2 in res.flows.where(F.col("label") == r.label).collect()})
             for r in res.flows.where(F.col("trday") == 14).select("label").distinct().collect()}
    assert hours["SSH-Bruteforce"] and set(hours["SSH-Bruteforce"]) <= {14, 15}
    assert hours["FTP-BruteForce"] and set(hours["FTP-BruteForce"]) <= {10, 11, 12}
    assert res.files[0]["clock"].startswith("12h") and res.files[0]["dialect"] == "cicflowmeter-v3-snake_case"


def test_a_file_on_a_24_hour_clock_is_read_as_written(spark, data_dir, tmp_path):
    lines = (data_dir / "cicids2018" / "cstub__validation.csv").read_text().splitlines()
    i_ts = lines[0].split(",").index("timestamp")
    parts = lines[1].split(",")
    parts[i_ts] = parts[i_ts][:11] + "13" + parts[i_ts][13:]  # one afternoon hour: the file is on a 24-hour clock
    f = tmp_path / "h24.csv"
    f.write_text("\n".join([lines[0], ",".join(parts), *lines[2:]]) + "\n")
    res = read_cicids(spark, str(f))
    ssh = {r.trhour for r in res.flows.where(F.col("label") == "SSH-Bruteforce").collect()}
    assert ssh and ssh <= {2, 3}
    assert res.files[0]["clock"] == "24h" and res.files[0]["hours_read_as_pm"] == 0


def test_a_file_split_across_many_tasks_loses_no_row_and_keeps_one_header(spark, data_dir):
    """The header is found as the first record of the split that starts the file: with splits of
    64 KiB (a 2.9 MB file in ~45 tasks) every other line is still a row."""
    path = data_dir / "cicids2018" / "aegmm__toy_dataset.csv"
    old = spark.conf.get("spark.sql.files.maxPartitionBytes")
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(64 << 10))
    try:
        res = read_cicids(spark, str(path))
        n_flows, n_rejects = res.flows.count(), res.rejects.count()
        partitions = spark.read.text(str(path)).rdd.getNumPartitions()
    finally:
        spark.conf.set("spark.sql.files.maxPartitionBytes", old)
    assert partitions > 10
    assert n_flows + n_rejects == len(_csv_rows(path)) and n_rejects == 0
