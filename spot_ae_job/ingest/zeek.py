"""Zeek conn.log files -> rows of Spot's flow table (the Arrow tables nfdump.py makes), with quarantine.

Zeek writes one line per connection when it ends, in one of two documented text layouts: TSV with
a header that declares its own separator, set separator, unset (`-`) and empty (`(empty)`)
markers, field names (`#fields`) and types (`#types`); or JSON lines, where an unset field is
simply left out. Either may be gzip-rotated. Both are read into string columns named as Zeek
names its fields, then mapped to FLOW_SCHEMA column-wise (pyarrow.compute; per distinct value
only where a value is looked up: addresses, `history`), so nothing here holds a second schema.

The mapping follows nfdump's bidirectional record (nfpcapd + `nfdump -B`, the pcap path): the
originator is the source, `ipkt/ibyt` its packets and IP bytes, `opkt/obyt` the responder's.
docs/ingest.md has it field by field beside nfdump's; the choices that are judgements:
- bytes are `orig_ip_bytes`/`resp_ip_bytes` (IP-layer bytes, what NetFlow and nfdump count), not
  `orig_bytes` (payload bytes from TCP sequence numbers, which a missed segment inflates);
- `flag` is nfdump's `CEUAPRSF` text, built from `history` for TCP (`FLAG_BITS`); Zeek does not
  record PSH, URG, ECE or CWR, so P is inferred from payload (D/d) and the rest stay unset;
- an ICMP flow's ports become nfdump's: source 0, destination type * 256 + code. Zeek logs the
  type as `id.orig_p` and, for request/reply types, the counterpart type (not the code, which
  RFC 792 fixes at 0 for those) as `id.resp_p`;
- an unset `duration` is 0 s: Zeek leaves it unset when first and last packet coincide, where
  nfdump writes 0.

Rows that cannot be trusted are rejects with a reason (never dropped): a line that does not
split into the header's fields (a torn write), a time before 2000 or unparsable, an address or
port that does not parse, unset packet or byte counts, impossible counts, a protocol Zeek did
not record. A file that is not a Zeek conn log at all (no header, another log's `#path`, a
header without the fields a flow needs, broken gzip) raises ZeekFileError: quarantine it.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import socket
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from spot_ae_job.errors import SpotAEError
from spot_ae_job.ingest.nfdump import (ARROW_FLOW_SCHEMA, ARROW_REJECT_SCHEMA, MIN_YEAR, PROTO_CSV_TEXT, RAW_COLUMN,
                                       Decoded, _second_text, _split)
from spot_ae_job.schema import REJECT_REASON, SOURCE_FILE

# The conn.log fields a flow is made of, and the Zeek type each must be declared with in TSV.
REQUIRED = {"ts": "time", "id.orig_h": "addr", "id.orig_p": "port", "id.resp_h": "addr", "id.resp_p": "port",
            "proto": "enum", "orig_pkts": "count", "orig_ip_bytes": "count", "resp_pkts": "count",
            "resp_ip_bytes": "count"}
# Read when present: Bro 2.x and JSON rows may lack them (`ip_proto` is Zeek 5+).
OPTIONAL = {"duration": "interval", "history": "string", "conn_state": "string", "ip_proto": "count"}
ZEEK_FIELDS = [*REQUIRED, *OPTIONAL]

_NUMBER = r"^-?[0-9]+(\.[0-9]*)?([eE][-+]?[0-9]+)?$"  # Zeek's %.6f, or a JSON number as Python prints it
_ISO_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$"  # JSON logs with JSON::TS_ISO8601
_YEAR_10000 = 253402300800  # epoch seconds; the flow table's text time has four year digits
_MIN_SECS = 946684800  # 2000-01-01 UTC
_MIN_IP_HEADER = 20  # no IP packet is shorter (IPv4 without options; IPv6 is 40)
_MAX_DURATION = 1e9  # seconds (31 years): longer is a broken clock, and float32 would hold infinity

# history letters (upper case: originator, lower case: responder) -> nfdump's flag bits
# (C E U A P R S F = 128 .. 1). Zeek records a letter once per direction for: s a SYN without
# ACK, h a SYN+ACK, a a pure ACK, d payload, f FIN, r RST, q a packet with SYN+FIN or SYN+RST,
# plus c/g/t/w/i/x/^ (checksum, gap, retransmit, zero window, inconsistent, partial, flipped)
# which carry no flag. nfdump's -B record holds the OR of both directions' flags, so case is
# folded.
FLAG_BITS = {
    "s": 0x02,         # SYN
    "h": 0x02 | 0x10,  # SYN+ACK
    "a": 0x10,         # ACK
    "d": 0x10 | 0x08,  # payload: every data segment after the handshake carries ACK (RFC 9293), and
                       # a sender sets PSH on the last segment of each write, so a direction that
                       # sent data shows P in nfdump in practice. Inferred: Zeek does not log PSH.
    "f": 0x01,         # FIN
    "r": 0x04,         # RST
    "q": 0x02,         # SYN with FIN or RST: SYN is certain, the other bit is not recorded
}
# A SYN answered by RST (conn_state REJ): that RST acknowledges the SYN, so it carries ACK (RFC 793).
REJ_BITS = 0x10
_FLAG_TEXT = ["".join(ch if v & (128 >> i) else "." for i, ch in enumerate("CEUAPRSF")) for v in range(256)]

# ICMP types Zeek pairs with a counterpart (request/reply): for them `id.resp_p` is that
# counterpart type and the code is 0; for every other type `id.resp_p` is the code.
# (Zeek's ICMP4_counterpart / ICMP6_counterpart.)
ICMP4_TWO_WAY = {8, 0, 13, 14, 15, 16, 10, 9, 17, 18}
ICMP6_TWO_WAY = {128, 129, 133, 134, 135, 136, 130, 131, 139, 140, 144, 145}
_ZEEK_PROTO = {"tcp": 6, "udp": 17, "icmp": 1}  # icmp over IPv6 is 58
_IP_PROTO_OF = {"tcp": {6}, "udp": {17}, "icmp": {1, 58}}
# What a Zeek flow cannot say: no exporter, interfaces, AS numbers, ToS or direction. The values
# nfdump prints for a flow nfpcapd made from a capture (the other sensor-made source).
_NO_EXPORTER = {"fwd": 0, "stos": 0, "input": 0, "output": 0, "sas": 0, "das": 0, "dtos": 0, "dir": 0}
NO_ROUTER = "0.0.0.0"


class ZeekFileError(SpotAEError):
    """The file is not a readable Zeek conn log (garbage, another log, no usable header): quarantine it."""


def read_text(path: str | os.PathLike) -> bytes:
    """The log's text, gunzipped if it is gzip (judged by the magic, not the name)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head != b"\x1f\x8b":
        return Path(path).read_bytes()
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise ZeekFileError(f"{path}: broken gzip ({e})") from None


