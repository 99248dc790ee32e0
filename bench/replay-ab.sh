#!/usr/bin/env bash
# Back-to-back A/B of shadowtap builds on replay throughput: rounds of `wrk` then each binary's
# `shadowtap replay --rate max --loop`, alternating, against one local nginx. Prints requests/s
# and CPU per request (user + system, µs) for each. On a shared machine single runs swing by
# ±25%; compare binaries within a round, and over several rounds.
#
#   bash bench/replay-ab.sh SECONDS ROUNDS BINARY...   (e.g. a build of main and one of a branch)
#
# Traffic goes only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:?seconds}"; rounds="${2:?rounds}"; shift 2
[ "$#" -gt 0 ] || { echo "give at least one shadowtap binary" >&2; exit 2; }
source bench/common.sh
bench_setup 100 nginx-light wrk time
bench_replay_target
echo "recording: $(cat "$pcap.exchanges") exchanges; nginx on 127.0.0.1:$port; $secs s runs; concurrency 32"
for r in $(seq "$rounds"); do
  line="round $r: wrk $(wrk -t2 -c32 -d"${secs}s" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {printf "%d", $2}')"
  for b in "$@"; do
    rm -rf "$d/out"
    /usr/bin/time -o "$d/time" -f "%U %S" "$b" replay --from "$d/rec" --target nginx="http://127.0.0.1:$port" \
      --out "$d/out" --rate max --concurrency 32 --loop --duration "${secs}s" \
      --allow-methods POST,PUT,DELETE,PATCH --quiet --json > "$d/summary.json" 2>/dev/null
    line="$line | $b $(python3 - "$d" <<'PY'
import json, sys
d = sys.argv[1]
s = json.load(open(f"{d}/summary.json"))
u, k = map(float, open(f"{d}/time").read().split()[-2:])
n = s["targets"]["nginx"]["sent"]
print(f"{n / s['elapsed_s']:,.0f} req/s {1e6 * (u + k) / n:.1f} us/req")
PY
)"
  done
  echo "$line"
done
