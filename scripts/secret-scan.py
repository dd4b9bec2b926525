#!/usr/bin/env python3
"""Secret scan of the repository and the built binaries.

Fails on: PEM private-key blocks, OpenSSH/PGP private keys, enrollment tokens or key material
in committed configuration, and — in the built binaries — any private-key header or the body
of a key file named in POSGUARD_SECRET_SCAN_KEYS (e.g. the demo's fleet CA key). Test-only key
material that must stay in the tree is listed in .secret-scan-allow with a reason.
"""
import os
import re
import subprocess
import sys

PATTERNS = [
    (re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "PEM private key"),
    (re.compile(rb"-----BEGIN OPENSSH PRIVATE KEY-----"), "OpenSSH private key"),
    (re.compile(rb"-----BEGIN PGP PRIVATE KEY BLOCK-----"), "PGP private key"),
    (re.compile(rb"AKIA[0-9A-Z]{16}"), "AWS access key id"),
    (re.compile(rb"(?m)^\s*(token|secret|password|ops_private_key)\s*=\s*\"[^\"]{8,}\""), "secret in configuration"),
]


def allowed():
    out = {}
    if os.path.exists(".secret-scan-allow"):
        for line in open(".secret-scan-allow"):
            line = line.strip()
            if line and not line.startswith("#"):
                path, _, reason = line.partition(" ")
                if not reason.strip():
                    sys.exit(f".secret-scan-allow: {path} has no reason")
                out[path] = reason.strip()
    return out


def main() -> int:
    allow = allowed()
    problems = []
    files = subprocess.check_output(["git", "ls-files", "-z"]).split(b"\0")
    for name in filter(None, files):
        path = name.decode()
        if path in allow or not os.path.isfile(path):
            continue
        data = open(path, "rb").read()
        for pattern, what in PATTERNS:
            if pattern.search(data):
                problems.append(f"{path}: {what}")
    key_bodies = []
    for key_file in filter(None, os.environ.get("POSGUARD_SECRET_SCAN_KEYS", "").split(":")):
        if os.path.exists(key_file):
            body = b"".join(l for l in open(key_file, "rb").read().splitlines() if not l.startswith(b"-----"))
            if body:
                key_bodies.append((key_file, body[:48]))
    scanned = 0
    for profile in ("debug", "release"):
        for binary in ("posguard-agent", "posguardctl", "posguard-provision", "posguard-collector"):
            path = os.path.join("target", profile, binary)
            if not os.path.exists(path):
                continue
            scanned += 1
            data = open(path, "rb").read()
            if re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", data):
                problems.append(f"{path}: contains a private-key header")
            for key_file, body in key_bodies:
                if body in data:
                    problems.append(f"{path}: contains the key in {key_file}")
    for p in problems:
        print(f"secret scan: {p}", file=sys.stderr)
    print(f"secret scan: {len(files) - 1} tracked files and {scanned} binaries, {len(problems)} findings, {len(allow)} allow-listed paths")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
