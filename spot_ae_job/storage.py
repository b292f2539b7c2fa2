"""Spot's user tree on a local disk or on HDFS, without a JVM: what ingest and the OA read and write.

One module for both (they used to have a storage layer each): `open_storage(--huser)` gives a
`LocalStorage` (`file:///abs/dir`, a bare path) or a `WebHDFSStorage` (`hdfs://namenode:8020/...`,
reached over WebHDFS, the NameNode's REST API; `WebHDFS` below is its client on the standard
library). Why not Spark's Hadoop client (fsutil.py, the ML job's) or a PyPI package: the ingest
and OA images have no JVM, and the maintained Python HDFS clients need libhdfs/JNI or `requests`.

Paths. A storage is rooted at its user's `flow` tree (`Layout(huser).flow`); every path is either
a URI inside that tree, as layout.py builds them, or a path relative to it ("scored_results/D").
Each segment below the root is checked (`_segments`): no `..`, no absolute path, no odd
character, so even a caller that forgot to validate cannot reach outside the user's tree
(the OA builds paths from request parameters). Such a path is a ValueError: a bug, not an outage.

Errors. Every failure of the storage itself is a `StorageError` (`NotAFile` when a directory
stands where a file should be: bad data, not an outage). `retriable` says whether waiting can
help. Its message names the path below the user root (`flow/...`), never the server's layout:
OA callers see it. A `--huser` that is no usable root is a SpotAEError (the user's to fix).

Retries (`Retry`, the one policy). Retried: connection refused/reset/timed out, HTTP 5xx other
than missing file and permission, and Hadoop's "busy or starting" exceptions (safe mode, standby,
a NameNode that has restarted but has no block reports yet). Never retried: a missing file, a
permission, a file that exists, a local disk error. Waits double from `first_wait` up to
`max_wait`, for at most `attempts` tries, then the last error propagates. Two budgets:
`PATIENT` (ingest, default: 8 tries, 0.5 s doubling to 15 s, ~1 min in all: a NameNode restart
costs a wait, not data) and `INTERACTIVE` (the OA: 3 tries, 0.25 s then 0.5 s: an analyst's
request answers 503 within a second rather than hang).

Writes. `put` commits new data exactly once (a hidden temporary name, then a rename that refuses
an existing name: ingest's exactly-once rests on it); `write_atomic` replaces a file (the OA's
feedback file). A reader sees either the old file or the whole new one.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import stat as stat_mod
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import Layout

log = logging.getLogger(__name__)
T = TypeVar("T")
_SEGMENT = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.=-]*\Z")  # \Z: no trailing newline either
NAMENODE_HTTP_PORT = 9870  # the default --webhdfs is http://<namenode of --huser>:9870


class StorageError(Exception):
    """Storage could not be read or written (HDFS down, permission denied, disk error...).

    `retriable`: waiting and trying again can help. `status`/`exception`: the HTTP status and
    Hadoop's exception name, when WebHDFS sent them."""

    def __init__(self, message: str, *, retriable: bool = False, status: int | None = None,
                 exception: str | None = None):
        super().__init__(message)
        self.retriable = retriable
        self.status = status
        self.exception = exception


class NotAFile(StorageError):
    """A directory (or something else) stands where a file should be: bad data, not an outage."""


# -- the retry policy ------------------------------------------------------------------------

@dataclass(frozen=True)
class Retry:
    """Retry retriable StorageErrors: `attempts` tries, waits doubling from `first_wait` to `max_wait`."""

    attempts: int = 8
    first_wait: float = 0.5
    max_wait: float = 15.0

    def call(self, fn: Callable[[], T], what: str = "storage call", sleep: Callable[[float], None] = time.sleep) -> T:
        """`fn()`, retried while it raises a retriable StorageError; the last error propagates, so a
        caller never loses track of an operation that did not happen."""
        wait = self.first_wait
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except StorageError as e:
                if not e.retriable or attempt == self.attempts:
                    raise
                log.warning("%s failed (%s); retry %d/%d in %.1fs", what, e, attempt, self.attempts - 1, wait)
                sleep(wait)
                wait = min(wait * 2, self.max_wait)
        raise AssertionError("unreachable")


