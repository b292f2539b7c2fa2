"""The OA's configuration file (TOML): who may log in, and how the server behaves.

    mode = "production"            # or "dev" (local demo only)
    secret_key = "..."             # signs session cookies; or secret_key_file = "/run/secrets/oa"
    secure_cookies = true          # set when served over HTTPS
    max_request_bytes = 16384
    session_hours = 8              # a login lasts at most this long (0.1..12)
    idle_minutes = 30              # ... and ends after this long without a request

    [users.alice]
    password_hash = "scrypt:32768:8:1$..."   # from `spot-ae oa hash-password`
    role = "analyst"                         # analyst: read + feedback; viewer: read only

Production mode refuses to start without users and never invents a password; dev mode with no
users creates one account with a random one-time password, printed once at start.
"""
from __future__ import annotations

import math
import re
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.security import generate_password_hash

ROLES = ("analyst", "viewer")
_KEYS = {"mode", "secret_key", "secret_key_file", "secure_cookies", "max_request_bytes", "session_hours",
         "idle_minutes", "users", "cache_days"}
_USER_KEYS = {"password_hash", "role"}
_USER_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")  # shown in logs and pages: no odd characters
# OWASP ASVS 3.3.2 (level 2): log in again at least every 12 hours, and after 30 minutes idle
MAX_SESSION_HOURS = 12.0


class ConfigError(Exception):
    """The configuration is missing or wrong; the message says what to fix."""


@dataclass
class User:
    name: str
    password_hash: str
    role: str = "analyst"


@dataclass
class OAConfig:
    huser: str = ""
    webhdfs: str | None = None
    hdfs_user: str = "spot"
    mode: str = "production"
    secret_key: str = ""
    secure_cookies: bool = False
    max_request_bytes: int = 16384
    session_hours: float = 8.0  # a session ends this long after its login, used or not
    idle_minutes: int = 30  # ... and this long after its last request
    cache_days: int = 4
    users: dict[str, User] = field(default_factory=dict)
    one_time_password: str | None = None  # dev mode only: shown once by the CLI

    @property
    def dev(self) -> bool:
        return self.mode == "dev"


def load(path: str | None, huser: str, webhdfs: str | None = None, dev: bool = False) -> OAConfig:
    """The checked configuration; anything wrong is one ConfigError that says what to fix."""
    raw: dict = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {_one_line(e)}") from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(map(repr, unknown))}")
    cfg = OAConfig(huser=huser, webhdfs=webhdfs)
    cfg.mode = "dev" if dev else raw.get("mode", "production")
    if cfg.mode not in ("production", "dev"):
        raise ConfigError(f"mode must be 'production' or 'dev', got {cfg.mode!r}")
    cfg.secure_cookies = _bool(raw, "secure_cookies", False)
    cfg.max_request_bytes = _int(raw, "max_request_bytes", 16384, 1024, 1 << 20)
    cfg.cache_days = _int(raw, "cache_days", 4, 1, 64)
    cfg.idle_minutes = _int(raw, "idle_minutes", 30, 1, 720)
    hours = raw.get("session_hours", 8)
    if isinstance(hours, bool) or not isinstance(hours, (int, float)) or not math.isfinite(hours) \
            or not 0.1 <= hours <= MAX_SESSION_HOURS:
        raise ConfigError(f"session_hours must be a number in 0.1..{MAX_SESSION_HOURS:g} (hours a login lasts)")
    cfg.session_hours = float(hours)
    if "secret_key_file" in raw:
        key_file = raw["secret_key_file"]
        if not isinstance(key_file, str) or not key_file:
            raise ConfigError("secret_key_file must be a file name")
        try:
            cfg.secret_key = Path(key_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"secret_key_file {key_file!r} cannot be read: {getattr(e, 'strerror', None) or _one_line(e)}") from None
    else:
        cfg.secret_key = raw.get("secret_key", "")
        if not isinstance(cfg.secret_key, str):
            raise ConfigError("secret_key must be a string (at least 16 characters)")
    if cfg.secret_key and len(cfg.secret_key) < 16:
        raise ConfigError("secret_key must be at least 16 characters")
    if not cfg.secret_key:
        cfg.secret_key = secrets.token_hex(32)  # sessions then end when the server restarts
    users = raw.get("users", {})
    if not isinstance(users, dict):
        raise ConfigError("[users] must be a table of [users.NAME] entries")
    for name, u in users.items():
        if not _USER_NAME.match(name):
            raise ConfigError(f"user name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'")
        if not isinstance(u, dict) or not isinstance(u.get("password_hash"), str):
            raise ConfigError(f"user {name!r} needs password_hash (make one with `spot-ae oa hash-password`)")
        extra = sorted(set(u) - _USER_KEYS)
        if extra:
            raise ConfigError(f"user {name!r}: unknown key(s) {', '.join(map(repr, extra))}")
        if not u["password_hash"].startswith(("scrypt:", "pbkdf2:")):
            raise ConfigError(f"user {name!r}: password_hash must be a werkzeug hash (scrypt:... or pbkdf2:...), not a password")
        role = u.get("role", "analyst")
        if role not in ROLES:
            raise ConfigError(f"user {name!r}: role must be one of {', '.join(ROLES)}")
        cfg.users[name] = User(name, u["password_hash"], role)
    if not cfg.users:
        if not cfg.dev:
            raise ConfigError(
                "no users configured: production mode has no default password. Add [users.NAME] with a "
                "password_hash from `spot-ae oa hash-password` to the config file (or use --dev for a local demo)"
            )
        cfg.one_time_password = secrets.token_urlsafe(12)
        cfg.users["analyst"] = User("analyst", generate_password_hash(cfg.one_time_password), "analyst")
    return cfg


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())[:300]


def _bool(raw: dict, key: str, default: bool) -> bool:
    """TOML has booleans: a string such as "false" is a mistake, not a true value."""
    v = raw.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{key} must be true or false (without quotes), got {v!r}")
    return v


def _int(raw: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{key} must be an integer in {lo}..{hi}")
    return v
