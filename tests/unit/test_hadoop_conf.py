"""The Hadoop/Spark configuration renderer (images/hadoop/render_conf.py) that every container
runs on start and Ansible runs on nodes: whole files from config/hadoop.env, idempotent."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "images" / "hadoop" / "render_conf.py"
SETTINGS = REPO / "config" / "hadoop.env"


def render(out: Path, *env_files: Path, env: dict | None = None, no_environ: bool = True):
    cmd = [sys.executable, str(RENDER), "--out", str(out)]
    cmd += [a for f in env_files for a in ("--env-file", str(f))]
    if no_environ:
        cmd.append("--no-environ")
    full_env = {"PATH": os.environ["PATH"], "HOSTNAME": "datanode1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env)


def hadoop_props(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    assert root.tag == "configuration"
    return {p.findtext("name"): p.findtext("value") for p in root.findall("property")}


def settings_for(fname: str) -> dict[str, str]:
    """The source file's own view of one output file, read independently of the renderer."""
    prefix = fname.upper() + "_"
    out = {}
    for line in SETTINGS.read_text().splitlines():
        if line.startswith(prefix):
            k, _, v = line[len(prefix):].partition("=")
            out[k] = v.replace("${HOSTNAME}", "datanode1")
    return out


def test_the_project_settings_render_to_parseable_hadoop_xml_with_every_property(tmp_path):
    r = render(tmp_path, SETTINGS)
    assert r.returncode == 0, r.stderr
    for fname in ("core-site.xml", "hdfs-site.xml", "yarn-site.xml", "capacity-scheduler.xml"):
        assert hadoop_props(tmp_path / fname) == settings_for(fname), fname


def test_the_cluster_essentials_are_set(tmp_path):
    assert render(tmp_path, SETTINGS).returncode == 0
    core, hdfs, yarn = (hadoop_props(tmp_path / f) for f in ("core-site.xml", "hdfs-site.xml", "yarn-site.xml"))
    assert core["fs.defaultFS"] == "hdfs://namenode:8020"
    assert hdfs["dfs.replication"] == "2"
    assert hdfs["dfs.datanode.hostname"] == "datanode1"  # ${HOSTNAME} filled from the environment
    assert yarn["yarn.nodemanager.vmem-check-enabled"] == "false"
    assert yarn["yarn.application.classpath"].split(",")[:2] == ["/opt/hadoop/etc/hadoop", "/opt/hadoop/share/jars/*"]
    assert "yarn.scheduler.capacity.root.queues" in hadoop_props(tmp_path / "capacity-scheduler.xml")


def test_spark_defaults_are_key_space_value_lines(tmp_path):
    assert render(tmp_path, SETTINGS).returncode == 0
    lines = [l for l in (tmp_path / "spark-defaults.conf").read_text().splitlines() if not l.startswith("#")]
    conf = dict(l.split(" ", 1) for l in lines)
    assert conf == settings_for("spark-defaults.conf")


def test_rendering_twice_gives_identical_files(tmp_path):
    assert render(tmp_path, SETTINGS).returncode == 0
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert render(tmp_path, SETTINGS).returncode == 0
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first


def test_a_removed_setting_disappears_on_the_next_render(tmp_path):
    """Whole files, not edits: the anti-pattern of sed-on-XML keeps stale properties forever."""
    src = tmp_path / "a.env"
    src.write_text("HDFS-SITE.XML_dfs.replication=2\nHDFS-SITE.XML_dfs.blocksize=1m\n")
    out = tmp_path / "conf"
    assert render(out, src).returncode == 0
    src.write_text("HDFS-SITE.XML_dfs.replication=3\n")
    assert render(out, src).returncode == 0
    assert hadoop_props(out / "hdfs-site.xml") == {"dfs.replication": "3"}


def test_the_environment_overrides_the_file_for_one_service(tmp_path):
    r = render(tmp_path, SETTINGS, env={"HDFS-SITE.XML_dfs.replication": "1"}, no_environ=False)
    assert r.returncode == 0, r.stderr
    assert hadoop_props(tmp_path / "hdfs-site.xml")["dfs.replication"] == "1"


def test_xml_special_characters_survive_the_round_trip(tmp_path):
    src = tmp_path / "a.env"
    src.write_text("CORE-SITE.XML_x.y=a<b & c>\"d\"\n")
    assert render(tmp_path / "c", src).returncode == 0
    assert hadoop_props(tmp_path / "c" / "core-site.xml") == {"x.y": 'a<b & c>"d"'}


def test_hadoop_own_references_are_left_for_hadoop(tmp_path):
    src = tmp_path / "a.env"
    src.write_text("CORE-SITE.XML_hadoop.tmp.dir=/data/${user.name}\n")
    assert render(tmp_path / "c", src).returncode == 0
    assert hadoop_props(tmp_path / "c" / "core-site.xml")["hadoop.tmp.dir"] == "/data/${user.name}"


@pytest.mark.parametrize("content, message", [
    ("CORE-SITE.XML_fs.defaultFS\n", "expected KEY=value"),
    ("HDFS-SITE.XML_dfs.datanode.hostname=${NO_SUCH_VAR}\n", "NO_SUCH_VAR is not set"),
    ("# only a comment\n", "no FILE.EXT_key=value settings"),
    ("CORE-SITE.YAML_x=1\n", "no FILE.EXT_key=value settings"),
])
def test_bad_settings_fail_with_one_clear_line_and_write_nothing(tmp_path, content, message):
    src = tmp_path / "bad.env"
    src.write_text(content)
    r = render(tmp_path / "out", src)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_settings_file_is_reported_not_raised(tmp_path):
    r = render(tmp_path / "out", tmp_path / "nope.env")
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr
