"""Closed nfcapd files -> Parquet in Spot's flow table, exactly once, with quarantine and retry.

One file's journey (`ingest_file`):
1. its tag `nf-<sha256 of its bytes>` names everything it produces, so a re-run produces the
   same names;
2. nfdump decodes it (nfdump.py); a bad file raises NfdumpFileError and is quarantined;
3. its flows are split by each flow's own hour and committed as
   `{huser}/flow/hive/y=/m=/d=/h=/<tag>.parquet`; row rejects go to
   `{huser}/flow/quarantine/nfdump/<tag>.parquet`; the ingest summary gets `<tag>.csv` rows;
4. last, the ledger entry `{huser}/flow/ingest_state/<tag>.json` is committed: the file is done.
Every commit is write-temporary-then-rename (`Storage.put`, spot_ae_job/storage.py) and skips a name that already exists, so
a crash anywhere before step 4 makes the next run redo the same names (no duplicate, no loss)
and a file whose ledger entry exists is skipped. The local file leaves the spool only after 4.

`Watcher` polls the collector's directory for closed files (nfcapd renames `nfcapd.current.*`
to `nfcapd.YYYYMMDDhhmm` when it rotates), decodes several at once in worker processes (nfdump
decodes are the bottleneck and each file is one single-threaded nfdump) while threads commit the
files already decoded (`Pipeline`: HDFS round trips are waiting, not CPU), moves corrupt files to
the quarantine directory with a `.reason` file, and keeps a file in place when HDFS stays down
past the bounded retries: it is simply tried again on a later pass.

Zeek conn logs (zeek.py) take the same path from a second directory (`zeek_dir`): rotated logs
(`conn.<anything>.log[.gz]`, never the live `conn.log`) once they have not changed for
`settle` seconds, tagged `zeek-<sha256 of the log's text>`, their row rejects in
`{huser}/flow/quarantine/zeek/`.
"""
from __future__ import annotations

import concurrent.futures as cf
import datetime
import hashlib
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from spot_ae_job.errors import SpotAEError
from spot_ae_job.ingest import summary, zeek
from spot_ae_job.ingest.nfdump import Decoded, NfdumpFileError, decode_csv, decode_file
from spot_ae_job.ingest.replay import PcapError, pcap_to_nfcapd
from spot_ae_job.layout import Layout
from spot_ae_job.storage import PATIENT, Retry, Storage, StorageError, open_storage

log = logging.getLogger("spot_ae.ingest")
CLOSED_NFCAPD = re.compile(r"^nfcapd\.[0-9]{12}([0-9]{2})?$")
# A log Zeek (or zeekctl) has rotated: conn.2024-04-19-00-00-00.log, conn.00:00:00-01:00:00.log.gz.
# The live conn.log does not match: Zeek is still writing it.
CLOSED_ZEEK = re.compile(r"^conn\..+\.log(\.gz)?$")


def file_tag(path: str | os.PathLike, prefix: str = "nf") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"{prefix}-{h.hexdigest()[:24]}"


def ledger_uri(huser: str, tag: str) -> str:
    return f"{Layout(huser).ingest_state}/{tag}.json"


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy")
    return buf.getvalue()


def split_by_hour(flows: pa.Table) -> list[tuple[tuple[int, int, int, int], pa.Table]]:
    """[((y, m, d, h), rows of that hour)], from each flow's own timestamp (UTC epoch seconds,
    from which the tr* columns are derived). A file of one hour, the usual case for a rotated
    nfcapd file, is returned whole: no copy."""
    if flows.num_rows == 0:
        return []
    hour = pc.divide(flows["unix_tstamp"], 3600)  # integer division; timestamps are >= 2000
    hours = sorted(pc.unique(hour).to_pylist())

    def ymdh(k: int) -> tuple[int, int, int, int]:
        t = datetime.datetime.fromtimestamp(k * 3600, datetime.timezone.utc)
        return t.year, t.month, t.day, t.hour

    if len(hours) == 1:
        return [(ymdh(hours[0]), flows)]
    return [(ymdh(k), flows.filter(pc.equal(hour, k))) for k in hours]


@dataclass
class Result:
    source: str
    tag: str
    status: str  # "ingested" | "already-ingested" | "quarantined"
    flows: int = 0
    rejected: int = 0
    nfdump_flows: int = 0
    partitions: int = 0
    reason: str = ""
    reject_reasons: dict | None = None


@dataclass
class Prepared:
    """A decoded file, encoded and ready to commit: every output as (uri, bytes), the ledger
    entry last. What a decode worker hands to a commit thread (small: Parquet, a few MB)."""
    result: Result
    outputs: list[tuple[str, bytes]]


