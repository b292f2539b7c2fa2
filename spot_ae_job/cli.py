"""`spot-ae`: the command line, in Spot's shape. Thin: parse, call a stage, report.

Subcommands of other stages (ingest, oa, evaluate) are dispatched lazily to their modules so
`spot-ae oa` does not pay for TensorFlow and `spot-ae ingest` does not start a JVM it does not use.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from spot_ae_job.errors import SpotAEError, run_command

DELEGATED = {"ingest": "spot_ae_job.ingest.cli", "oa": "spot_ae_job.oa.cli", "evaluate": "spot_ae_job.evaluate",
             "cross-check": "spot_ae_job.crosscheck"}


def default_huser() -> str:
    return os.environ.get("SPOT_AE_HUSER") or "file://" + os.path.abspath("var/spot")


def default_data() -> Path:
    env = os.environ.get("SPOT_AE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _say(msg: str) -> None:
    print(f"[spot-ae {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--huser", default=default_huser(), help="Spot's HDFS user root as a URI (file:// or hdfs://); default $SPOT_AE_HUSER or ./var/spot")
    p.add_argument("--master", default=os.environ.get("SPOT_AE_MASTER", "local[*]"), help="Spark master: local[*] (default) or yarn")


def _training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=90, help="training epochs (paper: 90)")
    p.add_argument("--batch-size", type=int, default=32, help="Keras batch size (Keras' default)")
    p.add_argument("--dupfactor", type=int, default=None, help="copies of each low-risk feedback flow (Spot: 1000)")
    p.add_argument("--model", choices=["ae", "ae-context", "lda"], default="ae",
                   help="ae: the paper's autoencoder (default); ae-context: + per-host 60 s window features; lda: Spot's")


def _threshold_args(p: argparse.ArgumentParser, scoring: bool = False) -> None:
    from spot_ae_job.thresholds import MODES

    p.add_argument("--threshold-mode", choices=MODES, default=None,
                   help="how the threshold is fitted on held-out benign flows (default: p95, the paper's rule, when "
                        "training; the saved model's own mode when scoring with it); see docs/detection.md")
    p.add_argument("--benign-fpr", type=float, default=None, metavar="X",
                   help="benign-fpr mode: a fraction X of benign flows alert (0.001 = 0.1%%)")
    p.add_argument("--alerts-per-day", type=float, default=None, metavar="N",
                   help="alerts-per-day mode: about N benign alerts per day")
    if scoring:
        p.add_argument("--drift-limit", type=float, default=None,
                       help="score PSI above which a scored day is marked drifted (default 0.25)")


def threshold_choice(args) -> tuple[str | None, float | None]:
    """(mode, value) from the flags; a value alone picks its mode; None: not asked."""
    from spot_ae_job.thresholds import ALERTS_PER_DAY, BENIGN_FPR, P95, flagged_fraction

    fpr, apd, mode = getattr(args, "benign_fpr", None), getattr(args, "alerts_per_day", None), getattr(args, "threshold_mode", None)
    if fpr is not None and apd is not None:
        raise SpotAEError("give either --benign-fpr or --alerts-per-day, not both")
    if mode is None:
        mode = BENIGN_FPR if fpr is not None else ALERTS_PER_DAY if apd is not None else None
    value = {BENIGN_FPR: fpr, ALERTS_PER_DAY: apd}.get(mode)
    if mode == BENIGN_FPR and fpr is None:
        raise SpotAEError("--threshold-mode benign-fpr needs --benign-fpr X (e.g. 0.001)")
    if mode == ALERTS_PER_DAY and apd is None:
        raise SpotAEError("--threshold-mode alerts-per-day needs --alerts-per-day N (e.g. 200)")
    if mode == P95 and (fpr is not None or apd is not None):
        raise SpotAEError("--threshold-mode p95 takes no --benign-fpr or --alerts-per-day")
    if mode is not None:  # range checks now, before Spark starts (the day's size is not known yet)
        flagged_fraction(mode, value, flows_per_day=1 << 62)
    return mode, value


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="spot-ae", description="Apache Spot's flow pipeline with an autoencoder in place of LDA")
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("load-csv", help="CIC-IDS2018 CSVs -> flow table (labels to the labelled twin)")
    _common(p)
    p.add_argument("paths", nargs="+")
    p.add_argument("--day", help="YYYYMMDD for rows of files that have no Timestamp column")

    p = sub.add_parser("train", help="train the autoencoder on one day's benign flows and save it")
    _common(p)
    _training(p)
    _threshold_args(p)
    p.add_argument("--day", required=True, help="YYYYMMDD")

    p = sub.add_parser("score", help="score one day with a saved model and write Spot's results")
    _common(p)
    p.add_argument("--day", required=True, help="YYYYMMDD")
    p.add_argument("--model-version", default="latest")
    p.add_argument("--max-results", type=int, default=None)
    p.add_argument("--tol", type=float, default=None, help="threshold override")
    _threshold_args(p, scoring=True)
    _forwarding(p)

    p = sub.add_parser("ml-ops", help="Spot's ml_ops: YYYYMMDD flow [MAXRESULTS] [TOL]")
    _ml_ops_args(p)

    p = sub.add_parser("alerts", help="alerts of a scored day: `alerts forward YYYYMMDD` sends them to the configured SIEM")
    _common(p)
    p.add_argument("action", choices=["forward"])
    p.add_argument("day", help="YYYYMMDD")
    p.add_argument("--forward-config", default=None, help="forwarding TOML (default $SPOT_AE_FORWARD_CONFIG; docs/alerts.md)")

    p = sub.add_parser("demo", help="the whole job on the bundled CIC-IDS2018 excerpt, local Spark")
    _common(p)
    _training(p)
    p.add_argument("--data", default=None, help="folder of CIC-IDS2018 CSVs (default: the bundled excerpt)")
    p.add_argument("--day", default="20180216", help="day of the excerpt to train and score")

    p = sub.add_parser("stream", help="score flows continuously as they land (Spark Structured Streaming)")
    _common(p)
    p.add_argument("--checkpoint", default=None, help="the query's checkpoint URI (default {huser}/flow/stream_checkpoint; on HDFS in the cluster)")
    p.add_argument("--trigger-seconds", type=float, default=float(os.environ.get("SPOT_AE_STREAM_TRIGGER", 10)), help="micro-batch interval (default 10)")
    p.add_argument("--max-files-per-trigger", type=int, default=100, help="at most this many new flow files per micro-batch (default 100)")
    p.add_argument("--model-poll-seconds", type=float, default=30.0, help="while no model exists, look again this often")
    p.add_argument("--available-now", action="store_true", help="score every flow file not scored yet, then stop")
    p.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting for this long-running application (e.g. a smaller executor than batch jobs)")

    for name in DELEGATED:
        sub.add_parser(name, help=f"see `spot-ae {name} --help`", add_help=False)
    return ap


def _forwarding(p: argparse.ArgumentParser) -> None:
    p.add_argument("--forward-config", default=None,
                   help="forwarding TOML: alerts are sent after scoring when it says after_ml_ops = true (default $SPOT_AE_FORWARD_CONFIG)")


def _ml_ops_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    _training(p)
    _threshold_args(p, scoring=True)
    _forwarding(p)
    p.add_argument("day", help="YYYYMMDD")
    p.add_argument("type", choices=["flow"], help="data type (only flow)")
    p.add_argument("positional", nargs="*", metavar="MAXRESULTS TOL", help="Spot's documented order: MAXRESULTS then TOL")
    p.add_argument("--max-results", type=int, default=None, help="write at most this many suspicious flows")
    p.add_argument("--tol", type=float, default=None, help="threshold override (AE: flows scoring above it)")
    p.add_argument("--model-version", default=None, help="score with this saved model (or 'latest') instead of training on the day")


def _resolve_positional(args) -> None:
    """Spot's docs say MAXRESULTS then TOL while its script read them the other way round;
    we follow the docs, refuse anything ambiguous, and say what we understood."""
    pos = list(args.positional)
    if len(pos) > 2:
        raise SpotAEError("ml-ops takes at most two positional values after 'flow': MAXRESULTS TOL")
    if pos:
        try:
            mr = int(pos[0])
        except ValueError:
            raise SpotAEError(f"MAXRESULTS must be an integer, got {pos[0]!r} (for a threshold use --tol)") from None
        if args.max_results is not None and args.max_results != mr:
            raise SpotAEError("MAXRESULTS given both positionally and as --max-results")
        args.max_results = mr
    if len(pos) == 2:
        try:
            tol = float(pos[1])
        except ValueError:
            raise SpotAEError(f"TOL must be a number, got {pos[1]!r}") from None
        if args.tol is not None and args.tol != tol:
            raise SpotAEError("TOL given both positionally and as --tol")
        args.tol = tol


def _spark(args):
    from spot_ae_job.spark import session

    return session(args.master)


def cmd_load_csv(args) -> int:
    from spot_ae_job.ingest.cicids import read_cicids
    from spot_ae_job.ingest.flowtable import write_flows
    from spot_ae_job.fsutil import to_uri

    spark = _spark(args)
    huser = to_uri(args.huser)
    for path in args.paths:
        res = read_cicids(spark, path)
        n_rej = res.rejects.count()
        if n_rej:
            qdir = f"{huser.rstrip('/')}/flow/quarantine/csv"
            res.rejects.write.mode("append").parquet(qdir)
            by = {r[0]: r[1] for r in res.rejects.groupBy("reject_reason").count().collect()}
            _say(f"{path}: {n_rej} rows rejected {by} -> {qdir}")
        out = write_flows(res.flows, huser, source=os.path.basename(path.rstrip("/")), day=args.day)
        _say(f"{path}: {out['flows']} flows -> {len(out['partitions'])} partitions of {huser}/flow/hive")
    return 0


def _train_for_day(spark, args, huser: str, day: str):
    from pyspark.sql import functions as F

    from spot_ae_job import mlops, thresholds
    from spot_ae_job.model import train_autoencoder

    mode, value = threshold_choice(args)
    # the held-out slice is cut before feedback copies join the training rows: it stays plain benign traffic
    base, held = thresholds.split_holdout(mlops.training_flows(spark, huser, day, progress=_say))
    fb = mlops.feedback_rows(spark, huser, progress=_say)
    dup = args.dupfactor or mlops.DUPFACTOR
    if fb is not None:
        base = base.unionByName(fb.withColumn("_k", F.explode(F.sequence(F.lit(1), F.lit(dup)))).drop("_k"))
    return train_autoencoder(
        base, held_out=held, threshold_mode=mode or thresholds.P95, threshold_value=value,
        epochs=args.epochs, batch_size=args.batch_size, training_day=day, progress=_say,
        variant=args.model,
        extra_meta={"feedback_flows": 0 if fb is None else fb.count(), "dupfactor": dup},
    )


def _score_day(spark, model, huser: str, day: str, max_results, tol, args=None):
    from spot_ae_job import drift, fsutil, mlops

    mode, value = threshold_choice(args) if args is not None else (None, None)
    limit = getattr(args, "drift_limit", None)
    labelled = fsutil.exists(spark, mlops._day_path(mlops.labelled_location(huser), day))
    flows = mlops.read_day(spark, huser, day, labelled=labelled)
    scored, rejects = mlops.score_valid(model, flows)
    s = mlops.write_results(spark, scored, rejects, model, day, huser, max_results=max_results, tol=tol, progress=_say,
                            threshold_mode=mode, threshold_value=value,
                            drift_limit=drift.PSI_LIMIT if limit is None else limit)
    if s.recall is not None:
        _say(f"{day}: ground truth present: {s.attacks} attack flows, recall at the threshold = {s.recall:.3f}")
    return s


def _forward_after_scoring(spark, args, huser: str, day: str) -> None:
    from spot_ae_job import forward

    path = forward.config_path(getattr(args, "forward_config", None))
    if path is None:
        return
    cfg = forward.load_config(path)
    if cfg.after_ml_ops:
        forward.forward_day(spark, day, huser, cfg, progress=_say)


def cmd_alerts(args) -> int:
    from spot_ae_job import forward
    from spot_ae_job.fsutil import to_uri
    from spot_ae_job.mlops import parse_day

    parse_day(args.day)
    path = forward.config_path(args.forward_config)
    if path is None:
        raise SpotAEError(f"no forwarding configured: pass --forward-config FILE or set ${forward.CONFIG_ENV} (docs/alerts.md)")
    cfg = forward.load_config(path)
    spark = _spark(args)
    forward.forward_day(spark, args.day, to_uri(args.huser), cfg, progress=_say)
    return 0


def cmd_train(args) -> int:
    from spot_ae_job.fsutil import to_uri
    from spot_ae_job.mlops import models_location, parse_day

    parse_day(args.day)
    if args.model == "lda":
        raise SpotAEError("`spot-ae train` trains an autoencoder (ae, ae-context); Spot's LDA trains in `ml-ops --model lda`")
    spark = _spark(args)
    huser = to_uri(args.huser)
    model = _train_for_day(spark, args, huser, args.day)
    where = model.save(spark, models_location(huser))
    _say(f"saved model {model.version} -> {where}")
    return 0


def cmd_score(args) -> int:
    from spot_ae_job.fsutil import to_uri
    from spot_ae_job.mlops import models_location, parse_day
    from spot_ae_job.model import AEModel

    parse_day(args.day)
    spark = _spark(args)
    huser = to_uri(args.huser)
    try:
        model = AEModel.load(spark, models_location(huser), args.model_version)
    except FileNotFoundError as e:
        raise SpotAEError(str(e)) from None
    _score_day(spark, model, huser, args.day, args.max_results, args.tol, args)
    _forward_after_scoring(spark, args, huser, args.day)
    return 0


def cmd_ml_ops(args) -> int:
    from spot_ae_job.fsutil import to_uri
    from spot_ae_job.mlops import models_location, parse_day
    from spot_ae_job.model import AEModel

    _resolve_positional(args)
    parse_day(args.day)
    mode, value = threshold_choice(args)
    _say(f"ml_ops {args.day} flow: model={args.model} max_results={args.max_results} tol={args.tol}")
    spark = _spark(args)
    huser = to_uri(args.huser)
    if args.model == "lda" and not args.model_version:
        from spot_ae_job import lda

        model = lda.train_for_day(spark, huser, args.day, progress=_say, threshold_mode=mode or "p95", threshold_value=value)
        model.save(spark, models_location(huser) + "/lda")
    elif args.model_version:
        if args.model == "lda":
            from spot_ae_job.lda import LDAModelBundle as cls
            where = models_location(huser) + "/lda"
        else:
            cls, where = AEModel, models_location(huser)
        try:
            model = cls.load(spark, where, args.model_version)
        except FileNotFoundError as e:
            raise SpotAEError(str(e)) from None
        _say(f"scoring with saved model {model.version}")
    else:
        model = _train_for_day(spark, args, huser, args.day)
        model.save(spark, models_location(huser))
    _score_day(spark, model, huser, args.day, args.max_results, args.tol, args)
    _forward_after_scoring(spark, args, huser, args.day)
    return 0


def cmd_demo(args) -> int:
    data = Path(args.data) if args.data else default_data() / "cicids2018" / "aegmm__toy_dataset.csv"
    if not data.exists():
        raise SpotAEError(f"demo data not found at {data} (set SPOT_AE_DATA to the shared data folder, or --data)")
    _say(f"demo: {data} -> {args.huser}, then ml_ops {args.day} flow")
    args.paths, day = [str(data)], args.day
    args.day = None
    cmd_load_csv(args)
    args.day, args.positional, args.max_results, args.tol = day, [], None, None
    args.model, args.model_version, args.type, args.forward_config = "ae", None, "flow", None
    cmd_ml_ops(args)
    _say(f"demo done: open {args.huser}/flow/scored_results/{day}/scores/flow_results.csv")
    return 0


def cmd_stream(args) -> int:
    from spot_ae_job import stream
    from spot_ae_job.fsutil import to_uri
    from spot_ae_job.spark import session

    if args.trigger_seconds <= 0 or args.max_files_per_trigger < 1:
        raise SpotAEError("--trigger-seconds must be > 0 and --max-files-per-trigger >= 1")
    conf = dict(c.split("=", 1) for c in args.conf if "=" in c)
    if len(conf) != len(args.conf):
        raise SpotAEError("--conf takes KEY=VALUE")
    spark = session(args.master, app=stream.APP_NAME, extra=conf)
    opts = stream.StreamOptions(
        huser=to_uri(args.huser), checkpoint=args.checkpoint, trigger_seconds=args.trigger_seconds,
        max_files_per_trigger=args.max_files_per_trigger, model_poll_seconds=args.model_poll_seconds,
        available_now=args.available_now,
    )
    query = stream.start(spark, opts, say=_say)
    try:
        query.awaitTermination()
    except KeyboardInterrupt:
        _say("stopping (the checkpoint keeps the position: a restart resumes there)")
        query.stop()
    return 0


COMMANDS = {"stream": cmd_stream, "load-csv": cmd_load_csv, "train": cmd_train, "score": cmd_score, "ml-ops": cmd_ml_ops, "alerts": cmd_alerts, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        mod = importlib.import_module(DELEGATED[argv[0]])
        return int(mod.main(argv[1:]) or 0)
    args = _parser().parse_args(argv)
    return run_command("spot-ae", COMMANDS[args.cmd], args)


def ml_ops_main(argv: list[str] | None = None) -> int:
    """`ml_ops YYYYMMDD flow [MAXRESULTS] [TOL]`, the name Spot's users type."""
    p = argparse.ArgumentParser(prog="ml_ops", description="Spot's ml_ops: score one day of flows")
    _ml_ops_args(p)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    return _run(cmd_ml_ops, args)
