"""The one SparkSession builder: a local master gets shuffles sized to its cores, because
Spark's 200 default partitions made every small day and every stream batch mostly task overhead."""
from __future__ import annotations

import os

import pytest

from spot_ae_job.spark import local_cores, session


@pytest.mark.parametrize("master, cores", [
    ("local", 1), ("local[1]", 1), ("local[3]", 3), ("local[2, 4]", 2), ("local[*]", os.cpu_count()),
    ("yarn", None), ("spark://h:7077", None), (None, None), ("localhost", None),
])
def test_the_cores_of_a_master(master, cores):
    assert local_cores(master) == cores


def test_a_local_session_shuffles_into_twice_its_cores_and_an_explicit_setting_wins(spark):
    # Asked through the one builder (the running session takes the SQL settings it is given), and
    # set back: other tests in this process share the session, and some run the CLI in-process.
    try:
        assert session("local[2]").conf.get("spark.sql.shuffle.partitions") == "4"
        assert session("local[2]", extra={"spark.sql.shuffle.partitions": "3"}).conf.get("spark.sql.shuffle.partitions") == "3"
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "2")
