"""Apache Spot's flow LDA, the baseline the autoencoder replaces (SPEC §2).

Spot's last release (FlowWordCreator / FlowSuspiciousConnectsModel / FlowScoreFunction):
every IP is a document; every flow adds one word to its source IP's document and one to its
destination IP's. A word is `PORT_PROTO_HOUR_BYTEBIN_PKTBIN`, where
  BYTEBIN = ceil(log2(ibyt + 1)), PKTBIN = ceil(log2(ipkt + 1)) (computed exactly, in integers),
  PORT    = the port <= 1024 when exactly one side has one (the server's port), 111111 when both
            ports are <= 1024, 333333 when both are > 1024, 0 when both are 0, and the non-zero
            port when the other one is 0;
  "-1_"   prefixes the word of the side that owns PORT (so client and server words differ).
LDA (Spark MLlib, 20 topics) learns topics; a flow's score is
  min(P(src word | src IP's topic mix), P(dst word | dst IP's topic mix)),
with P(w | mix) = sum_k mix[k] * P(w | topic k). LOW = suspicious.

What we add, because the paper's protocol trains on one day and tests on others (Spot trained
and scored the same day and kept no model):
- the fitted model is saved (topics, vocabulary, LDA) and can score another day;
- a scored day's IP topic mixes are INFERRED with the fitted model (`LocalLDAModel.transform`) from
  that day's own documents, as Spot derived them from the day's documents;
- a word never seen in training has probability 0 (most suspicious). Spot's older releases gave
  it the uniform 1/TOPIC_COUNT per topic, which is not a probability over words at all;
- flows with no IP (the original CIC-IDS2018 CSVs carry none) or no hour have no document and no
  word: their score is null ("LDA not applicable"), never invented;
- the threshold is the paper's percentile rule mirrored: the 5th percentile of the scores of the
  benign training flows (a flow scoring BELOW it is suspicious).
Older releases cut time of day, bytes and packets at quantiles of the day (deciles, deciles,
quintiles); `binning="quantile"` reproduces that, fitted on the training flows and saved.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from pyspark.ml.clustering import LDA, LocalLDAModel
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import SparseVector, VectorUDT
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spot_ae_job import __version__, drift, fsutil, thresholds
from spot_ae_job.layout import SCORE
from spot_ae_job.schema import FLOW_COLUMNS, SCHEMA_VERSION

TOPIC_COUNT = 20
LOW_TO_LOW = "111111"  # both ports <= 1024 (Spot's LowToLowPortEncoding)
HIGH_TO_HIGH = "333333"  # both ports > 1024 (Spot's HighToHighPortEncoding)
SIDE_MARK = "-1_"  # prefixes the word of the side that owns the port in the word
SRC_WORD, DST_WORD = "src_word", "dst_word"
# quantile binning of Spot's older releases: deciles of time of day and ibyt, quintiles of ipkt
_QUANTILE_PROBS = {
    "tod": [i / 10 for i in range(1, 10)],
    "ibyt": [i / 10 for i in range(1, 10)],
    "ipkt": [i / 5 for i in range(1, 5)],
}


def ceil_log2_plus1(c: Column) -> Column:
    """ceil(log2(x + 1)) for integers x >= 0, exactly: it is the bit length of x.

    Floating-point log2 can land a hair above an integer at powers of two and round up one bin.
    """
    x = c.cast("long")
    return F.when(x <= 0, F.lit(0)).otherwise(F.length(F.bin(x))).cast("int")


def _bin_by_cuts(c: Column, cuts: Sequence[float]) -> Column:
    """Spot's MathUtils.bin: the index of the first cut >= value (len(cuts) past the last)."""
    out = F.lit(0)
    for cut in cuts:
        out = out + F.when(c.cast("double") > F.lit(float(cut)), 1).otherwise(0)
    return out.cast("int")


