#!/usr/bin/env bash
# HTTP request smuggling probes against `shadowtap proxy`, with nginx's own `proxy_pass` as the
# reference in the same invocation, both in front of the same nginx backend on loopback: runs
# defparam's smuggler (https://github.com/defparam/smuggler, its exhaustive configuration of
# TE/CL mutations) at each and prints how each mutation ended: OK (refused or framed the same
# by both hops), DISCONNECTED, SOCKET ERROR, TIMEOUT (smuggler's "TIMEOUT ON BOTH": no desync
# shown), or a potential CL.TE / TE.CL desync (CRITICAL).
#
# smuggler is on no package registry: give a checkout of it in SMUGGLER_DIR.
#   SMUGGLER_DIR=/path/to/smuggler bash bench/smuggler.sh
# The proxy is the dev build the tests use (this measures behaviour, not speed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${SMUGGLER_DIR:-}" ] || [ ! -f "$SMUGGLER_DIR/smuggler.py" ]; then
  echo "SMUGGLER_DIR must name a checkout of https://github.com/defparam/smuggler" >&2
  exit 2
fi
source bench/common.sh
bench_dev_setup nginx-light python3

bench_nginx_dir
ref=$(free_port)
cat > "$d/site.conf" <<CONF
access_log off;
server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
server {
  listen 127.0.0.1:$ref;
  location / { proxy_pass http://127.0.0.1:$port; proxy_http_version 1.1; proxy_set_header Connection ""; }
}
CONF
bench_nginx_start
ours=$(free_port)
"$bin" proxy --listen "127.0.0.1:$ours" --production "http://127.0.0.1:$port" >"$d/proxy.log" 2>&1 &
proxy_pid=$!
trap 'kill $proxy_pid 2>/dev/null; [ -f "$d/nginx.pid" ] && kill "$(cat "$d/nginx.pid")" 2>/dev/null; rm -rf "$d"' EXIT
for _ in $(seq 1 50); do
  curl -s -o /dev/null "http://127.0.0.1:$ours/" && break
  sleep 0.2
done

run() { # run NAME PORT
  local log="$d/$1.log"
  (cd "$SMUGGLER_DIR" && timeout 3600 python3 smuggler.py -u "http://127.0.0.1:$2/" \
    -c exhaustive.py --no-color -t 2 -l "$log" >/dev/null 2>&1) || true
  local total ok crit disc sock tout
  total=$(grep -cE '^\[[^+]' "$log" || true)
  ok=$(grep -c ': OK ' "$log" || true)
  crit=$(grep -c 'Potential' "$log" || true)
  disc=$(grep -c 'DISCONNECTED' "$log" || true)
  sock=$(grep -c 'SOCKET ERROR' "$log" || true)
  tout=$(grep -c 'TIMEOUT ON BOTH' "$log" || true)
  printf '%-26s %5s mutations: %5s OK, %3s potential desync, %3s disconnected, %3s socket error, %3s timeout\n' \
    "$1" "$total" "$ok" "$crit" "$disc" "$sock" "$tout"
}
run "shadowtap proxy" "$ours"
run "nginx proxy_pass" "$ref"
