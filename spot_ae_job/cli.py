"""`spot-ae` day commands (load-csv, train, score, ml-ops, demo, alerts, incidents, stream): parse the
arguments into a `Day`, a `Layout` and the pipeline's `RunOptions`, then call mlops.py once.

The other stages' commands (ingest, oa, evaluate, cross-check) have their own modules; entry.py
picks one, so `spot-ae oa` never imports Spark.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from spot_ae_job import drift, forward, mlops, registry, stream, thresholds
from spot_ae_job.entry import MODULES as DELEGATED
from spot_ae_job.errors import SpotAEError, run_command
from spot_ae_job.ingest.flowtable import load_csv
from spot_ae_job.layout import Day, Layout
from spot_ae_job.spark import session
from spot_ae_job.storage import to_uri


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
    p.add_argument("--epochs", type=int, default=90, help="training epochs (paper: 90); with --patience, the most it trains")
    p.add_argument("--batch-size", type=int, default=None,
                   help="Keras batch size (default: 32, Keras' own, growing to 512 on large training sets: docs/scoring.md)")
    p.add_argument("--patience", type=int, default=registry.TrainOptions.patience,
                   help="stop training when the validation loss has not improved for this many epochs "
                        f"(default {registry.TrainOptions.patience}; 0 trains every epoch, as the paper)")
    p.add_argument("--dupfactor", type=int, default=None, help="copies of each low-risk feedback flow (Spot: 1000)")
    p.add_argument("--model", choices=registry.CHOICES, default=registry.AUTO,
                   help="auto (default): ae-context where the flows carry IPs and timestamps, else ae; "
                        "ae: the paper's per-flow autoencoder (paper mode); ae-context: + its hosts' recent behaviour "
                        "(docs/detection.md); lda: Spot's")


def _threshold_args(p: argparse.ArgumentParser, scoring: bool = False) -> None:
    p.add_argument("--threshold-mode", choices=thresholds.MODES, default=None,
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
    ALERTS_PER_DAY, BENIGN_FPR, P95 = thresholds.ALERTS_PER_DAY, thresholds.BENIGN_FPR, thresholds.P95
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
        thresholds.flagged_fraction(mode, value, flows_per_day=1 << 62)
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

    p = sub.add_parser("incidents", help="group scored days' suspicious flows into incidents again, under the "
                       "allow-list rules and verdicts in force (run after an allow-list change)")
    _common(p)
    p.add_argument("days", nargs="+", metavar="YYYYMMDD")

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

    p = sub.add_parser("train-family", help="train the attack-family classifier of incidents on labelled CIC-IDS2018 CSVs "
                                            "and on the flows of verdicts that name a family, and save it")
    _common(p)
    p.add_argument("--data", action="append", default=None,
                   help="CIC-IDS2018 CSV file or directory (repeatable; default the shared cicids2018 folder)")
    p.add_argument("--no-verdicts", action="store_true",
                   help="leave out the flows of analyst verdicts that name a family (default: they join the training)")

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
    return session(args.master)


def _layout(args) -> Layout:
    return Layout(to_uri(args.huser))


def run_options(args) -> mlops.RunOptions:
    """The parsed flags of a day command, checked, as the pipeline's options."""
    mode, value = threshold_choice(args)
    train = registry.TrainOptions(epochs=getattr(args, "epochs", 90), batch_size=getattr(args, "batch_size", None),
                                  patience=getattr(args, "patience", registry.TrainOptions.patience),
                                  threshold_mode=mode or thresholds.P95, threshold_value=value)
    limit = getattr(args, "drift_limit", None)
    return mlops.RunOptions(
        model=getattr(args, "model", registry.AUTO), model_version=getattr(args, "model_version", None), train=train,
        dupfactor=getattr(args, "dupfactor", None) or mlops.DUPFACTOR,
        max_results=getattr(args, "max_results", None), tol=getattr(args, "tol", None),
        threshold_mode=mode, threshold_value=value, drift_limit=drift.PSI_LIMIT if limit is None else limit,
        forward=_forward_config(getattr(args, "forward_config", None)),
    )


def _forward_config(explicit: str | None) -> forward.ForwardConfig | None:
    """The forwarding config, loaded now so a mistake in it is one line before Spark starts."""
    path = forward.config_path(explicit)
    return forward.load_config(path) if path else None


def cmd_load_csv(args) -> int:
    day = Day.parse(args.day) if args.day else None
    spark = _spark(args)
    for path in args.paths:
        load_csv(spark, to_uri(args.huser), path, day, say=_say)
    return 0


