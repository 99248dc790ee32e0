#!/usr/bin/env bash
# Real traffic at volume: wrk drives nginx on loopback (keep-alive, 32 connections, a mix of
# gzip text, 200 KB downloads and 404s) while tcpdump captures `lo`; then shadowtap's exchanges
# are checked against nginx's access log and against tshark's decode of the same pcap.
#
#   sudo bash bench/loopback-nginx.sh [SECONDS]     (default 3; needs root for tcpdump)
#
# tcpdump may not keep up at full loopback speed: the check is that every exchange shadowtap
# writes is in nginx's log, and that shadowtap finds exactly the requests tshark finds in the
# pcap (what the capture holds), with responses whose request predates the capture counted
# as orphans, never paired.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3}"
source scripts/deps.sh
install_deps libpcap-dev tshark tcpdump nginx-light wrk
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
cargo build --release --locked -p shadowtap-cli >&2
bin="$CARGO_TARGET_DIR/release/shadowtap"
source bench/common.sh
bench_nginx_dir
mkdir -p "$d/www"
head -c 3000 /dev/urandom | base64 > "$d/www/a.txt"
head -c 200000 /dev/urandom > "$d/www/b.bin"
cat > "$d/site.conf" <<CONF
log_format st '\$request_method \$request_uri \$status';
access_log $d/access.log st;
keepalive_requests 100000;
gzip on; gzip_min_length 10; gzip_types text/plain;
server { listen 127.0.0.1:$port; root $d/www; }
CONF
cat > "$d/mix.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  if n % 10 == 0 then return wrk.format("GET", "/b.bin?i=" .. n) end
  if n % 7 == 0 then return wrk.format("GET", "/missing/" .. n) end
  return wrk.format("GET", "/a.txt?i=" .. n, {["Accept-Encoding"] = "gzip"})
end
LUA
bench_nginx_start
tcpdump -i lo --immediate-mode -U -B 262144 -s 0 -w "$d/lo.pcap" "tcp port $port" 2> "$d/tcpdump.err" &
tdpid=$!
sleep 1
wrk -t2 -c32 -d"${secs}s" -s "$d/mix.lua" "http://127.0.0.1:$port/" | grep -E "requests in|Requests/sec"
sleep 2
kill -INT "$tdpid"; wait "$tdpid" || true
grep -E "captured|dropped" "$d/tcpdump.err" || true
python3 -c "import pyarrow" 2>/dev/null || pip install -q pyarrow
"$bin" capture --read "$d/lo.pcap" --out "$d/out" --quiet --json > "$d/summary.json"
tshark_reqs=$(tshark -r "$d/lo.pcap" -Y http.request -T fields -e frame.number 2>/dev/null | wc -l)
"$bin" inspect "$d/out" --limit 0 | tail -3
python3 - "$d" "$tshark_reqs" <<'PY'
import collections, glob, json, sys
d, tshark_reqs = sys.argv[1], int(sys.argv[2])
log = collections.Counter(tuple(l.split()) for l in open(f"{d}/access.log"))
summary = json.load(open(f"{d}/summary.json"))
import pyarrow.parquet as pq
t = pq.read_table(glob.glob(f"{d}/out/*.parquet"), columns=["method", "uri", "status"]).to_pylist()
ours = collections.Counter((r["method"], r["uri"], str(r["status"])) for r in t)
not_in_log = sum((ours - log).values())
print(f"nginx logged {sum(log.values())}, the pcap holds {tshark_reqs} requests (tshark), shadowtap wrote {len(t)}; "
      f"{summary['reassembly']['orphan_responses']} orphan responses")
print(f"exchanges not in nginx's log: {not_in_log}")
ok = not_in_log == 0 and len(t) == tshark_reqs
print("OK" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
PY
