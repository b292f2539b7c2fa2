"""Forwarding alerts (issue 11): real receivers on loopback, a receiver that is down for a while,
and the promise that after retries and re-runs every alert arrived exactly once.

The syslog receiver is Python's socketserver reading RFC 6587 octet-counted frames (what rsyslog's
imtcp reads); the HTTP receiver is http.server. tests/integration/test_rsyslog.py does the same
against a real rsyslog daemon.
"""
from __future__ import annotations

import http.server
import json
import re
import socket
import socketserver
import struct
import threading

import pytest

from spot_ae_job import forward
from spot_ae_job.errors import SpotAEError
from tests.ports import free_port

DAY = "20180215"
RFC5424 = re.compile(r'^<(\d+)>1 (\S+) (\S+) spot-ae - alert \[spot-ae@32473 alert_id="([0-9a-f]+)" day="(\d{8})" model_version="([^"]*)"\] (\{.*\})$')


def make_alerts(n: int) -> list[dict]:
    return [{"event": {"id": f"{i:032x}", "kind": "alert"}, "source": {"ip": "10.0.0.1", "port": 1000 + i},
             "spot_ae": {"day": DAY, "model": {"version": "ae-test"}}} for i in range(n)]


# ---- receivers ---------------------------------------------------------------------------

class SyslogTCP(socketserver.ThreadingTCPServer):
    """Reads octet-counted RFC 5424 frames. While `down`, it resets each connection unread."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, port: int = 0, down_after: int | None = None):
        self.messages: list[str] = []
        self.down = False
        self.down_after = down_after  # go down by itself after this many connections
        self.connections = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), self._Handler)

    class _Handler(socketserver.StreamRequestHandler):
        def handle(self):
            srv = self.server
            if srv.down:  # die like a crashed daemon: close with the data unread, so the kernel resets
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                return
            while True:
                n = b""
                while (c := self.rfile.read(1)) not in (b" ", b""):
                    n += c
                if not n:
                    with srv.lock:
                        srv.connections += 1
                        srv.down = srv.down or srv.connections == srv.down_after
                    return
                msg = self.rfile.read(int(n)).decode("utf-8")
                with srv.lock:
                    srv.messages.append(msg)


class HTTPReceiver(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int = 0):
        self.lines: list[dict] = []
        self.keys: list[str] = []
        self.status = 200
        super().__init__(("127.0.0.1", port), self._Handler)

    class _Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            srv = self.server
            if srv.status == 200:
                assert self.headers["Content-Type"] == "application/x-ndjson"
                srv.keys.append(self.headers["Idempotency-Key"])
                srv.lines.extend(json.loads(x) for x in body.decode().splitlines())
            self.send_response(srv.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass


def serve(server):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def config(*dests, attempts=4) -> forward.ForwardConfig:
    return forward.ForwardConfig(destinations=list(dests), attempts=attempts, backoff_seconds=0.05,
                                 max_backoff_seconds=0.2, timeout_seconds=5)


@pytest.fixture()
def huser(tmp_path):
    return "file://" + str(tmp_path / "user" / "spot")


def ids_of_syslog(server) -> list[str]:
    out = []
    for m in server.messages:
        g = RFC5424.match(m)
        assert g, m
        assert json.loads(g.group(7))["event"]["id"] == g.group(4)
        out.append(g.group(4))
    return out


# ---- tests -------------------------------------------------------------------------------

def test_syslog_tcp_delivers_rfc5424_messages_and_records_them(spark, huser):
    rx = serve(SyslogTCP())
    dest = forward.Destination("siem", "syslog", "tcp", "127.0.0.1", rx.server_address[1], batch=4)
    alerts = make_alerts(10)
    out = forward.forward_alerts(spark, alerts, DAY, huser, config(dest), progress=lambda *_: None)
    assert out["siem"] == {"sent": 10, "already_sent": 0, "total": 10}
    assert ids_of_syslog(rx) == [a["event"]["id"] for a in alerts]
    assert int(RFC5424.match(rx.messages[0]).group(1)) == 16 * 8 + 4  # local0.warning
    ledger = forward.Ledger(spark, DAY, huser, "siem")
    assert ledger.ids == [a["event"]["id"] for a in alerts]
    # a second run sends nothing again
    out = forward.forward_alerts(spark, alerts, DAY, huser, config(dest), progress=lambda *_: None)
    assert out["siem"]["sent"] == 0 and len(rx.messages) == 10
    rx.shutdown()


def test_syslog_receiver_down_at_start_gets_everything_once_when_it_comes_back(spark, huser):
    port = free_port()
    dest = forward.Destination("siem", "syslog", "tcp", "127.0.0.1", port, batch=3)
    started = {}

    def sleep(s):  # the receiver comes back while the forwarder waits before its 3rd attempt
        if sleep.calls == 1:
            started["rx"] = serve(SyslogTCP(port))
        sleep.calls += 1
    sleep.calls = 0
    alerts = make_alerts(7)
    out = forward.forward_alerts(spark, alerts, DAY, huser, config(dest), progress=lambda *_: None, sleep=sleep)
    assert sleep.calls == 2 and out["siem"]["sent"] == 7
    assert ids_of_syslog(started["rx"]) == [a["event"]["id"] for a in alerts]
    started["rx"].shutdown()


def test_receiver_down_mid_run_loses_and_duplicates_nothing_across_reruns(spark, huser):
    # first run: the receiver takes the first batch, then goes down for longer than the retries last
    rx = serve(SyslogTCP(down_after=1))
    dest = forward.Destination("siem", "syslog", "tcp", "127.0.0.1", rx.server_address[1], batch=3)
    alerts = make_alerts(8)
    with pytest.raises(SpotAEError, match=r"stopped after 2 attempt\(s\).*3 of 8 new alerts were acknowledged"):
        forward.forward_alerts(spark, alerts, DAY, huser, config(dest, attempts=2), progress=lambda *_: None)
    assert len(forward.Ledger(spark, DAY, huser, "siem").ids) == 3
    # later the receiver is back: a re-run sends only what is missing
    rx.down = False
    out = forward.forward_alerts(spark, alerts, DAY, huser, config(dest), progress=lambda *_: None)
    assert out["siem"] == {"sent": 5, "already_sent": 3, "total": 8}
    got = ids_of_syslog(rx)
    assert sorted(got) == sorted(a["event"]["id"] for a in alerts) and len(got) == len(set(got))
    rx.shutdown()


def test_http_receiver_answering_503_for_a_while_gets_every_alert_once(spark, huser):
    rx = serve(HTTPReceiver())
    rx.status = 503
    dest = forward.Destination("http-siem", "http", url=f"http://127.0.0.1:{rx.server_address[1]}/ingest", batch=4)

    def sleep(s):
        sleep.calls += 1
        if sleep.calls == 2:
            rx.status = 200
    sleep.calls = 0
    alerts = make_alerts(9)
    out = forward.forward_alerts(spark, alerts, DAY, huser, config(dest), progress=lambda *_: None, sleep=sleep)
    assert out["http-siem"]["sent"] == 9
    assert [x["event"]["id"] for x in rx.lines] == [a["event"]["id"] for a in alerts]
    assert len(rx.keys) == 3 and len(set(rx.keys)) == 3  # one idempotency key per batch
    rx.shutdown()


def test_http_client_errors_are_not_retried(spark, huser):
    rx = serve(HTTPReceiver())
    rx.status = 400
    dest = forward.Destination("http-siem", "http", url=f"http://127.0.0.1:{rx.server_address[1]}/", batch=4)
    with pytest.raises(SpotAEError, match=r"after 1 attempt\(s\): http .*400"):
        forward.forward_alerts(spark, make_alerts(2), DAY, huser, config(dest), progress=lambda *_: None)
    rx.shutdown()


def test_syslog_udp_sends_one_datagram_per_alert(spark, huser):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(10)
        dest = forward.Destination("udp-siem", "syslog", "udp", "127.0.0.1", rx.getsockname()[1])
        alerts = make_alerts(3)
        forward.forward_alerts(spark, alerts, DAY, huser, config(dest), progress=lambda *_: None)
        got = [RFC5424.match(rx.recv(65535).decode()).group(4) for _ in alerts]
    assert got == [a["event"]["id"] for a in alerts]


@pytest.mark.parametrize("text,message", [
    ("", "at least one"),
    ('[[destinations]]\nname="a"\ntype="kafka"\n', "type must be 'syslog' or 'http'"),
    ('[[destinations]]\nname="a"\ntype="syslog"\n', "host is required"),
    ('[[destinations]]\nname="a"\ntype="syslog"\nhost="h"\ntransport="sctp"\n', "tcp or udp"),
    ('[[destinations]]\nname="a"\ntype="http"\nurl="ftp://x"\n', "http:// or https://"),
    ('[[destinations]]\nname="a/b"\ntype="http"\nurl="http://x"\n', "letters, digits"),
    ('[retry]\nattemps=3\n[[destinations]]\nname="a"\ntype="http"\nurl="http://x"\n', "unknown key"),
    ('[[destinations]]\nname="a"\ntype="http"\nurl="http://x"\n[[destinations]]\nname="a"\ntype="http"\nurl="http://y"\n', "unique"),
])
def test_bad_forward_configs_are_refused_with_a_reason(tmp_path, text, message):
    p = tmp_path / "forward.toml"
    p.write_text(text)
    with pytest.raises(SpotAEError, match=re.escape(message)):
        forward.load_config(str(p))


def test_the_documented_example_config_loads():
    from pathlib import Path

    cfg = forward.load_config(str(Path(__file__).resolve().parents[2] / "config" / "forward.example.toml"))
    assert {d.type for d in cfg.destinations} == {"syslog", "http"} and cfg.attempts >= 1


def test_an_incident_whose_every_alert_is_held_back_is_not_sent():
    """A streamed day's incidents are never regrouped: one grouped before an allow-list rule that
    now holds all it lists stays unsent; one with an alert still sent, or too many to list, goes."""
    inc = lambda iid, ids, truncated=False: {"event": {"id": iid}, "spot_ae": {"incident": {  # noqa: E731
        "alert_ids": ids, "alert_ids_truncated": truncated}}}
    docs = [inc("all-held", ["a1", "a2"]), inc("one-live", ["a2", "a3"]), inc("long", ["a9"], truncated=True)]
    said = []
    kept = forward.incidents_with_alerts(docs, [{"event": {"id": "a3"}}], "20180216", said.append)
    assert [d["event"]["id"] for d in kept] == ["one-live", "long"]
    assert said == ["20180216: 1 incidents whose every alert is held back are not sent"]
