#!/usr/bin/env python3
"""Pack part of the artifact cache into ONE deterministic tarball to push to the nodes.

Why: nodes have no internet, so everything they install comes from artifacts/ on the controller.
Copying ~180 jars or ~60 wheels one by one costs a module run per file on every playbook run;
one tarball named by its content is one checksum comparison, and an unchanged cache gives the
same bytes, so a second run changes nothing. Every file is verified against
artifacts/SHA256SUMS here, and the tarball carries the matching SHA256SUMS lines so the node
verifies its own copy again after unpacking.

  pack_artifacts.py --artifacts DIR --out DIR jars
  pack_artifacts.py --artifacts DIR --out DIR wheels --requirements requirements/runtime.in

`wheels` packs only what `pip install -r REQUIREMENTS` needs (pip's own resolver, --dry-run,
from the cache with --no-index), plus the requirements file itself as requirements.txt.
Prints one JSON line: {"tarball", "id", "files", "changed"}. Exit 2 with a one-line reason
when the cache is incomplete or a checksum differs.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


class PackError(Exception):
    """The cache cannot be packed; the message says what to run."""


def read_sums(artifacts: Path) -> dict[str, str]:
    sums = artifacts / "SHA256SUMS"
    if not sums.is_file():
        raise PackError(f"{sums} missing: run `make artifacts` (scripts/artifacts.sh)")
    out = {}
    for line in sums.read_text().splitlines():
        digest, _, rel = line.partition("  ")
        if rel:
            out[rel.removeprefix("./")] = digest
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def wheel_closure(artifacts: Path, requirements: Path) -> list[str]:
    """The wheels pip would install for REQUIREMENTS, resolved from the cache alone."""
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--no-index", "--find-links", str(artifacts / "wheels"), "-r", str(requirements),
           "--report", "-"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise PackError(f"pip cannot resolve {requirements} from {artifacts}/wheels: "
                        f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    names = []
    for item in json.loads(r.stdout)["install"]:
        url = item["download_info"]["url"]
        names.append("wheels/" + os.path.basename(url))
    return sorted(names)


def pack(artifacts: Path, out: Path, kind: str, requirements: Path | None) -> dict:
    sums = read_sums(artifacts)
    if kind == "jars":
        files = sorted(r for r in sums if r.startswith("jars/") and r.endswith(".jar"))
        extras: dict[str, bytes] = {}
    else:
        files = wheel_closure(artifacts, requirements)
        extras = {"requirements.txt": requirements.read_bytes()}
    if not files:
        raise PackError(f"no {kind} listed in {artifacts}/SHA256SUMS: run `make artifacts`")
    for rel in files:
        if rel not in sums:
            raise PackError(f"{rel} is not in {artifacts}/SHA256SUMS: run `make artifacts`")
        path = artifacts / rel
        if not path.is_file():
            raise PackError(f"{path} is missing: run `make artifacts`")
        if sha256(path) != sums[rel]:
            raise PackError(f"{path} does not match its SHA256SUMS line: refusing to ship a changed cache")
    manifest = "".join(f"{sums[r]}  ./{r}\n" for r in files).encode()
    ident = hashlib.sha256(manifest + b"".join(k.encode() + v for k, v in sorted(extras.items())))
    ident = ident.hexdigest()[:16]
    tarball = out / f"{kind}-{ident}.tar"
    result = {"tarball": str(tarball), "id": ident, "files": len(files), "changed": False}
    if tarball.is_file():
        return result
    out.mkdir(parents=True, exist_ok=True)
    # Stored, not compressed (jars and wheels are zips already); fixed owner and mtime, sorted
    # names: the same cache always gives the same bytes.
    def info(name: str, size: int, mode: int = 0o644) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = size, mode, 0, 0, 0, "root", "root"
        return ti
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{kind}-", suffix=".tar")
    try:
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
            tar.addfile(info("SHA256SUMS", len(manifest)), io.BytesIO(manifest))
            for name, data in sorted(extras.items()):
                tar.addfile(info(name, len(data)), io.BytesIO(data))
            for rel in files:
                path = artifacts / rel
                with path.open("rb") as f:
                    tar.addfile(info(rel, path.stat().st_size), f)
        os.replace(tmp, tarball)
    except BaseException:
        os.unlink(tmp)
        raise
    for old in out.glob(f"{kind}-*.tar"):  # one tarball per kind: the cache's current state
        if old != tarball:
            old.unlink()
    result["changed"] = True
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("kind", choices=["jars", "wheels"])
    ap.add_argument("--requirements", type=Path, help="requirements file (wheels only)")
    args = ap.parse_args(argv)
    try:
        if args.kind == "wheels" and not (args.requirements and args.requirements.is_file()):
            raise PackError("wheels needs --requirements FILE (an existing requirements file)")
        print(json.dumps(pack(args.artifacts.resolve(), args.out.resolve(), args.kind, args.requirements)))
    except (PackError, OSError) as e:
        print(f"pack_artifacts: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
