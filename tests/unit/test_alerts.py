"""Alerts out (issue 11): the ECS file a real ml-ops run writes, and Community ID v1.

The alert file is checked field by field against the ECS types of the fields it uses (the table
below is from the ECS 8.11 field reference); Spot-AE's own fields must stay under `spot_ae.*`.
Community ID is checked against the specification's published test vectors (tests/unit/data).
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
from pathlib import Path

import pandas as pd
import pytest

from spot_ae_job import cli
from spot_ae_job.alerts import community_ids, read_alerts, with_community_id, write_alerts
from spot_ae_job.model import AEModel
from spot_ae_job.layout import Layout
from spot_ae_job.schema import SCHEMA_VERSION

DAY = "20180215"
VECTORS = Path(__file__).parent / "data" / "community_id_baseline_deflt.json"

# ECS 8.11 field reference: name -> type, for every ECS field the alerts use.
ECS_TYPES = {
    "@timestamp": "date", "message": "match_only_text", "ecs.version": "keyword",
    "event.id": "keyword", "event.kind": "keyword", "event.category": "keyword", "event.type": "keyword",
    "event.dataset": "keyword", "event.module": "keyword", "event.start": "date", "event.end": "date",
    "event.duration": "long", "event.risk_score": "float", "event.created": "date",
    "source.ip": "ip", "source.port": "long", "source.bytes": "long", "source.packets": "long",
    "destination.ip": "ip", "destination.port": "long", "destination.bytes": "long", "destination.packets": "long",
    "network.transport": "keyword", "network.iana_number": "keyword", "network.community_id": "keyword",
    "network.bytes": "long", "network.packets": "long",
    "observer.vendor": "keyword", "observer.product": "keyword",
}
# ECS allows an array of values wherever it allows one value; these are documented as arrays.
ECS_ARRAYS = {"event.category", "event.type"}
REQUIRED = ["@timestamp", "event.kind", "event.id", "event.start", "event.end", "event.risk_score", "source.ip",
            "source.port", "destination.ip", "destination.port", "network.transport", "network.community_id"]


def _is_date(v) -> bool:
    try:
        return isinstance(v, str) and dt.datetime.fromisoformat(v.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def _is_ip(v) -> bool:
    try:
        ipaddress.ip_address(v)
        return True
    except (ValueError, TypeError):
        return False


CHECK = {
    "keyword": lambda v: isinstance(v, str), "match_only_text": lambda v: isinstance(v, str),
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "date": _is_date, "ip": _is_ip,
}


def _leaves(doc: dict, prefix: str = ""):
    for k, v in doc.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, name + ".")
        else:
            yield name, v


def ecs_problems(doc: dict) -> list[str]:
    """What is wrong with one alert as ECS: unknown top-level fields, wrong types, missing fields."""
    out = []
    seen = {}
    for name, v in _leaves(doc):
        if name.startswith("spot_ae."):
            continue  # custom fields live under our own key, as ECS asks
        if name not in ECS_TYPES:
            out.append(f"{name}: not an ECS field")
            continue
        seen[name] = v
        values = v if isinstance(v, list) and name in ECS_ARRAYS else [v]
        bad = [x for x in values if not CHECK[ECS_TYPES[name]](x)]
        if bad:
            out.append(f"{name}: {bad[0]!r} is not an ECS {ECS_TYPES[name]}")
    out += [f"{n}: missing" for n in REQUIRED if n not in seen]
    return out


def test_the_checker_catches_wrong_fields_and_types():
    doc = {"event": {"kind": "alert", "risk_score": "high"}, "source": {"ip": "not-an-ip"}, "sauce": 1}
    problems = " ".join(ecs_problems(doc))
    assert "event.risk_score" in problems and "source.ip" in problems and "sauce: not an ECS field" in problems
    assert "network.community_id: missing" in problems


# ---- Community ID ------------------------------------------------------------------------

def _vectors():
    rows = json.loads(VECTORS.read_text())
    names = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMP6", 132: "SCTP"}
    out = []
    for r in rows:
        proto = names.get(r["proto"], str(r["proto"]))  # the flow table's names; others as numbers
        sport, dport = r["sport"] or 0, r["dport"] or 0
        if r["proto"] in (1, 58):  # the vectors give type/code as ports; nfdump packs them into dport
            sport, dport = 0, (r["sport"] << 8) | r["dport"]
        out.append((r["saddr"], r["daddr"], sport, dport, proto, r["communityid"]))
    return out


def test_community_id_matches_the_specifications_test_vectors():
    v = _vectors()
    got = community_ids(*(pd.Series([x[i] for x in v]) for i in range(5)))
    assert list(got) == [x[5] for x in v]


def test_community_id_in_spark_matches_the_vectors(spark):
    """Both paths of the job: Spark SQL for IPv4 TCP/UDP/SCTP, the library for the others."""
    v = _vectors()
    df = spark.createDataFrame([(i, *x[:5]) for i, x in enumerate(v)], "i int, sip string, dip string, sport int, dport int, proto string")
    got = [r["community_id"] for r in with_community_id(df).orderBy("i").collect()]
    assert got == [x[5] for x in v]
    assert sum(1 for x in v if "." in x[0] and x[4] in ("TCP", "UDP", "SCTP")) >= 6  # the SQL path is exercised


# ---- the alerts of a real run ------------------------------------------------------------

@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory, data_dir):
    huser = "file://" + str(tmp_path_factory.mktemp("alerts") / "user" / "spot")
    src = str(data_dir / "cicids2018" / "aegmm__toy_dataset.csv")
    assert cli.main(["load-csv", "--huser", huser, "--master", "local[2]", src]) == 0
    assert cli.main(["ml-ops", DAY, "flow", "--huser", huser, "--epochs", "2", "--master", "local[2]"]) == 0
    return huser


def test_every_run_writes_its_suspicious_flows_as_ecs_alerts(spark, scored):
    run = json.loads(Path(scored[7:], "flow/scored_results", DAY, "run.json").read_text())
    alerts = read_alerts(spark, DAY, scored)
    assert len(alerts) == run["suspicious"] == run["alerts"]["written"] > 0
    for a in alerts:
        assert ecs_problems(a) == [], a
    a = alerts[0]
    assert a["event"]["kind"] == "alert" and a["network"]["community_id"].startswith("1:")
    assert [x["spot_ae"]["rank"] for x in alerts] == list(range(1, len(alerts) + 1))  # most suspicious first
    assert a["event"]["risk_score"] == a["spot_ae"]["score"] > run["threshold"]


def test_alerts_carry_the_models_lineage(spark, scored):
    run = json.loads(Path(scored[7:], "flow/scored_results", DAY, "run.json").read_text())
    lineage = read_alerts(spark, DAY, scored)[0]["spot_ae"]
    assert lineage["model"]["version"] == run["model_version"]
    assert lineage["model"]["training_days"] == [DAY]
    assert lineage["threshold"] == {"mode": "p95", "value": run["threshold"], "higher_is_suspicious": True}
    assert lineage["feature_schema_version"] == SCHEMA_VERSION


def test_a_rerun_writes_the_same_alert_ids(spark, scored):
    before = sorted(a["event"]["id"] for a in read_alerts(spark, DAY, scored))
    model = AEModel.load(spark, Layout(scored).models)
    flagged = spark.read.parquet(f"{scored}/flow/scored_results/{DAY}/all_scores")
    s = write_alerts(spark, flagged, model, DAY, scored, progress=lambda *_: None)
    after = sorted(a["event"]["id"] for a in read_alerts(spark, DAY, scored))
    assert after == before and s.alerts == len(before) and len(set(before)) == len(before)


def test_explanation_columns_become_the_alerts_explanation(spark, scored):
    """The run's explanation columns (expl1..3, issue 10) travel into the alert, in order."""
    top = spark.read.parquet(f"{scored}/flow/scored_results/{DAY}/all_scores").where("rank = 1").first()
    a = next(a for a in read_alerts(spark, DAY, scored) if a["spot_ae"]["rank"] == 1)
    expl = a["spot_ae"]["explanation"]
    assert [e["feature"] for e in expl] == [top["expl1_feature"], top["expl2_feature"], top["expl3_feature"]]
    assert len(expl) == 3 and all(e["feature"] for e in expl)
    assert expl[0]["value"] == pytest.approx(top["expl1_value"])
    assert ecs_problems(a) == []
