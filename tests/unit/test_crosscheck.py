"""`spot-ae cross-check` on real captures: roles from a file, flags or the bundled table; the
models' ranking of attack against benign captures and the family classifier's names for each
capture, as printed and as JSON; a bad roles file gets one clear line."""
from __future__ import annotations

import json
import shutil

import pytest

from spot_ae_job import crosscheck
from spot_ae_job.errors import SpotAEError


def test_roles_come_from_the_file_then_the_flags_then_the_bundled_table(tmp_path):
    root = tmp_path / "pcaps"
    (root / "lab").mkdir(parents=True)
    caps = [root / "lab" / "mine.pcap", root / "ssh.pcap", root / "other.pcap"]
    for c in caps:
        c.write_bytes(b"")
    roles = tmp_path / "roles.csv"
    roles.write_text("capture,role\nlab/*.pcap,attack\n")
    rules = crosscheck.read_roles(str(roles)) + [("other.pcap", "benign")]
    assert crosscheck.capture_roles(caps, root, rules) == {"mine.pcap": "attack", "ssh.pcap": "benign", "other.pcap": "benign"}
    assert crosscheck.capture_roles([root / "other.pcap"], root, [])["other.pcap"] == "unknown"
    roles.write_text("lab/*.pcap,malicious\n")
    with pytest.raises(SpotAEError, match="line 1: expected `capture,attack` or `capture,benign`"):
        crosscheck.read_roles(str(roles))


def test_a_brute_force_capture_ranks_above_a_benign_one_and_gets_a_family(spark, tmp_path, data_dir, capsys):
    pcaps = tmp_path / "pcaps"
    pcaps.mkdir()
    for name in ("sshguess.pcap", "ssh.pcap"):  # SSH password guessing (attack) and ordinary SSH (benign)
        shutil.copy(data_dir / "pcap" / "zeek" / name, pcaps / name)
    out = tmp_path / "out"
    argv = ["--pcap", str(pcaps), "--model", "ae", "--epochs", "2", "--master", "local[2]", "--out", str(out),
            "--data", str(data_dir / "cicids2018" / "aegmm__toy_dataset.csv")]
    assert crosscheck.main(argv) == 0
    res = json.loads((out / "cross_check.json").read_text())
    printed = capsys.readouterr().out
    assert res["roles"] == {"sshguess.pcap": "attack", "ssh.pcap": "benign"}
    assert {c: v["flows"] for c, v in res["captures"].items()} == {"sshguess.pcap": 11, "ssh.pcap": 25}
    auc = res["models"]["ae"]["roc_auc"]
    assert 0.0 <= auc <= 1.0 and f"attack-capture flows vs benign-capture flows: {auc:.3f}" in printed
    fam = res["family"]["captures"]
    assert (fam["sshguess.pcap"]["expected"], fam["ssh.pcap"]["expected"]) == ("brute_force", "unknown")
    for cap, v in fam.items():
        assert sum(v["called"].values()) == v["flows"] == res["captures"][cap]["flows"]
        assert v["share_expected"] == v["called"].get(v["expected"], 0) / v["flows"]
    assert "attack family (family-" in printed
