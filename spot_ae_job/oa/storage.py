"""Where the OA reads results and writes verdicts: `{huser}/flow/...` on a local disk or on HDFS.

The OA runs in its own small image without a JVM, so HDFS is reached over WebHDFS (the NameNode's
REST API, spot_ae_job/webhdfs.py) rather than through Spark's Hadoop client. Both backends take
paths *relative to `{huser}/flow`*, built by the OA from validated parts only; `_clean` refuses
anything that could climb out of that root even if a caller forgot to validate.
"""
from __future__ import annotations

import io
import logging
import os
import re
import stat as stat_mod
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("spot_ae_job.oa")
_SEGMENT = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.=-]*\Z")  # \Z: no trailing newline either


class StorageError(Exception):
    """Storage could not be read or written (HDFS down, permission denied...).

    Messages name paths relative to `{huser}/flow` only: they reach API callers, and the server's
    own directory layout is none of their business (the full path goes to the server log)."""


class NotAFile(StorageError):
    """A directory (or something else) stands where a results file should be: bad data, not an outage."""


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int
    mtime_ms: int


def _clean(rel: str) -> list[str]:
    """Split a relative path into safe segments: no '..', no absolute paths, no odd characters."""
    parts = [p for p in rel.split("/") if p != ""]
    for p in parts:
        if p in (".", "..") or not _SEGMENT.match(p):
            raise ValueError(f"unsafe path segment {p!r}")
    return parts


class LocalStorage:
    """`file:///abs/path/user/spot`: the laptop and test backend."""

    kind = "file"

    def __init__(self, huser_path: str):
        self.root = Path(huser_path) / "flow"

    def describe(self) -> str:
        return f"file://{self.root}"

    def _p(self, rel: str) -> Path:
        return self.root.joinpath(*_clean(rel))

    def _fail(self, what: str, rel: str, e: OSError) -> StorageError:
        log.error("storage: cannot %s %s: %s", what, self._p(rel), e)
        if isinstance(e, IsADirectoryError):
            return NotAFile(f"{rel} is a directory, not a file")
        return StorageError(f"cannot {what} {rel}: {e.strerror or type(e).__name__}")

    def stat(self, rel: str) -> Entry | None:
        p = self._p(rel)
        try:
            st = p.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise self._fail("stat", rel, e) from e
        return Entry(p.name, stat_mod.S_ISDIR(st.st_mode), st.st_size, int(st.st_mtime * 1000))

    def list(self, rel: str) -> list[Entry]:
        p = self._p(rel)
        if not p.is_dir():
            return []
        out = []
        try:
            children = sorted(p.iterdir())
        except OSError as e:
            raise self._fail("list", rel, e) from e
        for c in children:
            try:
                st = c.stat()
            except FileNotFoundError:  # gone since the listing, or a dangling link
                continue
            except OSError as e:
                raise self._fail("stat", f"{rel}/{c.name}", e) from e
            out.append(Entry(c.name, stat_mod.S_ISDIR(st.st_mode), st.st_size, int(st.st_mtime * 1000)))
        return out

    def read(self, rel: str) -> bytes:
        p = self._p(rel)
        try:
            return p.read_bytes()
        except OSError as e:
            raise self._fail("read", rel, e) from e

    def open(self, rel: str):
        """A seekable file for pyarrow (reads only the column chunks it needs)."""
        try:
            return open(self._p(rel), "rb")
        except OSError as e:
            raise self._fail("read", rel, e) from e

    def delete(self, rel: str) -> None:
        """Remove one file (undoing a write whose partner failed)."""
        try:
            self._p(rel).unlink(missing_ok=True)
        except OSError as e:
            raise self._fail("delete", rel, e) from e

    def write_atomic(self, rel: str, data: bytes) -> None:
        p = self._p(rel)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        except OSError as e:
            raise self._fail("write", rel, e) from e
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
            # Hadoop's local file system keeps a checksum beside each file it wrote (`.name.crc`);
            # once the content changes that checksum is stale and Spark would refuse the file
            p.with_name(f".{p.name}.crc").unlink(missing_ok=True)
        except BaseException as e:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(e, OSError):
                raise self._fail("write", rel, e) from e
            raise


class _WebHDFSFile(io.RawIOBase):
    """Read-only seekable view of an HDFS file, for pyarrow's Parquet reader.

    Reads the whole file on first use: WebHDFS range reads would save bytes, but the client's
    contract is `read(path) -> bytes`, and Parquet part files of one day are modest.
    """

    def __init__(self, client, path: str):
        self._buf = io.BytesIO(client.read(path))

    def readable(self):
        return True

    def seekable(self):
        return True

    def readinto(self, b):
        data = self._buf.read(len(b))
        b[: len(data)] = data
        return len(data)

    def seek(self, pos, whence=0):
        return self._buf.seek(pos, whence)

    def tell(self):
        return self._buf.tell()


