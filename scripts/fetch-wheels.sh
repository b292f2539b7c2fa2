#!/usr/bin/env bash
# Fills artifacts/wheels with every Python wheel the host, the images and Ansible nodes install.
# pip builds the sdist-only packages (pyspark 4.0.0) into wheels once, here, on the host:
# containers and air-gapped nodes never reach PyPI and install with --no-index from this folder.
set -euo pipefail
cd "$(dirname "$0")/.."
out=artifacts/wheels
mkdir -p "$out"
python3 -m pip wheel --quiet --wheel-dir "$out" --find-links "$out" \
  -r requirements/runtime.in -r requirements/dev.in "$@"
