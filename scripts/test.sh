#!/usr/bin/env bash
# Runs the whole test suite. This is the second command of README.md, and what .ci/run calls.
# Installs the system packages the tests use when they are missing (needs root or sudo):
# libpcap-dev (to link), tcpdump, nginx-light, curl and openssl (the live loopback capture
# tests, one of them HTTPS with a throwaway certificate), and
# iproute2 and nftables (the packet-loss test, in a network namespace of its own), postgresql
# (the control plane's store tests start their own server), prometheus (for promtool, which
# checks the control plane's /metrics), prometheus-alertmanager (a real Alertmanager receives
# the control plane's alerts);
# creates a Python virtualenv for the notebook test (python3-venv on Debian).
#
# Before the tests: rustfmt and clippy (-D warnings, so the workspace lints such as
# await_holding_lock are enforced), a type check of the fuzz targets, and two architecture
# guards (no module cycle in any crate; the replayer does not link libpcap; the binary and the
# tests build the shared dependencies with the same features, so the demo's build serves both),
# and the Containerfile's instructions (scripts/containerfile-check.py).
# The tests build in the dev profile, as scripts/demo.sh does: the two commands share one
# build of the dependency stack. Tests that need root or the virtualenv are #[ignore]d for a
# plain `cargo test` (reported as ignored) and run here with --include-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_deps libpcap-dev tcpdump nginx-light curl openssl ca-certificates iproute2 nftables python3 postgresql prometheus prometheus-alertmanager
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
# The notebook test runs notebooks/canary.ipynb with nbclient in this virtualenv; the object
# storage tests start moto_server (an S3-compatible server, PyPI) from it.
venv="${SHADOWTAP_VENV:-$HOME/.cache/shadowtap-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import nbclient, duckdb, pyarrow, matplotlib, ipykernel, moto.server, prometheus_client, schemathesis" 2>/dev/null; then
  echo "creating the test virtualenv in $venv" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" 2>/dev/null || { install_deps python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q -r notebooks/requirements.txt -r scripts/requirements-test.txt
fi
export SHADOWTAP_NOTEBOOK_PYTHON="$venv/bin/python"
export SHADOWTAP_MOTO_SERVER="$venv/bin/moto_server"

step() { echo "== $*" >&2; }
step "rustfmt"
cargo fmt --all --check
step "clippy (workspace, all targets, -D warnings)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
step "fuzz targets compile (without libFuzzer)"
cargo clippy --manifest-path fuzz/Cargo.toml --no-default-features --bins --locked -- -D warnings
step "architecture: no module cycles; the replayer does not link libpcap; one build for both commands"
python3 scripts/module-cycles.py
python3 scripts/shared-build.py
python3 scripts/containerfile-check.py
if cargo tree -p shadowtap-replayer -e normal --locked | grep -q pcap; then
  echo "shadowtap-replayer depends on pcap (cargo tree -p shadowtap-replayer -e normal)" >&2
  exit 1
fi

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --workspace --locked --no-fail-fast "$@" -- --include-ignored 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one summary per test binary).
sum() { grep -E '^test result:' "$log" | grep -Eo "[0-9]+ $1" | awk '{s+=$1} END {print s+0}'; }
echo "total: $(sum passed) passed, $(sum failed) failed, $(sum ignored) ignored"
exit "$status"
