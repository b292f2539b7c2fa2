"""Replay for tests and demos: CIC-IDS2018 flow rows sent to a collector as real IPFIX or
NetFlow v9 packets, pcaps fed through nfpcapd, and raw exporter datagrams re-sent as they are.

Why a small struct-based exporter: no Debian package or maintained PyPI exporter turns CSV rows
into NetFlow (softflowd and nfpcapd export from packets; PyPI's netflow packages are collectors
and parsers). The encoding is the standard one: a template set announcing IANA information
elements, then data sets, templates re-sent every TEMPLATE_EVERY packets as RFC 7011 advises for
UDP. Elements (IANA id: meaning): 8/12 or 27/28 source/destination address, 7/11 ports,
4 protocol, 6 TCP flags, 152/153 flow start/end (ms, IPFIX) or 22/21 first/last switched
(NetFlow v9, relative to the header's uptime), 2/1 packets/bytes of the initiator (CIC "Fwd"),
24/23 packets/bytes of the reply (CIC "Bwd"): nfdump's ipkt/ibyt and opkt/obyt (SPEC §3).

CIC rows without addresses, ports or timestamps (several public excerpts drop them) are sent with
0.0.0.0, port 0 and the replay's start time, so their counters still travel; rows the CIC reader
would reject (non-numeric, negative) are not sent and are counted as skipped.
"""
from __future__ import annotations

import csv
import ipaddress
import math
import os
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from spot_ae_job.errors import SpotAEError
from spot_ae_job.ingest.nfdump import decode_file

