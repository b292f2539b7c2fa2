"""Cost of the Community ID column on alerts, printed (no assertions).

Community ID comes from Corelight's `communityid` library, which has no vector API, so a pandas
UDF would loop over the rows in Python; the job computes IPv4 TCP/UDP/SCTP flows in Spark SQL
instead. This times N real flows of the CIC-IDS2018 excerpt (repeated): the library in one
process, then on local[2] a baseline (a sha2 column), the job's with_community_id, and the
library in a pandas UDF for every row.

    .venv/bin/python benchmarks/bench_community_id.py --rows 200000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from spot_ae_job.alerts import COMMUNITY_ID, _community_id_udf, community_ids, with_community_id  # noqa: E402
from spot_ae_job.spark import session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200000)
    a = ap.parse_args()
    import pandas as pd

    from spot_ae_job.cli import default_data

    csv = default_data() / "cicids2018" / "aegmm__toy_dataset.csv"
    raw = pd.read_csv(csv, usecols=["Src IP", "Dst IP", "Src Port", "Dst Port", "Protocol"])
    raw.columns = ["sip", "sport", "dip", "dport", "proto"]
    raw["proto"] = raw["proto"].map({6: "TCP", 17: "UDP", 1: "ICMP"}).fillna("0")
    reps = -(-a.rows // len(raw))
    pdf = pd.concat([raw] * reps, ignore_index=True).iloc[: a.rows]

    t = time.perf_counter()
    community_ids(pdf.sip, pdf.dip, pdf.sport, pdf.dport, pdf.proto)
    py = time.perf_counter() - t
    print(f"library in one process: {a.rows / py:,.0f} flows/s ({py:.2f} s for {a.rows:,})")

    spark = session("local[2]", app="bench-community-id")
    df = spark.createDataFrame(pdf).repartition(2).cache()
    df.count()
    base = df.withColumn("k", F.sha2(F.concat_ws("|", "sip", "dip", "sport", "dport", "proto"), 256))
    t = time.perf_counter()
    base.agg(F.sum(F.length("k"))).collect()
    t0 = time.perf_counter() - t
    t = time.perf_counter()
    with_community_id(base).agg(F.sum(F.length(COMMUNITY_ID))).collect()
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    base.withColumn(COMMUNITY_ID, _community_id_udf("sip", "dip", "sport", "dport", "proto")).agg(F.sum(F.length(COMMUNITY_ID))).collect()
    t2 = time.perf_counter() - t
    print(f"Spark local[2], {a.rows:,} flows: baseline {t0:.2f} s; with_community_id (Spark SQL for IPv4 "
          f"TCP/UDP/SCTP) {t1:.2f} s; library in a pandas UDF for every row {t2:.2f} s")
    spark.stop()


if __name__ == "__main__":
    main()
