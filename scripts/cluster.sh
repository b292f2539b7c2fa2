#!/usr/bin/env bash
# The Spot-AE cluster on one machine (Docker Compose): the Makefile's cluster-* verbs.
#   up              build what is missing, start, wait for readiness, print the URLs
#   down            stop (HDFS data stays in named volumes)
#   status          containers, HDFS safe mode and DataNodes, YARN NodeManagers
#   logs [SVC...]   recent logs (extra args go to `compose logs`, e.g. -f)
#   clean           stop and wipe every volume (HDFS included)
#   smoke           HDFS put/get across containers, then a small Spark job on YARN
#   load-csv [--day YYYYMMDD] F...  CIC-IDS2018 CSVs (paths under the data dir, mounted at /input) -> flow table
#   ml-run DATE     the AE job for YYYYMMDD on YARN (Spot's ml_ops), results on HDFS
#   exec CMD...     run a command in the ml-client container (hdfs dfs, yarn, spark-submit)
# SPOT_AE_DRY_RUN=1 prints the compose commands a verb would run instead of running them.
# Environment: SPOT_AE_PROJECT (compose project, default spot-ae), SPOT_AE_APPS=0|1 (ingest and
# OA services; default: on when their code is present), SPOT_AE_COMPOSE (compose command).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
project=${SPOT_AE_PROJECT:-spot-ae}
compose_bin=${SPOT_AE_COMPOSE:-$root/.venv/bin/docker-compose}
huser=hdfs://namenode:8020/user/spot
# compose resolves relative paths from compose/: hand it an absolute one.
oa_cfg=${SPOT_AE_OA_CONFIG:-var/oa.toml}; [[ $oa_cfg == /* ]] || oa_cfg=$root/$oa_cfg
export SPOT_AE_OA_CONFIG=$oa_cfg
say() { echo "[cluster $(date +%H:%M:%S)] $*" >&2; }
die() { say "error: $*"; exit 1; }

apps_wanted() {
  case ${SPOT_AE_APPS:-auto} in
    1|yes|true) return 0 ;; 0|no|false) return 1 ;;
    *) [[ -f spot_ae_job/ingest/cli.py && -f spot_ae_job/oa/cli.py ]] \
         && grep -q watch spot_ae_job/ingest/cli.py && grep -q serve spot_ae_job/oa/cli.py ;;
  esac
}
profiles=()
apps_wanted && profiles=(--profile apps)
compose() { "$compose_bin" -p "$project" -f compose/docker-compose.yml "${profiles[@]}" "$@"; }
client() { compose exec -T ml-client "$@"; }
if [[ ${SPOT_AE_DRY_RUN:-0} == 1 ]]; then  # print what would run in the cluster instead (tests)
  compose() { printf 'compose'; printf ' %q' "$@"; echo; }
fi

preflight() {
  [[ ${SPOT_AE_DRY_RUN:-0} == 1 ]] && return 0
  [[ -x $compose_bin ]] || command -v "$compose_bin" >/dev/null || die "no compose at $compose_bin: run make setup"
  docker info >/dev/null 2>&1 || die "the Docker engine is not running: run make setup (starts dockerd)"
}

url() {  # url SERVICE PORT PATH -> http://127.0.0.1:HOSTPORT/PATH, or nothing when unpublished
  local hp; hp=$(compose port "$1" "$2" 2>/dev/null | tail -1) || return 0
  [[ -n $hp ]] && echo "http://${hp/0.0.0.0/127.0.0.1}$3"
}

oa_config() {
  # The OA refuses to start without users and ships no default password: make one analyst with
  # a random password, once, and print it. Edit var/oa.toml (docs/oa.md) for your own users.
  local f=$SPOT_AE_OA_CONFIG
  [[ -f $f ]] && return 0
  mkdir -p "$(dirname "$f")"
  local pw hash key
  pw=$(python3 -c 'import secrets; print(secrets.token_urlsafe(12))')
  key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
  hash=$(printf '%s\n' "$pw" | .venv/bin/spot-ae oa hash-password --password-stdin) \
    || die "could not hash the OA password with \`spot-ae oa hash-password\`"
  (umask 077; printf 'mode = "production"\nsecret_key = "%s"\n\n[users.admin]\npassword_hash = "%s"\nrole = "analyst"\n' \
    "$key" "$hash" > "$f")
  chown 1000:1000 "$f" 2>/dev/null || chmod 644 "$f"   # readable by the container's spot user only
  say "OA login: admin / $pw (stored hashed in $f; printed only this once)"
}

cmd_up() {
  preflight
  local t0=$SECONDS
  bash scripts/build-images.sh
  ((${#profiles[@]})) && oa_config
  say "starting project $project (waiting for HDFS out of safe mode with 2 DataNodes, YARN with a NodeManager)"
  local t1=$SECONDS
  if ! compose up -d --wait --wait-timeout "${SPOT_AE_WAIT_TIMEOUT:-600}"; then
    compose ps -a >&2
    die "cluster did not become healthy; see: bash scripts/cluster.sh logs"
  fi
  say "cluster ready: start $((SECONDS - t1)) s, total $((SECONDS - t0)) s"
  echo "NameNode UI:        $(url namenode 9870 /)"
  echo "ResourceManager UI: $(url resourcemanager 8088 /cluster)"
  echo "Spark history:      $(url spark-history 18080 /)"
  ((${#profiles[@]})) && echo "OA:                 $(url oa 8080 /)"
  echo "HDFS user root:     $huser (Spot's layout under flow/)"
}

cmd_status() {
  preflight
  compose ps -a
  local nn rm
  nn=$(compose exec -T namenode python3 /opt/hadoop/bin/healthcheck.py namenode 2>/dev/null) || true
  rm=$(compose exec -T resourcemanager python3 /opt/hadoop/bin/healthcheck.py resourcemanager 2>/dev/null) || true
  echo "HDFS (safe mode off, DataNodes >= replication): ${nn:-not running}"
  echo "YARN (active NodeManagers >= 1):                ${rm:-not running}"
}

cmd_smoke() {
  preflight
  local f=/tmp/smoke-$$ data="spot-ae smoke $(date +%s) $RANDOM"
  say "HDFS: write from namenode's container, read back from ml-client's"
  echo "$data" | compose exec -T namenode hdfs dfs -put -f - "$f"
  local back; back=$(client hdfs dfs -cat "$f")
  client hdfs dfs -rm -skipTrash "$f" >/dev/null
  [[ $back == "$data" ]] || die "HDFS read back '$back', wrote '$data'"
  say "HDFS ok; Spark on YARN (timeout ${SPOT_AE_SMOKE_TIMEOUT:-600} s)"
  client timeout "${SPOT_AE_SMOKE_TIMEOUT:-600}" spark-submit --master yarn --deploy-mode client \
    --conf spark.executor.instances=1 --conf spark.executor.memory=512m --conf spark.executor.memoryOverhead=512m \
    /opt/spot-ae/smoke_job.py 1000 "hdfs://namenode:8020/tmp/smoke-$$.parquet" 2>/dev/null | grep '^smoke:'
  client hdfs dfs -rm -r -skipTrash "/tmp/smoke-$$.parquet" >/dev/null
  say "smoke ok"
}

cmd_ml_run() {
  [[ ${1:-} =~ ^[0-9]{8}$ ]] || die "usage: cluster.sh ml-run YYYYMMDD [ml-ops options]"
  preflight
  local day=$1; shift
  client spot-ae ml-ops "$day" flow --huser "$huser" --master yarn "$@"
  say "results: $huser/flow/scored_results/$day/scores/flow_results.csv"
}

cmd_load_csv() {
  (($#)) || die "usage: cluster.sh load-csv [--day YYYYMMDD] FILE... (paths relative to the data dir, mounted at /input)"
  # options (--day YYYYMMDD for files without a Timestamp column) pass through to spot-ae; the rest are files
  local opts=() files=()
  while (($#)); do
    case $1 in
      --day) [[ ${2:-} =~ ^[0-9]{8}$ ]] || die "--day takes YYYYMMDD"; opts+=(--day "$2"); shift 2 ;;
      --day=*) opts+=("$1"); shift ;;
      -*) die "unknown option $1 (load-csv takes --day YYYYMMDD and files)" ;;
      *) files+=("$1"); shift ;;
    esac
  done
  ((${#files[@]})) || die "usage: cluster.sh load-csv [--day YYYYMMDD] FILE..."
  preflight
  # Executors run on the NodeManagers, which cannot see the client's /input: the CSVs go to
  # HDFS first (as Spot's ingest puts raw files there), and the job reads them from hdfs://.
  local stage=/tmp/spot-ae-load-$$ a=() p
  client hdfs dfs -mkdir -p "$stage"
  for p in "${files[@]}"; do
    [[ $p == /* ]] || p=/input/$p
    client hdfs dfs -put -f "$p" "$stage/" || die "could not upload $p"
    a+=("hdfs://namenode:8020$stage/$(basename "$p")")
  done
  local rc=0
  client spot-ae load-csv --huser "$huser" --master yarn "${opts[@]}" "${a[@]}" || rc=$?
  client hdfs dfs -rm -r -skipTrash "$stage" >/dev/null || true
  return $rc
}

verb=${1:-}; (($#)) && shift
case $verb in
  up)       cmd_up ;;
  down)     preflight; compose down --remove-orphans ;;
  clean)    preflight; compose down -v --remove-orphans; say "volumes removed (HDFS wiped)" ;;
  status)   cmd_status ;;
  logs)     preflight; compose logs --no-color --tail "${SPOT_AE_LOG_TAIL:-200}" "$@" ;;
  smoke)    cmd_smoke ;;
  ml-run)   cmd_ml_run "$@" ;;
  load-csv) cmd_load_csv "$@" ;;
  exec)     preflight; client "$@" ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
