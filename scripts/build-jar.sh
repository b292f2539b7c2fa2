#!/usr/bin/env bash
# The JVM scorer (spot_ae_job/jvm/*.java: AeScore, the Spark side; AeBatch, the arithmetic)
# compiled against pyspark's own jars into spot_ae_job/jvm/spot-ae-score.jar, which ships inside
# the job's wheel (images, Ansible). Needs a JDK (javac) on the build host only; nodes run it on
# their JRE. Rebuilt only when a source is newer than the jar.
set -euo pipefail
cd "$(dirname "$0")/.."
jar=spot_ae_job/jvm/spot-ae-score.jar
srcs=(spot_ae_job/jvm/*.java)
if [[ -f "$jar" ]] && ! find "${srcs[@]}" -newer "$jar" | grep -q .; then exit 0; fi
command -v javac >/dev/null || { echo "build-jar: javac not found (Debian: openjdk-17-jdk-headless)" >&2; exit 1; }
jars=$(.venv/bin/python -c 'import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# -path: pyspark's jars name jars in their manifests that it does not ship (harmless).
javac --release 17 -Xlint:all,-path -Werror -cp "$jars/*" -d "$tmp/classes" "${srcs[@]}"
jar --create --file "$tmp/score.jar" --date=2026-01-01T00:00:00Z -C "$tmp/classes" .
mv "$tmp/score.jar" "$jar"
echo "build-jar: $jar"
