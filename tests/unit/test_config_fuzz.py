"""Property-based fuzzing of the two TOML configs an operator writes (issue 22): the OA's config
(spot_ae_job/oa/config.py) and the forwarding config (spot_ae_job/forward.py).

The invariant: whatever the file holds, loading it either gives a configuration that works, or
fails with the project's own error (the OA's ConfigError, the job's SpotAEError) on one line that
the command line prints as it is; never another exception, which the user would see as a
traceback. Files come three ways: arbitrary bytes, arbitrary TOML documents over the real keys
(and some unknown ones) with values of every TOML type, and the documented examples with values
swapped. "Works" is checked too: an OA config builds the app, and an accepted HTTP destination's
URL and headers go through http.client's own checks, which is where a bad value used to fail,
after Spark had started.

Bounded for the unit phase by MAX_EXAMPLES (env SPOT_AE_FUZZ_EXAMPLES raises it; docs/security.md).
"""
from __future__ import annotations

import datetime as dt
import http.client
import math
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from spot_ae_job import forward
from spot_ae_job.errors import SpotAEError
from spot_ae_job.oa.app import create_app
from spot_ae_job.oa.config import ConfigError, load

MAX_EXAMPLES = int(os.environ.get("SPOT_AE_FUZZ_EXAMPLES", "25")) * 8
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
REPO = Path(__file__).resolve().parents[2]

OA_KEYS = ["mode", "secret_key", "secret_key_file", "secure_cookies", "max_request_bytes", "session_hours",
           "idle_minutes", "cache_days", "colour"]
USER_KEYS = ["password_hash", "role", "rol"]
RETRY_KEYS = ["attempts", "backoff_seconds", "max_backoff_seconds", "timeout_seconds", "deadline_seconds", "tries"]
DEST_KEYS = ["name", "type", "transport", "host", "port", "url", "batch", "headers", "sd_id", "colour"]
# values an operator might plausibly type, mixed in with arbitrary ones
NEAR = ["production", "dev", "analyst", "viewer", "syslog", "http", "tcp", "udp", "true", "false", "127.0.0.1", "::1",
        "siem.example", "http://siem.example/in", "https://127.0.0.1:8443/x?y=1", "http://", "http://a b/",
        "http://h:99999/", "http://u:p@h/", "scrypt:32768:8:1$abc$def", "pbkdf2:sha256:1000$x$y", "spot-ae@32473",
        "Bearer x", "a\r\nX-Injected: 1", "", " ", "\x00", "é", "€"]


# ---- a small TOML writer (the standard library reads TOML but does not write it) -------------------

