"""`spot-ae cross-check`: does a model trained on CIC-IDS2018 benign rows rank real captures right?

The CIC-IDS2018 rows come from CICFlowMeter; a deployment's flows come from nfdump. Here the
models train on the benign rows of CIC-IDS2018 CSVs (80% train, 20% held out to fit the
thresholds, as in `spot-ae evaluate`), then score the flows that nfpcapd + `nfdump -B` make from
the captures in ../shared/data/pcap (the same path as `spot-ae ingest pcap`). Printed per capture:
its role (attack or benign, from the data README), flows, median score, the share of flows above
the p95 and benign-FPR 1% thresholds; and per model the ROC-AUC of attack-capture flows against
benign-capture flows (every flow of an attack capture counts as attack: the captures also hold
some ordinary traffic, so this is a lower bound of what the model separates). Then the incidents'
attack-family classifier (family.py), trained on the CSVs' labelled rows, names each capture's
flows: the share called the capture's own family (brute force, scan), or no attack family for a
benign capture.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spot_ae_job import family
from spot_ae_job.context import CONTEXT_COLUMNS, add_context
from spot_ae_job.errors import SpotAEError, run_command
from spot_ae_job.evaluate import default_data, with_day
from spot_ae_job.ingest.cicids import read_cicids
from spot_ae_job.ingest.nfdump import decode_file
from spot_ae_job.ingest.replay import pcap_to_nfcapd
from spot_ae_job.metrics import roc_auc
from spot_ae_job.model import VARIANTS, train_autoencoder
from spot_ae_job.schema import FLOW_COLUMNS, FLOW_SCHEMA, IS_ATTACK
from spot_ae_job.score import score_flows
from spot_ae_job.spark import session
from spot_ae_job.thresholds import fit_threshold

ROLES = ("attack", "benign")
# The captures of ../shared/data/pcap (its README): attack or benign traffic. Any other capture
# gets its role from --roles FILE, --attack PATTERN or --benign PATTERN.
CAPTURE_ROLES = {
    "bruteforce.pcap": "attack", "sshguess.pcap": "attack", "synscan.pcapng": "attack",
    "portscan.pcap": "attack", "ftp-crack.pcap": "attack",
    "ssh.pcap": "benign", "bro.org.pcap": "benign", "http_espn.pcapng": "benign",
}
MODES = (("p95", None), ("benign-fpr", 0.01))
# The attack family each bundled attack capture holds (the data README); benign captures should
# be called `unknown` (no attack family) by the classifier. Other captures: not scored for family.
CAPTURE_FAMILIES = {
    "bruteforce.pcap": "brute_force", "sshguess.pcap": "brute_force", "ftp-crack.pcap": "brute_force",
    "synscan.pcapng": "scan", "portscan.pcap": "scan",
}


def _say(msg: str) -> None:
    print(f"[spot-ae cross-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spot-ae cross-check", description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", default=None,
                   help="CIC-IDS2018 CSV(s) whose benign rows train the models (default: the improved excerpt)")
    p.add_argument("--pcap", default=str(default_data().parent / "pcap"), help="folder of captures (searched recursively)")
    p.add_argument("--roles", default=None, help="CSV of `capture,role` lines (role: attack or benign); "
                   "capture = a file name or a glob on the path below --pcap")
    p.add_argument("--attack", action="append", default=[], metavar="GLOB", help="captures matching GLOB are attack traffic (repeatable)")
    p.add_argument("--benign", action="append", default=[], metavar="GLOB", help="captures matching GLOB are benign traffic (repeatable)")
    p.add_argument("--model", default="ae,ae-context", help="comma-separated: ae, ae-context")
    p.add_argument("--epochs", type=int, default=90)
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--out", default=None, help="also write the figures as JSON here")
    p.add_argument("--master", default=os.environ.get("SPOT_AE_MASTER", "local[2]"))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-family", action="store_true",
                   help="skip the attack-family classifier (family.py, trained on every labelled row of --data)")
    return p


def read_roles(path: str) -> list[tuple[str, str]]:
    """A roles file: one `capture,role` per line (a header line `capture,role` is allowed)."""
    try:
        rows = list(csv.reader(Path(path).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise SpotAEError(f"cannot read the roles file {path}: {e}") from None
    out = []
    for i, r in enumerate(rows, 1):
        if not r or not "".join(r).strip() or (i == 1 and [c.strip().lower() for c in r] == ["capture", "role"]):
            continue
        if len(r) != 2 or r[1].strip().lower() not in ROLES:
            raise SpotAEError(f"{path} line {i}: expected `capture,attack` or `capture,benign`, got {','.join(r)!r}")
        out.append((r[0].strip(), r[1].strip().lower()))
    return out


def capture_roles(pcaps: list[Path], root: Path, rules: list[tuple[str, str]]) -> dict[str, str]:
    """Each capture's role: the first rule whose glob matches its file name or its path below
    `root`, else the bundled table's, else `unknown` (listed, left out of the figures)."""
    roles = {}
    for p in pcaps:
        rel = str(p.relative_to(root)) if p.is_relative_to(root) else p.name
        hit = next((role for pat, role in rules if fnmatch.fnmatch(p.name, pat) or fnmatch.fnmatch(rel, pat)), None)
        roles[p.name] = hit or CAPTURE_ROLES.get(p.name, "unknown")
    return roles


