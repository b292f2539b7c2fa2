"""A day's incidents in the OA (issue 24 part 4): listed, filtered, sorted and paged on the server.

incidents.py (Spark) writes `incidents/` and `incident_members/` beside a day's batch results;
here they are read with pyarrow (the OA has no JVM), once per (day, part files), and paged by
query.paged, as the suspicious list is. A verdict on an incident is ONE new file in the verdict
store (verdicts.incident_verdicts: a record per connection of its flows, all written at once), so
it is in force on later days as per-flow verdicts are, and it shows on each member flow.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spot_ae_job import allowlist
from spot_ae_job import verdicts as verdict_store
from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import INCIDENT_ID, RANK, SCORE, flow_relative
from spot_ae_job.oa.hosts import host_history
from spot_ae_job.oa.query import paged
from spot_ae_job.oa.results import BadData, NotFound, Unprocessable, _is_ip, _json_object, _text, _why

MAX_POINTS = 1500  # the timeline shows every member flow up to this many, else time bins
BINS = 120
MAX_EDGES = 60  # the hosts graph: the busiest source -> target pairs
MAX_LISTED = 200  # hosts listed in an incident's answer (n_hosts says how many there are)
# what a row of the incident list carries (lists are cut: the incident page has the rest)
LIST_COLUMNS = [INCIDENT_ID, "first_seen", "last_seen", "flows", "bytes", "max_score", "min_score", "sum_score",
                "severity", "severity_level", "main_host", "main_role", "n_hosts", "n_sources", "n_targets",
                "n_ports", "ports", "top_explanations", "family", "family_confidence", "model_version"]
_SCALARS = [INCIDENT_ID, "first_seen", "last_seen", "flows", "bytes", "max_score", "sum_score", "severity",
            "severity_level", "main_host", "n_hosts", "n_ports", "family", "family_confidence"]
_MEMBER_SCALARS = [INCIDENT_ID, RANK, SCORE, "unix_tstamp", "treceived", "sip", "dip", "sport", "dport", "proto",
                   "ipkt", "ibyt", "opkt", "obyt"]


def _clean(v):
    """JSON-safe: non-finite floats become null (Flask would write NaN, which is not JSON)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


@dataclass
class DayIncidents:
    key: tuple
    table: pa.Table  # incidents, most severe first (then first seen, id)
    frame: pd.DataFrame  # its scalar columns, for filters and sort orders
    hosts: pd.DataFrame  # (pos, ip): every host of every incident, by table position
    members: pa.Table  # member flows, in rank order
    mframe: pd.DataFrame
    summary: dict
    _by_rank: dict | None = None
    _held: tuple | None = None  # (rule ids, held mask over mframe, per-incident held counts)

    def by_rank(self) -> dict[int, str]:
        """rank in the day's list -> incident id (made once per cached day)."""
        if self._by_rank is None:
            r = self.mframe[RANK].to_numpy(dtype="float64", na_value=np.nan)
            ok = ~np.isnan(r)
            self._by_rank = dict(zip(r[ok].astype(np.int64).tolist(), self.mframe[INCIDENT_ID].to_numpy()[ok].tolist()))
        return self._by_rank

    def position(self, incident_id: str) -> int:
        hit = np.flatnonzero(self.frame[INCIDENT_ID].to_numpy() == incident_id)
        if not len(hit):
            raise NotFound(f"no incident {incident_id} on this day")
        return int(hit[0])

    def member_mask(self, incident_id: str) -> np.ndarray:
        return self.mframe[INCIDENT_ID].to_numpy() == incident_id


