"""Allow-list rules (issue 25, part 2): which hand-built flows a rule covers (CIDR edges, IPv6,
port ranges, protocol, direction, expiry, daily windows), the one-line errors of bad rules, and
the `spot-ae allowlist` command on a store of its own."""
from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from spot_ae_job import allowlist, entry
from spot_ae_job.errors import SpotAEError

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
NOON = dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.timezone.utc).timestamp()


def rule(**kw):
    kw.setdefault("who", "alice")
    kw.setdefault("why", "backup traffic")
    return allowlist.new_rule(now=kw.pop("now", T0), **kw)


def flows(*rows):
    """Hand-built flows: (sip, dip, sport, dport, proto[, time])."""
    return pd.DataFrame([(*r, NOON) if len(r) == 5 else r for r in rows], columns=allowlist.MATCH_COLUMNS)


def covered(r, *rows) -> list[bool]:
    return [x is not None for x in allowlist.match(flows(*rows), [r])]


def test_an_ipv4_cidr_covers_its_first_and_last_address_and_nothing_either_side():
    r = rule(src="10.1.2.0/24")
    assert covered(r, ("10.1.2.0", "8.8.8.8", 1, 53, "UDP"), ("10.1.2.255", "8.8.8.8", 1, 53, "UDP"),
                   ("10.1.1.255", "8.8.8.8", 1, 53, "UDP"), ("10.1.3.0", "8.8.8.8", 1, 53, "UDP")) == [True, True, False, False]


def test_a_bare_address_is_one_host_and_the_destination_side_is_matched_on_its_own():
    r = rule(dst="192.168.0.7")
    assert covered(r, ("1.1.1.1", "192.168.0.7", 1, 2, "TCP"), ("192.168.0.7", "1.1.1.1", 2, 1, "TCP"),
                   ("1.1.1.1", "192.168.0.8", 1, 2, "TCP")) == [True, False, False]


def test_ipv6_prefixes_match_ipv6_flows_only():
    r = rule(src="2001:db8::/32")
    assert covered(r, ("2001:db8:ffff:ffff::1", "2001:db9::1", 1, 2, "TCP"), ("2001:db9::1", "2001:db8::1", 1, 2, "TCP"),
                   ("2001:0DB8:0000::0001", "::1", 1, 2, "TCP")) == [True, False, True]
    v4 = rule(src="0.0.0.0/0")
    assert covered(v4, ("2001:db8::1", "2001:db8::2", 1, 2, "TCP"), ("::ffff:10.0.0.1", "::1", 1, 2, "TCP"),
                   ("10.0.0.1", "10.0.0.2", 1, 2, "TCP")) == [False, False, True]


def test_port_ranges_are_inclusive_and_a_flow_without_ports_never_matches_a_port_rule():
    r = rule(dport="1024-2048")
    assert covered(r, ("1.1.1.1", "2.2.2.2", 1, 1023, "TCP"), ("1.1.1.1", "2.2.2.2", 1, 1024, "TCP"),
                   ("1.1.1.1", "2.2.2.2", 1, 2048, "TCP"), ("1.1.1.1", "2.2.2.2", 1, 2049, "TCP"),
                   ("1.1.1.1", "2.2.2.2", 1, None, "TCP")) == [False, True, True, False, False]
    assert covered(rule(sport="0"), ("1.1.1.1", "2.2.2.2", 0, 5, "UDP"), ("1.1.1.1", "2.2.2.2", 1, 5, "UDP")) == [True, False]


def test_protocol_by_name_or_number_in_any_case():
    r = rule(dst="10.0.0.0/8", proto="udp")
    assert covered(r, ("1.1.1.1", "10.0.0.1", 1, 53, "UDP"), ("1.1.1.1", "10.0.0.1", 1, 53, "17"),
                   ("1.1.1.1", "10.0.0.1", 1, 53, "udp"), ("1.1.1.1", "10.0.0.1", 1, 53, "TCP"),
                   ("1.1.1.1", "10.0.0.1", 1, 53, None)) == [True, True, True, False, False]


def test_both_ways_also_covers_the_reverse_direction_with_its_ports_swapped():
    one = rule(src="10.0.0.5", dport="22")
    both = rule(src="10.0.0.5", dport="22", both_ways=True)
    rows = [("10.0.0.5", "10.9.9.9", 50000, 22, "TCP"), ("10.9.9.9", "10.0.0.5", 22, 50000, "TCP"),
            ("10.9.9.9", "10.0.0.5", 50000, 22, "TCP")]
    assert covered(one, *rows) == [True, False, False]
    assert covered(both, *rows) == [True, True, False]


