#!/usr/bin/env python3
"""Checks the Containerfile's instructions without a container engine (CI has none).

What it promises, as README.md and the file's header say: a build stage that builds the CLI
with Cargo.toml's `dist` profile from the locked dependencies; a final stage on Debian slim
with libpcap's runtime library, the binary, file capabilities for live capture, and a
non-root user; an exec-form ENTRYPOINT. Runs hadolint on it too when hadolint is installed.
Exit 1 naming each broken promise.
"""
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def instructions(text):
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, cur = [], ""
    for line in text.splitlines():
        s = line.strip()
        if not cur and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        cur += " " + s.rstrip("\\").strip() if cur else s.rstrip("\\").strip()
        if not s.endswith("\\"):
            word, _, rest = cur.partition(" ")
            out.append((word.upper(), rest.strip()))
            cur = ""
    if cur:
        out.append(("UNTERMINATED", cur))
    return out


def check(text, cargo_toml):
    errors = []
    ins = instructions(text)
    stages, current = [], None
    for word, rest in ins:
        if word == "FROM":
            current = {"from": rest, "ins": []}
            stages.append(current)
        elif current is None:
            if word != "ARG":
                errors.append(f"{word} before the first FROM")
        else:
            current["ins"].append((word, rest))
        if word == "UNTERMINATED":
            errors.append("a continued line never ends")
    if len(stages) < 2:
        return errors + [f"expected a build stage and a final stage, found {len(stages)} FROM"]
    build, final = stages[0], stages[-1]
    runs = lambda st: " && ".join(r for w, r in st["ins"] if w == "RUN")
    if " AS " not in build["from"].upper():
        errors.append("the build stage has no name (FROM … AS build)")
    if not re.search(r"cargo build\b[^&]*--profile dist\b[^&]*--locked|cargo build\b[^&]*--locked[^&]*--profile dist\b", runs(build)):
        errors.append("the build stage does not run `cargo build --profile dist --locked`")
    if "libpcap-dev" not in runs(build):
        errors.append("the build stage does not install libpcap-dev (capture links libpcap)")
    if not re.search(r"^\[profile\.dist\]", cargo_toml, re.M):
        errors.append("Cargo.toml has no [profile.dist]")
    image = final["from"].split()[0]
    if not re.match(r"(docker\.io/library/)?debian:[a-z0-9.]+-slim$", image):
        errors.append(f"the final stage is {image!r}, not Debian slim")
    final_runs = runs(final)
    if "libpcap0.8" not in final_runs:
        errors.append("the final stage does not install libpcap0.8")
    if not re.search(r"setcap\s+\S*cap_net_raw", final_runs):
        errors.append("the binary gets no cap_net_raw (capture without root)")
    copies = [r for w, r in final["ins"] if w == "COPY"]
    if not any("--from=" in c and "shadowtap" in c for c in copies):
        errors.append("the final stage does not copy the binary from the build stage")
    users = [r for w, r in final["ins"] if w == "USER"]
    if not users:
        errors.append("the final stage has no USER (it would run as root)")
    else:
        last = users[-1].split(":")[0]
        if last in ("root", "0"):
            errors.append(f"the final stage runs as {users[-1]!r}")
        words = [w for w, _ in final["ins"]]
        last_user = len(words) - 1 - words[::-1].index("USER")
        if "RUN" in words[last_user:]:
            errors.append("RUN after USER: package setup must come before dropping root")
    entry = [r for w, r in final["ins"] if w == "ENTRYPOINT"]
    if not entry or not entry[-1].startswith("["):
        errors.append("no exec-form ENTRYPOINT [\"/usr/local/bin/shadowtap\"]")
    elif "shadowtap" not in entry[-1]:
        errors.append(f"the ENTRYPOINT {entry[-1]} does not run shadowtap")
    return errors


def self_test():
    """The checker fails what it should (a checker that cannot fail is no check)."""
    good = open(os.path.join(ROOT, "Containerfile")).read()
    cargo = open(os.path.join(ROOT, "Cargo.toml")).read()
    assert check(good, cargo) == [], check(good, cargo)
    mutants = {
        "root": good.replace("USER 10001:10001", "USER root"),
        "no user": good.replace("USER 10001:10001\n", ""),
        "not slim": good.replace("debian:bookworm-slim", "debian:bookworm"),
        "no pcap": good.replace("libpcap0.8 ", ""),
        "no caps": re.sub(r"setcap \S+", "true", good),
        "shell entry": good.replace('ENTRYPOINT ["/usr/local/bin/shadowtap"]', "ENTRYPOINT shadowtap"),
        "debug build": good.replace("--profile dist", "--release"),
        "one stage": good.split("FROM docker.io/library/debian")[0],
        "run as user": good.replace("WORKDIR /var/lib/shadowtap", "RUN true"),
    }
    for name, text in mutants.items():
        assert check(text, cargo), f"the mutant {name!r} passed"
    assert check(good, "[profile.release]\n"), "a missing dist profile passed"


def main():
    self_test()
    text = open(os.path.join(ROOT, "Containerfile")).read()
    errors = check(text, open(os.path.join(ROOT, "Cargo.toml")).read())
    for e in errors:
        print(f"Containerfile: {e}", file=sys.stderr)
    if shutil.which("hadolint"):
        r = subprocess.run(["hadolint", "--ignore", "DL3008", os.path.join(ROOT, "Containerfile")])
        if r.returncode != 0:
            errors.append("hadolint")
    else:
        print("Containerfile: hadolint not installed; instructions checked by this script only", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
