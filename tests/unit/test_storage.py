"""spot_ae_job/storage.py, ingest's and the OA's one storage layer: the same behaviour on a local
disk and on a real HDFS (tests/hdfs_local.py, over WebHDFS), one error type, one retry policy,
and nothing reachable outside the user's flow tree."""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from spot_ae_job.errors import SpotAEError
from spot_ae_job.ingest.watcher import StoreConfig
from spot_ae_job.storage import NotAFile, Retry, StorageError, WebHDFS, open_storage, root_uri

pytest_plugins = ["tests.hdfs_local"]


@pytest.fixture(params=["file", "webhdfs"])
def storage(request, tmp_path):
    """A fresh, empty user root on each backend."""
    if request.param == "file":
        return open_storage(f"file://{tmp_path}/spot")
    hdfs_local = request.getfixturevalue("hdfs_local")
    return open_storage(request.getfixturevalue("hdfs_huser"), hdfs_local.http_url, retry=Retry(attempts=2, first_wait=0.1))


def retries(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "spot_ae_job.storage" and "retry" in r.getMessage()]


# -- the same behaviour on both backends -------------------------------------------------------
def test_put_commits_once_and_never_replaces_a_committed_name(storage):
    uri = f"{storage.layout.flow_table}/y=2023/m=1/d=25/h=18/nf-x.parquet"  # a path as layout.py builds it
    assert storage.put(uri, b"first") is True
    assert storage.put(uri, b"second") is False
    assert storage.read(uri) == b"first"
    assert [e.name for e in storage.list(f"{storage.layout.flow_table}/y=2023/m=1/d=25/h=18")] == ["nf-x.parquet"]


def test_write_atomic_replaces_and_leaves_no_temporary_file(storage):
    rel = "scored_results/20180216/feedback/ml_feedback.csv"  # a path relative to the flow tree
    storage.write_atomic(rel, b"one\n")
    storage.write_atomic(rel, b"two\n")
    assert storage.read(rel) == b"two\n"
    assert [(e.name, e.is_dir, e.size) for e in storage.list("scored_results/20180216/feedback")] == [("ml_feedback.csv", False, 4)]


def test_missing_paths_are_none_or_empty_and_a_missing_file_is_a_storage_error(storage):
    assert storage.stat("nothing/here") is None and not storage.exists("nothing/here")
    assert storage.list("nothing") == []
    with pytest.raises(StorageError) as err:
        storage.read("nothing/here.csv")
    assert not err.value.retriable
    assert "flow/nothing/here.csv" in str(err.value)


def test_a_directory_where_a_file_should_be_is_not_a_file(storage):
    storage.put("scored_results/20180216/scores/flow_results.csv/part", b"x")
    with pytest.raises(NotAFile) as err:
        storage.read("scored_results/20180216/scores/flow_results.csv")
    assert isinstance(err.value, StorageError) and not err.value.retriable


def test_errors_name_the_path_below_the_user_root_never_the_servers_layout(storage):
    storage.put("verdicts", b"a file where a folder should be")
    with pytest.raises(StorageError) as err:
        storage.write_atomic("verdicts/v1.json", b"{}")
    server_dir = storage.dir if isinstance(storage.dir, str) else str(storage.dir)
    assert server_dir not in str(err.value) and not err.value.retriable


@pytest.mark.parametrize("path", ["../x", "a/../../b", "/etc/passwd", "file:///etc/passwd", "hdfs://elsewhere:8020/user/spot/flow/x",
                                  "a/b c", "a\nb"])
def test_paths_outside_the_users_flow_tree_are_refused_before_any_io(storage, path):
    with pytest.raises(ValueError, match="unsafe path"):
        storage.read(path)


def test_a_sibling_root_with_the_same_prefix_is_outside_too(storage):
    with pytest.raises(ValueError, match="unsafe path"):
        storage.put(storage.root + "2/x", b"x")


# -- --huser, parsed once for ingest and the OA ------------------------------------------------
def test_huser_forms_parse_to_one_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert root_uri("var/spot/") == f"file://{tmp_path}/var/spot"
    assert root_uri("file://localhost/x/spot/") == "file:///x/spot"
    assert root_uri("hdfs://nn:8020/user/spot/") == "hdfs://nn:8020/user/spot"
    # ingest's recipe and the OA's call give the same storage for the same --huser
    assert StoreConfig("var/spot").open().root == open_storage(f"file://{tmp_path}/var/spot").root == f"file://{tmp_path}/var/spot/flow"


