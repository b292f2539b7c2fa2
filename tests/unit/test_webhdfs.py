"""The WebHDFS client against a real single-node HDFS (tests/hdfs_local.py)."""
from __future__ import annotations

import pytest

from spot_ae_job.storage import Retry, StorageError, WebHDFS

pytest_plugins = ["tests.hdfs_local"]


@pytest.fixture
def fs(hdfs_local, hdfs_huser):
    """(client, base path) of a fresh directory."""
    return hdfs_local.client(), WebHDFS.hdfs_path(hdfs_huser)


def test_write_then_read_returns_the_same_bytes_through_a_datanode(fs):
    c, base = fs
    payload = bytes(range(256)) * 4000  # ~1 MB, binary
    c.write(f"{base}/blob.bin", payload)
    assert c.read(f"{base}/blob.bin") == payload
    assert c.status(f"{base}/blob.bin")["length"] == len(payload)


def test_write_refuses_to_overwrite_unless_asked(fs):
    c, base = fs
    c.write(f"{base}/f", b"first")
    with pytest.raises(StorageError) as err:
        c.write(f"{base}/f", b"second")
    assert err.value.exception == "FileAlreadyExistsException"
    assert "\tat " not in str(err.value)  # Hadoop's message, not a Java stack
    c.write(f"{base}/f", b"second", overwrite=True)
    assert c.read(f"{base}/f") == b"second"


def test_append_adds_to_the_end(fs):
    c, base = fs
    c.write(f"{base}/log", b"one\n")
    c.append(f"{base}/log", b"two\n")
    assert c.read(f"{base}/log") == b"one\ntwo\n"


def test_mkdirs_is_mkdir_p_and_list_names_entries_sorted(fs):
    c, base = fs
    assert c.mkdirs(f"{base}/a/b/c")
    assert c.mkdirs(f"{base}/a/b/c")  # already there: still fine
    c.write(f"{base}/a/z.txt", b"z")
    entries = c.list(f"{base}/a")
    assert [(e["pathSuffix"], e["type"]) for e in entries] == [("b", "DIRECTORY"), ("z.txt", "FILE")]


def test_rename_moves_atomically_and_refuses_to_clobber(fs):
    c, base = fs
    c.write(f"{base}/part.tmp", b"rows")
    c.write(f"{base}/other", b"keep me")
    assert c.rename(f"{base}/part.tmp", f"{base}/part.parquet")
    assert c.status(f"{base}/part.tmp") is None
    assert c.read(f"{base}/part.parquet") == b"rows"
    # the commit point must never overwrite what is already committed
    c.write(f"{base}/again.tmp", b"dup")
    assert c.rename(f"{base}/again.tmp", f"{base}/other") is False
    assert c.read(f"{base}/other") == b"keep me"


def test_delete_file_and_tree(fs):
    c, base = fs
    c.write(f"{base}/d/x", b"x")
    with pytest.raises(StorageError):  # a non-empty directory needs recursive=True
        c.delete(f"{base}/d")
    assert c.delete(f"{base}/d", recursive=True)
    assert c.status(f"{base}/d") is None
    assert c.delete(f"{base}/d") is False  # nothing left to delete


def test_missing_path_is_none_for_status_and_a_clear_error_elsewhere(fs):
    c, base = fs
    assert c.status(f"{base}/nope") is None
    with pytest.raises(StorageError) as err:
        c.read(f"{base}/nope")
    assert err.value.exception == "FileNotFoundException"
    assert f"{base}/nope" in str(err.value) and not err.value.retriable
    with pytest.raises(StorageError):
        c.list(f"{base}/nope")


def test_hdfs_uris_are_accepted_as_paths(hdfs_local, hdfs_huser):
    c = hdfs_local.client()
    c.write(f"{hdfs_huser}/via-uri", b"ok")
    assert c.read(WebHDFS.hdfs_path(hdfs_huser) + "/via-uri") == b"ok"
    with pytest.raises(StorageError, match="absolute"):
        c.status("relative/path")


def test_permissions_are_enforced_for_other_users(hdfs_local, hdfs_huser):
    with pytest.raises(StorageError) as err:
        hdfs_local.client(user="mallory").write(f"{hdfs_huser}/x", b"no")
    assert err.value.exception == "AccessControlException" and not err.value.retriable


def test_namenode_down_is_a_retriable_error_and_recovers(hdfs_local, hdfs_huser):
    c = hdfs_local.client()
    c.write(f"{hdfs_huser}/before", b"safe")
    hdfs_local.stop_namenode()
    try:
        with pytest.raises(StorageError) as err:
            c.status(f"{hdfs_huser}/before")
        assert err.value.retriable and "cannot reach" in str(err.value)
    finally:
        hdfs_local.start_namenode(wait=True)
    # the DataNode's link to the old NameNode may fail once more: that is what retries are for
    assert Retry(first_wait=0.2).call(lambda: c.read(f"{hdfs_huser}/before")) == b"safe"


def test_retry_gives_up_after_a_bounded_number_of_tries():
    calls, waits = [], []

    def always_down():
        calls.append(1)
        raise StorageError("down", retriable=True)

    with pytest.raises(StorageError, match="down"):
        Retry(attempts=4, first_wait=1, max_wait=3).call(always_down, sleep=waits.append)
    assert len(calls) == 4 and waits == [1, 2, 3]


def test_retry_does_not_retry_a_permanent_error():
    calls = []

    def missing():
        calls.append(1)
        raise StorageError("no such file", retriable=False)

    with pytest.raises(StorageError):
        Retry().call(missing, sleep=lambda s: None)
    assert len(calls) == 1


def test_unreachable_server_is_retriable():
    port_nobody_listens_on = "http://127.0.0.1:9"
    with pytest.raises(StorageError) as err:
        WebHDFS(port_nobody_listens_on, timeout=2).status("/")
    assert err.value.retriable
