"""Allow-lists (issue 25, part 2): traffic an analyst has decided must never raise an alert.

A rule names flows by CIDR on either side (source and/or destination, IPv4 or IPv6; with
`both_ways` it also matches the reverse direction), port ranges, protocol and an optional daily
UTC time window, and says who added it, when, why and until when (`expires`: the rule covers
flows *before* that instant, so a day's result never changes because a clock moved on).
Allow-listed flows are still scored and kept in `all_scores/`; they are never alerted, forwarded
or counted as incidents.

The store, beside the verdicts (`{huser}/flow/allowlist/`, layout.py), is append-only like them:

    rules/<when>-<id>.json      one rule, written once (temporary name, then rename)
    removed/<id>.json           the removal of a rule: who, when, why (the rule file stays)
    audit/<when>-<action>-<id>.json   what an add/remove changed: which days, how many alerts

A rule is in force while it has no removal record. Suppression is computed from the rules in
force wherever alerts leave the job (alerts.py when they are written, forward.py when they are
sent, the OA when it lists a day), so it is one function of (flow, rules): `match`. Alerts of a
suppressed flow are not deleted: they are kept verbatim under `alerts_allowlisted/` beside the
day's `alerts/`, and `reapply` moves documents between the two when a rule is added or removed.
Removing a rule therefore brings back exactly the alerts it held (same ids, same bytes).

This module is pure Python over a storage with `list/stat/read/write_atomic` (spot_ae_job/
storage.py: local disk or WebHDFS), so `spot-ae allowlist` and the OA need no JVM; the Spark
side (`mark`, `suppress`, `read_rules_spark`) imports pyspark lazily, as verdicts.py does.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import ALLOWLIST_DIR, ALLOWLISTED, SCORED_RESULTS, Day, DayResults, flow_relative, is_day
from spot_ae_job.schema import PROTO_NUMBERS

log = logging.getLogger(__name__)

RULES, REMOVED, AUDIT = f"{ALLOWLIST_DIR}/rules", f"{ALLOWLIST_DIR}/removed", f"{ALLOWLIST_DIR}/audit"
MAX_WHY = 500
_HOURS = re.compile(r"\A([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]|24):([0-5][0-9])\Z")
_PORTS = re.compile(r"\A([0-9]{1,5})(?:-([0-9]{1,5}))?\Z")
# the columns `match` reads; `time` is the flow's start in epoch seconds (NaN where unknown)
MATCH_COLUMNS = ["sip", "dip", "sport", "dport", "proto", "time"]


# ---- the rule ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    id: str
    src: str | None  # CIDR (a bare address is /32 or /128); None: any
    dst: str | None
    sport: tuple[int, int] | None  # inclusive range; None: any
    dport: tuple[int, int] | None
    proto: int | None  # IANA number; None: any
    hours: tuple[int, int] | None  # daily UTC window in minutes [start, end); start > end wraps midnight
    both_ways: bool
    who: str
    when: str
    why: str
    expires: str | None  # ISO UTC; flows from this instant on are not covered

    def to_json(self) -> dict:
        d = asdict(self)
        d["sport"], d["dport"] = _ports_text(self.sport), _ports_text(self.dport)
        d["proto"] = _proto_name(self.proto)
        d["hours"] = _hours_text(self.hours)
        return d

    def describe(self) -> str:
        """One line for listings and the OA: what the rule covers."""
        side = lambda c, p: f"{c or 'any'}{':' + _ports_text(p) if p else ''}"  # noqa: E731
        arrow = "<->" if self.both_ways else "->"
        extra = [f"proto {_proto_name(self.proto)}" if self.proto is not None else None,
                 f"{_hours_text(self.hours)} UTC" if self.hours else None,
                 f"until {self.expires}" if self.expires else None]
        return " ".join([side(self.src, self.sport), arrow, side(self.dst, self.dport)] + [e for e in extra if e])


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str = "time") -> dt.datetime:
    """An ISO 8601 instant (no zone = UTC), or a one-line error."""
    try:
        t = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError:
        raise SpotAEError(f"{what} must be an ISO time like 2026-12-31T00:00:00Z, got {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _cidr(text, what: str) -> str | None:
    if text is None or str(text).strip() in ("", "any", "*"):
        return None
    try:
        return str(ipaddress.ip_network(str(text).strip(), strict=True))
    except ValueError as e:
        if "has host bits set" in str(e):
            raise SpotAEError(f"{what} {text!r} has host bits set (did you mean {ipaddress.ip_network(str(text).strip(), strict=False)}?)") from None
        raise SpotAEError(f"{what} must be an IPv4/IPv6 address or CIDR like 10.0.0.0/8, got {text!r}") from None


def _ports(text, what: str) -> tuple[int, int] | None:
    if text is None or str(text).strip() in ("", "any", "*"):
        return None
    m = _PORTS.match(str(text).strip())
    if not m:
        raise SpotAEError(f"{what} must be a port or a range like 1024-2048, got {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (0 <= lo <= 65535 and 0 <= hi <= 65535):
        raise SpotAEError(f"{what} out of range: ports are 0..65535, got {text!r}")
    if lo > hi:
        raise SpotAEError(f"{what} range {text!r} runs backwards")
    return lo, hi


def _ports_text(p: tuple[int, int] | None) -> str | None:
    return None if p is None else (str(p[0]) if p[0] == p[1] else f"{p[0]}-{p[1]}")


def proto_number(text) -> int | None:
    """IANA number of a protocol name (as nfdump, the CIC readers and ECS write it) or number."""
    if text is None or (isinstance(text, float) and text != text):
        return None
    t = str(text).strip().upper()
    if t.isdigit():
        return int(t) if int(t) <= 255 else None
    return PROTO_NUMBERS.get(t)


def _proto(text) -> int | None:
    if text is None or str(text).strip() in ("", "any", "*"):
        return None
    n = proto_number(text)
    if n is None:
        raise SpotAEError(f"proto must be one of {', '.join(k.lower() for k in PROTO_NUMBERS)} or a number 0..255, got {text!r}")
    return n


def _proto_name(n: int | None) -> str | None:
    if n is None:
        return None
    return next((k.lower() for k, v in PROTO_NUMBERS.items() if v == n), str(n))


def _hours(text) -> tuple[int, int] | None:
    if text is None or str(text).strip() == "":
        return None
    m = _HOURS.match(str(text).strip())
    if not m:
        raise SpotAEError(f"hours must be a daily UTC window HH:MM-HH:MM like 01:00-03:30, got {text!r}")
    a, b = int(m.group(1)) * 60 + int(m.group(2)), int(m.group(3)) * 60 + int(m.group(4))
    if b > 24 * 60:
        raise SpotAEError(f"hours window ends after 24:00: {text!r}")
    if a == b % (24 * 60):
        raise SpotAEError(f"hours window {text!r} is empty or the whole day (leave it out for all day)")
    return a, b


def _hours_text(h: tuple[int, int] | None) -> str | None:
    return None if h is None else f"{h[0] // 60:02d}:{h[0] % 60:02d}-{h[1] // 60:02d}:{h[1] % 60:02d}"


def new_rule(*, src=None, dst=None, sport=None, dport=None, proto=None, hours=None, both_ways: bool = False,
             who: str, why: str, expires: dt.datetime | str | None = None, now: dt.datetime | None = None) -> Rule:
    """A checked rule; each mistake is one line (SpotAEError). Its id hashes its content."""
    src, dst = _cidr(src, "src"), _cidr(dst, "dst")
    sp, dp = _ports(sport, "sport"), _ports(dport, "dport")
    pr, hr = _proto(proto), _hours(hours)
    if (sp or dp) and pr is not None and pr not in (6, 17, 132):
        raise SpotAEError(f"ports only exist for tcp, udp and sctp, not {_proto_name(pr)}")
    if src and dst and ipaddress.ip_network(src).version != ipaddress.ip_network(dst).version:
        raise SpotAEError("src and dst are different IP versions: no flow can match")
    if not any([src, dst, sp, dp]):
        raise SpotAEError("a rule needs at least one of src, dst, sport, dport (it would allow-list everything)")
    who = str(who or "").strip()
    if not who or len(who) > 128:
        raise SpotAEError("who must name the person adding the rule (1..128 characters)")
    why = " ".join(str(why or "").split())
    if not why:
        raise SpotAEError("why is required: say why this traffic may never alert")
    if len(why) > MAX_WHY:
        raise SpotAEError(f"why is longer than {MAX_WHY} characters")
    now = now or dt.datetime.now(dt.timezone.utc)
    exp = parse_time(expires, "expires") if isinstance(expires, str) else expires
    if exp is not None and exp <= now:
        raise SpotAEError(f"expires {_iso(exp)} is in the past")
    body = {"src": src, "dst": dst, "sport": sp, "dport": dp, "proto": pr, "hours": hr, "both_ways": bool(both_ways),
            "who": who, "when": _iso(now), "why": why, "expires": _iso(exp) if exp else None}
    rid = "a" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:15]
    return Rule(id=rid, **body)


def rule_from_json(d: dict) -> Rule:
    """A stored rule, checked as strictly as a new one (a hand-edited file fails alone)."""
    if not isinstance(d, dict):
        raise ValueError("a rule is not a JSON object")
    missing = [k for k in Rule.__dataclass_fields__ if k not in d]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not isinstance(d["id"], str) or not re.fullmatch(r"a[0-9a-f]{15}", d["id"]):
        raise ValueError("bad rule id")
    try:
        when = parse_time(d["when"], "when")
        r = new_rule(src=d["src"], dst=d["dst"], sport=d["sport"], dport=d["dport"], proto=d["proto"], hours=d["hours"],
                     both_ways=d["both_ways"] is True, who=d["who"], why=d["why"], expires=None, now=when)
    except SpotAEError as e:
        raise ValueError(str(e)) from None
    exp = None if d["expires"] is None else _iso(parse_time(d["expires"], "expires"))
    return Rule(**{**asdict(r), "id": d["id"], "expires": exp})


def rule_file(rule: Rule) -> str:
    return f"{RULES}/{parse_time(rule.when).strftime('%Y%m%dT%H%M%SZ')}-{rule.id}.json"


def to_bytes(obj) -> bytes:
    return (json.dumps(obj.to_json() if isinstance(obj, Rule) else obj, indent=1) + "\n").encode("utf-8")


# ---- matching: one vectorised function for Spark batches, the OA's frames and alert documents --

def _networks(rules: list[Rule]):
    return [(ipaddress.ip_network(r.src) if r.src else None, ipaddress.ip_network(r.dst) if r.dst else None) for r in rules]


def _in(codes: np.ndarray, uniq: list, net) -> np.ndarray:
    """Per row: is its address in `net` (each distinct address parsed and tested once)."""
    if net is None:
        return np.ones(len(codes), dtype=bool)
    hit = np.array([a is not None and a.version == net.version and a in net for a in uniq] + [False], dtype=bool)
    return hit[codes]  # code -1 (missing) takes the trailing False


def _addresses(values: pd.Series) -> tuple[np.ndarray, list]:
    codes, uniq = pd.factorize(values.astype("object"), use_na_sentinel=True)
    parsed = []
    for u in uniq:
        try:
            parsed.append(ipaddress.ip_address(str(u).strip()))
        except ValueError:
            parsed.append(None)
    return codes, parsed


def _port_in(ports: np.ndarray, rng) -> np.ndarray:
    if rng is None:
        return np.ones(len(ports), dtype=bool)
    return (ports >= rng[0]) & (ports <= rng[1])  # NaN compares False: a flow without ports never matches a port rule


def match(frame: pd.DataFrame, rules: list[Rule]) -> pd.Series:
    """The id of the first rule (oldest first) that covers each row of `frame` (MATCH_COLUMNS),
    or None. `time` is the flow's start in epoch seconds; a rule with a time window never covers
    a flow whose time is unknown, and `expires` covers flows that started before it."""
    out = np.full(len(frame), None, dtype=object)
    if not rules or not len(frame):
        return pd.Series(out, index=frame.index, dtype="object")
    rules = sorted(rules, key=lambda r: (r.when, r.id))
    sc, su = _addresses(frame["sip"])
    dc, du = _addresses(frame["dip"])
    sp = pd.to_numeric(frame["sport"], errors="coerce").to_numpy(dtype="float64")
    dp = pd.to_numeric(frame["dport"], errors="coerce").to_numpy(dtype="float64")
    pcodes, puniq = pd.factorize(frame["proto"].astype("object"), use_na_sentinel=True)
    proto = np.array([proto_number(p) if proto_number(p) is not None else -1 for p in puniq] + [-1], dtype=np.int64)[pcodes]
    t = pd.to_numeric(frame["time"], errors="coerce").to_numpy(dtype="float64")
    minute = np.floor(np.mod(t, 86400) / 60)
    for r, (sn, dn) in zip(rules, _networks(rules)):
        fwd = _in(sc, su, sn) & _in(dc, du, dn) & _port_in(sp, r.sport) & _port_in(dp, r.dport)
        if r.both_ways:
            fwd |= _in(dc, du, sn) & _in(sc, su, dn) & _port_in(dp, r.sport) & _port_in(sp, r.dport)
        hit = fwd
        if r.proto is not None:
            hit = hit & (proto == r.proto)
        if r.hours is not None:
            a, b = r.hours
            hit = hit & (((minute >= a) & (minute < b)) if a < b else ((minute >= a) | (minute < b % 1440)))
        if r.expires is not None:
            hit = hit & (t < parse_time(r.expires).timestamp())
        free = hit & (out == None)  # noqa: E711 - elementwise on an object array
        out[free] = r.id
    return pd.Series(out, index=frame.index, dtype="object")


def day_start(day: str) -> float:
    d = Day.parse(day)
    return dt.datetime(d.year, d.month, d.day, tzinfo=dt.timezone.utc).timestamp()


def alerts_frame(docs: list[dict], day: str) -> pd.DataFrame:
    """The MATCH_COLUMNS of ECS alert documents (alerts.py writes them): the flow's start is
    `event.start`, or the day's start where the input had no time."""
    rows = []
    for a in docs:
        src, dst, net, ev = (a.get(k) or {} for k in ("source", "destination", "network", "event"))
        start = ev.get("start")
        t = parse_time(start).timestamp() if start else day_start(day)
        rows.append((src.get("ip"), dst.get("ip"), src.get("port"), dst.get("port"), net.get("iana_number") or net.get("transport"), t))
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def match_alerts(docs: list[dict], day: str, rules: list[Rule]) -> list[str | None]:
    return list(match(alerts_frame(docs, day), rules)) if docs else []


