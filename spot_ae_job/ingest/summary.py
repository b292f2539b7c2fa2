"""The ingest summary the OA shows (Spot's "ingest summary": flows over time).

Format (docs/ingest.md): one small CSV per ingested source file and day, at
`{huser}/flow/ingest_summary/y=YYYY/m=M/d=D/<source-tag>.csv`, header SUMMARY_COLUMNS, one row
per hour of that day with flows from that source. One file per source instead of one shared file
because several writers (watcher processes, CSV loads) add to the same day: each writes only its
own file, with the same atomic commit as the flows, so a re-run replaces nothing and double counts
nothing. Readers sum the rows: per hour, per day.
"""
from __future__ import annotations

import csv
import io
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc

from spot_ae_job.layout import Layout
from spot_ae_job.storage import Storage

SUMMARY_COLUMNS = ["date", "hour", "flows", "bytes", "packets", "source_kind", "source_file"]


def summary_location(huser: str) -> str:
    return Layout(huser).ingest_summary


def hourly_rows(flows: pa.Table, source_kind: str, source_file: str) -> dict[tuple[int, int, int], list[dict]]:
    """{(y, m, d): [row per hour]} of one source's flows (FLOW_SCHEMA Arrow table)."""
    if flows.num_rows == 0:
        return {}
    t = pa.table({
        "y": flows["tryear"], "m": flows["trmonth"], "d": flows["trday"], "h": flows["trhour"],
        "bytes": pc.add(flows["ibyt"], flows["obyt"]), "packets": pc.add(flows["ipkt"], flows["opkt"]),
    })
    agg = t.group_by(["y", "m", "d", "h"]).aggregate([("bytes", "count"), ("bytes", "sum"), ("packets", "sum")])
    out: dict[tuple[int, int, int], list[dict]] = defaultdict(list)
    for r in sorted(agg.to_pylist(), key=lambda r: (r["y"], r["m"], r["d"], r["h"])):
        out[(r["y"], r["m"], r["d"])].append({
            "date": f"{r['y']:04d}-{r['m']:02d}-{r['d']:02d}", "hour": r["h"], "flows": r["bytes_count"],
            "bytes": r["bytes_sum"], "packets": r["packets_sum"], "source_kind": source_kind,
            "source_file": source_file,
        })
    return out


def to_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def summary_files(huser: str, tag: str, by_day: dict[tuple[int, int, int], list[dict]]) -> list[tuple[str, bytes]]:
    """[(uri, CSV bytes)] of one source's summary, a file per day (committed like the flows)."""
    return [(f"{summary_location(huser)}/y={y}/m={m}/d={d}/{tag}.csv", to_csv(rows)) for (y, m, d), rows in sorted(by_day.items())]


def read_summary(store: Storage) -> list[dict]:
    """Every summary row under the user root (the OA sums them per hour or per day)."""
    base = summary_location(store.huser)
    rows: list[dict] = []
    for y in (e.name for e in store.list(base)):
        for m in (e.name for e in store.list(f"{base}/{y}")):
            for d in (e.name for e in store.list(f"{base}/{y}/{m}")):
                for name in (e.name for e in store.list(f"{base}/{y}/{m}/{d}")):
                    if name.endswith(".csv") and not name.startswith((".", "_")):
                        text = store.read(f"{base}/{y}/{m}/{d}/{name}").decode()
                        for r in csv.DictReader(io.StringIO(text)):
                            for k in ("hour", "flows", "bytes", "packets"):
                                r[k] = int(r[k])
                            rows.append(r)
    return rows


def totals(rows: list[dict]) -> tuple[dict[str, int], dict[tuple[str, int], int]]:
    """(flows per day, flows per (day, hour))."""
    per_day: dict[str, int] = defaultdict(int)
    per_hour: dict[tuple[str, int], int] = defaultdict(int)
    for r in rows:
        per_day[r["date"]] += r["flows"]
        per_hour[(r["date"], r["hour"])] += r["flows"]
    return dict(sorted(per_day.items())), dict(sorted(per_hour.items()))
