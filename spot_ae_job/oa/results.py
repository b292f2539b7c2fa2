"""Reading one day of ML results (and writing the analyst's verdicts) in Spot's layout.

Everything here takes a *validated* day (see validate.py) and builds storage paths itself, so no
user text ever becomes part of a path. The suspicious-connects list is parsed once per
(day, file mtime, size) and cached: a 100k-row day is then filtered and sorted in memory per
request instead of being re-read from HDFS.

Streamed results (spot_ae_job/stream.py) live beside a day's batch results, under
`stream/suspicious/batch=N/` (flagged flows) and `stream/all_scores/batch=N/`. A day is listed if
either exists. Until a batch run exists for the day, its suspicious list is the streamed flagged
flows (each row with the `model_version` that scored it), most suspicious first; a batch run
re-scores the whole day, so once it exists its list is the day's list (no flow twice). A streamed
batch counts only once Spark's `_SUCCESS` marker is in it, and each is parsed once.
"""
from __future__ import annotations

import csv
import datetime as dt
import io
import ipaddress
import json
import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from spot_ae_job import allowlist
from spot_ae_job import verdicts as verdict_store
from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import ALLOWLISTED, MODEL_VERSION, RANK, SCORE, SCORED_RESULTS, DayResults, flow_relative, is_day
from spot_ae_job.oa.ingest_summary import read_summary
from spot_ae_job.schema import ATTACK_FAMILIES, EXPLANATION_FIELDS, FEEDBACK_COLUMNS, FLOW_FIELDS, RESULT_COLUMNS
from spot_ae_job.storage import Entry, StorageError, write_lock

log = logging.getLogger("spot_ae_job.oa")

# floats as float64: the CSV text is the value (a float32 round trip would add noise digits)
_ARROW = {"string": pa.string(), "bigint": pa.int64(), "int": pa.int32(), "float": pa.float64(), "double": pa.float64()}
FLOW_ARROW_TYPES = {name: _ARROW[hive] for name, hive in FLOW_FIELDS}
RESULT_ARROW_TYPES = {c: (pa.float64() if c == SCORE else FLOW_ARROW_TYPES[c]) for c in RESULT_COLUMNS}
EXPLANATION_ARROW_TYPES = {name: _ARROW[hive] for name, hive in EXPLANATION_FIELDS}

# Columns of a connection's flows shown in the details view (all from all_scores/).
DETAIL_COLUMNS = [
    "treceived", "unix_tstamp", "tdur", "sip", "dip", "sport", "dport", "proto", "flag",
    "ipkt", "ibyt", "opkt", "obyt", SCORE, "suspicious", RANK,
]


class NotFound(Exception):
    """The day (or a file of it) does not exist."""


class BadData(Exception):
    """A results file exists but does not have Spot's layout."""


class Unprocessable(Exception):
    """The request is well formed but this flow cannot take it (e.g. a verdict on a flow without IPs)."""


def _why(e: BaseException) -> str:
    """One short line for the `unreadable` lists and error messages."""
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return " ".join(str(e).split())[:200] or type(e).__name__


def _json_object(data: bytes, what: str) -> dict:
    try:
        obj = json.loads(data)
    except RecursionError:
        raise BadData(f"{what} is nested too deeply") from None
    except ValueError as e:  # includes UnicodeDecodeError
        raise BadData(f"{what} is not valid JSON: {_why(e)}") from None
    if not isinstance(obj, dict):
        raise BadData(f"{what} is not a JSON object")
    return obj


def _text(v) -> str:
    return "" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else str(v)


