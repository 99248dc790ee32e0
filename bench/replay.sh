#!/usr/bin/env bash
# Replay throughput: `shadowtap replay --rate max` against a local nginx, and wrk against the
# same nginx with the same concurrency, in one invocation. Prints requests/s for both, the
# ratio, the CPU time each client and nginx spent per request, and shadowtap's memory sampled
# every second. With ROUNDS > 1 the two alternate ROUNDS times and the median ratio is printed
# too: on a shared machine either tool's rate swings by a fifth between runs minutes apart.
#
#   bash bench/replay.sh [SECONDS] [CONCURRENCY] [SIZE_MB] [ROUNDS]
#   (defaults: 20 s, 32, 100 MB recording, 1 round)
#
# Target (issue 4): at least 0.8x wrk's rate while recording every response; memory flat
# whatever the recording's size (the recording is streamed and replayed in a loop).
# Traffic goes only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
conc="${2:-32}"
size="${3:-100}"
rounds="${4:-1}"
source bench/common.sh
bench_setup "$size" nginx-light wrk
bench_replay_target
rows=$(cat "$pcap.exchanges")
echo "recording: $rows exchanges from $pcap; nginx on 127.0.0.1:$port; $secs s each; concurrency $conc; $rounds round(s)"

# CPU time: the client's from its rusage (user and system), nginx's worker from /proc, so each
# run also says where the two cores went per request.
timed() { # timed OUT CPUFILE CMD...: runs CMD with stdout to OUT, writes "user sys" seconds
  python3 -c 'import resource, subprocess, sys
r = subprocess.call(sys.argv[3:], stdout=open(sys.argv[1], "w"))
u = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[2], "w").write(f"{u.ru_utime} {u.ru_stime}")
sys.exit(r)' "$@"
}
worker=$(pgrep -P "$(cat "$d/nginx.pid")" | head -1)
nginx_ticks() { awk '{print $14 + $15}' "/proc/$worker/stat"; }

for r in $(seq "$rounds"); do
  [ "$rounds" -gt 1 ] && echo "--- round $r of $rounds"
  n0=$(nginx_ticks)
  timed "$d/wrk.out" "$d/wrk.cpu" wrk -t2 -c"$conc" -d"${secs}s" "http://127.0.0.1:$port/"
  n1=$(nginx_ticks)
  wrk_rps=$(awk '/Requests\/sec/ {print $2}' "$d/wrk.out")
  wrk_n=$(awk '/requests in/ {print $1}' "$d/wrk.out")

  timed "$d/summary.json" "$d/shadowtap.cpu" "$bin/shadowtap" replay --from "$d/rec" \
    --target nginx="http://127.0.0.1:$port" --out "$d/out.$r" --rate max --concurrency "$conc" \
    --loop --duration "${secs}s" --allow-methods POST,PUT,DELETE,PATCH --quiet --json &
  sp=$!
  ( while kill -0 $sp 2>/dev/null; do
      c=$(pgrep -f "^$bin/shadowtap replay" | head -1 || true); [ -n "$c" ] && { ps -o rss= -p "$c" >> "$d/rss.$r" || true; }
      sleep 1
    done ) &
  wait $sp
  n2=$(nginx_ticks)
  python3 - "$d" "$wrk_rps" "$wrk_n" "$((n1 - n0))" "$((n2 - n1))" "$(getconf CLK_TCK)" "$r" <<'PY'
import json, sys
d, wrk_rps, wrk_n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
nginx_wrk, nginx_st, hz, r = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
s = json.load(open(f"{d}/summary.json"))
t = s["targets"]["nginx"]
rps = t["sent"] / s["elapsed_s"]
us = lambda seconds, n: 1e6 * seconds / max(n, 1)
wu, ws = map(float, open(f"{d}/wrk.cpu").read().split())
su, ss = map(float, open(f"{d}/shadowtap.cpu").read().split())
rss = [int(x) for x in open(f"{d}/rss.{r}").read().split()] or [0]
print(f"wrk      : {wrk_rps:,.0f} requests/s (one URL, no recording)")
print(f"shadowtap: {rps:,.0f} requests/s ({t['sent']:,} sent in {s['elapsed_s']:.1f} s over {s['passes']} pass(es); "
      f"{s['rows_written']:,} rows written; responses {t['responses']}; errors {t['errors'] or 'none'})")
print(f"ratio    : {rps / wrk_rps:.2f}x wrk (target >= 0.8x)")
open(f"{d}/ratios", "a").write(f"{rps / wrk_rps}\n")
print(f"CPU per request, µs (user + system): wrk {us(wu, wrk_n):.1f} + {us(ws, wrk_n):.1f}, "
      f"nginx under wrk {us(nginx_wrk / hz, wrk_n):.1f}; shadowtap {us(su, t['sent']):.1f} + "
      f"{us(ss, t['sent']):.1f}, nginx under shadowtap {us(nginx_st / hz, t['sent']):.1f}")
step = max(1, len(rss) // 12)
print("shadowtap RSS MB over time:", " ".join(str(r // 1024) for r in rss[::step]))
half = rss[len(rss) // 2:]
print(f"RSS second half: min {min(half)//1024} MB, max {max(half)//1024} MB (flat if close)")
PY
done
if [ "$rounds" -gt 1 ]; then
  python3 - "$d/ratios" <<'PY'
import statistics, sys
ratios = [float(x) for x in open(sys.argv[1]).read().split()]
print(f"median ratio over {len(ratios)} rounds: {statistics.median(ratios):.2f}x wrk "
      f"(each: {', '.join(f'{x:.2f}' for x in ratios)}; target >= 0.8x)")
PY
fi
