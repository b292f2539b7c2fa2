#!/usr/bin/env python3
"""Container health = READINESS, asked over each daemon's own HTTP API (no JVM per probe).

namenode        safe mode OFF and live DataNodes >= dfs.replication
datanode        registered with (and heartbeating to) the NameNode
resourcemanager at least one active NodeManager
nodemanager     the NodeManager reports itself healthy
spark-history   the history server answers its REST API
Exit 0 = ready; 1 = not yet, with the reason on stdout (shown by `docker inspect`).
"""
from __future__ import annotations

import json
import os
import sys
import urllib.request
import xml.etree.ElementTree as ET

CONF = os.environ.get("HADOOP_CONF_DIR", "/opt/hadoop/etc/hadoop")


def get(url: str):
    with urllib.request.urlopen(url, timeout=4) as r:
        return json.load(r)


def conf(fname: str, name: str, default: str) -> str:
    try:
        for p in ET.parse(os.path.join(CONF, fname)).getroot():
            if p.findtext("name") == name:
                return p.findtext("value") or default
    except (OSError, ET.ParseError):
        pass
    return default


def jmx(port: int, query: str) -> dict:
    beans = get(f"http://127.0.0.1:{port}/jmx?qry={query}").get("beans", [])
    return beans[0] if beans else {}


def namenode() -> str | None:
    info = jmx(9870, "Hadoop:service=NameNode,name=NameNodeInfo")
    if not info:
        return "NameNode JMX not up"
    if info.get("Safemode"):
        return "safe mode: " + info["Safemode"][:200]
    live = len(json.loads(info.get("LiveNodes") or "{}"))
    want = int(conf("hdfs-site.xml", "dfs.replication", "3"))
    return None if live >= want else f"{live} live DataNodes, need {want} (dfs.replication)"


def datanode() -> str | None:
    info = jmx(9864, "Hadoop:service=DataNode,name=DataNodeInfo")
    actors = json.loads(info.get("BPServiceActorInfo") or "[]")
    if any(a.get("ActorState") == "RUNNING" for a in actors):
        return None
    return "not registered with the NameNode yet"


def resourcemanager() -> str | None:
    active = get("http://127.0.0.1:8088/ws/v1/cluster/metrics")["clusterMetrics"]["activeNodes"]
    return None if active >= 1 else "no active NodeManager"


def nodemanager() -> str | None:
    info = get("http://127.0.0.1:8042/ws/v1/node/info")["nodeInfo"]
    return None if info.get("nodeHealthy") else "unhealthy: " + str(info.get("healthReport"))


def spark_history() -> str | None:
    get("http://127.0.0.1:18080/api/v1/applications?limit=1")
    return None


CHECKS = {"namenode": namenode, "datanode": datanode, "resourcemanager": resourcemanager,
          "nodemanager": nodemanager, "spark-history": spark_history}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: healthcheck.py {{{'|'.join(CHECKS)}}}")
        return 2
    try:
        why = CHECKS[argv[0]]()
    except Exception as e:  # any failure to ask is "not ready", said in one line
        why = f"{type(e).__name__}: {e}"
    print("ready" if why is None else why)
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