def word_columns(cuts: dict | None = None) -> tuple[Column, Column]:
    """(source word, destination word) as Spark SQL expressions over flow-table columns.

    Null when a part is missing (no ports, no hour, no protocol): such flows get no word.
    """
    sport, dport = F.col("sport"), F.col("dport")
    proto = F.upper(F.col("proto"))
    if cuts:
        tod = F.col("trhour") * 3600 + F.coalesce(F.col("trminute"), F.lit(0)) * 60 + F.coalesce(F.col("trsec"), F.lit(0))
        time_part = _bin_by_cuts(tod, cuts["tod"])
        byt = _bin_by_cuts(F.col("ibyt"), cuts["ibyt"])
        pkt = _bin_by_cuts(F.col("ipkt"), cuts["ipkt"])
    else:
        time_part = F.col("trhour")
        byt = ceil_log2_plus1(F.col("ibyt"))
        pkt = ceil_log2_plus1(F.col("ipkt"))
    tail = F.concat_ws("_", proto, time_part.cast("string"), byt.cast("string"), pkt.cast("string"))

    def word(port: Column) -> Column:
        return F.concat(port.cast("string"), F.lit("_"), tail)

    # Which port goes in the word, and whose side owns it ("src", "dst" or None = both alike).
    port = (
        F.when((sport == 0) & (dport == 0), F.lit("0"))
        .when(dport == 0, sport.cast("string"))
        .when(sport == 0, dport.cast("string"))
        .when((sport <= 1024) & (dport <= 1024), F.lit(LOW_TO_LOW))
        .when(sport <= 1024, sport.cast("string"))
        .when(dport <= 1024, dport.cast("string"))
        .otherwise(F.lit(HIGH_TO_HIGH))
    )
    owner = (
        F.when((sport == 0) & (dport == 0), F.lit(None))
        .when(dport == 0, F.lit("src"))
        .when(sport == 0, F.lit("dst"))
        .when((sport <= 1024) & (dport <= 1024), F.lit(None))
        .when(sport <= 1024, F.lit("src"))
        .when(dport <= 1024, F.lit("dst"))
    )
    base = word(port)
    complete = (
        sport.isNotNull() & dport.isNotNull() & (sport >= 0) & (dport >= 0) & proto.isNotNull()
        & time_part.isNotNull() & F.col("ibyt").isNotNull() & F.col("ipkt").isNotNull()
        & (F.col("ibyt") >= 0) & (F.col("ipkt") >= 0)
    )
    src = F.when(complete, F.when(owner == "src", F.concat(F.lit(SIDE_MARK), base)).otherwise(base))
    dst = F.when(complete, F.when(owner == "dst", F.concat(F.lit(SIDE_MARK), base)).otherwise(base))
    return src, dst


def add_words(flows: DataFrame, cuts: dict | None = None) -> DataFrame:
    """flows -> flows + src_word, dst_word (null where LDA has no word for the flow)."""
    src, dst = word_columns(cuts)
    return flows.withColumn(SRC_WORD, src).withColumn(DST_WORD, dst)


def _has_ips() -> Column:
    return (
        F.col("sip").isNotNull() & F.col("dip").isNotNull() & (F.length(F.trim("sip")) > 0) & (F.length(F.trim("dip")) > 0)
    )


def _word_pairs(worded: DataFrame, keys: list[str]) -> DataFrame:
    """(keys..., ip, word): each flow's two words, each into its own IP's document."""
    ok = worded.where(_has_ips() & F.col(SRC_WORD).isNotNull())
    src = ok.select(*keys, F.col("sip").alias("ip"), F.col(SRC_WORD).alias("word"))
    dst = ok.select(*keys, F.col("dip").alias("ip"), F.col(DST_WORD).alias("word"))
    return src.unionByName(dst)


