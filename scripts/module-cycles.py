#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle (`use crate::a` in b and
`use crate::b` in a, or longer). Types two modules share belong in a leaf module.

Reads `crate::NAME` paths outside comments and test modules (`#[cfg(test)]` onwards, and
`tests.rs` / `*_tests.rs` files) of every `*/src/**/*.rs`."""
import glob
import os
import re
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
crates = sorted(os.path.dirname(os.path.dirname(p)) for p in glob.glob(os.path.join(root, "*/src/lib.rs")))
found = False
for crate in crates:
    graph = {}
    for f in glob.glob(os.path.join(crate, "src/**/*.rs"), recursive=True):
        rel = os.path.relpath(f, os.path.join(crate, "src"))
        module = rel[:-3].split(os.sep)[0]
        name = os.path.basename(f)
        if module in ("lib", "main") or name == "tests.rs" or name.endswith("_tests.rs"):
            continue  # test modules may use anything
        text = open(f, encoding="utf-8").read().split("#[cfg(test)]")[0]
        code = "\n".join(l for l in text.split("\n") if not l.strip().startswith("//"))
        graph.setdefault(module, set()).update(d for d in re.findall(r"crate::(\w+)", code) if d != module)
    cycles = set()

    def walk(node, path):
        for dep in graph.get(node, ()):
            if dep in path:
                cycles.add(tuple(sorted(path[path.index(dep):])))
            elif dep in graph:
                walk(dep, path + [dep])

    for node in graph:
        walk(node, [node])
    for cycle in sorted(cycles):
        found = True
        print(f"{os.path.basename(crate)}: module cycle: {' <-> '.join(cycle)}", file=sys.stderr)
sys.exit(1 if found else 0)
