"""The compose cluster as a pytest session fixture, on pytest-docker's compose executor.

`spot_cluster` builds what is missing (scripts/build-images.sh), starts the whole stack but the
streaming scorer under a per-run project name with `up --wait` (the health checks are readiness checks, so "up" means
HDFS out of safe mode with 2 DataNodes and YARN with a NodeManager), and ALWAYS tears it down
with `down -v`, even when start-up itself fails. Host ports are left to docker and looked up.
On any failure every container's log is saved under test-output/<project>/.

pytest-docker's own `docker_services` starts outside its try/finally (a failed `up` would leak
the stack), so it is overridden here to hand out this fixture's services instead.
The ingest and OA services (compose profile `apps`) are included when their code is in the
tree (SPOT_AE_TEST_APPS=0|1 forces it); the OA gets a users file made here with a random
password, and nfcapd rotates files every 10 s instead of 60 so ingest tests wait less.
"""
from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_docker.plugin import DockerComposeExecutor, Services

from tests.conftest import DATA

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "compose" / "docker-compose.yml"
OUT = REPO / "test-output"
# Published ports set empty: docker picks free host ports (two stacks can run side by side).
FREE_PORTS = ("SPOT_AE_NAMENODE_UI_PORT", "SPOT_AE_RM_UI_PORT", "SPOT_AE_HISTORY_UI_PORT",
              "SPOT_AE_OA_PORT", "SPOT_AE_NETFLOW_PORT")


def apps_wanted() -> bool:
    flag = os.environ.get("SPOT_AE_TEST_APPS", "auto")
    if flag in ("0", "1"):
        return flag == "1"
    ingest, oa = REPO / "spot_ae_job" / "ingest" / "cli.py", REPO / "spot_ae_job" / "oa" / "cli.py"
    return ingest.is_file() and oa.is_file() and "watch" in ingest.read_text() and "serve" in oa.read_text()


@dataclass
class OAUser:
    name: str
    password: str
    config: Path


@dataclass
class Cluster:
    """A running stack: run commands in its containers, find its published ports."""

    project: str
    compose: DockerComposeExecutor
    services: Services
    apps: bool
    oa_user: OAUser | None

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

    def udp_port(self, service: str, port: int) -> int:
        out = self.compose.execute(f"port --protocol udp {service} {port}").decode().strip()
        return int(out.splitlines()[-1].rsplit(":", 1)[1])

    def exec_background(self, service: str, *cmd: str) -> subprocess.Popen:
        """A command left running (unbuffered Python output, stderr merged) for a fault to hit."""
        full = [*shlex.split(self.compose._compose_command), "-f", str(COMPOSE_FILE), "-p", self.project,
                "exec", "-T", "-e", "PYTHONUNBUFFERED=1", service, *cmd]
        return subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start_service(self, service: str) -> None:
        """Start a service the fixture left at scale 0, without touching what it depends on."""
        self.compose.execute(f"up -d --wait --wait-timeout 300 --no-deps --scale {service}=1 {service}")

    def container(self, service: str) -> str:
        return self.compose.execute(f"ps -a -q {service}").decode().split()[0]

    def kill(self, service: str) -> str:
        """`docker kill` (SIGKILL) with the restart policy off first, so the container stays down
        until `start` (a test decides when it comes back); returns the container id."""
        cid = self.container(service)
        _docker("update", "--restart=no", cid)
        _docker("kill", cid)
        return cid

    def start(self, cid: str) -> None:
        _docker("update", "--restart=unless-stopped", cid)
        _docker("start", cid)

    def healthy(self, service: str) -> bool:
        return _docker("inspect", "-f", "{{.State.Health.Status}}", self.container(service)).strip() == "healthy"


def _docker(*args: str) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
    return r.stdout


def pytest_collection_modifyitems(items):
    """The docker phase runs on two xdist workers (`-n 2 --dist loadgroup`, scripts/test.sh): every
    test on the compose cluster is one group, so that one worker brings the cluster up once; the
    Ansible nodes and the rsyslog receiver are groups of their own and run beside it. Their
    time is mostly waiting (daemons starting, playbook tasks, rotations, YARN polling)."""
    for item in items:
        group = "compose-cluster" if "spot_cluster" in item.fixturenames else item.module.__name__
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def oa_user() -> OAUser | None:
    """One analyst with a random password, hashed the way `spot-ae oa hash-password` does."""
    if not apps_wanted():
        return None
    from werkzeug.security import generate_password_hash

    user = OAUser("tester", secrets.token_urlsafe(12), OUT / f"oa-{os.getpid()}.toml")
    OUT.mkdir(exist_ok=True)
    user.config.write_text(
        f'mode = "production"\nsecret_key = "{secrets.token_urlsafe(32)}"\n\n'
        f'[users.{user.name}]\npassword_hash = "{generate_password_hash(user.password)}"\nrole = "analyst"\n')
    user.config.chmod(0o644)  # read by the container's own uid; a throwaway test password
    return user


@pytest.fixture(scope="session")
def docker_compose_command(oa_user) -> str:
    env = " ".join(f"{k}=" for k in FREE_PORTS)
    # The ML client mounts the same data folder the tests read (SPOT_AE_DATA), wherever the tree is.
    env += f" SPOT_AE_DATA_DIR={shlex.quote(str(DATA))}"
    profile = ""
    if oa_user is not None:
        env += f" SPOT_AE_OA_CONFIG={shlex.quote(str(oa_user.config))} SPOT_AE_INGEST_INTERVAL=10"
        profile = " --profile apps"
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
def spot_cluster(request, docker_compose_command, docker_compose_file, docker_compose_project_name, oa_user):
    build = subprocess.run(["bash", str(REPO / "scripts" / "build-images.sh")], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"building the images failed:\n{build.stderr[-4000:]}", pytrace=False)
    compose = DockerComposeExecutor(docker_compose_command, docker_compose_file, docker_compose_project_name)
    failed_to_start = False
    try:
        try:
            # The streaming scorer starts with the module that tests it (Cluster.start_service):
            # left running from here, it would score every other module's flows beside their jobs.
            compose.execute("up -d --wait --wait-timeout 600 --scale stream=0")
        except Exception as e:
            failed_to_start = True
            pytest.fail(f"the cluster did not become healthy: {str(e)[-3000:]}", pytrace=False)
        yield Cluster(docker_compose_project_name, compose, Services(compose), oa_user is not None, oa_user)
    finally:
        if failed_to_start or request.session.testsfailed:
            where = _save_logs(compose, docker_compose_project_name)
            print(f"\ncontainer logs saved under {where}")
        compose.execute("down -v --remove-orphans --timeout 20", success_codes=range(256))
        if oa_user is not None:
            oa_user.config.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def docker_services(spot_cluster) -> Services:
    """pytest-docker's name for the running services (port_for), from the safe fixture above."""
    return spot_cluster.services
