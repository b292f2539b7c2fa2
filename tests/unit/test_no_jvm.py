"""`spot-ae ingest` and `spot-ae oa` run where there is no Spark, JVM or TensorFlow (their images).

Each check runs in a fresh interpreter in which importing pyspark, py4j, tensorflow, keras or
elephas fails, as it does in the OA and ingest images, and does real work through the entry
point: ingest lands a real nfcapd file and reads its summary back; the OA serves a day of
results, takes a verdict and shows the ingest summary. Afterwards none of those modules may be
loaded.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    FORBIDDEN = ("pyspark", "py4j", "tensorflow", "keras", "elephas")

    class NotInThisImage(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in FORBIDDEN:
                raise ImportError(f"{name} is not installed in this image")
            return None

    sys.meta_path.insert(0, NotInThisImage())

    def assert_none_loaded():
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        assert not loaded, loaded
""")


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(script), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_ingest_lands_a_real_file_and_reads_its_summary_without_spark(tmp_path, data_dir):
    r = run("""
        import sys
        from spot_ae_job.entry import main
        root, sample = sys.argv[1], sys.argv[2]
        assert main(["ingest", "files", "--huser", root, "--workers", "1", sample]) == 0
        assert main(["ingest", "summary", "--huser", root]) == 0
        assert_none_loaded()
    """, f"file://{tmp_path}/spot", str(data_dir / "nfcapd" / "nfcapd.sample"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ingested nfcapd.sample" in r.stdout and "2023-01-25" in r.stdout
    assert list((tmp_path / "spot" / "flow" / "hive").rglob("*.parquet"))


def test_the_oa_serves_a_day_and_takes_a_verdict_without_spark(tmp_path, data_dir):
    r = run("""
        import sys
        from pathlib import Path
        sys.path.insert(0, "tests/unit")
        from test_oa_api import DAY, _config, _flows_from_excerpt, login, write_day
        from spot_ae_job.entry import main
        from spot_ae_job.oa.app import create_app

        huser, data = Path(sys.argv[1]), Path(sys.argv[2])
        write_day(huser, _flows_from_excerpt(data, DAY), DAY)
        assert main(["ingest", "files", "--huser", f"file://{huser}", "--workers", "1",
                     str(data / "nfcapd" / "nfcapd.sample")]) == 0
        cfg = _config()
        cfg.huser = f"file://{huser}"
        c = create_app(cfg).test_client()
        token = login(c)
        for url in ("/api/v1/days", f"/api/v1/days/{DAY}/suspicious", f"/api/v1/days/{DAY}/model",
                    f"/api/v1/days/{DAY}/network", "/api/v1/ingest/summary", "/api/v1/verdicts"):
            assert c.get(url).status_code == 200, url
        r = c.post(f"/api/v1/days/{DAY}/feedback", json={"rank": 1, "sev": 3}, headers={"X-CSRF-Token": token})
        assert r.status_code == 201, r.json
        assert main(["oa", "serve", "--huser", f"file://{huser}"]) == 2  # the CLI too (no --config: refused)
        assert_none_loaded()
        print("verdicts", len(list((huser / "flow" / "verdicts").glob("*.json"))))
    """, str(tmp_path / "spot"), str(data_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verdicts 1" in r.stdout
