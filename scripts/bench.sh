#!/usr/bin/env bash
# `make bench`: the benchmarks, each printing its figures (and MET / MISSED against its goal);
# none asserts. Run on an otherwise idle machine. `make bench BENCH="score ingest"` picks some;
# SPOT_AE_DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A cmd=(
  [score]="benchmarks/bench_score.py --rows 8000000"
  [train]="benchmarks/bench_train.py --rows 200000"
  [day]="benchmarks/bench_day.py --flows 5500000"
  [evaluate-day]="benchmarks/bench_day.py --models= --evaluate-days 10 --evaluate-flows 16000000"
  [ingest]="benchmarks/bench_ingest.py"
  [detection]="benchmarks/bench_detection.py --epochs 90"
  [ae-vs-lda]="benchmarks/bench_ae_vs_lda.py"
  [stream]="benchmarks/bench_stream.py"
  [stream-cluster]="benchmarks/bench_stream_cluster.py --rate 640 --minutes 10"
  [community-id]="benchmarks/bench_community_id.py"
  [oa]="benchmarks/oa_suspicious.py --all-flows 100000"
  [oa-browser]="benchmarks/oa_browser.py --rows 275000 --all-flows 5500000"
)
order=(score train day evaluate-day ingest detection ae-vs-lda stream stream-cluster community-id oa oa-browser)
names=(${BENCH:-${order[@]}})
for n in "${names[@]}"; do
  [[ -n ${cmd[$n]:-} ]] || { echo "bench: unknown benchmark '$n' (known: ${order[*]})" >&2; exit 2; }
done
for n in "${names[@]}"; do
  echo "== bench $n: .venv/bin/python ${cmd[$n]}"
  [[ ${SPOT_AE_DRY_RUN:-0} == 1 ]] && continue
  t0=$SECONDS
  .venv/bin/python ${cmd[$n]}
  echo "== bench $n: $((SECONDS - t0)) s"
done
