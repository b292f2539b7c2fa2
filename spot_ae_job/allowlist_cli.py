"""`spot-ae allowlist add|list|remove|apply|audit`: the allow-list from the command line.

Pyspark-free (entry.py dispatches here): it reads and writes `{huser}/flow/allowlist/` and the
days' alert files through the OA's storage (local disk, or HDFS over WebHDFS), so it runs on
any node that can reach the NameNode, with no JVM.
"""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import os
import sys

from spot_ae_job import allowlist
from spot_ae_job.errors import SpotAEError, run_command
from spot_ae_job.layout import Day
from spot_ae_job.storage import open_storage

PROG = "spot-ae allowlist"


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="allow-list rules: traffic that is scored but never alerted (docs/allowlists.md)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--huser", default=os.environ.get("SPOT_AE_HUSER") or "file://" + os.path.abspath("var/spot"),
                        help="Spot's user root: file:///abs/path or hdfs://namenode:8020/user/spot (default $SPOT_AE_HUSER or ./var/spot)")
    common.add_argument("--webhdfs", default=os.environ.get("SPOT_AE_WEBHDFS"), help="WebHDFS base URL for an hdfs:// huser (default http://<namenode>:9870)")
    common.add_argument("--hdfs-user", default="spot", help="user name for WebHDFS calls (default spot)")
    sub = ap.add_subparsers(dest="cmd", required=True)

    a = sub.add_parser("add", parents=[common], help="add a rule and re-apply the rules to every scored day")
    a.add_argument("--src", help="source address or CIDR (IPv4 or IPv6); default any")
    a.add_argument("--dst", help="destination address or CIDR; default any")
    a.add_argument("--sport", help="source port or range LO-HI; default any")
    a.add_argument("--dport", help="destination port or range LO-HI; default any")
    a.add_argument("--proto", help="tcp, udp, icmp, ... or an IANA number; default any")
    a.add_argument("--hours", help="daily UTC window HH:MM-HH:MM (may wrap midnight); default all day")
    a.add_argument("--both-ways", action="store_true", help="also match the reverse direction (src and dst swapped, ports too)")
    a.add_argument("--why", required=True, help="why this traffic may never alert (kept with the rule)")
    a.add_argument("--who", default=_who(), help="who adds the rule (default: the login name)")
    g = a.add_mutually_exclusive_group()
    g.add_argument("--expires", help="ISO time from which flows are no longer covered (e.g. 2027-01-31T00:00:00Z)")
    g.add_argument("--expires-days", type=int, help="... or that many days from now")
    a.add_argument("--json", action="store_true", help="print the audit record as JSON")

    ls = sub.add_parser("list", parents=[common], help="the rules in force (--all: removed ones too)")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true")

    r = sub.add_parser("remove", parents=[common], help="remove a rule and bring back the alerts it held")
    r.add_argument("rule_id")
    r.add_argument("--why", required=True, help="why this traffic may alert again")
    r.add_argument("--who", default=_who())
    r.add_argument("--json", action="store_true")

    p = sub.add_parser("apply", parents=[common], help="re-apply the rules in force to scored days (all, or --day)")
    p.add_argument("--day", action="append", default=None, help="YYYYMMDD (repeatable); default every scored day")

    au = sub.add_parser("audit", parents=[common], help="what each add/remove changed, newest first")
    au.add_argument("--json", action="store_true")
    return ap


def _store(args) -> allowlist.Store:
    try:
        return allowlist.Store(open_storage(args.huser, args.webhdfs, args.hdfs_user))
    except ValueError as e:
        raise SpotAEError(str(e)) from None


def _changed(rec: dict) -> str:
    days = ", ".join(f"{d['day']} (-{d['suppressed']}/+{d['restored']})" for d in rec["days"]) or "none"
    return (f"{rec['alerts_suppressed']} alerts suppressed, {rec['alerts_restored']} restored over "
            f"{rec['days_checked']} scored day(s); days changed: {days}{_regroup(rec.get('regroup') or [])}")


def _regroup(days: list[str]) -> str:
    """The step that brings those days' incidents in line (it needs Spark, this command does not)."""
    return f"\nincidents of {len(days)} day(s) were grouped under the earlier rules; regroup them: spot-ae incidents {' '.join(days)}" if days else ""


def cmd_add(args) -> int:
    if args.expires_days is not None and not 1 <= args.expires_days <= 3650:
        raise SpotAEError("--expires-days must be 1..3650")
    expires = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=args.expires_days)) if args.expires_days else args.expires
    rule = allowlist.new_rule(src=args.src, dst=args.dst, sport=args.sport, dport=args.dport, proto=args.proto,
                              hours=args.hours, both_ways=args.both_ways, who=args.who, why=args.why, expires=expires)
    rec = _store(args).add(rule)
    print(json.dumps(rec, indent=2) if args.json else f"added {rule.id}: {rule.describe()} ({rule.why}); {_changed(rec)}")
    return 0


def cmd_list(args) -> int:
    rules, removed, bad = _store(args).all_rules()
    shown = [r for r in rules if args.all or r.id not in removed]
    if args.json:
        print(json.dumps([{**r.to_json(), "removed": removed.get(r.id)} for r in shown], indent=2))
    else:
        for r in shown:
            gone = f"  [removed {removed[r.id]['when']} by {removed[r.id]['who']}: {removed[r.id]['why']}]" if r.id in removed else ""
            print(f"{r.id}  {r.describe()}  by {r.who} {r.when}: {r.why}{gone}")
        if not shown:
            print("no allow-list rules in force" if not args.all else "no allow-list rules")
    for b in bad:
        print(f"{PROG}: warning: unreadable {b['file']}: {b['reason']}", file=sys.stderr)
    return 0


def cmd_remove(args) -> int:
    rec = _store(args).remove(args.rule_id, args.who, args.why)
    print(json.dumps(rec, indent=2) if args.json else f"removed {args.rule_id}; {_changed(rec)}")
    return 0


def cmd_apply(args) -> int:
    days = [str(Day.parse(d)) for d in args.day] if args.day else None
    store = _store(args)
    changed = []
    for day, c in allowlist.reapply(store.storage, store.in_force(), days).items():
        print(f"{day}: {c['alerts']} alerts live, {sum(c['held_by_rule'].values())} held by allow-list rules "
              f"({c['suppressed']} newly suppressed, {c['restored']} restored)")
        if c["suppressed"] or c["restored"]:
            changed.append(day)
    note = _regroup(allowlist.regroup_days(store.storage, changed)).lstrip("\n")
    if note:
        print(note)
    return 0


def cmd_audit(args) -> int:
    recs = _store(args).audit()
    if args.json:
        print(json.dumps(recs, indent=2))
    for r in [] if args.json else recs:
        print(f"{r['when']} {r['action']} {r['rule_id']} by {r['who']} ({r['why']}): {_changed(r)}")
    return 0


COMMANDS = {"add": cmd_add, "list": cmd_list, "remove": cmd_remove, "apply": cmd_apply, "audit": cmd_audit}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, COMMANDS[args.cmd], args)
