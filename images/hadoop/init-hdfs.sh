#!/usr/bin/env bash
# One-shot cluster initialisation (the compose `init` service; `cluster.sh up` re-runs it):
# Spot's HDFS layout owned by spot, Spark's event-log dir, and pyspark's jars staged once as
# the spark.yarn.archive zip. Idempotent: mkdir -p, and the zip is uploaded only when absent.
set -euo pipefail
huser=${SPOT_HUSER:-/user/spot}
archive=$(awk '$1 == "spark.yarn.archive" {print $2}' "$SPARK_CONF_DIR/spark-defaults.conf")

hdfs dfs -mkdir -p "$huser"/flow/{hive,labelled,scored_results,models,ingest_summary,quarantine} \
  /tmp/logs /spark-history /apps/spark
hdfs dfs -chmod 1777 /tmp /tmp/logs /spark-history
hdfs dfs -chmod -R 755 "$huser"
echo "init: HDFS layout ready under $huser"

if [[ -n $archive && -n ${SPARK_HOME:-} ]]; then
  if hdfs dfs -test -e "$archive"; then
    echo "init: $archive already staged"
  else
    zip=$(mktemp /tmp/spark-jars.XXXXXX.zip)
    # Stored, not deflated: jars are compressed already, and YARN unpacks it on every node.
    python3 - "$SPARK_HOME/jars" "$zip" <<'PY'
import os, sys, zipfile
src, out = sys.argv[1:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
    for name in sorted(os.listdir(src)):
        if name.endswith(".jar"):
            z.write(os.path.join(src, name), name)
PY
    hdfs dfs -put -f "$zip" "$archive"
    rm -f "$zip"
    echo "init: staged pyspark's jars as $archive"
  fi
fi
