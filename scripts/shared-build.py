#!/usr/bin/env python3
"""Fails when a dependency is built with other features for the tests than for the binary.

scripts/demo.sh builds `shadowtap` (`cargo build -p shadowtap-cli`) and scripts/test.sh the
tests (`cargo test --workspace`, dev-dependencies included). Cargo unifies features per build,
so a dev-dependency that turns on one more feature of a shared crate (proptest asking
getrandom for `sys_rng`) makes the tests rebuild that crate and everything above it (that one
rebuilt datafusion). Align the feature in a normal dependency instead."""
import os
import subprocess
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def features(*args):
    out = subprocess.run(
        ["cargo", "tree", "--locked", "--prefix", "none", "-f", "{p} {f}", *args],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout
    found = {}
    for line in out.splitlines():
        parts = line.split(" ")
        if len(parts) < 2:
            continue
        feats = " ".join(p for p in parts[2:] if not p.startswith("("))
        found.setdefault(f"{parts[0]} {parts[1]}", set()).add(feats)
    return found


binary = features("-e", "normal,build", "-p", "shadowtap-cli")
tests = features("-e", "normal,build,dev", "--workspace")
drift = [(k, binary[k], tests[k]) for k in sorted(binary) if k in tests and binary[k] != tests[k]]
for name, b, t in drift:
    print(f"{name}: features {sorted(b)} for the binary, {sorted(t)} for the tests", file=sys.stderr)
sys.exit(1 if drift else 0)
