"""Sending a day's alerts to a SIEM: syslog (RFC 5424 over TCP or UDP) and HTTP POST (issue 11).

Switched on by one TOML file (`--forward-config PATH` or `$SPOT_AE_FORWARD_CONFIG`; see
docs/alerts.md). Each destination has a ledger of the alert ids it has acknowledged,
`scored_results/YYYYMMDD/forwarded/<destination>.ids`, rewritten atomically (temporary file, then
rename, through Hadoop's FileSystem: HDFS or local) after every acknowledged batch. A retry or a
re-run only sends ids not in the ledger, so a receiver that is down for a while loses nothing and
gets nothing twice.

What counts as acknowledged:
- HTTP: a 2xx answer to the batch's POST (redirects are not followed: a POST redirected to a GET
  would look delivered).
- syslog over TCP: one connection per batch; after the last message the sender half-closes the
  connection and waits for the receiver to close its side, which it does only after reading
  every byte (rsyslog's imtcp and Python's socketserver both do). A syslog receiver never sends
  anything back, so a peer that answers (an HTTP server, a TLS port, anything else) is not one:
  the batch fails and nothing is recorded. A receiver that dies mid-batch makes the whole batch
  fail and be sent again: the receiver may then hold part of it twice; the alert id is in every
  message (structured data `alert_id`, and `event.id`) to drop those.
- syslog over UDP: none. A datagram is sent and forgotten; the ledger records what was *sent*.
  Use TCP or HTTP where a lost alert matters.

Time is bounded twice: each attempt (connect, send, acknowledgement) within `timeout_seconds` in
all, however slowly the receiver trickles bytes, and the whole run within `deadline_seconds`, so
neither `alerts forward` nor `ml-ops` with forwarding can be held by a receiver.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import ipaddress
import json
import math
import os
import re
import socket
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from spot_ae_job import allowlist, fsutil
from spot_ae_job.alerts import alerts_location, read_alerts
from spot_ae_job.errors import SpotAEError
from spot_ae_job.incidents import read_incident_documents
from spot_ae_job.schema import scored_results_location

CONFIG_ENV = "SPOT_AE_FORWARD_CONFIG"
_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,63}\Z")  # \Z: it names a file, no trailing newline
_HOST = re.compile(r"\A(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")
_HEADER_NAME = re.compile(r"\A[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}\Z")  # RFC 9110 token
_HEADER_VALUE = re.compile(r"\A[\t\x20-\x7e\x80-\xff]{0,4096}\Z")  # no CR, LF or other control characters
_OWN_HEADERS = {"content-type", "content-length", "idempotency-key", "host", "transfer-encoding", "connection"}
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
    timeout_seconds: float = 10.0  # one attempt, connect to acknowledgement, in all
    deadline_seconds: float = 900.0  # the whole run, every destination, batch, retry and wait
    after_ml_ops: bool = True


def config_path(explicit: str | None) -> str | None:
    return explicit or os.environ.get(CONFIG_ENV) or None


def load_config(path: str) -> ForwardConfig:
    """The forwarding TOML file, checked whole: a typo is an error, not a silently unused key, and
    every value is checked here, before Spark starts, not when the first batch is sent."""
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpotAEError(f"forward config {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpotAEError(f"forward config {path} is not valid TOML: {_one_line(e)}") from None
    except OSError as e:
        raise SpotAEError(f"forward config {path} cannot be read: {e.strerror or e}") from None
    unknown = sorted(set(raw) - {"retry", "destinations", "after_ml_ops"})
    if unknown:
        raise SpotAEError(f"forward config {path}: unknown key(s) {', '.join(map(repr, unknown))}")
    retry = raw.get("retry", {})
    if not isinstance(retry, dict):
        raise SpotAEError("forward config: [retry] must be a table")
    bad = sorted(set(retry) - {"attempts", "backoff_seconds", "max_backoff_seconds", "timeout_seconds", "deadline_seconds"})
    if bad:
        raise SpotAEError(f"forward config [retry]: unknown key(s) {', '.join(map(repr, bad))}")
    after = raw.get("after_ml_ops", True)
    if not isinstance(after, bool):  # "false" in quotes is a string, and a non-empty string is true
        raise SpotAEError(f"forward config: after_ml_ops must be true or false (without quotes), got {after!r}")
    cfg = ForwardConfig(destinations=[], after_ml_ops=after)
    cfg.attempts = _num(retry, "attempts", 5, 1, 100, int)
    cfg.backoff_seconds = _num(retry, "backoff_seconds", 1.0, 0.0, 600.0, float)
    cfg.max_backoff_seconds = _num(retry, "max_backoff_seconds", 30.0, 0.0, 3600.0, float)
    cfg.timeout_seconds = _num(retry, "timeout_seconds", 10.0, 0.1, 600.0, float)
    cfg.deadline_seconds = _num(retry, "deadline_seconds", 900.0, 1.0, 86400.0, float)
    dests = raw.get("destinations", [])
    if not isinstance(dests, list) or not dests:
        raise SpotAEError(f"forward config {path}: add at least one [[destinations]] entry")
    for d in dests:
        cfg.destinations.append(_destination(d))
    names = [d.name for d in cfg.destinations]
    if len(set(names)) != len(names):
        raise SpotAEError("forward config: destination names must be unique (each has its own ledger)")
    return cfg


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def _num(raw: dict, key: str, default, lo, hi, kind):
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) \
            or not math.isfinite(v) or not lo <= v <= hi:
        raise SpotAEError(f"forward config: {key} must be a number in {lo}..{hi}")
    return kind(v)


def _host(name: str, host) -> str:
    """A DNS name or an IP address: anything else (spaces, a URL, a newline) fails now, not at send."""
    if isinstance(host, str) and host:
        try:
            return str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            if _HOST.match(host):
                return host
    raise SpotAEError(f"destination {name}: host must be a host name or an IP address, got {host!r}")


def _url(name: str, url) -> str:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SpotAEError(f"destination {name}: url must start with http:// or https://")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) > 0x7e for c in url):
        raise SpotAEError(f"destination {name}: url must not contain spaces, control or non-ASCII characters")
    try:
        u = urlsplit(url)
        port = u.port  # ValueError when out of range or not a number
    except ValueError as e:
        raise SpotAEError(f"destination {name}: url {url!r} is not a valid URL: {_one_line(e)}") from None
    if u.username is not None or u.password is not None:
        raise SpotAEError(f"destination {name}: put credentials in headers (e.g. Authorization), not in the url")
    if not u.hostname:
        raise SpotAEError(f"destination {name}: url {url!r} has no host")
    _host(name, u.hostname)
    if port == 0:
        raise SpotAEError(f"destination {name}: url {url!r} has port 0")
    return url


def _headers(name: str, headers) -> dict:
    if not isinstance(headers, dict):
        raise SpotAEError(f"destination {name}: headers must be a table of strings")
    for k, v in headers.items():
        if not _HEADER_NAME.match(k):
            raise SpotAEError(f"destination {name}: header name {k!r} is not a valid HTTP header name")
        if k.lower() in _OWN_HEADERS:
            raise SpotAEError(f"destination {name}: header {k} is set by the forwarder and cannot be configured")
        if not isinstance(v, str) or not _HEADER_VALUE.match(v) or any(ord(c) > 0xff for c in v):
            raise SpotAEError(f"destination {name}: header {k} must be a string without CR, LF or control characters "
                              "(Latin-1 only, at most 4096 characters)")
    return dict(headers)


def _destination(d: dict) -> Destination:
    allowed = {"name", "type", "transport", "host", "port", "url", "batch", "headers", "sd_id"}
    if not isinstance(d, dict):
        raise SpotAEError("forward config: each [[destinations]] entry must be a table")
    name = d.get("name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpotAEError(f"forward config: destination name {name!r} must be letters, digits, '-' or '_'")
    bad = sorted(set(d) - allowed)
    if bad:
        raise SpotAEError(f"forward config destination {name!r}: unknown key(s) {', '.join(map(repr, bad))}")
    kind = d.get("type", "")
    if kind not in ("syslog", "http"):
        raise SpotAEError(f"destination {name}: type must be 'syslog' or 'http', got {kind!r}")
    dest = Destination(name=name, type=kind)
    dest.batch = _num(d, "batch", 200, 1, 100000, int)
    if dest.type == "syslog":
        dest.transport = d.get("transport", "tcp")
        if dest.transport not in ("tcp", "udp"):
            raise SpotAEError(f"destination {name}: transport must be tcp or udp")
        if "host" not in d:
            raise SpotAEError(f"destination {name}: host is required")
        dest.host = _host(name, d["host"])
        dest.port = _num(d, "port", 514, 1, 65535, int)
        dest.sd_id = d.get("sd_id", DEFAULT_SD_ID)
        if not isinstance(dest.sd_id, str) or not re.fullmatch(r"[!-~]{1,32}", dest.sd_id) \
                or any(c in dest.sd_id for c in '= ]"'):
            raise SpotAEError(f"destination {name}: sd_id must be an RFC 5424 SD-ID such as name@12345")
    else:
        dest.url = _url(name, d.get("url", ""))
        dest.headers = _headers(name, d.get("headers", {}))
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
    inc = spot.get("incident") or {}  # an incident document (incidents.py) keeps its day and model there
    day, version = spot.get("day", inc.get("day", "")), spot.get("model", {}).get("version", inc.get("model_version", ""))
    sd = (f'[{sd_id} alert_id="{_sd_value(alert["event"]["id"])}" day="{_sd_value(str(day))}" '
          f'model_version="{_sd_value(str(version))}"]')
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
    """One batch on one connection, acknowledged by the receiver closing after reading it all;
    `timeout` bounds the whole exchange (Python's sendall timeout is the total, since 3.5)."""
    end = time.monotonic() + timeout

    def left() -> float:
        r = end - time.monotonic()
        if r <= 0:
            raise socket.timeout("timed out")
        return r

    try:
        with socket.create_connection((dest.host, dest.port), timeout=left()) as s:
            s.settimeout(left())
            s.sendall(b"".join(octet_counted(syslog_message(a, dest.sd_id)) for a in alerts))
            s.shutdown(socket.SHUT_WR)
            s.settimeout(left())
            answer = s.recv(256)  # b"": the receiver read everything and closed, the ack
    except OSError as e:
        raise SendError(f"syslog tcp {dest.host}:{dest.port}: no acknowledgement within {timeout:g} s ({e})"
                        if isinstance(e, socket.timeout) else f"syslog tcp {dest.host}:{dest.port}: {e}") from e
    if answer:
        raise SendError(f"syslog tcp {dest.host}:{dest.port}: the peer answered {answer[:40]!r}; a syslog receiver "
                        "sends nothing back, so this is not one (check host and port); nothing was recorded as sent",
                        permanent=True)


def send_syslog_udp(dest: Destination, alerts: list[dict], timeout: float) -> None:
    try:
        family = socket.getaddrinfo(dest.host, dest.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family[0], socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            for a in alerts:
                s.sendto(syslog_message(a, dest.sd_id), family[4])
    except OSError as e:
        raise SendError(f"syslog udp {dest.host}:{dest.port}: {e}") from e


class _Cutter:
    """Shuts the attempt's socket when its time is up, which ends any read or write blocked on it.

    http.client hands the socket to the response (and forgets it) once the answer starts, so the
    socket is held here from the moment it is connected."""

    def __init__(self, timeout: float):
        self.fired = False
        self._sock = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def hold(self, sock) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shut()

    def _cut(self) -> None:
        with self._lock:
            self.fired = True
            self._shut()

    def _shut(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        self._timer.cancel()


def send_http(dest: Destination, alerts: list[dict], timeout: float) -> None:
    """POST the batch as JSON lines; the Idempotency-Key lets a receiver drop a replayed batch.

    A per-read timeout alone lets a receiver that sends one byte now and then hold the sender for
    ever, so the connection is shut when `timeout` has passed, whatever it is doing."""
    body = b"".join(json.dumps(a, separators=(",", ":")).encode() + b"\n" for a in alerts)
    key = hashlib.sha256("\n".join(a["event"]["id"] for a in alerts).encode()).hexdigest()
    u = urlsplit(dest.url)
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = cls(u.hostname, u.port, timeout=timeout)
    cut = _Cutter(timeout)
    try:
        conn.connect()
        cut.hold(conn.sock)
        conn.request("POST", path, body=body, headers={
            "Content-Type": "application/x-ndjson", "Idempotency-Key": key, **dest.headers})
        r = conn.getresponse()
        r.read(65536)  # the answer's body is not used; a bounded read, then the connection closes
        status, reason = r.status, r.reason
    except (OSError, http.client.HTTPException) as e:
        if cut.fired:
            raise SendError(f"http {dest.url}: no complete answer within {timeout:g} s") from e
        raise SendError(f"http {dest.url}: {e or type(e).__name__}") from e
    finally:
        cut.cancel()
        conn.close()
    if cut.fired:  # the answer was cut short: a partial body is no acknowledgement
        raise SendError(f"http {dest.url}: no complete answer within {timeout:g} s")
    if 200 <= status < 300:
        return
    retry = status in (408, 425, 429) or status >= 500
    hint = " (redirects are not followed: configure the final URL)" if 300 <= status < 400 else ""
    raise SendError(f"http {dest.url}: {status} {reason}{hint}", permanent=not retry)


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


def forward_alerts(spark, alerts: list[dict], day: str, huser: str, cfg: ForwardConfig, progress=print, sleep=time.sleep,
                   clock=time.monotonic) -> dict:
    """Send `alerts` to every destination, skipping ids its ledger has; {destination: counts}.

    The run ends by `cfg.deadline_seconds` whatever the receivers do; what was acknowledged by
    then is in the ledgers, and a later run sends the rest."""
    out = {}
    end = clock() + cfg.deadline_seconds
    for dest in cfg.destinations:
        ledger = Ledger(spark, day, huser, dest.name)
        todo = [a for a in alerts if a["event"]["id"] not in ledger]
        send, sent = sender(dest), 0

        def stop(attempt: int, why: str) -> SpotAEError:
            return SpotAEError(
                f"forwarding {day} to {dest.name} stopped after {attempt} attempt(s): {why}. "
                f"{sent} of {len(todo)} new alerts were acknowledged and are in {ledger.uri}; "
                f"run `spot-ae alerts forward {day}` again to send the rest")

        for batch in _batches(todo, dest.batch):
            for attempt in range(1, cfg.attempts + 1):
                left = end - clock()
                if left <= 0:
                    raise stop(attempt - 1, f"the run's deadline of {cfg.deadline_seconds:g} s has passed") from None
                try:
                    send(dest, batch, min(cfg.timeout_seconds, left))
                    break
                except SendError as e:
                    if e.permanent or attempt == cfg.attempts:
                        raise stop(attempt, str(e)) from None
                    wait = min(cfg.max_backoff_seconds, cfg.backoff_seconds * 2 ** (attempt - 1), max(0.0, end - clock()))
                    progress(f"{dest.name}: {e}; retry {attempt}/{cfg.attempts - 1} in {wait:g} s")
                    sleep(wait)
            ledger.add([a["event"]["id"] for a in batch])
            sent += len(batch)
        out[dest.name] = {"sent": sent, "already_sent": len(alerts) - len(todo), "total": len(alerts)}
        progress(f"{day} -> {dest.name} ({dest.type}{'/' + dest.transport if dest.type == 'syslog' else ''}): "
                 f"{sent} sent, {len(alerts) - len(todo)} already sent before")
    return out


def forward_day(spark, day: str, huser: str, cfg: ForwardConfig, progress=print) -> dict:
    """The day's alerts, then its incidents (incidents.py: documents that list their alerts' ids)."""
    if not fsutil.exists(spark, alerts_location(day, huser)):
        raise SpotAEError(f"no alerts for {day}: {alerts_location(day, huser)} does not exist (run ml-ops or score first)")
    alerts = read_alerts(spark, day, huser)
    # a rule added since the alerts were written (and not re-applied yet) still stops them here
    held = allowlist.match_alerts(alerts, day, allowlist.read_rules_spark(spark, huser))
    if any(held):
        progress(f"{day}: {sum(1 for h in held if h)} alerts covered by allow-list rules are not sent")
        alerts = [a for a, h in zip(alerts, held) if h is None]
    return forward_alerts(spark, alerts + incidents_with_alerts(read_incident_documents(spark, day, huser), alerts, day, progress),
                          day, huser, cfg, progress)


def incidents_with_alerts(docs: list[dict], alerts: list[dict], day: str, progress=print) -> list[dict]:
    """The incident documents that list at least one alert still sent: one grouped before a rule
    (or a low-risk verdict) that now holds every alert it lists is not sent. A streamed day's
    incidents are never regrouped, and a batch day's may not be yet (`spot-ae incidents`)."""
    live = {(a.get("event") or {}).get("id") for a in alerts}

    def sent(doc: dict) -> bool:
        inc = (doc.get("spot_ae") or {}).get("incident") or {}
        return bool(inc.get("alert_ids_truncated")) or any(i in live for i in inc.get("alert_ids") or [])

    keep = [d for d in docs if sent(d)]
    if len(keep) < len(docs):
        progress(f"{day}: {len(docs) - len(keep)} incidents whose every alert is held back are not sent")
    return keep