def _opt_int(v) -> int | None:
    """An integer field of a results row, or None where the input had none (NaN after parsing)."""
    if v is None or v is pd.NA:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) else None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _verdict_record(line: str) -> dict:
    """One verdict line, checked enough that the in-force rule and the page cannot trip on it."""
    v = json.loads(line)
    if not isinstance(v, dict):
        raise ValueError("a verdict line is not a JSON object")
    missing = [k for k in verdict_store.FIELDS if k not in v]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if isinstance(v["sev"], bool) or v["sev"] not in verdict_store.SEVERITIES:
        raise ValueError(f"sev must be 1, 2 or 3, got {v['sev']!r}")
    for k in ("id", "when", "sip", "dip", "proto", "day"):
        if not isinstance(v[k], str):
            raise ValueError(f"{k} must be a string")
    if isinstance(v["dport"], bool) or not isinstance(v["dport"], int):
        raise ValueError("dport must be an integer")
    if v["model_version"] is not None and not isinstance(v["model_version"], str):
        raise ValueError("model_version must be a string or null")
    if v.get(verdict_store.INCIDENT) is not None and not isinstance(v[verdict_store.INCIDENT], str):
        raise ValueError("incident_id must be a string or absent")
    if v.get(verdict_store.FAMILY) is not None and v[verdict_store.FAMILY] not in ATTACK_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(ATTACK_FAMILIES)} or absent")
    verdict_store.parse_time(v["when"])  # ValueError if it is not a time
    if v["expires"] is not None:
        if not isinstance(v["expires"], str):
            raise ValueError("expires must be a time or null")
        verdict_store.parse_time(v["expires"])
    return v