def content_tag(text: bytes) -> str:
    """`zeek-<sha256 of the log's text>`: the same log plain or gzipped is one source, ingested once."""
    return "zeek-" + hashlib.sha256(text).hexdigest()[:24]


def decode_file(path: str | os.PathLike) -> Decoded:
    """One conn.log (TSV or JSON lines, plain or gzip) -> flows + rejects. `nfdump_flows` holds
    the rows the file has (data lines), so rows in = flows + rejects. Raises ZeekFileError."""
    return decode_text(read_text(path), Path(path).name)


def decode_text(text: bytes, source: str) -> Decoded:
    try:
        return _decode_text(text, source)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:  # damage no row rule foresaw: keep the file
        raise ZeekFileError(f"{source}: unreadable ({str(e).splitlines()[0][:200]})") from None


def _decode_text(text: bytes, source: str) -> Decoded:
    body = text.lstrip()
    if not body:
        raise ZeekFileError(f"{source}: empty file (Zeek always writes a header or a JSON line)")
    if body.startswith(b"#separator "):  # how every Zeek TSV log begins
        raw, malformed = _read_tsv(text, source)
    elif body.startswith(b"{"):
        raw, malformed = _read_json(text, source)
    else:
        raise ZeekFileError(f"{source}: neither Zeek TSV (#separator header) nor JSON lines (starts {body[:30]!r})")
    flows, rejects = convert(raw, source)
    if malformed:
        extra = pa.table({SOURCE_FILE: [source] * len(malformed), RAW_COLUMN: [m for m, _ in malformed],
                          REJECT_REASON: [r for _, r in malformed]}, schema=ARROW_REJECT_SCHEMA)
        rejects = pa.concat_tables([rejects, extra])
    return Decoded(source, flows, rejects, raw.num_rows + len(malformed))


# -- TSV -------------------------------------------------------------------------------------

