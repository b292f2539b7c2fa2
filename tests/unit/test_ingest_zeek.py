"""Zeek conn logs -> flow-table rows: every row of every real log is a flow or a reject with a
reason, a bad file is quarantined, and a Zeek flow means what nfdump's flow of the same
connection means."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import shlex
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spot_ae_job.ingest import nfdump as N
from spot_ae_job.ingest import zeek as Z
from spot_ae_job.schema import FLOW_COLUMNS
from tests.conftest import DATA

REPO = Path(__file__).resolve().parents[2]


def real_logs(data_dir) -> list[Path]:
    return sorted(p for p in (data_dir / "zeek").rglob("*") if p.is_file() and p.name != "SOURCES.md")


REAL_LOGS = [str(p.relative_to(DATA / "zeek")) for p in real_logs(DATA)] if (DATA / "zeek").is_dir() else []


def text_of(path: Path) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def data_lines(path: Path) -> list[str]:
    """What the file itself says its rows are: every line that is not a `#` header and not blank."""
    return [ln for ln in text_of(path).splitlines() if ln.strip() and not ln.startswith("#")]


def tsv_rows(path: Path) -> list[dict]:
    """The file's rows that split into its #fields, as dicts (read with the csv-free obvious code)."""
    fields = next(ln for ln in text_of(path).splitlines() if ln.startswith("#fields")).split("\t")[1:]
    return [dict(zip(fields, ln.split("\t"))) for ln in data_lines(path) if len(ln.split("\t")) == len(fields)]


def test_the_shared_set_has_the_twelve_logs_sources_md_lists(data_dir):
    listed = (data_dir / "zeek" / "SOURCES.md").read_text().count("\n| `")
    assert len(real_logs(data_dir)) == listed == 12


@pytest.mark.parametrize("log", REAL_LOGS)
def test_every_real_log_loads_with_rows_in_equal_to_flows_plus_rejects(data_dir, log):
    path = data_dir / "zeek" / log
    dec = Z.decode_file(path)  # none of the real logs is garbage: ZeekFileError would fail here
    rows_in = len(data_lines(path))
    assert dec.nfdump_flows == rows_in
    assert dec.flows.num_rows + dec.rejects.num_rows == rows_in
    assert dec.flows.schema == N.ARROW_FLOW_SCHEMA and dec.flows.column_names == FLOW_COLUMNS
    assert all(dec.rejects["reject_reason"].to_pylist())
    assert dec.flows.num_rows > 0


def test_the_torn_line_is_a_reject_that_keeps_its_text(data_dir):
    path = data_dir / "zeek" / "Kishpud__SOC-Zeek-Lab" / "conn.log"
    n_fields = len(next(ln for ln in text_of(path).splitlines() if ln.startswith("#fields")).split("\t")) - 1
    torn = [ln for ln in data_lines(path) if len(ln.split("\t")) != n_fields]
    dec = Z.decode_file(path)
    assert len(torn) == 1
    assert dec.rejects["raw"].to_pylist() == torn
    assert dec.rejects["reject_reason"].to_pylist() == [f"wrong number of fields (1, #fields has {n_fields})"]
    assert dec.flows.num_rows == len(data_lines(path)) - 1


def test_a_connection_zeek_saw_no_packets_of_is_a_reject(data_dir):
    path = data_dir / "zeek" / "activecm__rita" / "test_data" / "missing_host" / "2024-04-19" / \
        "conn.00:00:00-01:00:00.log.gz"
    empty = [r for r in tsv_rows(path) if r["orig_pkts"] == "0" and r["resp_pkts"] == "0"]
    dec = Z.decode_file(path)
    assert len(empty) >= 1
    assert dec.rejects["reject_reason"].to_pylist() == ["no packets either way"] * len(empty)
    assert sorted(json.loads(r)["ts"] for r in dec.rejects["raw"].to_pylist()) == sorted(r["ts"] for r in empty)


