//! Real packet loss: nginx and curl talk over `lo` inside a network namespace the test creates,
//! where nftables drops a share of the connection's packets at random, both before the capture
//! point (`output`: tcpdump never sees them, the kernel retransmits) and after it (`input`:
//! tcpdump sees the packet and its retransmission). The kernel's own TCP makes the
//! retransmissions, out-of-order arrivals and re-segmented data that a lossy network gives; the
//! capture must turn them into exactly the requests in nginx's access log, each paired with
//! its own response.
//!
//! Needs root, `ip` (iproute2), nftables, nginx, tcpdump and curl, all installed by
//! `scripts/test.sh`. A plain `cargo test` ignores it (reported as such).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{capture, nginx_conf, spawn_nginx, spawn_tcpdump};

const PORT: u16 = 18123;
/// Percent of the connection's packets dropped at each of the two hooks.
const DROP_PERCENT: u32 = 3;
const CLIENTS: usize = 4;
const REQUESTS_PER_CLIENT: usize = 30;

/// A network namespace, deleted (with every process in it) on drop.
struct Namespace(String);

impl Namespace {
    fn create() -> Namespace {
        let name = format!("shadowtap-loss-{}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let ns = Namespace(name);
        ns.run(&["ip", "link", "set", "lo", "up"]);
        // Ethernet-sized segments, so large bodies span many packets.
        ns.run(&["ip", "link", "set", "lo", "mtu", "1500"]);
        ns
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(args);
        c
    }

    fn run(&self, args: &[&str]) {
        let st = self.command(args).status().expect("run ip netns exec");
        assert!(st.success(), "{args:?} in namespace {}", self.0);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-TERM", pid]).status();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("run {cmd} (apt-get install iproute2 nftables): {e}"));
    assert!(st.success(), "{cmd} {args:?}");
}

/// Deterministic file contents, different per file, so a body shows which response it is.
fn content(k: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u64 * 2_654_435_761 + k as u64 * 7_919) >> 13) as u8)
        .collect()
}

fn write_site(dir: &Path) -> Vec<Vec<u8>> {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let files: Vec<Vec<u8>> = [3_000, 20_000, 150_000, 400_000]
        .iter()
        .enumerate()
        .map(|(k, &len)| content(k, len))
        .collect();
    for (k, f) in files.iter().enumerate() {
        std::fs::write(www.join(format!("f{k}.bin")), f).unwrap();
    }
    std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, PORT)).unwrap();
    files
}

