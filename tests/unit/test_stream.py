"""Continuous scoring (spot_ae_job/stream.py) on local Spark: real nfdump output lands in the flow
table the way the ingest watcher commits it, the stream scores it, and what it wrote is compared
with the table itself. The restart test kills the stream's process group (driver + JVM) on the
real local HDFS, with the checkpoint there, and restarts it."""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from spot_ae_job import fsutil
from spot_ae_job.alerts import read_alerts
from spot_ae_job.errors import SpotAEError
from spot_ae_job.features import FEATURE_COLUMNS, N_FEATURES, Scaler, add_features
from spot_ae_job.ingest.nfdump import Decoded, decode_file
from spot_ae_job.ingest.watcher import commit_decoded
from spot_ae_job.layout import Day, Layout
from spot_ae_job.mlops import RunOptions, read_day, validate_rows, write_results
from spot_ae_job.model import HIDDEN, AEModel
from spot_ae_job.oa.results import Results
from spot_ae_job.schema import FLOW_COLUMNS, RESULT_COLUMNS, flow_table_location
from spot_ae_job.score import score_flows
from spot_ae_job.storage import open_storage
from spot_ae_job.stream import BatchScorer, ModelFollower, StreamOptions, start, stream_location

pytest_plugins = ["tests.hdfs_local"]

REPO = Path(__file__).resolve().parents[2]
KEY = ["treceived", "unix_tstamp", "sip", "dip", "sport", "dport", "proto", "flag", "ipkt", "ibyt", "opkt", "obyt", "tdur"]


@pytest.fixture(scope="module")
def sample(data_dir) -> Decoded:
    """nfdump's own decoding of a real nfcapd file (2,350 flows of one hour, plus rejects)."""
    return decode_file(data_dir / "nfcapd" / "nfcapd.sample")


def land(store, dec: Decoded, parts: int, prefix: str) -> list[int]:
    """Commit `dec`'s flows as `parts` flow files, exactly as the ingest watcher commits a file."""
    n = dec.flows.num_rows
    cuts = np.linspace(0, n, parts + 1).astype(int)
    sizes = []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        piece = Decoded(dec.source, dec.flows.slice(a, b - a), dec.rejects.slice(0, 0), int(b - a))
        commit_decoded(store, piece, f"{prefix}-{i:03d}", "nfcapd", f"{prefix}-{i}")
        sizes.append(int(b - a))
    return sizes


def make_model(spark, huser: str, seed: int, name: str) -> AEModel:
    """A small real model (random weights, scaler fitted on the table, threshold = p90 of its
    scores on it), saved the way training saves one: it becomes LATEST."""
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, (N_FEATURES, HIDDEN)).astype(np.float32), np.zeros(HIDDEN, np.float32),
               rng.normal(0, 0.5, (HIDDEN, N_FEATURES)).astype(np.float32), np.zeros(N_FEATURES, np.float32)]
    flows = spark.read.parquet(flow_table_location(huser))
    scaler = Scaler.fit(add_features(flows).select(*FEATURE_COLUMNS))
    model = AEModel(weights, scaler, float("nan"), {"version": name, "kind": "ae"})
    model.threshold = float(score_flows(model, flows).approxQuantile("score", [0.9], 0.0)[0])
    model.save(spark, Layout(huser).models)
    return model


def streamed(spark, huser: str, day: str, what: str = "all_scores"):
    return spark.read.parquet(f"{stream_location(day, huser)}/{what}")


def table_keys(spark, huser: str) -> collections.Counter:
    rows = spark.read.parquet(flow_table_location(huser)).select(*KEY).collect()
    return collections.Counter(tuple(r) for r in rows)


def out_keys(df) -> collections.Counter:
    return collections.Counter(tuple(r) for r in df.select(*KEY).collect())


DAY = "20230125"  # the day of nfcapd.sample's flows


