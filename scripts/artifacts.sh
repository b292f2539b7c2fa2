#!/usr/bin/env bash
# The one artifact cache (artifacts/): Python wheels and Hadoop jars, fetched on the host,
# recorded in artifacts/SHA256SUMS; images and Ansible verify what they copy against it.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p artifacts
bash scripts/fetch-wheels.sh
bash scripts/fetch-jars.sh
# Only wheels/ and jars/ are the cache (a Spark driver started here may leave scratch dirs).
( cd artifacts && find ./wheels ./jars -type f ! -name '.*' -print0 | sort -z | xargs -0 sha256sum > .SHA256SUMS.new \
  && mv .SHA256SUMS.new SHA256SUMS && sha256sum --quiet -c SHA256SUMS )
echo "artifacts: $(wc -l < artifacts/SHA256SUMS) files checksummed in artifacts/SHA256SUMS"
