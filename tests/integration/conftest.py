"""The compose cluster as a pytest session fixture, on pytest-docker's compose executor.

`spot_cluster` builds what is missing (scripts/build-images.sh), starts the whole stack under a
per-run project name with `up --wait` (the health checks are readiness checks, so "up" means
HDFS out of safe mode with 2 DataNodes and YARN with a NodeManager), and ALWAYS tears it down
with `down -v`, even when start-up itself fails. Host ports are left to docker and looked up.
On any failure every container's log is saved under test-output/<project>/.

pytest-docker's own `docker_services` starts outside its try/finally (a failed `up` would leak
the stack), so it is overridden here to hand out this fixture's services instead.
Set SPOT_AE_TEST_APPS=1 to include the ingest and OA services (compose profile `apps`).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_docker.plugin import DockerComposeExecutor, Services

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
OUT = REPO / "test-output"
# Published ports set empty: docker picks free host ports (two stacks can run side by side).
FREE_PORTS = ("SPOT_AE_NAMENODE_UI_PORT", "SPOT_AE_RM_UI_PORT", "SPOT_AE_HISTORY_UI_PORT",
              "SPOT_AE_OA_PORT", "SPOT_AE_NETFLOW_PORT")


@dataclass
class Cluster:
    """A running stack: run commands in its containers, find its published ports."""

    project: str
    compose: DockerComposeExecutor
    services: Services

    def exec(self, service: str, *cmd: str, stdin: bytes | None = None, timeout: float = 900,
             check: bool = True) -> subprocess.CompletedProcess:
        full = f"{self.compose._compose_command} -f {shlex.quote(str(COMPOSE_FILE))} -p {self.project} " \
               f"exec -T {service} " + " ".join(shlex.quote(c) for c in cmd)
        r = subprocess.run(full, shell=True, input=stdin, capture_output=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"`{' '.join(cmd)}` in {service} exited {r.returncode}:\n"
                                 f"{r.stdout.decode(errors='replace')[-3000:]}\n{r.stderr.decode(errors='replace')[-3000:]}")
        return r

    def url(self, service: str, port: int, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.services.port_for(service, port)}{path}"

    def hdfs(self, *args: str, **kw) -> str:
        return self.exec("ml-client", "hdfs", "dfs", *args, **kw).stdout.decode()


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    env = " ".join(f"{k}=" for k in FREE_PORTS)
    profile = " --profile apps" if os.environ.get("SPOT_AE_TEST_APPS") == "1" else ""
    return f"env {env} {shlex.quote(str(REPO / '.venv' / 'bin' / 'docker-compose'))}{profile}"


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(COMPOSE_FILE)


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"spotae-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _save_logs(compose: DockerComposeExecutor, project: str) -> Path:
    out = OUT / project
    out.mkdir(parents=True, exist_ok=True)
    (out / "ps.txt").write_bytes(compose.execute("ps -a", success_codes=range(256)))
    names = compose.execute("config --services", success_codes=range(256)).decode().split()
    for svc in names:
        (out / f"{svc}.log").write_bytes(
            compose.execute(f"logs --no-color --timestamps {svc}", success_codes=range(256)))
    return out


@pytest.fixture(scope="session")
def spot_cluster(request, docker_compose_command, docker_compose_file, docker_compose_project_name):
    build = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"building the images failed:\n{build.stderr[-4000:]}", pytrace=False)
    compose = DockerComposeExecutor(docker_compose_command, docker_compose_file, docker_compose_project_name)
    failed_to_start = False
    try:
        try:
            compose.execute("up -d --wait --wait-timeout 600")
        except Exception as e:
            failed_to_start = True
            pytest.fail(f"the cluster did not become healthy: {str(e)[-3000:]}", pytrace=False)
        yield Cluster(docker_compose_project_name, compose, Services(compose))
    finally:
        if failed_to_start or request.session.testsfailed:
            where = _save_logs(compose, docker_compose_project_name)
            print(f"\ncontainer logs saved under {where}")
        compose.execute("down -v --remove-orphans --timeout 20", success_codes=range(256))


@pytest.fixture(scope="session")
def docker_services(spot_cluster) -> Services:
    """pytest-docker's name for the running services (port_for), from the safe fixture above."""
    return spot_cluster.services
