# Spot-AE. Each target is a short recipe calling one script: the logic lives in scripts/.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
DATE  ?= 20180216

.PHONY: setup artifacts wheel demo test test-unit bench evaluate \
        cluster-up cluster-down cluster-status cluster-logs cluster-clean ml-run smoke e2e

setup:            ## host packages, docker engine, artifact cache, venv (idempotent)
	bash scripts/setup.sh

artifacts:        ## the checksummed artifact cache: wheels + Hadoop jars (host only)
	bash scripts/artifacts.sh

wheel:            ## the job's wheel in build/wheels (with the JVM scorer jar), for Ansible
	bash scripts/build-jar.sh
	rm -f build/wheels/spot_ae_job-*.whl
	$(VENV)/bin/pip wheel --quiet --no-deps --no-build-isolation --no-index -w build/wheels .

demo:             ## the main job on the bundled CIC-IDS2018 excerpt, local Spark
	$(VENV)/bin/spot-ae demo

test:             ## every test: unit, browser and the docker cluster end to end
	bash scripts/test.sh

test-unit:        ## the tests that need no docker engine
	$(VENV)/bin/pytest -m "not docker" tests

bench:            ## benchmarks printing figures (no assertions); BENCH="score ingest" picks some
	BENCH="$(BENCH)" bash scripts/bench.sh

evaluate:         ## the paper's protocol, AE vs LDA, on the excerpts
	$(VENV)/bin/spot-ae evaluate --out var/evaluation

cluster-up:       ## build what is missing, start, wait for readiness, print URLs
	bash scripts/cluster.sh up

cluster-down:
	bash scripts/cluster.sh down

cluster-status:
	bash scripts/cluster.sh status

cluster-logs:
	bash scripts/cluster.sh logs

cluster-clean:    ## stop and wipe HDFS volumes
	bash scripts/cluster.sh clean

ml-run:           ## the AE job on YARN for DATE=YYYYMMDD
	bash scripts/cluster.sh ml-run $(DATE)

smoke:            ## HDFS put/get and a Spark job on YARN
	bash scripts/cluster.sh smoke

e2e:              ## the compose cluster: its own tests, then the end-to-end harness with fault cases
	$(VENV)/bin/pytest -m docker -rP --durations=0 tests/integration --ignore=tests/integration/test_ansible.py