def test_expiry_covers_flows_that_started_before_it_only():
    r = rule(src="10.0.0.0/8", expires=dt.datetime(2026, 11, 2, 12, 0, tzinfo=dt.timezone.utc))
    assert covered(r, ("10.0.0.1", "1.1.1.1", 1, 2, "TCP", NOON - 1), ("10.0.0.1", "1.1.1.1", 1, 2, "TCP", NOON),
                   ("10.0.0.1", "1.1.1.1", 1, 2, "TCP", NOON + 86400)) == [True, False, False]


def test_a_daily_window_is_start_inclusive_end_exclusive_and_may_wrap_midnight():
    day = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc).timestamp()
    at = lambda h, m, s=0: ("10.0.0.1", "1.1.1.1", 1, 2, "TCP", day + h * 3600 + m * 60 + s)  # noqa: E731
    night = rule(src="10.0.0.1", hours="23:30-01:00")
    assert covered(night, at(23, 29, 59), at(23, 30), at(0, 0), at(0, 59, 59), at(1, 0)) == [False, True, True, True, False]
    late = rule(src="10.0.0.1", hours="22:00-24:00")
    assert covered(late, at(21, 59, 59), at(22, 0), at(23, 59, 59), at(0, 0)) == [False, True, True, False]
    unknown_time = ("10.0.0.1", "1.1.1.1", 1, 2, "TCP", float("nan"))
    assert covered(night, unknown_time) == [False]
    assert covered(rule(src="10.0.0.1"), unknown_time) == [True]  # no window, no expiry: time does not matter


def test_the_oldest_rule_names_a_flow_two_rules_cover():
    newer = rule(src="10.0.0.0/8", now=T0 + dt.timedelta(hours=1))
    older = rule(dst="1.1.1.1")
    ids = allowlist.match(flows(("10.0.0.1", "1.1.1.1", 1, 2, "TCP"), ("10.0.0.1", "2.2.2.2", 1, 2, "TCP"),
                                ("9.0.0.1", "2.2.2.2", 1, 2, "TCP")), [newer, older])
    assert list(ids) == [older.id, newer.id, None]


def test_alert_documents_are_matched_on_their_ecs_fields():
    r = rule(src="10.0.0.0/8", dport="443", proto="tcp", hours="11:00-13:00")
    doc = {"source": {"ip": "10.0.0.1", "port": 5000}, "destination": {"ip": "1.1.1.1", "port": 443},
           "network": {"transport": "tcp", "iana_number": "6"}, "event": {"start": "2026-11-02T12:00:00.000Z"}}
    no_time = {**doc, "event": {"start": None}}  # the day's start (00:00) is outside the window
    assert allowlist.match_alerts([doc, no_time], "20261102", [r]) == [r.id, None]