def test_landed_files_are_scored_once_each_and_a_new_model_takes_over_from_the_next_batch(spark, tmp_path, sample):
    huser = f"file://{tmp_path}/spot"
    store = open_storage(huser)
    first = sample.flows.slice(0, 1200)
    land(store, Decoded("a", first, sample.rejects.slice(0, 0), first.num_rows), 3, "nf-a")
    v1 = make_model(spark, huser, 1, "ae-v1")
    says: list[str] = []
    q = start(spark, StreamOptions(huser, trigger_seconds=0.5, max_files_per_trigger=2), say=says.append)
    try:
        q.processAllAvailable()
        out = streamed(spark, huser, DAY)
        assert out_keys(out) == table_keys(spark, huser)  # every flow once, none invented
        assert {r[0] for r in out.select("model_version").distinct().collect()} == {"ae-v1"}

        v2 = make_model(spark, huser, 2, "ae-v2")  # "training" while the stream runs
        rest = sample.flows.slice(1200)
        land(store, Decoded("b", rest, sample.rejects.slice(0, 0), rest.num_rows), 2, "nf-b")
        q.processAllAvailable()
    finally:
        q.stop()
    out = streamed(spark, huser, DAY)
    assert out.count() == sample.flows.num_rows
    assert out_keys(out) == table_keys(spark, huser)
    by_file = {r["treceived"] for r in out.where("model_version = 'ae-v2'").select("treceived").collect()}
    assert by_file and by_file <= {str(t) for t in rest.column("treceived").to_pylist()}
    # The flag follows the threshold of the model that scored the row.
    for m in (v1, v2):
        rows = out.where(F.col("model_version") == m.version)
        assert rows.where((F.col("score") > m.threshold) != F.col("suspicious")).count() == 0
    sus = streamed(spark, huser, DAY, "suspicious")
    assert sus.columns[:len(RESULT_COLUMNS)] == RESULT_COLUMNS and "model_version" in sus.columns
    assert sus.count() == out.where("suspicious").count() > 0
    assert any("model ae-v2 loaded (was ae-v1)" in s for s in says)

    # The OA shows the streamed day (no batch run exists for it): most suspicious first.
    results = Results(open_storage(huser))
    assert [d["day"] for d in results.days()] == [DAY]
    t = results.table(DAY)
    assert len(t) == sus.count()
    assert list(t["score"]) == sorted(t["score"], reverse=True)
    assert set(t["model_version"]) <= {"ae-v1", "ae-v2"}
    assert list(t["rank"]) == list(range(1, len(t) + 1))


def test_a_rerun_of_the_same_batch_id_replaces_its_output(spark, tmp_path, sample):
    huser = f"file://{tmp_path}/spot"
    land(open_storage(huser), sample, 1, "nf")
    model = make_model(spark, huser, 3, "ae-v1")
    scorer = BatchScorer(huser, ModelFollower(spark, huser, say=lambda _: None), say=lambda _: None)
    batch = spark.read.parquet(flow_table_location(huser))
    scorer(batch, 7)
    scorer(batch, 7)  # what a restart does with a batch the checkpoint had not committed
    assert streamed(spark, huser, DAY).count() == sample.flows.num_rows
    assert {r[0] for r in streamed(spark, huser, DAY).select("batch").distinct().collect()} == {7}
    # Its alerts too: one per flagged flow, not one per attempt.
    from spot_ae_job.alerts import read_alerts

    assert len(read_alerts(spark, DAY, huser)) == streamed(spark, huser, DAY, "suspicious").count() > 0

    # The OA lists the streamed flagged flows; a batch without Spark's _SUCCESS (being written,
    # or left by a crash) is not shown; a batch run re-scores the whole day and then is its list.
    n_streamed = streamed(spark, huser, DAY, "suspicious").count()
    t = Results(open_storage(huser)).table(DAY)
    assert len(t) == n_streamed > 0 and set(t["model_version"]) == {"ae-v1"}
    success = f"{stream_location(DAY, huser).removeprefix('file://')}/suspicious/batch=7/_SUCCESS"
    os.rename(success, success + ".hidden")
    assert len(Results(open_storage(huser)).table(DAY)) == 0
    os.rename(success + ".hidden", success)
    good, rejects = validate_rows(read_day(spark, Layout(huser), Day.parse(DAY)))
    run = write_results(spark, model.score(good), rejects, model, Day.parse(DAY), Layout(huser), RunOptions(),
                        progress=lambda _: None)
    results = Results(open_storage(huser))
    assert len(results.table(DAY)) == run.suspicious
    assert results.days()[0]["streamed"] is True and results.days()[0]["suspicious"] == run.suspicious


