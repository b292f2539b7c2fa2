"""Property-based fuzzing of the CSV readers, from real rows of ../shared/data, mutated.

Each example is one file: real CICFlowMeter rows (or real `nfdump -o csv` rows) with some of
them damaged the ways files get damaged: a field too many or too few, a field of the wrong type,
a huge field, binary bytes, a repeated header line. Whatever the reader gets:
  - rows in = rows loaded + rows rejected (a row is a non-empty line after the header);
  - every reject has a reason;
  - no row is silently changed: every loaded row's fields are those of an input row;
  - no traceback (a row is never an exception).
Many mutated rows go into one file per example, so one Spark job checks dozens of them.
"""
from __future__ import annotations

import collections
import os
import re
import subprocess
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from spot_ae_job.ingest import nfdump as N
from spot_ae_job.ingest.cicids import read_cicids

# hypothesis keeps a cache in ./.hypothesis; these tests replay nothing, so not in the checkout
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="spot-ae-hypothesis-"))

LINE_END = re.compile(rb"\r\n|\r|\n")  # how Hadoop's line reader and Arrow's CSV parser end a line
INTEGER = re.compile(r"^[+-]?[0-9]+(\.0*)?$")
SETTINGS = dict(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def _rows_in(data: bytes) -> int:
    return sum(1 for ln in LINE_END.split(data)[1:] if ln)


# -- mutations of one line (bytes) -----------------------------------------------------------------

def _fields(line: bytes) -> list[bytes]:
    return line.split(b",")


junk = st.one_of(
    st.text(min_size=0, max_size=12).map(lambda s: s.encode()),  # wrong types: letters, signs, unicode
    st.binary(min_size=1, max_size=8),  # binary bytes (may hold a line end: then one line becomes two)
    st.sampled_from([b"NaN", b"Infinity", b"-1", b"1.5", b"99999999999999999999999", b"", b" ", b'"6"', b"1e3"]),
    st.integers(1000, 200_000).map(lambda n: b"9" * n),  # a huge number
    st.integers(1000, 200_000).map(lambda n: b"x" * n),  # a huge text
)


@st.composite
def mutated(draw, line: bytes, header: bytes) -> bytes:
    f = _fields(line)
    kind = draw(st.sampled_from(["same", "same", "extra", "missing", "replace", "insert_bytes", "header"]))
    i = draw(st.integers(0, len(f) - 1))
    if kind == "extra":
        f.insert(i, draw(junk))
    elif kind == "missing":
        del f[i]
    elif kind == "replace":
        f[i] = draw(junk)
    elif kind == "insert_bytes":
        b = draw(st.binary(min_size=1, max_size=6))
        cut = draw(st.integers(0, len(f[i])))
        f[i] = f[i][:cut] + b + f[i][cut:]
    elif kind == "header":
        return header
    return b",".join(f)


def _file(draw, header: bytes, pool: list[bytes], n: tuple[int, int], end: bytes = b"\n") -> bytes:
    idx = draw(st.lists(st.integers(0, len(pool) - 1), min_size=n[0], max_size=n[1]))
    return header + end + end.join(draw(mutated(pool[i], header)) for i in idx) + end


# -- CICFlowMeter CSVs -------------------------------------------------------------------------------

def _decoded(line: bytes) -> str:
    """A line as the CIC reader reads it: UTF-8, or else Windows-1252 (its five undefined bytes as ISO-8859-1)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(bytes([b]).decode("cp1252", errors="strict") if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)
                       else chr(b) for b in line)


def _int(text: str):
    """The integer a field holds; None for no integer or one beyond 64 bits (the reader's longs)."""
    t = text.strip(" ")
    if not INTEGER.match(t) or len(t.split(".")[0].lstrip("+-0")) > 19:
        return None
    n = int(t.split(".")[0])
    return n if -2**63 <= n < 2**63 else None


def _cic_key(values: dict) -> tuple:
    return tuple(values[k] for k in ("dport", "ipkt", "ibyt", "opkt", "obyt", "label", "sip", "dip", "sport", "tdur"))


def _cic_input_keys(data: bytes, columns: dict) -> collections.Counter:
    """What each input line says, parsed here independently of the reader: the multiset of rows
    a loaded row may be."""
    lines = [ln for ln in LINE_END.split(data) if ln]
    header = _decoded(lines[0]).split(",")
    idx = {k: header.index(v) if v else None for k, v in columns.items()}
    keys = collections.Counter()
    for ln in lines[1:]:
        f = _decoded(ln).split(",")
        if len(f) != len(header):
            continue
        try:
            dur = float(f[idx["tdur"]].strip(" "))
        except ValueError:
            continue
        keys[_cic_key({
            "dport": _int(f[idx["dport"]]), "ipkt": _int(f[idx["ipkt"]]), "ibyt": _int(f[idx["ibyt"]]),
            "opkt": _int(f[idx["opkt"]]), "obyt": _int(f[idx["obyt"]]), "label": f[idx["label"]].strip(" "),
            "sip": f[idx["sip"]].strip(" ") if idx["sip"] is not None else None,
            "dip": f[idx["dip"]].strip(" ") if idx["dip"] is not None else None,
            "sport": _int(f[idx["sport"]]) if idx["sport"] is not None else None,
            "tdur": float(np.float32(dur / 1e6)),
        })] += 1
    return keys


CIC_SOURCES = {  # file -> its column for each flow field the check compares
    "aegmm__toy_dataset.csv": dict(dport="Dst Port", ipkt="Total Fwd Packet", ibyt="Total Length of Fwd Packet",
                                   opkt="Total Bwd packets", obyt="Total Length of Bwd Packet", label="Label",
                                   sip="Src IP", dip="Dst IP", sport="Src Port", tdur="Flow Duration"),
    "cstub__validation.csv": dict(dport="dst_port", ipkt="tot_fwd_pkts", ibyt="totlen_fwd_pkts", opkt="tot_bwd_pkts",
                                  obyt="totlen_bwd_pkts", label="label", sip=None, dip=None, sport=None,
                                  tdur="flow_duration"),
}


@pytest.fixture(scope="module")
def cic_pools(data_dir):
    pools = {}
    for name in CIC_SOURCES:
        lines = (data_dir / "cicids2018" / name).read_bytes().splitlines()
        pools[name] = (lines[0], lines[1:400])
    return pools


@settings(max_examples=6, **SETTINGS)
@given(data=st.data())
def test_cic_reader_loads_or_rejects_every_mutated_row_and_changes_none(spark, cic_pools, data):
    name = data.draw(st.sampled_from(sorted(CIC_SOURCES)))
    header, pool = cic_pools[name]
    end = data.draw(st.sampled_from([b"\n", b"\r\n"]))
    content = _file(data.draw, header, pool, (20, 60), end)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, name)
        with open(path, "wb") as fh:
            fh.write(content)
        res = read_cicids(spark, path)
        flows = res.flows.collect()
        rejects = res.rejects.collect()

    assert len(flows) + len(rejects) == _rows_in(content)
    assert all(r.reject_reason for r in rejects)
    want = _cic_input_keys(content, CIC_SOURCES[name])
    got = collections.Counter(_cic_key({**r.asDict(), "tdur": float(np.float32(r.tdur))}) for r in flows)
    assert not got - want, f"loaded rows no input line says: {list((got - want).elements())[:3]}"


# -- nfdump -o csv -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nfdump_csv(data_dir):
    out = subprocess.run(["nfdump", "-r", str(data_dir / "nfcapd" / "nfcapd.sample"), "-o", "csv"], check=True,
                         capture_output=True, env={**os.environ, "TZ": "UTC"}).stdout
    body, summary = out.split(b"\nSummary\n")
    lines = body.split(b"\n")
    return lines[0], lines[1:], b"Summary\n" + summary


NF_TEXT = ["sa", "da", "pr", "flg", "ra"]
NF_INT = {"sp": "sport", "dp": "dport", "ipkt": "ipkt", "ibyt": "ibyt", "opkt": "opkt", "obyt": "obyt",
          "sas": "sas", "das": "das", "in": "input", "out": "output"}


def _nf_input_keys(body: bytes) -> collections.Counter:
    lines = [ln for ln in LINE_END.split(body) if ln]
    header = lines[0].decode().split(",")
    keys = collections.Counter()
    for ln in lines[1:]:
        try:
            f = ln.decode("utf-8").split(",")
        except UnicodeDecodeError:
            continue
        if len(f) != len(header):
            continue
        row = dict(zip(header, f))
        ints = [int(row[c].strip()) if re.fullmatch(r"[0-9]{1,18}", row[c].strip()) else None for c in NF_INT]
        keys[(row["ts"].strip()[:19], *[row[c].strip() for c in NF_TEXT], *ints)] += 1
    return keys


def _nf_key(r: dict) -> tuple:
    return (r["treceived"], r["sip"], r["dip"], r["proto"], r["flag"], r["rip"], *[r[c] for c in NF_INT.values()])


def _check_nfdump(content: bytes, flows: list[dict], rejects: list[dict]):
    body = content[: content.rfind(b"\nSummary\n") + 1]
    assert len(flows) + len(rejects) == _rows_in(body)
    assert all(r["reject_reason"] for r in rejects)
    got = collections.Counter(_nf_key(r) for r in flows)
    want = _nf_input_keys(body)
    assert not got - want, f"loaded rows no input line says: {list((got - want).elements())[:3]}"


@settings(max_examples=150, **SETTINGS)
@given(data=st.data())
def test_nfdump_csv_decode_loads_or_rejects_every_mutated_row_and_changes_none(nfdump_csv, data):
    header, pool, summary = nfdump_csv
    content = _file(data.draw, header, pool, (1, 40)) + summary
    flows, rejects = N.decode_csv_text(content, "fuzz.csv")
    _check_nfdump(content, flows.to_pylist(), rejects.to_pylist())


@settings(max_examples=3, **SETTINGS)
@given(data=st.data())
def test_spark_nfdump_csv_reader_loads_or_rejects_every_mutated_row(spark, nfdump_csv, data):
    header, pool, summary = nfdump_csv
    content = _file(data.draw, header, pool, (20, 80)) + summary
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fuzz.csv")
        with open(path, "wb") as fh:
            fh.write(content)
        res = N.read_nfdump_csv(spark, path)
        flows = [r.asDict() for r in res.flows.collect()]
        rejects = [r.asDict() for r in res.rejects.collect()]
    _check_nfdump(content, flows, rejects)