@pytest.mark.parametrize("kw, message", [
    ({"src": "10.0.0.300"}, "src must be an IPv4/IPv6 address or CIDR"),
    ({"src": "10.0.0.1/8"}, "host bits set (did you mean 10.0.0.0/8?)"),
    ({"dst": "2001:db8::/129"}, "dst must be an IPv4/IPv6 address or CIDR"),
    ({"dport": "65536"}, "dport out of range: ports are 0..65535"),
    ({"sport": "-1"}, "sport must be a port or a range"),
    ({"dport": "2000-1000"}, "runs backwards"),
    ({"dport": "53", "proto": "icmp"}, "ports only exist for tcp, udp and sctp"),
    ({"src": "10.0.0.0/8", "dst": "::1"}, "different IP versions"),
    ({"proto": "tcp"}, "at least one of src, dst, sport, dport"),
    ({"src": "10.0.0.1", "proto": "bogus"}, "proto must be one of"),
    ({"src": "10.0.0.1", "hours": "25:00-01:00"}, "hours must be a daily UTC window"),
    ({"src": "10.0.0.1", "hours": "02:00-02:00"}, "empty or the whole day"),
    ({"src": "10.0.0.1", "expires": T0 - dt.timedelta(seconds=1)}, "is in the past"),
    ({"src": "10.0.0.1", "expires": "next tuesday"}, "expires must be an ISO time"),
    ({"src": "10.0.0.1", "why": "  "}, "why is required"),
    ({"src": "10.0.0.1", "who": ""}, "who must name"),
])
def test_bad_rules_are_refused_with_a_line_that_says_why(kw, message):
    with pytest.raises(SpotAEError) as e:
        rule(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_stored_rule_reads_back_as_itself():
    r = rule(src="2001:db8::/48", dst="2001:db8:1::/48", sport="1-2", dport="443", proto="tcp", hours="01:00-02:00",
             both_ways=True, expires=T0 + dt.timedelta(days=3))
    assert allowlist.rule_from_json(json.loads(allowlist.to_bytes(r))) == r


# ---- the command -------------------------------------------------------------------------------

def run(capsys, *argv) -> tuple[int, str, str]:
    rc = entry.main(["allowlist", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("args, message", [
    (["add", "--src", "10.0.0.0/33", "--why", "x"], "src must be an IPv4/IPv6 address or CIDR like 10.0.0.0/8, got '10.0.0.0/33'"),
    (["add", "--dport", "99999", "--why", "x"], "dport out of range: ports are 0..65535, got '99999'"),
    (["add", "--src", "10.0.0.1", "--expires", "2020-01-01T00:00:00Z", "--why", "x"], "expires 2020-01-01T00:00:00Z is in the past"),
    (["add", "--src", "10.0.0.1", "--expires-days", "0", "--why", "x"], "--expires-days must be 1..3650"),
    (["remove", "a0123456789abcde", "--why", "x"], "no allow-list rule 'a0123456789abcde' (see `spot-ae allowlist list`)"),
    (["apply", "--day", "20181340"], "day 20181340 is not a calendar date"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, args, message):
    rc, out, err = run(capsys, *args, "--huser", tmp_path.as_uri())
    assert rc == 2 and out == ""
    assert err == f"spot-ae allowlist: error: {message}\n"


def test_cli_add_list_remove_keeps_the_rule_its_removal_and_an_audit_trail(tmp_path, capsys):
    huser = ["--huser", tmp_path.as_uri()]
    rc, out, _ = run(capsys, "add", *huser, "--src", "10.0.0.5", "--dport", "873", "--proto", "tcp", "--why", "nightly rsync",
                     "--who", "alice", "--json")
    assert rc == 0
    rid = json.loads(out)["rule_id"]
    rc, out, _ = run(capsys, "list", *huser)
    assert out.startswith(f"{rid}  10.0.0.5/32 -> any:873 proto tcp  by alice ") and out.rstrip().endswith("nightly rsync")
    assert run(capsys, "remove", rid, *huser, "--who", "bob", "--why", "rsync moved")[0] == 0
    assert run(capsys, "list", *huser)[1] == "no allow-list rules in force\n"
    listed = json.loads(run(capsys, "list", *huser, "--all", "--json")[1])
    assert [(r["id"], r["removed"]["who"], r["removed"]["why"]) for r in listed] == [(rid, "bob", "rsync moved")]
    audit = json.loads(run(capsys, "audit", *huser, "--json")[1])
    assert [(a["action"], a["who"], a["rule_id"]) for a in audit] == [("remove", "bob", rid), ("add", "alice", rid)]
    rc, _, err = run(capsys, "remove", rid, *huser, "--why", "again")
    assert rc == 2 and "already removed" in err
    # the store is files: the rule is still there, with its removal beside it
    assert len(list((tmp_path / "flow/allowlist/rules").glob("*.json"))) == 1
    assert (tmp_path / f"flow/allowlist/removed/{rid}.json").exists()


def test_a_hand_broken_rule_file_is_reported_and_the_others_still_apply(tmp_path, capsys):
    huser = ["--huser", tmp_path.as_uri()]
    run(capsys, "add", *huser, "--src", "10.0.0.5", "--why", "scanner")
    (tmp_path / "flow/allowlist/rules/20261101T000000Z-broken.json").write_text('{"id": "a0123456789abcde", "src": "nope"}')
    rc, out, err = run(capsys, "list", *huser)
    assert rc == 0 and "10.0.0.5/32" in out
    assert "unreadable allowlist/rules/20261101T000000Z-broken.json: missing field(s)" in err


# ---- re-application to a day's alert files (batch and streamed), on a local store --------------

def _doc(i: int, sip: str, rank):
    return json.dumps({"@timestamp": "2026-11-02T12:00:00.000Z", "event": {"id": f"id{i}", "start": "2026-11-02T12:00:00.000Z"},
                       "source": {"ip": sip, "port": 40000 + i}, "destination": {"ip": "10.9.9.9", "port": 443},
                       "network": {"transport": "tcp", "iana_number": "6"}, "spot_ae": {"rank": rank}})


def _write_day(root):
    day = root / "flow/scored_results/20261102"
    (day / "alerts/batch=4").mkdir(parents=True)
    batch = [_doc(1, "10.0.0.5", 1), _doc(2, "10.0.0.6", 2), _doc(3, "10.0.0.5", 3)]
    streamed = [_doc(4, "10.0.0.5", None), _doc(5, "10.0.0.7", None)]
    (day / "alerts/part-00000-a.txt").write_text("".join(x + "\n" for x in batch))
    (day / "alerts/.part-00000-a.txt.crc").write_bytes(b"stale")  # what Hadoop's local file system leaves
    (day / "alerts/batch=4/part-00000-b.txt").write_text("".join(x + "\n" for x in streamed))
    (day / "alerts_summary.json").write_text(json.dumps({"day": "20261102", "alerts": 5, "suppressed": 0}))
    return day, batch, streamed


def test_adding_a_rule_moves_batch_and_streamed_alerts_aside_and_removing_it_puts_them_back_exactly(tmp_path):
    from spot_ae_job.storage import LocalStorage

    day, batch, streamed = _write_day(tmp_path)
    store = allowlist.Store(LocalStorage(str(tmp_path)))
    r = rule(src="10.0.0.5", now=dt.datetime.now(dt.timezone.utc))
    rec = store.add(r)
    assert (rec["alerts_suppressed"], rec["held_by_this_rule"]) == (3, 3)
    assert rec["days"] == [{"day": "20261102", "suppressed": 3, "restored": 0, "alerts": 2, "held_by_rule": {r.id: 3}}]
    assert (day / "alerts/part-00000-a.txt").read_text() == batch[1] + "\n"
    assert (day / "alerts_allowlisted/part-00000-a.txt").read_text() == batch[0] + "\n" + batch[2] + "\n"
    assert (day / "alerts/batch=4/part-00000-b.txt").read_text() == streamed[1] + "\n"
    assert (day / "alerts_allowlisted/batch=4/part-00000-b.txt").read_text() == streamed[0] + "\n"
    assert not (day / "alerts/.part-00000-a.txt.crc").exists()  # a stale checksum would make Spark refuse the file
    summary = json.loads((day / "alerts_summary.json").read_text())
    assert (summary["alerts"], summary["allowlisted"], summary["allowlisted_by_rule"]) == (2, 3, {r.id: 3})

    rec = store.remove(r.id, who="bob", why="scanner retired")
    assert (rec["alerts_restored"], rec["alerts_suppressed"]) == (3, 0)
    assert (day / "alerts/part-00000-a.txt").read_text() == "".join(x + "\n" for x in batch)  # rank order, same bytes
    assert sorted((day / "alerts/batch=4/part-00000-b.txt").read_text().splitlines()) == sorted(streamed)
    assert (day / "alerts_allowlisted/part-00000-a.txt").read_text() == ""


def test_an_alert_left_in_both_places_by_an_interrupted_move_ends_up_in_one(tmp_path):
    from spot_ae_job.storage import LocalStorage

    day, batch, _ = _write_day(tmp_path)
    (day / "alerts_allowlisted").mkdir()
    (day / "alerts_allowlisted/part-00000-a.txt").write_text(batch[0] + "\n")  # held written, live not yet rewritten
    r = rule(src="10.0.0.5", now=dt.datetime.now(dt.timezone.utc))
    allowlist.reapply(LocalStorage(str(tmp_path)), [r])
    assert (day / "alerts/part-00000-a.txt").read_text() == batch[1] + "\n"
    assert (day / "alerts_allowlisted/part-00000-a.txt").read_text() == batch[0] + "\n" + batch[2] + "\n"
    allowlist.reapply(LocalStorage(str(tmp_path)), [])
    assert (day / "alerts/part-00000-a.txt").read_text() == "".join(x + "\n" for x in batch)
