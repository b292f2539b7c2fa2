"""The one place that names Spot's HDFS tree and the result columns (SPEC §2).

Everything under `${HUSER}/flow` is spelled here and nowhere else: ingest, the ML job, the
stream, the OA, Ansible's NameNode role and the image's init script (the last two are checked
against `created_at_install()` by tests/unit/test_layout.py). A day is parsed once into a `Day`
at the edge (the CLI, the OA's URL) and travels as that value.

    flow/hive/y=/m=/d=/h=/            the flow table (schema.py)
    flow/labelled/y=/m=/d=/h=/        the same flows with ground truth, never read by a model
    flow/models/<version>/, LATEST    autoencoders; flow/models/lda/... the LDA baseline
    flow/scored_results/YYYYMMDD/     one day's results (DayResults below)
    flow/verdicts/                    analyst verdicts across days
    flow/allowlist/                   allow-list rules, their removals and audit (allowlist.py)
    flow/quarantine/<source>/         input rows or files that failed validation
    flow/ingest_state/, ingest_summary/, stream_checkpoint/
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from spot_ae_job.errors import SpotAEError

HUSER = "/user/spot"

# result columns (beside schema.RESULT_COLUMNS, Spot's own order of flow_results.csv)
SCORE = "score"
SUSPICIOUS = "suspicious"
RANK = "rank"
MODEL_VERSION = "model_version"
ALLOWLISTED = "allowlisted"  # the id of the allow-list rule covering a flow (computed on read, never stored)
INCIDENT_ID = "incident_id"  # incidents.py: the incident a suspicious flow belongs to

ALLOWLIST_DIR = "allowlist"  # under flow/, beside verdicts/
SCORED_RESULTS = "scored_results"  # under flow/: one directory per scored day

_DAY = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")  # ASCII digits only (\d would take other scripts' digits)


@dataclass(frozen=True, order=True)
class Day:
    """A calendar day as Spot names it (YYYYMMDD); parsed once, validated once."""

    year: int
    month: int
    day: int

    @classmethod
    def parse(cls, text: str) -> "Day":
        m = _DAY.fullmatch(text) if isinstance(text, str) else None
        if not m:
            raise SpotAEError(f"day must be YYYYMMDD, got {text!r}")
        y, mo, d = map(int, m.groups())
        try:
            dt.date(y, mo, d)
        except ValueError:
            raise SpotAEError(f"day {text} is not a calendar date") from None
        return cls(y, mo, d)

    def __str__(self) -> str:
        return f"{self.year:04d}{self.month:02d}{self.day:02d}"

    def partition(self, root: str) -> str:
        """`root/y=YYYY/m=M/d=D`: the Hive partition of this day (integers, not zero-padded)."""
        return f"{root}/y={self.year}/m={self.month}/d={self.day}"


def is_day(text: str) -> bool:
    try:
        Day.parse(text)
        return True
    except SpotAEError:
        return False


@dataclass(frozen=True)
class DayResults:
    """`${HUSER}/flow/scored_results/YYYYMMDD/`: Spot's files and ours, batch and stream alike."""

    root: str

    @property
    def scores_csv(self) -> str:  # Spot's flow_results.csv, most suspicious first
        return f"{self.root}/scores/flow_results.csv"

    @property
    def all_scores(self) -> str:  # every flow with score, flag, rank, explanation (Parquet)
        return f"{self.root}/all_scores"

    @property
    def run_json(self) -> str:
        return f"{self.root}/run.json"

    @property
    def rejected(self) -> str:
        return f"{self.root}/rejected"

    @property
    def alerts(self) -> str:
        return f"{self.root}/alerts"

    @property
    def alerts_allowlisted(self) -> str:  # alert documents an allow-list rule holds back (allowlist.py)
        return f"{self.root}/alerts_allowlisted"

    @property
    def alerts_summary(self) -> str:
        return f"{self.root}/alerts_summary.json"

    @property
    def incidents(self) -> str:  # one row per incident (incidents.py), Parquet
        return f"{self.root}/incidents"

    @property
    def incident_members(self) -> str:  # alert id -> incident id, with the flow's key fields (Parquet)
        return f"{self.root}/incident_members"

    @property
    def incidents_ecs(self) -> str:  # one ECS document per incident, JSON lines (forwarded after the alerts)
        return f"{self.root}/incidents_ecs"

    @property
    def incidents_summary(self) -> str:
        return f"{self.root}/incidents_summary.json"

    @property
    def hosts(self) -> str:  # the day's host ranking (incidents.py), Parquet
        return f"{self.root}/hosts"

    @property
    def feedback_csv(self) -> str:  # Spot's ml_feedback.csv
        return f"{self.root}/feedback/ml_feedback.csv"

    @property
    def stream(self) -> str:  # micro-batch outputs of the streaming scorer
        return f"{self.root}/stream"

    @property
    def stream_suspicious(self) -> str:  # suspicious/batch=<id>/: a batch's flagged flows, in Spot's columns
        return f"{self.stream}/suspicious"

    @property
    def stream_all_scores(self) -> str:  # all_scores/batch=<id>/: every flow of a batch with its score
        return f"{self.stream}/all_scores"

    @property
    def stream_rejected(self) -> str:  # rejected/batch=<id>/
        return f"{self.stream}/rejected"

    @property
    def stream_run_json(self) -> str:  # the streaming scorer's run.json: the model of its latest batch
        return f"{self.stream}/run.json"

    @property
    def stream_incidents(self) -> str:  # incidents/batch=<id>/: each incident a batch opened or extended, as it stands after it
        return f"{self.stream}/incidents"

    @property
    def stream_incident_members(self) -> str:  # incident_members/batch=<id>/: the batch's flows
        return f"{self.stream}/incident_members"

    @property
    def stream_incidents_ecs(self) -> str:  # incidents_ecs/batch=<id>/
        return f"{self.stream}/incidents_ecs"

    @property
    def stream_incidents_index(self) -> str:  # per batch, the latest last_seen of its incidents (incidents.StreamIndex)
        return f"{self.stream}/incidents_index.json"

    def tmp(self, name: str) -> str:
        return f"{self.root}/_{name}_tmp"


