"""`spot-ae ingest ...`: the collector + watcher, offline loads, replays and the summary.

  watch        nfcapd on UDP (NetFlow v5/v9/IPFIX) + the watcher that lands closed files on HDFS
  files        nfcapd files or directories of them, through the same path
  pcap         pcap files via nfpcapd, through the same path (bidirectional records)
  csv          saved `nfdump -o csv` files; CIC-IDS2018 CSVs are handed to `spot-ae load-csv`
  zeek         Zeek conn logs (TSV or JSON lines, plain or gzip) or directories of them
  replay-csv   CIC-IDS2018 rows -> IPFIX / NetFlow v9 packets to a collector
  replay-pcap  pcaps -> flows (nfpcapd) -> IPFIX / NetFlow v9 packets to a collector
  replay-exporter  raw exporter datagrams (one UDP payload per file) to a collector
  summary      flows per day and hour from the ingest summary
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

from spot_ae_job.errors import SpotAEError, run_command
from spot_ae_job.ingest import replay, summary
from spot_ae_job.ingest.collector import Collector, parse_listen
from spot_ae_job.ingest.watcher import StoreConfig, Watcher, ingest_paths
from spot_ae_job.layout import Day
from spot_ae_job.storage import to_uri

log = logging.getLogger("spot_ae.ingest")


def _default_huser() -> str:
    return os.environ.get("SPOT_AE_HUSER") or "file://" + os.path.abspath("var/spot")


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--huser", default=_default_huser(),
                   help="Spot's user root: hdfs://namenode:8020/user/spot or file:///abs/dir (default $SPOT_AE_HUSER or ./var/spot)")
    p.add_argument("--webhdfs", default=os.environ.get("SPOT_AE_WEBHDFS"),
                   help="NameNode HTTP address for hdfs:// roots (default http://<namenode>:9870)")
    p.add_argument("--hdfs-user", default=os.environ.get("HADOOP_USER_NAME", "spot"), help="HDFS user to write as")
    p.add_argument("--workers", type=int, default=None, help="parallel nfdump decodes (default: one per core)")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spot-ae ingest", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 1)[1])
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("watch", help="run the collector; land each closed nfcapd file and rotated Zeek conn log on HDFS")
    _store_args(p)
    p.add_argument("--listen", default="0.0.0.0:2055", help="UDP HOST:PORT for NetFlow/IPFIX (default 0.0.0.0:2055)")
    p.add_argument("--interval", type=int, default=60, help="seconds per nfcapd file (default 60)")
    p.add_argument("--spool", default="/var/spool/spot-ae", help="local spool: nfcapd/, done/, quarantine/")
    p.add_argument("--no-collector", action="store_true", help="only watch SPOOL/nfcapd (files put there by others)")
    p.add_argument("--zeek-dir", default=None,
                   help="where rotated Zeek conn logs (conn.*.log[.gz]) arrive (default SPOOL/zeek); ingested ones "
                        "move to SPOOL/done/zeek/")
    p.add_argument("--once", action="store_true", help="ingest what is in the spool now, then exit")
    p.add_argument("--keep-done-hours", type=float, default=24.0, help="keep ingested nfcapd files this long")

    for name, what in (("files", "nfcapd files or directories"), ("pcap", "pcap files"), ("csv", "CSV files"),
                       ("zeek", "Zeek conn logs or directories (conn* files in them)")):
        p = sub.add_parser(name, help=f"ingest {what} through the watcher's path")
        _store_args(p)
        p.add_argument("paths", nargs="+")
        p.add_argument("--quarantine", default="quarantine", help="directory for copies of bad input files")
        if name == "csv":
            p.add_argument("--day", help="YYYYMMDD for CIC-IDS2018 files without a Timestamp column")
            p.add_argument("--master", default=os.environ.get("SPOT_AE_MASTER", "local[*]"))

    for name in ("replay-csv", "replay-pcap", "replay-exporter"):
        p = sub.add_parser(name, help="send flows to a collector over UDP")
        p.add_argument("paths", nargs="+")
        p.add_argument("--to", default="127.0.0.1:2055", help="collector HOST:PORT (default 127.0.0.1:2055)")
        p.add_argument("--rate", type=float, default=2000.0, help="UDP packets per second")
        if name != "replay-exporter":
            p.add_argument("--version", type=int, choices=(9, 10), default=10, help="9 = NetFlow v9, 10 = IPFIX")
        if name == "replay-csv":
            p.add_argument("--limit", type=int, default=None, help="send at most this many flows")

    p = sub.add_parser("summary", help="flows per day and hour that ingest has landed")
    _store_args(p)
    p.add_argument("--hours", action="store_true", help="also list every hour")
    return ap


def _cfg(args):
    cfg = StoreConfig(args.huser, args.webhdfs, args.hdfs_user)
    cfg.open()  # validates the URI now, with a clear message
    return cfg


def _expand(paths: list[str], pattern: str | None = None) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.rglob(pattern or "*") if x.is_file() and not x.name.startswith("."))
        elif p.is_file():
            out.append(p)
        else:
            raise SpotAEError(f"no such file or directory: {p}")
    if not out:
        raise SpotAEError(f"no input files in {', '.join(paths)}")
    return out


def _report(results) -> int:
    bad = 0
    for r in results:
        if r.status == "quarantined":
            bad += 1
            print(f"QUARANTINED {r.source}: {r.reason}")
        else:
            extra = f", rejected {r.rejected} rows {r.reject_reasons or ''}" if r.rejected else ""
            print(f"{r.status} {r.source}: {r.flows} flows in {r.partitions} hour partitions{extra}")
    flows = sum(r.flows for r in results)
    print(f"total: {flows} flows from {len(results) - bad} files, {bad} quarantined")
    return 1 if bad else 0


def cmd_watch(args) -> int:
    w = Watcher(_cfg(args), args.spool, workers=args.workers, keep_done_hours=args.keep_done_hours,
                zeek_dir=args.zeek_dir, settle=0.0 if args.once else 30.0)  # --once: what is there now
    if args.once:
        stats = w.run(until_idle=True)
        print(stats)
        return 0
    collector = None if args.no_collector else Collector(w.incoming, args.listen, args.interval).start()

    def _term(signum, frame):
        log.info("signal %d: stopping (the collector closes its current file first)", signum)
        if collector:
            collector.stop()
        w.stop()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    try:
        w.run()
    finally:
        if collector:
            collector.stop()
    w._stop = False
    w.run(until_idle=True)  # what the collector closed on the way out
    log.info("stopped: %s", w.stats)
    return 0


def cmd_files(args, kind: str = "nfcapd") -> int:
    files = _expand(args.paths, {"nfcapd": "nfcapd*", "zeek": "conn.*"}.get(kind))
    return _report(ingest_paths(_cfg(args), files, Path(args.quarantine), workers=args.workers, kind=kind))


def cmd_csv(args) -> int:
    files = _expand(args.paths)
    nfdump_csv = [f for f in files if f.open("rb").read(3) == b"ts,"]
    others = [f for f in files if f not in nfdump_csv]
    rc = 0
    if nfdump_csv:
        rc = _report(ingest_paths(_cfg(args), nfdump_csv, Path(args.quarantine), workers=args.workers, kind="nfdump-csv"))
    if others:  # CIC-IDS2018 / CICFlowMeter: the flow table's CSV loader owns that format (it needs Spark)
        # lazy: the only pyspark in `spot-ae ingest` (entry.py), absent from the ingest image
        from spot_ae_job.ingest.flowtable import load_csv
        from spot_ae_job.spark import session

        day = Day.parse(args.day) if args.day else None
        spark = session(args.master)
        for f in others:
            load_csv(spark, to_uri(args.huser), str(f), day)
    return rc


def _target(to: str) -> tuple[str, int]:
    host, port = parse_listen(to)
    return ("127.0.0.1" if host == "0.0.0.0" else host), port


def cmd_replay(args) -> int:
    host, port = _target(args.to)
    if args.cmd == "replay-exporter":
        n = replay.replay_datagrams([str(p) for p in _expand(args.paths)], host, port, args.rate)
        print(f"sent {n} datagrams to {host}:{port}")
        return 0
    paths = [str(p) for p in _expand(args.paths)]
    if args.cmd == "replay-csv":
        s = replay.replay_csv(paths, host, port, args.version, args.rate, args.limit)
    else:
        s = replay.replay_pcap(paths, host, port, args.version, args.rate)
    print(f"sent {s.sent_flows} flows in {s.packets} {'IPFIX' if args.version == 10 else 'NetFlow v9'} packets "
          f"to {host}:{port} (ipkt {s.ipkt}, ibyt {s.ibyt}, opkt {s.opkt}, obyt {s.obyt}); "
          f"skipped {s.skipped} of {s.rows} rows {s.skip_reasons or ''}")
    return 0


def cmd_summary(args) -> int:
    per_day, per_hour = summary.totals(summary.read_summary(_cfg(args).open()))
    if not per_day:
        print("no flows ingested yet")
    for day, n in per_day.items():
        print(f"{day}  {n} flows")
        if args.hours:
            for (d, h), nh in per_hour.items():
                if d == day:
                    print(f"  {h:02d}:00  {nh}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("SPOT_AE_LOG", "INFO"), stream=sys.stderr,
                        format="[spot-ae ingest %(asctime)s] %(levelname)s %(message)s", datefmt="%H:%M:%S")
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    handlers = {"watch": cmd_watch, "files": cmd_files, "pcap": lambda a: cmd_files(a, "pcap"), "csv": cmd_csv,
                "replay-csv": cmd_replay, "replay-pcap": cmd_replay, "replay-exporter": cmd_replay,
                "summary": cmd_summary, "zeek": lambda a: cmd_files(a, "zeek")}
    return run_command("spot-ae ingest", handlers[args.cmd], args)


if __name__ == "__main__":
    sys.exit(main())
