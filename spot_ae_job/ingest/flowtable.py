"""Writing flow-table partitions (and their labelled twin) from Spark DataFrames.

Spark writes each load into a staging directory; its files are then moved into the table's
`y=/m=/d=/h=` directories under names derived from the load's source, replacing only files
of that same source. Re-loading a file is therefore idempotent, and it never clobbers flows that
other sources (the nfcapd watcher) wrote into the same hours.
"""
from __future__ import annotations

import hashlib
import os
import uuid

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from spot_ae_job import fsutil
from spot_ae_job.errors import SpotAEError
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.layout import Day, Layout
from spot_ae_job.schema import FLOW_COLUMNS, LABEL_COLUMNS, PARTITIONED_FLOW_SCHEMA

PARTITION_TYPES = {f.name: f.dataType for f in PARTITIONED_FLOW_SCHEMA.fields if f.name in ("y", "m", "d", "h")}


def with_partitions(df: DataFrame, day: Day | str | None = None) -> DataFrame:
    """Add y/m/d/h from each flow's time; rows with no time take `day` (hour 0) if given."""
    if day is not None:
        d_ = day if isinstance(day, Day) else Day.parse(day)
        y, m, d = d_.year, d_.month, d_.day
        fy, fm, fd, fh = (F.coalesce(F.col(c), F.lit(v)) for c, v in (("tryear", y), ("trmonth", m), ("trday", d), ("trhour", 0)))
    else:
        fy, fm, fd, fh = (F.col(c) for c in ("tryear", "trmonth", "trday", "trhour"))
    return df.select("*", *[e.cast(PARTITION_TYPES[n]).alias(n) for n, e in zip("ymdh", (fy, fm, fd, fh))])


def _move_into_table(spark, staging: str, table: str, tag: str) -> list[str]:
    """Move staged part files into the table, replacing earlier files of the same tag."""
    jvm = spark._jvm
    root = jvm.org.apache.hadoop.fs.Path(staging)
    fs = root.getFileSystem(spark._jsc.hadoopConfiguration())
    it = fs.listFiles(root, True)
    moved_dirs: dict[str, list] = {}
    while it.hasNext():
        st = it.next()
        p = st.getPath()
        if not p.getName().startswith("part-"):
            continue
        rel = p.getParent().toString()[len(fs.makeQualified(root).toString()):].strip("/")
        moved_dirs.setdefault(rel, []).append(p)
    for rel, files in moved_dirs.items():
        target = jvm.org.apache.hadoop.fs.Path(f"{table}/{rel}")
        fs.mkdirs(target)
        for old in fs.listStatus(target):
            if old.getPath().getName().startswith(tag + "-"):
                fs.delete(old.getPath(), False)
        for i, p in enumerate(sorted(files, key=lambda x: x.getName())):
            if not fs.rename(p, jvm.org.apache.hadoop.fs.Path(target, f"{tag}-{i:05d}.parquet")):
                raise OSError(f"could not move {p} into {target}")
    fs.delete(root, True)
    return sorted(moved_dirs)


def write_flows(df: DataFrame, huser: str, source: str, day: Day | str | None = None) -> dict:
    """Write flows (FLOW_COLUMNS [+ LABEL_COLUMNS]) into the table; labels go to the twin only."""
    spark = df.sparkSession
    parted = with_partitions(df, day).cache()
    undated = parted.where(F.col("y").isNull()).count()
    if undated:
        raise SpotAEError(
            f"{undated} flows from {source} have no timestamp (this CSV layout has no Timestamp column): "
            "pass --day YYYYMMDD to load them as that day"
        )
    tag = "csv-" + hashlib.sha256(source.encode()).hexdigest()[:12]
    layout = Layout(huser)
    written = {}
    targets = [(layout.flow_table, FLOW_COLUMNS)]
    if all(c in df.columns for c in LABEL_COLUMNS):
        targets.append((layout.labelled, FLOW_COLUMNS + LABEL_COLUMNS))
    for table, cols in targets:
        staging = f"{layout.staging}/{uuid.uuid4().hex}"
        parted.select(*cols, "y", "m", "d", "h").write.partitionBy("y", "m", "d", "h").parquet(staging)
        written[table] = _move_into_table(spark, staging, table, tag)
    n = parted.count()
    parted.unpersist()
    return {"flows": n, "partitions": written[layout.flow_table]}


def load_csv(spark, huser: str, path: str, day: Day | None = None, say=print) -> dict:
    """`spot-ae load-csv`: one CIC-IDS2018 / CICFlowMeter CSV into the flow table (labels into the
    labelled twin); rows that fail validation go to quarantine with their reason."""
    res = read_cicids(spark, path)
    n_rej = res.rejects.count()
    if n_rej:
        qdir = Layout(huser).quarantine("csv")
        res.rejects.write.mode("append").parquet(qdir)
        by = {r[0]: r[1] for r in res.rejects.groupBy("reject_reason").count().collect()}
        say(f"{path}: {n_rej} rows rejected {by} -> {qdir}")
    out = write_flows(res.flows, huser, source=os.path.basename(path.rstrip("/")), day=day)
    say(f"{path}: {out['flows']} flows -> {len(out['partitions'])} partitions of {Layout(huser).flow_table}")
    return {**out, "rejected": n_rej}
