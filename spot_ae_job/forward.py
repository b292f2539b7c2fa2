"""Sending a day's alerts to a SIEM: syslog (RFC 5424 over TCP or UDP) and HTTP POST (issue 11).

Switched on by one TOML file (`--forward-config PATH` or `$SPOT_AE_FORWARD_CONFIG`; see
docs/alerts.md). Each destination has a ledger of the alert ids it has acknowledged,
`scored_results/YYYYMMDD/forwarded/<destination>.ids`, rewritten atomically (temporary file, then
rename, through Hadoop's FileSystem: HDFS or local) after every acknowledged batch. A retry or a
re-run only sends ids not in the ledger, so a receiver that is down for a while loses nothing and
gets nothing twice.

What counts as acknowledged:
- HTTP: a 2xx answer to the batch's POST.
- syslog over TCP: one connection per batch; after the last message the sender half-closes the
  connection and waits for the receiver to close its side, which it does only after reading
  every byte (rsyslog's imtcp and Python's socketserver both do). A receiver that dies mid-batch
  makes the whole batch fail and be sent again: the receiver may then hold part of it twice; the
  alert id is in every message (structured data `alert_id`, and `event.id`) to drop those.
- syslog over UDP: none. A datagram is sent and forgotten; the ledger records what was *sent*.
  Use TCP or HTTP where a lost alert matters.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import socket
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from spot_ae_job import fsutil
from spot_ae_job.errors import SpotAEError
from spot_ae_job.schema import scored_results_location

CONFIG_ENV = "SPOT_AE_FORWARD_CONFIG"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# RFC 5424 structured data needs an SD-ID with an enterprise number; 32473 is the one RFC 5612
# reserves for documentation and examples. Operators with their own number set `sd_id`.
DEFAULT_SD_ID = "spot-ae@32473"
_FACILITY_LOCAL0 = 16
_SEVERITY_WARNING = 4


@dataclass
class Destination:
    name: str
    type: str  # "syslog" or "http"
    transport: str = "tcp"  # syslog only: "tcp" or "udp"
    host: str = ""
    port: int = 514
    url: str = ""  # http only
    batch: int = 200
    headers: dict = field(default_factory=dict)
    sd_id: str = DEFAULT_SD_ID


@dataclass
class ForwardConfig:
    destinations: list[Destination]
    attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    timeout_seconds: float = 10.0
    after_ml_ops: bool = True


def config_path(explicit: str | None) -> str | None:
    return explicit or os.environ.get(CONFIG_ENV) or None


def load_config(path: str) -> ForwardConfig:
    """The forwarding TOML file, checked whole: a typo is an error, not a silently unused key."""
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpotAEError(f"forward config {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpotAEError(f"forward config {path} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - {"retry", "destinations", "after_ml_ops"})
    if unknown:
        raise SpotAEError(f"forward config {path}: unknown key(s) {', '.join(unknown)}")
    retry = raw.get("retry", {})
    bad = sorted(set(retry) - {"attempts", "backoff_seconds", "max_backoff_seconds", "timeout_seconds"})
    if bad:
        raise SpotAEError(f"forward config [retry]: unknown key(s) {', '.join(bad)}")
    cfg = ForwardConfig(destinations=[], after_ml_ops=bool(raw.get("after_ml_ops", True)))
    cfg.attempts = _num(retry, "attempts", 5, 1, 100, int)
    cfg.backoff_seconds = _num(retry, "backoff_seconds", 1.0, 0.0, 600.0, float)
    cfg.max_backoff_seconds = _num(retry, "max_backoff_seconds", 30.0, 0.0, 3600.0, float)
    cfg.timeout_seconds = _num(retry, "timeout_seconds", 10.0, 0.1, 600.0, float)
    dests = raw.get("destinations", [])
    if not isinstance(dests, list) or not dests:
        raise SpotAEError(f"forward config {path}: add at least one [[destinations]] entry")
    for d in dests:
        cfg.destinations.append(_destination(d))
    names = [d.name for d in cfg.destinations]
    if len(set(names)) != len(names):
        raise SpotAEError("forward config: destination names must be unique (each has its own ledger)")
    return cfg


def _num(raw: dict, key: str, default, lo, hi, kind):
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) or not lo <= v <= hi:
        raise SpotAEError(f"forward config: {key} must be a number in {lo}..{hi}")
    return kind(v)


def _destination(d: dict) -> Destination:
    allowed = {"name", "type", "transport", "host", "port", "url", "batch", "headers", "sd_id"}
    if not isinstance(d, dict):
        raise SpotAEError("forward config: each [[destinations]] entry must be a table")
    bad = sorted(set(d) - allowed)
    if bad:
        raise SpotAEError(f"forward config destination {d.get('name')!r}: unknown key(s) {', '.join(bad)}")
    name = d.get("name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpotAEError(f"forward config: destination name {name!r} must be letters, digits, '-' or '_'")
    dest = Destination(name=name, type=d.get("type", ""))
    dest.batch = _num(d, "batch", 200, 1, 100000, int)
    if dest.type == "syslog":
        dest.transport = d.get("transport", "tcp")
        if dest.transport not in ("tcp", "udp"):
            raise SpotAEError(f"destination {name}: transport must be tcp or udp")
        dest.host = d.get("host", "")
        if not isinstance(dest.host, str) or not dest.host:
            raise SpotAEError(f"destination {name}: host is required")
        dest.port = _num(d, "port", 514, 1, 65535, int)
        dest.sd_id = d.get("sd_id", DEFAULT_SD_ID)
        if not re.fullmatch(r"[!-~]{1,32}", dest.sd_id) or any(c in dest.sd_id for c in '= ]"'):
            raise SpotAEError(f"destination {name}: sd_id must be an RFC 5424 SD-ID such as name@12345")
    elif dest.type == "http":
        dest.url = d.get("url", "")
        if not isinstance(dest.url, str) or not dest.url.startswith(("http://", "https://")):
            raise SpotAEError(f"destination {name}: url must start with http:// or https://")
        headers = d.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise SpotAEError(f"destination {name}: headers must be a table of strings")
        dest.headers = headers
    else:
        raise SpotAEError(f"destination {name}: type must be 'syslog' or 'http', got {dest.type!r}")
    return dest


# ---- message formats ---------------------------------------------------------------------

def _sd_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def syslog_message(alert: dict, sd_id: str = DEFAULT_SD_ID, hostname: str | None = None) -> bytes:
    """One RFC 5424 message: header, structured data naming the alert, then the ECS JSON as MSG."""
    pri = _FACILITY_LOCAL0 * 8 + _SEVERITY_WARNING
    ts = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    host = (hostname or socket.gethostname() or "-")[:255].replace(" ", "_")
    spot = alert.get("spot_ae", {})
    sd = (f'[{sd_id} alert_id="{_sd_value(alert["event"]["id"])}" day="{_sd_value(str(spot.get("day", "")))}" '
          f'model_version="{_sd_value(str(spot.get("model", {}).get("version", "")))}"]')
    body = json.dumps(alert, separators=(",", ":"))
    return f"<{pri}>1 {ts} {host} spot-ae - alert {sd} {body}".encode("utf-8")


def octet_counted(msg: bytes) -> bytes:
    """RFC 6587 §3.4.1 framing for syslog over TCP: the length, a space, the message."""
    return str(len(msg)).encode() + b" " + msg


class SendError(Exception):
    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def send_syslog_tcp(dest: Destination, alerts: list[dict], timeout: float) -> None:
    try:
        with socket.create_connection((dest.host, dest.port), timeout=timeout) as s:
            s.sendall(b"".join(octet_counted(syslog_message(a, dest.sd_id)) for a in alerts))
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):  # the receiver closes once it has read everything: the ack
                pass
    except OSError as e:
        raise SendError(f"syslog tcp {dest.host}:{dest.port}: {e}") from e


def send_syslog_udp(dest: Destination, alerts: list[dict], timeout: float) -> None:
    try:
        family = socket.getaddrinfo(dest.host, dest.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family[0], socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            for a in alerts:
                s.sendto(syslog_message(a, dest.sd_id), family[4])
    except OSError as e:
        raise SendError(f"syslog udp {dest.host}:{dest.port}: {e}") from e


def send_http(dest: Destination, alerts: list[dict], timeout: float) -> None:
    """POST the batch as JSON lines; the Idempotency-Key lets a receiver drop a replayed batch."""
    body = b"".join(json.dumps(a, separators=(",", ":")).encode() + b"\n" for a in alerts)
    key = hashlib.sha256("\n".join(a["event"]["id"] for a in alerts).encode()).hexdigest()
    req = urllib.request.Request(dest.url, data=body, method="POST", headers={
        "Content-Type": "application/x-ndjson", "Idempotency-Key": key, **dest.headers})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
    except urllib.error.HTTPError as e:
        retry = e.code in (408, 425, 429) or e.code >= 500
        raise SendError(f"http {dest.url}: {e.code} {e.reason}", permanent=not retry) from e
    except (urllib.error.URLError, OSError) as e:
        raise SendError(f"http {dest.url}: {getattr(e, 'reason', e)}") from e


def sender(dest: Destination):
    if dest.type == "http":
        return send_http
    return send_syslog_tcp if dest.transport == "tcp" else send_syslog_udp


# ---- the ledger and the loop -------------------------------------------------------------

class Ledger:
    """Alert ids a destination has acknowledged for one day, one id per line."""

    def __init__(self, spark, day: str, huser: str, destination: str):
        self.spark = spark
        self.uri = f"{scored_results_location(day, huser)}/forwarded/{destination}.ids"
        self.ids: list[str] = []
        if fsutil.exists(spark, self.uri):
            self.ids = [x for x in fsutil.read_text(spark, self.uri).splitlines() if x]
        self._set = set(self.ids)

    def __contains__(self, alert_id: str) -> bool:
        return alert_id in self._set

    def add(self, ids: list[str]) -> None:
        new = [i for i in ids if i not in self._set]
        self.ids.extend(new)
        self._set.update(new)
        fsutil.write_text(self.spark, self.uri, "\n".join(self.ids) + "\n")


def _batches(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]


def forward_alerts(spark, alerts: list[dict], day: str, huser: str, cfg: ForwardConfig, progress=print, sleep=time.sleep) -> dict:
    """Send `alerts` to every destination, skipping ids its ledger has; {destination: counts}."""
    out = {}
    for dest in cfg.destinations:
        ledger = Ledger(spark, day, huser, dest.name)
        todo = [a for a in alerts if a["event"]["id"] not in ledger]
        send, sent = sender(dest), 0
        for batch in _batches(todo, dest.batch):
            for attempt in range(1, cfg.attempts + 1):
                try:
                    send(dest, batch, cfg.timeout_seconds)
                    break
                except SendError as e:
                    if e.permanent or attempt == cfg.attempts:
                        raise SpotAEError(
                            f"forwarding {day} to {dest.name} stopped after {attempt} attempt(s): {e}. "
                            f"{sent} of {len(todo)} new alerts were acknowledged and are in {ledger.uri}; "
                            f"run `spot-ae alerts forward {day}` again to send the rest") from None
                    wait = min(cfg.max_backoff_seconds, cfg.backoff_seconds * 2 ** (attempt - 1))
                    progress(f"{dest.name}: {e}; retry {attempt}/{cfg.attempts - 1} in {wait:g} s")
                    sleep(wait)
            ledger.add([a["event"]["id"] for a in batch])
            sent += len(batch)
        out[dest.name] = {"sent": sent, "already_sent": len(alerts) - len(todo), "total": len(alerts)}
        progress(f"{day} -> {dest.name} ({dest.type}{'/' + dest.transport if dest.type == 'syslog' else ''}): "
                 f"{sent} sent, {len(alerts) - len(todo)} already sent before")
    return out


def forward_day(spark, day: str, huser: str, cfg: ForwardConfig, progress=print) -> dict:
    from spot_ae_job.alerts import alerts_location, read_alerts

    if not fsutil.exists(spark, alerts_location(day, huser)):
        raise SpotAEError(f"no alerts for {day}: {alerts_location(day, huser)} does not exist (run ml-ops or score first)")
    return forward_alerts(spark, read_alerts(spark, day, huser), day, huser, cfg, progress)
