"""One place that builds the SparkSession, so local runs, tests and YARN get the same settings."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from pyspark.sql import SparkSession

# The JVM scorer (score.py), built by scripts/build-jar.sh into the package; shipped to YARN
# executors by Spark itself (spark.jars).
SCORER_JAR = Path(__file__).resolve().parent / "jvm" / "spot-ae-score.jar"

# Arrow batches feed the vectorized scorer; a large batch amortises the JVM->Python hop.
DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    "spark.ui.showConsoleProgress": "false",
    "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "3",
    "spark.executorEnv.CUDA_VISIBLE_DEVICES": "",
}


def local_cores(master: str | None) -> int | None:
    """The cores of a `local`, `local[N]` or `local[*]` master; None for a cluster master."""
    m = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\s*\d+)?\])?", master or "")
    if not m:
        return None
    if m.group(1) == "*":
        return os.cpu_count() or 1
    return int(m.group(1) or 1)


def session(master: str | None = None, app: str = "spot-ae", extra: dict | None = None) -> SparkSession:
    """Get or create the session. On YARN the master comes from spark-submit, so None keeps it."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # TensorFlow's CUDA probing floods the log on CPU-only hosts; there is no GPU to find.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    b = SparkSession.builder.appName(app)
    if master:
        b = b.master(master)
        if master.startswith("local"):
            b = b.config("spark.driver.memory", os.environ.get("SPOT_AE_DRIVER_MEMORY", "4g"))
    conf = dict(DEFAULTS)
    if (cores := local_cores(master)) is not None:
        # Spark's 200 shuffle partitions are sized for clusters; on a few local cores, 200 tiny
        # tasks per shuffle are most of a small day's run time (and of every stream batch, where
        # adaptive execution cannot coalesce them).
        conf["spark.sql.shuffle.partitions"] = str(2 * cores)
    conf.update(extra or {})
    if SCORER_JAR.is_file():
        conf["spark.jars"] = ",".join(filter(None, [conf.get("spark.jars"), str(SCORER_JAR)]))
    for k, v in conf.items():
        b = b.config(k, v)
    s = b.getOrCreate()
    s.sparkContext.setLogLevel(os.environ.get("SPOT_AE_SPARK_LOGLEVEL", "WARN"))
    return s
