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
