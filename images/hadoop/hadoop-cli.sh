#!/usr/bin/env bash
# `hdfs dfs|dfsadmin|fsck ...` and `yarn node|application|logs ...` without Hadoop's tarball
# scripts: the same classes they call, on the image's jars and rendered configuration.
set -euo pipefail
conf=${HADOOP_CONF_DIR:-/opt/hadoop/etc/hadoop}
tool=$(basename "$0"); sub=${1:-}
case "$tool $sub" in
  "hdfs dfs")          cls=org.apache.hadoop.fs.FsShell ;;
  "hdfs dfsadmin")     cls=org.apache.hadoop.hdfs.tools.DFSAdmin ;;
  "hdfs fsck")         cls=org.apache.hadoop.hdfs.tools.DFSck ;;
  "hdfs getconf")      cls=org.apache.hadoop.hdfs.tools.GetConf ;;
  "yarn node")         cls=org.apache.hadoop.yarn.client.cli.NodeCLI ;;
  "yarn application")  cls=org.apache.hadoop.yarn.client.cli.ApplicationCLI ;;
  "yarn logs")         cls=org.apache.hadoop.yarn.client.cli.LogsCLI ;;
  *) echo "usage: hdfs dfs|dfsadmin|fsck|getconf ... | yarn node|application|logs ..." >&2; exit 2 ;;
esac
shift
# ApplicationCLI serves several sub-commands and reads which one from its first argument.
if [[ $sub == application ]]; then set -- "$sub" "$@"; fi
exec java -Xmx256m -XX:TieredStopAtLevel=1 -Dlog4j.configuration=file:"$conf/log4j.properties" \
  -Dhadoop.root.logger=WARN,console -cp "$conf:/opt/hadoop/share/jars/*" "$cls" "$@"