def _documents(pairs: DataFrame, vocab: DataFrame, size: int, keys: list[str]) -> DataFrame:
    """(keys..., ip, features): each IP's word counts as a sparse vector over the vocabulary.

    Counts are aggregated by Spark first, so a busy server's document is one short list of
    (word index, count) pairs, not one array entry per flow.
    """
    counts = pairs.join(F.broadcast(vocab.select("word", "idx")), "word").groupBy(*keys, "ip", "idx").count()

    @F.udf(VectorUDT())
    def to_vector(entries):
        entries = sorted(entries, key=lambda e: e[0])
        return SparseVector(size, [e[0] for e in entries], [float(e[1]) for e in entries])

    return counts.groupBy(*keys, "ip").agg(to_vector(F.collect_list(F.struct("idx", "count"))).alias("features"))


def _dot(a: str, b: str) -> Column:
    return F.aggregate(F.zip_with(F.col(a), F.col(b), lambda x, y: x * y), F.lit(0.0), lambda acc, v: acc + v)


@dataclass
class LDAModelBundle:
    """A fitted Spot LDA: vocabulary with P(word | topic), the LDA model, cuts and threshold."""

    lda: LocalLDAModel
    words: DataFrame  # word, idx, probs: array<double> (P(word | topic k), k = 0..K-1)
    topics: int
    vocab_size: int
    threshold: float
    cuts: dict | None = None
    meta: dict = field(default_factory=dict)

    kind = "lda"
    higher_is_suspicious = False

    @property
    def version(self) -> str:
        return self.meta["version"]

    def topic_mixes(self, flows: DataFrame, doc_keys: Sequence[str] = ()) -> DataFrame:
        """(doc_keys..., ip, mix): each IP's topic mixture inferred from these flows' documents."""
        keys = list(doc_keys)
        docs = _documents(_word_pairs(add_words(flows, self.cuts), keys), self.words, self.vocab_size, keys)
        mixed = self.lda.transform(docs)
        return mixed.select(*keys, "ip", vector_to_array(self.lda.getTopicDistributionCol()).alias("mix"))

    def score(self, flows: DataFrame, doc_keys: Sequence[str] = ()) -> DataFrame:
        """flows (+ any extra columns) -> the same rows + `score` (double, null if not applicable).

        `doc_keys` split documents further than by IP, e.g. by day when one DataFrame holds
        several days: an IP's topic mix on one day must come from that day's flows only.
        """
        keys = list(doc_keys)
        cols = flows.columns
        worded = add_words(flows, self.cuts)
        mixes = self.topic_mixes(flows, keys)
        sm = mixes.select(*[F.col(k).alias("_s_" + k) for k in keys], F.col("ip").alias("_sip"), F.col("mix").alias("_smix"))
        dm = mixes.select(*[F.col(k).alias("_d_" + k) for k in keys], F.col("ip").alias("_dip"), F.col("mix").alias("_dmix"))
        probs = self.words.select("word", "probs")
        sp = probs.select(F.col("word").alias("_sw"), F.col("probs").alias("_sprobs"))
        dp = probs.select(F.col("word").alias("_dw"), F.col("probs").alias("_dprobs"))
        j = worded.join(sm, [worded["sip"] == sm["_sip"]] + [worded[k].eqNullSafe(sm["_s_" + k]) for k in keys], "left")
        j = j.join(dm, [j["dip"] == dm["_dip"]] + [j[k].eqNullSafe(dm["_d_" + k]) for k in keys], "left")
        j = j.join(sp, j[SRC_WORD] == sp["_sw"], "left").join(dp, j[DST_WORD] == dp["_dw"], "left")
        # an unseen word has no row in the vocabulary: probability 0, the most suspicious
        s_src = F.coalesce(_dot("_smix", "_sprobs"), F.lit(0.0))
        s_dst = F.coalesce(_dot("_dmix", "_dprobs"), F.lit(0.0))
        applicable = _has_ips() & F.col(SRC_WORD).isNotNull()
        score = F.when(applicable, F.least(s_src, s_dst)).cast("double")
        return j.select(*[j[c] for c in cols], score.alias(SCORE))

    # ---- persistence: one directory per version, like the autoencoder's ----
    def save(self, spark: SparkSession, models_uri: str) -> str:
        target = f"{models_uri.rstrip('/')}/{self.version}"
        fsutil.delete(spark, target)
        self.lda.write().overwrite().save(f"{target}/lda")
        self.words.write.mode("overwrite").parquet(f"{target}/words")
        meta = {**self.meta, "threshold": self.threshold, "topics": self.topics, "vocab_size": self.vocab_size, "cuts": self.cuts}
        fsutil.write_text(spark, f"{target}/model.json", json.dumps(meta, indent=2))
        fsutil.write_text(spark, f"{models_uri.rstrip('/')}/LATEST", self.version + "\n")
        return target

    @classmethod
    def load(cls, spark: SparkSession, models_uri: str, version: str = "latest") -> "LDAModelBundle":
        d = fsutil.model_dir(spark, models_uri, version)
        if not fsutil.exists(spark, f"{d}/model.json"):
            raise FileNotFoundError(f"no LDA model at {d}")
        meta = json.loads(fsutil.read_text(spark, f"{d}/model.json"))
        if meta.get("kind") != "lda":
            raise FileNotFoundError(f"{d} holds a {meta.get('kind')!r} model, not an LDA one")
        lda = LocalLDAModel.load(f"{d}/lda")
        words = spark.read.parquet(f"{d}/words")
        return cls(lda, words, int(meta.pop("topics")), int(meta.pop("vocab_size")), float(meta.pop("threshold")),
                   meta.pop("cuts"), meta)