def test_ipv6_rows_keep_their_addresses(data_dir):
    path = data_dir / "zeek" / "activecm__rita" / "test_data" / "proxy_rolling" / "conn.16:00:00-17:00:00.log.gz"
    v6 = [r for r in tsv_rows(path) if ":" in r["id.orig_h"]]
    dec = Z.decode_file(path)
    assert len(v6) > 1000
    assert sorted(a for a in dec.flows["sip"].to_pylist() if ":" in a) == sorted(r["id.orig_h"] for r in v6)


def test_json_lines_with_omitted_keys_read_as_unset(data_dir):
    path = data_dir / "zeek" / "GT-IoTEdu__SIMIR" / "logs" / "conn.log"
    recs = [json.loads(ln) for ln in data_lines(path)]
    dec = Z.decode_file(path)
    assert dec.flows.num_rows == len(recs)  # none rejected: rows keep the file's order
    durations = dec.flows["tdur"].to_pylist()
    omitted = [i for i, r in enumerate(recs) if "duration" not in r]
    assert len(omitted) > 0  # an omitted duration is a 0 s flow, as nfdump writes a one-packet flow
    assert [durations[i] for i in omitted] == [0.0] * len(omitted)
    assert sum(dec.flows["ibyt"].to_pylist()) == sum(r["orig_ip_bytes"] for r in recs)
    igmp = [r for r in recs if r["proto"] == "unknown_transport" and r.get("ip_proto") == 2]
    assert dec.flows["proto"].to_pylist().count("IGMP") == len(igmp) > 0


def test_damage_anywhere_in_a_real_log_gives_rejects_or_quarantine_never_another_error(data_dir):
    """Bytes replaced at random places of every real log (fixed seed): the file either loads with
    every line accounted for, or raises ZeekFileError; nothing else escapes to the watcher."""
    import random

    rng = random.Random(11)
    outcomes = {"loaded": 0, "quarantined": 0}
    for path in real_logs(data_dir):
        text = Z.read_text(path)
        for _ in range(15):
            b = bytearray(text)
            for _ in range(3):
                at = rng.randrange(len(b))
                b[at:at + rng.randrange(1, 5)] = bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
            damaged = bytes(b)
            try:
                dec = Z.decode_text(damaged, path.name)
            except Z.ZeekFileError:
                outcomes["quarantined"] += 1
                continue
            tsv = damaged.startswith(b"#")
            lines = [ln for ln in damaged.splitlines() if ln.strip() and not (tsv and ln.startswith(b"#"))]
            assert dec.flows.num_rows + dec.rejects.num_rows == len(lines), path
            outcomes["loaded"] += 1
    assert outcomes["loaded"] > outcomes["quarantined"] > 0


# -- hand-built logs -------------------------------------------------------------------------

HEADER = ("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
          "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\t"
          "resp_bytes\tconn_state\tlocal_orig\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\t"
          "resp_ip_bytes\ttunnel_parents\n"
          "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tcount\t"
          "string\tcount\tcount\tcount\tcount\tset[string]\n")


def zeek_row(ts="1521911721.255387", orig="10.0.0.1", sport="51000", resp="10.0.0.2", dport="80", proto="tcp",
             duration="0.250000", state="SF", history="ShADadFf", opkts="6", obytes="420", rpkts="5",
             rbytes="1200") -> str:
    return "\t".join([ts, "Cabc", orig, sport, resp, dport, proto, "-", duration, "0", "0", state, "-", "0",
                      history, opkts, obytes, rpkts, rbytes, "(empty)"])


def decode(*rows: str, header: str = HEADER):
    return Z.decode_text((header + "".join(r + "\n" for r in rows)).encode(), "conn.test.log")


NFDUMP_CSV_HEADER = "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,mpls10,cl,sl,al,ra,eng,exid,tr"


def nfdump_row(sa, da, sp, dp, pr, flg, td, ipkt, ibyt, opkt, obyt) -> str:
    """One line as `nfdump -B -o csv` prints a bidirectional record nfpcapd made of a capture."""
    return (f"2018-03-24 17:15:21,2018-03-24 17:15:21,{td},{sa},{da},{sp},{dp},{pr},{flg},0,0,{ipkt},{ibyt},{opkt},"
            f"{obyt},0,0,0,0,0,0,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,"
            "00:00:00:00:00:00,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,    0.000,    0.000,"
            "    0.000,0.0.0.0,17/1,0,2026-12-06 12:53:16.762")