# ---- the store (pure Python over storage.py's interface) ------------------------------------

@dataclass
class Store:
    """Rules, removals and audit records under `{huser}/flow/allowlist/` of one storage."""

    storage: object

    def _records(self, rel: str) -> tuple[list[tuple[str, dict]], list[dict]]:
        out, bad = [], []
        for e in self.storage.list(rel):
            if e.is_dir or not e.name.endswith(".json") or e.name.startswith((".", "_")):
                continue
            try:
                out.append((e.name, json.loads(self.storage.read(f"{rel}/{e.name}"))))
            except (ValueError, RecursionError) as err:
                bad.append({"file": f"{rel}/{e.name}", "reason": " ".join(str(err).split())[:200]})
        return out, bad

    def all_rules(self) -> tuple[list[Rule], dict[str, dict], list[dict]]:
        """(every readable rule, removal record by rule id, unreadable files with why)."""
        rules, bad = [], []
        raw, bad1 = self._records(RULES)
        for name, d in raw:
            try:
                rules.append(rule_from_json(d))
            except (ValueError, TypeError) as err:
                bad.append({"file": f"{RULES}/{name}", "reason": " ".join(str(err).split())[:200]})
        removed_raw, bad2 = self._records(REMOVED)
        removed = {d["id"]: d for _, d in removed_raw if isinstance(d, dict) and isinstance(d.get("id"), str)}
        for item in bad + bad1 + bad2:
            log.warning("unreadable allow-list file %s: %s", item["file"], item["reason"])
        return sorted(rules, key=lambda r: (r.when, r.id)), removed, bad + bad1 + bad2

    def in_force(self) -> list[Rule]:
        rules, removed, _ = self.all_rules()
        return [r for r in rules if r.id not in removed]

    def get(self, rule_id: str) -> Rule:
        for r in self.all_rules()[0]:
            if r.id == rule_id:
                return r
        raise SpotAEError(f"no allow-list rule {rule_id!r} (see `spot-ae allowlist list`)")

    def add(self, rule: Rule) -> dict:
        """Store the rule, re-apply the rules to every scored day, and audit what it changed."""
        if self.storage.stat(rule_file(rule)) is None:
            self.storage.write_atomic(rule_file(rule), to_bytes(rule))
        days = reapply(self.storage, self.in_force())
        return self._audit("add", rule.to_json(), rule.who, rule.when, rule.why, days, rule.id)

    def remove(self, rule_id: str, who: str, why: str, now: dt.datetime | None = None) -> dict:
        rule = self.get(rule_id)
        who, why = str(who or "").strip(), " ".join(str(why or "").split())
        if not who or len(who) > 128:
            raise SpotAEError("who must name the person removing the rule (1..128 characters)")
        if not why or len(why) > MAX_WHY:
            raise SpotAEError(f"why is required (1..{MAX_WHY} characters): say why this traffic may alert again")
        if rule_id in self.all_rules()[1]:
            raise SpotAEError(f"allow-list rule {rule_id} is already removed")
        when = _iso(now or dt.datetime.now(dt.timezone.utc))
        self.storage.write_atomic(f"{REMOVED}/{rule_id}.json", to_bytes({"id": rule_id, "who": who, "when": when, "why": why}))
        days = reapply(self.storage, self.in_force())
        return self._audit("remove", rule.to_json(), who, when, why, days, rule_id)

    def _audit(self, action: str, rule: dict, who: str, when: str, why: str, days: dict, rule_id: str) -> dict:
        """The audit record: who, when, what, which days changed and how many alerts each rule now holds."""
        changed = [{"day": d, **c} for d, c in sorted(days.items()) if c["suppressed"] or c["restored"]]
        rec = {"action": action, "rule_id": rule_id, "rule": rule, "who": who, "when": when, "why": why,
               "days": changed, "days_checked": len(days), "regroup": regroup_days(self.storage, [c["day"] for c in changed]),
               "alerts_suppressed": sum(c["suppressed"] for c in days.values()),
               "alerts_restored": sum(c["restored"] for c in days.values()),
               "held_by_this_rule": sum(c["held_by_rule"].get(rule_id, 0) for c in days.values())}
        stamp = parse_time(when).strftime("%Y%m%dT%H%M%SZ")
        self.storage.write_atomic(f"{AUDIT}/{stamp}-{action}-{rule_id}.json", to_bytes(rec))
        return rec

    def audit(self) -> list[dict]:
        return [d for _, d in sorted(self._records(AUDIT)[0], key=lambda x: x[0], reverse=True)]


