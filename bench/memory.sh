#!/usr/bin/env bash
# The proxy's memory under the worst mirroring load (issue 31): 16 MiB POSTs sent as fast as
# four clients can for DURATION seconds (default 60), every one mirrored to a shadow that accepts
# connections and never reads a byte (a black hole), production an nginx that discards bodies.
# Prints the proxy's resident memory idle and at its peak (VmHWM) against idle + the byte
# budget (`limits.mirror_memory`, MEMORY_MB, default 64) + a constant: without the budget the
# shadow's queue and in-flight copies would hold 64 × 16 MiB.
#   bash bench/memory.sh            DURATION=60 MEMORY_MB=64
# The proxy is the dev build the tests use (this measures memory, not speed).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh
bench_dev_setup nginx-light python3
duration="${DURATION:-60}"
budget_mb="${MEMORY_MB:-64}"

bench_nginx_dir
cat > "$d/site.conf" <<CONF
access_log off;
client_max_body_size 0;
server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
CONF
bench_nginx_start
hole=$(free_port)
python3 - "$hole" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    c, _ = s.accept()
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    held.append(c)  # accepted, never read
PY
hole_pid=$!
ours=$(free_port)
cat > "$d/proxy.toml" <<CONF
listen = "127.0.0.1:$ours"
production = ["http://127.0.0.1:$port"]
[[shadows]]
name = "hole"
urls = ["http://127.0.0.1:$hole"]
[mirror]
percent = ${MIRROR_PERCENT:-100}.0
allow_methods = ["POST"]
max_body = 20000000
[limits]
mirror_memory = $((budget_mb * 1024 * 1024))
max_record_body = 20000000
shadow_timeout_s = ${SHADOW_TIMEOUT_S:-10}
CONF
"$bin" proxy --config "$d/proxy.toml" >"$d/proxy.log" 2>&1 &
proxy_pid=$!
trap 'kill $proxy_pid $hole_pid 2>/dev/null; [ -f "$d/nginx.pid" ] && kill "$(cat "$d/nginx.pid")" 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$ours/" && break
  sleep 0.2
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$proxy_pid/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$proxy_pid/status"; }
idle=$(rss)
# RSS every 10 s, to tell a plateau from growth.
( while kill -0 "$proxy_pid" 2>/dev/null; do sleep 10; printf 'rss at +%ss: %d MiB\n' "$SECONDS" $(( $(rss) / 1024 )); done ) 2>/dev/null &
sampler=$!
SECONDS=0
python3 - "$ours" "$duration" <<'PY'
import http.client, sys, threading, time
port, duration = int(sys.argv[1]), float(sys.argv[2])
body = b"x" * (16 * 1024 * 1024)
done, failed = [0], [0]
end = time.time() + duration
def client():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.time() < end:
        try:
            c.request("POST", "/upload", body=body)
            r = c.getresponse(); r.read()
            done[0] += r.status == 200
            failed[0] += r.status != 200
        except Exception:
            failed[0] += 1
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
threads = [threading.Thread(target=client) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(f"{done[0]} POSTs of 16 MiB answered 200 by production, {failed[0]} not, in {duration:.0f} s "
      f"({done[0] * 16 / duration:.0f} MiB/s)")
PY
peak=$(hwm)
kill "$sampler" 2>/dev/null || true
stats=$(curl -s "http://127.0.0.1:$ours/" -o /dev/null -w '' || true)
kill -TERM "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true
grep -E "dropped|memory" "$d/proxy.log" | tail -3 || true
printf 'proxy RSS: idle %d MiB, peak %d MiB; budget %d MiB; peak - idle - budget = %d MiB\n' \
  $((idle / 1024)) $((peak / 1024)) "$budget_mb" $(((peak - idle) / 1024 - budget_mb))
