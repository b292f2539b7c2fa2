"""The one exception type the command line turns into a clear message and a non-zero exit."""
from __future__ import annotations

import os
import sys
from typing import Callable


class SpotAEError(Exception):
    """A problem the user can fix (bad input, missing data); shown without a traceback."""


def run_command(prog: str, fn: Callable, args) -> int:
    """Every entry point's exit: a SpotAEError is the user's to fix (exit 2, its message);
    anything else (a Spark or Hadoop failure) is one clear line (exit 1), the trace only with
    SPOT_AE_DEBUG=1."""
    try:
        rc = fn(args)
        return rc if isinstance(rc, int) else 0  # commands may return a result instead of a code
    except SpotAEError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if os.environ.get("SPOT_AE_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:500]
        print(f"{prog}: error: {type(e).__name__}: {first} (set SPOT_AE_DEBUG=1 for the full trace)", file=sys.stderr)
        return 1
