#!/usr/bin/env bash
# Replay throughput: `shadowtap replay --rate max` against a local nginx, and wrk against the
# same nginx with the same concurrency, in one invocation. Prints requests/s for both, the
# ratio, and shadowtap's memory sampled every second.
#
#   bash bench/replay.sh [SECONDS] [CONCURRENCY] [SIZE_MB]   (defaults: 20 s, 32, 100 MB recording)
#
# Target (issue 4): at least 0.8x wrk's rate while recording every response; memory flat
# whatever the recording's size (the recording is streamed and replayed in a loop).
# Traffic goes only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
conc="${2:-32}"
size="${3:-100}"
source bench/common.sh
bench_setup "$size" nginx-light wrk
bench_replay_target
rows=$(cat "$pcap.exchanges")
echo "recording: $rows exchanges from $pcap; nginx on 127.0.0.1:$port; $secs s each; concurrency $conc"

wrk -t2 -c"$conc" -d"${secs}s" "http://127.0.0.1:$port/" > "$d/wrk.out"
wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$d/wrk.out")

"$bin/shadowtap" replay --from "$d/rec" --target nginx="http://127.0.0.1:$port" --out "$d/out" \
  --rate max --concurrency "$conc" --loop --duration "${secs}s" --allow-methods POST,PUT,DELETE,PATCH \
  --quiet --json > "$d/summary.json" &
sp=$!
( while kill -0 $sp 2>/dev/null; do ps -o rss= -p $sp >> "$d/rss" || true; sleep 1; done ) &
wait $sp
python3 - "$d" "$wrk_rps" <<'PY'
import json, sys
d, wrk_rps = sys.argv[1], float(sys.argv[2])
s = json.load(open(f"{d}/summary.json"))
t = s["targets"]["nginx"]
rps = t["sent"] / s["elapsed_s"]
rss = [int(x) for x in open(f"{d}/rss").read().split()] or [0]
print(f"wrk      : {wrk_rps:,.0f} requests/s (one URL, no recording)")
print(f"shadowtap: {rps:,.0f} requests/s ({t['sent']:,} sent in {s['elapsed_s']:.1f} s over {s['passes']} pass(es); "
      f"{s['rows_written']:,} rows written; responses {t['responses']}; errors {t['errors'] or 'none'})")
print(f"ratio    : {rps / wrk_rps:.2f}x wrk (target >= 0.8x)")
step = max(1, len(rss) // 12)
print("shadowtap RSS MB over time:", " ".join(str(r // 1024) for r in rss[::step]))
half = rss[len(rss) // 2:]
print(f"RSS second half: min {min(half)//1024} MB, max {max(half)//1024} MB (flat if close)")
PY
