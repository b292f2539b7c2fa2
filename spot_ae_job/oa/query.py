"""Filter, sort and page the cached suspicious-connects table (server side, so the browser never
downloads a 100k-row day)."""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd

from spot_ae_job.layout import ALLOWLISTED
from spot_ae_job.oa.results import RANK, records


@dataclass
class Filters:
    ip: str | None = None  # matches source or destination
    port: int | None = None  # matches source or destination port
    proto: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    max_rank: int | None = None


# Sort orders per cached frame; the weak reference makes sure a recycled id() never reuses an old order.
_ORDERS: dict[int, tuple[weakref.ref, dict]] = {}
_ORDERS_LOCK = threading.Lock()


def sorted_positions(df: pd.DataFrame, sort: str, order: str) -> np.ndarray:
    """Row positions of the frame in (sort, order), position breaking ties (the cached frames are in
    their default order: the day's list in rank order); computed once per cached frame."""
    with _ORDERS_LOCK:
        for k in [k for k, (ref, _) in _ORDERS.items() if ref() is None]:
            del _ORDERS[k]
        entry = _ORDERS.get(id(df))
        if entry is None or entry[0]() is not df:
            entry = (weakref.ref(df), {})
            _ORDERS[id(df)] = entry
        cache = entry[1]
    hit = cache.get((sort, order))
    if hit is None:
        if sort == RANK:
            hit = np.arange(len(df)) if order == "asc" else np.arange(len(df))[::-1].copy()
        else:
            tmp = pd.DataFrame({"k": df[sort].to_numpy(), "r": np.arange(len(df))})
            hit = tmp.sort_values(["k", "r"], ascending=[order == "asc", True], kind="stable")["r"].to_numpy()
        cache[(sort, order)] = hit
    return hit


def suspicious_page(df: pd.DataFrame, f: Filters, sort: str, order: str, page: int, size: int,
                    marks: pd.Series | None = None, allowlisted: str = "hide") -> dict:
    """One page of the day's list. `df` must be the cached frame (sort orders are cached by its id).

    `marks` (aligned with `df`) names the allow-list rule covering each flow: such flows are
    hidden ("hide", the default), listed alone ("only") or listed with the rest ("show")."""
    mask = np.ones(len(df), dtype=bool)
    covered = marks.notna().to_numpy() if marks is not None else np.zeros(len(df), dtype=bool)
    if allowlisted == "hide":
        mask &= ~covered
    elif allowlisted == "only":
        mask &= covered
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
    pos, meta = paged(df, mask, sort, order, page, size)
    rows = df.iloc[pos]
    if marks is not None:
        rows = rows.assign(**{ALLOWLISTED: marks.iloc[pos].to_numpy()})
    return {**meta, "rows": records(rows)}


def paged(df: pd.DataFrame, mask: np.ndarray, sort: str, order: str, page: int, size: int) -> tuple[np.ndarray, dict]:
    """The row positions of one page of `df[mask]` in (sort, order), and the paging facts every
    list of the API answers with. `df` must be a cached frame (its sort orders are cached)."""
    pos = sorted_positions(df, sort, order)
    pos = pos[mask[pos]]
    total = int(len(pos))
    start = (page - 1) * size
    return pos[start:start + size], {"total": total, "page": page, "size": size, "pages": max(1, -(-total // size)),
                                     "sort": sort, "order": order}
