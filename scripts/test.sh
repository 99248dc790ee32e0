#!/usr/bin/env bash
# Runs the whole test suite. This is the second command of README.md, and what .ci/run calls.
# Installs the system packages the tests use when they are missing (needs root or sudo):
# libpcap-dev (to link), and tcpdump, nginx-light and curl (the live loopback capture test).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_deps libpcap-dev tcpdump nginx-light curl ca-certificates
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
cargo test --workspace --locked "$@"
