"""One place names Spot's HDFS tree: days parse once, paths come from the Layout, and the
directories the image's init script and Ansible's NameNode role create are the layout's own."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import Day, Layout, created_at_install

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text", ["20180216", "20200229"])
def test_a_day_round_trips_as_spot_spells_it(text):
    assert str(Day.parse(text)) == text


@pytest.mark.parametrize("text, message", [
    ("2018-02-16", "YYYYMMDD"), ("20180216\n", "YYYYMMDD"), (" 20180216", "YYYYMMDD"), ("201802161", "YYYYMMDD"),
    ("20180231", "not a calendar date"), ("20190229", "not a calendar date"), (None, "YYYYMMDD"),
])
def test_anything_else_is_a_clear_error(text, message):
    with pytest.raises(SpotAEError, match=message):
        Day.parse(text)


def test_the_tree_under_one_user_root():
    lay = Layout("hdfs://namenode:8020/user/spot/")
    day = Day.parse("20180216")
    assert lay.flow_table == "hdfs://namenode:8020/user/spot/flow/hive"
    assert lay.day_flows(day) == "hdfs://namenode:8020/user/spot/flow/hive/y=2018/m=2/d=16"
    assert lay.day_flows(day, labelled=True).endswith("/flow/labelled/y=2018/m=2/d=16")
    res = lay.results(day)
    assert res.scores_csv == "hdfs://namenode:8020/user/spot/flow/scored_results/20180216/scores/flow_results.csv"
    assert res.feedback_csv.endswith("/scored_results/20180216/feedback/ml_feedback.csv")
    assert lay.lda_models == lay.models + "/lda" and lay.quarantine("csv").endswith("/flow/quarantine/csv")
    # incidents (issue 24) sit beside Spot's results; streamed ones beside the stream's batches
    assert (res.incidents, res.hosts) == (res.root + "/incidents", res.root + "/hosts")
    assert res.incidents_summary == res.root + "/incidents_summary.json"
    assert res.stream_incidents == res.stream + "/incidents" and lay.family_models == lay.models + "/family"


def _init_script_dirs() -> set[str]:
    """The directories images/hadoop/init-hdfs.sh creates under $huser, expanded by bash itself."""
    text = (REPO / "images/hadoop/init-hdfs.sh").read_text()
    line = re.search(r'hdfs dfs -mkdir -p "\$huser"(\S+)', text).group(1)
    out = subprocess.run(["bash", "-c", f'huser=; printf "%s\\n" "$huser"{line}'], capture_output=True, text=True, check=True)
    return {p.lstrip("/") for p in out.stdout.split()}


def test_the_image_creates_the_layouts_directories():
    made = _init_script_dirs()
    assert made | {"flow"} == set(created_at_install())


def test_ansible_creates_the_layouts_directories():
    entries = yaml.safe_load((REPO / "ansible/roles/hdfs_namenode/vars/main.yml").read_text())["hdfs_namenode_layout"]
    under = {e["path"].replace("{{ hdfs_namenode_huser }}", "").lstrip("/") for e in entries
             if e["path"].startswith("{{ hdfs_namenode_huser }}")}
    assert under - {""} == set(created_at_install())
