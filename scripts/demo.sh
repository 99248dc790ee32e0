#!/usr/bin/env bash
# The main job end to end on bundled data: the first command of README.md.
# Installs what is missing, builds shadowtap, then runs the whole loop on loopback:
#   1. capture: decodes the bundled demo capture (fixtures/demo/api.pcap) into demo-out/capture
#   2. starts two demo services: a baseline and a candidate with a visible regression
#      (one JSON field changed, one endpoint 30 ms slower)
#   3. replay: sends the recording at both into demo-out/replay
#   4. analyze: diffs, noise, metrics, verdict into demo-out/verdict
# and prints the verdict with the paths of the reports. Also decodes the fifteen public
# captures in fixtures/pcaps into demo-out/public to show what capture makes of real traffic.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
install_deps libpcap-dev ca-certificates
if ! command -v cargo >/dev/null; then
  echo "cargo is needed: install Rust from your distribution or rustup" >&2
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
# The dev profile, as scripts/test.sh builds: the two README commands share one build.
cargo build --locked -p shadowtap-cli
bin="$CARGO_TARGET_DIR/debug/shadowtap"
rm -rf demo-out
mkdir -p demo-out

echo "== 1. capture: the bundled public captures, then the demo API capture"
"$bin" capture --quiet --read fixtures/pcaps/*.pcap fixtures/pcaps/*.pcapng --out demo-out/public > /dev/null
"$bin" inspect demo-out/public --limit 5
"$bin" capture --read fixtures/demo/api.pcap --out demo-out/capture 2>&1 | grep -E "^(exchanges|redaction)"

echo "== 2. two demo services on loopback: baseline, and a candidate with a regression"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
start() {
  local out="$1"; shift
  "$bin" demo-service "$@" > "$out" 2>/dev/null &
  pids+=($!)
}
address() {
  for _ in $(seq 100); do grep -q listening "$1" 2>/dev/null && break; sleep 0.1; done
  sed 's/listening on //' "$1"
}
start demo-out/baseline.addr --label v1 --noise --base-ms 5
start demo-out/candidate.addr --label v1 --noise --base-ms 5 --change-field tier=platinum --slow-ms 30 --slow-path /api/orders
base=$(address demo-out/baseline.addr)
cand=$(address demo-out/candidate.addr)
echo "baseline  $base"
echo "candidate $cand  (changes /tier, 30 ms slower on /api/orders)"

echo "== 3. replay the recording at both (idempotent methods only; the POSTs are refused)"
"$bin" replay --from demo-out/capture --target "baseline=$base" --target "candidate=$cand" \
  --out demo-out/replay --speed 4x --loop 2 --progress-interval 2s

echo "== 4. analyze"
set +e
"$bin" analyze --capture demo-out/capture --replay demo-out/replay --out demo-out/verdict
code=$?
set -e
echo
echo "exit status $code (0 go, 1 no-go, 2 marginal, 3 inconclusive). Reports: demo-out/verdict/report.md,"
echo "report.html, junit.xml, verdict.json. Query everything with SQL, for example:"
echo "  $bin query --data demo-out/capture --data demo-out/replay --data demo-out/verdict \\"
echo "    \"SELECT target, path_template(path) AS endpoint, count(*), approx_percentile_cont(total_us / 1000.0, 0.5) AS p50_ms FROM replays GROUP BY 1, 2 ORDER BY 2, 1\""
# The demo is meant to find the regression: a no-go is its success.
[ "$code" -eq 1 ]
