//! The public captures in `fixtures/pcaps`, checked against tshark's dissection of them
//! (`ORACLE.tsv` and the per-file `*.http.tsv`, made by `make_oracle.py` with tshark 4.0).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use shadowtap_capture::redact::Redaction;
use shadowtap_capture::summary::CaptureSummary;

use crate::common::{capture_with, fixtures, Row};

/// Captures without redaction: the oracle compares targets and bodies byte for byte with
/// tshark's view of them (redaction is tested in `secrets.rs`).
fn capture(inputs: &[PathBuf]) -> (tempfile::TempDir, CaptureSummary, Vec<Row>) {
    capture_with(inputs, |o| o.redaction = Redaction::Off)
}

fn pcaps() -> PathBuf {
    fixtures().join("pcaps")
}

/// `ORACLE.tsv` as file name → column → value.
fn oracle() -> BTreeMap<String, HashMap<String, String>> {
    let text = std::fs::read_to_string(pcaps().join("ORACLE.tsv")).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cols: HashMap<String, String> = head
                .iter()
                .zip(l.split('\t'))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect();
            (cols["file"].clone(), cols)
        })
        .collect()
}

fn responses(rows: &[Row]) -> usize {
    rows.iter()
        .map(|r| usize::from(r.status.is_some()) + r.interim.len())
        .sum()
}

#[test]
fn request_and_response_counts_match_tshark() {
    let oracle = oracle();
    assert_eq!(oracle.len(), 15);
    let mut report = Vec::new();
    for (file, o) in &oracle {
        let (_dir, summary, rows) = capture(&[pcaps().join(file)]);
        let n = |k: &str| o[k].parse::<usize>().unwrap();
        // Where tshark is known to miss messages the wire carries (fixtures/pcaps/ORACLE-README.md),
        // a correct decoder finds the wire's count.
        let want_resp = match file.as_str() {
            // One lost segment hides a response from tshark; its status line is on the wire.
            "zeek__bro.org.pcap" => n("segs_status_line_nonretx"),
            // tshark needs out-of-order reassembly turned on to see the 15th response.
            "suricata-verify__http-range-file__input.pcap" => n("resp_msgs_tcp_oooTRUE"),
            _ => n("resp_msgs_tcp"),
        };
        let got = (rows.len(), responses(&rows));
        let want = (n("req_msgs_tcp"), want_resp);
        if file == "nDPI__1kxun.pcap" {
            // Trimmed by its authors: tshark's 118 responses are a lower bound, the 125 status
            // lines on the wire an upper one (some belong to requests cut from the file).
            let ok =
                got.0 == want.0 && (want_resp..=n("segs_status_line_nonretx")).contains(&got.1);
            if !ok {
                report.push(format!(
                    "{file}: got {got:?}, want 133 requests and 118..=125 responses"
                ));
            }
            continue;
        }
        if got != want {
            report.push(format!(
                "{file}: got (requests, responses) {got:?}, want {want:?}"
            ));
        }
        assert_eq!(
            summary.exchanges_written as usize,
            rows.len(),
            "{file}: summary matches the rows"
        );
        let no_resp = rows.iter().filter(|r| r.no_response).count();
        assert_eq!(no_resp as u64, summary.flags.no_response, "{file}");
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// (method, uri, status) of every final response in a `*.http.tsv`, paired as the oracle's
/// `pair_*` columns say: tshark's own pairing where it has one, first-in-first-out per
/// connection otherwise (tshark's pairing is wrong under pipelining; naive FIFO is wrong where
/// a trimmed capture lost a response's head).
fn tshark_pairs(tsv: &str) -> Vec<(String, String, i32)> {
    let text = std::fs::read_to_string(pcaps().join(tsv)).unwrap();
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| head.iter().position(|h| *h == name).unwrap();
    let (kind, code, fm, fu) = (
        col("kind"),
        col("code"),
        col("pair_method"),
        col("pair_uri"),
    );
    let mut out: Vec<_> = lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .filter(|c| c[kind] == "response")
        .filter_map(|c| {
            let code: i32 = c[code].parse().ok()?;
            (code >= 200 || code == 101).then(|| (c[fm].to_owned(), c[fu].to_owned(), code))
        })
        .collect();
    out.sort();
    out
}

fn our_pairs(rows: &[Row]) -> Vec<(String, String, i32)> {
    let mut out: Vec<_> = rows
        .iter()
        .filter_map(|r| Some((r.method.clone(), r.uri.clone(), r.status?)))
        .collect();
    out.sort();
    out
}

#[test]
fn exchanges_pair_like_tshark() {
    for file in [
        "suricata-verify__http-protocol-nodup__input.pcap",
        "zeek__wikipedia.pcap",
        "nDPI__webdav.pcap",
        "nDPI__ocsp.pcapng",
        "zeek__docker-http-upgrade.pcap",
        "zeek__http-body-match.pcap",
        "suricata-verify__filecontainer-http.pcap",
        "zeek__cooper-grill-dvwa.pcapng",
    ] {
        let (_dir, _s, rows) = capture(&[pcaps().join(file)]);
        assert_eq!(
            our_pairs(&rows),
            tshark_pairs(&format!("{file}.http.tsv")),
            "{file}"
        );
    }
}

#[test]
fn trimmed_capture_keeps_every_pair_tshark_sees() {
    let file = "nDPI__1kxun.pcap";
    let (_d, _s, rows) = capture(&[pcaps().join(file)]);
    let ours = our_pairs(&rows);
    let theirs = tshark_pairs(&format!("{file}.http.tsv"));
    let missing: Vec<_> = theirs.iter().filter(|p| !ours.contains(p)).collect();
    assert!(
        missing.is_empty(),
        "pairs tshark sees that we do not: {missing:#?}"
    );
}

#[test]
fn out_of_order_first_response_is_recovered() {
    // tshark with default settings loses the 15th response of this file; with out-of-order
    // reassembly turned on it pairs all 15, as we do.
    let file = "suricata-verify__http-range-file__input.pcap";
    let (_d, _s, rows) = capture(&[pcaps().join(file)]);
    assert_eq!(
        our_pairs(&rows),
        tshark_pairs(&format!("{file}.http.oooTRUE.tsv"))
    );
    assert!(
        rows.iter().all(|r| r.status == Some(206) && !r.gap),
        "{rows:#?}"
    );
}

#[test]
fn lost_segment_flags_one_exchange_and_keeps_later_pairs() {
    let (_d, s, rows) = capture(&[pcaps().join("zeek__bro.org.pcap")]);
    assert_eq!(rows.len(), 31);
    let gaps: Vec<&Row> = rows.iter().filter(|r| r.gap).collect();
    assert_eq!(
        gaps.len(),
        1,
        "exactly the exchange with the lost segment is flagged"
    );
    assert!(
        gaps[0].uri.contains("jquery.cycle.all.min.js"),
        "{:?}",
        gaps[0].uri
    );
    assert_eq!(gaps[0].status, Some(200));
    assert!(s.reassembly.gaps >= 1 && s.reassembly.gap_bytes > 0);
    // Every pair tshark could dissect agrees with ours.
    let ours = our_pairs(&rows);
    for p in tshark_pairs("zeek__bro.org.pcap.http.tsv") {
        assert!(ours.contains(&p), "missing {p:?}");
    }
}

#[test]
fn interim_100_continue_belongs_to_its_exchange() {
    let (_d, _s, rows) = capture(&[pcaps().join("zeek__100-continue.pcap")]);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].interim, vec![100]);
    assert_eq!(rows[0].status, Some(200));
    assert!(!rows[0].request_body.is_empty());
    let (_d, _s, rows) = capture(&[pcaps().join("zeek__http-body-match.pcap")]);
    assert_eq!(rows.iter().map(|r| r.interim.len()).sum::<usize>(), 3);
}

