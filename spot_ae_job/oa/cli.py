"""`spot-ae oa serve|hash-password`: run the OA web UI, or make a password hash for its config."""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys

from waitress import create_server
from werkzeug.security import generate_password_hash

from spot_ae_job.errors import SpotAEError
from spot_ae_job.oa.config import ConfigError, load


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spot-ae oa", description="Operational Analytics: the analysts' web UI")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the web UI and its JSON API")
    s.add_argument("--huser", default=os.environ.get("SPOT_AE_HUSER"),
                   help="Spot's user root: file:///abs/path or hdfs://namenode:8020/user/spot (default $SPOT_AE_HUSER)")
    s.add_argument("--webhdfs", default=os.environ.get("SPOT_AE_WEBHDFS"),
                   help="WebHDFS base URL for an hdfs:// huser (default http://<namenode>:9870)")
    s.add_argument("--hdfs-user", default="spot", help="user name for WebHDFS calls (default spot)")
    s.add_argument("--config", help="TOML file with [users.NAME] password hashes (required unless --dev)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--threads", type=int, default=8)
    s.add_argument("--dev", action="store_true",
                   help="local demo: if no users are configured, make one with a one-time password printed here")
    h = sub.add_parser("hash-password", help="print a password hash for the config file")
    h.add_argument("--password-stdin", action="store_true", help="read the password from stdin (for scripts)")
    return ap


def _hash(args) -> int:
    if args.password_stdin:
        pw = sys.stdin.readline().rstrip("\n")
    else:
        pw = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != pw:
            print("spot-ae oa: error: the passwords differ", file=sys.stderr)
            return 2
    if not 12 <= len(pw) <= 128:  # OWASP ASVS 2.1.1/2.1.2: at least 12, and long passphrases allowed
        print("spot-ae oa: error: use at least 12 characters (and at most 128)", file=sys.stderr)
        return 2
    print(generate_password_hash(pw))
    return 0


def _serve(args) -> int:
    if not args.huser:
        print("spot-ae oa: error: --huser is required (file:///abs/path or hdfs://namenode:8020/user/spot)", file=sys.stderr)
        return 2
    if not args.config and not args.dev:
        print("spot-ae oa: error: --config FILE is required in production mode (or --dev for a local demo)", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536 or not 1 <= args.threads <= 64:
        print("spot-ae oa: error: --port must be 1..65535 and --threads 1..64", file=sys.stderr)
        return 2
    # lazy: the app's pandas/pyarrow cost seconds, which `hash-password` and a refused setup need not pay
    from spot_ae_job.oa.app import create_app

    try:
        cfg = load(args.config, args.huser, args.webhdfs, dev=args.dev)
        cfg.hdfs_user = args.hdfs_user
        app = create_app(cfg)
    except (ConfigError, SpotAEError, ValueError) as e:
        print(f"spot-ae oa: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # bind first: a port in use is the operator's to fix, one line, not a traceback
        server = create_server(app, host=args.host, port=args.port, threads=args.threads, ident="spot-ae-oa")
    except (OSError, ValueError) as e:
        print(f"spot-ae oa: error: cannot listen on {args.host}:{args.port}: {getattr(e, 'strerror', None) or e}",
              file=sys.stderr)
        return 2
    storage = app.extensions["spot_oa"]["storage"]
    print(f"spot-ae oa: serving {storage.describe()} on http://{args.host}:{args.port}/ ({cfg.mode} mode, "
          f"{len(cfg.users)} user(s))", flush=True)
    if cfg.one_time_password:
        print(f"spot-ae oa: dev mode: log in as 'analyst' with the one-time password {cfg.one_time_password}", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    return _hash(args) if args.cmd == "hash-password" else _serve(args)
