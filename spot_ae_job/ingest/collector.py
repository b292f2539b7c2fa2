"""The NetFlow/IPFIX collector: nfdump's own `nfcapd`, run as a child process.

nfcapd receives NetFlow v5/v9 and IPFIX on UDP and writes `nfcapd.current.<pid>` in the spool,
renamed to `nfcapd.YYYYMMDDhhmm` when the interval closes (or when it is stopped): a file with the
final name is complete, which is what the watcher waits for. Stopping with SIGTERM makes nfcapd
close and rename its current file, so no received flow is left behind.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from spot_ae_job.errors import SpotAEError

log = logging.getLogger("spot_ae.ingest")


def parse_listen(listen: str) -> tuple[str, int]:
    """'0.0.0.0:2055' / ':2055' / '2055' -> (host, port)."""
    host, _, port = listen.rpartition(":")
    try:
        p = int(port)
    except ValueError:
        raise SpotAEError(f"--listen must be HOST:PORT, got {listen!r}") from None
    if not 0 < p < 65536:
        raise SpotAEError(f"--listen port out of range: {p}")
    return (host.strip("[]") or "0.0.0.0"), p


class Collector:
    def __init__(self, out_dir: str | os.PathLike, listen: str = "0.0.0.0:2055", interval: int = 60,
                 nfcapd: str = "nfcapd"):
        self.out_dir = Path(out_dir)
        self.host, self.port = parse_listen(listen)
        if interval < 2:
            raise SpotAEError("--interval must be at least 2 seconds")
        self.interval = interval
        self.nfcapd = nfcapd
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        cmd = [self.nfcapd, "-w", str(self.out_dir), "-p", str(self.port), "-t", str(self.interval), "-I", "spot-ae"]
        if self.host not in ("0.0.0.0", ""):
            cmd += ["-b", self.host]
        if ":" in self.host:
            cmd.append("-6")
        return cmd

    def start(self) -> "Collector":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out_dir.parent / "nfcapd.log"
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, "TZ": "UTC"})
        logf.close()
        time.sleep(0.3)
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
            raise SpotAEError(f"nfcapd failed to start on {self.host}:{self.port}: {' '.join(tail)}")
        log.info("collector: nfcapd pid %d on udp %s:%d, files every %ds into %s", self.proc.pid, self.host,
                 self.port, self.interval, self.out_dir)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM: nfcapd closes and renames its current file before it exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> "Collector":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
