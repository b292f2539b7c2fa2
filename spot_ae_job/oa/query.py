"""Filter, sort and page the cached suspicious-connects table (server side, so the browser never
downloads a 100k-row day)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spot_ae_job.oa.results import RANK, records


@dataclass
class Filters:
    ip: str | None = None  # matches source or destination
    port: int | None = None  # matches source or destination port
    proto: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    max_rank: int | None = None


def suspicious_page(df: pd.DataFrame, f: Filters, sort: str, order: str, page: int, size: int) -> dict:
    mask = np.ones(len(df), dtype=bool)
    if f.ip is not None:
        mask &= (df["sip"].to_numpy() == f.ip) | (df["dip"].to_numpy() == f.ip)
    if f.port is not None:
        mask &= (df["sport"].to_numpy() == f.port) | (df["dport"].to_numpy() == f.port)
    if f.proto is not None:
        mask &= df["proto"].str.upper().to_numpy() == f.proto
    if f.min_score is not None:
        mask &= df["score"].to_numpy() >= f.min_score
    if f.max_score is not None:
        mask &= df["score"].to_numpy() <= f.max_score
    if f.max_rank is not None:
        mask &= df[RANK].to_numpy() <= f.max_rank
    sel = df[mask] if not mask.all() else df
    total = int(len(sel))
    if sort != RANK or order != "asc":
        # rank breaks ties so that paging is stable across requests
        sel = sel.sort_values([sort, RANK], ascending=[order == "asc", True], kind="stable")
    start = (page - 1) * size
    rows = sel.iloc[start:start + size]
    return {
        "total": total,
        "page": page,
        "size": size,
        "pages": max(1, -(-total // size)),
        "sort": sort,
        "order": order,
        "rows": records(rows),
    }