PATIENT = Retry(attempts=8, first_wait=0.5, max_wait=15.0)  # ingest and batch work: ~1 minute
INTERACTIVE = Retry(attempts=3, first_wait=0.25, max_wait=0.5)  # the OA: under a second


# -- roots -----------------------------------------------------------------------------------

def to_uri(path: str) -> str:
    """A bare local path becomes a file:// URI (made absolute); URIs pass through unchanged."""
    if "://" in path:
        return path
    return "file://" + os.path.abspath(path)


def root_uri(huser: str) -> str:
    """`--huser` checked and normalised: `file:///abs/dir` (also from a bare path) or
    `hdfs://namenode:port/abs/dir`, without a trailing slash. The one parser of `--huser`."""
    if not isinstance(huser, str) or not huser.strip():
        raise SpotAEError("--huser is empty: expected file:///abs/path or hdfs://namenode:8020/user/spot")
    u = urllib.parse.urlparse(huser)
    if u.scheme == "" and "://" not in huser:
        return to_uri(huser).rstrip("/") or "file:///"
    if u.scheme == "file":
        if u.netloc not in ("", "localhost") or not u.path.startswith("/"):
            raise SpotAEError(f"--huser {huser!r}: a file:// URI needs an absolute path (file:///abs/path)")
        return "file://" + (u.path.rstrip("/") or "/")
    if u.scheme == "hdfs":
        if not u.hostname or not u.path.startswith("/"):
            raise SpotAEError(f"--huser {huser!r}: expected hdfs://namenode:8020/abs/path")
        return huser.rstrip("/")
    raise SpotAEError(f"--huser {huser!r}: expected file:///abs/path or hdfs://namenode:8020/user/spot")


def _segments(rel: str) -> list[str]:
    """Split a relative path into safe segments: no '..', no absolute paths, no odd characters."""
    parts = [p for p in rel.split("/") if p != ""]
    for p in parts:
        if p in (".", "..") or not _SEGMENT.match(p):
            raise ValueError(f"unsafe path segment {p!r}")
    return parts


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime_ms: int


class Storage:
    """The operations ingest and the OA need, on one user's `flow` tree (see the module docstring)."""

    kind = "?"

    def __init__(self, huser: str):
        self.huser = root_uri(huser)
        self.layout = Layout(self.huser)
        self.root = self.layout.flow

    def rel(self, path: str) -> list[str]:
        """The checked segments of `path` below the root; a path outside it is a ValueError."""
        if "://" in path or path.startswith("/"):
            if path.rstrip("/") == self.root:
                return []
            if not path.startswith(self.root + "/"):
                raise ValueError(f"unsafe path segment: {path!r} is outside the user's flow tree")
            path = path[len(self.root) + 1:]
        return _segments(path)

    def shown(self, path: str) -> str:
        """How messages name `path`: below the user root, never the server's own layout."""
        return "/".join(["flow", *self.rel(path)])

    def describe(self) -> str:
        return self.root

    # each backend implements these; paths as in Storage.rel
    def stat(self, path: str) -> Entry | None: raise NotImplementedError
    def list(self, path: str) -> list[Entry]: raise NotImplementedError  # sorted by name, [] if missing
    def read(self, path: str) -> bytes: raise NotImplementedError
    def put(self, path: str, data: bytes) -> bool: raise NotImplementedError
    def write_atomic(self, path: str, data: bytes) -> None: raise NotImplementedError
    def delete(self, path: str) -> None: raise NotImplementedError

    def exists(self, path: str) -> bool:
        return self.stat(path) is not None

    def open(self, path: str):
        """A seekable binary file (pyarrow's Parquet reader wants one)."""
        return io.BytesIO(self.read(path))


# -- local disk ------------------------------------------------------------------------------

