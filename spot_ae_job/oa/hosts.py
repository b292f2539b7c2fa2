"""A host's history across days, for the OA (no Spark: pyarrow over the day's `hosts/` tables).

incidents.py writes each scored day's host ranking (`scored_results/YYYYMMDD/hosts/`, one row per
IP: flows, suspicious flows, worst and mean score as source and as target, its incidents and
their highest severity). `host_history` reads that IP's row of every day, oldest first (the score
trend), and the analyst verdicts on connections it is part of.
"""
from __future__ import annotations

import ipaddress

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spot_ae_job.layout import SCORED_RESULTS, flow_relative, is_day


def host_history(results, ip: str) -> dict:
    """{ip, days: [{day, host_rank, ...the hosts/ row...}], verdicts: [...], unreadable: [...]}.

    `results` is the OA's Results (its storage and verdict reader). A day without a hosts/
    table (scored before incidents existed, or streamed only) is left out; a part file that
    cannot be read is listed in `unreadable`, never skipped silently."""
    ip = str(ipaddress.ip_address(ip))  # ValueError: not an address (the caller answers 400)
    days, unreadable = [], []
    for d in sorted(e.name for e in results.storage.list(SCORED_RESULTS) if e.is_dir and is_day(e.name)):
        rel = flow_relative(d).hosts
        if results.storage.stat(rel) is None:
            continue
        for part in results._parts(rel):
            try:
                with results.storage.open(part) as f:
                    t = pq.read_table(f)
                hit = t.filter(pc.equal(t["ip"], pa.scalar(ip)))
            except (pa.ArrowException, ValueError, OSError, KeyError) as err:
                unreadable.append({"file": part, "reason": f"not a readable host table: {err}"})
                continue
            for row in hit.to_pylist():
                days.append({"day": d, **row})
    verdicts, bad = results.all_verdicts()
    mine = [v for v in verdicts if ip in (v.get("sip"), v.get("dip"))]
    return {"ip": ip, "days": days, "verdicts": mine, "unreadable": unreadable + bad}
