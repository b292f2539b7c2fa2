"""The one SparkSession builder: a local master gets shuffles sized to its cores, because
Spark's 200 default partitions made every small day and every stream batch mostly task overhead."""
from __future__ import annotations

import os

import pytest

from spot_ae_job.spark import local_cores


@pytest.mark.parametrize("master, cores", [
    ("local", 1), ("local[1]", 1), ("local[3]", 3), ("local[2, 4]", 2), ("local[*]", os.cpu_count()),
    ("yarn", None), ("spark://h:7077", None), (None, None), ("localhost", None),
])
def test_the_cores_of_a_master(master, cores):
    assert local_cores(master) == cores


def test_the_test_session_has_the_shuffle_width_it_asked_for(spark):
    # an explicit setting wins over the local default
    assert spark.conf.get("spark.sql.shuffle.partitions") == "2"
