"""Ansible deployment onto bare Debian nodes, for real: two containers with systemd as PID 1 and
sshd (no --privileged) play the on-prem nodes; ansible-playbook installs everything over SSH from
the artifact cache; then HDFS and YARN must be healthy across the nodes, the AE job must score a
CIC-IDS2018 excerpt day on the deployed YARN into Spot's layout on HDFS, and a second run of the
playbook must change nothing. ansible-lint runs on the same tree.

Layout (2 nodes keep the 2-core CI machine's wall time low; the big venv goes on one node only):
  node1: namenode, resourcemanager, datanode
  node2: datanode, nodemanager, spark_history, ml, ingest, oa
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from spot_ae_job.schema import RESULT_COLUMNS
from tests.integration.test_cluster import ended_apps_since

REPO = Path(__file__).resolve().parents[2]
ANSIBLE = REPO / "ansible"
VENV_BIN = REPO / ".venv" / "bin"
NODE_DIR = Path(__file__).resolve().parent / "ansible_nodes"
NODE_IMAGE = "spot-ae/ansible-node:test"
OUT = REPO / "test-output"
EXCERPT = "cicids2018/aegmm__toy_dataset.csv"  # real CICFlowMeter rows with timestamps
DAY = "20180216"
ROLES = ["common", "hdfs_namenode", "hdfs_datanode", "yarn_resourcemanager", "yarn_nodemanager",
         "spark", "spot_ingest", "spot_ml", "spot_oa"]
GROUPS = {"namenode": ["node1"], "resourcemanager": ["node1"], "datanodes": ["node1", "node2"],
          "nodemanagers": ["node2"], "spark_history": ["node2"], "ml": ["node2"],
          "ingest": ["node2"], "oa": ["node2"]}
# systemd in a container without --privileged (PLATFORM.md).
SYSTEMD_FLAGS = ["--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
                 "--security-opt", "apparmor=unconfined", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
                 "--tmpfs", "/run", "--tmpfs", "/run/lock"]


def run(cmd: list[str], timeout: float = 600, check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"`{' '.join(cmd)}` exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=20) as r:
        return json.load(r)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP lines -> {host: {"ok": n, "changed": n, "failed": n, ...}}."""
    hosts = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        hosts[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return hosts


@dataclass
class Site:
    """The deployed nodes: run commands on them, reach their web APIs, re-run the playbook."""

    run_id: str
    workdir: Path
    ips: dict[str, str]
    first_run: subprocess.CompletedProcess
    first_seconds: float
    out: Path
    playbook_cmd: list[str] = field(default_factory=list)

    def sh(self, node: str, script: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
        """A shell script on NODE as the service user, from its home (how an analyst runs jobs)."""
        return run(["docker", "exec", "-u", "spot", "-w", "/home/spot", self.container(node),
                    "bash", "-lc", script], timeout=timeout, check=check)

    def container(self, node: str) -> str:
        return f"spotae-ans-{self.run_id}-{node}"

    def url(self, node: str, port: int, path: str) -> str:
        return f"http://{self.ips[node]}:{port}{path}"

    def playbook(self) -> tuple[subprocess.CompletedProcess, float]:
        t0 = time.monotonic()
        r = run(self.playbook_cmd, timeout=1500, check=False, cwd=ANSIBLE, env=playbook_env())
        return r, time.monotonic() - t0


def playbook_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env["ANSIBLE_HOST_KEY_CHECKING"] = "False"
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    return env


def node_image() -> str:
    """The bare node image, built from the project's local Debian rootfs when missing or stale."""
    rootfs = run(["bash", str(REPO / "scripts" / "base-image.sh")], timeout=900).stdout.strip().splitlines()[-1]
    rootfs_id = run(["docker", "image", "inspect", "-f", "{{.Id}}", rootfs]).stdout.strip()
    fp = hashlib.sha256((NODE_DIR / "Dockerfile").read_bytes() + rootfs_id.encode()).hexdigest()[:16]
    have = run(["docker", "image", "inspect", "-f", '{{index .Config.Labels "spot-ae.inputs"}}', NODE_IMAGE],
               check=False).stdout.strip()
    if have != fp:
        run(["docker", "build", "-q", "--label", f"spot-ae.inputs={fp}", "--build-arg", f"ROOTFS={rootfs}",
             "-t", NODE_IMAGE, str(NODE_DIR)], timeout=900, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return NODE_IMAGE


def write_inventory(path: Path, ips: dict[str, str], key: Path) -> None:
    lines = []
    for group, nodes in GROUPS.items():
        lines.append(f"[{group}]")
        lines += [f"{n} ansible_host={ips[n]}" for n in nodes]
        lines.append("")
    lines += ["[all:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={key}",
              "ansible_ssh_common_args=-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"]
    path.write_text("\n".join(lines) + "\n")


def save_journals(site_out: Path, containers: list[str]) -> None:
    for c in containers:
        r = run(["docker", "exec", c, "journalctl", "--no-pager", "-o", "short-iso", "-u", "spot-*"],
                check=False, timeout=60)
        (site_out / f"{c}.journal.txt").write_text(r.stdout + r.stderr)


@pytest.fixture(scope="module")
def site(request, tmp_path_factory):
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.fail("the Docker engine is not running (make setup starts dockerd)", pytrace=False)
    image = node_image()
    run_id = uuid.uuid4().hex[:8]
    work = tmp_path_factory.mktemp("ansible")
    out = OUT / f"ansible-{run_id}"
    out.mkdir(parents=True, exist_ok=True)
    network = f"spotae-ans-{run_id}"
    containers = [f"spotae-ans-{run_id}-{n}" for n in ("node1", "node2")]
    created: list[str] = []
    first_run_ok = False
    try:
        # The AE job's wheel from the working tree, as docs/ansible.md says to build it.
        wheels = work / "wheels"
        run(["bash", str(REPO / "scripts" / "build-jar.sh")], timeout=300)  # the JVM scorer ships in the wheel
        run([str(VENV_BIN / "pip"), "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
             "-w", str(wheels), str(REPO)], timeout=600)
        run(["docker", "network", "create", network])
        for c, node in zip(containers, ("node1", "node2")):
            run(["docker", "run", "-d", "--name", c, "--hostname", node, "--network", network,
                 "--network-alias", node, *SYSTEMD_FLAGS, image])
            created.append(c)
        key = work / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
        ips = {}
        for c, node in zip(containers, ("node1", "node2")):
            run(["docker", "exec", "-i", c, "sh", "-c",
                 "cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys"],
                input=key.with_suffix(".pub").read_text())
            ips[node] = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                             c]).stdout.strip()
        inventory = work / "hosts.ini"
        write_inventory(inventory, ips, key)
        password_hash = run([str(VENV_BIN / "spot-ae"), "oa", "hash-password", "--password-stdin"],
                            input="a test passphrase, not a default\n").stdout.strip()
        extra = work / "vars.yml"
        extra.write_text(yaml.safe_dump({
            "spot_oa_users": [{"name": "analyst", "password_hash": password_hash, "role": "analyst"}],
            "spot_ml_wheel_glob": str(wheels / "spot_ae_job-*.whl"),
        }))
        cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{extra}", "site.yml"]
        for c in containers:  # systemd up and sshd listening before Ansible connects
            run(["docker", "exec", c, "sh", "-c",
                 "for i in $(seq 60); do systemctl is-active -q ssh && exit 0; sleep 1; done; exit 1"], timeout=90)
        t0 = time.monotonic()
        first = run(cmd, timeout=1500, check=False, cwd=ANSIBLE, env=playbook_env())
        seconds = time.monotonic() - t0
        (out / "playbook-run1.log").write_text(first.stdout + first.stderr)
        print(f"\nansible: first playbook run {seconds:.0f} s (log: {out / 'playbook-run1.log'})")
        if first.returncode != 0:
            pytest.fail(f"the playbook failed (exit {first.returncode}):\n{first.stdout[-4000:]}", pytrace=False)
        first_run_ok = True
        yield Site(run_id, work, ips, first, seconds, out, cmd)
    finally:
        if request.session.testsfailed or not first_run_ok:
            save_journals(out, created)
            print(f"\nnode journals saved under {out}")
        for c in created:
            run(["docker", "rm", "-f", "-v", c], check=False, timeout=120)
        run(["docker", "network", "rm", network], check=False)


# --- static checks: no docker needed ------------------------------------------------------

def test_ansible_lint_passes_on_the_playbook_and_every_role():
    r = run([str(VENV_BIN / "ansible-lint"), "--offline", "--nocolor"], timeout=600, check=False,
            cwd=ANSIBLE, env=playbook_env())
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_has_the_same_task_files_and_declares_every_setting(role):
    base = ANSIBLE / "roles" / role
    for f in ("preflight", "install", "config", "service", "check"):
        assert (base / "tasks" / f"{f}.yml").is_file(), f"{role} lacks tasks/{f}.yml"
    defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    assert all(k.startswith(role + "_") for k in defaults), [k for k in defaults if not k.startswith(role + "_")]
    assert set(defaults) == set(specs), f"defaults vs argument_specs differ: {set(defaults) ^ set(specs)}"
    # Every default carries a comment line above it (the file documents each setting).
    text = (base / "defaults" / "main.yml").read_text().splitlines()
    for i, line in enumerate(text):
        if re.match(rf"^{role}_\w+:", line):
            above = [l for l in text[:i] if not l.startswith(f"{role}_") and not l.startswith(" ")]
            assert above and above[-1].startswith("#"), f"{role}: {line.split(':')[0]} has no comment"
    for tpl in (base / "templates").glob("*.j2"):
        head = tpl.read_text().splitlines()[:2]
        assert any("ansible_managed" in h for h in head), f"{tpl.name} lacks the ansible_managed header"


# --- the real deployment ------------------------------------------------------------------

@pytest.mark.docker
def test_hdfs_is_healthy_across_both_nodes(site):
    info = get_json(site.url("node1", 9870, "/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo"))["beans"][0]
    assert info["Safemode"] == ""
    live = json.loads(info["LiveNodes"])
    assert sorted(name.split(":")[0] for name in live) == ["node1", "node2"]
    assert "Safe mode is OFF" in site.sh("node2", "hdfs dfsadmin -safemode get").stdout
    # A file written on one node is read back on the other, with both replicas.
    a = site.sh("node1", "head -c 2000000 /dev/urandom > /tmp/x && hdfs dfs -put -f /tmp/x /tmp/cross && "
                         "sha256sum /tmp/x").stdout.split()[0]
    b = site.sh("node2", "hdfs dfs -cat /tmp/cross | sha256sum").stdout.split()[0]
    assert a == b
    assert site.sh("node2", "hdfs dfs -stat %r /tmp/cross").stdout.strip() == "2"


@pytest.mark.docker
def test_spots_hdfs_layout_exists_owned_by_spot(site):
    listing = get_json(site.url("node1", 9870, "/webhdfs/v1/user/spot/flow?op=LISTSTATUS&user.name=spot"))
    dirs = {s["pathSuffix"]: s for s in listing["FileStatuses"]["FileStatus"]}
    for d in ("hive", "labelled", "scored_results", "models", "ingest_summary"):
        assert d in dirs and dirs[d]["type"] == "DIRECTORY" and dirs[d]["owner"] == "spot", d


@pytest.mark.docker
def test_yarn_has_the_nodemanager_of_the_inventory(site):
    nodes = get_json(site.url("node1", 8088, "/ws/v1/cluster/nodes"))["nodes"]["node"]
    assert [(n["nodeHostName"], n["state"]) for n in nodes] == [("node2", "RUNNING")]


@pytest.mark.docker
def test_ingest_and_oa_run_as_services(site):
    with urllib.request.urlopen(site.url("node2", 8080, "/api/v1/health"), timeout=20) as r:
        assert r.status == 200
    # The collector listens where the inventory said (spot_ingest_listen's default port).
    procs = site.sh("node2", "pgrep -u spot -a nfcapd").stdout
    assert re.search(r"nfcapd .*-p 2055\b", procs), procs


@pytest.mark.docker
def test_continuous_scoring_runs_as_a_unit_and_a_yarn_application(site):
    assert run(["docker", "exec", site.container("node2"), "systemctl", "is-active", "spot-stream"],
               check=False).stdout.strip() == "active"
    deadline = time.monotonic() + 300
    while True:  # the unit starts before the NodeManager play: its application may still wait for YARN
        apps = (get_json(site.url("node1", 8088, "/ws/v1/cluster/apps?states=RUNNING"))["apps"] or {}).get("app", [])
        if any(a["name"] == "spot-ae-stream" and a["user"] == "spot" for a in apps) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert [a["name"] for a in apps if a["name"] == "spot-ae-stream"] == ["spot-ae-stream"]


@pytest.mark.docker
def test_the_ae_job_scores_an_excerpt_day_on_the_deployed_yarn(site, data_dir):
    csv_path = data_dir / EXCERPT
    assert csv_path.is_file()
    run(["docker", "cp", str(csv_path), f"{site.container('node2')}:/tmp/excerpt.csv"])
    run(["docker", "exec", site.container("node2"), "chmod", "644", "/tmp/excerpt.csv"])
    before = {a["id"] for a in (get_json(site.url("node1", 8088, "/ws/v1/cluster/apps"))["apps"] or {}).get("app", [])}
    huser = "hdfs://node1:8020/user/spot"
    site.sh("node2", "hdfs dfs -mkdir -p /tmp/excerpt && hdfs dfs -put -f /tmp/excerpt.csv /tmp/excerpt/ && "
                     f"spot-ae load-csv --day {DAY} --master yarn --huser {huser} hdfs://node1:8020/tmp/excerpt/excerpt.csv")
    site.sh("node2", f"spot-ae ml-ops {DAY} flow --epochs 2 --master yarn --huser {huser}")
    ran = ended_apps_since(lambda: (get_json(site.url("node1", 8088, "/ws/v1/cluster/apps"))["apps"] or {}).get("app", []),
                           before)
    assert len(ran) >= 2 and all(a["finalStatus"] == "SUCCEEDED" and a["user"] == "spot" for a in ran), \
        [(a["name"], a["state"], a["finalStatus"]) for a in ran]

    out = f"/user/spot/flow/scored_results/{DAY}"
    run_json = json.loads(site.sh("node2", f"hdfs dfs -cat {out}/run.json").stdout)
    # the excerpt carries IPs and timestamps: the default (auto) is the host-context model
    assert (run_json["day"], run_json["model"]) == (DAY, "ae-context") and run_json["flows_scored"] > 0
    rows = list(csv.reader(io.StringIO(site.sh("node2", f"hdfs dfs -cat {out}/scores/flow_results.csv").stdout)))
    assert rows[0][: len(RESULT_COLUMNS)] == RESULT_COLUMNS  # Spot's columns first; explanations after
    assert len(rows) - 1 == run_json["suspicious"]
    # Spot's own entry point is installed too, with the same arguments.
    assert "YYYYMMDD" in site.sh("node2", "ml_ops --help").stdout


@pytest.mark.docker
def test_a_second_playbook_run_changes_nothing(site):
    second, seconds = site.playbook()
    (site.out / "playbook-run2.log").write_text(second.stdout + second.stderr)
    print(f"\nansible: first run {site.first_seconds:.0f} s, second run {seconds:.0f} s")
    assert second.returncode == 0, second.stdout[-4000:]
    hosts = recap(second.stdout)
    assert set(hosts) == {"node1", "node2"}
    changed = {h: c["changed"] for h, c in hosts.items()}
    assert changed == {"node1": 0, "node2": 0}, "changed tasks:\n" + "\n".join(
        l for l in second.stdout.splitlines() if l.startswith("changed:") or l.startswith("TASK"))[-4000:]


@pytest.mark.docker
def test_a_yarn_setting_change_restarts_only_the_yarn_daemons(site):
    units = {"node1": ["spot-hdfs-namenode", "spot-hdfs-datanode", "spot-yarn-resourcemanager"],
             "node2": ["spot-hdfs-datanode", "spot-yarn-nodemanager", "spot-spark-history"]}

    def pids() -> dict[tuple[str, str], str]:
        return {(node, u): run(["docker", "exec", site.container(node), "systemctl", "show", "-p", "MainPID",
                                "--value", u]).stdout.strip() for node, us in units.items() for u in us}

    before = pids()
    memory = "6144"  # config/hadoop.env says 8192 per NodeManager
    override = json.dumps({"common_hadoop_settings": {"YARN-SITE.XML_yarn.nodemanager.resource.memory-mb": memory}})
    site.playbook_cmd = site.playbook_cmd + ["-e", override]
    third, seconds = site.playbook()
    (site.out / "playbook-run3.log").write_text(third.stdout + third.stderr)
    print(f"\nansible: run with a yarn-site.xml change {seconds:.0f} s")
    assert third.returncode == 0, third.stdout[-4000:]
    after = pids()
    restarted = sorted(k for k in before if before[k] != after[k])
    assert restarted == [("node1", "spot-yarn-resourcemanager"), ("node2", "spot-yarn-nodemanager")]
    # The new value took effect: the restarted NodeManager registered with the new capacity
    # (the one it replaced, if still listed, has unregistered: it is not RUNNING).
    nodes = get_json(site.url("node1", 8088, "/ws/v1/cluster/nodes?states=RUNNING"))["nodes"]["node"]
    assert [(n["nodeHostName"], n["availMemoryMB"] + n["usedMemoryMB"]) for n in nodes] == [("node2", int(memory))]
