"""The OA web application: pages for analysts and the JSON API behind them.

Spot's OA had no login at all (SPEC §2); here every page and API call but /health and the API
description needs a session, every write needs the session's CSRF token, and every parameter
goes through validate.py before it can touch storage.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
import threading
import time
from functools import wraps
from importlib import resources

from flask import Flask, abort, g, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash, generate_password_hash

from spot_ae_job import allowlist
from spot_ae_job.errors import SpotAEError
from spot_ae_job.oa import validate as V
from spot_ae_job.oa.config import OAConfig
from spot_ae_job.oa.incidents import Incidents
from spot_ae_job.oa.query import Filters, suspicious_page
from spot_ae_job.oa.results import BadData, NotFound, Results, Unprocessable
from spot_ae_job.schema import ATTACK_FAMILIES
from spot_ae_job.storage import INTERACTIVE, NotAFile, StorageError, open_storage

log = logging.getLogger("spot_ae_job.oa")

API = "/api/v1"
_LOGIN_WINDOW_S = 300
_LOGIN_MAX_FAILURES = 10
_DUMMY_HASH = generate_password_hash(secrets.token_hex(8))  # same work for unknown users
_SESSIONS_PER_USER = 16
# `next` after login: a path of this site only. Only RFC 3986 path/query characters (no control
# characters, which browsers drop: "/\t/evil" would become "//evil"), and never "//" or "/\" first.
_RULE_ID = re.compile(r"\Aa[0-9a-f]{15}\Z")
_NEXT = re.compile(r"\A/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]{0,2000}\Z")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)


class _LoginThrottle:
    """Failed logins per client address in a sliding window: slows password guessing."""

    def __init__(self):
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, who: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._fails.get(who, []) if now - t < _LOGIN_WINDOW_S]
            self._fails[who] = recent
            return len(recent) >= _LOGIN_MAX_FAILURES

    def fail(self, who: str) -> None:
        with self._lock:
            self._fails.setdefault(who, []).append(time.monotonic())

    def clear(self, who: str) -> None:
        with self._lock:
            self._fails.pop(who, None)


class _Sessions:
    """Live sessions, held by the server: the signed cookie only names one. Logout (or the end
    of its lifetime, or idle time) ends a session for every copy of its cookie, which a cookie
    that carries the login by itself cannot do. Held in memory: a restart logs everyone out."""

    def __init__(self, lifetime_s: float, idle_s: float):
        self.lifetime_s, self.idle_s = lifetime_s, idle_s
        self._live: dict[str, dict] = {}
        self._lock = threading.Lock()

    def start(self, user: str) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._purge(now)
            mine = sorted((s["start"], k) for k, s in self._live.items() if s["user"] == user)
            for _, old in mine[: max(0, len(mine) - _SESSIONS_PER_USER + 1)]:  # a bounded number per user
                del self._live[old]
            self._live[sid] = {"user": user, "start": now, "seen": now}
        return sid

    def check(self, sid, user) -> bool:
        """True while the session is live for this user; each check counts as activity."""
        if not isinstance(sid, str) or not isinstance(user, str):
            return False
        now = time.monotonic()
        with self._lock:
            s = self._live.get(sid)
            if s is None or s["user"] != user:
                return False
            if now - s["start"] > self.lifetime_s or now - s["seen"] > self.idle_s:
                del self._live[sid]
                return False
            s["seen"] = now
            return True

    def end(self, sid) -> None:
        if isinstance(sid, str):
            with self._lock:
                self._live.pop(sid, None)

    def _purge(self, now: float) -> None:
        for k in [k for k, s in self._live.items()
                  if now - s["start"] > self.lifetime_s or now - s["seen"] > self.idle_s]:
            del self._live[k]


def create_app(config: OAConfig, storage=None) -> Flask:
    """The app for one configuration; `storage` defaults to the backend named by config.huser."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.secret_key,
        SESSION_COOKIE_NAME="spot_oa_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=config.secure_cookies,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=config.session_hours),
        MAX_CONTENT_LENGTH=config.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=config.max_request_bytes,
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False
    if storage is None:
        storage = open_storage(config.huser, config.webhdfs, config.hdfs_user, retry=INTERACTIVE)
    results = Results(storage, cache_days=config.cache_days)
    incidents = Incidents(results)
    throttle = _LoginThrottle()
    sessions = _Sessions(config.session_hours * 3600, config.idle_minutes * 60)
    app.extensions["spot_oa"] = {"config": config, "results": results, "incidents": incidents, "storage": storage}

    # -- helpers ---------------------------------------------------------------------------
    def is_api() -> bool:
        return request.path.startswith(API + "/") or request.path == API

    def current_user():
        if "user" not in g:
            name = session.get("user")
            g.user = config.users.get(name) if sessions.check(session.get("sid"), name) else None
        return g.user

    def csrf_token() -> str:
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(32)
        return session["csrf"]

    def check_csrf(sent: str | None) -> None:
        want = session.get("csrf")
        if not want or not sent or not secrets.compare_digest(str(want), str(sent)):
            abort(403, description="missing or wrong CSRF token (send the X-CSRF-Token header from the page or the login answer)")

    def login_required(view):
        @wraps(view)
        def wrapped(*a, **kw):
            user = current_user()
            if user is None:
                if is_api():
                    abort(401, description="log in first (POST /api/v1/login)")
                return redirect(url_for("login_page", next=request.path))
            g.user = user
            return view(*a, **kw)

        return wrapped

    def api_write(view):
        """A write through the API: logged in, analyst role, CSRF token, JSON body."""

        @wraps(view)
        @login_required
        def wrapped(*a, **kw):
            check_csrf(request.headers.get("X-CSRF-Token"))
            if g.user.role != "analyst":
                abort(403, description=f"user {g.user.name} ({g.user.role}) may not record verdicts or change the allow-list")
            return view(*a, **kw)

        return wrapped

    def json_body() -> dict:
        if not request.is_json:
            abort(415, description="send Content-Type: application/json")
        try:  # parsed here: Flask's parser lets RecursionError through (deep nesting is a 500)
            body = json.loads(request.get_data(cache=True))
        except RecursionError:
            raise V.Invalid("the JSON body is nested too deeply") from None
        except ValueError:  # includes UnicodeDecodeError
            raise V.Invalid("the body is not valid JSON") from None
        if not isinstance(body, dict):
            abort(400, description="the body must be a JSON object")
        return body

    def known_day(day: str) -> str:
        day = V.day(day)
        if not results.has_day(day):
            abort(404, description=f"no scored results for day {day}")
        return day

    def args(allowed: set[str]):
        V.only_keys(request.args, allowed)
        return request.args

    def paging(a, keys: list[str], sort: str, order: str) -> tuple[str, str, int, int]:
        """sort, order, page and size of a list request (the same bounds for every list)."""
        return (V.choice(a.get("sort"), "sort", keys, sort), V.choice(a.get("order"), "order", ["asc", "desc"], order),
                V.integer(a.get("page"), "page", 1, 10**7, 1), V.integer(a.get("size"), "size", 1, V.MAX_PAGE_SIZE, 50))

    def expiry(body: dict):
        days = body.get("expires_days")
        if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650):
            raise V.Invalid("expires_days must be an integer in 1..3650 (or absent: no expiry)")
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=days) if days else None

    # -- errors ----------------------------------------------------------------------------
    @app.errorhandler(V.Invalid)
    def _invalid(e):
        return _error(400, "Bad Request", str(e))

    @app.errorhandler(NotFound)
    def _notfound(e):
        return _error(404, "Not Found", str(e))

    @app.errorhandler(Unprocessable)
    def _unprocessable(e):
        return _error(422, "Unprocessable Content", str(e))

    @app.errorhandler(BadData)
    @app.errorhandler(NotAFile)
    def _baddata(e):
        log.error("malformed results: %s", e)
        return _error(500, "Malformed Results", str(e))

    @app.errorhandler(StorageError)
    def _storage(e):
        log.error("storage: %s", e)
        return _error(503, "Storage Unavailable", str(e))

    @app.errorhandler(HTTPException)
    def _http(e):
        if e.code is not None and e.code < 400:  # routing redirects are not errors
            return e
        return _error(e.code or 500, e.name, e.description or e.name)

    @app.errorhandler(Exception)
    def _unexpected(e):
        log.exception("unexpected error on %s", request.path)
        return _error(500, "Internal Server Error", "unexpected error; see the server log")

    def _error(code: int, name: str, message: str):
        if is_api() or request.is_json:
            return jsonify({"error": name, "message": message, "status": code}), code
        return render_template("error.html", code=code, name=name, message=message, user=current_user()), code

    @app.after_request
    def _headers(resp):
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if config.secure_cookies:  # served over HTTPS: browsers must never fall back to plain HTTP
            resp.headers["Strict-Transport-Security"] = "max-age=31536000"
        if is_api() or request.endpoint not in ("static",):
            resp.headers["Cache-Control"] = "no-store"
        return resp

    @app.context_processor
    def _ctx():
        return {"csrf_token": csrf_token, "user": current_user(), "dev_mode": config.dev}

    # -- login -----------------------------------------------------------------------------
    def _authenticate(name: str, password: str) -> str | None:
        who = request.remote_addr or "?"
        if throttle.blocked(who):
            abort(429, description="too many failed logins; wait a few minutes")
        user = config.users.get(name)
        ok = check_password_hash(user.password_hash if user else _DUMMY_HASH, password)
        if not (user and ok):
            throttle.fail(who)
            log.warning("failed login for %r from %s", name, who)
            return None
        throttle.clear(who)
        sessions.end(session.get("sid"))
        session.clear()  # a new session id and CSRF token at every login: no fixation
        session.permanent = True
        session["user"] = user.name
        session["sid"] = sessions.start(user.name)
        g.pop("user", None)
        log.info("login %s (%s) from %s", user.name, user.role, who)
        return csrf_token()

    def _end_session() -> None:
        sessions.end(session.get("sid"))
        if session.get("user"):
            log.info("logout %s from %s", session.get("user"), request.remote_addr or "?")
        session.clear()
        g.pop("user", None)

    @app.get("/login")
    def login_page():
        return render_template("login.html", error=None, next=_safe_next(request.args.get("next")))

    @app.post("/login")
    def login_submit():
        check_csrf(request.form.get("csrf_token"))
        token = _authenticate(request.form.get("username", "")[:128], request.form.get("password", "")[:1024])
        nxt = _safe_next(request.form.get("next"))
        if token is None:
            return render_template("login.html", error="Wrong user name or password.", next=nxt), 401
        return redirect(nxt)

    @app.post("/logout")
    def logout():
        check_csrf(request.form.get("csrf_token"))
        _end_session()
        return redirect(url_for("login_page"))

    @app.post(f"{API}/login")
    def api_login():
        body = json_body()  # JSON only: a cross-site form cannot send it without CORS
        name, password = body.get("username"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise V.Invalid("username and password must be strings")
        token = _authenticate(name[:128], password[:1024])
        if token is None:
            abort(401, description="wrong user name or password")
        u = config.users[name[:128]]
        return jsonify({"user": u.name, "role": u.role, "csrf_token": token})

    @app.post(f"{API}/logout")
    @login_required
    def api_logout():
        check_csrf(request.headers.get("X-CSRF-Token"))
        _end_session()
        return jsonify({"ok": True})

    # -- pages -----------------------------------------------------------------------------
    @app.get("/")
    @login_required
    def days_page():
        return render_template("days.html", page="days")

    @app.get("/days/<day>")
    @login_required
    def day_page(day):
        return render_template("incidents.html", page="incidents", day=known_day(day))

    @app.get("/days/<day>/flows")
    @login_required
    def flows_page(day):
        return render_template("suspicious.html", page="suspicious", day=known_day(day))

    @app.get("/days/<day>/incidents/<incident_id>")
    @login_required
    def incident_page(day, incident_id):
        day, incident_id = known_day(day), V.incident_id(incident_id)
        incidents.shown(day, incidents.need(day), incident_id)  # 404 for an unknown incident, or one now all allow-listed
        return render_template("incident.html", page="incident", day=day, incident=incident_id, families=ATTACK_FAMILIES)

    @app.get("/days/<day>/hosts/<ip>")
    @login_required
    def host_page(day, ip):
        day, ip = known_day(day), V.ip(ip, "ip", required=True)
        return render_template("host.html", page="host", day=day, ip=ip)

    @app.get("/days/<day>/network")
    @login_required
    def network_page(day):
        return render_template("network.html", page="network", day=known_day(day))

    @app.get("/days/<day>/model")
    @login_required
    def model_page(day):
        return render_template("model.html", page="model", day=known_day(day))

    @app.get("/days/<day>/connection")
    @login_required
    def connection_page(day):
        day = known_day(day)
        sip = V.ip(request.args.get("sip"), "sip", required=True)
        dip = V.ip(request.args.get("dip"), "dip", required=True)
        return render_template("connection.html", page="connection", day=day, sip=sip, dip=dip)

    @app.get("/verdicts")
    @login_required
    def verdicts_page():
        return render_template("verdicts.html", page="verdicts")

    @app.get("/allowlist")
    @login_required
    def allowlist_page():
        return render_template("allowlist.html", page="allowlist")

    @app.get("/ingest")
    @login_required
    def ingest_page():
        return render_template("ingest.html", page="ingest")

    # -- API -------------------------------------------------------------------------------
    @app.get(f"{API}/health")
    def health():
        """Ok only when the results root exists and is a directory: an empty or mistyped --huser
        must not look healthy. Anonymous callers learn the storage kind, never its path."""
        try:
            root = storage.stat("")
            ok = root is not None and root.is_dir
            detail = "results root readable" if ok else "results root does not exist (check --huser)"
        except Exception as e:  # noqa: BLE001 - health reports any failure
            log.error("health: %s", e)
            ok, detail = False, "storage unreachable (see the server log)"
        return jsonify({"status": "ok" if ok else "degraded", "storage": getattr(storage, "kind", "storage"), "detail": detail}), (200 if ok else 503)

    @app.get(f"{API}/openapi.json")
    def openapi():
        spec = json.loads(resources.files("spot_ae_job.oa").joinpath("static/openapi.json").read_text())
        return jsonify(spec)

    @app.get(f"{API}/session")
    @login_required
    def api_session():
        return jsonify({"user": g.user.name, "role": g.user.role, "csrf_token": csrf_token()})

    @app.get(f"{API}/days")
    @login_required
    def api_days():
        args(set())
        days = results.days()
        unreadable = [{"day": d["day"], "reason": d["problem"]} for d in days if "problem" in d]
        return jsonify({"days": days, "unreadable": unreadable})

    @app.get(f"{API}/days/<day>/suspicious")
    @login_required
    def api_suspicious(day):
        day = known_day(day)
        a = args({"sort", "order", "ip", "port", "proto", "min_score", "max_score", "max_rank", "page", "size", "allowlisted"})
        f = Filters(
            ip=V.ip(a.get("ip")),
            port=V.port(a.get("port")),
            proto=V.proto(a.get("proto")),
            min_score=V.number(a.get("min_score"), "min_score"),
            max_score=V.number(a.get("max_score"), "max_score"),
            max_rank=V.integer(a.get("max_rank"), "max_rank", 1, 10**9),
        )
        sort, order, page, size = paging(a, V.SORT_KEYS, "rank", "asc")
        shown = V.choice(a.get("allowlisted"), "allowlisted", ["hide", "show", "only"], "hide")
        out = suspicious_page(results.table(day), f, sort, order, page, size, results.allowlist_marks(day), shown)
        for r, iid in zip(out["rows"], incidents.of_ranks(day, [r["rank"] for r in out["rows"]])):
            r["incident_id"] = iid
        return jsonify({"day": day, **out, "allowlisted": shown, "allowlist": results.allowlist_hidden(day)})

    @app.get(f"{API}/days/<day>/connections")
    @login_required
    def api_connections(day):
        day = known_day(day)
        a = args({"sip", "dip"})
        sip = V.ip(a.get("sip"), "sip", required=True)
        dip = V.ip(a.get("dip"), "dip", required=True)
        flows, unreadable = results.connection(day, sip, dip)
        for r, iid in zip(flows, incidents.of_ranks(day, [r.get("rank") for r in flows])):
            r["incident_id"] = iid
        return jsonify({"day": day, "sip": sip, "dip": dip, "count": len(flows), "flows": flows, "unreadable": unreadable})

    @app.get(f"{API}/days/<day>/network")
    @login_required
    def api_network(day):
        day = known_day(day)
        a = args({"top"})
        top = V.integer(a.get("top"), "top", 1, V.MAX_TOP, 100)
        return jsonify(results.network(day, top))

    @app.get(f"{API}/days/<day>/model")
    @login_required
    def api_model(day):
        day = known_day(day)
        args(set())
        return jsonify(results.model(day))

    @app.get(f"{API}/days/<day>/feedback")
    @login_required
    def api_feedback_list(day):
        day = known_day(day)
        args(set())
        when = incidents.flow_verdict_times(day)
        rows = [{**r, "when": when.get(tuple(r[k] for k in ("tstart", "srcIP", "dstIP", "sport", "dport", "ipkt", "ibyt")))}
                for r in results.feedback(day)]
        return jsonify({"day": day, "feedback": rows, "incidents": incidents.incident_verdicts(day)})

    @app.post(f"{API}/days/<day>/feedback")
    @api_write
    def api_feedback(day):
        day = known_day(day)
        args(set())
        body = json_body()
        extra = sorted(set(body) - {"rank", "sev", "expires_days"})
        if extra:
            raise V.Invalid(f"unknown field(s): {', '.join(extra)}")
        sev = V.severity(body.get("sev"))
        rank = body.get("rank")
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise V.Invalid("rank must be a positive integer (the flow's rank in the day's list)")
        expires = expiry(body)
        verdict = results.add_feedback(day, rank, sev, who=g.user.name, expires=expires)
        log.info("feedback %s rank %d sev %d by %s", day, rank, sev, g.user.name)
        return jsonify({"day": day, "rank": rank, "stored": verdict, "severity": V.SEVERITIES[sev]}), 201

    @app.get(f"{API}/days/<day>/incidents")
    @login_required
    def api_incidents(day):
        day = known_day(day)
        a = args({"sort", "order", "page", "size", "host", "family", "level", "min_severity"})
        sort, order, page, size = paging(a, V.INCIDENT_SORT_KEYS, "severity", "desc")
        return jsonify(incidents.page(day, V.ip(a.get("host"), "host"), V.word(a.get("family"), "family"),
                                      V.word(a.get("level"), "level"), V.integer(a.get("min_severity"), "min_severity", 0, 100),
                                      sort, order, page, size))

    @app.get(f"{API}/days/<day>/incidents/<incident_id>")
    @login_required
    def api_incident(day, incident_id):
        day, incident_id = known_day(day), V.incident_id(incident_id)
        args(set())
        return jsonify(incidents.detail(day, incident_id))

    @app.get(f"{API}/days/<day>/incidents/<incident_id>/flows")
    @login_required
    def api_incident_flows(day, incident_id):
        day, incident_id = known_day(day), V.incident_id(incident_id)
        a = args({"sort", "order", "page", "size"})
        return jsonify(incidents.flows(day, incident_id, *paging(a, V.MEMBER_SORT_KEYS, "rank", "asc")))

    @app.post(f"{API}/days/<day>/incidents/<incident_id>/verdict")
    @api_write
    def api_incident_verdict(day, incident_id):
        day, incident_id = known_day(day), V.incident_id(incident_id)
        args(set())
        body = json_body()
        extra = sorted(set(body) - {"sev", "expires_days", "family"})
        if extra:
            raise V.Invalid(f"unknown field(s): {', '.join(extra)}")
        sev = V.severity(body.get("sev"))
        fam = V.attack_family(body.get("family"), sev)
        out = incidents.add_verdict(day, incident_id, sev, g.user.name, expiry(body), family=fam)
        log.info("verdict %s incident %s sev %d family %s by %s (%d connections)", day, incident_id, out["sev"], fam,
                 g.user.name, out["connections"])
        return jsonify(out), 201

    @app.get(f"{API}/days/<day>/hosts/<ip>")
    @login_required
    def api_host(day, ip):
        day, ip = known_day(day), V.ip(ip, "ip", required=True)
        args(set())
        return jsonify(incidents.host(day, ip))

    @app.get(f"{API}/verdicts")
    @login_required
    def api_verdicts():
        args(set())
        return jsonify(results.verdicts_overview())

    @app.get(f"{API}/allowlist")
    @login_required
    def api_allowlist():
        args(set())
        return jsonify(results.allowlist_overview())

    @app.post(f"{API}/allowlist")
    @api_write
    def api_allowlist_add():
        args(set())
        body = json_body()
        fields = {"src", "dst", "sport", "dport", "proto", "hours", "both_ways", "why", "expires_days"}
        extra = sorted(set(body) - fields)
        if extra:
            raise V.Invalid(f"unknown field(s): {', '.join(extra)}")
        for k in fields - {"both_ways", "expires_days"}:
            if body.get(k) is not None and not isinstance(body[k], str):
                raise V.Invalid(f"{k} must be a string")
        if not isinstance(body.get("both_ways", False), bool):
            raise V.Invalid("both_ways must be true or false")
        expires = expiry(body)
        try:
            rule = allowlist.new_rule(src=body.get("src"), dst=body.get("dst"), sport=body.get("sport"), dport=body.get("dport"),
                                      proto=body.get("proto"), hours=body.get("hours"), both_ways=body.get("both_ways", False),
                                      who=g.user.name, why=body.get("why"), expires=expires)
        except SpotAEError as e:
            raise V.Invalid(str(e)) from None
        audit = results.allowlist_store().add(rule)
        log.info("allow-list rule %s added by %s: %s", rule.id, g.user.name, rule.describe())
        return jsonify({"rule": {**rule.to_json(), "describe": rule.describe()}, "audit": audit}), 201

    @app.post(f"{API}/allowlist/remove")
    @api_write
    def api_allowlist_remove():
        args(set())
        body = json_body()
        extra = sorted(set(body) - {"id", "why"})
        if extra:
            raise V.Invalid(f"unknown field(s): {', '.join(extra)}")
        rule_id = body.get("id")
        if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
            raise V.Invalid("id must be a rule id: 'a' and 15 hex digits")
        if not isinstance(body.get("why"), str):
            raise V.Invalid("why must be a string: say why this traffic may alert again")
        store = results.allowlist_store()
        known = {r.id for r in store.all_rules()[0]}
        if rule_id not in known:
            abort(404, description=f"no allow-list rule {rule_id}")
        try:
            audit = store.remove(rule_id, g.user.name, body["why"])
        except SpotAEError as e:
            raise V.Invalid(str(e)) from None
        log.info("allow-list rule %s removed by %s", rule_id, g.user.name)
        return jsonify({"removed": rule_id, "audit": audit})

    @app.get(f"{API}/ingest/summary")
    @login_required
    def api_ingest_summary():
        args(set())
        summary = results.ingest_summary()
        if summary is None:
            return jsonify({"available": False, "message": "no ingest summary", "hours": []})
        return jsonify({"available": True, **summary})

    return app


def _safe_next(target: str | None) -> str:
    """Only same-site absolute paths: never an open redirect to another host (and never a
    header with CR/LF in it)."""
    if isinstance(target, str) and _NEXT.match(target):
        return target
    return "/"
