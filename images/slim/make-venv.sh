#!/usr/bin/env bash
# Build stage of the ingest and oa images: /opt/spot-ae/venv from the wheels in WHEELS_DIR only
# (resolved offline by scripts/build-images.sh), then a check that MODULES import and that
# nothing of Spark or TensorFlow is there. Usage: make-venv WHEELS_DIR MODULE...
set -euo pipefail
wheels=$1; shift
apt-get update
apt-get install -y --no-install-recommends python3-venv
python3 -m venv /opt/spot-ae/venv
/opt/spot-ae/venv/bin/pip install --quiet --no-cache-dir --no-index --no-deps "$wheels"/*.whl
/opt/spot-ae/venv/bin/python - "$@" <<'PY'
import importlib, importlib.util, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
found = [m for m in ("pyspark", "py4j", "tensorflow", "keras") if importlib.util.find_spec(m)]
sys.exit(f"make-venv: {found} must not be in this image" if found else 0)
PY
