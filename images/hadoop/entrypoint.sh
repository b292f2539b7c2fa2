#!/usr/bin/env bash
# One image, every daemon: the first argument picks it, anything else is exec'd as given.
# Configuration is rendered whole from the settings (baked defaults + compose env_file) on
# every start, so a restart never accumulates or keeps stale properties.
set -euo pipefail

export HADOOP_CONF_DIR=${HADOOP_CONF_DIR:-/opt/hadoop/etc/hadoop}
export YARN_CONF_DIR=$HADOOP_CONF_DIR SPARK_CONF_DIR=${SPARK_CONF_DIR:-$HADOOP_CONF_DIR}
jars=/opt/hadoop/share/jars

python3 /opt/hadoop/bin/render_conf.py --env-file /opt/hadoop/etc/hadoop.env --out "$HADOOP_CONF_DIR" >/dev/null

# What Hadoop's own launcher adds on Java 17 (the NodeManager's Guice web app needs them).
java_opts=(
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  -Xmx"${HEAP:-512m}" -Dlog4j.configuration=file:"$HADOOP_CONF_DIR/log4j.properties"
  -Dhadoop.log.dir=/data/logs -Dhadoop.home.dir=/opt/hadoop -Dproc_"${1:-shell}"
)
run() { exec java "${java_opts[@]}" ${JAVA_OPTS:-} -cp "$HADOOP_CONF_DIR:$jars/*" "$@"; }

case "${1:-}" in
  namenode)
    # Format once, on an empty name dir only (the sentinel is Hadoop's own VERSION file).
    name_dir=$(python3 -c 'import sys,xml.etree.ElementTree as E
for p in E.parse(sys.argv[1]).getroot():
    if p.findtext("name")=="dfs.namenode.name.dir": print(p.findtext("value").removeprefix("file://"))' \
      "$HADOOP_CONF_DIR/hdfs-site.xml")
    if [[ ! -f ${name_dir:-/data/namenode}/current/VERSION ]]; then
      echo "entrypoint: formatting a new NameNode in ${name_dir:-/data/namenode}"
      java "${java_opts[@]}" -cp "$HADOOP_CONF_DIR:$jars/*" \
        org.apache.hadoop.hdfs.server.namenode.NameNode -format -nonInteractive -clusterID "${CLUSTER_ID:-spot-ae}"
    fi
    run org.apache.hadoop.hdfs.server.namenode.NameNode ;;
  datanode)        run org.apache.hadoop.hdfs.server.datanode.DataNode ;;
  resourcemanager) run org.apache.hadoop.yarn.server.resourcemanager.ResourceManager ;;
  nodemanager)     run org.apache.hadoop.yarn.server.nodemanager.NodeManager ;;
  spark-history)
    # Spark's own launcher from the baked venv's pyspark (spark image only).
    exec "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.history.HistoryServer ;;
  init)            exec /opt/hadoop/bin/init-hdfs.sh ;;
  client)
    # A long-lived shell host for `docker compose exec` (spark-submit, hdfs dfs, the ML job).
    echo "entrypoint: client ready"; exec sleep infinity ;;
  *) exec "$@" ;;
esac
