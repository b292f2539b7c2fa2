#!/usr/bin/env bash
# The one artifact cache (artifacts/): Python wheels and Hadoop jars, fetched on the host,
# recorded in artifacts/SHA256SUMS and verified before anything installs from it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
bash scripts/fetch-wheels.sh
[ -f scripts/fetch-jars.sh ] && bash scripts/fetch-jars.sh
( cd artifacts && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS.new \
  && mv SHA256SUMS.new SHA256SUMS && sha256sum --quiet -c SHA256SUMS )
echo "artifacts: $(wc -l < artifacts/SHA256SUMS) files checksummed in artifacts/SHA256SUMS"