def _unescape(value: str) -> str:
    r"""A header value as Zeek writes it: `\x09` for a tab."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def _read_tsv(text: bytes, source: str) -> tuple[pa.Table, list[tuple[str, str]]]:
    """Every block of data lines under its own header (a concatenation of logs repeats it):
    string columns ZEEK_FIELDS (null = unset), and the lines that did not split, with why."""
    tables, malformed = [], []
    meta: dict[str, str] = {}
    sep = "\t"
    pos = 0
    for m in re.finditer(rb"^#[^\n]*\n?", text, re.M):
        if m.start() > pos:
            block = _tsv_block(text[pos:m.start()], meta, sep, source, malformed)
            if block is not None:
                tables.append(block)
        line = m.group().rstrip(b"\r\n").decode("utf-8", "replace")
        if line.startswith("#separator "):
            sep = _unescape(line[len("#separator "):])
            meta = {}
        else:
            key, _, value = line[1:].partition(sep)
            meta[key] = value
        pos = m.end()
    if pos < len(text):
        block = _tsv_block(text[pos:], meta, sep, source, malformed)
        if block is not None:
            tables.append(block)
    return (pa.concat_tables(tables) if tables else _empty_raw()), malformed


def _empty_raw() -> pa.Table:
    return pa.table({f: pa.array([], pa.string()) for f in ZEEK_FIELDS})


def _check_header(meta: dict[str, str], sep: str, source: str) -> tuple[list[str], dict[str, str]]:
    """The header's field names and types; ZeekFileError if it does not describe a conn log."""
    if "fields" not in meta:
        raise ZeekFileError(f"{source}: data lines before any #fields header")
    if meta.get("path", "conn") != "conn":
        raise ZeekFileError(f"{source}: a Zeek {meta['path']} log, not conn")
    if len(sep) != 1:
        raise ZeekFileError(f"{source}: separator {sep!r} is not one character")
    names = meta["fields"].split(sep)
    types = dict(zip(names, meta["types"].split(sep))) if "types" in meta else {}
    missing = [f for f in REQUIRED if f not in names]
    if missing:
        raise ZeekFileError(f"{source}: #fields lacks {missing}: not a conn.log with packet and byte counts")
    wrong = [f"{f} is {types[f]}, not {t}" for f, t in {**REQUIRED, **OPTIONAL}.items() if types.get(f, t) != t]
    if wrong:
        raise ZeekFileError(f"{source}: #types differ from conn.log's: {'; '.join(wrong)}")
    return names, types


def _tsv_block(data: bytes, meta: dict[str, str], sep: str, source: str, malformed: list) -> pa.Table | None:
    if not data.strip():
        return None
    names, _ = _check_header(meta, sep, source)
    unset, empty = meta.get("unset_field", "-"), meta.get("empty_field", "(empty)")
    present = [f for f in ZEEK_FIELDS if f in names]
    bad: list[tuple[str, str]] = []

    def keep(row):  # a torn line: a reject with its text, not lost
        bad.append((row.text, f"wrong number of fields ({row.actual_columns}, #fields has {row.expected_columns})"))
        return "skip"

    opts = dict(
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=16 << 20),
        convert_options=pacsv.ConvertOptions(include_columns=present, column_types={f: pa.string() for f in present},
                                             null_values=[unset], strings_can_be_null=True),
    )
    parse = dict(delimiter=sep, quote_char=False, escape_char=False, double_quote=False)
    try:  # a row handler slows Arrow's parser even when never called: only when a line does not split
        table = pacsv.read_csv(io.BytesIO(data), parse_options=pacsv.ParseOptions(**parse), **opts)
    except pa.ArrowInvalid:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            # Zeek escapes every byte it cannot print, so this is damage: such a byte reads as U+FFFD,
            # and its row is a reject if the field must parse (an address, a number)
            data = data.decode("utf-8", "replace").encode()
        table = pacsv.read_csv(io.BytesIO(data), parse_options=pacsv.ParseOptions(**parse, invalid_row_handler=keep),
                               **opts)
    malformed += bad
    cols = {}
    for f in ZEEK_FIELDS:
        if f not in present:
            cols[f] = pa.nulls(table.num_rows, pa.string())
        else:
            col = table[f].combine_chunks()
            cols[f] = pc.if_else(pc.equal(col, empty), "", col) if f == "history" else col
    return pa.table(cols)


# -- JSON lines ------------------------------------------------------------------------------