class LocalStorage(Storage):
    """`file:///abs/path/user/spot`: a laptop run, the tests, a single node."""

    kind = "file"

    def __init__(self, huser: str):
        super().__init__(huser)
        self.dir = Path(urllib.parse.urlparse(self.root).path)

    def _p(self, path: str) -> Path:
        return self.dir.joinpath(*self.rel(path))

    def _fail(self, what: str, path: str, e: OSError) -> StorageError:
        log.error("storage: cannot %s %s: %s", what, self._p(path), e)
        if isinstance(e, IsADirectoryError):
            return NotAFile(f"{self.shown(path)} is a directory, not a file")
        return StorageError(f"cannot {what} {self.shown(path)}: {e.strerror or type(e).__name__}")

    @staticmethod
    def _entry(p: Path, st: os.stat_result) -> Entry:
        return Entry(p.name, stat_mod.S_ISDIR(st.st_mode), st.st_size, int(st.st_mtime * 1000))

    def stat(self, path: str) -> Entry | None:
        p = self._p(path)
        try:
            return self._entry(p, p.stat())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise self._fail("stat", path, e) from e

    def list(self, path: str) -> list[Entry]:
        p = self._p(path)
        if not p.is_dir():
            return []
        try:
            children = sorted(p.iterdir())
        except OSError as e:
            raise self._fail("list", path, e) from e
        out = []
        for c in children:
            try:
                out.append(self._entry(c, c.stat()))
            except FileNotFoundError:  # gone since the listing, or a dangling link
                continue
            except OSError as e:
                raise self._fail("stat", f"{path}/{c.name}", e) from e
        return out

    def read(self, path: str) -> bytes:
        try:
            return self._p(path).read_bytes()
        except OSError as e:
            raise self._fail("read", path, e) from e

    def open(self, path: str):
        try:
            return open(self._p(path), "rb")  # seekable: pyarrow reads only the column chunks it needs
        except OSError as e:
            raise self._fail("read", path, e) from e

    def _temp(self, path: str, data: bytes) -> tuple[Path, str]:
        """`data` in a synced hidden temporary file beside `path` (parents made): (final, temp)."""
        p = self._p(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        except OSError as e:
            raise self._fail("write", path, e) from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException as e:
            os.unlink(tmp)
            if isinstance(e, OSError):
                raise self._fail("write", path, e) from e
            raise
        return p, tmp

    def put(self, path: str, data: bytes) -> bool:
        p, tmp = self._temp(path, data)
        try:
            os.link(tmp, p)  # like HDFS's rename: refuses an existing name
        except FileExistsError:
            return False
        except OSError as e:
            raise self._fail("write", path, e) from e
        finally:
            os.unlink(tmp)
        return True

    def write_atomic(self, path: str, data: bytes) -> None:
        p, tmp = self._temp(path, data)
        try:
            os.replace(tmp, p)
            # Hadoop's local file system keeps a checksum beside each file it wrote (`.name.crc`);
            # once the content changes that checksum is stale and Spark would refuse the file
            p.with_name(f".{p.name}.crc").unlink(missing_ok=True)
        except OSError as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise self._fail("write", path, e) from e

    def delete(self, path: str) -> None:
        """Remove one file; a missing one is fine."""
        try:
            self._p(path).unlink(missing_ok=True)
        except OSError as e:
            raise self._fail("delete", path, e) from e


# -- HDFS over WebHDFS -----------------------------------------------------------------------

# Hadoop exceptions that mean "the cluster is busy or starting": try again later.
# A NameNode that just restarted knows a file but not yet where its blocks are, until the
# DataNodes' block reports arrive (seconds): the same read then succeeds.
_RETRIABLE_MESSAGES = ("No active nodes contain this block", "Cannot obtain block length")
_RETRIABLE_EXCEPTIONS = {
    "SafeModeException", "RetriableException", "StandbyException", "ConnectException",
    "NoRouteToHostException", "ServerNotRunningYetException", "SocketTimeoutException",
    "EOFException",  # a DataNode's cached connection to a NameNode that has just restarted
}
_PERMANENT_EXCEPTIONS = ("FileNotFoundException", "AccessControlException")
_REDIRECTS = (301, 302, 303, 307, 308)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib hook
        return None  # surface the 307 so we can re-send the body to the DataNode ourselves


class WebHDFS:
    """`WebHDFS("http://namenode:9870", user="spot")`: one HTTP exchange per call, no retry
    (WebHDFSStorage adds the policy). Paths are absolute HDFS paths or hdfs:// URIs (only their
    path part is used). The NameNode answers CREATE, APPEND and OPEN with a 307 redirect to a
    DataNode; this client follows it itself, because urllib refuses to re-send a PUT/POST body."""

    def __init__(self, base_url: str = "http://namenode:9870", user: str = "spot", timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    # -- plumbing -------------------------------------------------------------------------
    @staticmethod
    def hdfs_path(path: str) -> str:
        """The absolute HDFS path of `path` (a plain path or an hdfs:// URI)."""
        if "://" in path:
            parsed = urllib.parse.urlparse(path)
            if parsed.scheme not in ("hdfs", "webhdfs"):
                raise StorageError(f"not an HDFS path: {path}")
            path = parsed.path
        if not path.startswith("/"):
            raise StorageError(f"HDFS paths must be absolute: {path!r}")
        return path

    def _url(self, path: str, op: str, **params: Any) -> str:
        q = {"op": op, "user.name": self.user}
        for k, v in params.items():
            if v is not None:
                q[k] = str(v).lower() if isinstance(v, bool) else str(v)
        quoted = urllib.parse.quote(self.hdfs_path(path))
        return f"{self.base_url}/webhdfs/v1{quoted}?{urllib.parse.urlencode(q)}"

    def _call(self, method: str, url: str, what: str, data: bytes | None = None, expect_redirect: bool = False):
        """One HTTP exchange; returns (status, headers, body). Raises StorageError on failure."""
        headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            if expect_redirect and e.code in _REDIRECTS and e.headers.get("Location"):
                return e.code, e.headers, body
            raise self._error(what, e.code, body) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise StorageError(f"WebHDFS {what}: cannot reach {urllib.parse.urlparse(url).netloc}: {reason}",
                               retriable=True) from None

    @staticmethod
    def _error(what: str, status: int, body: bytes) -> StorageError:
        exc, msg = None, body.decode("utf-8", "replace").strip()[:500]
        try:
            remote = json.loads(body)["RemoteException"]
            exc, msg = remote.get("exception"), remote.get("message", msg)
        except (ValueError, KeyError, TypeError):
            pass
        retriable = (status >= 500 and exc not in _PERMANENT_EXCEPTIONS) or exc in _RETRIABLE_EXCEPTIONS \
            or any(m in str(msg) for m in _RETRIABLE_MESSAGES)
        msg = str(msg).split("\n\tat ")[0].strip()  # keep Hadoop's message, not its Java stack
        text = f"WebHDFS {what}: HTTP {status} {exc or ''}: {msg}".replace("  ", " ")
        cls = NotAFile if "not a file" in msg.lower() else StorageError
        return cls(text, status=status, exception=exc, retriable=retriable)

    def _json(self, method: str, path: str, op: str, **params: Any) -> dict:
        _, _, body = self._call(method, self._url(path, op, **params), f"{op} {self.hdfs_path(path)}")
        return json.loads(body) if body else {}

    def _to_datanode(self, method: str, path: str, op: str, data: bytes, ok: tuple[int, ...], **params):
        """CREATE/APPEND: ask the NameNode where to send the bytes, then send them there."""
        what = f"{op} {self.hdfs_path(path)}"
        status, headers, _ = self._call(method, self._url(path, op, **params), what, expect_redirect=True)
        if status not in _REDIRECTS:
            raise StorageError(f"WebHDFS {what}: expected a redirect to a DataNode, got HTTP {status}")
        status, _, _ = self._call(method, headers["Location"], what, data=data)
        if status not in ok:
            raise StorageError(f"WebHDFS {what}: DataNode answered HTTP {status}", status=status)

    # -- the API --------------------------------------------------------------------------
    def status(self, path: str) -> dict | None:
        """FileStatus of `path` (type, length, modificationTime, ...), or None if it does not exist."""
        try:
            return self._json("GET", path, "GETFILESTATUS")["FileStatus"]
        except StorageError as e:
            if e.exception == "FileNotFoundException" or e.status == 404:
                return None
            raise

    def exists(self, path: str) -> bool:
        return self.status(path) is not None

    def list(self, path: str) -> list[dict]:
        """Entries of a directory (each a FileStatus with `pathSuffix` = the entry's name), sorted by name."""
        entries = self._json("GET", path, "LISTSTATUS")["FileStatuses"]["FileStatus"]
        return sorted(entries, key=lambda s: s["pathSuffix"])

    def read(self, path: str) -> bytes:
        what = f"OPEN {self.hdfs_path(path)}"
        status, headers, body = self._call("GET", self._url(path, "OPEN"), what, expect_redirect=True)
        if status in _REDIRECTS:
            _, _, body = self._call("GET", headers["Location"], what)
        return body

    def write(self, path: str, data: bytes, overwrite: bool = False) -> None:
        """Create `path` with `data`. Fails (FileAlreadyExistsException) if it exists and not `overwrite`."""
        self._to_datanode("PUT", path, "CREATE", bytes(data), (200, 201), overwrite=overwrite)

    def append(self, path: str, data: bytes) -> None:
        self._to_datanode("POST", path, "APPEND", bytes(data), (200,))

    def mkdirs(self, path: str) -> bool:
        """`mkdir -p`; True also when the directory already exists."""
        return bool(self._json("PUT", path, "MKDIRS")["boolean"])

    def rename(self, src: str, dst: str) -> bool:
        """HDFS's atomic rename. False (not an exception) when it is refused, e.g. `dst` exists
        as a file or its parent is missing. Like HDFS, an existing directory `dst` receives `src`
        inside it: callers that use rename as a commit point should rename onto file names."""
        return bool(self._json("PUT", src, "RENAME", destination=self.hdfs_path(dst))["boolean"])

    def delete(self, path: str, recursive: bool = False) -> bool:
        """True if something was deleted, False if `path` did not exist."""
        return bool(self._json("DELETE", path, "DELETE", recursive=recursive)["boolean"])

    def set_owner(self, path: str, owner: str | None = None, group: str | None = None) -> None:
        self._json("PUT", path, "SETOWNER", owner=owner, group=group)

    def set_permission(self, path: str, permission: str) -> None:
        self._json("PUT", path, "SETPERMISSION", permission=permission)

    def __repr__(self) -> str:
        return f"WebHDFS({self.base_url!r}, user={self.user!r})"


class WebHDFSStorage(Storage):
    """`hdfs://namenode:8020/user/spot`, reached at `http://namenode:9870` through WebHDFS; every
    call under the retry policy."""

    kind = "webhdfs"

    def __init__(self, huser: str, client: WebHDFS, retry: Retry = PATIENT):
        super().__init__(huser)
        self.client = client
        self.retry = retry
        self.dir = WebHDFS.hdfs_path(self.root)

    def describe(self) -> str:
        return f"webhdfs {self.client.base_url}{self.dir}"

    def _p(self, path: str) -> str:
        return "/".join([self.dir, *self.rel(path)])

    def _do(self, op: str, path: str, fn: Callable[[], T]) -> T:
        """`fn` under the retry policy; its final error names the path below the user root only."""
        try:
            return self.retry.call(fn, f"WebHDFS {op} {self.shown(path)}")
        except StorageError as e:
            log.error("storage: %s failed on %s: %s", op, self.describe(), e)
            e.args = (" ".join(str(e).replace(self.dir, "flow").split())[:300],)
            raise

    @staticmethod
    def _entry(name: str, st: dict) -> Entry:
        return Entry(name, st.get("type") == "DIRECTORY", int(st.get("length", 0)), int(st.get("modificationTime", 0)))

    def stat(self, path: str) -> Entry | None:
        p = self._p(path)
        st = self._do("status", path, lambda: self.client.status(p))
        return None if st is None else self._entry(p.rsplit("/", 1)[-1], st)

    def list(self, path: str) -> list[Entry]:
        p = self._p(path)
        if self.stat(path) is None:
            return []
        return [self._entry(st["pathSuffix"], st) for st in self._do("list", path, lambda: self.client.list(p))]

    def read(self, path: str) -> bytes:
        p = self._p(path)
        return self._do("read", path, lambda: self.client.read(p))

    def delete(self, path: str) -> None:
        p = self._p(path)
        self._do("delete", path, lambda: self.client.delete(p))

    def _temp(self, path: str, data: bytes, tag: str) -> tuple[str, str]:
        """`data` at a hidden temporary name beside `path` ('.' prefix: Spark skips it): (final, temp).
        CREATE makes missing parent directories."""
        p = self._p(path)
        parent, name = p.rsplit("/", 1)
        tmp = f"{parent}/.{name}.{tag}.tmp"
        self._do("write", path, lambda: self.client.write(tmp, data, overwrite=True))  # a retry may find its own
        return p, tmp

    def _rename(self, path: str, src: str, dst: str) -> bool:
        """A retried rename whose first try went through but whose answer was lost says False:
        then `src` is gone and `dst` is there, which is also success."""
        if self._do("rename", path, lambda: self.client.rename(src, dst)):
            return True
        return self._do("status", path, lambda: self.client.status(src) is None and self.client.status(dst) is not None)

    def put(self, path: str, data: bytes) -> bool:
        """Three HTTP requests (CREATE at the NameNode, the bytes to a DataNode, RENAME); the
        rename itself refuses an existing name, so no status check first and no mkdirs are
        needed. Only a refused rename costs more (is the name there, i.e. committed before?
        then drop our temporary copy)."""
        p, tmp = self._temp(path, data, uuid.uuid4().hex[:8])
        if self._do("rename", path, lambda: self.client.rename(tmp, p)):
            return True
        # Refused: the final name exists (committed before), or a retried rename had already
        # gone through (then tmp is gone and the name exists: also committed).
        committed = self._do("status", path, lambda: self.client.status(p)) is not None
        try:
            self.client.delete(tmp)
        except StorageError:
            pass  # a leftover hidden temporary file is harmless; the committed name is what counts
        if not committed:
            raise StorageError(f"HDFS refused to rename a temporary file onto {self.shown(path)}")
        return False

    def write_atomic(self, path: str, data: bytes) -> None:
        """WebHDFS RENAME will not replace an existing file, so the old one is first renamed aside
        and deleted after: a reader sees the old file, the new one, or (for an instant) none."""
        tag = uuid.uuid4().hex[:8]
        p, tmp = self._temp(path, data, tag)
        old = f"{tmp[:-len('.tmp')]}.old"
        had_old = self._do("status", path, lambda: self.client.status(p)) is not None
        if had_old and not self._rename(path, p, old):
            self._do("delete", path, lambda: self.client.delete(tmp))
            raise StorageError(f"could not move {self.shown(path)} aside")
        if not self._rename(path, tmp, p):
            if had_old:
                self._rename(path, old, p)
            raise StorageError(f"could not rename a temporary file onto {self.shown(path)}")
        if had_old:
            self._do("delete", path, lambda: self.client.delete(old))


def open_storage(huser: str, webhdfs: str | None = None, user: str | None = None, retry: Retry = PATIENT) -> Storage:
    """The storage of a `--huser`: `file:///abs/dir` (or a bare path), or `hdfs://namenode:8020/user/spot`
    through `--webhdfs` (default `http://<namenode>:9870`) as `user` (default $HADOOP_USER_NAME or spot)."""
    root = root_uri(huser)
    if root.startswith("file://"):
        return LocalStorage(root)
    base = webhdfs or f"http://{urllib.parse.urlparse(root).hostname}:{NAMENODE_HTTP_PORT}"
    return WebHDFSStorage(root, WebHDFS(base, user=user or os.environ.get("HADOOP_USER_NAME") or "spot"), retry)


_write_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def write_lock(key: str) -> threading.Lock:
    """One lock per file this process rewrites, so two analysts' verdicts never interleave."""
    with _locks_guard:
        return _write_locks.setdefault(key, threading.Lock())