class WebHDFSStorage:
    """`hdfs://namenode:8020/user/spot` reached at `http://namenode:9870` through WebHDFS."""

    kind = "webhdfs"

    def __init__(self, client, huser_path: str):
        self.client = client
        self.root = "/" + "/".join(_clean(huser_path)) + "/flow"

    def describe(self) -> str:
        return f"webhdfs {getattr(self.client, 'base_url', '?')}{self.root}"

    def _p(self, rel: str) -> str:
        parts = _clean(rel)
        return self.root + ("/" + "/".join(parts) if parts else "")

    @staticmethod
    def _entry(name: str, st: dict) -> Entry:
        return Entry(name, st.get("type") == "DIRECTORY", int(st.get("length", 0)), int(st.get("modificationTime", 0)))

    def _call(self, what: str, fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:  # WebHDFSError, URLError, socket errors: one message for the API
            log.error("storage: WebHDFS %s failed: %s", what, e)
            text = " ".join(str(e).replace(self.root, "flow").split())[:300]  # no server paths for callers
            if "not a file" in text.lower():
                raise NotAFile(f"WebHDFS {what}: a directory stands where a file should be ({text})") from e
            raise StorageError(f"WebHDFS {what} failed: {text}") from e

    def stat(self, rel: str) -> Entry | None:
        p = self._p(rel)
        st = self._call("status", self.client.status, p)
        return None if st is None else self._entry(p.rsplit("/", 1)[-1], st)

    def list(self, rel: str) -> list[Entry]:
        p = self._p(rel)
        if self._call("status", self.client.status, p) is None:
            return []
        return sorted((self._entry(st["pathSuffix"], st) for st in self._call("list", self.client.list, p)), key=lambda e: e.name)

    def read(self, rel: str) -> bytes:
        return self._call("read", self.client.read, self._p(rel))

    def open(self, rel: str):
        return io.BufferedReader(self._call("read", _WebHDFSFile, self.client, self._p(rel)))

    def delete(self, rel: str) -> None:
        self._call("delete", self.client.delete, self._p(rel))

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Write a temp file beside the target, then rename it into place.

        WebHDFS RENAME will not replace an existing file, so the old one is first renamed aside
        and deleted after: a reader sees the old file, the new one, or (for an instant) none.
        """
        p = self._p(rel)
        parent, name = p.rsplit("/", 1)
        tag = uuid.uuid4().hex[:8]
        tmp, old = f"{parent}/.{name}.{tag}.tmp", f"{parent}/.{name}.{tag}.old"
        self._call("mkdirs", self.client.mkdirs, parent)
        self._call("write", self.client.write, tmp, data, overwrite=False)
        had_old = self._call("status", self.client.status, p) is not None
        if had_old and not self._call("rename", self.client.rename, p, old):
            self._call("delete", self.client.delete, tmp)
            raise StorageError(f"could not move {p} aside")
        if not self._call("rename", self.client.rename, tmp, p):
            if had_old:
                self._call("rename", self.client.rename, old, p)
            raise StorageError(f"could not rename {tmp} to {p}")
        if had_old:
            self._call("delete", self.client.delete, old)


def open_storage(huser: str, webhdfs: str | None = None, user: str = "spot"):
    """The backend for a `--huser` URI: file:///abs/path, or hdfs://host:port/path (needs --webhdfs)."""
    u = urlparse(huser)
    if u.scheme == "file":
        if u.netloc not in ("", "localhost") or not u.path.startswith("/"):
            raise ValueError(f"--huser {huser!r}: a file:// URI needs an absolute path")
        return LocalStorage(u.path)
    if u.scheme == "hdfs":
        base = webhdfs or f"http://{u.hostname}:9870"
        from spot_ae_job.webhdfs import WebHDFS

        return WebHDFSStorage(WebHDFS(base_url=base, user=user), u.path)
    if u.scheme == "" and huser.startswith("/"):
        return LocalStorage(huser)
    raise ValueError(f"--huser {huser!r}: expected file:///abs/path or hdfs://namenode:8020/user/spot")


_write_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def write_lock(key: str) -> threading.Lock:
    """One lock per file this process rewrites, so two analysts' verdicts never interleave."""
    with _locks_guard:
        return _write_locks.setdefault(key, threading.Lock())
