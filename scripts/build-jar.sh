#!/usr/bin/env bash
# The JVM scorer (spot_ae_job/jvm/AeScore.java) compiled against pyspark's own jars into
# spot_ae_job/jvm/spot-ae-score.jar, which ships inside the job's wheel (images, Ansible).
# Needs a JDK (javac) on the build host only; nodes run it on their JRE. Rebuilt only when the
# source is newer than the jar.
set -euo pipefail
cd "$(dirname "$0")/.."
src=spot_ae_job/jvm/AeScore.java
jar=spot_ae_job/jvm/spot-ae-score.jar
[[ -f "$jar" && "$jar" -nt "$src" ]] && exit 0
command -v javac >/dev/null || { echo "build-jar: javac not found (Debian: openjdk-17-jdk-headless)" >&2; exit 1; }
jars=$(.venv/bin/python -c 'import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
api=$(ls "$jars"/spark-sql-api_*.jar)  # UDF10 lives there
javac --release 17 -Xlint:all -Werror -cp "$api" -d "$tmp/classes" "$src"
jar --create --file "$tmp/score.jar" --date=2026-01-01T00:00:00Z -C "$tmp/classes" .
mv "$tmp/score.jar" "$jar"
echo "build-jar: $jar"
