"""Property-based fuzzing of the OA's JSON API from its own OpenAPI document (issue 22).

Schemathesis turns spot_ae_job/oa/static/openapi.json into Hypothesis strategies, for data that
fits the document (positive) and data that does not (negative), and every case goes over HTTP to
the real app on a 127.0.0.1 port, as a logged-in analyst with the session's CSRF token, so writes
go through too. The invariant: no 5xx, ever, and the answer matches what the document promises.
The results root holds a real day of excerpt rows, with its incidents and host ranking made by
the real stage (incidents.py, local Spark), and a day whose flows have no IPs (as the shared CIC
files without IPs load); the day, a verdict's rank, an incident id and a host are steered to
those days' data part of the time, or random values would almost never find any.

Bounded in time for the unit phase: MAX_EXAMPLES cases per operation and mode (env
SPOT_AE_FUZZ_EXAMPLES raises it for a longer local run; docs/security.md).
"""
from __future__ import annotations

import json
import os
import threading
from importlib import resources

import pyarrow.parquet as pq
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from werkzeug.serving import make_server

from spot_ae_job.oa.app import create_app
from spot_ae_job import incidents
from spot_ae_job.layout import Day, Layout
from test_incidents import model
from test_oa_api import DAY, PASSWORD, _config, _flows_from_excerpt, write_day

MAX_EXAMPLES = int(os.environ.get("SPOT_AE_FUZZ_EXAMPLES", "25"))
NO_IP_DAY = "20180220"
SPEC = json.loads(resources.files("spot_ae_job.oa").joinpath("static/openapi.json").read_text())
SCHEMA = schemathesis.openapi.from_dict(SPEC)
OPERATIONS = [(path, method) for path, ops in SPEC["paths"].items() for method in ops]


def _has_inputs(path: str, method: str) -> bool:
    op = SCHEMA[path][method.upper()]
    return bool(op.path_parameters or op.query or op.body)


# (path, method, mode): negative data only where the operation takes some input to get wrong
CASES = [(p, m, mode) for p, m in OPERATIONS for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
         if mode is GenerationMode.POSITIVE or _has_inputs(p, m)]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def root(tmp_path_factory, data_dir, spark):
    root = tmp_path_factory.mktemp("fuzz") / "user" / "spot"
    run = write_day(root, _flows_from_excerpt(data_dir, DAY), DAY)
    scored = spark.read.parquet(f"file://{root}/flow/scored_results/{DAY}/all_scores")
    incidents.write_day_incidents(spark, scored, model("ae-test", run["threshold"]), Day.parse(DAY), Layout(f"file://{root}"),
                                  run["threshold"], progress=lambda *_: None)
    noip = _flows_from_excerpt(data_dir, DAY)
    for c in ("sip", "dip", "sport", "treceived"):
        noip[c] = None
    write_day(root, noip, NO_IP_DAY)
    return root


@pytest.fixture()
def live(root):
    """A fresh app per operation (same files): the login throttle a fuzzed login trips stays there."""
    cfg = _config()
    cfg.huser = f"file://{root}"
    srv = make_server("127.0.0.1", 0, create_app(cfg), threaded=True)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    t.join(5)


class Analyst:
    """A requests session logged in as the analyst; logs in again when a fuzzed logout ended it."""

    def __init__(self, base: str):
        self.base = base
        self.http = requests.Session()
        self.login()

    def login(self) -> None:
        r = self.http.post(f"{self.base}/api/v1/login", json={"username": "alice", "password": PASSWORD}, timeout=10)
        assert r.status_code == 200, r.text
        self.http.headers["X-CSRF-Token"] = r.json()["csrf_token"]


@pytest.mark.parametrize("path,method,mode", CASES, ids=[f"{m.upper()} {p} {mode.value}" for p, m, mode in CASES])
def test_the_api_never_answers_5xx_and_keeps_to_its_document(live, root, path, method, mode):
    op = SCHEMA[path][method.upper()]
    analyst = Analyst(live)
    res = root / "flow" / "scored_results" / DAY
    ids = sorted(set(pq.read_table(res / "incidents", columns=["incident_id"])["incident_id"].to_pylist()))
    hosts = sorted(set(pq.read_table(res / "hosts", columns=["ip"])["ip"].to_pylist()))[:50]

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode), day=st.sampled_from([None, DAY, NO_IP_DAY]),
           rank=st.none() | st.integers(min_value=1, max_value=80), incident=st.none() | st.sampled_from(ids),
           host=st.none() | st.sampled_from(hosts))
    def run(case, day, rank, incident, host):
        for name, value in (("day", day), ("incident_id", incident), ("ip", host)):
            if value and case.path_parameters and name in case.path_parameters:
                case.path_parameters[name] = value
        if rank and isinstance(case.body, dict) and "rank" in case.body:
            case.body["rank"] = rank  # a rank that exists on those days
        response = case.call(base_url=live, session=analyst.http, timeout=30)
        case.validate_response(response, checks=CHECKS)
        if path.endswith("/logout") or (path.endswith("/login") and response.status_code == 200):
            analyst.login()  # a fuzzed logout or login ended or replaced the session: carry on logged in

    run()
