"""The OA and ingest images' package lists (requirements/oa.in, ingest.in) against what those
commands really import: everything they load is in the list, resolved offline from the artifact
cache as scripts/build-images.sh resolves it, and nothing of Spark, the JVM bridge or TensorFlow
is. (The image build itself checks again that pyspark and tensorflow cannot be imported.)"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WHEELS = REPO / "artifacts" / "wheels"
ML_ONLY = {"pyspark", "py4j", "tensorflow", "keras", "elephas", "tf-keras"}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolved(requirements: str) -> set[str]:
    """The distributions pip installs for `requirements/<name>.in` from the cache alone."""
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
                        "--find-links", str(WHEELS), "--quiet", "-r", str(REPO / "requirements" / requirements),
                        "-c", str(REPO / "requirements" / "runtime.in"), "--report", "-"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return {norm(i["metadata"]["name"]) for i in json.loads(r.stdout)["install"]}


def imported(modules: list[str], absent: tuple[str, ...] = ()) -> set[str]:
    """The distributions whose modules `import <modules>` loads (beyond a bare interpreter's), in an
    interpreter where the `absent` packages cannot be imported, as in an image without them."""
    code = ("import sys, json, importlib, importlib.abc, importlib.metadata as md\n"
            "class Absent(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.split('.')[0] in {absent!r}: raise ImportError(name + ' is not in the image')\n"
            "sys.meta_path.insert(0, Absent())\n"
            "before = set(sys.modules)\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "dists = md.packages_distributions()\n"
            "print(json.dumps(sorted({d for k in set(sys.modules) - before for d in dists.get(k.split('.')[0], [])})))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return {norm(d) for d in json.loads(r.stdout)} - {"spot-ae-job"}


# ingest: pyarrow imports pandas (and dateutil) only where installed; the ingest image has neither.
@pytest.mark.parametrize("image, entry, absent", [
    ("oa", ["spot_ae_job.oa.cli", "spot_ae_job.oa.app"], ()),
    ("ingest", ["spot_ae_job.ingest.cli", "spot_ae_job.ingest.watcher"], ("pandas", "dateutil")),
])
def test_an_app_image_holds_what_its_command_imports_and_nothing_of_the_ml_job(image, entry, absent):
    if not WHEELS.is_dir():
        pytest.fail(f"artifact cache missing: {WHEELS} (run make artifacts)")
    have, need = resolved(f"{image}.in"), imported(entry, absent)
    assert need, "the command imports third-party packages: the check must see them"
    assert need <= have, f"requirements/{image}.in lacks {sorted(need - have)}"
    assert not have & ML_ONLY, f"the {image} image would carry {sorted(have & ML_ONLY)}"
