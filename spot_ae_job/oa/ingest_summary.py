"""Flows per hour from `{huser}/flow/ingest_summary/`, for the ingest summary chart.

The ingest stage owns that folder's format (docs/ingest.md). Spot's own ingest summary was a
table of (tdate, total) rows; this reader takes CSV files with a header naming a time column and a
count column, or JSON-lines files with the same keys, in any sub-folder, and adds counts up per
hour. Files it cannot read are reported, not hidden, so a format change shows up in the UI.
"""
from __future__ import annotations

import csv
import io
import json
import re

TIME_KEYS = ("hour", "tdate", "ts", "time", "window_start", "start")
COUNT_KEYS = ("flows", "total", "count", "records")
_HOUR = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})[ T]?(\d{2})?")
MAX_FILES = 5000


def _hour_of(value: str) -> str | None:
    """'2018-02-16 10:23:00', '2018-02-16T10', '2018021610' -> '2018-02-16T10'."""
    m = _HOUR.match(str(value).strip())
    if not m:
        return None
    y, mo, d, h = m.groups()
    return f"{y}-{mo}-{d}T{h or '00'}"


def _pick(keys, wanted):
    low = {k.lower().strip(): k for k in keys}
    for w in wanted:
        if w in low:
            return low[w]
    return None


def _rows(name: str, data: bytes):
    text = data.decode("utf-8", "replace")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        stripped = text.strip()
        if stripped.startswith("["):
            yield from json.loads(stripped)
            return
        for line in stripped.splitlines():
            if line.strip():
                yield json.loads(line)
    else:
        yield from csv.DictReader(io.StringIO(text))


def _walk(storage, rel: str, depth: int = 0):
    for e in storage.list(rel):
        if e.name.startswith((".", "_")):
            continue
        child = f"{rel}/{e.name}"
        if e.is_dir and depth < 5:
            yield from _walk(storage, child, depth + 1)
        elif not e.is_dir:
            yield child, e


def read_summary(storage) -> dict | None:
    """{'hours': [{'hour': 'YYYY-MM-DDTHH', 'flows': N}...], 'files': n, 'unreadable': [...]}, or None."""
    if storage.stat("ingest_summary") is None:
        return None
    per_hour: dict[str, int] = {}
    unreadable, files = [], 0
    for rel, e in _walk(storage, "ingest_summary"):
        files += 1
        if files > MAX_FILES:
            break
        try:
            for r in _rows(e.name, storage.read(rel)):
                if not isinstance(r, dict):
                    raise ValueError("row is not an object")
                tk, ck = _pick(r.keys(), TIME_KEYS), _pick(r.keys(), COUNT_KEYS)
                if tk is None or ck is None:
                    raise ValueError(f"needs a time column ({'/'.join(TIME_KEYS)}) and a count column ({'/'.join(COUNT_KEYS)})")
                hour = _hour_of(r[tk])
                if hour is None:
                    raise ValueError(f"unreadable time {r[tk]!r}")
                per_hour[hour] = per_hour.get(hour, 0) + int(float(r[ck]))
        except (ValueError, TypeError, UnicodeDecodeError) as err:
            unreadable.append({"file": rel, "reason": str(err)[:200]})
    if files == 0:
        return None
    hours = [{"hour": h, "flows": n} for h, n in sorted(per_hour.items())]
    return {"hours": hours, "total_flows": sum(per_hour.values()), "files": files, "unreadable": unreadable}