@pytest.mark.parametrize("huser", ["", "file://relative/path", "s3://bucket/spot", "hdfs:///no/namenode", "hdfs://nn"])
def test_a_huser_that_is_no_root_is_the_users_to_fix(huser):
    with pytest.raises(SpotAEError, match="--huser"):
        open_storage(huser)


def test_an_hdfs_root_is_reached_at_the_namenodes_webhdfs_port_by_default(monkeypatch):
    monkeypatch.setenv("HADOOP_USER_NAME", "analyst")
    s = open_storage("hdfs://namenode:8020/user/spot")
    assert (s.kind, s.client.base_url, s.client.user, s.dir) == ("webhdfs", "http://namenode:9870", "analyst", "/user/spot/flow")
    assert open_storage("hdfs://nn:8020/u", "http://gw:50070/", user="spot").client.base_url == "http://gw:50070"


def test_a_local_disk_error_is_a_storage_error_and_not_retried(tmp_path):
    s = open_storage(f"file://{tmp_path}/spot")
    (tmp_path / "spot").write_text("a file where the user root should be")
    with pytest.raises(StorageError) as err:
        s.put("hive/x.parquet", b"x")
    assert not err.value.retriable and str(tmp_path) not in str(err.value)


# -- the retry policy against a real NameNode --------------------------------------------------
def test_a_missing_file_and_a_refused_permission_fail_at_once_without_retries(hdfs_local, hdfs_huser, caplog):
    s = open_storage(hdfs_huser, hdfs_local.http_url, retry=Retry(attempts=5, first_wait=0.1))
    s.put("hive/own.parquet", b"x")
    mallory = open_storage(hdfs_huser, hdfs_local.http_url, user="mallory", retry=Retry(attempts=5, first_wait=0.1))
    with caplog.at_level(logging.WARNING, logger="spot_ae_job.storage"):
        with pytest.raises(StorageError) as missing:
            s.read("hive/nope.parquet")
        with pytest.raises(StorageError) as refused:
            mallory.put("hive/theirs.parquet", b"no")
    assert missing.value.exception == "FileNotFoundException" and not missing.value.retriable
    assert refused.value.exception == "AccessControlException" and not refused.value.retriable
    assert retries(caplog) == []


def test_a_namenode_that_stays_down_is_retried_a_bounded_number_of_times_then_raised(hdfs_local, hdfs_huser, caplog):
    s = open_storage(hdfs_huser, hdfs_local.http_url, retry=Retry(attempts=3, first_wait=0.1, max_wait=0.2))
    s.put("hive/before.parquet", b"safe")
    hdfs_local.stop_namenode()
    try:
        with caplog.at_level(logging.WARNING, logger="spot_ae_job.storage"):
            with pytest.raises(StorageError) as err:
                s.read("hive/before.parquet")
    finally:
        hdfs_local.start_namenode(wait=True)
    assert err.value.retriable and "cannot reach" in str(err.value)
    assert [m.split("; ")[1] for m in retries(caplog)] == ["retry 1/2 in 0.1s", "retry 2/2 in 0.2s"]


def test_a_namenode_restart_costs_a_wait_not_the_operation(hdfs_local, hdfs_huser, caplog):
    s = open_storage(hdfs_huser, hdfs_local.http_url, retry=Retry(attempts=40, first_wait=0.2, max_wait=2.0))
    s.put("hive/before.parquet", b"safe")
    hdfs_local.stop_namenode()
    restart = threading.Timer(2.0, hdfs_local.start_namenode)
    restart.start()
    try:
        with caplog.at_level(logging.WARNING, logger="spot_ae_job.storage"):
            assert s.read("hive/before.parquet") == b"safe"
            assert s.put("hive/after.parquet", b"new") is True
    finally:
        restart.join()
        hdfs_local.wait_ready()
    assert retries(caplog), "the read waited for the NameNode"
    assert WebHDFS(hdfs_local.http_url, user="spot").read(f"{s.dir}/hive/after.parquet") == b"new"