def nfdump_flow(line: str) -> pa.Table:
    raw, _, _ = N.parse_csv((NFDUMP_CSV_HEADER + "\n" + line + "\n").encode(), require_summary=False)
    flows, rejects = N.convert(raw, "nfcapd.test")
    assert rejects.num_rows == 0
    return flows


# One connection as each tool writes it: Zeek's conn.log line and nfdump's bidirectional record
# (nfpcapd + nfdump -B) of the same packets. The TCP one: SYN, SYN-ACK, ACK, the request (PSH),
# the response (PSH), FIN/ACK each way; 6 packets / 420 IP bytes out, 5 / 1200 back, 0.25 s.
SAME_CONNECTION = {
    "tcp, handshake, data, FIN both ways": (
        zeek_row(),
        nfdump_row("10.0.0.1", "10.0.0.2", 51000, 80, "TCP", "...AP.SF", "0.250", 6, 420, 5, 1200)),
    "tcp, SYN answered by RST (REJ)": (
        zeek_row(sport="40000", dport="23", duration="0.000064", state="REJ", history="Sr", opkts="1",
                 obytes="60", rpkts="1", rbytes="40"),
        nfdump_row("10.0.0.1", "10.0.0.2", 40000, 23, "TCP", "...A.RS.", "0.000", 1, 60, 1, 40)),
    "udp DNS over IPv6, one packet each way": (
        zeek_row(orig="fe80::1a31:bfff:fed5:2eb9", sport="42482", resp="fe80::1", dport="53", proto="udp",
                 duration="0.004000", history="Dd", opkts="1", obytes="98", rpkts="1", rbytes="218"),
        nfdump_row("fe80::1a31:bfff:fed5:2eb9", "fe80::1", 42482, 53, "UDP", "........", "0.004", 1, 98, 1, 218)),
    "icmp echo request and reply": (
        zeek_row(sport="8", dport="0", proto="icmp", duration="0.001000", state="OTH", history="-", opkts="1",
                 obytes="84", rpkts="1", rbytes="84"),
        nfdump_row("10.0.0.1", "10.0.0.2", 0, 8 * 256, "ICMP", "........", "0.001", 1, 84, 1, 84)),
    "icmp echo reply alone (resp_p is the counterpart type, the code is 0)": (
        zeek_row(sport="0", dport="8", proto="icmp", duration="-", state="OTH", history="-", opkts="1",
                 obytes="84", rpkts="0", rbytes="0"),
        nfdump_row("10.0.0.1", "10.0.0.2", 0, 0, "ICMP", "........", "0.000", 1, 84, 0, 0)),
    "icmp port unreachable (one-way: resp_p is the code)": (
        zeek_row(sport="3", dport="3", proto="icmp", duration="-", state="OTH", history="-", opkts="1",
                 obytes="56", rpkts="0", rbytes="0"),
        nfdump_row("10.0.0.1", "10.0.0.2", 0, 3 * 256 + 3, "ICMP", "........", "0.000", 1, 56, 0, 0)),
}


@pytest.mark.parametrize("case", list(SAME_CONNECTION))
def test_a_zeek_flow_has_the_features_of_nfdumps_flow_of_the_same_connection(case):
    from spot_ae_job.features import FEATURE_INPUTS, FEATURES, feature_matrix

    zeek_line, nf_line = SAME_CONNECTION[case]
    dec = decode(zeek_line)
    assert dec.rejects.num_rows == 0, dec.rejects.to_pylist()
    z, n = dec.flows.select(FEATURE_INPUTS).to_pandas(), nfdump_flow(nf_line).select(FEATURE_INPUTS).to_pandas()
    # nfdump keeps milliseconds, Zeek microseconds: durations agree to nfdump's millisecond
    assert z.drop(columns="tdur").to_dict("records") == n.drop(columns="tdur").to_dict("records")
    assert z["tdur"].tolist() == pytest.approx(n["tdur"].tolist(), abs=1e-3)
    assert feature_matrix(z).tolist() == [pytest.approx(row, abs=1e-3) for row in feature_matrix(n).tolist()], FEATURES