# What Zeek's JSON writer emits for each field by default: Arrow's JSON reader types them as it
# parses (3x Python's json per line). Anything else in a file (a torn line, ISO 8601 times,
# another log's records) sends it to the line-by-line reader, which judges each line.
_JSON_TYPES = {f: pa.float64() if t in ("time", "interval") else pa.int64() if t in ("port", "count") else pa.string()
               for f, t in {**REQUIRED, **OPTIONAL}.items()}


def _read_json_fast(text: bytes) -> pa.Table | None:
    schema = pa.schema([(f, _JSON_TYPES[f]) for f in ZEEK_FIELDS] + [("_path", pa.string())])
    try:
        t = pajson.read_json(io.BytesIO(text), read_options=pajson.ReadOptions(use_threads=False, block_size=16 << 20),
                             parse_options=pajson.ParseOptions(explicit_schema=schema,
                                                               unexpected_field_behavior="ignore"))
        for f in t.column_names:  # Arrow's JSON reader does not check UTF-8 (a damaged byte): the line reader does
            if t.schema.field(f).type == pa.string():
                t[f].validate(full=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if t.num_rows != sum(1 for ln in text.splitlines() if ln.strip()) or t.num_rows == 0 \
            or pc.any(pc.not_equal(t["_path"], "conn")).as_py() or t["id.orig_h"].null_count == t.num_rows:
        return None
    return pa.table({f: pc.cast(t[f], pa.string()).combine_chunks() for f in ZEEK_FIELDS})


def _read_json(text: bytes, source: str) -> tuple[pa.Table, list[tuple[str, str]]]:
    """JSON lines -> the same string columns as TSV (an omitted key is unset)."""
    fast = _read_json_fast(text)
    return (fast, []) if fast is not None else read_json_lines(text, source)


def read_json_lines(text: bytes, source: str) -> tuple[pa.Table, list[tuple[str, str]]]:
    """JSON lines, one `json.loads` each: a line that is not a JSON object is a reject.
    ZeekFileError when no line is a conn record at all."""
    cols: dict[str, list] = {f: [] for f in ZEEK_FIELDS}
    malformed: list[tuple[str, str]] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line.decode("utf-8", "replace"))  # (a damaged byte: U+FFFD, judged by its field)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            malformed.append((line.decode("utf-8", "replace"), "not a JSON object"))
            continue
        path = rec.get("_path", "conn")
        if path != "conn":
            malformed.append((line.decode("utf-8", "replace"), f"a {path} record, not conn"))
            continue
        for f in ZEEK_FIELDS:
            v = rec.get(f)
            cols[f].append(None if v is None else ("T" if v else "F") if isinstance(v, bool) else str(v))
    n = len(cols["ts"])
    if n == 0 or all(v is None for v in cols["id.orig_h"]):
        raise ZeekFileError(f"{source}: no line is a Zeek conn record (JSON without ts and id.orig_h)")
    return pa.table({f: pa.array(v, pa.string()) for f, v in cols.items()}), malformed


# -- the mapping -----------------------------------------------------------------------------

def _number(col: pa.Array, name: str, checks: list, default: str | None = None) -> pa.Array:
    """A float column; unset is `default` (or a reject), text that is not a number a reject."""
    if default is not None:
        col = pc.fill_null(col, default)
    else:
        checks.append((pc.is_null(col), f"{name} unset"))
    ok = pc.match_substring_regex(col, _NUMBER)
    checks.append((pc.and_(pc.is_valid(col), pc.invert(ok)), f"unparsable {name}"))
    return pc.cast(pc.if_else(ok, col, "0"), pa.float64())


def _epoch(col: pa.Array, checks: list) -> pa.Array:
    """`ts` as float epoch seconds: Zeek's number, or the ISO 8601 UTC text of JSON::TS_ISO8601."""
    text = pc.fill_null(col, "")
    iso = pc.match_substring_regex(text, _ISO_TIME)
    if not pc.any(iso).as_py():
        return _number(col, "ts", checks)
    micros = pc.cast(pc.cast(pc.if_else(iso, text, "1970-01-01T00:00:00Z"), pa.timestamp("us", tz="UTC")), pa.int64())
    number = _number(pc.if_else(iso, "0", col), "ts", checks)
    return pc.if_else(iso, pc.divide(pc.cast(micros, pa.float64()), 1e6), number)


def _count(col: pa.Array, name: str, checks: list, required: bool = True) -> pa.Array:
    """An int64 column from Zeek's `count`/`port` text (1-18 digits)."""
    if required:
        checks.append((pc.is_null(col), f"{name} unset"))
    filled = pc.fill_null(col, "0")
    ok = pc.and_(pc.ascii_is_decimal(filled), pc.less_equal(pc.binary_length(filled), 18))
    checks.append((pc.invert(ok), f"unparsable {name}"))
    return pc.cast(pc.if_else(ok, filled, "0"), pa.int64())


