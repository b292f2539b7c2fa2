"""The alerts of a real run received by a real syslog daemon (issue 11).

Debian's rsyslog runs in its container (image images/rsyslog, compose service `rsyslog` under the
profile `alerts`, its own project name, a port docker picks). The job runs on the host on a small
CIC-IDS2018 file with local Spark and forwarding switched on in its config file; every alert of
the run must then be in rsyslog's file exactly once, also after a second forward (the ledger).
Needs only the rsyslog image, not the Hadoop cluster.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "compose" / "docker-compose.yml"
OUT = REPO / "test-output"
DAY = "20180222"


def sh(cmd: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and r.returncode != 0:
        raise AssertionError(f"`{cmd}` exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def rsyslog():
    sh("SPOT_AE_BUILD_ONLY=rsyslog bash scripts/build-images.sh", timeout=1200)
    project = f"spotae-rsyslog-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    compose = f"env SPOT_AE_SYSLOG_PORT= {shlex.quote(str(REPO / '.venv' / 'bin' / 'docker-compose'))} " \
              f"-f {shlex.quote(str(COMPOSE))} -p {project} --profile alerts"
    try:
        sh(f"{compose} up -d --wait rsyslog", timeout=300)
        port = int(sh(f"{compose} port rsyslog 5140").stdout.strip().rsplit(":", 1)[1])
        yield compose, port
    except BaseException:
        OUT.mkdir(exist_ok=True)
        (OUT / f"{project}-rsyslog.log").write_text(sh(f"{compose} logs --no-color", check=False).stdout)
        raise
    finally:
        sh(f"{compose} down -v", timeout=300, check=False)


def job(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPOT_AE_SPARK_LOGLEVEL": "ERROR", "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "spot_ae_job", *args], capture_output=True, text=True, env=env, timeout=1500)
    assert r.returncode == 0, f"spot-ae {' '.join(args)}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def received(compose: str) -> list[str]:
    text = sh(f"{compose} exec -T rsyslog cat /var/log/spot-ae/alerts.log", check=False).stdout
    ids = []
    for line in text.splitlines():
        m = re.match(r'^alert \[spot-ae@32473 alert_id="([0-9a-f]+(?:-[0-9]+)?)" day="(\d{8})" [^\]]*\]\s+(\{.*\})$', line.strip())
        assert m, line
        assert json.loads(m.group(3))["event"]["id"] == m.group(1)
        ids.append(m.group(1))
    return ids


def test_rsyslog_receives_every_alert_of_a_run_exactly_once(rsyslog, tmp_path, data_dir):
    compose, port = rsyslog
    cfg = tmp_path / "forward.toml"
    cfg.write_text(f'[retry]\nattempts = 5\nbackoff_seconds = 0.5\n\n[[destinations]]\nname = "rsyslog"\n'
                   f'type = "syslog"\ntransport = "tcp"\nhost = "127.0.0.1"\nport = {port}\nbatch = 50\n')
    huser = f"file://{tmp_path}/user/spot"
    job("load-csv", "--huser", huser, "--day", DAY, str(data_dir / "cicids2018" / "ishtiaq__Brute_Force_XSS.csv"))
    r = job("ml-ops", DAY, "flow", "--huser", huser, "--epochs", "1", "--master", "local[2]", "--forward-config", str(cfg))
    assert re.search(rf"{DAY} -> rsyslog \(syslog/tcp\): [1-9][0-9]* sent", r.stdout), r.stdout[-2000:]

    # the forwarder sends the day's alerts, then its incidents (an incident's id is "<incident>-<flows>")
    day_dir = tmp_path / "user/spot/flow/scored_results" / DAY
    written = [json.loads(x)["event"]["id"] for d in ("alerts", "incidents_ecs")
               for f in sorted((day_dir / d).glob("part-*")) for x in f.read_text().splitlines() if x]
    assert any("-" in i for i in written) and any("-" not in i for i in written), written[:5]
    got = received(compose)
    assert sorted(got) == sorted(written) and len(got) == len(set(got)) > 0

    # forwarding the day again sends nothing twice
    r = job("alerts", "forward", DAY, "--huser", huser, "--master", "local[1]", "--forward-config", str(cfg))
    assert "0 sent" in r.stdout
    assert sorted(received(compose)) == sorted(written)
