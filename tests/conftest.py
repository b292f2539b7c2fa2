"""Shared fixtures: one local[2] Spark session for the whole run, and the real data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPOT_AE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"real data folder missing: {DATA} (set SPOT_AE_DATA)")
    return DATA


@pytest.fixture(scope="session")
def spark():
    from spot_ae_job.spark import session

    s = session("local[2]", app="spot-ae-tests", extra={"spark.sql.shuffle.partitions": "2"})
    yield s
    s.stop()
