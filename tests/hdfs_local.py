"""A REAL single-node HDFS for tests and benchmarks: one NameNode and one DataNode run as
`java -cp CONF:artifacts/jars/* CLASS` on free loopback ports, in a temporary directory.

Why not a mock: ingest's promises (atomic rename as commit point, retry while the NameNode is
down, what Spark reads back) only mean something against HDFS itself. Start-up costs ~10 s once
per pytest session.

Use it from a test module with `pytest_plugins = ["tests.hdfs_local"]` (or import the fixtures):
- `hdfs_local` (session): the running `LocalHDFS` (`.hdfs_url`, `.http_url`, `.huser`,
  `.client()`, `.stop_namenode()`, `.start_namenode()`).
- `hdfs_huser` (per test): a fresh, empty Spot user root `hdfs://127.0.0.1:PORT/user/spot/t-...`
  so tests do not see each other's files.
Outside pytest (benchmarks, manual poking): `with LocalHDFS() as h: ...`, or
`python -m tests.hdfs_local` to keep one running until Ctrl-C.

The configuration written here is the minimum for a test daemon (addresses, directories); the
production configuration is rendered by the cluster images/Ansible roles. Settings that shape
how HDFS behaves rather than where it lives (`SHARED_SETTINGS`) are read from config/hadoop.env,
the cluster's one source, so tests and benchmarks see the deployed behaviour.
"""
from __future__ import annotations

import atexit
import getpass
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from spot_ae_job.storage import StorageError, WebHDFS
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[1]
JARS = Path(os.environ.get("SPOT_AE_JARS", REPO / "artifacts" / "jars"))
SETTINGS = REPO / "config" / "hadoop.env"
SHARED_SETTINGS = ("HDFS-SITE.XML_dfs.client.block.write.locateFollowingBlock.initial.delay.ms",)

# Hadoop's own launch scripts add these on Java 17 (PLATFORM.md).
JAVA17_OPENS = [
    f"--add-opens=java.base/{pkg}=ALL-UNNAMED"
    for pkg in ("java.lang", "java.util", "java.util.concurrent", "java.net", "java.io", "java.nio",
                "sun.nio.ch", "java.lang.reflect")
]
NAMENODE = "org.apache.hadoop.hdfs.server.namenode.NameNode"
DATANODE = "org.apache.hadoop.hdfs.server.datanode.DataNode"

LOG4J = """\
log4j.rootLogger=INFO, console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{ISO8601} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.eclipse.jetty=WARN
"""


def shared_hdfs_site() -> dict[str, str]:
    """SHARED_SETTINGS as hdfs-site properties, from config/hadoop.env (each must be there)."""
    values = {}
    for line in SETTINGS.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key] = value
    return {k.split("_", 1)[1]: values[k] for k in SHARED_SETTINGS}


def _site(props: dict[str, object]) -> str:
    rows = "".join(f"  <property><name>{k}</name><value>{v}</value></property>\n" for k, v in props.items())
    return f'<?xml version="1.0"?>\n<configuration>\n{rows}</configuration>\n'


