# Sourced by the bench scripts: installs the Debian packages given, builds the release binary
# and the synthetic pcap generator, and makes (once) a mixed-traffic pcap of SIZE_MB.
# Sets: bin (the release directory), pcap (its path; "$pcap.exchanges" holds its exchange count).
#   bench_setup SIZE_MB PACKAGE...
bench_setup() {
  local size="$1"; shift
  source scripts/deps.sh
  install_deps libpcap-dev "$@"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
  cargo build --release --locked -p shadowtap-cli >&2
  cargo build --release --locked -p shadowtap-capture --example synth_pcap >&2
  bin="$CARGO_TARGET_DIR/release"
  mkdir -p bench/out
  pcap="bench/out/mixed-${size}MB.pcap"
  if [ ! -s "$pcap" ] || [ ! -s "$pcap.exchanges" ]; then
    echo "generating $pcap ..." >&2
    "$bin/examples/synth_pcap" "$pcap" "$size" > "$pcap.exchanges"
  fi
}

# A one-worker nginx on loopback, in two steps: bench_nginx_dir makes a temporary directory
# and picks a free port (sets d and port; nginx is stopped and the directory removed on exit);
# the caller writes its `http { }` directives to "$d/site.conf"; bench_nginx_start starts it
# (given another directory with a site.conf, a second instance there).
bench_nginx_dir() {
  d=$(mktemp -d)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  trap '[ -f "$d/nginx.pid" ] && kill "$(cat "$d/nginx.pid")" 2>/dev/null; rm -rf "$d"' EXIT
}
bench_nginx_start() { # bench_nginx_start [DIR]: the nginx of DIR/site.conf (default "$d")
  local dir="${1:-$d}"
  cat > "$dir/nginx.conf" <<CONF
worker_processes 1;
user root;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 1024; }
http {
  client_body_temp_path $dir/b; proxy_temp_path $dir/p; fastcgi_temp_path $dir/f; uwsgi_temp_path $dir/u; scgi_temp_path $dir/s;
  include $dir/site.conf;
}
CONF
  nginx -p "$dir" -c "$dir/nginx.conf"
  sleep 0.5
}

# Starts nginx answering `200 ok` to everything and records the bench pcap in its directory.
# Sets: d, port; "$d/rec" holds the recording.
#   bench_replay_target
bench_replay_target() {
  bench_nginx_dir
  cat > "$d/site.conf" <<CONF
access_log off;
keepalive_requests 1000000;
client_max_body_size 64m;
server { listen 127.0.0.1:$port; location / { return 200 "ok\n"; } }
CONF
  bench_nginx_start
  "$bin/shadowtap" capture --read "$pcap" --out "$d/rec" --quiet >/dev/null 2>&1
}

# For the behaviour benches (smuggling, memory), which measure what the tests' build does, not
# its speed: installs the Debian packages given and builds the dev binary.
# Sets: bin (the dev binary); defines free_port.
#   bench_dev_setup PACKAGE...
bench_dev_setup() {
  source scripts/deps.sh
  install_deps "$@"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shadowtap-target}"
  cargo build --locked -p shadowtap-cli >&2
  bin="$CARGO_TARGET_DIR/debug/shadowtap"
}

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
