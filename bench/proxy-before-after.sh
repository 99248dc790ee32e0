#!/usr/bin/env bash
# Plain-proxy throughput of this revision against an older one (issue 31: the hardening must not
# cost more than 5%), in one invocation: the proxy library of each revision built alone in
# release (`proxy/examples/proxy_from_config.rs` as its main), one worker thread
# each, in front of the same nginx (`return 200`, 1 KiB), the same wrk (`-t1`, keep-alive),
# ROUNDS interleaved rounds (alternating which goes first); prints each round's req/s and
# proxy CPU time per request, and the median ratios now/before. Each
# revision's proxy is built in a package of its own (the library alone, in release).
#
# Then, as wall-clock figures on a shared machine swing by 10-20% between rounds, the count
# that does not: user-space instructions per request of each proxy under valgrind's callgrind
# (10 s of wrk -c8 each, startup included; INSTRUCTIONS=0 skips it).
#
#   [ROUNDS=5] bash bench/proxy-before-after.sh [REV] [SECONDS] [CONNECTIONS]
#   (defaults: 288b931, the last revision before the hardening; 10 s; 32)
# Traffic goes only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-288b931}"
secs="${2:-10}"
conns="${3:-32}"
rounds="${ROUNDS:-5}"
source scripts/deps.sh
source bench/common.sh
install_deps nginx-light wrk python3 valgrind
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
old_tree=$(mktemp -d)
git worktree add --detach "$old_tree" "$rev" >&2
cleanup_tree() { git worktree remove --force "$old_tree" >/dev/null 2>&1 || true; rm -rf "$old_tree.bin"; }
trap cleanup_tree EXIT
# A package of its own per revision, outside the workspace, depending on that revision's proxy
# library alone: an example inside the proxy crate would build its dev-dependencies (the
# analyzer, and the query engine with it).
build_for() { # build_for TREE OUT: builds proxy_from_config against TREE's proxy into OUT
  local pkg="$old_tree.bin/pkg-$(basename "$2")"
  mkdir -p "$pkg/src"
  cat > "$pkg/Cargo.toml" <<TOML
[package]
name = "proxy_from_config"
version = "0.0.0"
edition = "2021"
publish = false
[dependencies]
shadowtap-proxy = { path = "$1/proxy" }
tokio = { version = "1", features = ["rt-multi-thread", "signal", "macros"] }
# The workspace's release profile (the CLI's): line tables for profiles (perf report).
[profile.release]
debug = "line-tables-only"
[workspace]
TOML
  cp proxy/examples/proxy_from_config.rs "$pkg/src/main.rs"
  cp "$1/Cargo.lock" "$pkg/Cargo.lock"
  (cd "$pkg" && cargo build --release >&2)
  cp "$CARGO_TARGET_DIR/release/proxy_from_config" "$2"
}
mkdir -p "$old_tree.bin"
now_bin="$old_tree.bin/now"
before_bin="$old_tree.bin/before"
build_for "$PWD" "$now_bin"
build_for "$old_tree" "$before_bin"

bench_nginx_dir
body=$(head -c 1024 /dev/zero | tr '\0' 'x')
cat > "$d/site.conf" <<CONF
access_log off;
keepalive_requests 1000000;
server { listen 127.0.0.1:$port; location / { return 200 "$body"; } }
CONF
bench_nginx_start
trap 'for f in "$d"/*.pid; do kill "$(cat "$f")" 2>/dev/null || true; done; rm -rf "$d"; cleanup_tree' EXIT
start_proxy() { # start_proxy BIN NAME: prints its port (its pid goes to $d/NAME.pid)
  local p
  p=$(free_port)
  printf 'listen = "127.0.0.1:%s"\nproduction = ["http://127.0.0.1:%s"]\n' "$p" "$port" > "$d/$2.toml"
  "$1" "$d/$2.toml" > "$d/$2.out" 2>"$d/$2.err" &
  echo $! > "$d/$2.pid"
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
  echo "$p"
}
now_port=$(start_proxy "$now_bin" now)
before_port=$(start_proxy "$before_bin" before)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$(cat "$d/$1.pid")/stat"; }
# rate NAME PORT: "REQ/S CPU-US-PER-REQUEST" (the proxy process's user + system time).
rate() {
  local t0 t1 out
  t0=$(cpu_ticks "$1")
  out=$(wrk -t1 -c"$conns" -d"${secs}s" "http://127.0.0.1:$2/")
  t1=$(cpu_ticks "$1")
  echo "$out" | awk -v t="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" \
    '/requests in/ {n = $1} /Requests\/sec/ {r = $2} END {printf "%s %.1f\n", r, t / hz * 1e6 / n}'
}
ratios=()
cpus=()
for r in $(seq 1 "$rounds"); do
  # Alternate which goes first, so neither always runs on the warmer (or noisier) half.
  if [ $((r % 2)) -eq 1 ]; then
    b=$(rate before "$before_port"); n=$(rate now "$now_port")
  else
    n=$(rate now "$now_port"); b=$(rate before "$before_port")
  fi
  read -r brps bcpu <<< "$b"
  read -r nrps ncpu <<< "$n"
  ratio=$(python3 -c "print(f'{$nrps / $brps:.3f}')")
  cpu=$(python3 -c "print(f'{$ncpu / $bcpu:.3f}')")
  ratios+=("$ratio")
  cpus+=("$cpu")
  printf 'round %d: before (%s) %s req/s %s us CPU/req, now %s req/s %s us CPU/req: %sx throughput, %sx CPU\n' \
    "$r" "$rev" "$brps" "$bcpu" "$nrps" "$ncpu" "$ratio" "$cpu"
done
python3 -c "import statistics,sys; print(f'median now/before CPU per request: {statistics.median(map(float, sys.argv[1:])):.3f}x')" "${cpus[@]}"
python3 -c "import statistics,sys; print(f'median now/before: {statistics.median(map(float, sys.argv[1:])):.3f}x over $rounds rounds')" "${ratios[@]}"

if [ "${INSTRUCTIONS:-1}" = 1 ]; then
  declare -A ir
  for name in before now; do
    p=$(free_port)
    printf 'listen = "127.0.0.1:%s"\nproduction = ["http://127.0.0.1:%s"]\n' "$p" "$port" > "$d/cg-$name.toml"
    bin_var="${name}_bin"
    valgrind --tool=callgrind --callgrind-out-file="$d/cg-$name.out" "${!bin_var}" "$d/cg-$name.toml" \
      > "$d/cg-$name.log" 2>&1 &
    echo $! > "$d/cg-$name.pid"
    for _ in $(seq 1 120); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.5; done
    n=$(wrk -t1 -c8 -d10s "http://127.0.0.1:$p/" | awk '/requests in/ {print $1}')
    kill -INT "$(cat "$d/cg-$name.pid")"
    while kill -0 "$(cat "$d/cg-$name.pid")" 2>/dev/null; do sleep 0.2; done
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$d/cg-$name.out")
    ir[$name]=$((total / n))
    echo "callgrind: $name $n requests, $total instructions, ${ir[$name]} per request"
  done
  python3 -c "print(f'instructions per request now/before: {${ir[now]} / ${ir[before]}:.3f}x')"
fi