# ---- re-application to scored days -------------------------------------------------------------

def _lines(storage, rel: str) -> list[str]:
    return [x for x in storage.read(rel).decode("utf-8").splitlines() if x.strip()]


def _alert_dirs(storage, paths: DayResults) -> list[str]:
    """The day's alert directories relative to alerts/ and alerts_allowlisted/: "" and each streamed batch=N."""
    subs = {""}
    for top in (paths.alerts, paths.alerts_allowlisted):
        subs |= {e.name for e in storage.list(top) if e.is_dir and e.name.startswith("batch=")}
    return sorted(subs)


def _parts(storage, rel: str) -> dict[str, None]:
    return {e.name: None for e in storage.list(rel) if not e.is_dir and e.name.startswith("part-")}


def _rank(line: str) -> float:
    try:
        r = (json.loads(line).get("spot_ae") or {}).get("rank")
    except ValueError:
        return float("inf")
    return float(r) if isinstance(r, (int, float)) else float("inf")


def reapply_day(storage, day: str, rules: list[Rule]) -> dict:
    """Re-partition one day's alert documents between `alerts/` and `alerts_allowlisted/` by the
    rules in force, file by file, and bring alerts_summary.json up to date.

    Per part file the held copy is written first and the live file second, so a failure between
    the two leaves a document in both places, never in neither; a re-run (documents are deduplicated
    by alert id) finishes the move."""
    paths = flow_relative(day)
    suppressed = restored = live_n = 0
    held_by: Counter = Counter()
    for sub in _alert_dirs(storage, paths):
        live_dir, held_dir = "/".join(x for x in (paths.alerts, sub) if x), "/".join(x for x in (paths.alerts_allowlisted, sub) if x)
        names = {**_parts(storage, live_dir), **_parts(storage, held_dir)}
        for name in sorted(names):
            lrel, hrel = f"{live_dir}/{name}", f"{held_dir}/{name}"
            live = _lines(storage, lrel) if storage.stat(lrel) else []
            held = _lines(storage, hrel) if storage.stat(hrel) else []
            docs, seen, origin = [], set(), []
            for where, lines in (("live", live), ("held", held)):
                for line in lines:
                    doc = json.loads(line)
                    aid = (doc.get("event") or {}).get("id") or line
                    if aid in seen:
                        continue
                    seen.add(aid)
                    docs.append((line, doc))
                    origin.append(where)
            ids = match_alerts([d for _, d in docs], day, rules)
            new_live = sorted((line for (line, _), rid in zip(docs, ids) if rid is None), key=_rank)
            new_held = sorted((line for (line, _), rid in zip(docs, ids) if rid is not None), key=_rank)
            suppressed += sum(1 for o, rid in zip(origin, ids) if o == "live" and rid is not None)
            restored += sum(1 for o, rid in zip(origin, ids) if o == "held" and rid is None)
            held_by.update(rid for rid in ids if rid is not None)
            live_n += len(new_live)
            if new_held != held:
                storage.write_atomic(hrel, "".join(x + "\n" for x in new_held).encode("utf-8"))
            if new_live != live:
                storage.write_atomic(lrel, "".join(x + "\n" for x in new_live).encode("utf-8"))
    summary_rel = paths.alerts_summary
    if storage.stat(summary_rel) is not None:
        summ = json.loads(storage.read(summary_rel))
        if isinstance(summ, dict):
            new = {**summ, "alerts": live_n, "allowlisted": sum(held_by.values()), "allowlisted_by_rule": dict(held_by)}
            if new != summ:
                storage.write_atomic(summary_rel, json.dumps(new, indent=2).encode("utf-8"))
    return {"suppressed": suppressed, "restored": restored, "alerts": live_n, "held_by_rule": dict(held_by)}