#[test]
fn upgrade_stops_parsing_the_tunnel() {
    let (_d, s, rows) = capture(&[pcaps().join("zeek__docker-http-upgrade.pcap")]);
    let up: Vec<_> = rows.iter().filter(|r| r.upgraded).collect();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].status, Some(101));
    assert!(
        rows.iter().all(|r| !r.parse_error),
        "raw tunnel bytes are not parse errors"
    );
    assert_eq!(s.reassembly.orphan_responses, 0);
}

#[test]
fn gzip_bodies_are_kept_raw_and_decoded() {
    let (_d, _s, rows) = capture(&[pcaps().join("suricata-verify__filecontainer-http.pcap")]);
    let gz: Vec<_> = rows
        .iter()
        .filter(|r| r.response_body_decoded.is_some())
        .collect();
    assert_eq!(gz.len(), 7, "7 gzip responses in this capture");
    for r in gz {
        assert_eq!(
            &r.response_body[..2],
            &[0x1f, 0x8b],
            "raw column keeps the gzip bytes"
        );
        assert!(r.response_body_decoded.as_ref().unwrap().len() >= r.response_body.len() / 2);
    }
}

#[test]
fn chunked_bodies_are_dechunked() {
    let (_d, _s, rows) = capture(&[pcaps().join("zeek__cooper-grill-dvwa.pcapng")]);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r.status, Some(200));
        assert_eq!(r.response_body.len() as i64, r.response_body_len);
        let text = String::from_utf8_lossy(
            r.response_body_decoded
                .as_deref()
                .unwrap_or(&r.response_body),
        )
        .to_lowercase();
        assert!(
            text.contains("<html") || text.contains("<!doctype"),
            "{}",
            &text[..text.len().min(200)]
        );
    }
}

#[test]
fn retransmissions_do_not_duplicate_bytes() {
    // 83 of 227 frames are retransmissions; the three 206 bodies must have their exact lengths.
    let (_d, s, rows) = capture(&[pcaps().join("zeek__m57-long-49583-80.pcap")]);
    assert_eq!(rows.len(), 3);
    assert!(s.reassembly.retransmitted_segments > 0);
    for r in &rows {
        assert_eq!(r.status, Some(206));
        assert!(!r.gap && !r.incomplete, "{r:?}");
        assert_eq!(r.response_body.len() as i64, r.response_body_len);
    }
}

#[test]
fn vlan_pcapng_and_nonstandard_ports() {
    let (_d, _s, rows) = capture(&[pcaps().join("suricata-verify__filecontainer-http.pcap")]);
    assert_eq!(rows.len(), 11);
    let (_d, _s, rows) = capture(&[pcaps().join("nDPI__webdav.pcap")]);
    assert_eq!(rows.len(), 16);
    assert!(rows.iter().any(|r| r.method == "PROPFIND"));
}

#[test]
fn ids_are_stable_across_runs_and_unique() {
    let f = pcaps().join("nDPI__1kxun.pcap");
    let (_d1, _s, a) = capture(std::slice::from_ref(&f));
    let (_d2, _s, b) = capture(&[f]);
    let ids = |rows: &[Row]| {
        rows.iter()
            .map(|r| r.exchange_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    let mut uniq = ids(&a);
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), a.len());
}
