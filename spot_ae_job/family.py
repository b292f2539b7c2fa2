"""A likely attack family for each incident (issue 24, part 2): a Spark ML random forest over the
autoencoder's own inputs (the 18 flow metrics of features.py and the 9 host-context counts of
context.py), trained on labelled flows (CIC-IDS2018 labels mapped to families by `family_of`).

It never decides what is suspicious: the autoencoder does; this only names what the incident
most looks like. Its classes are the families plus `benign`, so a false alarm can look like
nothing known; an incident's family is the class with the highest mean probability over its
member flows, and `unknown` when that class is benign or its mean probability is below `BAR`.
Hyper-parameters and the bar were fixed before any evaluation (not tuned on reported data).

Saved beside the detectors, `flow/models/family/<version>/` (Spark ML model + family.json) with
its own LATEST; incidents.py uses the LATEST one when there is one.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import re
from dataclasses import dataclass

from pyspark.ml.classification import RandomForestClassificationModel, RandomForestClassifier
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spot_ae_job import fsutil, verdicts
from spot_ae_job.context import CONTEXT_COLUMNS, add_context
from spot_ae_job.features import FEATURE_COLUMNS, add_features
from spot_ae_job.layout import Day, Layout
from spot_ae_job.schema import ATTACK_FAMILIES, FLOW_COLUMNS

BENIGN = "benign"
UNKNOWN = "unknown"
FAMILIES = ATTACK_FAMILIES
CLASSES = [BENIGN, *FAMILIES]
BAR = 0.5  # below this mean probability the family is "unknown"
INPUTS = FEATURE_COLUMNS + CONTEXT_COLUMNS
TREES, DEPTH, SEED = 60, 10, 7
FAMILY = "family"
# a CIC label -> family: first match wins (NMAP Portscan is labelled under Infiltration in the improved set)
_RULES = [
    ("scan", r"scan|nmap"),
    ("web", r"web|xss|sql"),
    ("brute_force", r"brute|patator|ssh-|ftp-"),
    ("dos", r"dos|hoic|loic|hulk|goldeneye|slowloris|slowhttp|heartbleed"),
    ("c2", r"bot|ares|c2|beacon"),
    ("infiltration", r"infil|exfil"),
]


def family_of(label: str | None) -> str | None:
    """The family of a data set label (None: no ground truth; `unknown`: an attack we cannot place)."""
    if label is None:
        return None
    s = label.strip().lower()
    if s in ("benign", "normal"):
        return BENIGN
    for fam, rx in _RULES:
        if re.search(rx, s):
            return fam
    return UNKNOWN


def family_column(label_col: str = "label"):
    """family_of as a Spark column (same rules, no Python per row)."""
    s = F.lower(F.trim(F.col(label_col)))
    out = F.when(s.isin("benign", "normal"), F.lit(BENIGN))
    for fam, rx in _RULES:
        out = out.when(s.rlike(rx), F.lit(fam))
    return F.when(F.col(label_col).isNull(), F.lit(None).cast("string")).otherwise(out.otherwise(F.lit(UNKNOWN)))


def inputs(flows: DataFrame, universe: DataFrame | None = None) -> DataFrame:
    """flows -> flows + the classifier's inputs; the host context is counted over `universe`
    (default the flows themselves) unless the rows already carry it (an ae-context day)."""
    df = flows
    if not all(c in df.columns for c in CONTEXT_COLUMNS):
        df = add_context(df.drop(*[c for c in CONTEXT_COLUMNS if c in df.columns]), universe)
    if not all(c in df.columns for c in FEATURE_COLUMNS):
        df = add_features(df)
    return df


@dataclass
class FamilyClassifier:
    model: RandomForestClassificationModel
    version: str
    meta: dict
    bar: float = BAR

    @property
    def families(self) -> list[str]:
        return list(self.meta["classes"])

    def probabilities(self, flows: DataFrame, universe: DataFrame | None = None) -> DataFrame:
        """flows -> flows + `_votes` (one probability per class, CLASSES order)."""
        df = inputs(flows, universe)
        vec = VectorAssembler(inputCols=INPUTS, outputCol="_x", handleInvalid="keep").transform(df)
        out = self.model.setFeaturesCol("_x").setProbabilityCol("_p").setPredictionCol("_pred") \
            .setRawPredictionCol("_raw").transform(vec)
        return out.withColumn("_votes", vector_to_array("_p")).drop("_x", "_p", "_pred", "_raw")

    def predict(self, flows: DataFrame, universe: DataFrame | None = None) -> DataFrame:
        """flows (their own columns kept) + `_votes`, `family`, `family_confidence` per flow."""
        cols = flows.columns
        out = self.probabilities(flows, universe)
        best = F.array_max("_votes")
        name = F.try_element_at(F.array(*[F.lit(c) for c in self.families]), F.array_position("_votes", best).cast("int"))
        fam = F.when((name == BENIGN) | (best < self.bar), F.lit(UNKNOWN)).otherwise(name)
        return out.select(*cols, "_votes", fam.alias("family"), F.round(best, 4).alias("family_confidence"))

    def save(self, spark: SparkSession, root: str) -> str:
        where = f"{root}/{self.version}"
        self.model.write().overwrite().save(f"{where}/forest")
        fsutil.write_text(spark, f"{where}/family.json", json.dumps(self.meta, indent=2))
        fsutil.write_text(spark, f"{root}/LATEST", self.version + "\n")
        return where

    @classmethod
    def load(cls, spark: SparkSession, root: str, version: str = "latest") -> "FamilyClassifier":
        if version == "latest":
            version = fsutil.read_text(spark, f"{root}/LATEST").strip()
        meta = json.loads(fsutil.read_text(spark, f"{root}/{version}/family.json"))
        return cls(RandomForestClassificationModel.load(f"{root}/{version}/forest"), version, meta, meta.get("bar", BAR))


def latest(spark: SparkSession, layout: Layout) -> FamilyClassifier | None:
    """The saved classifier LATEST names, or None (incidents then say `unknown`)."""
    root = layout.family_models
    if not fsutil.exists(spark, f"{root}/LATEST"):
        return None
    return FamilyClassifier.load(spark, root)


def named_flows(spark: SparkSession, layout: Layout, say=print) -> DataFrame | None:
    """The flows analysts named a family for: on each day a verdict in force confirms an attack
    (sev 1/2) and names its family (verdicts.FAMILY), that connection's suspicious flows of the
    day's `all_scores`, labelled with the family, with the classifier's inputs counted against
    the day's flows as scoring counted them. None when no verdict names a family."""
    named = [v for v in verdicts.in_force(verdicts.read_all(spark, layout.huser))
             if v.get(verdicts.FAMILY) in FAMILIES and v["sev"] in (1, 2)]
    parts = []
    for day in sorted({v["day"] for v in named}):
        scores = layout.results(Day.parse(day)).all_scores
        if not fsutil.exists(spark, scores):
            say(f"verdicts naming a family on {day} skipped: the day has no scores under {scores}")
            continue
        keys = spark.createDataFrame([(v["sip"], v["dip"], v["dport"], v["proto"], v[verdicts.FAMILY])
                                      for v in named if v["day"] == day],
                                     "sip string, dip string, dport int, proto string, label string")
        day_flows = spark.read.parquet(scores)
        mine = day_flows.where("suspicious").drop("label").join(F.broadcast(keys), ["sip", "dip", "dport", "proto"])
        parts.append(inputs(mine, universe=day_flows.select(*FLOW_COLUMNS)).select(*INPUTS, "label"))
    return functools.reduce(DataFrame.unionByName, parts) if parts else None