class LocalHDFS:
    """NameNode + DataNode on loopback, data in `workdir` (a fresh temp dir by default)."""

    def __init__(self, workdir: str | os.PathLike | None = None, user: str = "spot", heap_mb: int = 384):
        if not any(JARS.glob("hadoop-hdfs-3*.jar")):
            raise RuntimeError(f"Hadoop jars missing in {JARS}: run scripts/fetch-jars.sh")
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="spot-ae-hdfs-"))
        self.user = user
        self.superuser = getpass.getuser()  # the OS user running the NameNode is HDFS's superuser
        self.heap_mb = heap_mb
        self.ports = {k: free_port() for k in ("rpc", "http", "dn_data", "dn_http", "dn_ipc")}
        self.hdfs_url = f"hdfs://127.0.0.1:{self.ports['rpc']}"
        self.http_url = f"http://127.0.0.1:{self.ports['http']}"
        self.huser = f"{self.hdfs_url}/user/{user}"
        self._procs: dict[str, subprocess.Popen] = {}
        self._write_conf()

    # -- configuration ----------------------------------------------------------------------
    def _write_conf(self) -> None:
        conf = self.dir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "core-site.xml").write_text(_site({
            "fs.defaultFS": self.hdfs_url,
            "hadoop.tmp.dir": self.dir / "tmp",
        }))
        (conf / "hdfs-site.xml").write_text(_site({
            "dfs.namenode.name.dir": self.dir / "name",
            "dfs.datanode.data.dir": self.dir / "data",
            "dfs.replication": 1,
            "dfs.namenode.rpc-address": f"127.0.0.1:{self.ports['rpc']}",
            "dfs.namenode.http-address": f"127.0.0.1:{self.ports['http']}",
            "dfs.datanode.address": f"127.0.0.1:{self.ports['dn_data']}",
            "dfs.datanode.http.address": f"127.0.0.1:{self.ports['dn_http']}",
            "dfs.datanode.ipc.address": f"127.0.0.1:{self.ports['dn_ipc']}",
            "dfs.datanode.hostname": "127.0.0.1",  # WebHDFS redirects clients to this name
            "dfs.namenode.datanode.registration.ip-hostname-check": "false",
            "dfs.namenode.safemode.extension": 0,
            "dfs.namenode.safemode.min.datanodes": 0,
            "dfs.heartbeat.interval": 1,
            "dfs.blocksize": 8 * 1024 * 1024,
            "dfs.namenode.fs-limits.min-block-size": 1024,
            "dfs.permissions.superusergroup": "supergroup",
            **shared_hdfs_site(),
        }))
        (conf / "log4j.properties").write_text(LOG4J)

    def _java(self, cls: str, *args: str) -> list[str]:
        return ["java", f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                *JAVA17_OPENS, "-Dhadoop.log.dir=" + str(self.dir / "logs"),
                "-cp", f"{self.dir / 'conf'}:{JARS}/*", cls, *args]

    # -- processes --------------------------------------------------------------------------
    def _spawn(self, name: str, cls: str) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        self._procs[name] = subprocess.Popen(self._java(cls), stdout=log, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _kill(self, name: str) -> None:
        proc = self._procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def start(self) -> "LocalHDFS":
        if not (self.dir / "name" / "current" / "VERSION").exists():  # format once, on an empty dir
            fmt = subprocess.run(self._java(NAMENODE, "-format", "-nonInteractive", "-force"),
                                 capture_output=True, text=True)
            if fmt.returncode != 0:
                raise RuntimeError(f"NameNode format failed:\n{fmt.stderr[-3000:]}")
        atexit.register(self.stop)
        self.start_namenode()
        self._spawn("datanode", DATANODE)
        self.wait_ready()
        admin = self.client(self.superuser)
        admin.mkdirs(f"/user/{self.user}")
        admin.set_owner(f"/user/{self.user}", owner=self.user)
        admin.mkdirs("/tmp")
        admin.set_permission("/tmp", "1777")
        return self

    def start_namenode(self, wait: bool = False) -> None:
        """(Re)start the NameNode on the same ports and metadata, e.g. after `stop_namenode()`."""
        self._spawn("namenode", NAMENODE)
        if wait:
            self.wait_ready()

    def stop_namenode(self) -> None:
        """Stop the NameNode only: HDFS is "down" for clients; the DataNode waits for it."""
        self._kill("namenode")

    def _jmx(self, query: str) -> dict:
        with urllib.request.urlopen(f"{self.http_url}/jmx?qry={query}", timeout=5) as r:
            return json.loads(r.read())["beans"][0]

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Ready = safe mode OFF and one live DataNode (the readiness STYLE.md asks for)."""
        deadline = time.monotonic() + timeout
        last = "not started"
        while time.monotonic() < deadline:
            for name, proc in self._procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                info = self._jmx("Hadoop:service=NameNode,name=NameNodeInfo")
                state = self._jmx("Hadoop:service=NameNode,name=FSNamesystemState")
                if not info.get("Safemode") and state.get("NumLiveDataNodes", 0) >= 1:
                    return
                last = f"safemode={info.get('Safemode')!r} live datanodes={state.get('NumLiveDataNodes')}"
            except (OSError, ValueError, KeyError, IndexError) as e:
                last = str(e)
            time.sleep(0.5)
        raise RuntimeError(f"local HDFS not ready after {timeout:.0f}s ({last}):\n{self.log_tail('namenode')}")

    def stop(self) -> None:
        for name in ("datanode", "namenode"):
            self._kill(name)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def client(self, user: str | None = None, timeout: float = 30.0) -> WebHDFS:
        return WebHDFS(self.http_url, user=user or self.user, timeout=timeout)

    def __enter__(self) -> "LocalHDFS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def hdfs_local():
    """One real HDFS for the whole test session."""
    h = LocalHDFS()
    try:
        h.start()
    except Exception:
        h.stop()
        raise
    yield h
    h.stop()


@pytest.fixture
def hdfs_huser(hdfs_local, request):
    """A fresh Spot user root on the local HDFS, e.g. hdfs://127.0.0.1:PORT/user/spot/t-abc123."""
    if hdfs_local._procs.get("namenode") is None:  # a test that stopped it must not break the next
        hdfs_local.start_namenode(wait=True)
    sub = f"/user/{hdfs_local.user}/t-{uuid.uuid4().hex[:10]}"
    hdfs_local.client().mkdirs(sub)
    yield f"{hdfs_local.hdfs_url}{sub}"
    try:
        hdfs_local.client().delete(sub, recursive=True)
    except StorageError:
        pass


if __name__ == "__main__":
    with LocalHDFS() as h:
        print(f"HDFS up: {h.hdfs_url}  WebHDFS: {h.http_url}  huser: {h.huser}  (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
