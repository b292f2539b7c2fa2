"""Loopback ports for the daemons and servers tests start."""
from __future__ import annotations

import random
import socket
from pathlib import Path


def free_port() -> int:
    """A loopback port free now, below the kernel's ephemeral range: a port the kernel hands
    out (bind to 0) may be taken by some outgoing connection before the daemon binds it (seen:
    a DataNode failing with "Address already in use")."""
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")
