#!/usr/bin/env bash
# The whole test run (what CI runs): unit, browser, then the docker tests (the compose cluster,
# the end-to-end harness with its fault cases, Ansible on container nodes).
# Prints the time of each phase; the docker phase also lists every test's time (--durations).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
t0=$SECONDS
phase() {  # phase NAME PYTEST-ARGS...: run, then print its time even when it fails
  local name=$1 start=$SECONDS rc=0
  shift
  .venv/bin/pytest "$@" || rc=$?
  echo "phase $name: $((SECONDS - start)) s (exit $rc)"
  return $rc
}
rc=0
# The images build while the unit and browser tests run (debootstrap, apt, pip from the artifact cache);
# the docker phase waits for it. A failed build is reported, and the docker tests then fail on it.
build_log=test-output/build-images.log
bash scripts/build-images.sh >"$build_log" 2>&1 &
build_pid=$!
# Two workers, a test file each at a time: most unit tests wait on a JVM, a subprocess or HDFS
# for part of their time, so two share the two cores well (each worker has its own Spark).
phase unit -m "not docker and not browser" -n 2 --dist loadfile --durations=25 tests || rc=1
phase browser -m browser tests || rc=1
build_start=$SECONDS
if wait "$build_pid"; then
  echo "images: built beside the unit and browser tests; waited $((SECONDS - build_start)) s more (log: $build_log)"
else
  echo "images: building failed (log: $build_log)"; tail -20 "$build_log"; rc=1
fi
phase docker -m docker -rP --durations=0 -n 2 --dist loadgroup tests || rc=1
echo "total: $((SECONDS - t0)) s"
exit $rc