def test_a_rerun_batch_counts_its_suppressed_alerts_once(spark, tmp_path, sample):
    import json

    from spot_ae_job import verdicts
    from spot_ae_job.alerts import read_alerts, summary_location

    huser = f"file://{tmp_path}/spot"
    land(open_storage(huser), sample, 1, "nf")
    make_model(spark, huser, 3, "ae-v1")
    scorer = BatchScorer(huser, ModelFollower(spark, huser, say=lambda _: None), say=lambda _: None)
    batch = spark.read.parquet(flow_table_location(huser))
    scorer(batch, 4)
    flagged = streamed(spark, huser, DAY, "suspicious")
    n_flagged, one = flagged.count(), flagged.first()
    covered = flagged.where((F.col("sip") == one.sip) & (F.col("dip") == one.dip) & (F.col("dport") == one.dport)
                            & (F.col("proto") == one.proto)).count()
    low = verdicts.new_verdict(sip=one.sip, dip=one.dip, dport=one.dport, proto=one.proto, sev=3, who="t", day=DAY)
    path = tmp_path / "spot" / "flow" / verdicts.file_name(low)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(verdicts.to_line(low))

    scorer(batch, 4)
    scorer(batch, 4)  # the same batch again, as after a crash before the checkpoint commit
    summary = json.loads(Path(summary_location(DAY, huser).removeprefix("file://")).read_text())
    assert summary["suppressed_by_verdict"] == {low["id"]: covered} and summary["suppressed"] == covered
    assert summary["alerts"] == len(read_alerts(spark, DAY, huser)) == n_flagged - covered


def test_without_a_model_the_stream_waits_and_says_why(spark, tmp_path):
    said: list[str] = []
    follower = ModelFollower(spark, f"file://{tmp_path}/spot", say=said.append)
    with pytest.raises(SpotAEError, match="no trained model"):
        follower.wait(poll_seconds=0.2, give_up_after=0.5)
    assert len(said) >= 2 and all("no model yet" in s for s in said)


def _committed_batches(spark, huser: str) -> list[str]:
    root = f"{stream_location(DAY, huser)}/suspicious"
    return [d for d in fsutil.list_dirs(spark, root) if fsutil.exists(spark, f"{root}/{d}/_SUCCESS")]


