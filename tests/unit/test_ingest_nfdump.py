"""nfdump output -> flow-table rows: every flow nfdump decodes is either a row or a reject."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess

import time

import pyarrow as pa
import pytest

from spot_ae_job.ingest import nfdump as N
from spot_ae_job.ingest.replay import Exporter, Flow, pcap_to_nfcapd, replay_datagrams, send
from spot_ae_job.schema import FLOW_COLUMNS

from tests.unit.test_ingest_collector import _exporter_groups, collect


def nfdump_rows(path, *extra):
    """What nfdump itself prints for a file: the reference every expectation comes from."""
    out = subprocess.run(["nfdump", "-r", str(path), "-o", "csv", *extra], capture_output=True, check=True,
                         env={**os.environ, "TZ": "UTC"}).stdout.decode()
    body = out.split("\nSummary\n")[0]
    return [r for r in csv.DictReader(io.StringIO(body)) if r["ts"] != "No matching flows"]


def test_sample_flows_match_nfdump_and_negative_durations_are_quarantined(data_dir):
    path = data_dir / "nfcapd" / "nfcapd.sample"
    ref = nfdump_rows(path)
    ends_before_start = [r for r in ref if r["te"] < r["ts"]]  # judged from ts/te, not from td
    kept = [r for r in ref if r["te"] >= r["ts"]]
    dec = N.decode_file(path)

    assert dec.nfdump_flows == len(ref)
    assert dec.flows.num_rows == len(kept) and dec.rejects.num_rows == len(ends_before_start) > 0
    assert set(dec.rejects["reject_reason"].to_pylist()) == {"negative duration (flow ends before it starts)"}
    assert dec.flows.schema == N.ARROW_FLOW_SCHEMA and dec.flows.column_names == FLOW_COLUMNS
    for col, nf in (("ibyt", "ibyt"), ("ipkt", "ipkt"), ("obyt", "obyt"), ("sport", "sp"), ("dport", "dp")):
        assert sum(dec.flows[col].to_pylist()) == sum(int(r[nf]) for r in kept), col
    first = dec.flows.slice(0, 1).to_pylist()[0]
    assert (first["treceived"], first["sip"], first["dip"], first["proto"], first["flag"]) == \
        (kept[0]["ts"][:19], kept[0]["sa"], kept[0]["da"], kept[0]["pr"], kept[0]["flg"])
    assert json.loads(dec.rejects["raw"][0].as_py())["sa"] == ends_before_start[0]["sa"]


def test_time_columns_are_utc_parts_of_the_start_time(data_dir):
    dec = N.decode_file(data_dir / "nfcapd" / "nfcapd-small-lzo")
    import datetime as dt

    for r in dec.flows.to_pylist():
        t = dt.datetime.fromtimestamp(r["unix_tstamp"], dt.timezone.utc)
        assert r["treceived"] == t.strftime("%Y-%m-%d %H:%M:%S")
        assert (r["tryear"], r["trmonth"], r["trday"], r["trhour"], r["trminute"], r["trsec"]) == \
            (t.year, t.month, t.day, t.hour, t.minute, t.second)


def test_layout_v1_lzo_file_with_warnings_still_gives_every_flow(data_dir):
    path = data_dir / "nfcapd" / "nfcapd-small-lzo"
    dec = N.decode_file(path)
    assert dec.flows.num_rows == len(nfdump_rows(path)) == 10
    assert any("Skip unknown record type" in w for w in dec.warnings)


def test_empty_file_is_fine_and_gives_no_rows(data_dir):
    dec = N.decode_file(data_dir / "nfcapd" / "nfcapd-empty")
    assert dec.flows.num_rows == 0 and dec.rejects.num_rows == 0 and dec.nfdump_flows == 0


@pytest.mark.parametrize("make_bad, why", [
    (lambda d, t: (d / "nfcapd" / "nfcapd-corrupt").read_bytes(), "Corrupt data file"),
    (lambda d, t: (d / "nfcapd" / "nfcapd.sample").read_bytes()[:300_000], "error"),
    (lambda d, t: (d / "README.md").read_bytes(), "not an nfcapd file"),
    (lambda d, t: b"", "not an nfcapd file"),
])
def test_bad_files_raise_a_clear_error(data_dir, tmp_path, make_bad, why):
    bad = tmp_path / "nfcapd.202301251835"
    bad.write_bytes(make_bad(data_dir, tmp_path))
    with pytest.raises(N.NfdumpFileError, match=why):
        N.decode_file(bad)


def test_bad_rows_get_reasons_and_nothing_is_dropped():
    rows = {c: [] for c in N.NFDUMP_FIELDS}
    good = dict(ts="2018-02-16 10:00:00", td="1.5", sa="10.0.0.1", da="10.0.0.2", sp="1234", dp="80", pr="TCP",
                flg="...AP.S.", fwd="0", stos="0", ipkt="3", ibyt="180", opkt="2", obyt="120", **{"in": "1"},
                out="2", sas="0", das="0", dtos="0", dir="0", ra="127.0.0.1")
    variants = [({}, None), ({"ts": "1970-01-01 00:00:07"}, "timestamp before 2000"),
                ({"ts": "yesterday"}, "unparsable timestamp"), ({"td": "18446744073709540.000"}, "negative duration"),
                ({"ipkt": "x"}, "unparsable ipkt"), ({"dp": "70000"}, "dp out of range"), ({"sa": ""}, "empty sa"),
                ({"sas": str(2**32)}, "sas out of range (> 4294967295)")]
    for change, _ in variants:
        for c in N.NFDUMP_FIELDS:
            rows[c].append({**good, **change}[c])
    flows, rejects = N.convert(pa.table(rows), "unit")
    assert flows.num_rows == 1 and flows["sip"][0].as_py() == "10.0.0.1" and flows["tdur"][0].as_py() == 1.5
    reasons = rejects["reject_reason"].to_pylist()
    assert len(reasons) == len(variants) - 1
    for (_, expected), got in zip(variants[1:], reasons):
        assert got.startswith(expected)


def test_saved_nfdump_csv_gives_the_same_rows_as_the_binary(data_dir, tmp_path):
    path = data_dir / "nfcapd" / "nfcapd.sample"
    saved = tmp_path / "sample.csv"
    saved.write_bytes(subprocess.run(["nfdump", "-r", str(path), "-o", "csv"], capture_output=True, check=True,
                                     env={**os.environ, "TZ": "UTC"}).stdout)
    assert N.decode_csv(saved).flows.equals(N.decode_file(path).flows)
    cut = tmp_path / "cut.csv"
    cut.write_bytes(saved.read_bytes()[:-60])  # Summary damaged: refuse rather than guess
    with pytest.raises(N.NfdumpFileError):
        N.decode_csv(cut)


def test_spark_reader_applies_the_same_rules(spark, data_dir, tmp_path):
    path = data_dir / "nfcapd" / "nfcapd.sample"
    saved = tmp_path / "sample.csv"
    saved.write_bytes(subprocess.run(["nfdump", "-r", str(path), "-o", "csv"], capture_output=True, check=True,
                                     env={**os.environ, "TZ": "UTC"}).stdout)
    direct = N.decode_file(path)
    res = N.read_nfdump_csv(spark, str(saved))
    assert res.flows.columns == FLOW_COLUMNS
    assert res.flows.count() == direct.flows.num_rows
    assert res.rejects.count() == direct.rejects.num_rows
    got = res.flows.orderBy("unix_tstamp", "sip", "dip", "sport", "dport", "ibyt").toPandas()
    want = direct.flows.to_pandas().sort_values(["unix_tstamp", "sip", "dip", "sport", "dport", "ibyt"]).reset_index(drop=True)
    assert got["ibyt"].sum() == want["ibyt"].sum() and list(got["sip"]) == list(want["sip"])


def test_fast_decode_lands_the_rows_of_the_row_by_row_rules(data_dir):
    """The fast path (nfdump's pipe and fmt outputs typed by Arrow) gives exactly the rows of the careful
    path: the whole `-o csv` output read at once, every value padded with a space so each column
    goes through the row-by-row rules (trim, regex, strptime)."""
    import pyarrow.compute as pc

    from spot_ae_job.ingest.watcher import split_by_hour

    path = data_dir / "nfcapd" / "nfcapd.sample"
    fast = N.decode_file(path)
    out, _ = N.run_nfdump(path)
    raw, counted, malformed = N.parse_csv(out)
    padded = pa.table({c: pc.binary_join_element_wise(" ", raw[c], "") for c in raw.column_names})
    flows, rejects = N.convert(padded, path.name)

    assert counted == fast.nfdump_flows and not malformed
    assert fast.flows.equals(flows)
    assert fast.rejects["reject_reason"].to_pylist() == rejects["reject_reason"].to_pylist()
    for col in ("ipkt", "ibyt", "opkt", "obyt"):  # (the sample is one-directional: opkt/obyt are 0)
        assert pc.sum(fast.flows[col]).as_py() == pc.sum(flows[col]).as_py()
    assert pc.sum(flows["ibyt"]).as_py() > 0
    assert [(h, t.num_rows) for h, t in split_by_hour(fast.flows)] == [(h, t.num_rows) for h, t in split_by_hour(flows)]


def test_a_line_arrow_cannot_split_is_kept_as_a_reject(data_dir, tmp_path):
    """Real nfdump output with one line damaged on its way (a wrapper rewrites line 3): the file is
    re-read the row-tolerant way; that line becomes a reject, every other flow lands."""
    path = data_dir / "nfcapd" / "nfcapd.sample"
    wrapper = tmp_path / "nfdump-damaging"
    wrapper.write_text("#!/bin/sh\nnfdump \"$@\" | awk 'NR == 3 { $0 = \"2023-01-25 18:35:43,cut short\" } { print }'\n")
    wrapper.chmod(0o755)
    clean = N.decode_file(path)
    assert N.decode_fast(path, nfdump=str(wrapper)) is None  # the fast path hands the file to -o csv
    dec = N.decode_file(path, nfdump=str(wrapper))
    assert dec.nfdump_flows == clean.nfdump_flows
    assert dec.flows.num_rows + dec.rejects.num_rows == clean.flows.num_rows + clean.rejects.num_rows
    assert dec.rejects["reject_reason"].to_pylist().count("wrong number of fields") == 1


# -- the fast path (nfdump -o pipe + -o fmt:...) against the -o csv path, on every real input --------

def assert_fast_decode_is_the_csv_decode(path, bidirectional=False) -> N.Decoded:
    """The fast path lands exactly what the `-o csv` path lands: every column of every row, and
    the rejects with their reasons and raw JSON."""
    fast = N.decode_fast(path, bidirectional)
    ref = N.decode_file_csv(path, bidirectional)
    assert fast is not None, f"{path}: the fast path handed the file to -o csv"
    assert (fast.nfdump_flows, fast.flows.num_rows, fast.rejects.num_rows) == \
        (ref.nfdump_flows, ref.flows.num_rows, ref.rejects.num_rows)
    for col in FLOW_COLUMNS:
        assert fast.flows[col].equals(ref.flows[col]), col
    assert fast.rejects.equals(ref.rejects)
    return fast


@pytest.mark.parametrize("name", ["nfcapd.sample", "nfcapd-small-lzo", "nfcapd-empty"])
def test_fast_decode_equals_csv_decode_on_real_nfcapd_files(data_dir, name):
    dec = assert_fast_decode_is_the_csv_decode(data_dir / "nfcapd" / name)
    if name == "nfcapd.sample":  # IPv6, ICMP and negative durations (rejects) are all in there
        assert dec.rejects.num_rows > 0 and "ICMP6" in dec.flows["proto"].to_pylist()
        assert any(":" in a for a in dec.flows["sip"].to_pylist())

# nfdump 1.7.1's own compression flags for -w (zstd needs a build with libzstd; this one has none)
COMPRESSIONS = {"lzo": "-z", "lz4": "-y", "bz2": "-j"}


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_a_compressed_file_is_decompressed_once_and_lands_what_nfdump_prints(data_dir, tmp_path, compression):
    """nfcapd writes compressed blocks: the file is decompressed by one nfdump run, and the fast
    path's two outputs read the uncompressed copy; what lands is what `-o csv` of the original prints."""
    plain = data_dir / "nfcapd" / "nfcapd.sample"
    packed = tmp_path / f"nfcapd.{compression}"
    subprocess.run(["nfdump", "-r", str(plain), COMPRESSIONS[compression], "-w", str(packed)], check=True,
                   capture_output=True)
    assert N.is_compressed(packed) and not N.is_compressed(plain)
    log = tmp_path / "calls"
    counting = tmp_path / "nfdump-counting"
    counting.write_text(f'#!/bin/sh\necho "$*" >> {log}\nexec nfdump "$@"\n')
    counting.chmod(0o755)

    dec = N.decode_file(packed, nfdump=str(counting))

    reads_of_the_original = [c for c in log.read_text().splitlines() if f"-r {packed} " in c + " "]
    assert reads_of_the_original == [f"-r {packed} -w /proc/{os.getpid()}/fd/" + c.rsplit("/", 1)[1]
                                     for c in reads_of_the_original] and len(reads_of_the_original) == 1
    ref = N.decode_file_csv(packed)
    assert dec.source == packed.name and dec.nfdump_flows == ref.nfdump_flows == len(nfdump_rows(packed))
    assert dec.flows.equals(ref.flows) and dec.rejects.equals(ref.rejects)


def test_the_layout_1_lzo_sample_is_compressed_by_its_header(data_dir):
    assert N.is_compressed(data_dir / "nfcapd" / "nfcapd-small-lzo")



@pytest.mark.parametrize("pcap", ["zeek/bruteforce.pcap", "zeek/sshguess.pcap", "zeek/ssh.pcap", "zeek/bro.org.pcap",
                                  "chrissanders-packets/synscan.pcapng", "chrissanders-packets/portscan.pcap",
                                  "chrissanders-packets/ftp-crack.pcap", "chrissanders-packets/http_espn.pcapng"])
def test_fast_decode_equals_csv_decode_on_real_pcaps_bidirectional(data_dir, tmp_path, pcap):
    files = pcap_to_nfcapd(data_dir / "pcap" / pcap, tmp_path)
    flows = sum(assert_fast_decode_is_the_csv_decode(f, bidirectional=True).flows.num_rows for f in files)
    assert flows > 0


def test_fast_decode_equals_csv_decode_on_real_exporters_collected_by_nfcapd(data_dir, tmp_path):
    groups = _exporter_groups(data_dir / "netflow" / "logstash-codec-netflow")
    closed = collect(tmp_path, lambda port: [replay_datagrams([str(p) for p in g], "127.0.0.1", port, rate=500)
                                             for g in groups])
    decoded = [assert_fast_decode_is_the_csv_decode(f) for f in closed]
    assert sum(d.nfdump_flows for d in decoded) > 100 and sum(d.rejects.num_rows for d in decoded) > 0


def test_every_protocol_number_gets_the_name_nfdump_csv_prints(tmp_path):
    """A flow of each protocol 0..255 (and ICMP/ICMPv6 type.code pairs) through a real nfcapd: the
    fast path names the protocol, numbers the ICMP port and spells the flag bits (which the
    exporter sends with every protocol here, not only TCP) as `-o csv` does."""
    now = int(time.time()) * 1000
    flows = [Flow("10.0.0.1", "10.0.0.2", 1000 + p, 2000 + p, p, p, now - 5000, now - 1000, 1 + p, 100 + p, 0, 0)
             for p in range(256)]
    flows += [Flow(src, dst, 0, icmp_type * 256 + code, proto, 0, now - 3000, now - 2000, 1, 64, 0, 0)
              for icmp_type, code in [(3, 3), (3, 10), (8, 0), (11, 1), (255, 255)]
              for proto, src, dst in [(1, "10.0.0.3", "10.0.0.4"), (58, "fe80::1", "fe80::2")]]
    closed = collect(tmp_path, lambda port: send(Exporter(10).messages_for(flows), "127.0.0.1", port, 500))
    fast = pa.concat_tables([N.decode_fast(f).flows for f in closed])
    ref = pa.concat_tables([N.decode_file_csv(f).flows for f in closed])

    assert fast.num_rows == ref.num_rows == len(flows)
    assert fast.equals(ref)
    assert len(set(ref["proto"].to_pylist())) == 255  # (nfdump names both 35 and 38 "IDPR")
    assert sum(f != "........" for f, p in zip(ref["flag"].to_pylist(), ref["proto"].to_pylist()) if p != "TCP") > 200


def _ipfix_with_as_numbers(flows: list[tuple[int, int]], now_ms: int) -> bytes:
    """One IPFIX message (RFC 7011) whose records carry bgpSourceAsNumber (16) and
    bgpDestinationAsNumber (17), the 4-byte fields exporters fill from BGP (RFC 6793)."""
    import struct

    fields = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (152, 8), (153, 8), (2, 8), (1, 8), (16, 4), (17, 4)]
    tpl = struct.pack("!HH", 256, len(fields)) + b"".join(struct.pack("!HH", i, n) for i, n in fields)
    recs = b"".join(struct.pack("!4s4sHHBQQQQII", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 1000 + i, 443, 6,
                                now_ms - 2000, now_ms - 1000, 3, 180, sas, das)
                    for i, (sas, das) in enumerate(flows))
    sets = struct.pack("!HH", 2, 4 + len(tpl)) + tpl + struct.pack("!HH", 256, 4 + len(recs)) + recs
    return struct.pack("!HHIII", 10, 16 + len(sets), now_ms // 1000, 0, 1) + sets


def test_four_byte_as_numbers_land_as_nfdump_prints_them(tmp_path):
    """AS numbers are unsigned 32-bit (RFC 6793); 4294967295 and anything above 2^31-1 are real
    values exporters send, not errors: they land in sas/das as nfdump prints them."""
    now = int(time.time()) * 1000
    sent = [(4294967295, 2147483648), (2147483647, 4200000000), (64512, 0), (0, 4294967294)]
    closed = collect(tmp_path, lambda port: send([_ipfix_with_as_numbers(sent, now)], "127.0.0.1", port, 50))
    ref = [r for f in closed for r in nfdump_rows(f)]
    dec = [N.decode_file(f) for f in closed]
    flows = pa.concat_tables([d.flows for d in dec])

    assert sorted((int(r["sas"]), int(r["das"])) for r in ref) == sorted(sent)  # what nfdump decoded
    assert sum(d.rejects.num_rows for d in dec) == 0
    assert sorted(zip(flows["sas"].to_pylist(), flows["das"].to_pylist())) == sorted(sent)
    for f in closed:  # the -o csv path lands the same values
        assert N.decode_file_csv(f).flows.equals(N.decode_fast(f).flows)


def test_spark_reader_rejects_a_line_with_an_extra_field_instead_of_shifting_it(spark, data_dir, tmp_path):
    """Spark's PERMISSIVE CSV mode dropped an extra field and shifted the rest into the wrong
    columns. The line is a `wrong number of fields` reject, as in `decode_csv`."""
    out = subprocess.run(["nfdump", "-r", str(data_dir / "nfcapd" / "nfcapd.sample"), "-o", "csv"], capture_output=True,
                         check=True, env={**os.environ, "TZ": "UTC"}).stdout.decode()
    lines = out.split("\n")
    fields = lines[5].split(",")
    damaged = ",".join(fields[:3] + ["10.9.9.9"] + fields[3:])  # one address too many
    lines[5] = damaged
    saved = tmp_path / "damaged.csv"
    saved.write_text("\n".join(lines))
    res = N.read_nfdump_csv(spark, str(saved))
    ref = N.decode_file(data_dir / "nfcapd" / "nfcapd.sample")
    reasons = [(r.raw, r.reject_reason) for r in res.rejects.collect()]
    assert (damaged, "wrong number of fields") in reasons
    assert res.flows.count() + res.rejects.count() == ref.flows.num_rows + ref.rejects.num_rows
    assert res.flows.where("sip = '10.9.9.9' or dip = '10.9.9.9'").count() == 0


def test_saved_csv_line_with_binary_bytes_or_quotes_is_a_reject_not_an_error(data_dir, tmp_path):
    """A saved CSV damaged on its way: one line with a byte that is not UTF-8 (Arrow refused the
    whole file), one with a quoted number (Arrow unquoted it: a changed row). Both are rejects."""
    out = subprocess.run(["nfdump", "-r", str(data_dir / "nfcapd" / "nfcapd.sample"), "-o", "csv"], capture_output=True,
                         check=True, env={**os.environ, "TZ": "UTC"}).stdout
    lines = out.split(b"\n")
    header = lines[0].decode().split(",")
    lines[3] = lines[3].replace(b",", b",\xff", 1)
    quoted = lines[4].split(b",")
    quoted[header.index("dp")] = b'"' + quoted[header.index("dp")] + b'"'
    lines[4] = b",".join(quoted)
    saved = tmp_path / "damaged.csv"
    saved.write_bytes(b"\n".join(lines))
    dec = N.decode_csv(saved)
    clean = N.decode_file(data_dir / "nfcapd" / "nfcapd.sample")
    reasons = dec.rejects["reject_reason"].to_pylist()
    assert reasons.count("not UTF-8 text") == 1 and reasons.count("unparsable dp") == 1
    assert dec.flows.num_rows + dec.rejects.num_rows == clean.flows.num_rows + clean.rejects.num_rows