def prepare_decoded(huser: str, dec: Decoded, tag: str, source_kind: str, source_name: str) -> Prepared:
    """Step 3's outputs and step 4's ledger entry for a decoded file, as bytes (no I/O)."""
    layout = Layout(huser)
    table = layout.flow_table
    parts = split_by_hour(dec.flows)
    outputs = [(f"{table}/y={y}/m={m}/d={d}/h={h}/{tag}.parquet", parquet_bytes(rows)) for (y, m, d, h), rows in parts]
    reasons = {}
    if dec.rejects.num_rows:
        reader = "zeek" if source_kind == "zeek" else "nfdump"
        outputs.append((f"{layout.quarantine(reader)}/{tag}.parquet", parquet_bytes(dec.rejects)))
        counts = dec.rejects.group_by("reject_reason").aggregate([("reject_reason", "count")])
        reasons = {r["reject_reason"]: r["reject_reason_count"] for r in counts.to_pylist()}
    outputs += summary.summary_files(huser, tag, summary.hourly_rows(dec.flows, source_kind, source_name))
    res = Result(source_name, tag, "ingested", dec.flows.num_rows, dec.rejects.num_rows, dec.nfdump_flows,
                 len(parts), reject_reasons=reasons)
    record = {**res.__dict__, "source_kind": source_kind, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "hours": [f"y={y}/m={m}/d={d}/h={h}" for (y, m, d, h), _ in parts]}
    outputs.append((ledger_uri(huser, tag), json.dumps(record, indent=1).encode()))
    return Prepared(res, outputs)


def commit(store: Storage, prepared: Prepared) -> Result:
    """Steps 3-4: every output, then the ledger entry (in that order: the ledger is the commit point)."""
    for uri, data in prepared.outputs:
        store.put(uri, data)
    return prepared.result


def commit_decoded(store: Storage, dec: Decoded, tag: str, source_kind: str, source_name: str) -> Result:
    """Steps 3-4 above for an already decoded file."""
    return commit(store, prepare_decoded(store.huser, dec, tag, source_kind, source_name))


def _already(store: Storage, tag: str, name: str) -> Result | None:
    """The ledger's record of `tag` if that file was ingested before."""
    if not store.exists(ledger_uri(store.huser, tag)):
        return None
    done = json.loads(store.read(ledger_uri(store.huser, tag)))
    return Result(name, tag, "already-ingested", done.get("flows", 0), done.get("rejected", 0),
                  done.get("nfdump_flows", 0), done.get("partitions", 0))


def prepare_file(store: Storage, path: str | os.PathLike, *, bidirectional: bool = False, source_kind: str = "nfcapd",
                 tag: str | None = None, source_name: str | None = None) -> Prepared | Result:
    """Steps 1-2 of one nfcapd file: the ledger's Result if it was ingested before, else its
    Prepared outputs. Raises NfdumpFileError for a bad file."""
    tag = tag or file_tag(path)
    name = source_name or Path(path).name
    return _already(store, tag, name) or prepare_decoded(store.huser, decode_file(path, bidirectional=bidirectional),
                                                         tag, source_kind, name)


def ingest_file(store: Storage, path: str | os.PathLike, **kw) -> Result:
    """One nfcapd file into the flow table exactly once. Raises NfdumpFileError for a bad file and
    StorageError when HDFS cannot take it now (nothing is lost: retry later)."""
    out = prepare_file(store, path, **kw)
    return commit(store, out) if isinstance(out, Prepared) else out


# -- the spool watcher -----------------------------------------------------------------------

@dataclass
class StoreConfig:
    """Picklable recipe for a Storage, so worker processes open their own connections."""
    huser: str
    webhdfs: str | None = None
    user: str | None = None
    retry: Retry = PATIENT

    def open(self) -> Storage:
        return open_storage(self.huser, self.webhdfs, self.user, self.retry)


def prepare_nfdump_csv(store: Storage, path: str | os.PathLike) -> Prepared | Result:
    """A saved `nfdump -o csv` file through the same commit path (no nfdump run needed)."""
    tag = file_tag(path, "nfcsv")
    name = Path(path).name
    return _already(store, tag, name) or prepare_decoded(store.huser, decode_csv(path), tag, "nfdump-csv", name)


def prepare_zeek(store: Storage, path: str | os.PathLike) -> Prepared | Result:
    """A Zeek conn log through the same commit path. Its tag hashes the log's text, so the same
    log gzipped or not is one source. Raises ZeekFileError for a file that is no conn log."""
    text = zeek.read_text(path)
    tag = zeek.content_tag(text)
    name = Path(path).name
    return _already(store, tag, name) or prepare_decoded(store.huser, zeek.decode_text(text, name), tag, "zeek", name)


