"""Issue 22, alerts lost or stuck on the way out: a TCP peer that is not a syslog receiver, a
receiver that trickles bytes, a run with no overall deadline, a redirect taken for a delivery, and
forwarding configs whose mistakes showed only after Spark had started. Real listeners on
127.0.0.1, the real Ledger on a local results root.
"""
from __future__ import annotations

import http.server
import re
import socket
import socketserver
import threading
import time

import pytest

from spot_ae_job import forward
from spot_ae_job.errors import SpotAEError
from test_forward import DAY, HTTPReceiver, config, make_alerts, serve
from tests.ports import free_port


@pytest.fixture()
def huser(tmp_path):
    return "file://" + str(tmp_path / "user" / "spot")


def quiet(*_):
    pass


class NotSyslog(socketserver.ThreadingTCPServer):
    """A TCP service on the syslog port that is not a syslog receiver: it reads what it is sent,
    answers (optionally greets first, like SSH or SMTP), then closes or keeps trickling."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, greeting: bytes = b"", answer: bytes = b"", trickle: bool = False):
        self.greeting, self.answer, self.trickle = greeting, answer, trickle
        self.stop = threading.Event()
        self.received = 0
        self.read_all = threading.Event()  # the handler read to the sender's half-close
        super().__init__(("127.0.0.1", 0), self._Handler)

    class _Handler(socketserver.BaseRequestHandler):
        def handle(self):
            srv, c = self.server, self.request
            if srv.greeting:
                c.sendall(srv.greeting)
            while chunk := c.recv(65536):  # read to the sender's half-close
                srv.received += len(chunk)
            srv.read_all.set()
            c.sendall(srv.answer)
            deadline = time.monotonic() + 60  # a trickler still ends by itself
            while srv.trickle and not srv.stop.is_set() and time.monotonic() < deadline:
                try:
                    c.sendall(b".")
                except OSError:
                    return
                srv.stop.wait(0.2)


@pytest.mark.parametrize("greeting,answer", [
    (b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),  # an HTTP port
    (b"SSH-2.0-OpenSSH_9.2\r\n", b""),  # a service that greets first
])
def test_a_tcp_peer_that_answers_is_not_a_syslog_delivery(spark, huser, greeting, answer):
    rx = serve(NotSyslog(greeting, answer))
    dest = forward.Destination("siem", "syslog", "tcp", "127.0.0.1", rx.server_address[1], batch=5)
    with pytest.raises(SpotAEError, match=r"after 1 attempt\(s\).*not one .*0 of 7 new alerts were acknowledged"):
        forward.forward_alerts(spark, make_alerts(7), DAY, huser, config(dest), progress=quiet)
    # it did get the bytes (a greeting peer may answer before its handler has counted them)
    assert rx.read_all.wait(10) and rx.received > 0  # the point is that it did not acknowledge them
    assert forward.Ledger(spark, DAY, huser, "siem").ids == []
    rx.shutdown()


def _run_bounded(fn, limit: float):
    """Run `fn` in a thread; returns (seconds taken, exception raised); fails if it outlives `limit`."""
    box = {}

    def target():
        t0 = time.monotonic()
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e
        box["took"] = time.monotonic() - t0

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"the forwarder was still running after {limit} s"
    return box["took"], box.get("error")


def test_a_syslog_peer_that_trickles_bytes_cannot_hold_the_forwarder(spark, huser):
    rx = serve(NotSyslog(answer=b".", trickle=True))
    dest = forward.Destination("siem", "syslog", "tcp", "127.0.0.1", rx.server_address[1], batch=5)
    try:
        took, err = _run_bounded(lambda: forward.forward_alerts(spark, make_alerts(3), DAY, huser, config(dest),
                                                                progress=quiet), 20)
    finally:
        rx.stop.set()
        rx.shutdown()
    assert isinstance(err, SpotAEError) and took < 10
    assert forward.Ledger(spark, DAY, huser, "siem").ids == []


class TrickleHTTP(http.server.ThreadingHTTPServer):
    """Takes the POST, promises a 1000-byte answer, and sends one byte every 0.2 s."""

    daemon_threads = True

    def __init__(self):
        self.stop = threading.Event()
        super().__init__(("127.0.0.1", 0), self._Handler)

    class _Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.flush()
            for _ in range(300):  # at most 60 s, then it ends by itself
                if self.server.stop.wait(0.2):
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, *a):
            pass


def test_an_http_receiver_that_trickles_its_answer_cannot_hold_the_forwarder(spark, huser):
    rx = serve(TrickleHTTP())
    dest = forward.Destination("http-siem", "http", url=f"http://127.0.0.1:{rx.server_address[1]}/in", batch=5)
    cfg = config(dest, attempts=2)
    cfg.timeout_seconds = 1.0  # each read gets a byte well within it: only a bound on the whole attempt helps
    try:
        took, err = _run_bounded(lambda: forward.forward_alerts(spark, make_alerts(3), DAY, huser, cfg, progress=quiet), 20)
    finally:
        rx.stop.set()
        rx.shutdown()
    assert isinstance(err, SpotAEError) and "no complete answer within 1 s" in str(err)
    assert took < 6
    assert forward.Ledger(spark, DAY, huser, "http-siem").ids == []


def test_the_whole_run_ends_by_its_deadline_however_many_attempts_are_left(spark, huser):
    dest = forward.Destination("siem", "syslog", "tcp", "127.0.0.1", free_port(), batch=5)  # nobody listens
    cfg = forward.ForwardConfig(destinations=[dest], attempts=100, backoff_seconds=0.2, max_backoff_seconds=0.2,
                                timeout_seconds=5, deadline_seconds=1.5)
    t0 = time.monotonic()
    with pytest.raises(SpotAEError, match=r"deadline of 1.5 s has passed.*0 of 4 new alerts were acknowledged"):
        forward.forward_alerts(spark, make_alerts(4), DAY, huser, cfg, progress=quiet)
    assert time.monotonic() - t0 < 5


def test_an_http_redirect_is_not_taken_for_a_delivery(spark, huser):
    class Redirecting(HTTPReceiver):
        class _Handler(HTTPReceiver._Handler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(302)
                self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):  # what a client that follows the redirect would get: a 200 for nothing
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

    rx = serve(Redirecting())
    dest = forward.Destination("http-siem", "http", url=f"http://127.0.0.1:{rx.server_address[1]}/in", batch=5)
    with pytest.raises(SpotAEError, match="redirects are not followed"):
        forward.forward_alerts(spark, make_alerts(2), DAY, huser, config(dest), progress=quiet)
    assert forward.Ledger(spark, DAY, huser, "http-siem").ids == []
    rx.shutdown()


# ---- the config: every mistake at load, before Spark starts ---------------------------------

HTTP = '[[destinations]]\nname="h"\ntype="http"\n'
SYSLOG = '[[destinations]]\nname="s"\ntype="syslog"\n'


@pytest.mark.parametrize("text,message", [
    ('after_ml_ops = "false"\n' + HTTP + 'url="http://siem/"\n', "after_ml_ops must be true or false"),
    ('after_ml_ops = 0\n' + HTTP + 'url="http://siem/"\n', "after_ml_ops must be true or false"),
    (HTTP + 'url="http://"\n', "has no host"),
    (HTTP + 'url="http://exa mple.com/in"\n', "must not contain spaces"),
    (HTTP + 'url="http://siem:99999/in"\n', "is not a valid URL"),
    (HTTP + 'url="http://siem:port/in"\n', "is not a valid URL"),
    (HTTP + 'url="http://user:secret@siem/in"\n', "put credentials in headers"),
    (HTTP + 'url="http://siem/in\\n"\n', "must not contain spaces, control"),
    (HTTP + 'url="http://siem_/in"\n', "host must be a host name"),
    (HTTP + 'url="http://siem/"\nheaders = { X-Token = "a\\r\\nInjected: 1" }\n', "without CR, LF"),
    (HTTP + 'url="http://siem/"\nheaders = { "Bad Name" = "x" }\n', "not a valid HTTP header name"),
    (HTTP + 'url="http://siem/"\nheaders = { Content-Type = "text/plain" }\n', "set by the forwarder"),
    (HTTP + 'url="http://siem/"\nheaders = { X-Token = "\u20ac" }\n', "Latin-1 only"),
    (HTTP + 'url="http://siem/"\nheaders = { X-Token = 5 }\n', "must be a string"),
    (SYSLOG + 'host="siem host"\n', "host must be a host name or an IP address"),
    (SYSLOG + 'host=5\n', "host must be a host name or an IP address"),
    (SYSLOG + 'host="siem"\nsd_id=5\n', "sd_id must be an RFC 5424 SD-ID"),
    (SYSLOG + 'host="siem"\nport=0\n', "port must be a number in 1..65535"),
    ('retry = 3\n' + HTTP + 'url="http://siem/"\n', "[retry] must be a table"),
    ('[retry]\ntimeout_seconds = nan\n' + HTTP + 'url="http://siem/"\n', "timeout_seconds must be a number"),
    ('[retry]\ndeadline_seconds = 0\n' + HTTP + 'url="http://siem/"\n', "deadline_seconds must be a number in 1.0..86400.0"),
    ('[[destinations]]\nname="a\\n"\ntype="http"\nurl="http://siem/"\n', "letters, digits"),
])
def test_forward_config_mistakes_are_one_line_at_load(tmp_path, text, message):
    p = tmp_path / "forward.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(SpotAEError, match=re.escape(message)) as e:
        forward.load_config(str(p))
    assert "\n" not in str(e.value)


def test_a_forward_config_path_that_is_a_directory_is_one_clear_error(tmp_path):
    with pytest.raises(SpotAEError, match="cannot be read"):
        forward.load_config(str(tmp_path))


def test_good_destinations_still_load(tmp_path):
    p = tmp_path / "forward.toml"
    p.write_text('after_ml_ops = false\n[retry]\ndeadline_seconds = 120\n'
                 + HTTP + 'url="https://siem.example:8443/in?tenant=a"\nheaders = { Authorization = "Bearer x" }\n'
                 + SYSLOG + 'host="10.0.0.7"\ntransport="udp"\n'
                 + '[[destinations]]\nname="s6"\ntype="syslog"\nhost="::1"\n')
    cfg = forward.load_config(str(p))
    assert cfg.after_ml_ops is False and cfg.deadline_seconds == 120.0
    assert [d.host or d.url for d in cfg.destinations] == ["https://siem.example:8443/in?tenant=a", "10.0.0.7", "::1"]
