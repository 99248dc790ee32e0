#!/usr/bin/env bash
# Capture throughput: shadowtap against tshark (a full HTTP decode) and tcpdump (the raw read
# floor), timed on the same file in the same run. Prints MB/s for each and the ratios.
#
#   bash bench/capture.sh [SIZE_MB]        (default 600; the file is cached in bench/out/)
#
# Targets (issue 2): shadowtap >= 12x tshark, and within 6x of tcpdump's read floor.
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-600}"
source bench/common.sh
bench_setup "$size" tshark tcpdump
bytes=$(stat -c %s "$pcap")
mb=$(python3 -c "print($bytes/1e6)")
echo "file: $pcap ($mb MB, $(cat "$pcap.exchanges") exchanges)"
cat "$pcap" > /dev/null  # warm the page cache for all three

t() {
  local s e
  s=$(date +%s.%N)
  if ! "$@" > /dev/null 2> "$out.err"; then echo "failed: $* ($(tail -3 "$out.err"))" >&2; exit 1; fi
  e=$(date +%s.%N)
  python3 -c "print($e-$s)"
}
out=$(mktemp -d)
trap 'rm -rf "$out" "$out.err"' EXIT
t_tcpdump=$(t tcpdump -r "$pcap" -w /dev/null)
t_shadow=$(t "$bin/shadowtap" capture --read "$pcap" --out "$out" --quiet)
t_tshark=$(t tshark -r "$pcap" -Y http -T fields -e http.request.method -e http.request.uri -e http.response.code)
written=$(python3 -c "import json,glob; print(json.load(open(glob.glob('$out/*.summary.json')[0]))['exchanges_written'])")
python3 - "$mb" "$t_tcpdump" "$t_shadow" "$t_tshark" "$written" <<'PY'
import sys
mb, td, ts, tt, written = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
rate = lambda t: mb / t
print(f"tcpdump -r -w /dev/null : {td:7.2f} s  {rate(td):8.1f} MB/s  (raw read floor)")
print(f"shadowtap capture       : {ts:7.2f} s  {rate(ts):8.1f} MB/s  ({written} exchanges written to Parquet)")
print(f"tshark -Y http -T fields: {tt:7.2f} s  {rate(tt):8.1f} MB/s")
print(f"shadowtap / tshark speed: {tt/ts:6.1f}x   (target >= 12x)")
print(f"tcpdump / shadowtap time: {ts/td:6.1f}x   (target <= 6x)")
PY