def _addresses(col: pa.Array, name: str, checks: list) -> tuple[pa.Array, pa.Array]:
    """(address text as nfdump prints it, is IPv6), each distinct address parsed once with the C
    library's inet_pton/inet_ntop (nfdump formats with inet_ntop)."""
    enc = pc.dictionary_encode(pc.fill_null(col, ""))
    text, v6 = [], []
    for a in enc.dictionary.to_pylist():
        for fam in (socket.AF_INET, socket.AF_INET6):
            try:
                text.append(socket.inet_ntop(fam, socket.inet_pton(fam, a)))
                v6.append(fam == socket.AF_INET6)
                break
            except (OSError, ValueError):  # (ValueError: a NUL byte)
                continue
        else:
            text.append(None)
            v6.append(False)
    out = pa.array(text, pa.string()).take(enc.indices)
    checks.append((pc.is_null(out), f"unparsable {name}"))
    return out, pa.array(v6, pa.bool_()).take(enc.indices)


def history_flags(history: str | None, conn_state: str | None = None) -> int:
    """nfdump's TCP flag bits for one Zeek connection (FLAG_BITS, REJ_BITS)."""
    bits = 0
    for ch in (history or "").lower():
        bits |= FLAG_BITS.get(ch, 0)
    if conn_state == "REJ":
        bits |= REJ_BITS
    return bits


def _flags(history: pa.Array, conn_state: pa.Array, tcp: pa.Array) -> pa.Array:
    """`flag` text per row, worked out once per distinct (history, conn_state): few distinct."""
    pairs = pc.binary_join_element_wise(pc.fill_null(history, ""), pc.fill_null(conn_state, ""), "|")
    enc = pc.dictionary_encode(pairs)
    text = pa.array([_FLAG_TEXT[history_flags(*p.split("|", 1))] for p in enc.dictionary.to_pylist()], pa.string())
    return pc.if_else(tcp, text.take(enc.indices), _FLAG_TEXT[0])


