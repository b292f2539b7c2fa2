"""Every request parameter is checked here before it reaches storage or a query.

A parameter that fails raises `Invalid` with a message meant for the user; the app turns it into
a 400 JSON error. Sort keys come from an allow-list, sizes are bounded, dates must be real dates.
"""
from __future__ import annotations

import ipaddress
import re

from spot_ae_job import verdicts
from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import Day

# \A..\Z, not ^..$: `$` also matches before a trailing newline, and "20180216\n" is not a day.
DAY_RE = re.compile(r"\A[0-9]{8}\Z")
_PROTO_RE = re.compile(r"\A[A-Za-z0-9_-]{1,16}\Z")

SORT_KEYS = ["rank", "score", "treceived", "sip", "dip", "sport", "dport", "proto", "tdur", "ipkt", "ibyt", "opkt", "obyt"]
# incidents (oa/incidents.py): their list's sort keys, and a member flow list's (the day list's but tdur)
INCIDENT_SORT_KEYS = ["severity", "flows", "bytes", "max_score", "sum_score", "first_seen", "last_seen",
                      "n_hosts", "n_ports", "main_host", "family", "family_confidence", "incident_id"]
MEMBER_SORT_KEYS = [k for k in SORT_KEYS if k != "tdur"]
_INCIDENT_RE = re.compile(r"\A[0-9a-f]{32}\Z")
_WORD_RE = re.compile(r"\A[a-z_]{1,32}\Z")
MAX_PAGE_SIZE = 500
MAX_TOP = 1000
SEVERITIES = {1: "high", 2: "medium", 3: "low"}


class Invalid(ValueError):
    """A request parameter is malformed; the message says which and why."""


def day(value: str | None) -> str:
    """A day as Spot names it, by the one parser the whole job uses (layout.Day)."""
    try:
        return str(Day.parse(value))
    except SpotAEError as e:
        raise Invalid(str(e)) from None


def ip(value: str | None, name: str = "ip", required: bool = False) -> str | None:
    if value in (None, ""):
        if required:
            raise Invalid(f"{name} is required")
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Invalid(f"{name} must be an IPv4 or IPv6 address, got {value!r}") from None


def integer(value: str | None, name: str, lo: int, hi: int, default: int | None = None) -> int | None:
    if value in (None, ""):
        return default
    if not re.fullmatch(r"[0-9]{1,10}", value):
        raise Invalid(f"{name} must be an integer in {lo}..{hi}, got {value!r}")
    n = int(value)
    if not lo <= n <= hi:
        raise Invalid(f"{name} must be in {lo}..{hi}, got {n}")
    return n


def number(value: str | None, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        x = float(value)
    except ValueError:
        raise Invalid(f"{name} must be a number, got {value!r}") from None
    if x != x or x in (float("inf"), float("-inf")):
        raise Invalid(f"{name} must be a finite number")
    return x


def port(value: str | None) -> int | None:
    return integer(value, "port", 0, 65535)


def proto(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if not _PROTO_RE.match(value):
        raise Invalid(f"proto must be a protocol name such as TCP, UDP or ICMP, got {value!r}")
    return value.upper()


def choice(value: str | None, name: str, allowed: list[str], default: str) -> str:
    if value in (None, ""):
        return default
    if value not in allowed:
        raise Invalid(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def attack_family(value, sev: int) -> str | None:
    """The family a verdict on `sev` names (optional; verdicts.check_family has the rule)."""
    if value in (None, ""):
        return None
    try:
        verdicts.check_family(value, sev)
    except SpotAEError as e:
        raise Invalid(str(e)) from None
    return value


def severity(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in SEVERITIES:
        raise Invalid("sev must be 1 (high risk), 2 (medium) or 3 (low risk)")
    return value


def incident_id(value: str | None) -> str:
    """An incident id as incidents.py makes them: 32 lowercase hex digits."""
    if not isinstance(value, str) or not _INCIDENT_RE.match(value):
        raise Invalid(f"incident id must be 32 lowercase hex digits, got {value!r}")
    return value


def word(value: str | None, name: str) -> str | None:
    """A family or severity level name (lowercase letters and _), or None when absent."""
    if value in (None, ""):
        return None
    if not _WORD_RE.match(value):
        raise Invalid(f"{name} must be a name such as 'dos' or 'high' (a-z and _), got {value!r}")
    return value


def only_keys(params, allowed: set[str]) -> None:
    """Unknown parameters are an error, not silently ignored (a typo would return everything)."""
    extra = sorted(set(params.keys()) - allowed)
    if extra:
        raise Invalid(f"unknown parameter(s): {', '.join(extra)}")
