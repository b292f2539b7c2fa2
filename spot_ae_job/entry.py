"""`spot-ae`: picks the module of the command asked for, and imports only that one.

The analysts' web UI (`spot-ae oa`) and the ingest (`spot-ae ingest`) run on nodes and images
without Spark or TensorFlow, so the command line cannot import the ML job's modules up front;
this dispatcher is the one place that is lazy. Every other module imports at its top.
"""
from __future__ import annotations

import importlib
import sys

MODULES = {"ingest": "spot_ae_job.ingest.cli", "oa": "spot_ae_job.oa.cli", "evaluate": "spot_ae_job.evaluate",
           "cross-check": "spot_ae_job.crosscheck", "allowlist": "spot_ae_job.allowlist_cli"}
DAY_COMMANDS = "spot_ae_job.cli"  # load-csv, train, score, ml-ops, demo, alerts, incidents, stream


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MODULES:
        return int(importlib.import_module(MODULES[argv[0]]).main(argv[1:]) or 0)
    return int(importlib.import_module(DAY_COMMANDS).main(argv) or 0)


def ml_ops_main(argv: list[str] | None = None) -> int:
    """`ml_ops YYYYMMDD flow [MAXRESULTS] [TOL]`, the name Spot's users type."""
    return int(importlib.import_module(DAY_COMMANDS).ml_ops_main(argv) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
