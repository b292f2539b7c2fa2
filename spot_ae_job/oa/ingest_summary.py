"""Flows per hour from `{huser}/flow/ingest_summary/`, for the ingest summary chart.

The ingest stage owns the format (spot_ae_job/ingest/summary.py, docs/ingest.md): one CSV per
source file and day at `ingest_summary/y=YYYY/m=M/d=D/<tag>.csv`, header SUMMARY_COLUMNS, one
row per hour. The OA walks that tree through its own storage layer (so it works over WebHDFS
without a JVM) and sums rows per hour with the ingest stage's own `totals`. A file it cannot read
is listed in the answer, not hidden, so a format change shows up in the UI.
"""
from __future__ import annotations

import csv
import io
import re

from spot_ae_job.ingest.summary import SUMMARY_COLUMNS, totals

_PART = {"y": re.compile(r"\Ay=[0-9]{4}\Z"), "m": re.compile(r"\Am=[0-9]{1,2}\Z"), "d": re.compile(r"\Ad=[0-9]{1,2}\Z")}
ROOT = "ingest_summary"


def _files(storage):
    for y in storage.list(ROOT):
        if not (y.is_dir and _PART["y"].match(y.name)):
            continue
        for m in storage.list(f"{ROOT}/{y.name}"):
            if not (m.is_dir and _PART["m"].match(m.name)):
                continue
            for d in storage.list(f"{ROOT}/{y.name}/{m.name}"):
                if not (d.is_dir and _PART["d"].match(d.name)):
                    continue
                for f in storage.list(f"{ROOT}/{y.name}/{m.name}/{d.name}"):
                    if not f.is_dir and f.name.endswith(".csv") and not f.name.startswith((".", "_")):
                        yield f"{ROOT}/{y.name}/{m.name}/{d.name}/{f.name}"


def _rows(data: bytes) -> list[dict]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
    if reader.fieldnames != SUMMARY_COLUMNS:
        raise ValueError(f"header is {reader.fieldnames}, expected {SUMMARY_COLUMNS}")
    rows = []
    for r in reader:
        for k in ("hour", "flows", "bytes", "packets"):
            r[k] = int(r[k])
        if not 0 <= r["hour"] <= 23 or r["flows"] < 0:
            raise ValueError(f"impossible row {r}")
        rows.append(r)
    return rows


def read_summary(storage) -> dict | None:
    """{'hours': [{'hour': 'YYYY-MM-DDTHH', 'flows': N}...], 'days', 'total_flows', 'files', 'unreadable'}, or None."""
    if storage.stat(ROOT) is None:
        return None
    rows, unreadable, files = [], [], 0
    for rel in _files(storage):
        files += 1
        try:
            rows += _rows(storage.read(rel))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            unreadable.append({"file": rel, "reason": str(err)[:200]})
    if files == 0:
        return None
    per_day, per_hour = totals(rows)
    hours = [{"hour": f"{date}T{hour:02d}", "flows": n} for (date, hour), n in per_hour.items()]
    by_kind: dict[str, int] = {}
    for r in rows:
        by_kind[r["source_kind"]] = by_kind.get(r["source_kind"], 0) + r["flows"]
    return {
        "hours": hours,
        "days": [{"date": d, "flows": n} for d, n in per_day.items()],
        "by_source_kind": by_kind,
        "total_flows": sum(per_day.values()),
        "files": files,
        "unreadable": unreadable,
    }