fn start_tcpdump(ns: &Namespace, out: &Path) -> Child {
    let out = out.display().to_string();
    let port = format!("tcp port {PORT}");
    spawn_tcpdump(ns.command(&[
        "tcpdump", "-i", "lo", "-s", "0", "-B", "262144", "-U", "-w", &out, &port,
    ]))
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn random_packet_loss_loses_and_mis_pairs_no_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let files = write_site(dir.path());
    let upload = content(99, 60_000);
    std::fs::write(dir.path().join("upload"), &upload).unwrap();
    let ns = Namespace::create();

    let d = dir.path().display().to_string();
    let mut nginx = spawn_nginx(ns.command(&["nginx"]), dir.path());
    let deadline = Instant::now() + Duration::from_secs(10);
    let probe = format!("http://127.0.0.1:{PORT}/ready");
    while !ns
        .command(&["curl", "-s", "-o", "/dev/null", "--max-time", "2", &probe])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "nginx did not start in the namespace"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Random drops on both sides of the capture point, for both directions of the connection.
    let rules = format!(
        "table inet loss {{\n\
         chain out {{ type filter hook output priority 0; tcp dport {PORT} numgen random mod 100 < {DROP_PERCENT} drop; tcp sport {PORT} numgen random mod 100 < {DROP_PERCENT} drop; }}\n\
         chain in {{ type filter hook input priority 0; tcp dport {PORT} numgen random mod 100 < {DROP_PERCENT} drop; tcp sport {PORT} numgen random mod 100 < {DROP_PERCENT} drop; }}\n\
         }}\n"
    );
    let mut nft = ns
        .command(&["nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run nft (apt-get install nftables)");
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft rules");

    let pcap = dir.path().join("loss.pcap");
    let mut tcpdump = start_tcpdump(&ns, &pcap);

    // Each client: one curl, one keep-alive connection, a mix of downloads, 404s and uploads.
    let upload_arg = format!("@{d}/upload");
    let clients: Vec<Child> = (0..CLIENTS)
        .map(|c| {
            let mut args: Vec<String> = vec!["-s".into(), "--max-time".into(), "120".into()];
            for i in 0..REQUESTS_PER_CLIENT {
                let url = |path: &str| format!("http://127.0.0.1:{PORT}/{path}?c={c}&i={i}");
                if i > 0 {
                    args.push("--next".into());
                }
                args.extend(["-s".into(), "-o".into(), "/dev/null".into()]);
                match (c + i) % 6 {
                    k @ 0..=3 => args.push(url(&format!("f{k}.bin"))),
                    4 => args.push(url("missing")),
                    _ => args.extend(["--data-binary".into(), upload_arg.clone(), url("post")]),
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ns.command(&[&["curl"], args.as_slice()].concat())
                .stdout(Stdio::null())
                .spawn()
                .expect("run curl")
        })
        .collect();
    for mut c in clients {
        assert!(c.wait().unwrap().success(), "a curl client failed");
    }
    // Let the last packets reach tcpdump's buffer, then stop it cleanly.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-INT", &tcpdump.id().to_string()])
        .status();
    let _ = tcpdump.wait();
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();

    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    let mut want: BTreeMap<(String, String, i32), usize> = BTreeMap::new();
    for line in log.lines().filter(|l| !l.contains("/ready")) {
        let f: Vec<&str> = line.split(' ').collect();
        *want
            .entry((f[0].into(), f[1].into(), f[2].parse().unwrap()))
            .or_default() += 1;
    }
    assert_eq!(
        want.values().sum::<usize>(),
        CLIENTS * REQUESTS_PER_CLIENT,
        "nginx served every request"
    );

    let (_out, summary, rows) = capture(&[pcap]);
    let text = summary.render();
    let mut got: BTreeMap<(String, String, i32), usize> = BTreeMap::new();
    for r in &rows {
        *got.entry((r.method.clone(), r.uri.clone(), r.status.unwrap_or(-1)))
            .or_default() += 1;
    }
    let flagged: Vec<&str> = rows
        .iter()
        .filter(|r| r.gap || r.no_response || r.incomplete)
        .map(|r| r.uri.as_str())
        .collect();
    // Every byte crossed the capture point at least once (tcpdump's buffer is large), so every
    // exchange is whole: none missing, none flagged, each body the one its request asked for.
    assert_eq!(got, want, "exchanges vs nginx's access log\n{text}");
    assert!(flagged.is_empty(), "flagged: {flagged:?}\n{text}");
    for r in &rows {
        if let Some(k) = r
            .path
            .strip_prefix("/f")
            .and_then(|p| p.strip_suffix(".bin"))
        {
            let k: usize = k.parse().unwrap();
            assert!(
                r.response_body == files[k],
                "{}: response body of {} bytes is not f{k}.bin",
                r.uri,
                r.response_body.len()
            );
        }
        if r.path == "/post" {
            assert!(r.request_body == upload, "{}: upload body differs", r.uri);
            assert_eq!(r.response_body, b"posted\n");
        }
    }
    // The drops happened: the kernel retransmitted, and the capture saw it.
    assert!(
        text.contains("retransmitted") && !text.contains(" 0 retransmitted"),
        "no retransmissions seen: the drop rules did not bite\n{text}"
    );

    // Now losses the capture itself suffers (a SPAN port dropping packets): every copy of
    // every third segment that starts a response is cut from the file, sometimes two
    // responses in a row. Each such loss may cost its exchange and the next one on the
    // connection (flagged), never more: curl does not pipeline, so acknowledgments prove the
    // pairings after it. Nothing may be missing and no response may answer the wrong request.
    let thinned = dir.path().join("thinned.pcap");
    let cut = cut_response_heads(&dir.path().join("loss.pcap"), &thinned, 3);
    assert!(cut >= 5, "only {cut} response heads cut");
    let (_out, summary, rows) = capture(&[thinned]);
    let text = summary.render();
    let mut requests: BTreeMap<(String, String), usize> = BTreeMap::new();
    for ((method, uri, _), n) in &want {
        *requests.entry((method.clone(), uri.clone())).or_default() += n;
    }
    let mut got_requests: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in &rows {
        *got_requests
            .entry((r.method.clone(), r.uri.clone()))
            .or_default() += 1;
    }
    assert_eq!(got_requests, requests, "every request is a row\n{text}");
    let flagged = rows.iter().filter(|r| r.gap).count();
    assert!(
        flagged >= 1 && flagged <= 2 * cut,
        "{flagged} exchanges flagged for {cut} lost response heads\n{text}"
    );
    for r in &rows {
        let Some(status) = r.status else { continue };
        assert!(
            want.contains_key(&(r.method.clone(), r.uri.clone(), status)),
            "{} {} paired with status {status}\n{text}",
            r.method,
            r.uri
        );
        if r.gap {
            continue;
        }
        if let Some(k) = r
            .path
            .strip_prefix("/f")
            .and_then(|p| p.strip_suffix(".bin"))
        {
            let k: usize = k.parse().unwrap();
            assert!(r.response_body == files[k], "{}: wrong body", r.uri);
        }
    }
}

/// Copies the pcap at `from` to `to` without every copy of every `nth` TCP segment from the
/// server that starts a response (`HTTP/1.`); returns how many segments were cut.
fn cut_response_heads(from: &Path, to: &Path, nth: usize) -> usize {
    let data = std::fs::read(from).unwrap();
    assert_eq!(
        &data[..4],
        &0xa1b2_c3d4u32.to_le_bytes(),
        "a little-endian µs pcap"
    );
    assert_eq!(
        u32::from_le_bytes(data[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    // (offset, length) of each record, and the (client port, sequence) of response heads.
    let mut records = Vec::new();
    let mut heads = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = data
            .get(at + 16..at + 16 + incl)
            .unwrap_or_else(|| panic!("{}: record at byte {at} cut short", from.display()));
        let key = etherparse::SlicedPacket::from_ethernet(frame)
            .ok()
            .and_then(|p| match p.transport {
                Some(etherparse::TransportSlice::Tcp(t))
                    if t.source_port() == PORT && t.payload().starts_with(b"HTTP/1.") =>
                {
                    Some((t.destination_port(), t.sequence_number()))
                }
                _ => None,
            });
        if let Some(k) = key {
            if !heads.contains(&k) {
                heads.push(k);
            }
        }
        records.push((at, 16 + incl, key));
        at += 16 + incl;
    }
    let dropped: Vec<_> = heads.iter().copied().skip(1).step_by(nth).collect();
    let mut out = data[..24].to_vec();
    for (at, len, key) in records {
        if !key.is_some_and(|k| dropped.contains(&k)) {
            out.extend_from_slice(&data[at..at + len]);
        }
    }
    std::fs::write(to, out).unwrap();
    dropped.len()
}