def fit_quantile_cuts(flows: DataFrame, rel_error: float = 0.001) -> dict:
    """Cuts of Spot's older releases, from the training flows (time of day in seconds, ibyt, ipkt)."""
    tod = F.col("trhour") * 3600 + F.coalesce(F.col("trminute"), F.lit(0)) * 60 + F.coalesce(F.col("trsec"), F.lit(0))
    df = flows.select(tod.cast("double").alias("tod"), F.col("ibyt").cast("double").alias("ibyt"), F.col("ipkt").cast("double").alias("ipkt"))
    out = {}
    for name, probs in _QUANTILE_PROBS.items():
        out[name] = [float(v) for v in df.where(F.col(name).isNotNull()).approxQuantile(name, probs, rel_error)]
    return out


def fit_lda(
    train_flows: DataFrame,
    *,
    topics: int = TOPIC_COUNT,
    max_iter: int = 20,
    optimizer: str = "online",
    binning: str = "log2",
    seed: int = 7,
    subsampling_rate: float | None = None,
    threshold_flows: DataFrame | None = None,
    threshold_mode: str = thresholds.P95,
    threshold_value: float | None = None,
    flows_per_day: int | None = None,
    training_day: str | None = None,
    progress: Callable[[str], None] = print,
) -> LDAModelBundle:
    """Fit Spot's LDA on `train_flows` (flow-table rows; the caller picks benign ones if known).

    The threshold is the mode's low quantile (p95: the 5th percentile) of the scores of
    `threshold_flows`, a held-out benign slice (ml-ops passes one); without it, of the training
    flows themselves, as the paper did for both models.
    """
    if binning not in ("log2", "quantile"):
        raise ValueError(f"binning must be 'log2' (Spot's last release) or 'quantile', got {binning!r}")
    spark = train_flows.sparkSession
    t0 = time.time()
    base = train_flows.select(*FLOW_COLUMNS)
    cuts = fit_quantile_cuts(base) if binning == "quantile" else None
    pairs = _word_pairs(add_words(base, cuts), []).cache()
    vocab_rows = pairs.groupBy("word").count().orderBy(F.desc("count"), "word").select("word").collect()
    if not vocab_rows:
        pairs.unpersist()
        raise ValueError("no training flow has source and destination IPs, ports, protocol and hour: LDA needs IP documents")
    vocab = [r["word"] for r in vocab_rows]
    size = len(vocab)
    vocab_df = spark.createDataFrame([(w, i) for i, w in enumerate(vocab)], "word string, idx int")
    docs = _documents(pairs, vocab_df, size, []).cache()
    n_docs = docs.count()
    # Spark's online LDA looks at subsamplingRate of the documents per iteration (default 5%);
    # on small corpora that is a handful of IPs, so use at least ~2,000 documents per step.
    rate = subsampling_rate or min(1.0, max(0.05, 2000.0 / max(n_docs, 1)))
    progress(f"LDA: {n_docs} IP documents, {size} distinct words, {topics} topics, {optimizer} optimizer, {max_iter} iterations")
    est = LDA(k=topics, maxIter=max_iter, optimizer=optimizer, seed=seed, featuresCol="features",
              topicDistributionCol="topic_mix")
    if optimizer == "online":
        est = est.setSubsamplingRate(rate)
    model = est.fit(docs)
    if not isinstance(model, LocalLDAModel):  # EM gives a DistributedLDAModel; keep its local form
        model = model.toLocal()
    # topicsMatrix: vocab x K, unnormalised for the online optimizer -> normalise per topic
    tm = model.topicsMatrix().toArray()
    tm = tm / tm.sum(axis=0, keepdims=True)
    words = spark.createDataFrame(
        [(w, i, [float(x) for x in tm[i]]) for i, w in enumerate(vocab)],
        T.StructType([T.StructField("word", T.StringType()), T.StructField("idx", T.IntegerType()),
                      T.StructField("probs", T.ArrayType(T.DoubleType()))]),
    ).cache()
    docs.unpersist()
    pairs.unpersist()
    bundle = LDAModelBundle(model, words, topics, size, float("nan"), cuts)
    thr_src = (threshold_flows if threshold_flows is not None else base).select(*FLOW_COLUMNS)
    n_train = base.count()
    thr_scores = bundle.score(thr_src).where(F.col(SCORE).isNotNull()).select(SCORE)
    bundle.threshold, thr_meta = thresholds.fit_on_held_out(
        thr_scores, threshold_mode, threshold_value, flows_per_day=flows_per_day or n_train,
        higher_is_suspicious=False, seed=seed,
    )
    if threshold_flows is None:
        thr_meta.update(threshold_fitted_on="the training flows (the paper's protocol)", holdout_fraction=0.0)
    fraction = thresholds.flagged_fraction(threshold_mode, threshold_value, flows_per_day=flows_per_day or n_train)
    thr_meta["threshold_resolution"] = thresholds.resolution(
        thr_meta["holdout_rows"], fraction, "held-out benign slice" if threshold_flows is not None else "training flows",
        above=thr_meta["holdout_beyond"])
    progress(f"LDA threshold: {thresholds.describe_resolution(thr_meta['threshold_resolution'])}")
    # drift reference: the same flow features the autoencoder reads, and the benign scores
    drift_ref = drift.reference(drift.named_features(base), drift.FEATURES)
    drift_ref.update(drift.reference(thr_scores, [SCORE]))
    digest = hashlib.sha256(tm.tobytes()).hexdigest()[:10]
    now = dt.datetime.now(dt.timezone.utc)
    bundle.meta = {
        "version": f"lda-{now:%Y%m%dT%H%M%SZ}-{digest}",
        "kind": "lda",
        "created": now.isoformat(timespec="seconds"),
        "package_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "binning": binning,
        "optimizer": optimizer,
        "max_iter": max_iter,
        "subsampling_rate": rate if optimizer == "online" else None,
        "seed": seed,
        "documents": n_docs,
        "training_day": training_day,
        "training_rows": n_train,
        **thr_meta,
        "drift_reference": drift_ref,
        "train_seconds": round(time.time() - t0, 1),
    }
    progress(f"LDA threshold ({thresholds.describe(threshold_mode, threshold_value)}, low = suspicious, "
             f"{thr_meta['threshold_fitted_on']}) = {bundle.threshold:.6g}; model {bundle.version}")
    return bundle


__all__ = [
    "LDAModelBundle", "fit_lda", "add_words", "word_columns", "ceil_log2_plus1",
    "fit_quantile_cuts", "TOPIC_COUNT", "LOW_TO_LOW", "HIGH_TO_HIGH", "SIDE_MARK",
]