def regroup_days(storage, days: list[str]) -> list[str]:
    """Of the days whose alerts a rule change moved, those with a batch run's incidents: grouped
    under the earlier rules until `spot-ae incidents DAY...` (Spark) groups them again. Until then
    the OA leaves the allow-listed flows out of each incident it shows."""
    return [d for d in days if storage.stat(flow_relative(d).incidents) is not None]


def reapply(storage, rules: list[Rule], days: list[str] | None = None) -> dict[str, dict]:
    """`reapply_day` on every scored day that has alerts (or the days given)."""
    if days is None:
        days = [e.name for e in storage.list(SCORED_RESULTS) if e.is_dir and is_day(e.name)
                and (storage.stat(flow_relative(e.name).alerts) or storage.stat(flow_relative(e.name).alerts_allowlisted))]
    return {d: reapply_day(storage, d, rules) for d in sorted(days)}


# ---- the Spark side (imported lazily so the OA and the CLI never need pyspark's JVM) ------------

def read_rules_spark(spark, huser: str) -> list[Rule]:
    """The rules in force, read through Spark's Hadoop client (the job's one file system)."""
    from spot_ae_job import fsutil
    from spot_ae_job.layout import Layout

    root = Layout(huser).allowlist
    removed = {u.rsplit("/", 1)[-1][:-5] for u in fsutil.list_files(spark, f"{root}/removed", (".json",))}
    rules = []
    for uri in fsutil.list_files(spark, f"{root}/rules", (".json",)):
        try:
            r = rule_from_json(json.loads(fsutil.read_text(spark, uri)))
        except (ValueError, TypeError, RecursionError) as err:
            log.warning("unreadable allow-list rule %s skipped: %s", uri, err)
            continue
        if r.id not in removed:
            rules.append(r)
    return sorted(rules, key=lambda r: (r.when, r.id))


