"""Every Makefile target resolves to a script that exists, and the scripts that drive the cluster
and the benchmarks take the arguments the README documents (dry runs: the real runs belong to the
docker phase and to `make bench`)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M)


def sh(*args, **env):
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SPOT_AE_DRY_RUN": "1", **env})


@pytest.mark.parametrize("target", TARGETS)
def test_each_make_target_calls_something_that_exists(target):
    r = sh("make", "-n", target)
    assert r.returncode == 0, r.stderr
    for script in re.findall(r"(scripts/[\w.-]+\.sh|benchmarks/[\w.-]+\.py)", r.stdout):
        assert (REPO / script).is_file(), f"make {target} calls {script}, which does not exist"


def test_make_bench_names_every_benchmark_it_runs_and_each_exists():
    r = sh("bash", "scripts/bench.sh")
    assert r.returncode == 0, r.stderr
    runs = re.findall(r"^== bench (\S+): \.venv/bin/python (\S+)", r.stdout, re.M)
    assert len(runs) >= 5 and all((REPO / path).is_file() for _, path in runs)
    assert sh("bash", "scripts/bench.sh", BENCH="nope").returncode == 2


def test_cluster_load_csv_passes_day_to_the_job_and_files_to_hdfs():
    r = sh("bash", "scripts/cluster.sh", "load-csv", "--day", "20180221", "a.csv")
    assert r.returncode == 0, r.stderr
    lines = [shlex.split(line) for line in r.stdout.splitlines()]
    put = next(x for x in lines if "-put" in x)
    job = next(x for x in lines if "load-csv" in x)
    assert put[-2] == "/input/a.csv" and "--day" not in put
    assert job[job.index("--day") + 1] == "20180221" and job[-1].endswith("/a.csv")


@pytest.mark.parametrize("args, message", [
    (["load-csv", "--day", "2018-02-21", "a.csv"], "--day takes YYYYMMDD"),
    (["load-csv", "--day", "20180221"], "usage"),
    (["load-csv", "--bogus", "a.csv"], "unknown option"),
])
def test_cluster_load_csv_refuses_bad_arguments_in_one_line(args, message):
    r = sh("bash", "scripts/cluster.sh", *args)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
