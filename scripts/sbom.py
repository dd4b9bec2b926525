#!/usr/bin/env python3
"""CycloneDX 1.5 SBOM per binary, from `cargo metadata` and Cargo.lock (no extra tool needed).

For each binary target of the workspace: the crates it links (normal dependencies, resolved for
this build), with version, package URL, licence expression and the crates.io SHA-256 checksum
from Cargo.lock. Usage: scripts/sbom.py OUT_DIR
"""
import json
import os
import subprocess
import sys
import tomllib
import uuid
from datetime import datetime, timezone


def main() -> int:
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "target/sbom"
    os.makedirs(out_dir, exist_ok=True)
    host = next(l.split(": ", 1)[1] for l in subprocess.check_output(["rustc", "-vV"], text=True).splitlines() if l.startswith("host: "))
    target = os.environ.get("POSGUARD_SBOM_TARGET", host)
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", target]))
    with open("Cargo.lock", "rb") as f:
        lock = tomllib.load(f)
    checksums = {(p["name"], p["version"]): p.get("checksum") for p in lock.get("package", [])}
    packages = {p["id"]: p for p in meta["packages"]}
    nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
    members = set(meta["workspace_members"])

    def closure(root):
        seen, stack = set(), [root]
        while stack:
            pid = stack.pop()
            if pid in seen:
                continue
            seen.add(pid)
            for dep in nodes[pid]["deps"]:
                if any(k.get("kind") is None for k in dep["dep_kinds"]):
                    stack.append(dep["pkg"])
        return seen

    written = 0
    for pid in sorted(members):
        pkg = packages[pid]
        for target in pkg["targets"]:
            if "bin" not in target["kind"]:
                continue
            comps = []
            for dep_id in sorted(closure(pid) - {pid}):
                dep = packages[dep_id]
                comp = {
                    "type": "library",
                    "bom-ref": dep_id,
                    "name": dep["name"],
                    "version": dep["version"],
                    "purl": f"pkg:cargo/{dep['name']}@{dep['version']}",
                }
                if dep.get("license"):
                    comp["licenses"] = [{"expression": dep["license"]}]
                checksum = checksums.get((dep["name"], dep["version"]))
                if checksum:
                    comp["hashes"] = [{"alg": "SHA-256", "content": checksum}]
                comps.append(comp)
            bom = {
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "serialNumber": f"urn:uuid:{uuid.uuid4()}",
                "version": 1,
                "metadata": {
                    "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "tools": [{"name": "posguard scripts/sbom.py"}],
                    "component": {
                        "type": "application",
                        "bom-ref": pid,
                        "name": target["name"],
                        "version": pkg["version"],
                        "licenses": [{"expression": pkg.get("license") or "NOASSERTION"}],
                    },
                },
                "components": comps,
            }
            path = os.path.join(out_dir, f"{target['name']}.cdx.json")
            with open(path, "w") as f:
                json.dump(bom, f, indent=1)
            print(f"{path}: {len(comps)} components")
            written += 1
    if written < 4:
        print(f"expected 4 binaries, wrote {written}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
