#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 600: the README's "10 minutes each without a
# crash") and prints, per target, the runs executed and whether it crashed.
# Needs the nightly toolchain (cargo-fuzz builds with sanitizers) and installs cargo-fuzz when
# it is missing. Crashes are kept by libFuzzer in fuzz/artifacts/<target>/.
#   bash bench/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-600}"
shift || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}-fuzz"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install --locked cargo-fuzz >&2
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(packets_to_exchanges http1_parser http2_frames redactor json_diff policy)
status=0
for t in "${targets[@]}"; do
  log=$(mktemp)
  set +e
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -rss_limit_mb=4096 > "$log" 2>&1
  rc=$?
  set -e
  runs=$( (grep -Eo '#[0-9]+' "$log" || true) | tail -1 | tr -d '#')
  if [ "$rc" -eq 0 ]; then
    echo "$t: ${secs}s, ${runs:-0} runs, no crash"
  else
    echo "$t: CRASH or build failure after ${runs:-0} runs (exit $rc); see fuzz/artifacts/$t/ and:"
    tail -20 "$log"
    status=1
  fi
  rm -f "$log"
done
exit "$status"
