#!/usr/bin/env bash
# The main job end to end on bundled data: the first command of README.md.
# Installs what is missing, builds shadowtap, captures the bundled public pcaps into
# ./demo-out/ and prints what they hold.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_deps libpcap-dev ca-certificates
if ! command -v cargo >/dev/null; then
  echo "cargo is needed: install Rust from your distribution or rustup" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
cargo build --release --locked -p shadowtap-cli
bin="$CARGO_TARGET_DIR/release/shadowtap"
rm -rf demo-out
"$bin" capture --read fixtures/pcaps/*.pcap fixtures/pcaps/*.pcapng --out demo-out
echo
echo "What the capture holds (the Parquet files in demo-out/ open in DuckDB, pandas or Spark):"
"$bin" inspect demo-out --limit 15