def test_icmpv6_neighbour_discovery_is_icmp6_with_type_and_code_in_nfdumps_port():
    dec = decode(zeek_row(orig="fe80::1c57:dcff:fe05:6664", sport="134", resp="ff02::1", dport="133", proto="icmp",
                          history="-", state="OTH", rpkts="0", rbytes="0", obytes="128", opkts="1"),
                 zeek_row(orig="fe80::1863:23ff:fe39:a42c", sport="143", resp="ff02::16", dport="0", proto="icmp",
                          history="-", state="OTH", rpkts="0", rbytes="0", obytes="192", opkts="2"))
    assert dec.flows["proto"].to_pylist() == ["ICMP6", "ICMP6"]
    assert dec.flows["sport"].to_pylist() == [0, 0]
    assert dec.flows["dport"].to_pylist() == [134 * 256, 143 * 256]  # RA's resp_p is its counterpart RS, code 0


def test_time_columns_are_the_utc_parts_of_the_first_packets_second():
    r = decode(zeek_row(ts="1521911721.955387")).flows.to_pylist()[0]
    assert (r["treceived"], r["unix_tstamp"]) == ("2018-03-24 17:15:21", 1521911721)
    assert (r["tryear"], r["trmonth"], r["trday"], r["trhour"], r["trminute"], r["trsec"]) == (2018, 3, 24, 17, 15, 21)


@pytest.mark.parametrize("row, reason", [
    (zeek_row(ts="946684799.5"), "timestamp before 2000"),
    (zeek_row(ts="-"), "ts unset"),
    (zeek_row(ts="yesterday"), "unparsable ts"),
    (zeek_row(orig="10.0.0.256"), "unparsable id.orig_h"),
    (zeek_row(resp="fe80::1"), "id.orig_h and id.resp_h of different address families"),
    (zeek_row(dport="70000"), "port out of range (> 65535)"),
    (zeek_row(opkts="-"), "orig_pkts unset"),
    (zeek_row(rbytes="12x"), "unparsable resp_ip_bytes"),
    (zeek_row(opkts="0", obytes="60"), "orig_ip_bytes without orig_pkts"),
    (zeek_row(opkts="6", obytes="100"), "orig_ip_bytes below 20 bytes per packet"),
    (zeek_row(duration="-1.000000"), "negative duration"),
    (zeek_row(duration="1e400"), "duration of 1e+09 s or more"),
    (zeek_row(ts="1e+20"), "timestamp after 9999"),
    (zeek_row(opkts="500000000000000000", obytes="100000000000000000"), "orig_ip_bytes below 20 bytes per packet"),
    (zeek_row(proto="unknown_transport", sport="0", dport="0", history="-"),
     "protocol not recorded (proto is not tcp/udp/icmp and there is no ip_proto)"),
    (zeek_row(proto="icmp", sport="300", dport="0"), "ICMP type or code out of range (> 255)"),
])
def test_rows_that_cannot_be_trusted_are_rejects_with_a_reason(row, reason):
    dec = decode(zeek_row(), row)
    assert dec.flows.num_rows == 1
    assert dec.rejects["reject_reason"].to_pylist() == [reason]
    assert json.loads(dec.rejects["raw"][0].as_py())["history"] == row.split("\t")[14]


def test_a_damaged_byte_rejects_its_row_not_the_file():
    damaged = zeek_row().encode().replace(b"10.0.0.1", b"10.0.\xff.1", 1)
    dec = Z.decode_text(HEADER.encode() + zeek_row().encode() + b"\n" + damaged + b"\n", "conn.x.log")
    assert dec.flows.num_rows == 1
    assert dec.rejects["reject_reason"].to_pylist() == ["unparsable id.orig_h"]


def test_unset_duration_is_zero_and_unset_history_sets_no_flag():
    r = decode(zeek_row(duration="-", history="-", state="S0")).flows.to_pylist()[0]
    assert (r["tdur"], r["flag"]) == (0.0, "........")


