"""The OA's configuration file (TOML): who may log in, and how the server behaves.

    mode = "production"            # or "dev" (local demo only)
    secret_key = "..."             # signs session cookies; or secret_key_file = "/run/secrets/oa"
    secure_cookies = true          # set when served over HTTPS
    max_request_bytes = 16384
    session_hours = 8

    [users.alice]
    password_hash = "scrypt:32768:8:1$..."   # from `spot-ae oa hash-password`
    role = "analyst"                         # analyst: read + feedback; viewer: read only

Production mode refuses to start without users and never invents a password; dev mode with no
users creates one account with a random one-time password, printed once at start.
"""
from __future__ import annotations

import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from werkzeug.security import generate_password_hash

ROLES = ("analyst", "viewer")
_KEYS = {"mode", "secret_key", "secret_key_file", "secure_cookies", "max_request_bytes", "session_hours", "users", "cache_days"}


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
    session_hours: float = 8.0
    cache_days: int = 4
    users: dict[str, User] = field(default_factory=dict)
    one_time_password: str | None = None  # dev mode only: shown once by the CLI

    @property
    def dev(self) -> bool:
        return self.mode == "dev"


def load(path: str | None, huser: str, webhdfs: str | None = None, dev: bool = False) -> OAConfig:
    raw: dict = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
    cfg = OAConfig(huser=huser, webhdfs=webhdfs)
    cfg.mode = "dev" if dev else raw.get("mode", "production")
    if cfg.mode not in ("production", "dev"):
        raise ConfigError(f"mode must be 'production' or 'dev', got {cfg.mode!r}")
    cfg.secure_cookies = bool(raw.get("secure_cookies", False))
    cfg.max_request_bytes = _int(raw, "max_request_bytes", 16384, 1024, 1 << 20)
    cfg.cache_days = _int(raw, "cache_days", 4, 1, 64)
    cfg.session_hours = float(raw.get("session_hours", 8))
    if "secret_key_file" in raw:
        try:
            cfg.secret_key = Path(raw["secret_key_file"]).read_text().strip()
        except OSError as e:
            raise ConfigError(f"secret_key_file: {e}") from None
    else:
        cfg.secret_key = str(raw.get("secret_key", ""))
    if cfg.secret_key and len(cfg.secret_key) < 16:
        raise ConfigError("secret_key must be at least 16 characters")
    if not cfg.secret_key:
        cfg.secret_key = secrets.token_hex(32)  # sessions then end when the server restarts
    users = raw.get("users", {})
    if not isinstance(users, dict):
        raise ConfigError("[users] must be a table of [users.NAME] entries")
    for name, u in users.items():
        if not isinstance(u, dict) or not isinstance(u.get("password_hash"), str):
            raise ConfigError(f"user {name!r} needs password_hash (make one with `spot-ae oa hash-password`)")
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


def _int(raw: dict, key: str, default: int, lo: int, hi: int) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{key} must be an integer in {lo}..{hi}")
    return v
