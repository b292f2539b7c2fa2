"""Allow-lists on a real scored day (issue 25, part 2): a rule added after scoring takes the
matching alerts out of the day's alert files and the OA (held, not deleted, with an audit
record), is honoured when the day is scored again, is never forwarded, keeps its flows out of
training and of the day's incidents (left out by the OA at once, regrouped by `spot-ae incidents`),
and its removal brings back exactly the alerts it held.

The day is the CIC-IDS2018 excerpt's 16/02, trained for 1 epoch and scored with TOL 0 so that
every flow is an alert: the subject is what happens to alerts, not which flows the model flags.
Expected answers come from the files (alert lines, flow_results.csv), not from allowlist.py."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from spot_ae_job import allowlist, cli, entry, forward, mlops
from spot_ae_job.alerts import read_alerts
from spot_ae_job.layout import Day, Layout
from spot_ae_job.oa.app import create_app
from spot_ae_job.storage import LocalStorage
from test_forward import HTTPReceiver, config, serve
from test_oa_api import VIEWER_PASSWORD, _config, login

pytestmark = pytest.mark.slow
DAY = "20180216"


def _run(*args):
    assert cli.main(list(args)) == 0, args


def lines(root: Path, top: str) -> dict[str, str]:
    """alert id -> its ECS line, from every part file under scored_results/DAY/<top>/ (batch dirs too)."""
    out = {}
    for f in sorted((root / "flow/scored_results" / DAY / top).rglob("part-*")):
        for line in f.read_text().splitlines():
            if line.strip():
                out[json.loads(line)["event"]["id"]] = line
    return out


def flow_results(root: Path) -> list[dict]:
    with open(root / "flow/scored_results" / DAY / "scores/flow_results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def day(spark, tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("allowlist") / "user" / "spot"
    common = ["--huser", root.as_uri(), "--master", "local[2]"]
    _run("load-csv", *common, str(data_dir / "cicids2018" / "aegmm__toy_dataset.csv"))
    _run("ml-ops", DAY, "flow", *common, "--epochs", "1", "--tol", "0")
    return root, common


def test_a_rule_added_after_scoring_holds_the_days_alerts_and_its_removal_brings_them_back(spark, day, capsys):
    root, common = day
    huser = root.as_uri()
    before = lines(root, "alerts")
    assert before and len(before) == len(flow_results(root))  # TOL 0: every scored flow is an alert
    train_before = mlops.training_sets(spark, Layout(huser), Day.parse(DAY), mlops.RunOptions(), print)
    rows_before = train_before[1].unionByName(train_before[2])
    n_train = rows_before.count()
    # the destination with the most benign training flows, whose alerts are some but not all of the day's
    by_dst = Counter(json.loads(x)["destination"]["ip"] for x in before.values())
    benign_dsts = [r["dip"] for r in rows_before.groupBy("dip").count().orderBy("count", ascending=False).collect()]
    target = next(d for d in benign_dsts if 0 < by_dst[d] < len(before))
    benign_to_target = rows_before.where(f"dip = '{target}'").count()
    covered = {i for i, x in before.items() if json.loads(x)["destination"]["ip"] == target}

    cfg = _config()
    cfg.huser = huser
    client = create_app(cfg).test_client()
    token = login(client)
    total = client.get(f"/api/v1/days/{DAY}/suspicious").json["total"]
    assert total == len(flow_results(root))

    # add the rule from the command line
    capsys.readouterr()
    assert entry.main(["allowlist", "add", "--huser", huser, "--dst", target, "--why", "the load balancer's health checks",
                       "--who", "alice", "--json"]) == 0
    audit = json.loads(capsys.readouterr().out)
    rid = audit["rule_id"]
    assert (audit["action"], audit["who"], audit["alerts_suppressed"], audit["alerts_restored"]) == ("add", "alice", len(covered), 0)
    assert [(d["day"], d["suppressed"]) for d in audit["days"]] == [(DAY, len(covered))]

    # the alert files: the covered alerts moved, verbatim, to alerts_allowlisted/; the rest untouched
    assert lines(root, "alerts") == {i: x for i, x in before.items() if i not in covered}
    assert lines(root, "alerts_allowlisted") == {i: before[i] for i in covered}
    assert {a["event"]["id"] for a in read_alerts(spark, DAY, huser)} == set(before) - covered  # Spark still reads them
    summary = json.loads((root / "flow/scored_results" / DAY / "alerts_summary.json").read_text())
    assert (summary["alerts"], summary["allowlisted"], summary["allowlisted_by_rule"]) == (len(before) - len(covered), len(covered), {rid: len(covered)})

    # the OA: hidden from the list, with the rule and why; listed alone on request; marked in details
    to_target = [r for r in flow_results(root) if r["dip"] == target]
    d = client.get(f"/api/v1/days/{DAY}/suspicious?size=500").json
    assert d["total"] == total - len(to_target)
    assert all(r["dip"] != target and r["allowlisted"] is None for r in d["rows"])
    assert d["allowlist"] == [{"id": rid, "hidden": len(to_target), "why": "the load balancer's health checks", "who": "alice",
                               "rule": f"any -> {target}/32"}]
    only = client.get(f"/api/v1/days/{DAY}/suspicious?allowlisted=only&size=500").json
    assert only["total"] == len(to_target) and {r["allowlisted"] for r in only["rows"]} == {rid}
    sip = to_target[0]["sip"]
    flows = client.get(f"/api/v1/days/{DAY}/connections?sip={sip}&dip={target}").json["flows"]
    assert flows and all(f["allowlisted"] == (rid if f["dip"] == target else None) for f in flows)
    over = client.get("/api/v1/allowlist").json
    assert over["rules"][0]["id"] == rid and over["rules"][0]["in_force"] and over["rules"][0]["held_alerts"] == len(covered)

    # the day's incidents were grouped before the rule: the OA leaves the covered flows out of
    # them at once, and `spot-ae incidents DAY` (Spark) groups the day again without them
    assert audit["regroup"] == [DAY]
    members = lambda: spark.read.parquet(f"{huser}/flow/scored_results/{DAY}/incident_members")  # noqa: E731
    assert members().where(f"dip = '{target}'").count() == len(to_target)  # grouped before the rule
    inc = client.get(f"/api/v1/days/{DAY}/incidents?size=500").json
    assert inc["summary"]["allowlisted_flows"] == len(to_target)
    assert sum(r["allowlisted_flows"] for r in inc["rows"]) <= len(to_target)
    for r in inc["rows"]:
        shown = client.get(f"/api/v1/days/{DAY}/incidents/{r['incident_id']}/flows?size=500").json
        assert all(f["dip"] != target for f in shown["rows"]) and shown["total"] == r["flows"] - r["allowlisted_flows"]
    _run("incidents", DAY, *common)
    assert members().where(f"dip = '{target}'").count() == 0 and members().count() == total - len(to_target)
    inc = client.get(f"/api/v1/days/{DAY}/incidents?size=500").json
    assert inc["summary"]["allowlisted_flows"] == 0 and inc["summary"]["flows"] == total - len(to_target)
    run = json.loads((root / "flow/scored_results" / DAY / "run.json").read_text())
    assert run["incidents"]["flows"] == total - len(to_target)

    # training leaves the covered flows out (and only those)
    train_after = mlops.training_sets(spark, Layout(huser), Day.parse(DAY), mlops.RunOptions(), print)
    rows_after = train_after[1].unionByName(train_after[2])
    assert rows_after.where(f"dip = '{target}'").count() == 0
    assert rows_after.count() == n_train - benign_to_target

    # scoring the day again with the rule in force writes the same split directly
    model = (root / "flow/models/LATEST").read_text().strip()
    _run("ml-ops", DAY, "flow", *common, "--model-version", model, "--tol", "0")
    live, held = lines(root, "alerts"), lines(root, "alerts_allowlisted")
    assert set(live) == set(before) - covered and set(held) == covered

    # forwarding never sends a covered alert, even one written before its rule (simulated: the
    # held alerts put back into alerts/ by hand, as if the rule's re-application had not run yet)
    sneaked = root / "flow/scored_results" / DAY / "alerts" / "part-99999-sneaked.txt"
    sneaked.write_text("".join(x + "\n" for x in held.values()))
    rx = serve(HTTPReceiver())
    dest = forward.Destination("siem", "http", url=f"http://127.0.0.1:{rx.server_address[1]}/bulk", batch=500)
    forward.forward_day(spark, DAY, huser, config(dest))
    rx.shutdown()
    incidents = [a for a in rx.lines if a["event"]["dataset"] == "spot_ae.incident"]  # sent after the alerts
    assert {a["event"]["id"] for a in rx.lines if a not in incidents} == set(live)
    # the day was scored again with the rule in force: no incident lists a covered alert
    assert incidents and not {i for a in incidents for i in a["spot_ae"]["incident"]["alert_ids"]} & covered
    sneaked.unlink()

    # remove the rule in the OA (analyst, CSRF): every held alert comes back, byte for byte
    assert client.post("/api/v1/allowlist/remove", json={"id": rid, "why": "x"}).status_code == 403  # no CSRF token
    r = client.post("/api/v1/allowlist/remove", json={"id": rid, "why": "health checks moved to another subnet"},
                    headers={"X-CSRF-Token": token})
    assert r.status_code == 200, r.json
    assert (r.json["audit"]["action"], r.json["audit"]["alerts_restored"], r.json["audit"]["alerts_suppressed"]) == ("remove", len(covered), 0)
    assert lines(root, "alerts") == {**live, **held} and lines(root, "alerts_allowlisted") == {}
    assert client.get(f"/api/v1/days/{DAY}/suspicious").json["total"] == total
    assert client.get(f"/api/v1/days/{DAY}/suspicious").json["allowlist"] == []
    summary = json.loads((root / "flow/scored_results" / DAY / "alerts_summary.json").read_text())
    assert (summary["alerts"], summary["allowlisted"]) == (len(before), 0)
    audit_trail = client.get("/api/v1/allowlist").json["audit"]
    assert [(a["action"], a["who"]) for a in audit_trail] == [("remove", "alice"), ("add", "alice")]
    # the incidents, grouped with the rule in force, take the flows back when grouped again: the
    # forwarder does that itself before it sends a day whose rules changed since its grouping
    assert r.json["audit"]["regroup"] == [DAY]
    assert client.get(f"/api/v1/days/{DAY}/incidents").json["unassigned"] == len(to_target)
    rx = serve(HTTPReceiver())
    toml = root.parent / "forward.toml"
    toml.write_text(f'[[destinations]]\nname = "siem2"\ntype = "http"\nurl = "http://127.0.0.1:{rx.server_address[1]}/bulk"\n')
    capsys.readouterr()
    _run("alerts", "forward", DAY, *common, "--forward-config", str(toml))
    rx.shutdown()
    assert "the allow-list rules changed since its incidents were grouped; grouping them again" in capsys.readouterr().out
    assert members().count() == total and client.get(f"/api/v1/days/{DAY}/incidents").json["unassigned"] == 0
    sent = [a for a in rx.lines if a["event"]["dataset"] == "spot_ae.incident"]
    assert covered <= {i for a in sent for i in a["spot_ae"]["incident"]["alert_ids"]}  # the restored alerts, in incidents again

    # re-applying with nothing changed rewrites nothing
    mtimes = {f: f.stat().st_mtime_ns for f in (root / "flow/scored_results" / DAY).rglob("part-*")}
    assert allowlist.reapply(LocalStorage(str(root)), [])[DAY]["suppressed"] == 0
    assert mtimes == {f: f.stat().st_mtime_ns for f in (root / "flow/scored_results" / DAY).rglob("part-*")}


def test_only_analysts_change_the_allowlist_and_bad_rules_get_a_400(day):
    root, _ = day
    cfg = _config()
    cfg.huser = root.as_uri()
    client = create_app(cfg).test_client()
    stored = sorted((root / "flow").rglob("allowlist/*/*.json"))
    token = login(client, "victor", VIEWER_PASSWORD)
    r = client.post("/api/v1/allowlist", json={"src": "10.0.0.1", "why": "x"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 403 and "may not record verdicts or change the allow-list" in r.json["message"]
    token = login(client)
    for body, message in [({"src": "10.0.0.0/33", "why": "x"}, "src must be an IPv4/IPv6 address or CIDR"),
                          ({"dport": "70000", "why": "x"}, "dport out of range"),
                          ({"src": "10.0.0.1", "why": "x", "expires_days": 0}, "expires_days must be an integer in 1..3650"),
                          ({"src": "10.0.0.1"}, "why is required"),
                          ({"src": "10.0.0.1", "why": "x", "who": "mallory"}, "unknown field(s): who")]:
        r = client.post("/api/v1/allowlist", json=body, headers={"X-CSRF-Token": token})
        assert r.status_code == 400 and message in r.json["message"], (body, r.json)
    r = client.post("/api/v1/allowlist/remove", json={"id": "a0123456789abcde", "why": "x"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 404
    assert sorted((root / "flow").rglob("allowlist/*/*.json")) == stored  # nothing was written