def test_a_concatenation_of_logs_with_different_layouts_reads_each_under_its_own_header(data_dir):
    bro = data_dir / "zeek" / "SuperCowPowers__zat" / "data" / "conn.log"  # Bro 2.x: no local_resp, table[string]
    zeek5 = data_dir / "zeek" / "elmMinh__apt-investigation" / "conn.log"  # Zeek 5+: ip_proto
    dec = Z.decode_text(bro.read_bytes() + zeek5.read_bytes(), "conn.cat.log")
    assert dec.flows.num_rows == len(data_lines(bro)) + len(data_lines(zeek5))
    assert dec.rejects.num_rows == 0


def test_a_json_line_that_does_not_parse_is_a_reject_and_other_logs_records_too():
    good = json.dumps({"ts": 1575413096.05, "id.orig_h": "10.18.20.97", "id.orig_p": 49187, "id.resp_h": "10.18.20.8",
                       "id.resp_p": 88, "proto": "tcp", "history": "ShADdFar", "conn_state": "RSTR", "orig_pkts": 4,
                       "orig_ip_bytes": 414, "resp_pkts": 4, "resp_ip_bytes": 455, "duration": 1.2e-05})
    dns = json.dumps({"_path": "dns", "ts": 1575413096.05, "id.orig_h": "10.18.20.97"})
    dec = Z.decode_text(f"{good}\n{good[:40]}\n{dns}\n".encode(), "conn.json.log")
    assert dec.flows.num_rows == 1 and dec.nfdump_flows == 3
    assert dec.flows["tdur"].to_pylist() == [pytest.approx(1.2e-05)]
    assert dec.rejects["reject_reason"].to_pylist() == ["not a JSON object", "a dns record, not conn"]


def test_arrows_json_reader_and_the_line_by_line_one_give_the_same_rows(data_dir):
    json_logs = [p for p in real_logs(data_dir) if Z.read_text(p).startswith(b"{")]
    assert len(json_logs) == (data_dir / "zeek" / "SOURCES.md").read_text().count("| JSON lines")
    for path in json_logs:
        text = Z.read_text(path)
        fast = Z._read_json_fast(text)
        slow, malformed = Z.read_json_lines(text, path.name)
        assert fast is not None and not malformed, path
        assert Z.convert(fast, path.name)[0].equals(Z.convert(slow, path.name)[0]), path


def test_json_logs_with_iso_8601_times_read_the_same_second():
    rec = {"ts": "2019-12-03T22:44:56.052279Z", "id.orig_h": "10.18.20.97", "id.orig_p": 49187,
           "id.resp_h": "10.18.20.8", "id.resp_p": 88, "proto": "udp", "orig_pkts": 1, "orig_ip_bytes": 60,
           "resp_pkts": 1, "resp_ip_bytes": 80}
    r = Z.decode_text((json.dumps(rec) + "\n").encode(), "conn.iso.log").flows.to_pylist()[0]
    assert (r["treceived"], r["unix_tstamp"]) == ("2019-12-03 22:44:56", 1575413096)


def test_gzip_and_plain_text_of_one_log_are_one_source(data_dir, tmp_path):
    path = data_dir / "zeek" / "brimdata__zed" / "conn.log"
    gz = tmp_path / "conn.x.log.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert Z.content_tag(Z.read_text(gz)) == Z.content_tag(Z.read_text(path))
    assert Z.decode_file(gz).flows.equals(Z.decode_file(path).flows)


@pytest.mark.parametrize("make, why", [
    (lambda d: b"", "empty file"),
    (lambda d: (d / "zeek" / "SOURCES.md").read_bytes(), "neither Zeek TSV"),
    (lambda d: bytes(range(256)) * 8, "neither Zeek TSV"),
    (lambda d: gzip.compress((d / "zeek" / "brimdata__zed" / "conn.log").read_bytes())[:2000], "broken gzip"),
    (lambda d: HEADER.replace("#path\tconn", "#path\tdns").encode() + zeek_row().encode(), "a Zeek dns log, not conn"),
    (lambda d: HEADER.replace("orig_ip_bytes", "orig_ipbytes").encode() + zeek_row().encode(), "#fields lacks"),
    (lambda d: HEADER.replace("time\tstring\taddr", "double\tstring\taddr").encode() + zeek_row().encode(),
     "#types"),
    (lambda d: b'{"a": 1}\n{"b": 2}\n', "no line is a Zeek conn record"),
    (lambda d: b"#separator \\x09\n" + zeek_row().encode() + b"\n", "data lines before any #fields header"),
])
def test_files_that_are_no_conn_log_raise_for_quarantine(data_dir, tmp_path, make, why):
    bad = tmp_path / "conn.bad.log"
    bad.write_bytes(make(data_dir))
    with pytest.raises(Z.ZeekFileError, match=why):
        Z.decode_file(bad)


