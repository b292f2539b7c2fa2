#!/usr/bin/env bash
# Builds Spot-AE's images in layer order, each only when missing or when its inputs changed:
#   rootfs -> base (OS, JDK, tini) -> hadoop (jars, config) -> pyenv (the ML venv, build stage)
#   -> spark (hadoop + venv + the job);  rootfs -> slim (OS, tini, Python; no JDK) -> ingest, oa
#   (each a venv of only its requirements/*.in wheels + the job);  rootfs -> rsyslog (alerts' syslog receiver)
# Each image gets a small context staged from hard links (never the 1.3 GB repo root), and a
# label with a fingerprint of its inputs; a matching label means "up to date, skip".
# Everything installed comes from artifacts/ and is checked against artifacts/SHA256SUMS first.
# Usage: [SPOT_AE_BUILD_ONLY=rsyslog|apps] scripts/build-images.sh [--force]   (apps: slim, ingest, oa)     Tags: compose/.env (SPOT_AE_TAG).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# One build at a time on this engine (two test workers may both ask for the images).
mkdir -p build && exec 9>build/.build-images.lock && flock 9
force=${1:-}
# compose/.env holds the defaults compose itself uses; the caller's environment wins, as in compose.
while IFS='=' read -r k v; do
  [[ $k =~ ^[A-Z_][A-Z0-9_]*$ ]] && [[ -z ${!k+x} ]] && export "$k=$v"
done < compose/.env
tag=${SPOT_AE_TAG:?}
stage=$root/build/docker
say() { echo "[build-images $(date +%H:%M:%S)] $*" >&2; }

verify_artifacts() {
  [[ -f artifacts/SHA256SUMS ]] || { say "artifacts/SHA256SUMS missing: run make artifacts"; exit 1; }
  [[ -d artifacts/jars && -d artifacts/wheels ]] || { say "artifact cache incomplete: run make artifacts"; exit 1; }
  local listed
  listed=$(grep -cE '  \./(jars|wheels)/' artifacts/SHA256SUMS || true)
  local present=$(( $(find artifacts/jars artifacts/wheels -type f ! -name .complete | wc -l) ))
  (( listed >= present )) || { say "artifact files not in SHA256SUMS ($present present, $listed listed): run make artifacts"; exit 1; }
  ( cd artifacts && grep -E '  \./(jars|wheels)/' SHA256SUMS | grep -v '/\.complete$' | sha256sum --quiet -c - ) \
    || { say "artifact checksum mismatch (see above): refusing to build from a changed cache"; exit 1; }
}

# Fingerprint = hash of file paths + contents (small files) or sizes (artifacts, checksummed above).
fingerprint() {
  { for a in "$@"; do
      if [[ $a == id:* ]]; then echo "$a"; continue; fi
      find "$a" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum
    done; } | sha256sum | cut -c1-16
}
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
up_to_date() {
  [[ $force != --force ]] && [[ $(docker image inspect -f '{{index .Config.Labels "spot-ae.inputs"}}' "$1" 2>/dev/null) == "$2" ]]
}
build() {  # build NAME FINGERPRINT CONTEXT_DIR [docker build args...]
  local name=$1 fp=$2 ctx=$3; shift 3
  local ref=$SPOT_AE_IMAGE_PREFIX/$name:$tag
  if up_to_date "$ref" "$fp"; then say "$ref up to date"; return; fi
  say "building $ref"
  local t0=$SECONDS
  DOCKER_BUILDKIT=0 docker build -q --label "spot-ae.inputs=$fp" -t "$ref" "$@" "$ctx" 2> >(grep -v -E "DEPRECATED|BuildKit|environment-variable|^\s*$" >&2) >/dev/null
  say "built $ref in $((SECONDS - t0)) s ($(docker image inspect -f '{{.Size}}' "$ref" | awk '{printf "%.0f MB", $1/1e6}'))"
}
fresh_ctx() { rm -rf "$stage/$1"; mkdir -p "$stage/$1"; echo "$stage/$1"; }

t_all=$SECONDS
rootfs=$(bash scripts/base-image.sh)
base=$SPOT_AE_IMAGE_PREFIX/base:$tag
ctx=$(fresh_ctx base); cp images/base/Dockerfile "$ctx/"
build base "$(fingerprint images/base "id:$(image_id "$rootfs")")" "$ctx" --build-arg "ROOTFS=$rootfs"