def train(labelled: DataFrame, trained_on: list[str], say=print, named: DataFrame | None = None) -> FamilyClassifier:
    """Fit on labelled flows (a `label` column); host context is counted per `eval_day` if the rows
    have one (each day's flows against that day's), else over all rows. `named`: rows that already
    carry the inputs (named_flows), added as they are. Classes are balanced by weight (attack
    families are rare beside benign), so the forest does not learn "always benign"."""
    by = ("eval_day",) if "eval_day" in labelled.columns else ()
    rows = labelled.withColumn(FAMILY, family_column()).where(F.col(FAMILY).isin(*CLASSES))
    df = add_features(add_context(rows, by=by) if by else add_context(rows))
    if named is not None:
        df = df.select(*INPUTS, FAMILY).unionByName(named.withColumn(FAMILY, family_column()).select(*INPUTS, FAMILY))
    idx = F.coalesce(*[F.when(F.col(FAMILY) == c, F.lit(float(i))) for i, c in enumerate(CLASSES)])
    counts = {r[0]: r[1] for r in df.groupBy(FAMILY).count().collect()}
    total, k = sum(counts.values()), len(counts)
    weight = F.coalesce(*[F.when(F.col(FAMILY) == c, F.lit(total / (k * n))) for c, n in counts.items()])
    data = VectorAssembler(inputCols=INPUTS, outputCol="_x", handleInvalid="keep").transform(
        df.withColumn("_y", idx).withColumn("_w", weight))
    rf = RandomForestClassifier(featuresCol="_x", labelCol="_y", weightCol="_w", numTrees=TREES, maxDepth=DEPTH,
                                seed=SEED, probabilityCol="_p", rawPredictionCol="_raw", predictionCol="_pred")
    model = rf.fit(data)
    now = dt.datetime.now(dt.timezone.utc)
    version = "family-" + now.strftime("%Y%m%dT%H%M%SZ")
    meta = {"version": version, "classes": CLASSES, "bar": BAR, "inputs": INPUTS, "trees": TREES, "depth": DEPTH,
            "trained_on": trained_on + (["analyst verdicts naming a family"] if named is not None else []),
            "rows_per_class": counts, "created": now.isoformat(timespec="seconds")}
    say(f"family classifier {version}: {total} labelled flows ({', '.join(f'{c} {n}' for c, n in sorted(counts.items()))})")
    return FamilyClassifier(model, version, meta)


