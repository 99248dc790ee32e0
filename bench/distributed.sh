#!/usr/bin/env bash
# The analyzer's SQL on the local engine and on a local Ballista cluster (`shadowtap cluster`)
# of 1 and 2 executors, over one synthetic `replays` table of 2N rows (default N = 5,000,000
# pairs: 10M rows), in one invocation; prints each time and the ratio to the local engine.
#
#   bash bench/distributed.sh [N]
#
# The statements: the error and latency checks of `shadowtap analyze` (per endpoint and
# target: what the verdict's "sql" fields show) and the pairing scan of `analyze --engine
# ballista` (the run's rows of the two targets, every column the pairing reads), aggregated so
# the result's transfer does not dominate. This machine has 2 cores: the executors share them
# with each other and with the local engine's comparison, so the figures measure the
# overhead of distribution, not its gain (see README, "Distributed SQL").
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-5000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
source scripts/deps.sh
install_deps libpcap-dev
cargo build --release --locked -p shadowtap-cli >&2
# With the binary's package selected too, so the example shares its dependency features (built
# alone, the analyzer would rebuild DataFusion with other features).
cargo build --release --locked -p shadowtap-cli -p shadowtap-analyzer --example gen_pairs >&2
bin="$CARGO_TARGET_DIR/release"
data="bench/out/pairs-$n"
[ -d "$data/replay" ] || "$bin/examples/gen_pairs" "$data" "$n" >&2
rows=$("$bin/shadowtap" query --data "$data/replay" --format csv "SELECT count(*) FROM replays" | tail -1)
echo "replays: $rows rows, $(du -sh "$data/replay" | cut -f1) of Parquet"

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

"$bin/shadowtap" cluster scheduler --bind 127.0.0.1:0 2> "$work/scheduler.log" &
pids+=($!)
for _ in $(seq 50); do grep -q 'listening on' "$work/scheduler.log" && break; sleep 0.1; done
scheduler=$(grep -o 'df://[0-9.:]*' "$work/scheduler.log" | head -1)
[ -n "$scheduler" ] || { cat "$work/scheduler.log" >&2; exit 1; }
start_executor() {
  mkdir -p "$work/e$1"
  "$bin/shadowtap" cluster executor --scheduler "${scheduler#df://}" --flight-port "$(free_port)" \
    --grpc-port "$(free_port)" --work-dir "$work/e$1" 2> "$work/executor-$1.log" &
  pids+=($!)
  sleep 2
}

endpoint="method || ' ' || path_template(path)"
counted="(error_kind IS NULL OR error_kind NOT IN ('dropped', 'unreplayable', 'hook'))"
run=$("$bin/shadowtap" query --data "$data/replay" --format csv "SELECT min(run_id) FROM replays" | tail -1)
declare -a names sqls
names+=("error checks"); sqls+=("SELECT target, $endpoint AS endpoint, count(*) AS requests, sum(CASE WHEN status IS NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors FROM replays WHERE $counted GROUP BY 1, 2 ORDER BY 1, 2")
names+=("latency checks"); sqls+=("SELECT target, $endpoint AS endpoint, count(*) AS n, approx_percentile_cont(total_us / 1000.0, 0.5) AS p50_ms, approx_percentile_cont(total_us / 1000.0, 0.99) AS p99_ms FROM replays WHERE $counted GROUP BY 1, 2 ORDER BY 1, 2")
names+=("pairing scan"); sqls+=("SELECT target, count(*) AS n, count(DISTINCT exchange_id) AS exchanges, sum(length(response_body)) AS body_bytes, max(total_us) AS max_us FROM replays WHERE run_id = '$run' AND target IN ('baseline', 'candidate') GROUP BY 1 ORDER BY 1")

# Best of 3 wall-clock seconds of one `shadowtap query` (the whole process).
timed() {
  python3 - "$@" <<'PY'
import subprocess, sys, time
ts = []
for _ in range(3):
    t = time.perf_counter()
    r = subprocess.run(sys.argv[1:], capture_output=True, text=True)
    ts.append(time.perf_counter() - t)
    if r.returncode != 0:
        sys.exit(f"failed: {r.stderr.strip()}")
print(f"{min(ts):.2f}")
PY
}
declare -A local_s one_s two_s
for i in "${!names[@]}"; do
  local_s[$i]=$(timed "$bin/shadowtap" query --data "$data/replay" --format csv "${sqls[$i]}")
  expected=$("$bin/shadowtap" query --data "$data/replay" --format csv "${sqls[$i]}" | md5sum)
  echo "${names[$i]}: local ${local_s[$i]} s"
  declare "expect_$i=$expected"
done
start_executor 1
for i in "${!names[@]}"; do
  one_s[$i]=$(timed "$bin/shadowtap" query --engine ballista --scheduler "$scheduler" --data "$data/replay" --format csv "${sqls[$i]}")
done
start_executor 2
for i in "${!names[@]}"; do
  two_s[$i]=$(timed "$bin/shadowtap" query --engine ballista --scheduler "$scheduler" --data "$data/replay" --format csv "${sqls[$i]}")
  got=$("$bin/shadowtap" query --engine ballista --scheduler "$scheduler" --data "$data/replay" --format csv "${sqls[$i]}" | md5sum)
  want="expect_$i"
  # approx_percentile_cont is a t-digest: merged from partials its value can differ a little.
  [ "$got" = "${!want}" ] || echo "note: ${names[$i]}: the cluster's result differs from the local engine's (approximate quantiles merge differently)"
done
echo
echo "| statement | local engine | Ballista, 1 executor | Ballista, 2 executors | 2 executors / local |"
echo "|---|---|---|---|---|"
for i in "${!names[@]}"; do
  ratio=$(python3 -c "print(f'{${two_s[$i]} / ${local_s[$i]}:.2f}x')")
  echo "| ${names[$i]} | ${local_s[$i]} s | ${one_s[$i]} s | ${two_s[$i]} s | $ratio |"
done
