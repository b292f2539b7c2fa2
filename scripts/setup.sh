#!/usr/bin/env bash
# One command from a fresh machine to a working checkout: Debian packages and the Docker
# engine, the artifact cache (wheels, Hadoop jars), and the project's virtualenv installed
# from that cache only.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
bash scripts/host-packages.sh
bash scripts/artifacts.sh
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install --quiet --no-index --find-links artifacts/wheels \
  -r requirements/runtime.in -r requirements/dev.in
.venv/bin/pip install --quiet --no-index --find-links artifacts/wheels --no-deps --no-build-isolation -e .
bash scripts/build-jar.sh  # the JVM scorer, inside the package (and so inside every wheel built from here)
echo "setup: done in $((SECONDS - t0)) s"