# ------------------------------------------------------------------------------ evaluation

def split_days(days: list[str]) -> tuple[list[str], list[str]]:
    """(train, test) days, fixed before any result: days without timestamps (`file:` days) and
    every other dated day train; the dated days in between test."""
    dated = sorted(d for d in days if not d.startswith("file:"))
    test = dated[1::2]
    return [d for d in days if d not in test], test


def scores(counts: dict[tuple[str, str], int]) -> dict:
    """{(true family, predicted): flows} -> the confusion matrix (rows: true families present,
    columns: CLASSES' families + `unknown`), per-family precision, recall and F1 over the attack
    families present, their macro-F1, and the share called `unknown` (of attack rows, of all)."""
    present = [c for c in CLASSES if any(t == c for t, _ in counts)]
    cols = FAMILIES + [UNKNOWN]
    cm = {t: {p: counts.get((t, p), 0) for p in cols} for t in present}
    per = {}
    for fam in [c for c in FAMILIES if c in present]:
        tp = cm[fam][fam]
        fp = sum(cm[t][fam] for t in present if t != fam)
        fn = sum(cm[fam].values()) - tp
        prec = tp / (tp + fp) if tp + fp else 0.0
        rec = tp / (tp + fn) if tp + fn else 0.0
        per[fam] = {"support": tp + fn, "precision": prec, "recall": rec,
                    "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0}
    macro = sum(v["f1"] for v in per.values()) / len(per) if per else float("nan")
    att = [t for t in present if t != BENIGN]
    n_att = sum(sum(cm[t].values()) for t in att)
    n_all = sum(sum(r.values()) for r in cm.values())
    return {"confusion": cm, "per_family": per, "macro_f1": macro,
            "unknown_share_attacks": sum(cm[t][UNKNOWN] for t in att) / n_att if n_att else float("nan"),
            "unknown_share_all": sum(r[UNKNOWN] for r in cm.values()) / n_all if n_all else float("nan")}


def evaluate(flows: DataFrame, day_col: str = "eval_day", say=print) -> dict:
    """Train on `split_days`' training days, test on the others (every labelled test row, benign
    included: a benign row called a family counts against that family's precision)."""
    days = sorted(r[0] for r in flows.select(day_col).distinct().collect())
    train_days, test_days = split_days(days)
    if not test_days:
        return {"note": "family classifier not evaluated: fewer than two dated days to split", "train_days": train_days}
    say(f"family classifier: trained on {', '.join(train_days)}; tested on {', '.join(test_days)}")
    clf = train(flows.where(F.col(day_col).isin(*train_days)), train_days, say)
    test = flows.where(F.col(day_col).isin(*test_days)).withColumn("_true", family_column())
    test = add_context(test.where(F.col("_true").isin(*CLASSES)), by=(day_col,))
    pred = clf.predict(test)
    counts = {(r["_true"], r["family"]): int(r["count"]) for r in pred.groupBy("_true", "family").count().collect()}
    out = scores(counts)
    out.update({"train_days": train_days, "test_days": test_days, "version": clf.version, "bar": clf.bar,
                "rows_per_class_trained": clf.meta["rows_per_class"]})
    return out