def ingest_pcap(store: Storage, path: str | os.PathLike) -> Result:
    """pcap -> nfpcapd -> nfcapd files -> the nfcapd path with -B (bidirectional records).
    Tags derive from the capture's bytes and nfpcapd's deterministic file names."""
    ptag = file_tag(path, "pcap")
    total = Result(Path(path).name, ptag, "already-ingested")
    with tempfile.TemporaryDirectory(prefix="spot-ae-nfpcapd-") as tmp:
        for nf in pcap_to_nfcapd(path, tmp):
            r = ingest_file(store, nf, bidirectional=True, source_kind="pcap", tag=f"{ptag}-{nf.name.split('.')[-1]}",
                            source_name=Path(path).name)
            if r.status == "ingested":
                total.status = "ingested"
            total.flows += r.flows
            total.rejected += r.rejected
            total.nfdump_flows += r.nfdump_flows
            total.partitions += r.partitions
    return total


def _decode(cfg: StoreConfig, path: str, bidirectional: bool, kind: str = "nfcapd") -> Prepared | Result:
    """A decode worker's task: a file -> its Prepared outputs (committed by the parent's threads),
    or a final Result (already ingested, quarantined; a pcap, whose several nfcapd files the
    worker commits itself)."""
    try:
        store = cfg.open()
        if kind == "pcap":
            return ingest_pcap(store, path)
        if kind == "nfdump-csv":
            return prepare_nfdump_csv(store, path)
        if kind == "zeek":
            return prepare_zeek(store, path)
        return prepare_file(store, path, bidirectional=bidirectional)
    except (NfdumpFileError, PcapError, zeek.ZeekFileError) as e:
        return Result(Path(path).name, "", "quarantined", reason=str(e))