@dataclass
class DayTable:
    key: tuple
    frame: pd.DataFrame  # RESULT_COLUMNS + rank, in file order (most suspicious first)


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return None if np.isnan(v) else float(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if v is pd.NA or v is None:
        return None
    if isinstance(v, float) and v != v:
        return None
    return v


def _scalar(v):
    """A run.json value shown as-is only if it is a plain value (a hand-edited file may hold anything)."""
    if isinstance(v, (str, int, float, bool)) or v is None:
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return None


def records(df: pd.DataFrame) -> list[dict]:
    cols = list(df.columns)
    return [{c: _jsonable(v) for c, v in zip(cols, row)} for row in df.itertuples(index=False, name=None)]


class Results:
    """The results of every scored day under `{huser}/flow/scored_results`, via a Storage backend."""

    def __init__(self, storage, cache_days: int = 4):
        self.storage = storage
        self._cache: OrderedDict[str, DayTable] = OrderedDict()
        self._cache_days = cache_days
        self._lock = threading.Lock()
        self._batches: dict[tuple[str, str, int], pd.DataFrame] = {}  # (day, batch dir, mtime) -> rows
        self._rules: tuple[tuple, list] = ((), [])  # (listing of the allow-list store, rules in force)
        self._marks: dict[str, tuple] = {}  # day -> (its cached table, rule ids, the rule covering each row)

    # -- days ------------------------------------------------------------------------------
    @staticmethod
    def _paths(day: str) -> DayResults:
        if not is_day(day):  # second line of defence: callers validate first
            raise ValueError(f"bad day {day!r}")
        return flow_relative(day)

    def days(self) -> list[dict]:
        """Days that have a results file, newest first, with run.json's counts when present.

        A day whose run.json (or directory) cannot be read is still listed, with its `problem`:
        one bad day must not hide the others."""
        out = []
        for e in self.storage.list(SCORED_RESULTS):
            if not (e.is_dir and is_day(e.name)):
                continue
            try:
                csv_entry = self.storage.stat(flow_relative(e.name).scores_csv)
                streamed = bool(self._stream_entries(e.name))
            except StorageError as err:
                out.append({"day": e.name, "problem": _why(err)})
                continue
            if csv_entry is None and not streamed:
                continue
            problem = None
            try:
                run = self._run_json(e.name) if csv_entry is not None else self._run_json(e.name, flow_relative(e.name).stream_run_json)
            except (BadData, StorageError) as err:
                run, problem = {}, _why(err)
            item = {
                "day": e.name,
                "model": _scalar(run.get("model", "ae" if streamed else None)),
                "flows_scored": _scalar(run.get("flows_scored")),
                "suspicious": _scalar(run.get("suspicious")),
                "threshold": _scalar(run.get("threshold")),
                "created": _scalar(run.get("created")),
                "streamed": streamed,
            }
            if problem:
                item["problem"] = problem
            out.append(item)
        return sorted(out, key=lambda d: d["day"], reverse=True)

    def has_day(self, day: str) -> bool:
        return self.storage.stat(self._paths(day).scores_csv) is not None \
            or bool(self._stream_entries(day))

    def _stream_entries(self, day: str) -> list[Entry]:
        return [e for e in self.storage.list(self._paths(day).stream_suspicious)
                if e.is_dir and e.name.startswith("batch=")]

    def _committed_batch_dirs(self, root: str) -> list[str]:
        """Relative paths of the streamed batch directories under `root` that Spark has committed."""
        return [f"{root}/{e.name}" for e in self.storage.list(root)
                if e.is_dir and e.name.startswith("batch=") and self.storage.stat(f"{root}/{e.name}/_SUCCESS") is not None]

    def _parts(self, rel_dir: str) -> list[str]:
        return [f"{rel_dir}/{e.name}" for e in self.storage.list(rel_dir)
                if not e.is_dir and e.name.endswith(".parquet") and not e.name.startswith((".", "_"))]

    def _streamed(self, day: str, entries: list[Entry]) -> pd.DataFrame | None:
        """The flagged flows of every committed streamed batch of the day (each parsed once)."""
        root = self._paths(day).stream_suspicious
        frames, keep = [], set()
        for e in entries:
            key = (day, e.name, e.mtime_ms)
            keep.add(key)
            hit = self._batches.get(key)
            if hit is None:
                if self.storage.stat(f"{root}/{e.name}/_SUCCESS") is None:
                    continue  # being written (or left by a crash that the stream will redo)
                tables = []
                for rel in self._parts(f"{root}/{e.name}"):
                    with self.storage.open(rel) as f:
                        try:
                            tables.append(pq.read_table(f, columns=[*RESULT_COLUMNS, MODEL_VERSION]))
                        except (pa.ArrowException, ValueError, OSError) as err:
                            raise BadData(f"{rel} is not a readable Parquet file of streamed results: {_why(err)}") from None
                cols = {c: pd.Series(dtype="float64" if c == SCORE else "object") for c in [*RESULT_COLUMNS, MODEL_VERSION]}
                hit = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(cols)
                with self._lock:
                    self._batches[key] = hit
            frames.append(hit)
        with self._lock:
            for k in [k for k in self._batches if k[0] == day and k not in keep]:
                del self._batches[k]
        if not frames:
            return None
        return pd.concat(frames, ignore_index=True)

    def _run_json(self, day: str, rel: str | None = None) -> dict:
        """The day's run.json (or the one at `rel`, e.g. the stream's); {} when there is none."""
        rel = rel or self._paths(day).run_json
        if self.storage.stat(rel) is None:
            return {}
        return _json_object(self.storage.read(rel), f"run.json of {day}")

    # -- suspicious connects -----------------------------------------------------------------
    def table(self, day: str) -> pd.DataFrame:
        rel = self._paths(day).scores_csv
        st = self.storage.stat(rel)
        entries = self._stream_entries(day) if st is None else []
        if st is None and not entries:
            raise NotFound(f"no results for {day}")
        key = (st.mtime_ms, st.size) if st else tuple((e.name, e.mtime_ms) for e in entries)
        with self._lock:
            hit = self._cache.get(day)
            if hit and hit.key == key:
                self._cache.move_to_end(day)
                return hit.frame
        if st is not None:  # a batch run re-scored the whole day: its list is the day's list
            frame = self._parse_results(day, self.storage.read(rel))
        else:
            frame = self._streamed_table(day, entries)
        with self._lock:
            self._cache[day] = DayTable(key, frame)
            self._cache.move_to_end(day)
            while len(self._cache) > self._cache_days:
                self._cache.popitem(last=False)
        return frame

    def _streamed_table(self, day: str, entries: list[Entry]) -> pd.DataFrame:
        """The streamed flagged flows of a day, most suspicious first (the stream scores with the
        autoencoder: higher = more suspicious), ranked 1..n."""
        streamed = self._streamed(day, entries)
        if streamed is None:
            return self._parse_results(day, ",".join(RESULT_COLUMNS).encode() + b"\n")
        df = streamed.sort_values(SCORE, ascending=False, kind="stable").reset_index(drop=True)
        df.insert(0, RANK, np.arange(1, len(df) + 1, dtype=np.int64))
        return df

    @staticmethod
    def _parse_results(day: str, data: bytes) -> pd.DataFrame:
        header = data.split(b"\n", 1)[0].decode("utf-8", "replace").strip().split(",")
        # Spot's columns first and unchanged; columns after them (explanations) are extras
        if header[: len(RESULT_COLUMNS)] != RESULT_COLUMNS:
            raise BadData(f"flow_results.csv of {day} does not have Spot's result columns (got {header[:5]}...)")
        types = {**RESULT_ARROW_TYPES, **{c: EXPLANATION_ARROW_TYPES.get(c, pa.string()) for c in header[len(RESULT_COLUMNS):]}}
        try:
            tbl = pacsv.read_csv(
                io.BytesIO(data),
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False),
            )
        except pa.ArrowException as e:
            raise BadData(f"flow_results.csv of {day} cannot be parsed: {_why(e)}") from None
        df = tbl.to_pandas()
        df.insert(0, RANK, np.arange(1, len(df) + 1, dtype=np.int64))
        return df

    # -- connection details ------------------------------------------------------------------
    def connection(self, day: str, sip: str, dip: str) -> tuple[list[dict], list[dict]]:
        """Every flow of the day between two IPs, both directions, from all_scores/ Parquet; and the
        part files that could not be read (each fails alone and is listed, never silently skipped)."""
        parts = self._parts(self._paths(day).all_scores)
        if not parts:  # no batch run: the streamed flows
            for d in self._committed_batch_dirs(self._paths(day).stream_all_scores):
                parts += self._parts(d)
        if not parts:
            raise NotFound(f"no all_scores for {day}")
        tables, unreadable = [], []
        for rel in parts:
            try:
                tables += self._connection_rows(rel, sip, dip)
            except (pa.ArrowException, ValueError, OSError, KeyError) as err:
                log.error("unreadable part file %s: %s", rel, err)
                unreadable.append({"file": rel, "reason": f"not a readable Parquet file of scores: {_why(err)}"})
        if not tables:
            return [], unreadable
        t = pa.concat_tables(tables, promote_options="default")
        df = t.to_pandas()
        df[ALLOWLISTED] = allowlist.match(self.match_frame(df, day), self.allowlist_rules()).to_numpy()
        if RANK in df:
            df[RANK] = df[RANK].astype("Int64")
        sort = [c for c in ("unix_tstamp", "treceived") if c in df]
        if sort:
            df = df.sort_values(sort, kind="stable")
        return records(df), unreadable

    def _connection_rows(self, rel: str, sip: str, dip: str) -> list[pa.Table]:
        out = []
        with self.storage.open(rel) as f:
            pf = pq.ParquetFile(f)
            cols = [c for c in [*DETAIL_COLUMNS, MODEL_VERSION] if c in pf.schema_arrow.names]
            # read the two IP columns first; the other columns only of row groups that match
            for i in range(pf.num_row_groups):
                ips = pf.read_row_group(i, columns=["sip", "dip"])
                s, d = ips["sip"], ips["dip"]
                mask = pc.or_(pc.and_(pc.equal(s, sip), pc.equal(d, dip)), pc.and_(pc.equal(s, dip), pc.equal(d, sip)))
                if pc.any(mask).as_py():
                    out.append(pf.read_row_group(i, columns=cols).filter(mask))
        return out

    # -- network view -----------------------------------------------------------------------
    def network(self, day: str, top: int) -> dict:
        """IPs of the top-N suspicious flows; one edge per IP pair, weighted by its best score."""
        table = self.table(day)
        df = table[self.allowlist_marks(day).isna().to_numpy()].head(top)  # allow-listed flows are not shown
        run = self._run_json(day)
        higher = run.get("higher_is_suspicious", True)
        g = df.groupby(["sip", "dip"], sort=False).agg(
            flows=(RANK, "size"),
            score=(SCORE, "max" if higher else "min"),
            best_rank=(RANK, "min"),
            ibyt=("ibyt", "sum"),
        ).reset_index()
        ips = pd.unique(pd.concat([g["sip"], g["dip"]], ignore_index=True))
        deg = pd.concat([g["sip"], g["dip"]]).value_counts()
        nodes = [{"id": ip, "degree": int(deg[ip]), "as_source": bool((g["sip"] == ip).any())} for ip in ips]
        edges = records(g.rename(columns={"sip": "source", "dip": "target"}))
        return {"day": day, "top": int(len(df)), "higher_is_suspicious": bool(higher), "nodes": nodes, "edges": edges}

    # -- model panel -------------------------------------------------------------------------
    def model(self, day: str) -> dict:
        if not self.has_day(day):
            raise NotFound(f"no results for {day}")
        run = self._run_json(day)
        if not run:
            if self._stream_entries(day):  # scored by the stream only so far: its run.json names the model
                t = self.table(day)
                versions = sorted(set(t[MODEL_VERSION].dropna())) if MODEL_VERSION in t else []
                srun = self._run_json(day, self._paths(day).stream_run_json)
                return {"model": "ae", "higher_is_suspicious": True, **srun, "day": day,
                        "model_version": versions[-1] if versions else srun.get("model_version"),
                        "model_versions": versions, "streamed": True, "suspicious": int(len(t))}
            raise NotFound(f"no run.json for {day}")
        keys = ["day", "model", "model_version", "threshold", "threshold_mode", "higher_is_suspicious",
                "flows_scored", "suspicious", "written", "rejected", "training_day", "created",
                "score_histogram", "labelled", "threshold_value", "threshold_fitted_on", "threshold_resolution", "drift"]
        return {k: run.get(k) for k in keys}

    # -- feedback ----------------------------------------------------------------------------
    def _feedback_rel(self, day: str) -> str:
        return self._paths(day).feedback_csv

    def feedback(self, day: str) -> list[dict]:
        rel = self._feedback_rel(day)
        if self.storage.stat(rel) is None:
            return []
        try:
            text = self.storage.read(rel).decode("utf-8")
            reader = csv.DictReader(io.StringIO(text, newline=""))
            rows = list(reader)
        except UnicodeDecodeError:
            raise BadData(f"feedback/ml_feedback.csv of {day} is not UTF-8 text") from None
        except csv.Error as e:
            raise BadData(f"feedback/ml_feedback.csv of {day} is not CSV: {_why(e)}") from None
        if rows and reader.fieldnames != FEEDBACK_COLUMNS or any(None in r or None in r.values() for r in rows):
            raise BadData(f"feedback/ml_feedback.csv of {day} does not have Spot's fields {','.join(FEEDBACK_COLUMNS)}")
        return rows

    @staticmethod
    def _flow_key(r: dict) -> tuple:
        return tuple(str(r[c]) for c in FEEDBACK_COLUMNS[1:])

    def add_feedback(self, day: str, rank: int, sev: int, who: str = "unknown", expires: dt.datetime | None = None) -> dict:
        """Record the verdict on the flow at `rank` of the day's list, in Spot's feedback fields,
        and as a verdict on its connection in the store that spans days (spot_ae_job/verdicts.py).

        The flow's fields come from the results file, never from the request, so a verdict always
        names a real scored flow. A new verdict on the same flow replaces the old one.

        The two writes belong together: everything is read and checked before either is made, the
        verdict file (a new file) is written first, and if the feedback file then cannot be
        written the verdict file is removed again, so the two never disagree after an error.
        """
        df = self.table(day)
        if rank < 1 or rank > len(df):
            raise NotFound(f"{day} has no suspicious flow ranked {rank} (1..{len(df)})")
        row = df.iloc[rank - 1]
        sip, dip, dport = _text(row["sip"]), _text(row["dip"]), _opt_int(row["dport"])
        if not (_is_ip(sip) and _is_ip(dip)) or dport is None:
            raise Unprocessable(
                f"the flow ranked {rank} on {day} has no source/destination IP address or destination port "
                f"(its input had none): verdicts are kept per connection (sip, dip, dport, proto), so it cannot take one")
        verdict = {
            "sev": int(sev), "tstart": _text(row["treceived"]), "srcIP": sip, "dstIP": dip,
            "sport": _opt_int(row["sport"]), "dport": dport, "ipkt": _opt_int(row["ipkt"]), "ibyt": _opt_int(row["ibyt"]),
        }
        model_version = self._run_json(day).get("model_version")
        try:
            record = verdict_store.new_verdict(
                sip=sip, dip=dip, dport=dport, proto=_text(row["proto"]), sev=int(sev), who=who, day=day,
                model_version=model_version if isinstance(model_version, str) else None, tstart=verdict["tstart"],
                sport=verdict["sport"], ipkt=verdict["ipkt"], ibyt=verdict["ibyt"], expires=expires,
            )
        except SpotAEError as e:
            raise Unprocessable(f"the flow ranked {rank} on {day} cannot take a verdict: {e}") from None
        csv_row = {k: ("" if v is None else v) for k, v in verdict.items()}
        rel = self._feedback_rel(day)
        with write_lock(f"{id(self.storage)}:{rel}"):
            kept = [r for r in self.feedback(day) if self._flow_key(r) != self._flow_key(csv_row)]
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=FEEDBACK_COLUMNS, lineterminator="\n", extrasaction="ignore")
            w.writeheader()
            w.writerows(kept + [csv_row])
            vrel = verdict_store.file_name(record)
            self.storage.write_atomic(vrel, verdict_store.to_line(record))  # a new file: never rewritten
            try:
                self.storage.write_atomic(rel, buf.getvalue().encode("utf-8"))
            except BaseException:
                try:
                    self.storage.delete(vrel)
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    log.critical("verdict %s was written but %s was not, and the verdict could not be removed: "
                                 "delete %s by hand", record["id"], rel, vrel)
                raise
        return {**verdict, "verdict_id": record["id"], "expires": record["expires"]}

    # -- the verdict store (spans days) ------------------------------------------------------
    def all_verdicts(self) -> tuple[list[dict], list[dict]]:
        """Every readable verdict record, and the files that are not (each fails alone, listed)."""
        out, unreadable = [], []
        for e in self.storage.list(verdict_store.VERDICTS_DIR):
            if e.is_dir or not e.name.endswith(".json") or e.name.startswith((".", "_")):
                continue
            rel = f"{verdict_store.VERDICTS_DIR}/{e.name}"
            try:
                lines = self.storage.read(rel).decode("utf-8").splitlines()
                out += [_verdict_record(line) for line in lines if line.strip()]
            except (ValueError, RecursionError, StorageError) as err:  # UnicodeDecodeError is a ValueError
                unreadable.append({"file": rel, "reason": _why(err)})
        return out, unreadable

    def _alert_counts(self, key: str) -> tuple[dict[str, list[dict]], list[dict]]:
        """id -> [{day, n, model_version, created}] from the `key` map (id -> alerts) of every
        day's alerts_summary.json, and the summaries that cannot be read (each listed, the rest kept)."""
        out: dict[str, list[dict]] = {}
        unreadable = []
        for e in self.storage.list(SCORED_RESULTS):
            if not (e.is_dir and is_day(e.name)):
                continue
            rel = flow_relative(e.name).alerts_summary
            try:
                if self.storage.stat(rel) is None:
                    continue
                summ = _json_object(self.storage.read(rel), f"alerts_summary.json of {e.name}")
                per = summ.get(key) or {}
                if not isinstance(per, dict):
                    raise BadData(f"{key} is not an object")
                counts = {str(i): int(n) for i, n in per.items()}
            except (BadData, StorageError, ValueError, TypeError) as err:
                unreadable.append({"file": rel, "reason": _why(err)})
                continue
            for i, n in counts.items():
                out.setdefault(i, []).append({"day": e.name, "n": n, "model_version": _scalar(summ.get("model_version")),
                                              "created": _scalar(summ.get("created"))})
        return out, unreadable

    def verdicts_overview(self, now: dt.datetime | None = None) -> dict:
        """Every verdict with what it changed: whether it is in force, and the alerts it
        suppressed in each run (from each day's alerts_summary.json); precision per model.
        Files that cannot be read are listed under `unreadable` and leave the rest alone."""
        allv, unreadable = self.all_verdicts()
        live = {v["id"] for v in verdict_store.in_force(allv, now)}
        per_run, bad = self._alert_counts("suppressed_by_verdict")
        unreadable += bad
        suppressed = {vid: [{"day": r["day"], "model_version": r["model_version"], "created": r["created"], "suppressed": r["n"]}
                            for r in runs] for vid, runs in per_run.items()}
        rows = []
        for v in sorted(allv, key=lambda v: (v["when"], v["id"]), reverse=True):
            runs = suppressed.get(v["id"], [])
            rows.append({**v, "severity": verdict_store.SEVERITIES.get(v["sev"]), "in_force": v["id"] in live,
                         "suppressed_alerts": sum(r["suppressed"] for r in runs), "suppressed_in": runs,
                         "in_training": v["id"] in live and v["sev"] == 3})
        return {"verdicts": rows, "precision": verdict_store.precision_by_model(allv), "unreadable": unreadable}

    # -- allow-list (allowlist.py): computed from the rules in force on every read ------------
    def allowlist_store(self) -> allowlist.Store:
        return allowlist.Store(self.storage)

    def allowlist_rules(self) -> list:
        """The rules in force, re-read only when the store's listing changes."""
        key = tuple((sub, e.name, e.mtime_ms) for sub in (allowlist.RULES, allowlist.REMOVED) for e in self.storage.list(sub))
        with self._lock:
            if self._rules[0] == key and key:
                return self._rules[1]
        rules = self.allowlist_store().in_force() if key else []
        with self._lock:
            self._rules = (key, rules)
        return rules

    @staticmethod
    def match_frame(df: pd.DataFrame, day: str) -> pd.DataFrame:
        """allowlist.MATCH_COLUMNS of result rows: the flow's start from `unix_tstamp`, else from
        Spot's tryear..trsec fields (UTC), else the day's start."""
        if "unix_tstamp" in df:
            t = pd.to_numeric(df["unix_tstamp"], errors="coerce")
        else:
            parts = {k: pd.to_numeric(df[c], errors="coerce") for k, c in (("year", "tryear"), ("month", "trmonth"), ("day", "trday"),
                                                                          ("hour", "trhour"), ("minute", "trminute"), ("second", "trsec"))}
            ts = pd.to_datetime(pd.DataFrame(parts), errors="coerce", utc=True)
            t = (ts - pd.Timestamp(0, tz="UTC")).dt.total_seconds()  # NaT -> NaN
        t = t.fillna(allowlist.day_start(day))
        return pd.DataFrame({"sip": df["sip"], "dip": df["dip"], "sport": df["sport"], "dport": df["dport"],
                             "proto": df["proto"], "time": t})

    def allowlist_marks(self, day: str) -> pd.Series:
        """The rule covering each row of `table(day)` (None: not allow-listed), cached per
        (table, rules) so a page request does not match the whole day again."""
        table, rules = self.table(day), self.allowlist_rules()
        ids = tuple(r.id for r in rules)
        hit = self._marks.get(day)
        if hit and hit[0] is table and hit[1] == ids:
            return hit[2]
        marks = allowlist.match(self.match_frame(table, day), rules)
        with self._lock:
            self._marks[day] = (table, ids, marks)  # the frame itself, so a new frame never reuses old marks
            for d in [d for d in self._marks if d not in self._cache]:
                del self._marks[d]
        return marks

    def allowlist_hidden(self, day: str) -> list[dict]:
        """Per rule: how many of the day's suspicious flows it hides, and why (for the page)."""
        counts = self.allowlist_marks(day).value_counts()
        by_id = {r.id: r for r in self.allowlist_rules()}
        return [{"id": rid, "hidden": int(n), "why": by_id[rid].why, "who": by_id[rid].who, "rule": by_id[rid].describe()}
                for rid, n in counts.items() if rid in by_id]

    def allowlist_overview(self) -> dict:
        """Every rule (removed ones too) with the alerts it holds now on each day, and the audit."""
        store = self.allowlist_store()
        rules, removed, unreadable = store.all_rules()
        per_run, bad = self._alert_counts("allowlisted_by_rule")
        unreadable += bad
        held = {rid: [{"day": r["day"], "held": r["n"]} for r in runs] for rid, runs in per_run.items()}
        rows = [{**r.to_json(), "describe": r.describe(), "in_force": r.id not in removed, "removed": removed.get(r.id),
                 "held_alerts": sum(x["held"] for x in held.get(r.id, [])), "held_in": held.get(r.id, [])}
                for r in sorted(rules, key=lambda r: (r.when, r.id), reverse=True)]
        return {"rules": rows, "audit": store.audit(), "unreadable": unreadable}

    # -- ingest summary ----------------------------------------------------------------------
    def ingest_summary(self) -> dict | None:
        return read_summary(self.storage)


__all__ = ["Results", "NotFound", "BadData", "Unprocessable", "StorageError", "Entry", "records", "DETAIL_COLUMNS", "RANK", "SCORE"]
