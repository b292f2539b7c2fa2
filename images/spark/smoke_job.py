"""Smoke job for Spark on YARN: proves executors run the baked venv (numpy and the job's
package import on the executors), and that they read and write Parquet on HDFS.
Usage: spark-submit --master yarn smoke_job.py N OUT_URI   -> prints `smoke: ...` lines."""
import sys

from pyspark.sql import SparkSession, functions as F


def on_executor(rows):
    import numpy as np

    import spot_ae_job.schema  # the job's own package, from PYSPARK_PYTHON's venv

    xs = np.array([r.id for r in rows], dtype=np.int64)
    yield (int((xs * xs).sum()), len(spot_ae_job.schema.FLOW_COLUMNS))


def main(n: int, out: str) -> None:
    spark = SparkSession.builder.appName("spot-ae-smoke").getOrCreate()
    spark.range(n, numPartitions=4).withColumn("sq", F.col("id") * F.col("id")).write.mode("overwrite").parquet(out)
    back = spark.read.parquet(out)
    parts = back.select("id").rdd.mapPartitions(on_executor).collect()
    print(f"smoke: master={spark.sparkContext.master} app={spark.sparkContext.applicationId}")
    print(f"smoke: rows={back.count()} sum_sq={sum(p[0] for p in parts)} flow_columns={parts[0][1]}")
    spark.stop()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