def capture_flows(spark, pcaps: list[Path]):
    """Captures -> one DataFrame of flow-table rows + `capture`, via nfpcapd and nfdump -B."""
    tables, counts = [], {}
    for pcap in pcaps:
        with tempfile.TemporaryDirectory(prefix="spot-ae-xcheck-") as tmp:
            parts = [decode_file(nf, bidirectional=True).flows for nf in pcap_to_nfcapd(pcap, tmp)]
        t = pa.concat_tables(parts)
        counts[pcap.name] = t.num_rows
        tables.append(t.append_column("capture", pa.array([pcap.name] * t.num_rows, pa.string())))
    table = pa.concat_tables(tables)
    schema = T.StructType(FLOW_SCHEMA.fields + [T.StructField("capture", T.StringType())])
    return spark.createDataFrame(table.to_pandas(), schema), counts


def run(args) -> dict:
    models = [m.strip() for m in args.model.split(",") if m.strip()]
    if not models or any(m not in VARIANTS for m in models):
        raise SpotAEError(f"--model takes a comma-separated list of {', '.join(VARIANTS)}; got {args.model!r}")
    pcap_dir = Path(args.pcap)
    pcaps = sorted(p for p in pcap_dir.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    if not pcaps:
        raise SpotAEError(f"no .pcap/.pcapng files under {pcap_dir}")
    rules = (read_roles(args.roles) if args.roles else []) + [(g, "attack") for g in args.attack] + [(g, "benign") for g in args.benign]
    roles = capture_roles(pcaps, pcap_dir, rules)
    unknown = sorted(c for c, r in roles.items() if r == "unknown")
    if unknown:
        _say(f"no role for {', '.join(unknown)}: listed, but left out of the figures (give --roles, --attack or --benign)")
    if not {"attack", "benign"} <= set(roles.values()):
        raise SpotAEError("cross-check needs at least one attack and one benign capture: assign roles with "
                          "--roles FILE, --attack GLOB or --benign GLOB")
    data = args.data or [str(default_data() / "aegmm__toy_dataset.csv")]
    spark = session(args.master, app="spot-ae-cross-check")

    # host context is counted over every row of the CSVs (attacks too), as on the day they were captured
    cic = read_cicids(spark, data).flows
    rows = add_context(cic) if "ae-context" in models else cic
    keep = FLOW_COLUMNS + (CONTEXT_COLUMNS if "ae-context" in models else [])
    benign = rows.where(F.col(IS_ATTACK) == F.lit(False)).select(*keep)
    u = F.rand(args.seed)
    benign = benign.withColumn("_u", u).cache()
    train, held = benign.where(F.col("_u") >= args.holdout).drop("_u"), benign.where(F.col("_u") < args.holdout).drop("_u")
    flows, counts = capture_flows(spark, pcaps)
    flows = flows.cache()
    _say(f"{benign.count()} CIC-IDS2018 benign rows ({held.count()} held out for thresholds); captures: "
         + ", ".join(f"{k} {v}" for k, v in counts.items()))

    result = {"data": data, "pcap": str(pcap_dir), "epochs": args.epochs, "roles": roles, "captures": {}, "models": {}}
    lines = []
    for name in models:
        m = train_autoencoder(train.select(*FLOW_COLUMNS, *(CONTEXT_COLUMNS if name == "ae-context" else [])),
                              held_out=held.select(*FLOW_COLUMNS, *(CONTEXT_COLUMNS if name == "ae-context" else [])),
                              epochs=args.epochs, seed=args.seed, training_day="cicids2018-benign",
                              progress=lambda s: None, variant=name)
        held_scores = np.array([r[0] for r in score_flows(m, held.select(*FLOW_COLUMNS, *(CONTEXT_COLUMNS if name == "ae-context" else [])))
                                .select("score").collect()], dtype=float)
        th = {f"{mode}{'' if v is None else f' {v:g}'}": fit_threshold(held_scores, mode, v) for mode, v in MODES}
        pts = score_flows(m, flows).select("capture", "score").collect()
        by: dict[str, list[float]] = {}
        for r in pts:
            by.setdefault(r["capture"], []).append(r["score"])
        lines.append(f"\n{name} (trained on {train.count()} CIC-IDS2018 benign rows, {args.epochs} epochs); thresholds "
                     + ", ".join(f"{k} = {v:.4g}" for k, v in th.items()))
        lines.append(f"{'capture':<20} {'role':<7} {'flows':>6} {'median score':>13} " + " ".join(f"{'> ' + k:>16}" for k in th))
        ys, ss = [], []
        for cap in sorted(by, key=lambda c: (roles[c], c)):
            s = np.array(by[cap])
            role = roles[cap]
            shares = {k: float(np.mean(s > v)) for k, v in th.items()}
            result["captures"].setdefault(cap, {"role": role, "flows": int(s.size)})[name] = {
                "median": float(np.median(s)), **{f"share_above_{k}": v for k, v in shares.items()}}
            lines.append(f"{cap:<20} {role:<7} {s.size:>6} {np.median(s):>13.4g} " + " ".join(f"{v:>16.3f}" for v in shares.values()))
            if role in ("attack", "benign"):
                ys += [role == "attack"] * s.size
                ss += list(s)
        auc = roc_auc(ys, ss) if ys else float("nan")
        med = {c: float(np.median(v)) for c, v in by.items() if roles[c] in ROLES}
        ranked = sorted(med, key=med.get, reverse=True)
        above = sum(1 for c in ranked if roles[c] == "attack"
                    and all(med[c] > med[b] for b in ranked if roles[b] == "benign"))
        n_att = sum(1 for c in ranked if roles[c] == "attack")
        lines.append(f"ROC-AUC, attack-capture flows vs benign-capture flows: {auc:.3f}; "
                     f"attack captures whose median beats every benign capture's: {above} of {n_att}")
        result["models"][name] = {"thresholds": th, "roc_auc": auc, "attack_captures_above_all_benign": above,
                                  "attack_captures": n_att, "ranking_by_median": ranked, "model_version": m.version}
    if not args.no_family:
        result["family"] = capture_families(cic, data, flows, roles, lines)
    print("\n".join(lines), flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "cross_check.json").write_text(json.dumps(result, indent=2))
    return result


def capture_families(cic, data: list[str], flows, roles: dict[str, str], lines: list[str]) -> dict:
    """The incidents' family classifier, trained on every labelled row of the CSVs (`cic`, host context
    per day, as `spot-ae train-family`), on the captures' flows: per capture, the share of flows
    called each family; for a bundled attack capture, the share called its own family; for a
    benign one, the share called no attack family (`unknown`)."""
    labelled = with_day(cic).where(F.col(IS_ATTACK).isNotNull())
    clf = family.train(labelled, data, say=_say)
    got = {(r["capture"], r["family"]): r["count"] for r in clf.predict(flows).groupBy("capture", "family").count().collect()}
    out = {}
    lines.append(f"\nattack family ({clf.version}, trained on {sum(clf.meta['rows_per_class'].values())} labelled CIC-IDS2018 rows)")
    lines.append(f"{'capture':<20} {'role':<7} {'expected':<12} {'flows':>6} {'share expected':>15}  called")
    for cap in sorted({c for c, _ in got}, key=lambda c: (roles[c], c)):
        n = {f: k for (c, f), k in got.items() if c == cap}
        total = sum(n.values())
        want = CAPTURE_FAMILIES.get(cap) if roles[cap] == "attack" else (family.UNKNOWN if roles[cap] == "benign" else None)
        share = n.get(want, 0) / total if want else None
        out[cap] = {"role": roles[cap], "expected": want, "flows": total, "share_expected": share,
                    "called": {f: n[f] for f in sorted(n, key=n.get, reverse=True)}}
        called = ", ".join(f"{f} {k / total:.2f}" for f, k in sorted(n.items(), key=lambda x: -x[1]))
        lines.append(f"{cap:<20} {roles[cap]:<7} {want or '-':<12} {total:>6} {'-' if share is None else f'{share:.3f}':>15}  {called}")
    return {"version": clf.version, "captures": out}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run_command("spot-ae cross-check", run, args)


if __name__ == "__main__":
    sys.exit(main())