def flow_relative(day: Day | str) -> DayResults:
    """A day's result paths relative to `{huser}/flow`, the root of the OA's storage."""
    return DayResults(f"{SCORED_RESULTS}/{day if isinstance(day, Day) else Day.parse(day)}")


@dataclass(frozen=True)
class Layout:
    """Spot's tree under one HDFS user root (a file:// or hdfs:// URI)."""

    huser: str

    def __post_init__(self):
        object.__setattr__(self, "huser", self.huser.rstrip("/"))

    @property
    def flow(self) -> str:
        return f"{self.huser}/flow"

    @property
    def flow_table(self) -> str:
        return f"{self.flow}/hive"

    @property
    def labelled(self) -> str:
        return f"{self.flow}/labelled"

    @property
    def models(self) -> str:
        return f"{self.flow}/models"

    @property
    def family_models(self) -> str:  # attack-family classifiers (family.py): <version>/, LATEST
        return f"{self.models}/family"

    @property
    def lda_models(self) -> str:
        return f"{self.models}/lda"

    @property
    def scored_results(self) -> str:
        return f"{self.flow}/{SCORED_RESULTS}"

    @property
    def verdicts(self) -> str:
        return f"{self.flow}/verdicts"

    @property
    def allowlist(self) -> str:
        return f"{self.flow}/{ALLOWLIST_DIR}"

    @property
    def ingest_state(self) -> str:
        return f"{self.flow}/ingest_state"

    @property
    def ingest_summary(self) -> str:
        return f"{self.flow}/ingest_summary"

    @property
    def stream_checkpoint(self) -> str:
        return f"{self.flow}/stream_checkpoint"

    @property
    def staging(self) -> str:
        return f"{self.flow}/_staging"

    def quarantine(self, source: str) -> str:
        return f"{self.flow}/quarantine/{source}"

    def results(self, day: Day) -> DayResults:
        return DayResults(f"{self.scored_results}/{day}")

    def day_flows(self, day: Day, labelled: bool = False) -> str:
        return day.partition(self.labelled if labelled else self.flow_table)


def created_at_install() -> list[str]:
    """The directories under ${HUSER} that a fresh cluster creates (the rest appear on first write):
    the image's init-hdfs.sh and Ansible's NameNode role are tested against this list."""
    lay = Layout("")
    return [p.lstrip("/") for p in (lay.flow, lay.flow_table, lay.labelled, lay.scored_results, lay.models,
                                     lay.ingest_summary, lay.flow + "/quarantine")]