class Incidents:
    """The incidents of every scored day, read through the OA's Results (its storage and cache size)."""

    def __init__(self, results):
        self.results = results
        self.storage = results.storage
        self._days: dict[str, DayIncidents] = {}
        self._verdicts: tuple[tuple, list] = ((), [])
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------
    def _read(self, rel: str, what: str) -> pa.Table:
        tables = []
        for part in self.results._parts(rel):
            with self.storage.open(part) as f:
                try:
                    tables.append(pq.read_table(f))
                except (pa.ArrowException, ValueError, OSError) as err:
                    raise BadData(f"{part} is not a readable Parquet file of {what}: {_why(err)}") from None
        if not tables:
            raise BadData(f"{rel} has no part files")
        return pa.concat_tables(tables, promote_options="default")

    def day(self, day: str) -> DayIncidents | None:
        """The day's incidents: the batch run's, else the stream's as they stand after its last
        committed batch (None: neither wrote any, e.g. a day scored before incidents existed),
        re-read only when their files change."""
        p = flow_relative(day)
        listing = tuple((d, e.name, e.mtime_ms, e.size) for d in (p.incidents, p.incident_members) for e in self.storage.list(d))
        streamed = not any(x[0] == p.incidents for x in listing)
        if streamed:  # a batch run re-groups the whole day; until there is one, the stream's incidents
            listing = tuple((d, e.name, e.mtime_ms, e.size) for d in (p.stream_incidents, p.stream_incident_members)
                            for e in self.storage.list(d))
            if not listing:
                return None
            # the members' ranks come from the streamed list, which grows with every batch
            listing += tuple((p.stream_suspicious, e.name, e.mtime_ms, e.size) for e in self.storage.list(p.stream_suspicious))
        with self._lock:
            hit = self._days.get(day)
            if hit and hit.key == listing:
                return hit
        try:
            if streamed:
                got = self._streamed(day)
                if got is None:
                    return None
                t, m, summary = got
            else:
                t = self._read(p.incidents, "incidents")
                if "merged_into" in t.column_names:
                    t = t.filter(pc.is_null(t["merged_into"]))
                m = self._read(p.incident_members, "incident members")
                summary = {}
                if self.storage.stat(p.incidents_summary) is not None:
                    summary = _json_object(self.storage.read(p.incidents_summary), f"incidents_summary.json of {day}")
            t = t.sort_by([("severity", "descending"), ("first_seen", "ascending"), (INCIDENT_ID, "ascending")]).combine_chunks()
            m = m.sort_by([(RANK, "ascending"), ("alert_id", "ascending")]).combine_chunks()
            frame, mframe = t.select(_SCALARS).to_pandas(), m.select(_MEMBER_SCALARS).to_pandas()
            hosts = pd.DataFrame({"pos": pc.list_parent_indices(t["hosts"]).to_numpy(),
                                  "ip": pc.struct_field(pc.list_flatten(t["hosts"]), "ip").to_numpy(zero_copy_only=False)})
        except (KeyError, pa.ArrowException) as err:
            raise BadData(f"the incidents of {day} do not have incidents.py's columns: {_why(err)}") from None
        out = DayIncidents(listing, t, frame, hosts, m, mframe, summary)
        with self._lock:
            self._days.pop(day, None)
            self._days[day] = out  # newest last; the oldest go beyond the OA's cache size
            for d in list(self._days)[: max(0, len(self._days) - self.results._cache_days)]:
                del self._days[d]
        return out

    def _streamed(self, day: str) -> tuple[pa.Table, pa.Table, dict] | None:
        """The stream's incidents of a day (incidents.extend_stream): each incident's row from the
        latest committed batch that wrote it, merged ones left out; the members of every batch under
        the id of the incident that absorbed theirs; each member's rank from the day's streamed list
        (the stream's batches rank nothing). Only batches whose incidents and members are both
        committed count: a batch being written or redone after a crash shows once it is done."""
        p = flow_relative(day)
        done = {d.rsplit("/", 1)[-1] for d in self.results._committed_batch_dirs(p.stream_incident_members)}
        names = [d.rsplit("/", 1)[-1] for d in self.results._committed_batch_dirs(p.stream_incidents)]
        names = [n for n in names if n in done]
        if not names:
            return None
        t = pa.concat_tables([self._read(f"{p.stream_incidents}/{n}", "streamed incidents") for n in names],
                             promote_options="default")
        m = pa.concat_tables([self._read(f"{p.stream_incident_members}/{n}", "streamed incident members") for n in names],
                             promote_options="default")
        ids = t.select([INCIDENT_ID, "batch_id"]).to_pandas()
        latest = ids.sort_values("batch_id", ascending=False, kind="stable").drop_duplicates(INCIDENT_ID).index.to_numpy()
        t = t.take(pa.array(np.sort(latest), type=pa.int64()))
        into = {i: j for i, j in zip(t[INCIDENT_ID].to_pylist(), t["merged_into"].to_pylist()) if j is not None}

        def survivor(i):
            for _ in range(len(into) + 1):  # a chain of merges ends at a live incident
                if i not in into:
                    return i
                i = into[i]
            return i

        t = t.filter(pc.is_null(t["merged_into"]))
        m = m.set_column(m.column_names.index(INCIDENT_ID), INCIDENT_ID,
                         pa.array([survivor(i) for i in m[INCIDENT_ID].to_pylist()], type=pa.string()))
        m = m.set_column(m.column_names.index(RANK), RANK, pa.array(self._list_ranks(day, m), type=pa.int64()))
        f = t.select(["flows", "severity_level", "family"]).to_pandas()
        summary = {"incidents": len(f), "flows": int(f["flows"].sum()), "streamed": True,
                   "by_severity": {str(k): int(v) for k, v in f["severity_level"].value_counts().items()},
                   "by_family": {str(k): int(v) for k, v in f["family"].value_counts().items()}}
        return t, m, summary

    def _list_ranks(self, day: str, m: pa.Table) -> list:
        """Each member flow's rank in the day's streamed list, matched by the flow's fields (a
        flow repeated verbatim pairs with its copies in order); None where it is not listed."""
        text, ints = ["treceived", "sip", "dip", "proto"], ["sport", "dport", "ipkt", "ibyt", "opkt", "obyt"]
        keys = text + ints
        try:
            listed = self.results.table(day)
        except NotFound:
            return [None] * len(m)

        def keyed(df: pd.DataFrame) -> pd.DataFrame:
            # one spelling per value whatever pandas made of the column (an int column with a null is float)
            k = pd.DataFrame({**{c: df[c].astype("object").where(df[c].notna(), None).map(str) for c in text},
                              **{c: pd.to_numeric(df[c], errors="coerce").round().astype("Int64").astype(str) for c in ints}})
            k["_n"] = k.groupby(keys, sort=False).cumcount()
            return k

        mine = keyed(m.select(keys).to_pandas())
        theirs = keyed(listed[keys]).assign(**{RANK: listed[RANK].to_numpy()})
        got = mine.merge(theirs, on=[*keys, "_n"], how="left")[RANK]
        return [None if v != v else int(v) for v in got.to_numpy(dtype="float64")]

    def need(self, day: str) -> DayIncidents:
        inc = self.day(day)
        if inc is None:
            raise NotFound(f"{day} has no incidents (scored before incidents existed): use its flow list")
        return inc

    def held(self, day: str, inc: DayIncidents) -> tuple[np.ndarray, dict[str, int]]:
        """Members an allow-list rule in force covers now, and how many per incident. A rule
        added after the day's incidents were grouped (allowlist.reapply moves their alerts at once,
        `spot-ae incidents DAY` regroups them with Spark) must not leave its flows counted in an
        incident meanwhile: every answer leaves them out, an incident made only of them is not
        shown, and removing the rule brings them back. The same `allowlist.match` as the flow list."""
        rules = self.results.allowlist_rules()
        ids = tuple(r.id for r in rules)
        hit = inc._held
        if hit is not None and hit[0] == ids:
            return hit[1], hit[2]
        if rules and len(inc.mframe):
            mask = allowlist.match(self.results.match_frame(inc.mframe, day), rules).notna().to_numpy()
        else:
            mask = np.zeros(len(inc.mframe), dtype=bool)
        per = inc.mframe.loc[mask, INCIDENT_ID].value_counts()
        counts = {str(k): int(v) for k, v in per.items()}
        inc._held = (ids, mask, counts)
        return mask, counts

    def _gone(self, inc: DayIncidents, counts: dict[str, int]) -> np.ndarray:
        """Incidents (by table position) every member of which is held."""
        flows = inc.frame["flows"].to_numpy()
        held = inc.frame[INCIDENT_ID].map(counts).fillna(0).to_numpy()
        return (held > 0) & (held >= flows)

    def shown(self, day: str, inc: DayIncidents, incident_id: str) -> int:
        """The incident's table position; NotFound when it does not exist or an allow-list rule
        now holds every one of its flows."""
        pos = inc.position(incident_id)
        if self._gone(inc, self.held(day, inc)[1])[pos]:
            raise NotFound(f"incident {incident_id}: an allow-list rule now covers every one of its flows")
        return pos

    def _rows(self, day: str, inc: DayIncidents, pos: np.ndarray) -> list[dict]:
        rows = inc.table.take(pa.array(pos, type=pa.int64())).select(LIST_COLUMNS).to_pylist()
        verdicts = self.incident_verdicts(day)
        counts = self.held(day, inc)[1]
        for r in rows:
            r["ports"] = r["ports"][:5]
            r["verdict"] = verdicts.get(r[INCIDENT_ID])
            r["allowlisted_flows"] = counts.get(r[INCIDENT_ID], 0)
        return _clean(rows)

    # -- the verdict store, re-read only when its listing changes ----------------------------
    def _all_verdicts(self) -> list[dict]:
        key = tuple((e.name, e.mtime_ms) for e in self.storage.list(verdict_store.VERDICTS_DIR))
        with self._lock:
            if key and self._verdicts[0] == key:
                return self._verdicts[1]
        allv = self.results.all_verdicts()[0] if key else []
        with self._lock:
            self._verdicts = (key, allv)
        return allv

    def incident_verdicts(self, day: str) -> dict[str, dict]:
        """The newest verdict given on each incident of the day."""
        out: dict[str, dict] = {}
        for v in self._all_verdicts():
            iid = v.get(verdict_store.INCIDENT)
            if iid is None or v["day"] != day:
                continue
            o = out.get(iid)  # one verdict's records share their time; the smallest id names it (and its file)
            if o is None or v["when"] > o["when"] or (v["when"] == o["when"] and v["id"] < o["id"]):
                out[iid] = v
        return {k: {"sev": v["sev"], "severity": verdict_store.SEVERITIES[v["sev"]], "who": v["who"], "when": v["when"],
                    "expires": v["expires"], "id": v["id"], "family": v.get(verdict_store.FAMILY)} for k, v in out.items()}

    def flow_verdict_times(self, day: str) -> dict[tuple, str]:
        """When the newest verdict given on each flow of the day (not through an incident) was
        given, keyed like ml_feedback.csv's rows (tstart, srcIP, dstIP, sport, dport, ipkt, ibyt)."""
        out: dict[tuple, str] = {}
        for v in self._all_verdicts():
            if v["day"] != day or v.get(verdict_store.INCIDENT) is not None:
                continue
            k = tuple("" if x is None else str(x) for x in (v["tstart"], v["sip"], v["dip"], v["sport"], v["dport"], v["ipkt"], v["ibyt"]))
            out[k] = max(out.get(k, ""), v["when"])
        return out

    # -- answers ---------------------------------------------------------------------------
    def page(self, day: str, host: str | None, family: str | None, level: str | None, min_severity: int | None,
             sort: str, order: str, page: int, size: int) -> dict:
        """One page of the day's incidents; `available` false (and no rows) when it has none."""
        inc = self.day(day)
        if inc is None:
            return {"day": day, "available": False, "total": 0, "page": page, "size": size, "pages": 1, "sort": sort,
                    "order": order, "rows": [], "summary": {}, "unassigned": len(self.results.table(day))}
        f = inc.frame
        held, counts = self.held(day, inc)
        gone = self._gone(inc, counts)
        mask = ~gone
        if host is not None:
            on = np.zeros(len(f), dtype=bool)
            on[inc.hosts["pos"].to_numpy()[inc.hosts["ip"].to_numpy() == host]] = True
            mask &= on
        if family is not None:
            mask &= f["family"].to_numpy() == family
        if level is not None:
            mask &= f["severity_level"].to_numpy() == level
        if min_severity is not None:
            mask &= f["severity"].to_numpy() >= min_severity
        pos, meta = paged(f, mask, sort, order, page, size)
        s = inc.summary
        summary = {k: s.get(k) for k in ("incidents", "flows", "by_severity", "by_family", "gap_seconds", "family_model")}
        # grouped before an allow-list change: what the rules now hold, until the day is regrouped
        summary["allowlisted_flows"] = int(held.sum())
        summary["allowlisted_incidents"] = int(gone.sum())
        return {"day": day, "available": True, **meta, "rows": self._rows(day, inc, pos), "summary": summary,
                "unassigned": self.unassigned(day, inc)}

    def unassigned(self, day: str, inc: DayIncidents) -> int:
        """Suspicious flows of the day's list in no incident (allow-listed, or a low-risk verdict
        covered them when the incidents were made): the flow list shows them."""
        n = len(self.results.table(day))
        held = set(self._held_ranks(day, inc))
        return n - sum(1 for r in inc.by_rank() if 1 <= r <= n and r not in held)

    def _held_ranks(self, day: str, inc: DayIncidents) -> list[int]:
        mask = self.held(day, inc)[0]
        r = inc.mframe[RANK].to_numpy(dtype="float64", na_value=np.nan)[mask]
        return r[~np.isnan(r)].astype(np.int64).tolist()

    def of_ranks(self, day: str, ranks) -> list[str | None]:
        """The incident of each flow of the day's list (by rank), or None."""
        inc = self.day(day)
        if inc is None:
            return [None] * len(ranks)
        by_rank, held = inc.by_rank(), set(self._held_ranks(day, inc))
        return [None if x is None or int(x) in held else by_rank.get(int(x)) for x in ranks]

    def detail(self, day: str, incident_id: str) -> dict:
        """The incident with its timeline (score over time), hosts graph and verdict."""
        inc = self.need(day)
        pos = self.shown(day, inc, incident_id)
        row = inc.table.slice(pos, 1).drop_columns(["family_votes"]).to_pylist()[0]
        row["hosts"], row["peers"] = row["hosts"][:MAX_LISTED], row["peers"][:MAX_LISTED]
        held, counts = self.held(day, inc)
        row["allowlisted_flows"] = counts.get(incident_id, 0)
        m = inc.mframe[inc.member_mask(incident_id) & ~held]
        run = self.results._run_json(day)
        higher = bool(run.get("higher_is_suspicious", True))
        return _clean({"day": day, "incident": row, "verdict": self.incident_verdicts(day).get(incident_id),
                       "threshold": run.get("threshold") if isinstance(run.get("threshold"), (int, float)) else None,
                       "higher_is_suspicious": higher, "timeline": _timeline(m, higher), "graph": _graph(m, higher)})

    def flows(self, day: str, incident_id: str, sort: str, order: str, page: int, size: int) -> dict:
        """One page of the incident's member flows."""
        inc = self.need(day)
        self.shown(day, inc, incident_id)
        pos, meta = paged(inc.mframe, inc.member_mask(incident_id) & ~self.held(day, inc)[0], sort, order, page, size)
        rows = inc.members.take(pa.array(pos, type=pa.int64())).to_pylist()
        return _clean({"day": day, "incident_id": incident_id, **meta, "rows": rows})

    def add_verdict(self, day: str, incident_id: str, sev: int, who: str, expires=None, family: str | None = None) -> dict:
        """A verdict on every member flow of the incident, as one new file in the verdict store;
        `family`: the attack family the analyst names (`spot-ae train-family` learns from it)."""
        inc = self.need(day)
        row = inc.table.slice(self.shown(day, inc, incident_id), 1).select(["model_version"]).to_pylist()[0]
        mine = np.flatnonzero(inc.member_mask(incident_id) & ~self.held(day, inc)[0])  # rank order, held flows left out
        m = inc.members.take(pa.array(mine, type=pa.int64())).to_pylist()
        bad = [r for r in m if not (_is_ip(_text(r["sip"])) and _is_ip(_text(r["dip"]))) or r["dport"] is None]
        if bad:
            raise Unprocessable(f"{len(bad)} flow(s) of incident {incident_id} have no source/destination IP address or "
                                f"destination port: verdicts are kept per connection, so the incident cannot take one")
        flows = [{"sip": r["sip"], "dip": r["dip"], "dport": int(r["dport"]), "proto": _text(r["proto"]), "tstart": _text(r["treceived"]),
                  "sport": r["sport"], "ipkt": r["ipkt"], "ibyt": r["ibyt"]} for r in m]
        try:
            records = verdict_store.incident_verdicts(flows, incident_id=incident_id, sev=sev, who=who, day=day,
                                                      model_version=row["model_version"], expires=expires, family=family)
        except SpotAEError as e:
            raise Unprocessable(f"incident {incident_id} cannot take a verdict: {e}") from None
        head = min(records, key=lambda v: v["id"])
        self.storage.write_atomic(verdict_store.file_name(head), verdict_store.to_lines(records))  # one new file: all or nothing
        return {"day": day, "incident_id": incident_id, "sev": sev, "severity": verdict_store.SEVERITIES[sev],
                "verdict_id": head["id"], "connections": len(records), "flows": len(m), "expires": records[0]["expires"],
                "family": family}

    def host(self, day: str, ip: str) -> dict:
        """The host on the day (its row of the day's host ranking, or null) and across days."""
        hist = host_history(self.results, ip)
        today = next((d for d in hist["days"] if d["day"] == day), None)
        return _clean({"day": day, "ip": hist["ip"], "ranking": today, "history": hist})


