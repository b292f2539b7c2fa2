#!/usr/bin/env bash
# The whole test run (what CI runs): unit, browser, then the docker tests (the compose cluster,
# the end-to-end harness with its fault cases, Ansible on container nodes).
# Prints the time of each phase; the docker phase also lists every test's time (--durations).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p test-output
t0=$SECONDS
# CI stops the whole run at 90 minutes and then prints nothing of the phase it cut. The run keeps to
# a budget of its own instead (SPOT_AE_TEST_BUDGET seconds, default 85 min less make setup's ~2):
# a phase still running when it is spent gets SIGINT, so pytest prints what passed, what failed
# and what it was waiting on, and the run fails with its figures.
budget=${SPOT_AE_TEST_BUDGET:-4980}
phase() {  # phase NAME PYTEST-ARGS...: run within what is left of the budget; print its time even when it fails
  local name=$1 start=$SECONDS rc=0 left
  shift
  left=$((budget - (SECONDS - t0)))
  if ((left < 60)); then
    echo "phase $name: not run, the test budget (${budget} s) is spent"; return 1
  fi
  timeout --signal=INT --kill-after=60 "$left" .venv/bin/pytest "$@" || rc=$?
  ((rc == 124)) && echo "phase $name: stopped at the test budget (${budget} s)"
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
phase docker -m docker -v -rP --durations=0 -n 2 --dist loadgroup tests || rc=1  # -v: each test's outcome as it ends
echo "total: $((SECONDS - t0)) s"
exit $rc