def _str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _key(k: str) -> str:
    return k if k and all(c.isascii() and (c.isalnum() or c in "-_") for c in k) else _str(k)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict) -> str:
    """Top-level values inline; tables and arrays of tables as sections, as operators write them."""
    lines, tables = [], []
    for k, v in doc.items():
        if isinstance(v, dict) and all(isinstance(x, dict) for x in v.values()) and v:
            tables += [(f"[{_key(k)}.{_key(n)}]", t) for n, t in v.items()]
        elif isinstance(v, dict):
            tables.append((f"[{_key(k)}]", v))
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            tables += [(f"[[{_key(k)}]]", t) for t in v]
        else:
            lines.append(f"{_key(k)} = {_value(v)}")
    for head, t in tables:
        lines.append(head)
        lines += [f"{_key(k)} = {_value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


scalars = st.one_of(
    st.booleans(), st.integers(), st.integers(min_value=-5, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(NEAR), st.text(max_size=40),
    st.datetimes(timezones=st.none() | st.just(dt.timezone.utc)), st.dates(), st.times(),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                      max_leaves=6)


def table(keys: list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=10), values, max_size=len(keys))


oa_docs = st.fixed_dictionaries({}, optional={
    **{k: values for k in OA_KEYS},
    "users": st.dictionaries(st.sampled_from(["alice", "bob"]) | st.text(max_size=12), table(USER_KEYS) | values, max_size=3),
})
forward_docs = st.fixed_dictionaries({}, optional={
    "after_ml_ops": values,
    "retry": table(RETRY_KEYS) | values,
    "destinations": st.lists(table(DEST_KEYS), max_size=3) | values,
    "extra": values,
})


def _one_line(e: Exception) -> None:
    text = str(e)
    assert text and "\n" not in text and "\r" not in text, repr(text)


# ---- the OA's config ---------------------------------------------------------------------------

def _check_oa(tmp_path, data: bytes) -> None:
    p = tmp_path / "oa.toml"
    p.write_bytes(data)
    try:
        cfg = load(str(p), f"file://{tmp_path}")
    except ConfigError as e:
        _one_line(e)
        return
    app = create_app(cfg)  # what load accepts must start: this used to fail at the first login
    assert app.permanent_session_lifetime.total_seconds() > 0


def _safe_key_file(doc: dict) -> bool:
    """secret_key_file names a file to read: keep the fuzzer off devices that never end."""
    v = doc.get("secret_key_file")
    return not (isinstance(v, str) and v.lstrip().startswith(("/dev", "/proc", "/sys")))


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_as_the_oa_config_load_or_fail_on_one_line(tmp_path, data):
    _check_oa(tmp_path, data)


@FUZZ
@given(doc=oa_docs)
def test_any_toml_over_the_oa_keys_loads_into_a_working_app_or_fails_on_one_line(tmp_path, doc):
    assume(_safe_key_file(doc))
    _check_oa(tmp_path, to_toml(doc).encode("utf-8"))


# ---- the forwarding config ---------------------------------------------------------------------

def _check_forward(tmp_path, data: bytes) -> None:
    p = tmp_path / "forward.toml"
    p.write_bytes(data)
    try:
        cfg = forward.load_config(str(p))
    except SpotAEError as e:
        _one_line(e)
        return
    assert isinstance(cfg.after_ml_ops, bool) and cfg.deadline_seconds >= 1
    for d in cfg.destinations:
        if d.type == "http":  # http.client's own checks, without connecting: the old failure point
            u = urlsplit(d.url)
            conn = http.client.HTTPConnection(u.hostname, u.port)
            conn.putrequest("POST", (u.path or "/") + (f"?{u.query}" if u.query else ""))
            for k, v in d.headers.items():
                conn.putheader(k, v)
        else:
            assert d.host and 1 <= d.port <= 65535 and isinstance(d.sd_id, str)


@FUZZ
@given(data=st.binary(max_size=300))
def test_any_bytes_as_the_forward_config_load_or_fail_on_one_line(tmp_path, data):
    _check_forward(tmp_path, data)


@FUZZ
@given(doc=forward_docs)
def test_any_toml_over_the_forward_keys_loads_into_sendable_destinations_or_fails_on_one_line(tmp_path, doc):
    _check_forward(tmp_path, to_toml(doc).encode("utf-8"))


@FUZZ
@given(line=st.integers(min_value=0, max_value=200), value=values)
def test_the_documented_forward_example_with_one_value_swapped(tmp_path, line, value):
    """Real configs are the example with a value edited: swap one `key = value` line's value."""
    lines = (REPO / "config" / "forward.example.toml").read_text().splitlines()
    assigns = [i for i, x in enumerate(lines) if "=" in x and not x.lstrip().startswith("#")]
    i = assigns[line % len(assigns)]
    key = lines[i].split("=", 1)[0]
    lines[i] = f"{key}= {_value(value)}"
    _check_forward(tmp_path, ("\n".join(lines) + "\n").encode("utf-8"))


def test_the_toml_writer_writes_what_tomllib_reads_back():
    import tomllib

    doc = {"a": 1, "s": 'q"\\\n\x01é', "t": {"x": [1, 2.5]}, "users": {"al ice": {"role": "viewer"}},
           "destinations": [{"name": "n", "port": 5}], "f": float("inf")}
    back = tomllib.loads(to_toml(doc))
    assert back == doc


@pytest.mark.parametrize("path", ["config/forward.example.toml"])
def test_the_shipped_examples_still_load(path):
    forward.load_config(str(REPO / path))