def _timeline(m: pd.DataFrame, higher: bool) -> dict:
    """Score over time of the member flows: each flow up to MAX_POINTS, else BINS time bins
    (flows and worst score per bin); flows without a time are counted, not drawn."""
    t = pd.to_numeric(m["unix_tstamp"], errors="coerce")
    timed = m[t.notna().to_numpy()]
    t = t[t.notna()].to_numpy(dtype="float64")
    base = {"flows": int(len(m)), "untimed": int(len(m) - len(timed))}
    if len(timed) <= MAX_POINTS:
        order = np.argsort(t, kind="stable")
        pts = timed.iloc[order]
        return {**base, "binned": False, "points": [
            {"t": int(a), "score": _num(s), "rank": None if r != r else int(r), "sip": _text(si), "dip": _text(di)}
            for a, s, r, si, di in zip(t[order], pts[SCORE], pts[RANK].astype("float64"), pts["sip"], pts["dip"])]}
    lo, hi = float(t.min()), float(t.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1, BINS + 1)
    idx = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, BINS - 1)
    df = pd.DataFrame({"b": idx, "s": timed[SCORE].to_numpy(dtype="float64")})
    g = df.groupby("b")["s"].agg(["size", "max" if higher else "min"])
    return {**base, "binned": True, "bins": [
        {"t0": float(edges[b]), "t1": float(edges[b + 1]), "flows": int(row.iloc[0]), "score": _num(row.iloc[1])}
        for b, row in g.iterrows()]}


def _graph(m: pd.DataFrame, higher: bool) -> dict:
    """Sources -> targets of the member flows: the MAX_EDGES busiest pairs, each with its flows
    and worst score, and the hosts they name (with their flows as source and as target)."""
    pairs = m[m["sip"].notna() & m["dip"].notna()]
    g = pairs.groupby(["sip", "dip"], sort=False)[SCORE].agg(["size", "max" if higher else "min"]).reset_index()
    g.columns = ["source", "target", "flows", "score"]
    g = g.sort_values(["flows", "score", "source", "target"], ascending=[False, not higher, True, True], kind="stable")
    top = g.head(MAX_EDGES)
    nodes: dict[str, dict] = {}
    for r in top.itertuples(index=False):
        nodes.setdefault(r.source, {"id": r.source, "as_source": 0, "as_target": 0})["as_source"] += int(r.flows)
        nodes.setdefault(r.target, {"id": r.target, "as_source": 0, "as_target": 0})["as_target"] += int(r.flows)
    edges = [{"source": r.source, "target": r.target, "flows": int(r.flows), "score": _num(r.score)} for r in top.itertuples(index=False)]
    return {"nodes": list(nodes.values()), "edges": edges, "edges_total": int(len(g))}


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