def cmd_alerts(args) -> int:
    day = Day.parse(args.day)
    cfg = _forward_config(args.forward_config)
    if cfg is None:
        raise SpotAEError(f"no forwarding configured: pass --forward-config FILE or set ${forward.CONFIG_ENV} (docs/alerts.md)")
    mlops.forward_day(_spark(args), _layout(args), day, cfg, _say)
    return 0


def cmd_incidents(args) -> int:
    days = [Day.parse(d) for d in args.days]
    spark, layout = _spark(args), _layout(args)
    for day in days:
        mlops.regroup_incidents(spark, layout, day, _say)
    return 0


def cmd_train(args) -> int:
    day = Day.parse(args.day)
    if args.model == registry.LDA_KIND:
        raise SpotAEError("`spot-ae train` trains an autoencoder (auto, ae, ae-context); Spot's LDA trains in `ml-ops --model lda`")
    opts = run_options(args)
    spark, layout = _spark(args), _layout(args)
    model = mlops.train_day(spark, layout, day, opts, _say)
    _say(f"saved model {model.version} -> {registry.save(spark, layout, model)}")
    return 0


def cmd_score(args) -> int:
    day = Day.parse(args.day)
    opts = run_options(args)
    spark, layout = _spark(args), _layout(args)
    model = registry.load(spark, layout, registry.AUTO, opts.model_version)
    mlops.score_day(spark, layout, day, model, opts, _say)
    mlops.forward_alerts(spark, layout, day, opts, _say)
    return 0


def cmd_ml_ops(args) -> int:
    _resolve_positional(args)
    day = Day.parse(args.day)
    opts = run_options(args)
    _say(f"ml_ops {day} flow: model={opts.model} max_results={opts.max_results} tol={opts.tol}")
    mlops.ml_ops(_spark(args), _layout(args), day, opts, _say)
    return 0


def cmd_demo(args) -> int:
    data = Path(args.data) if args.data else default_data() / "cicids2018" / "aegmm__toy_dataset.csv"
    if not data.exists():
        raise SpotAEError(f"demo data not found at {data} (set SPOT_AE_DATA to the shared data folder, or --data)")
    day = Day.parse(args.day)
    opts = run_options(args)
    spark, layout = _spark(args), _layout(args)
    _say(f"demo: {data} -> {layout.huser}, then ml_ops {day} flow --model {opts.model}")
    load_csv(spark, layout.huser, str(data), None, say=_say)
    mlops.ml_ops(spark, layout, day, opts, _say)
    _say(f"demo done: open {layout.results(day).scores_csv}")
    return 0


def cmd_stream(args) -> int:
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


def cmd_train_family(args) -> int:
    from spot_ae_job import family
    from spot_ae_job.evaluate import with_day
    from spot_ae_job.ingest.cicids import read_cicids
    from spot_ae_job.schema import IS_ATTACK

    data = args.data or [str(default_data() / "cicids2018")]
    for d in data:
        if "://" not in d and not Path(d).exists():
            raise SpotAEError(f"no such file or directory: {d}")
    spark, layout = _spark(args), _layout(args)
    flows = with_day(read_cicids(spark, data).flows)
    named = None if args.no_verdicts else family.named_flows(spark, layout, _say)
    if named is not None:
        named = named.cache()
        by = {r[0]: r[1] for r in named.groupBy("label").count().collect()}
        _say(f"analyst verdicts naming a family add {sum(by.values())} flows: "
             + (", ".join(f"{k} {v}" for k, v in sorted(by.items())) or "none of them is among their day's suspicious flows"))
    clf = family.train(flows.where(flows[IS_ATTACK].isNotNull()), data, _say, named=named)
    _say(f"saved family classifier {clf.version} -> {clf.save(spark, layout.family_models)} (incidents use the LATEST one)")
    return 0


COMMANDS = {"train-family": cmd_train_family, "stream": cmd_stream, "load-csv": cmd_load_csv, "train": cmd_train, "score": cmd_score, "ml-ops": cmd_ml_ops, "alerts": cmd_alerts, "incidents": cmd_incidents, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    return run_command("spot-ae", COMMANDS[args.cmd], args)


def ml_ops_main(argv: list[str] | None = None) -> int:
    """`ml_ops YYYYMMDD flow [MAXRESULTS] [TOL]`, the name Spot's users type."""
    p = argparse.ArgumentParser(prog="ml_ops", description="Spot's ml_ops: score one day of flows")
    _ml_ops_args(p)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("ml_ops", cmd_ml_ops, args)