# The syslog receiver for alert forwarding (compose profile `alerts`): Debian's rsyslog on the rootfs.
ctx=$(fresh_ctx rsyslog); cp images/rsyslog/* "$ctx/"
build rsyslog "$(fingerprint images/rsyslog "id:$(image_id "$rootfs")")" "$ctx" --build-arg "ROOTFS=$rootfs"
[[ ${SPOT_AE_BUILD_ONLY:-} == rsyslog ]] && { say "rsyslog only: done in $((SECONDS - t_all)) s"; exit 0; }

verify_artifacts

# The job's wheel, from the working tree, only when its sources changed (once per run).
bash scripts/build-jar.sh  # before the fingerprint: the jar ships in the wheel
job_fp=$(fingerprint spot_ae_job pyproject.toml)
job_wheel() {  # job_wheel DIR: the wheel, built at most once per run, copied into DIR
  if [[ ${job_built:-} != 1 ]]; then
    rm -rf build/wheels/spot_ae_job-*.whl build/lib build/bdist.*
    .venv/bin/pip wheel --quiet --no-deps --no-build-isolation --no-index -w build/wheels . >/dev/null
    job_built=1
  fi
  cp build/wheels/spot_ae_job-*.whl "$1/"
}
# ingest and oa: no JVM, Spark or TensorFlow. Their wheels are requirements/<svc>.in resolved
# offline against the artifact cache (with runtime.in's pins), copied into a small context (~70 MB;
# copies, not hard links: the link count is part of `ls -l`, which fingerprints pyenv and hadoop).
slim=$SPOT_AE_IMAGE_PREFIX/slim:$tag
ctx=$(fresh_ctx slim); cp images/slim/* "$ctx/"
build slim "$(fingerprint images/slim "id:$(image_id "$rootfs")")" "$ctx" --build-arg "ROOTFS=$rootfs"
for svc in ingest oa; do
  fp=$(fingerprint "images/$svc" "requirements/$svc.in" requirements/runtime.in "id:$(image_id "$slim")" "id:$job_fp")
  ref=$SPOT_AE_IMAGE_PREFIX/$svc:$tag
  if ! up_to_date "$ref" "$fp"; then
    ctx=$(fresh_ctx "$svc"); cp "images/$svc/Dockerfile" "$ctx/"; mkdir "$ctx/wheels"
    .venv/bin/pip install --dry-run --ignore-installed --no-index --find-links artifacts/wheels --quiet \
        -r "requirements/$svc.in" -c requirements/runtime.in --report - \
      | .venv/bin/python -c 'import json, sys, urllib.parse as u
for i in json.load(sys.stdin)["install"]: print(u.unquote(u.urlparse(i["download_info"]["url"]).path))' \
      | xargs -I{} cp {} "$ctx/wheels/"
    job_wheel "$ctx/wheels"
  fi
  build "$svc" "$fp" "$stage/$svc" --build-arg "SLIM_IMAGE=$slim"
done
[[ ${SPOT_AE_BUILD_ONLY:-} == apps ]] && { say "slim, ingest, oa only: done in $((SECONDS - t_all)) s"; exit 0; }

hadoop=$SPOT_AE_IMAGE_PREFIX/hadoop:$tag
ctx=$(fresh_ctx hadoop)
cp -l images/hadoop/* config/hadoop.env "$ctx/" 2>/dev/null || cp images/hadoop/* config/hadoop.env "$ctx/"
cp -al artifacts/jars "$ctx/jars"; rm -f "$ctx/jars/.complete"
build hadoop "$(fingerprint images/hadoop config/hadoop.env "id:$(image_id "$base")" \
  "id:$(ls -l artifacts/jars | md5sum)")" "$ctx" --build-arg "BASE_IMAGE=$base"

pyenv=$SPOT_AE_IMAGE_PREFIX/pyenv:$tag
fp=$(fingerprint images/pyenv requirements/runtime.in "id:$(image_id "$base")" "id:$(ls -l artifacts/wheels | md5sum)")
if ! up_to_date "$pyenv" "$fp"; then
  ctx=$(fresh_ctx pyenv); cp images/pyenv/Dockerfile "$ctx/"
  cp -al artifacts/wheels "$ctx/wheels"; cp requirements/runtime.in "$ctx/wheels/"
fi
build pyenv "$fp" "$stage/pyenv" --build-arg "BASE_IMAGE=$base"

ctx=$(fresh_ctx spark); cp images/spark/* "$ctx/"; mkdir -p "$ctx/job"
spark=$SPOT_AE_IMAGE_PREFIX/spark:$tag
fp=$(fingerprint images/spark "id:$(image_id "$base")" "id:$(image_id "$hadoop")" "id:$(image_id "$pyenv")" "id:$job_fp")
up_to_date "$spark" "$fp" || job_wheel "$ctx/job"
build spark "$fp" "$ctx" --build-arg "BASE_IMAGE=$base" --build-arg "HADOOP_IMAGE=$hadoop" --build-arg "PYENV_IMAGE=$pyenv"

say "images ready in $((SECONDS - t_all)) s"
