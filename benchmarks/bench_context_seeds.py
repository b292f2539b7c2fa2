"""How much the ae-context model's detection depends on its random initial weights, per test day.

One trained network per seed says little on the excerpts: a training day of ~220 benign flows in
which nearly every host is alone in its minute gives context inputs that are almost constant, so
the weights leaving them get almost no gradient and keep their random start; whether a moderately
raised count reconstructs (and the flow is missed) is then the seed's doing. This prints, for
several seeds, each test day's PR-AUC (with its stratified bootstrap 95% interval, nan where
a class has fewer than 30 flows) and each attack label's recall at 5% benign FPR (the
evaluation's definitions, `spot_ae_job.metrics`), with the same context code, scale and training
as the job (`elephas_fit`: Elephas' synchronous training in one process, the method the
threshold's cross-fitting uses), so that feature choices are judged on the spread, not on one
draw. `--without` drops context inputs, to compare a design with and without them.

    .venv/bin/python benchmarks/bench_context_seeds.py --seeds 7,8,9,10
    .venv/bin/python benchmarks/bench_context_seeds.py --without src_repeat_1h,dsvc_repeat_1h
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from spot_ae_job import metrics  # noqa: E402
from spot_ae_job.context import CONTEXT_COLUMNS, FIXED_BOUNDS, add_context  # noqa: E402
from spot_ae_job.evaluate import DAY, default_data, with_day  # noqa: E402
from spot_ae_job.features import FEATURE_COLUMNS, Scaler, add_features  # noqa: E402
from spot_ae_job.ingest.cicids import read_cicids  # noqa: E402
from spot_ae_job.model import elephas_fit, forward  # noqa: E402
from spot_ae_job.spark import session  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(default_data() / "aegmm__toy_dataset.csv"))
    ap.add_argument("--train-day", default="2018-02-28")
    ap.add_argument("--seeds", default="7,8,9,10")
    ap.add_argument("--epochs", type=int, default=90)
    ap.add_argument("--holdout", type=float, default=0.2, help="share of the training day's benign flows not trained on")
    ap.add_argument("--without", default="", help="comma-separated context inputs to leave out")
    ap.add_argument("--master", default="local[2]")
    a = ap.parse_args()
    spark = session(a.master, app="bench-context-seeds", extra={"spark.sql.shuffle.partitions": "4"})
    flows = with_day(read_cicids(spark, [a.data]).flows).where(F.col("is_attack").isNotNull())
    drop = {"f_" + c for c in a.without.split(",") if c}
    cols = FEATURE_COLUMNS + [c for c in CONTEXT_COLUMNS if c not in drop]
    df = add_context(add_features(flows)).select(DAY, "label", "is_attack", *cols).toPandas()
    spark.stop()
    x = df[cols].to_numpy(dtype=np.float64)
    benign = (df[DAY] == a.train_day).to_numpy() & ~df["is_attack"].to_numpy(dtype=bool)
    held = benign & (np.random.default_rng(0).random(len(df)) < a.holdout)
    train = benign & ~held
    lo, hi = x[train].min(0), x[train].max(0)
    for j, c in enumerate(cols):
        if c in FIXED_BOUNDS:
            lo[j], hi[j] = FIXED_BOUNDS[c]
    xs = Scaler(lo, hi, tuple(cols)).transform(x)
    print(f"{len(df)} flows; trained on {train.sum()} benign flows of {a.train_day}; inputs: {len(cols)}"
          f"{' (without ' + a.without + ')' if drop else ''}; {a.epochs} epochs; seeds {a.seeds}")
    seeds = [int(s) for s in a.seeds.split(",")]
    per = {}
    for seed in seeds:
        w = [np.asarray(v, dtype=np.float32) for v in
             elephas_fit(xs[train], epochs=a.epochs, batch_size=32, seed=seed, validation_split=0.2, workers=2)]
        s = forward(w, xs)
        for day in sorted(set(df[DAY][~train])):
            m = (df[DAY] == day).to_numpy() & ~train
            y = df["is_attack"].to_numpy(dtype=bool)[m]
            if y.all() or not y.any():
                continue
            per.setdefault((day, "PR-AUC"), []).append(metrics.average_precision(y, s[m]))
            ci = metrics.bootstrap_auc(y, s[m])  # stratified, 200 resamples, as evaluate's intervals
            per.setdefault((day, "PR-AUC bootstrap 95% low"), []).append(ci["pr_auc_lo"])
            per.setdefault((day, "PR-AUC bootstrap 95% high"), []).append(ci["pr_auc_hi"])
            for label in sorted(set(df["label"][m][y])):
                one = m & (df["label"] == label).to_numpy()
                yy = np.r_[np.ones(one.sum(), bool), np.zeros((~y).sum(), bool)]
                ss = np.r_[s[one], s[m][~y]]
                per.setdefault((day, f"recall@5% {label}"), []).append(metrics.at_fpr(yy, ss, 0.05)["recall"])
    print(f"{'test day':12s} {'measure':42s} " + " ".join(f"{'s' + str(s):>6s}" for s in seeds) + "    min   mean")
    for (day, what), v in per.items():
        print(f"{day:12s} {what:42s} " + " ".join(f"{x:6.3f}" for x in v) + f" {np.min(v):6.3f} {np.mean(v):6.3f}")


if __name__ == "__main__":
    main()
