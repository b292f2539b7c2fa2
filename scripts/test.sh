#!/usr/bin/env bash
# The whole test run (what CI runs): unit and browser tests, then the docker cluster tests.
# Prints the time of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
t0=$SECONDS
.venv/bin/pytest -m "not docker" tests
echo "phase unit+browser: $((SECONDS - t0)) s"
t1=$SECONDS
.venv/bin/pytest -m docker tests
echo "phase docker: $((SECONDS - t1)) s"
echo "total: $((SECONDS - t0)) s"