def _stream_cli(huser: str, log: Path, *extra: str) -> subprocess.Popen:
    """`spot-ae stream` in its own process group (driver + JVM), output to a file (a pipe nobody
    reads would fill and stall it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SPOT_AE_DRIVER_MEMORY": "1g"}
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "spot_ae_job", "stream", "--huser", huser, "--master", "local[1]",
             "--trigger-seconds", "1", "--max-files-per-trigger", "1", *extra],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_killed_mid_stream_the_restart_from_the_hdfs_checkpoint_scores_every_flow_exactly_once(
        spark, hdfs_local, hdfs_huser, sample, tmp_path):
    huser, log = hdfs_huser, tmp_path / "stream.log"
    files = land(open_storage(huser, webhdfs=hdfs_local.http_url), sample, 8, "nf")
    make_model(spark, huser, 4, "ae-v1")

    proc = _stream_cli(huser, log)
    deadline = time.monotonic() + 300
    try:
        while len(_committed_batches(spark, huser)) < 2:
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the stream committed no batches in 300 s"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its JVM, mid-stream
        proc.wait()
    done_at_kill = len(_committed_batches(spark, huser))
    assert done_at_kill < len(files), "the stream finished before it was killed: nothing was tested"

    # The restart may take bigger batches: the batch the kill interrupted is re-run with the files
    # the checkpoint logged for it, and what is left comes after it.
    again = _stream_cli(huser, log, "--available-now", "--max-files-per-trigger", "100")
    assert again.wait(timeout=600) == 0, log.read_text(errors="replace")[-3000:]
    assert "batch" in log.read_text()  # it said what it did

    out = streamed(spark, huser, DAY)
    assert out.count() == sum(files)
    assert out_keys(out) == table_keys(spark, huser)
    # What the killed attempt left half-written was replaced: every batch directory is committed.
    root = f"{stream_location(DAY, huser)}/suspicious"
    assert fsutil.list_dirs(spark, root) == _committed_batches(spark, huser)
    assert fsutil.exists(spark, f"{huser}/flow/stream_checkpoint/offsets")  # the checkpoint is on HDFS


def make_context_model(spark, huser: str, seed: int, name: str) -> AEModel:
    """A small real ae-context model (random weights, the fixed context scale), saved as LATEST."""
    from spot_ae_job.context import CONTEXT_COLUMNS, FIXED_BOUNDS, add_context

    n = N_FEATURES + len(CONTEXT_COLUMNS)
    rng = np.random.default_rng(seed)
    weights = [rng.normal(0, 0.5, (n, HIDDEN)).astype(np.float32), np.zeros(HIDDEN, np.float32),
               rng.normal(0, 0.5, (HIDDEN, n)).astype(np.float32), np.zeros(n, np.float32)]
    flows = spark.read.parquet(flow_table_location(huser))
    cols = FEATURE_COLUMNS + CONTEXT_COLUMNS
    scaler = Scaler.fit(add_features(add_context(flows)).select(*cols), cols, fixed=FIXED_BOUNDS)
    model = AEModel(weights, scaler, 0.0, {"version": name, "kind": "ae-context"})
    model.threshold = float(score_flows(model, flows).approxQuantile("score", [0.9], 0.0)[0])
    model.save(spark, Layout(huser).models)
    return model


def test_a_context_model_streams_the_scores_a_batch_run_of_the_day_gives(spark, tmp_path, sample):
    """Micro-batches of one file each, in time order: every flow's host context, and so its
    score, equals what scoring the whole day at once gives it."""
    huser = f"file://{tmp_path}/spot"
    ordered = sample.flows.sort_by("unix_tstamp")
    land(open_storage(huser), Decoded("t", ordered, sample.rejects.slice(0, 0), ordered.num_rows), 4, "nf-t")
    model = make_context_model(spark, huser, 5, "ctx-v1")
    q = start(spark, StreamOptions(huser, max_files_per_trigger=1, available_now=True), say=lambda _: None)
    q.awaitTermination()
    good, _ = validate_rows(read_day(spark, Layout(huser), Day.parse(DAY)))
    batch = {tuple(r[:-1]): r[-1] for r in score_flows(model, good).select(*KEY, "score").collect()}
    streamed_scores = {tuple(r[:-1]): r[-1] for r in streamed(spark, huser, DAY).select(*KEY, "score").collect()}
    assert len(streamed_scores) == len(batch) > 1000
    assert all(streamed_scores[k] == pytest.approx(v, rel=1e-6) for k, v in batch.items())
    # the stream's run.json names the model, so the OA need not guess it for a streamed day
    panel = Results(open_storage(huser)).model(DAY)
    assert (panel["model"], panel["model_version"], panel["streamed"]) == ("ae-context", "ctx-v1", True)
    assert panel["threshold"] == pytest.approx(model.threshold)


def on_days(dec: Decoded, n: int) -> Decoded:
    """`dec`'s flows spread over n consecutive days: the k-th n-th of them moved k days on, with
    every time column agreeing with the moved timestamp."""
    df = dec.flows.to_pandas()
    df["unix_tstamp"] += 86400 * (np.arange(len(df)) * n // len(df))
    t = pd.to_datetime(df["unix_tstamp"], unit="s")
    df["treceived"] = t.dt.strftime("%Y-%m-%d %H:%M:%S")
    for col, part in (("tryear", "year"), ("trmonth", "month"), ("trday", "day"), ("trhour", "hour"),
                      ("trminute", "minute"), ("trsec", "second")):
        df[col] = getattr(t.dt, part)
    flows = pa.Table.from_pandas(df, schema=dec.flows.schema, preserve_index=False)
    return Decoded(dec.source, flows, dec.rejects.slice(0, 0), flows.num_rows)


def test_a_batch_spanning_days_writes_each_day_its_own_flows_alerts_and_run_json(spark, tmp_path, sample):
    """A backlog (or a stream catching up) puts several days in one micro-batch; they are written
    side by side (stream.DAY_WRITERS), and each day gets exactly its own flows, suspicious flows,
    alerts, incidents and run.json."""
    huser = f"file://{tmp_path}/spot"
    land(open_storage(huser), on_days(sample, 3), 3, "nf-days")
    make_model(spark, huser, 6, "ae-v1")
    q = start(spark, StreamOptions(huser, max_files_per_trigger=100, available_now=True), say=lambda _: None)
    q.awaitTermination()
    table = spark.read.parquet(flow_table_location(huser))
    days = sorted(r[0] for r in table.select(F.format_string("%04d%02d%02d", "y", "m", "d")).distinct().collect())
    assert days == ["20230125", "20230126", "20230127"]
    for day in days:
        y, m, d = int(day[:4]), int(day[4:6]), int(day[6:])
        out = streamed(spark, huser, day)
        assert out_keys(out) == out_keys(table.where((F.col("y") == y) & (F.col("m") == m) & (F.col("d") == d)))
        assert fsutil.list_dirs(spark, f"{stream_location(day, huser)}/all_scores") == ["batch=0"]  # one batch
        flagged = out.where("suspicious").count()
        assert streamed(spark, huser, day, "suspicious").count() == flagged == len(read_alerts(spark, day, huser)) > 0
        assert streamed(spark, huser, day, "incidents").count() > 0
        run = json.loads(Path(Layout(huser).results(Day.parse(day)).stream_run_json.removeprefix("file://")).read_text())
        assert (run["day"], run["model_version"], run["last_batch"]) == (day, "ae-v1", 0)
