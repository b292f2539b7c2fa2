"""File operations on any Hadoop URI (file://, hdfs://) through Spark's own Hadoop client.

Spark already carries Hadoop's FileSystem API; using it keeps one code path for a laptop
(file://) and the cluster (hdfs://) and needs no second HDFS client in the job. The processes
without a JVM (ingest, the OA) use spot_ae_job/storage.py instead, which also owns `to_uri`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from pyspark.sql import SparkSession

from spot_ae_job.storage import to_uri


def _fs(spark: SparkSession, uri: str):
    jvm = spark._jvm
    p = jvm.org.apache.hadoop.fs.Path(uri)
    return p.getFileSystem(spark._jsc.hadoopConfiguration()), p


def _path(spark: SparkSession, uri: str):
    return spark._jvm.org.apache.hadoop.fs.Path(uri)


def exists(spark: SparkSession, uri: str) -> bool:
    fs, p = _fs(spark, uri)
    return bool(fs.exists(p))


def list_files(spark: SparkSession, uri: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Files at `uri` (a file, or the files directly inside a directory), sorted, as URIs."""
    fs, p = _fs(spark, uri)
    if not fs.exists(p):
        return []
    if fs.getFileStatus(p).isFile():
        return [p.toString()]
    out = []
    for st in fs.listStatus(p):
        name = st.getPath().getName()
        if st.isFile() and not name.startswith((".", "_")) and (not suffixes or name.lower().endswith(suffixes)):
            out.append(st.getPath().toString())
    return sorted(out)


def list_dirs(spark: SparkSession, uri: str) -> list[str]:
    fs, p = _fs(spark, uri)
    if not fs.exists(p):
        return []
    return sorted(st.getPath().getName() for st in fs.listStatus(p) if st.isDirectory())


def read_text(spark: SparkSession, uri: str) -> str:
    fs, p = _fs(spark, uri)
    stream = fs.open(p)
    try:
        buf = spark._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(buf).decode("utf-8")


def write_text(spark: SparkSession, uri: str, text: str) -> None:
    """Write via a temporary sibling and rename, so readers never see a half file."""
    fs, p = _fs(spark, uri)
    tmp = _path(spark, uri + "._tmp")
    out = fs.create(tmp, True)
    try:
        out.write(bytearray(text.encode("utf-8")))
    finally:
        out.close()
    if fs.exists(p):
        fs.delete(p, False)
    if not fs.rename(tmp, p):
        raise OSError(f"could not rename {tmp} to {uri}")


def delete(spark: SparkSession, uri: str, recursive: bool = True) -> None:
    fs, p = _fs(spark, uri)
    if fs.exists(p):
        fs.delete(p, recursive)


def rename(spark: SparkSession, src: str, dst: str) -> None:
    fs, s = _fs(spark, src)
    d = _path(spark, dst)
    if fs.exists(d):
        fs.delete(d, True)
    fs.mkdirs(d.getParent())
    if not fs.rename(s, d):
        raise OSError(f"could not rename {src} to {dst}")


def put_dir(spark: SparkSession, local_dir: str, uri: str) -> None:
    """Copy a local directory to `uri` (which must not exist yet)."""
    fs, p = _fs(spark, uri)
    fs.mkdirs(p.getParent())
    fs.copyFromLocalFile(False, True, _path(spark, to_uri(local_dir)), p)


def get_dir(spark: SparkSession, uri: str) -> Path:
    """Copy `uri` into a fresh local temporary directory and return its local path."""
    fs, p = _fs(spark, uri)
    if not fs.exists(p):
        raise FileNotFoundError(uri)
    dst = Path(tempfile.mkdtemp(prefix="spot-ae-")) / p.getName()
    fs.copyToLocalFile(False, p, _path(spark, to_uri(str(dst))), True)
    return dst


def model_dir(spark: SparkSession, models_uri: str, version: str = "latest") -> str:
    """`{models_uri}/{version}`, where "latest" is read from the LATEST pointer file that
    every model kind writes after saving."""
    base = models_uri.rstrip("/")
    if version == "latest":
        if not exists(spark, f"{base}/LATEST"):
            raise FileNotFoundError(f"no trained model under {base} (run `spot-ae train` or `ml-ops` first)")
        version = read_text(spark, f"{base}/LATEST").strip()
    return f"{base}/{version}"
