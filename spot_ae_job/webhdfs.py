"""A small WebHDFS REST client on the standard library.

Why not Spark's Hadoop client or a PyPI package: the ingest container must land files on HDFS
without a JVM per file, and the maintained Python HDFS clients either need libhdfs/JNI or pull in
`requests`; WebHDFS is HDFS's own public REST API and urllib speaks it fine.

The NameNode answers data operations (CREATE, APPEND, OPEN) with a 307 redirect to a DataNode;
this client follows it itself, because urllib refuses to re-send a PUT/POST body on a redirect.
Every failure becomes a `WebHDFSError` that says which operation on which path failed and why;
`retriable` tells a caller (the ingest watcher) whether waiting and trying again can help
(connection refused, NameNode in safe mode or restarting) or not (file missing, permission).
"""
from __future__ import annotations

import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

# Hadoop exceptions that mean "the cluster is busy or starting": try again later.
# A NameNode that just restarted knows a file but not yet where its blocks are, until the
# DataNodes' block reports arrive (seconds): the same read then succeeds.
_RETRIABLE_MESSAGES = ("No active nodes contain this block", "Cannot obtain block length")
_RETRIABLE_EXCEPTIONS = {
    "SafeModeException", "RetriableException", "StandbyException", "ConnectException",
    "NoRouteToHostException", "ServerNotRunningYetException", "SocketTimeoutException",
    "EOFException",  # a DataNode's cached connection to a NameNode that has just restarted
}


class WebHDFSError(Exception):
    """A WebHDFS call failed. `exception` is Hadoop's exception name when the server sent one."""

    def __init__(self, message: str, *, status: int | None = None, exception: str | None = None,
                 retriable: bool = False):
        super().__init__(message)
        self.status = status
        self.exception = exception
        self.retriable = retriable


def with_retry(fn: Callable[[], T], *, attempts: int = 8, first_wait: float = 0.5, max_wait: float = 15.0,
               what: str = "HDFS call", sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `fn`, retrying retriable WebHDFSErrors with doubling waits (bounded: `attempts` tries,
    waits capped at `max_wait`; ~1 minute in all by default). Non-retriable errors and the last
    retriable one propagate, so a caller never loses track of an operation that did not happen."""
    wait = first_wait
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except WebHDFSError as e:
            if not e.retriable or attempt == attempts:
                raise
            log.warning("%s failed (%s); retry %d/%d in %.1fs", what, e, attempt, attempts - 1, wait)
            sleep(wait)
            wait = min(wait * 2, max_wait)
    raise AssertionError("unreachable")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401 - urllib hook
        return None  # surface the 307 so we can re-send the body to the DataNode ourselves


class WebHDFS:
    """`WebHDFS("http://namenode:9870", user="spot")`; paths are absolute HDFS paths.

    `hdfs://host:port/abs/path` URIs are accepted too (only their path part is used), so callers
    can pass the same `--huser` value they give Spark.
    """

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
                raise WebHDFSError(f"not an HDFS path: {path}")
            path = parsed.path
        if not path.startswith("/"):
            raise WebHDFSError(f"HDFS paths must be absolute: {path!r}")
        return path

    def _url(self, path: str, op: str, **params: Any) -> str:
        q = {"op": op, "user.name": self.user}
        for k, v in params.items():
            if v is not None:
                q[k] = str(v).lower() if isinstance(v, bool) else str(v)
        quoted = urllib.parse.quote(self.hdfs_path(path))
        return f"{self.base_url}/webhdfs/v1{quoted}?{urllib.parse.urlencode(q)}"

    def _call(self, method: str, url: str, what: str, data: bytes | None = None,
              expect_redirect: bool = False):
        """One HTTP exchange; returns (status, headers, body). Raises WebHDFSError on failure."""
        headers = {"Content-Type": "application/octet-stream"} if data is not None else {}
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            if expect_redirect and e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                return e.code, e.headers, body
            raise self._error(what, e.code, body) from None
        except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise WebHDFSError(f"{what}: cannot reach {urllib.parse.urlparse(url).netloc}: {reason}",
                               retriable=True) from None

    @staticmethod
    def _error(what: str, status: int, body: bytes) -> WebHDFSError:
        exc, msg = None, body.decode("utf-8", "replace").strip()[:500]
        try:
            remote = json.loads(body)["RemoteException"]
            exc, msg = remote.get("exception"), remote.get("message", msg)
        except (ValueError, KeyError, TypeError):
            pass
        retriable = (status >= 500 and exc not in ("FileNotFoundException", "AccessControlException")) \
            or exc in _RETRIABLE_EXCEPTIONS \
            or any(m in str(msg) for m in _RETRIABLE_MESSAGES)
        msg = str(msg).split("\n\tat ")[0].strip()  # keep Hadoop's message, not its Java stack
        return WebHDFSError(f"{what}: HTTP {status} {exc or ''}: {msg}".replace("  ", " "),
                            status=status, exception=exc, retriable=retriable)

    def _json(self, method: str, path: str, op: str, **params: Any) -> dict:
        what = f"{op} {self.hdfs_path(path)}"
        _, _, body = self._call(method, self._url(path, op, **params), what)
        return json.loads(body) if body else {}

    def _to_datanode(self, method: str, path: str, op: str, data: bytes, ok: tuple[int, ...], **params):
        """CREATE/APPEND: ask the NameNode where to send the bytes, then send them there."""
        what = f"{op} {self.hdfs_path(path)}"
        status, headers, _ = self._call(method, self._url(path, op, **params), what, expect_redirect=True)
        if status not in (307, 302, 301, 303, 308):
            raise WebHDFSError(f"{what}: expected a redirect to a DataNode, got HTTP {status}")
        status, _, _ = self._call(method, headers["Location"], what, data=data)
        if status not in ok:
            raise WebHDFSError(f"{what}: DataNode answered HTTP {status}", status=status)

    # -- the API --------------------------------------------------------------------------
    def status(self, path: str) -> dict | None:
        """FileStatus of `path` (type, length, modificationTime, ...), or None if it does not exist."""
        try:
            return self._json("GET", path, "GETFILESTATUS")["FileStatus"]
        except WebHDFSError as e:
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
        if status in (301, 302, 303, 307, 308):
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