TEMPLATE_EVERY = 16
_TS_FORMATS = ["%d/%m/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %I:%M:%S %p"]
_FLAG_BITS = {"fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20, "ece": 0x40, "cwr": 0x80}


@dataclass
class Flow:
    src: str
    dst: str
    sport: int
    dport: int
    proto: int
    flags: int
    start_ms: int
    end_ms: int
    ipkt: int
    ibyt: int
    opkt: int
    obyt: int


@dataclass
class ReplayStats:
    rows: int = 0
    sent_flows: int = 0
    skipped: int = 0
    packets: int = 0
    ipkt: int = 0
    ibyt: int = 0
    opkt: int = 0
    obyt: int = 0
    skip_reasons: dict = field(default_factory=dict)

    def count_sent(self, flows: list, packets: int) -> None:
        """Add what one send put on the wire: the totals the far side must add up to."""
        self.packets += packets
        self.sent_flows += len(flows)
        for f in flows:
            self.ipkt += f.ipkt
            self.ibyt += f.ibyt
            self.opkt += f.opkt
            self.obyt += f.obyt


def _number(text: str | None) -> float | None:
    try:
        v = float((text or "").strip())
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _timestamp(text: str | None) -> int | None:
    text = (text or "").strip()
    for fmt in _TS_FORMATS:
        try:
            return int(datetime.strptime(text, fmt).replace(tzinfo=timezone.utc).timestamp() * 1000)
        except ValueError:
            continue
    return None


def cicids_flows(path: str | os.PathLike, stats: ReplayStats, default_start_ms: int) -> list[Flow]:
    """The rows of one CICFlowMeter CSV as flows (CIC timestamps are taken as UTC, like the reader)."""
    from spot_ae_job.ingest.cicids import detect_columns  # (pyspark: not for the ingest workers' pcap path)

    flows = []
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.DictReader(f)
        cols = detect_columns(reader.fieldnames or [])
        for row in reader:
            stats.rows += 1
            nums = {k: _number(row.get(cols[k])) for k in
                    ("dst_port", "protocol", "duration_us", "fwd_pkts", "bwd_pkts", "fwd_bytes", "bwd_bytes")}
            why = None
            if (row.get(cols["label"]) or "").strip().lower() == "label":
                why = "repeated_header"
            elif any(v is None for v in nums.values()):
                why = "non_numeric_or_non_finite"
            elif any(nums[k] < 0 for k in nums):
                why = "negative_value"
            start = _timestamp(row.get(cols["timestamp"])) if "timestamp" in cols else default_start_ms
            if why is None and start is None:
                why = "bad_timestamp"
            if why:
                stats.skipped += 1
                stats.skip_reasons[why] = stats.skip_reasons.get(why, 0) + 1
                continue
            flags = 0
            for k, bit in _FLAG_BITS.items():
                if k in cols and (_number(row.get(cols[k])) or 0) > 0:
                    flags |= bit
            flows.append(Flow(
                src=(row.get(cols["src_ip"]) or "0.0.0.0").strip() if "src_ip" in cols else "0.0.0.0",
                dst=(row.get(cols["dst_ip"]) or "0.0.0.0").strip() if "dst_ip" in cols else "0.0.0.0",
                sport=int(_number(row.get(cols["src_port"])) or 0) if "src_port" in cols else 0,
                dport=int(nums["dst_port"]), proto=int(nums["protocol"]), flags=flags,
                start_ms=start, end_ms=start + int(nums["duration_us"] // 1000),
                ipkt=int(nums["fwd_pkts"]), ibyt=int(nums["fwd_bytes"]),
                opkt=int(nums["bwd_pkts"]), obyt=int(nums["bwd_bytes"]),
            ))
    return flows


class Exporter:
    """Encodes flows as IPFIX (version 10) or NetFlow v9 messages, 4 and 6 in separate templates."""

    # (IANA id, length) per template; v4 = 256, v6 = 257
    _ADDR = {4: [(8, 4), (12, 4)], 6: [(27, 16), (28, 16)]}
    _REST_IPFIX = [(7, 2), (11, 2), (4, 1), (6, 1), (152, 8), (153, 8), (2, 8), (1, 8), (24, 8), (23, 8)]
    _REST_V9 = [(7, 2), (11, 2), (4, 1), (6, 1), (22, 4), (21, 4), (2, 8), (1, 8), (24, 8), (23, 8)]
    UPTIME_MS = 1 << 31  # v9's uptime in the header; switched times are counted back from it

    def __init__(self, version: int = 10, domain: int = 1, per_packet: int = 18):
        if version not in (9, 10):
            raise SpotAEError("exporter version must be 9 (NetFlow v9) or 10 (IPFIX)")
        self.version = version
        self.domain = domain
        self.per_packet = per_packet
        self.sequence = 0
        self.messages = 0

    def _fields(self, family: int):
        return self._ADDR[family] + (self._REST_IPFIX if self.version == 10 else self._REST_V9)

    def _template_set(self) -> bytes:
        body = b""
        for tid, fam in ((256, 4), (257, 6)):
            fields = self._fields(fam)
            body += struct.pack("!HH", tid, len(fields)) + b"".join(struct.pack("!HH", i, n) for i, n in fields)
        set_id = 2 if self.version == 10 else 0
        return struct.pack("!HH", set_id, 4 + len(body)) + body

    def _record(self, f: Flow, export_ms: int) -> tuple[int, bytes]:
        fam = ipaddress.ip_address(f.src).version
        if ipaddress.ip_address(f.dst).version != fam:
            raise SpotAEError(f"flow mixes IPv4 and IPv6: {f.src} -> {f.dst}")
        addr = ipaddress.ip_address(f.src).packed + ipaddress.ip_address(f.dst).packed
        if self.version == 10:
            times = struct.pack("!QQ", f.start_ms, f.end_ms)
        else:  # v9: ms since boot, boot = export time - uptime
            base = export_ms - self.UPTIME_MS
            times = struct.pack("!II", f.start_ms - base, f.end_ms - base)
        rec = addr + struct.pack("!HHBB", f.sport, f.dport, f.proto, f.flags) + times + \
            struct.pack("!QQQQ", f.ipkt, f.ibyt, f.opkt, f.obyt)
        return (256 if fam == 4 else 257), rec

    def messages_for(self, flows: list[Flow]):
        """Yield UDP payloads, `per_packet` flows each, with templates in the first and every TEMPLATE_EVERY."""
        for i in range(0, len(flows), self.per_packet):
            chunk = flows[i:i + self.per_packet]
            export_ms = (max(f.end_ms for f in chunk) // 1000 + 1) * 1000
            if self.version == 9 and min(f.start_ms for f in chunk) < export_ms - self.UPTIME_MS:
                raise SpotAEError("NetFlow v9 cannot carry flows this far apart in one packet; use IPFIX")
            sets = []
            if self.messages % TEMPLATE_EVERY == 0:
                sets.append(self._template_set())
            by_tid: dict[int, list[bytes]] = {}
            for f in chunk:
                tid, rec = self._record(f, export_ms)
                by_tid.setdefault(tid, []).append(rec)
            for tid, recs in by_tid.items():
                body = b"".join(recs)
                sets.append(struct.pack("!HH", tid, 4 + len(body)) + body)
            payload = b"".join(sets)
            if self.version == 10:
                header = struct.pack("!HHIII", 10, 16 + len(payload), export_ms // 1000, self.sequence, self.domain)
                self.sequence += len(chunk)
            else:
                count = len(by_tid) + (1 if self.messages % TEMPLATE_EVERY == 0 else 0)
                header = struct.pack("!HHIIII", 9, count, self.UPTIME_MS, export_ms // 1000, self.sequence, self.domain)
                self.sequence += 1
            self.messages += 1
            yield header + payload


def send(payloads, host: str, port: int, rate: float = 2000.0) -> int:
    """Send UDP payloads at about `rate` packets/s (a collector's socket buffer is finite)."""
    n = 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        t0 = time.monotonic()
        for p in payloads:
            s.sendto(p, (host, port))
            n += 1
            ahead = n / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
    return n


def replay_csv(paths: list[str], host: str, port: int, version: int = 10, rate: float = 2000.0,
               limit: int | None = None) -> ReplayStats:
    stats = ReplayStats()
    exporter = Exporter(version)
    start = int(time.time()) * 1000
    for path in paths:
        flows = cicids_flows(path, stats, start)
        if limit is not None:
            flows = flows[: max(0, limit - stats.sent_flows)]
        stats.count_sent(flows, send(exporter.messages_for(flows), host, port, rate))
    return stats


def replay_datagrams(files: list[str], host: str, port: int, rate: float = 200.0) -> int:
    """Re-send raw exporter datagrams (one UDP payload per file) in the given order."""
    return send((Path(f).read_bytes() for f in files), host, port, rate)


def pcap_to_nfcapd(pcap: str | os.PathLike, out_dir: str | os.PathLike, nfpcapd: str = "nfpcapd") -> list[Path]:
    """nfpcapd turns a capture into nfcapd files (one record per direction; read them with -B).

    nfpcapd's exit code is not enough (as with nfdump): a file that is not a capture is judged by
    its stderr and by producing no output."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([nfpcapd, "-r", str(pcap), "-w", str(out)], capture_output=True, text=True,
                          env={**os.environ, "TZ": "UTC"}, timeout=600)
    files = sorted(p for p in out.rglob("nfcapd.*") if p.is_file() and ".current." not in p.name)
    errors = [ln for ln in (proc.stderr + proc.stdout).splitlines()
              if any(w in ln.lower() for w in ("error", "failed", "truncated", "bad dump", "unknown file format"))]
    if proc.returncode != 0 or errors or not files:
        why = "; ".join(errors[:3]) or (proc.stderr.strip().splitlines() or ["no nfcapd output"])[-1]
        raise PcapError(f"{pcap}: nfpcapd exit {proc.returncode}: {why}")
    return files


class PcapError(SpotAEError):
    """nfpcapd could not read the capture: quarantine it."""


def replay_pcap(pcaps: list[str], host: str, port: int, version: int = 10, rate: float = 2000.0) -> ReplayStats:
    """pcap -> nfpcapd -> nfdump CSV -> the same exporter, so a pcap's flows arrive as NetFlow."""
    stats = ReplayStats()
    exporter = Exporter(version)
    for pcap in pcaps:
        with tempfile.TemporaryDirectory(prefix="spot-ae-pcap-") as tmp:
            for nf in pcap_to_nfcapd(pcap, tmp):
                dec = decode_file(nf, bidirectional=True)
                stats.rows += dec.nfdump_flows
                stats.skipped += dec.rejects.num_rows
                flows = [Flow(r["sip"], r["dip"], r["sport"], r["dport"], _proto_number(r["proto"]), _flag_bits(r["flag"]),
                              r["unix_tstamp"] * 1000, r["unix_tstamp"] * 1000 + int(r["tdur"] * 1000),
                              r["ipkt"], r["ibyt"], r["opkt"], r["obyt"]) for r in dec.flows.to_pylist()]
                stats.count_sent(flows, send(exporter.messages_for(flows), host, port, rate))
    return stats


_PROTO_NUMBERS = {"ICMP": 1, "TCP": 6, "UDP": 17, "IGMP": 2, "GRE": 47, "ESP": 50, "ICMP6": 58, "SCTP": 132}


def _proto_number(name: str) -> int:
    name = name.strip()
    return int(name) if name.isdigit() else _PROTO_NUMBERS.get(name.upper(), 0)


def _flag_bits(flag: str) -> int:
    """nfdump's 8-character flag string (CWR ECE URG ACK PSH RST SYN FIN, '.' unset) -> bits."""
    bits = 0
    for i, ch in enumerate(flag[-8:].rjust(8, ".")):
        if ch != ".":
            bits |= 1 << (7 - i)
    return bits