def worker_pool(workers: int) -> cf.ProcessPoolExecutor:
    """Decode workers forked from a server process that imported this module (pyarrow, the
    decode path) and the main module once, so a worker starts in milliseconds instead of ~0.5 s
    of CPU for its imports. Not plain fork: the parent may run threads (a forked copy of a lock
    held by another thread deadlocks); not spawn: every worker would import everything again."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__])
    return cf.ProcessPoolExecutor(workers, mp_context=ctx)


class Pipeline:
    """Files through decode (one worker process per core: nfdump and Arrow are CPU) and commit
    (threads in this process: HDFS round trips are waiting), so no core idles while a file's
    outputs travel to HDFS and the next file decodes meanwhile. At most `2 * workers` files are
    in flight, which bounds the encoded outputs held here when HDFS is slow."""

    def __init__(self, cfg: StoreConfig, workers: int | None = None):
        self.cfg = cfg
        self.workers = workers or max(1, os.cpu_count() or 1)

    def __enter__(self) -> "Pipeline":
        self.store = self.cfg.open()
        self._decoders = worker_pool(self.workers)
        self._committers = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="commit")
        return self

    def __exit__(self, *exc) -> None:
        self._committers.shutdown()
        self._decoders.shutdown()

    def run(self, paths: list[Path], bidirectional: bool = False, kind: str = "nfcapd"):
        """Yield (path, Result), or (path, the exception) when HDFS could not take that file now
        (StorageError/SpotAEError/OSError after the bounded retries), in the order files finish."""
        todo = iter(paths)
        pending: dict[cf.Future, Path] = {}

        def refill():
            while len(pending) < 2 * self.workers:
                p = next(todo, None)
                if p is None:
                    return
                pending[self._decoders.submit(_decode, self.cfg, str(p), bidirectional, kind)] = p

        refill()
        while pending:
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                path = pending.pop(fut)
                try:
                    out = fut.result()
                except (StorageError, SpotAEError, OSError) as e:
                    yield path, e
                    continue
                if isinstance(out, Prepared):
                    pending[self._committers.submit(commit, self.store, out)] = path
                else:
                    yield path, out
            refill()


def quarantine(path: Path, qdir: Path, reason: str, move: bool = True) -> Path:
    """Move (or copy) a bad input file into `qdir` with a `.reason` file beside it."""
    qdir.mkdir(parents=True, exist_ok=True)
    dst = qdir / path.name
    if dst.exists():
        dst = qdir / f"{path.name}.{int(time.time())}"
    (shutil.move if move else shutil.copy2)(str(path), dst)
    dst.with_name(dst.name + ".reason").write_text(reason + "\n")
    log.error("QUARANTINED %s -> %s: %s", path, dst, reason)
    return dst


class Watcher:
    """Ingest every closed nfcapd file that appears in `incoming` and every rotated Zeek conn log
    in `zeek_dir` (default SPOOL/zeek); runs until `stop()`."""

    def __init__(self, cfg: StoreConfig, spool: str | os.PathLike, workers: int | None = None,
                 poll: float = 2.0, keep_done_hours: float = 24.0, bidirectional: bool = False,
                 zeek_dir: str | os.PathLike | None = None, settle: float = 30.0):
        self.cfg = cfg
        self.spool = Path(spool)
        self.incoming = self.spool / "nfcapd"
        self.zeek_dir = Path(zeek_dir) if zeek_dir else self.spool / "zeek"
        self.settle = settle  # seconds a Zeek log must be unchanged: a copy or gzip still being written is not read
        self.done_dir = self.spool / "done"
        self.quarantine_dir = self.spool / "quarantine"
        for d in (self.incoming, self.zeek_dir, self.done_dir, self.quarantine_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.poll = poll
        self.keep_done = keep_done_hours * 3600
        self.bidirectional = bidirectional
        self._stop = False
        self.backoff = 0.0
        self.stats = {"ingested": 0, "already-ingested": 0, "quarantined": 0, "retry-later": 0, "flows": 0}

    def closed_files(self) -> list[Path]:
        return sorted(p for p in self.incoming.rglob("nfcapd.*") if p.is_file() and CLOSED_NFCAPD.match(p.name))

    def closed_zeek_files(self) -> list[Path]:
        cutoff = time.time() - self.settle
        return sorted(p for p in self.zeek_dir.rglob("conn.*") if p.is_file() and CLOSED_ZEEK.match(p.name)
                      and p.stat().st_mtime <= cutoff)

    def stop(self) -> None:
        self._stop = True

    def _done_name(self, path: Path) -> Path:
        """Where an ingested file goes: done/NAME, or done/zeek/RELATIVE PATH for a Zeek log
        (zeekctl's names repeat every day, in dated folders)."""
        if path.is_relative_to(self.zeek_dir):
            dst = self.done_dir / "zeek" / path.relative_to(self.zeek_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            return dst
        return self.done_dir / path.name

    def _finish(self, path: Path, res: Result) -> None:
        if res.status == "quarantined":
            quarantine(path, self.quarantine_dir, res.reason)
        else:
            log.info("%s %s: %d flows, %d rejected, %d hour partitions (%s)", res.status, path.name, res.flows,
                     res.rejected, res.partitions, res.tag)
            shutil.move(str(path), self._done_name(path))
            self.stats["flows"] += res.flows
        self.stats[res.status] += 1

    def run_once(self, pipeline: Pipeline) -> int:
        """Ingest every closed file (nfcapd, then Zeek), wait for them; returns how many were settled."""
        nfcapd, zeek_logs = self.closed_files(), self.closed_zeek_files()
        files = nfcapd + zeek_logs
        if not files:
            return 0
        settled = 0
        both = itertools.chain(pipeline.run(nfcapd, self.bidirectional), pipeline.run(zeek_logs, kind="zeek"))
        for path, res in both:
            if isinstance(res, Exception):  # HDFS down beyond retries: keep the file
                self.stats["retry-later"] += 1
                log.warning("HDFS not taking %s now (%s); it stays in %s and is retried", path.name, res, self.incoming)
                continue
            self._finish(path, res)
            settled += 1
        self.backoff = 0.0 if settled == len(files) else min(max(self.backoff * 2, self.poll), 60.0)
        return settled

    def prune_done(self) -> None:
        cutoff = time.time() - self.keep_done
        for p in self.done_dir.rglob("*"):  # (Zeek logs keep their folders under done/zeek/)
            if p.is_file() and p.stat().st_mtime < cutoff:
                p.unlink()

    def run(self, until_idle: bool = False) -> dict:
        with Pipeline(self.cfg, self.workers) as pipeline:
            while not self._stop:
                n = self.run_once(pipeline)
                self.prune_done()
                if until_idle and n == 0 and not self.closed_files() and not self.closed_zeek_files():
                    break
                if n == 0 or self.backoff:
                    time.sleep(self.backoff or self.poll)
        return self.stats


def ingest_paths(cfg: StoreConfig, paths: list[Path], quarantine_dir: Path, workers: int | None = None,
                 bidirectional: bool = False, kind: str = "nfcapd") -> list[Result]:
    """Offline: nfcapd files (or pcaps, nfdump CSVs, Zeek logs: `kind`) through the same path; bad
    ones are COPIED to quarantine (they are the user's files), HDFS failures raise after the
    bounded retries."""
    results = {}
    with Pipeline(cfg, workers) as pipeline:
        for path, res in pipeline.run(paths, bidirectional, kind):
            if isinstance(res, Exception):
                raise res
            if res.status == "quarantined":
                quarantine(Path(path), quarantine_dir, res.reason, move=False)
            results[path] = res
    return [results[p] for p in paths]
