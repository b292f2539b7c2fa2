"""Where ingest puts files: HDFS through WebHDFS, or a local directory for a laptop run.

Both offer one commit primitive, `put`: write under a hidden temporary name in the target
directory, then rename onto the final name. Rename is atomic on HDFS and on a POSIX file system,
so a reader (Spark, the OA) sees either no file or the whole file, and a name that already exists
means that output was committed before: the caller's exactly-once rests on that.
Every HDFS call goes through `with_retry` (bounded backoff), so a NameNode restart costs a wait,
not data.
"""
from __future__ import annotations

import os
import urllib.parse
import uuid
from pathlib import Path

from spot_ae_job.errors import SpotAEError
from spot_ae_job.webhdfs import WebHDFS, WebHDFSError, with_retry


class Store:
    """The operations ingest needs; paths are URIs below the Spot user root (`huser`)."""

    huser: str

    def put(self, uri: str, data: bytes) -> bool:
        """Commit `data` at `uri` atomically. False if `uri` already existed (left untouched)."""
        raise NotImplementedError

    def read(self, uri: str) -> bytes: raise NotImplementedError
    def exists(self, uri: str) -> bool: raise NotImplementedError
    def list(self, uri: str) -> list[str]: raise NotImplementedError  # names of entries, [] if missing
    def delete(self, uri: str) -> None: raise NotImplementedError


class LocalStore(Store):
    def __init__(self, huser: str):
        self.huser = huser.rstrip("/")

    @staticmethod
    def _p(uri: str) -> Path:
        return Path(urllib.parse.urlparse(uri).path if uri.startswith("file:") else uri)

    def put(self, uri: str, data: bytes) -> bool:
        p = self._p(uri)
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.exists():
            return False
        tmp = p.parent / f".{p.name}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)  # like HDFS rename: fails if the final name exists
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        return True

    def read(self, uri: str) -> bytes:
        return self._p(uri).read_bytes()

    def exists(self, uri: str) -> bool:
        return self._p(uri).exists()

    def list(self, uri: str) -> list[str]:
        p = self._p(uri)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []

    def delete(self, uri: str) -> None:
        p = self._p(uri)
        if p.is_file():
            p.unlink()


class WebHDFSStore(Store):
    def __init__(self, huser: str, client: WebHDFS, attempts: int = 8):
        self.huser = huser.rstrip("/")
        self.client = client
        self.attempts = attempts

    def _retry(self, fn, what: str):
        return with_retry(fn, attempts=self.attempts, what=what)

    def put(self, uri: str, data: bytes) -> bool:
        """Three HTTP requests (CREATE at the NameNode, the bytes to a DataNode, RENAME): CREATE
        makes missing parent directories, and the rename itself refuses an existing name, so
        neither a status check first nor a mkdirs is needed. Only a refused rename costs more
        (is the name there, i.e. committed before? then drop our temporary copy)."""
        path = WebHDFS.hdfs_path(uri)
        parent, name = path.rsplit("/", 1)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"  # hidden from Spark ('.' prefix)
        self._retry(lambda: self.client.write(tmp, data, overwrite=True), f"write {tmp}")
        if self._retry(lambda: self.client.rename(tmp, path), f"rename {tmp}"):
            return True
        # Refused: the final name exists (committed before), or a retried rename had already
        # gone through (then tmp is gone and the name exists: also committed).
        committed = self._retry(lambda: self.client.status(path), f"status {path}") is not None
        try:
            self.client.delete(tmp)
        except WebHDFSError:
            pass  # a leftover hidden temporary file is harmless; the committed name is what counts
        if not committed:
            raise SpotAEError(f"HDFS refused to rename {tmp} to {path}")
        return False

    def read(self, uri: str) -> bytes:
        return self._retry(lambda: self.client.read(WebHDFS.hdfs_path(uri)), f"read {uri}")

    def exists(self, uri: str) -> bool:
        return self._retry(lambda: self.client.status(WebHDFS.hdfs_path(uri)), f"status {uri}") is not None

    def list(self, uri: str) -> list[str]:
        path = WebHDFS.hdfs_path(uri)
        if not self.exists(uri):
            return []
        return [e["pathSuffix"] for e in self._retry(lambda: self.client.list(path), f"list {path}")]

    def delete(self, uri: str) -> None:
        self._retry(lambda: self.client.delete(WebHDFS.hdfs_path(uri)), f"delete {uri}")


def open_store(huser: str, webhdfs: str | None = None, user: str | None = None, attempts: int = 8) -> Store:
    """`--huser hdfs://nn:8020/user/spot --webhdfs http://nn:9870` or `--huser file:///abs/dir`."""
    scheme = urllib.parse.urlparse(huser).scheme
    if scheme in ("", "file"):
        path = urllib.parse.urlparse(huser).path if scheme else os.path.abspath(huser)
        return LocalStore("file://" + path)
    if scheme != "hdfs":
        raise SpotAEError(f"--huser must be hdfs://... or file://..., not {huser}")
    if not webhdfs:
        host = urllib.parse.urlparse(huser).hostname
        webhdfs = f"http://{host}:9870"  # the NameNode's default HTTP port
    user = user or os.environ.get("HADOOP_USER_NAME") or "spot"
    return WebHDFSStore(huser, WebHDFS(webhdfs, user=user), attempts=attempts)
