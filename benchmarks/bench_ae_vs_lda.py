"""AE vs Spot's LDA on the same rows: wall time and peak memory of training + scoring, and ratios.

Each model runs in its own fresh process (its own Spark driver JVM and Python workers), so
neither inherits the other's JIT, caches or heap. Peak memory = the largest sum of RSS over that
process tree (Python driver + its Spark JVM + pyspark workers), sampled every 0.2 s with psutil.

    .venv/bin/python benchmarks/bench_ae_vs_lda.py                      # the improved CIC-IDS2018 sample
    .venv/bin/python benchmarks/bench_ae_vs_lda.py --epochs 90 --repeat 20 --data DIR

Both models train on the benign rows and then score every row (the evaluation's work).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    ps = psutil.Process(proc.pid)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                peak[0] = max(peak[0], tree_rss(ps))
            except psutil.Error:
                pass
            done.wait(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, _ = proc.communicate()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child failed ({proc.returncode}): {' '.join(cmd)}")
    inner = json.loads(out.strip().splitlines()[-1])
    return {"wall_s": wall, "peak_rss_mb": peak[0] / 2**20, **inner}


def child(args) -> None:
    """Runs in the measured process: read, train on benign rows, score every row."""
    from pyspark.sql import functions as F

    from spot_ae_job.ingest.cicids import read_cicids
    from spot_ae_job.schema import FLOW_COLUMNS
    from spot_ae_job.spark import session

    spark = session(args.master, app=f"bench-{args.only}")
    flows = read_cicids(spark, args.data).flows.where(F.col("is_attack").isNotNull())
    if args.repeat > 1:
        flows = flows.crossJoin(spark.range(args.repeat).withColumnRenamed("id", "_copy")).drop("_copy")
    flows = flows.cache()
    n = flows.count()
    train = flows.where(~F.col("is_attack")).select(*FLOW_COLUMNS)
    quiet = lambda m: None  # noqa: E731
    t = time.perf_counter()
    if args.only == "ae":
        from spot_ae_job.model import train_autoencoder
        from spot_ae_job.score import score_flows

        model = train_autoencoder(train, epochs=args.epochs, progress=quiet)
        t_fit = time.perf_counter() - t
        scored = score_flows(model, flows.select(*FLOW_COLUMNS))
    else:
        from spot_ae_job.lda import fit_lda

        model = fit_lda(train, topics=args.topics, max_iter=args.lda_iter, progress=quiet)
        t_fit = time.perf_counter() - t
        scored = model.score(flows.select(*FLOW_COLUMNS))
    t = time.perf_counter()
    agg = scored.agg(F.count("*").alias("n"), F.count("score").alias("scored")).first()
    t_score = time.perf_counter() - t
    print(json.dumps({"rows": n, "scored": agg["scored"], "fit_s": t_fit, "score_s": t_score}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(os.environ.get("SPOT_AE_DATA", REPO.parent / "shared" / "data")) / "cicids2018" / "aegmm__toy_dataset.csv"
    ap.add_argument("--data", default=str(default))
    ap.add_argument("--epochs", type=int, default=10, help="AE epochs (the paper: 90)")
    ap.add_argument("--topics", type=int, default=20)
    ap.add_argument("--lda-iter", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1, help="replicate the rows N times for a bigger input")
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--only", choices=["ae", "lda"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        child(args)
        return
    res = {}
    for m in ("ae", "lda"):
        cmd = [sys.executable, __file__, "--only", m, "--data", args.data, "--epochs", str(args.epochs),
               "--topics", str(args.topics), "--lda-iter", str(args.lda_iter), "--repeat", str(args.repeat),
               "--master", args.master]
        res[m] = measure(cmd)
    ae, lda = res["ae"], res["lda"]
    print(f"input: {args.data} x{args.repeat} = {ae['rows']} rows; AE {args.epochs} epochs; "
          f"LDA {args.topics} topics, {args.lda_iter} iterations; master {args.master}")
    print(f"{'model':6} {'wall s':>8} {'fit s':>8} {'score s':>8} {'peak RSS MB':>12} {'rows scored':>12}")
    for m in ("ae", "lda"):
        r = res[m]
        print(f"{m.upper():6} {r['wall_s']:8.1f} {r['fit_s']:8.1f} {r['score_s']:8.1f} {r['peak_rss_mb']:12.0f} {r['scored']:12d}")
    print(f"ratio AE/LDA: wall {ae['wall_s'] / lda['wall_s']:.2f}x, fit {ae['fit_s'] / lda['fit_s']:.2f}x, "
          f"score {ae['score_s'] / lda['score_s']:.2f}x, peak RSS {ae['peak_rss_mb'] / lda['peak_rss_mb']:.2f}x")


if __name__ == "__main__":
    main()