def mark(df, rules: list[Rule], day: str | None = None):
    """`df` (flow columns) + ALLOWLISTED: the id of the rule that covers the flow, or null.
    The flow's time is `unix_tstamp`, or the day's start where the input had none."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not rules:
        return df.withColumn(ALLOWLISTED, F.lit(None).cast("string"))
    fallback = F.lit(day_start(day)) if day else F.lit(None).cast("double")
    t = F.coalesce(F.col("unix_tstamp").cast("double"), fallback) if "unix_tstamp" in df.columns else fallback
    frozen = list(rules)

    @F.pandas_udf(T.StringType())
    def _match(sip: pd.Series, dip: pd.Series, sport: pd.Series, dport: pd.Series, proto: pd.Series, time: pd.Series) -> pd.Series:
        return match(pd.DataFrame({"sip": sip, "dip": dip, "sport": sport, "dport": dport, "proto": proto, "time": time}), frozen)

    return df.withColumn(ALLOWLISTED, _match("sip", "dip", "sport", "dport", "proto", t))


def suppress(df, rules: list[Rule], day: str | None = None):
    """`df` without the flows an allow-list rule covers: what incidents (and anything else that
    counts or raises) should see."""
    from pyspark.sql import functions as F

    if not rules:
        return df
    return mark(df, rules, day).where(F.col(ALLOWLISTED).isNull()).drop(ALLOWLISTED)
