#!/usr/bin/env bash
# The judge's calibration table (docs/analyze.md#calibration): false no-go rate on identical
# versions (A/A) per shape and detection rate per regression kind, over N seeds per row
# (default 200; CI runs the same harness with 200 for A/A rows and 40 for regressions).
#
#   bash bench/calibrate.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
export SHADOWTAP_CALIBRATION_SEEDS="${1:-200}"
# The whole workspace is selected (the filter keeps the calibration test) so the build shares the
# test command's dependency features; the analyzer alone would rebuild DataFusion.
cargo test --workspace --locked --test tests calibration -- --nocapture 2>&1 |
  grep -E '^\||: [0-9.]+ s$|^test result'