def convert(raw: pa.Table, source: str) -> tuple[pa.Table, pa.Table]:
    """String columns named as Zeek's fields (null = unset) -> (flows in ARROW_FLOW_SCHEMA, rejects)."""
    c = {f: raw[f].combine_chunks() if raw.num_rows else pa.array([], pa.string()) for f in ZEEK_FIELDS}
    n = raw.num_rows
    checks: list[tuple[pa.Array, str]] = []
    ts = _epoch(c["ts"], checks)
    checks.append((pc.less(ts, _MIN_SECS), f"timestamp before {MIN_YEAR}"))
    checks.append((pc.greater_equal(ts, _YEAR_10000), "timestamp after 9999"))
    in_range = pc.and_(pc.greater_equal(ts, 0), pc.less(ts, _YEAR_10000))  # (the rest are rejects: any value casts)
    secs = pc.cast(pc.floor(pc.if_else(in_range, ts, 0.0)), pa.int64())
    dur = _number(c["duration"], "duration", checks, default="0")
    checks.append((pc.less(dur, 0), "negative duration"))
    checks.append((pc.greater_equal(dur, _MAX_DURATION), f"duration of {_MAX_DURATION:.0e} s or more"))

    sip, sip_v6 = _addresses(c["id.orig_h"], "id.orig_h", checks)
    dip, dip_v6 = _addresses(c["id.resp_h"], "id.resp_h", checks)
    checks.append((pc.not_equal(sip_v6, dip_v6), "id.orig_h and id.resp_h of different address families"))
    orig_p = _count(c["id.orig_p"], "id.orig_p", checks)
    resp_p = _count(c["id.resp_p"], "id.resp_p", checks)
    checks.append((pc.or_(pc.greater(orig_p, 65535), pc.greater(resp_p, 65535)), "port out of range (> 65535)"))

    # protocol: ip_proto (Zeek 5+) is the IP protocol number nfdump names; before it, Zeek's enum
    zproto = pc.utf8_lower(pc.fill_null(c["proto"], ""))
    ip_proto = _count(c["ip_proto"], "ip_proto", checks, required=False)
    has_ip_proto = pc.is_valid(c["ip_proto"])
    icmp = pc.equal(zproto, "icmp")
    named = pc.index_in(zproto, pa.array(list(_ZEEK_PROTO)))  # null for unknown_transport and the like
    guessed = pc.if_else(pc.and_(icmp, sip_v6), 58, pa.array(list(_ZEEK_PROTO.values()), pa.int64()).take(named))
    number = pc.if_else(has_ip_proto, ip_proto, guessed)
    # (a null in a check rejects the row: the next check is the one for an unknown protocol)
    checks.append((pc.fill_null(pc.greater(number, 255), False), "ip_proto out of range (> 255)"))
    checks.append((pc.is_null(number), "protocol not recorded (proto is not tcp/udp/icmp and there is no ip_proto)"))
    for zp, allowed in _IP_PROTO_OF.items():
        other = pc.invert(pc.is_in(ip_proto, pa.array(sorted(allowed), pa.int64())))
        clash = pc.and_(pc.and_(pc.equal(zproto, zp), has_ip_proto), other)
        checks.append((clash, f"proto {zp} but ip_proto another protocol"))
    number = pc.fill_null(pc.if_else(pc.greater(number, 255), 0, number), 0)
    proto = pc.utf8_trim_whitespace(PROTO_CSV_TEXT.take(number))

    # ICMP: nfdump's ports (0, type * 256 + code) from Zeek's (type, counterpart type or code)
    is_icmp6 = pc.equal(number, 58)
    is_icmp = pc.or_(pc.equal(number, 1), is_icmp6)
    two_way = pc.if_else(is_icmp6, pc.is_in(orig_p, pa.array(sorted(ICMP6_TWO_WAY), pa.int64())),
                         pc.is_in(orig_p, pa.array(sorted(ICMP4_TWO_WAY), pa.int64())))
    code = pc.if_else(two_way, 0, resp_p)
    checks.append((pc.and_(is_icmp, pc.or_(pc.greater(orig_p, 255), pc.greater(code, 255))),
                   "ICMP type or code out of range (> 255)"))
    sport = pc.if_else(is_icmp, 0, orig_p)
    dport = pc.if_else(is_icmp, pc.add(pc.multiply(orig_p, 256), code), resp_p)

    counts = {}
    for f in ("orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes"):
        counts[f] = _count(c[f], f, checks)
    for side in ("orig", "resp"):
        pkts, ipb = counts[f"{side}_pkts"], counts[f"{side}_ip_bytes"]
        checks.append((pc.and_(pc.equal(pkts, 0), pc.greater(ipb, 0)), f"{side}_ip_bytes without {side}_pkts"))
        checks.append((pc.less(pc.cast(ipb, pa.float64(), safe=False),
                                pc.multiply(pc.cast(pkts, pa.float64(), safe=False), float(_MIN_IP_HEADER))),
                       f"{side}_ip_bytes below {_MIN_IP_HEADER} bytes per packet"))
    checks.append((pc.and_(pc.equal(counts["orig_pkts"], 0), pc.equal(counts["resp_pkts"], 0)),
                   "no packets either way"))

    stamp = pc.cast(secs, pa.timestamp("s"))
    out = {
        "treceived": _second_text(secs), "unix_tstamp": secs, "tryear": pc.year(stamp), "trmonth": pc.month(stamp),
        "trday": pc.day(stamp), "trhour": pc.hour(stamp), "trminute": pc.minute(stamp), "trsec": pc.second(stamp),
        "tdur": pc.cast(dur, pa.float32()), "sip": pc.fill_null(sip, ""), "dip": pc.fill_null(dip, ""),
        "sport": sport, "dport": dport, "proto": proto,
        "flag": _flags(c["history"], c["conn_state"], pc.equal(number, 6)),
        "ipkt": counts["orig_pkts"], "ibyt": counts["orig_ip_bytes"],
        "opkt": counts["resp_pkts"], "obyt": counts["resp_ip_bytes"],
        "rip": pa.array([NO_ROUTER] * n, pa.string()),
        **{k: pa.array([v] * n, pa.int64()) for k, v in _NO_EXPORTER.items()},
    }
    checks = [(b, msg) for b, msg in checks if n and pc.any(pc.fill_null(b, True)).as_py()]
    return _split(out, checks, lambda bad: _raw_text(raw, bad), source)


def _raw_text(raw: pa.Table, bad: pa.Array) -> pa.Table:
    """The rejected rows' Zeek fields as the log wrote them (`-` for unset)."""
    return pa.table({f: pc.fill_null(pc.filter(raw[f].combine_chunks(), bad), "-") for f in ZEEK_FIELDS})
