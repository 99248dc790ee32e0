#!/usr/bin/env bash
# Runs the whole test suite. This is the second command of README.md, and what .ci/run calls.
# Installs the system packages the tests use when they are missing (needs root or sudo):
# libpcap-dev (to link), tcpdump, nginx-light and curl (the live loopback capture test), and
# iproute2 and nftables (the packet-loss test, in a network namespace of its own);
# creates a Python virtualenv for the notebook test (python3-venv on Debian).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_deps libpcap-dev tcpdump nginx-light curl ca-certificates iproute2 nftables
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
# The notebook test runs notebooks/canary.ipynb with nbclient in this virtualenv.
venv="${SHADOWTAP_VENV:-$HOME/.cache/shadowtap-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import nbclient, duckdb, pyarrow, matplotlib, ipykernel" 2>/dev/null; then
  echo "creating the notebook virtualenv in $venv" >&2
  command -v python3 >/dev/null || install_deps python3
  python3 -m venv "$venv" 2>/dev/null || { install_deps python3-venv; rm -rf "$venv"; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q -r notebooks/requirements.txt
fi
export SHADOWTAP_NOTEBOOK_PYTHON="$venv/bin/python"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one summary per test binary).
passed=$(grep -E '^test result:' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -E '^test result:' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo "total: $passed passed, $failed failed"
exit "$status"
