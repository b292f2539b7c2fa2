"""The OA's parts on their own: the storage guard, the config rules, the command line, and the
ingest summary as the real ingest stage writes it."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from werkzeug.security import check_password_hash

from spot_ae_job.errors import SpotAEError
from spot_ae_job.oa import validate as V
from spot_ae_job.oa.app import create_app
from spot_ae_job.oa.config import ConfigError, load
from spot_ae_job.oa.ingest_summary import read_summary
from spot_ae_job.storage import LocalStorage, open_storage

PY = sys.executable


def oa(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "spot_ae_job", "oa", *args], input=stdin, capture_output=True, text=True, timeout=60)


# -- storage -----------------------------------------------------------------------------------
@pytest.mark.parametrize("rel", ["../x", "scored_results/../../etc/passwd", "a/./b", "/etc/passwd/..", "a/b c", "a/..", "a\\..\\b"])
def test_storage_refuses_paths_that_could_leave_the_root(tmp_path, rel):
    s = LocalStorage(str(tmp_path))
    with pytest.raises(ValueError, match="unsafe path segment"):
        s.read(rel)


def test_storage_rewrites_atomically_and_leaves_no_temp_files(tmp_path):
    s = LocalStorage(str(tmp_path))
    s.write_atomic("scored_results/20180216/feedback/ml_feedback.csv", b"one\n")
    s.write_atomic("scored_results/20180216/feedback/ml_feedback.csv", b"two\n")
    d = tmp_path / "flow" / "scored_results" / "20180216" / "feedback"
    assert [p.name for p in d.iterdir()] == ["ml_feedback.csv"]
    assert (d / "ml_feedback.csv").read_bytes() == b"two\n"


@pytest.mark.parametrize("huser", ["file://relative/path", "s3://bucket/spot", "ftp://x/y"])
def test_unsupported_huser_uris_are_refused_with_the_expected_shape(huser):
    with pytest.raises(SpotAEError, match="file:///abs/path|absolute path"):
        open_storage(huser)


def test_a_real_calendar_is_checked_not_just_eight_digits():
    assert V.day("20240229") == "20240229"
    with pytest.raises(V.Invalid, match="not a calendar date"):
        V.day("20230229")


# -- configuration -----------------------------------------------------------------------------
def test_production_mode_refuses_to_start_without_users(tmp_path):
    cfg = tmp_path / "oa.toml"
    cfg.write_text('mode = "production"\n')
    with pytest.raises(ConfigError, match="no users configured: production mode has no default password"):
        load(str(cfg), "file:///tmp")


def test_a_plain_password_in_the_config_is_refused(tmp_path):
    cfg = tmp_path / "oa.toml"
    cfg.write_text('[users.alice]\npassword_hash = "hunter22"\n')
    with pytest.raises(ConfigError, match="must be a werkzeug hash"):
        load(str(cfg), "file:///tmp")


@pytest.mark.parametrize("text,fragment", [
    ("mode = 'prod'\n", "mode must be"),
    ("colour = 1\n", "unknown key(s) 'colour'"),
    ("secret_key = 'short'\n", "at least 16"),
    ("max_request_bytes = 10\n", "max_request_bytes must be"),
    ("[users.bob]\npassword_hash = 'scrypt:1$x'\nrole = 'root'\n", "role must be one of"),
    ("users = = 1\n", "not valid TOML"),
    # issue 22: values that used to be taken as they came
    ("session_hours = 1e9\n", "session_hours must be a number in 0.1..12"),  # every login was a 500
    ("session_hours = -1\n", "session_hours must be a number in 0.1..12"),  # cookies born expired
    ("session_hours = nan\n", "session_hours must be a number in 0.1..12"),
    ("session_hours = '8'\n", "session_hours must be a number in 0.1..12"),
    ("session_hours = true\n", "session_hours must be a number in 0.1..12"),
    ("idle_minutes = 0\n", "idle_minutes must be an integer in 1..720"),
    ("secure_cookies = 'false'\n", "secure_cookies must be true or false (without quotes)"),
    ("secret_key_file = 5\n", "secret_key_file must be a file name"),
    ("secret_key = 1234567890123456789\n", "secret_key must be a string"),
    ("[users.alice]\npassword_hash = 'scrypt:1$x'\nrol = 'viewer'\n", "unknown key(s) 'rol'"),
    ('[users."bob\\nadmin"]\npassword_hash = "scrypt:1$x"\n', "must be 1-64 letters, digits"),
])
def test_config_mistakes_are_named(tmp_path, text, fragment):
    cfg = tmp_path / "oa.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        load(str(cfg), "file:///tmp")


def test_a_config_path_that_is_a_directory_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read"):
        load(str(tmp_path), "file:///tmp")


def test_dev_mode_without_users_makes_one_random_one_time_password(tmp_path):
    a, b = load(None, "file:///tmp", dev=True), load(None, "file:///tmp", dev=True)
    assert a.one_time_password and a.one_time_password != b.one_time_password
    assert check_password_hash(a.users["analyst"].password_hash, a.one_time_password)
    app = create_app(a, storage=LocalStorage(str(tmp_path)))
    c = app.test_client()
    assert c.post("/api/v1/login", json={"username": "analyst", "password": a.one_time_password}).status_code == 200


# -- command line ------------------------------------------------------------------------------
def test_hash_password_makes_a_hash_the_server_accepts(tmp_path):
    r = oa("hash-password", "--password-stdin", stdin="s3cret-passphrase\n")
    assert r.returncode == 0, r.stderr
    h = r.stdout.strip()
    assert check_password_hash(h, "s3cret-passphrase") and not check_password_hash(h, "other")
    cfg = tmp_path / "oa.toml"
    cfg.write_text(f'[users.alice]\npassword_hash = "{h}"\n')
    assert load(str(cfg), "file:///tmp").users["alice"].role == "analyst"


@pytest.mark.parametrize("pw", ["short", "elevenchars", "x" * 129])
def test_passwords_outside_12_to_128_characters_are_refused(pw):
    r = oa("hash-password", "--password-stdin", stdin=pw + "\n")
    assert r.returncode == 2 and "at least 12 characters" in r.stderr


@pytest.mark.parametrize("args,fragment", [
    (["serve", "--huser", "file:///tmp"], "--config FILE is required in production mode"),
    (["serve", "--config", "/nonexistent/oa.toml", "--huser", "file:///tmp"], "config file /nonexistent/oa.toml not found"),
    (["serve", "--dev", "--huser", "s3://bucket"], "expected file:///abs/path or hdfs://"),
    (["serve", "--dev", "--huser", "file:///tmp", "--port", "70000"], "--port must be"),
])
def test_serve_refuses_bad_setups_with_a_message_and_no_traceback(args, fragment):
    r = oa(*args)
    assert r.returncode == 2
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_serve_refuses_a_config_without_users(tmp_path):
    cfg = tmp_path / "oa.toml"
    cfg.write_text('secure_cookies = true\n')
    r = oa("serve", "--config", str(cfg), "--huser", f"file://{tmp_path}")
    assert r.returncode == 2 and "no default password" in r.stderr


# -- ingest summary ----------------------------------------------------------------------------
def test_ingest_summary_counts_what_the_real_ingest_wrote_per_hour(tmp_path, data_dir):
    from spot_ae_job.ingest.watcher import ingest_file

    huser = tmp_path / "user" / "spot"
    res = ingest_file(LocalStorage(f"file://{huser}"), data_dir / "nfcapd" / "nfcapd.sample")
    assert res.flows > 0
    # independent count: rows in the flow table's hour partitions
    want = Counter()
    for f in (huser / "flow" / "hive").rglob("*.parquet"):
        parts = dict(p.split("=") for p in f.parent.relative_to(huser / "flow" / "hive").parts)
        want[f"{int(parts['y']):04d}-{int(parts['m']):02d}-{int(parts['d']):02d}T{int(parts['h']):02d}"] += pq.read_metadata(f).num_rows
    got = read_summary(LocalStorage(str(huser)))
    assert {h["hour"]: h["flows"] for h in got["hours"]} == dict(want)
    assert got["total_flows"] == res.flows and got["unreadable"] == []


def test_an_unreadable_summary_file_is_reported_not_hidden(tmp_path):
    d = tmp_path / "flow" / "ingest_summary" / "y=2018" / "m=2" / "d=16"
    d.mkdir(parents=True)
    (d / "good.csv").write_text("date,hour,flows,bytes,packets,source_kind,source_file\n2018-02-16,10,5,100,9,nfcapd,a\n")
    (d / "bad.csv").write_text("when,count\nnoon,3\n")
    got = read_summary(LocalStorage(str(tmp_path)))
    assert got["hours"] == [{"hour": "2018-02-16T10", "flows": 5}]
    assert [u["file"].rsplit("/", 1)[1] for u in got["unreadable"]] == ["bad.csv"]
    assert read_summary(LocalStorage(str(tmp_path / "nothing"))) is None
