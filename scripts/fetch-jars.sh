#!/usr/bin/env bash
# Resolves the Hadoop daemons' jars from Maven Central into artifacts/jars (host only).
set -euo pipefail
cd "$(dirname "$0")/.."
out=artifacts/jars
if [ -f "$out/.complete" ] && [ "$out/.complete" -nt requirements/hadoop/pom.xml ]; then exit 0; fi
rm -rf "$out"; mkdir -p "$out"
mvn -q -B -f requirements/hadoop/pom.xml dependency:copy-dependencies \
  -DoutputDirectory="$PWD/$out" -DincludeScope=runtime -Dmdep.useRepositoryLayout=false
touch "$out/.complete"
echo "jars: $(ls "$out" | wc -l) files, $(du -sh "$out" | cut -f1)"
