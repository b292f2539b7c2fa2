"""The models ml-ops can run, behind one interface: train, save, load.

Every model answers the same questions (`kind`, `version`, `meta`, `threshold`,
`higher_is_suspicious`, `score(flows)`, `save(spark, uri)`), so the day pipeline (mlops.py) never
asks which one it holds:

  ae          the paper's autoencoder on 18 per-flow metrics (model.py); "paper mode"
  ae-context  the same autoencoder fed also its hosts' recent behaviour (context.py); the
              default wherever the day's flows carry IPs and timestamps
  lda         Spot's LDA baseline (lda.py)

`auto` picks ae-context or ae from the training flows (`choose`). Autoencoders of both kinds share
`flow/models/` (LATEST is what the stream follows); LDA models live in `flow/models/lda/`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spot_ae_job import thresholds
from spot_ae_job.errors import SpotAEError
from spot_ae_job.layout import Layout
from spot_ae_job.lda import LDAModelBundle, fit_lda
from spot_ae_job.model import PATIENCE, AEModel, train_autoencoder

AE, AE_CONTEXT, LDA_KIND, AUTO = "ae", "ae-context", "lda", "auto"
KINDS = (AE, AE_CONTEXT, LDA_KIND)
CHOICES = (AUTO, *KINDS)
# share of the training flows that must carry both IPs and a timestamp for auto to pick ae-context
CONTEXT_MIN_SHARE = 0.5


@dataclass
class TrainOptions:
    """How to train any kind; fields a kind does not use are ignored by it."""

    epochs: int = 90                 # the paper's; with patience, the cap
    batch_size: int | None = None    # None: by the size of the training set (model.auto_batch_size)
    patience: int = PATIENCE         # stop when the validation loss stalls this many epochs; 0: every epoch
    threshold_mode: str = thresholds.P95
    threshold_value: float | None = None
    seed: int = 7
    extra_meta: dict = field(default_factory=dict)

    def __post_init__(self):  # checked where the CLI builds it, before Spark starts
        if self.epochs < 1 or self.patience < 0 or (self.batch_size is not None and self.batch_size < 1):
            raise SpotAEError(f"training needs --epochs >= 1, --batch-size >= 1 and --patience >= 0; got "
                              f"{self.epochs}, {self.batch_size}, {self.patience}")


def choose(kind: str, flows: DataFrame, say: Callable[[str], None] = print) -> str:
    """`auto` -> ae-context when most training flows carry IPs and timestamps (host context can be
    computed), else the paper's ae; any explicit kind is kept."""
    if kind not in CHOICES:
        raise SpotAEError(f"unknown model {kind!r}; choose one of {', '.join(CHOICES)}")
    if kind != AUTO:
        return kind
    row = flows.agg(F.count("*").alias("n"),
                    F.sum((F.col("sip").isNotNull() & F.col("dip").isNotNull() & F.col("unix_tstamp").isNotNull())
                          .cast("int")).alias("ctx")).first()
    share = (row["ctx"] or 0) / row["n"] if row["n"] else 0.0
    picked = AE_CONTEXT if share >= CONTEXT_MIN_SHARE else AE
    say(f"model auto: {share:.0%} of the training flows carry IPs and timestamps -> {picked}"
        + ("" if picked == AE_CONTEXT else " (paper mode: no host context to compute)"))
    return picked


def train(kind: str, train_flows: DataFrame, held_out: DataFrame, opts: TrainOptions, training_day: str,
          say: Callable[[str], None] = print):
    """Fit one kind on benign training flows; its threshold on the held-out benign slice."""
    if kind == LDA_KIND:
        return fit_lda(train_flows, threshold_flows=held_out, threshold_mode=opts.threshold_mode,
                       threshold_value=opts.threshold_value, seed=opts.seed, training_day=training_day, progress=say)
    if kind not in (AE, AE_CONTEXT):
        raise SpotAEError(f"unknown model {kind!r}; choose one of {', '.join(KINDS)}")
    return train_autoencoder(train_flows, held_out=held_out, threshold_mode=opts.threshold_mode,
                             threshold_value=opts.threshold_value, epochs=opts.epochs, batch_size=opts.batch_size,
                             patience=opts.patience,
                             seed=opts.seed, training_day=training_day, progress=say, variant=kind,
                             extra_meta=opts.extra_meta)


def location(layout: Layout, kind: str) -> str:
    return layout.lda_models if kind == LDA_KIND else layout.models


def save(spark: SparkSession, layout: Layout, model) -> str:
    return model.save(spark, location(layout, model.kind))


def load(spark: SparkSession, layout: Layout, kind: str, version: str = "latest"):
    """A saved model of `kind` (`auto` and the two autoencoders load from the same place)."""
    cls = LDAModelBundle if kind == LDA_KIND else AEModel
    try:
        model = cls.load(spark, location(layout, kind), version)
    except FileNotFoundError as e:
        raise SpotAEError(str(e)) from None
    if kind in (AE, AE_CONTEXT) and model.kind != kind:
        raise SpotAEError(f"model {model.version} is a {model.kind!r} model, not {kind!r} (omit --model to score with it)")
    return model