# -- the watcher and the command -------------------------------------------------------------

def table_rows(root: Path) -> pa.Table:
    files = sorted((root / "flow" / "hive").rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def test_the_watcher_lands_rotated_zeek_logs_once_beside_nfcapd_files_and_leaves_the_live_log(data_dir, tmp_path):
    from spot_ae_job.ingest.watcher import StoreConfig, Watcher

    rita = data_dir / "zeek" / "activecm__rita" / "test_data" / "missing_host" / "2024-04-19" / \
        "conn.00:00:00-01:00:00.log.gz"
    kishpud = data_dir / "zeek" / "Kishpud__SOC-Zeek-Lab" / "conn.log"
    spool, root = tmp_path / "spool", tmp_path / "spot"
    zdir = tmp_path / "zeek-logs"
    (zdir / "2024-04-19").mkdir(parents=True)
    shutil.copy(rita, zdir / "2024-04-19" / rita.name)  # zeekctl's archive layout
    shutil.copy(kishpud, zdir / "conn.2025-08-04-11-29-16.log")  # zeek's own rotation name
    shutil.copy(kishpud, zdir / "conn.log")  # live: Zeek is still writing it
    (zdir / "conn.junk.log").write_bytes(b"\x00garbage")
    (spool / "nfcapd").mkdir(parents=True)
    shutil.copy(data_dir / "nfcapd" / "nfcapd.sample", spool / "nfcapd" / "nfcapd.202301251835")
    nf_flows = N.decode_file(data_dir / "nfcapd" / "nfcapd.sample").flows.num_rows
    w = Watcher(StoreConfig("file://" + str(root)), spool, workers=1, poll=0.1, zeek_dir=zdir, settle=0)
    stats = w.run(until_idle=True)

    expect = (len(data_lines(rita)) - 1) + (len(data_lines(kishpud)) - 1)  # each has one reject (tests above)
    assert stats["ingested"] == 3 and stats["quarantined"] == 1 and stats["flows"] == expect + nf_flows
    assert table_rows(root).num_rows == expect + nf_flows
    assert (spool / "done" / "nfcapd.202301251835").is_file()
    assert len(list((root / "flow" / "quarantine" / "zeek").glob("zeek-*.parquet"))) == 2
    assert len(list((root / "flow" / "ingest_state").glob("zeek-*.json"))) == 2
    assert (spool / "done" / "zeek" / "2024-04-19" / rita.name).is_file()
    assert (zdir / "conn.log").is_file() and not (zdir / "conn.2025-08-04-11-29-16.log").exists()
    assert "neither Zeek TSV" in (spool / "quarantine" / "conn.junk.log.reason").read_text()

    # the same log again, gzipped this time: one source, already in the table
    (zdir / "conn.again.log.gz").write_bytes(gzip.compress(kishpud.read_bytes()))
    stats = Watcher(StoreConfig("file://" + str(root)), spool, workers=1, poll=0.1, zeek_dir=zdir, settle=0) \
        .run(until_idle=True)
    assert stats["already-ingested"] == 1 and stats["ingested"] == 0
    assert table_rows(root).num_rows == expect + nf_flows


def test_a_zeek_log_still_being_written_waits_for_the_settle_time(tmp_path):
    from spot_ae_job.ingest.watcher import StoreConfig, Watcher

    w = Watcher(StoreConfig("file://" + str(tmp_path / "spot")), tmp_path / "spool", workers=1, settle=60)
    (w.zeek_dir / "conn.2025-01-01-00-00-00.log").write_text(HEADER)
    assert w.closed_zeek_files() == []
    old = time.time() - 120
    os.utime(w.zeek_dir / "conn.2025-01-01-00-00-00.log", (old, old))
    assert [p.name for p in w.closed_zeek_files()] == ["conn.2025-01-01-00-00-00.log"]


def test_pruning_done_reaches_the_zeek_logs_in_their_folders(tmp_path):
    from spot_ae_job.ingest.watcher import StoreConfig, Watcher

    w = Watcher(StoreConfig("file://" + str(tmp_path / "spot")), tmp_path / "spool", workers=1, keep_done_hours=1)
    old_log = w.done_dir / "zeek" / "2024-04-19" / "conn.00:00:00-01:00:00.log.gz"
    new_log = w.done_dir / "zeek" / "2024-04-20" / "conn.00:00:00-01:00:00.log.gz"
    for p in (old_log, new_log):
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
    old = time.time() - 2 * 3600
    os.utime(old_log, (old, old))
    os.utime(old_log.parent, (old, old))
    w.prune_done()
    assert not old_log.exists() and new_log.exists()


def test_ingest_zeek_command_reports_every_file_and_quarantines_a_copy_of_a_bad_one(data_dir, tmp_path, capsys):
    from spot_ae_job.ingest import cli

    logs = tmp_path / "logs"
    shutil.copytree(data_dir / "zeek" / "brimdata__zed", logs)
    (logs / "conn.broken.log").write_bytes(b"not a log")
    rc = cli.main(["zeek", str(logs), "--huser", "file://" + str(tmp_path / "spot"), "--quarantine",
                   str(tmp_path / "q"), "--workers", "1"])
    out = capsys.readouterr().out
    assert rc == 1  # one file quarantined
    assert f"ingested conn.log: {len(data_lines(logs / 'conn.log'))} flows" in out
    assert "QUARANTINED conn.broken.log" in out and (logs / "conn.broken.log").exists()
    assert (tmp_path / "q" / "conn.broken.log.reason").is_file()


# -- deployment: compose and Ansible watch the same Zeek folder the CLI understands ------------

def _watch_args(argv: list[str]):
    from spot_ae_job.ingest.cli import _parser

    assert argv[:3] == ["spot-ae", "ingest", "watch"] or argv[1:3] == ["ingest", "watch"], argv
    return _parser().parse_args(argv[2:])


def test_compose_runs_the_watcher_on_a_zeek_folder_it_mounts():
    import yaml

    svc = yaml.safe_load((REPO / "compose" / "docker-compose.yml").read_text())["services"]["ingest"]
    # compose fills ${VAR:-default} from compose/.env or the environment: the default stands in here
    args = _watch_args([re.sub(r"^\$\{[A-Z_]+:-(.*)\}$", r"\1", a) for a in svc["command"]])
    assert args.zeek_dir == "/var/spool/spot-ae/zeek" and args.spool == "/var/spool/spot-ae"
    assert any(v.endswith(":" + args.zeek_dir) for v in svc["volumes"])
    assert "mkdir -p " + args.zeek_dir in (REPO / "images" / "ingest" / "Dockerfile").read_text()


def test_the_ansible_unit_passes_the_roles_zeek_folder_to_the_same_option():
    import jinja2
    import yaml

    role = REPO / "ansible" / "roles" / "spot_ingest"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text())
    specs = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    unit = jinja2.Template((role / "templates" / "spot-ingest.service.j2").read_text()).render(
        ansible_managed="test", common_user="spot", spot_ml_huser="hdfs://nn:8020/user/spot",
        groups={"namenode": ["nn"]}, **defaults)
    exec_start = next(ln for ln in unit.replace("\\\n", " ").splitlines() if ln.startswith("ExecStart="))
    args = _watch_args(shlex.split(exec_start[len("ExecStart="):]))
    assert args.zeek_dir == defaults["spot_ingest_zeek_dir"] == "/var/spool/spot-ae/zeek"
    assert specs["spot_ingest_zeek_dir"]["type"] == "path"
    assert "spot_ingest_zeek_dir" in (role / "tasks" / "install.yml").read_text()
    assert "spot_ingest_zeek_dir is match('^/')" in (role / "tasks" / "preflight.yml").read_text()
