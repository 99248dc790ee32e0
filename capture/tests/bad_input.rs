//! Bad input: truncated and corrupt captures, files that are not captures, garbage packets.
//! The good data is still written, the message names the file and offset, nothing panics.

use shadowtap_capture::pipeline::{capture_files, CaptureOptions};
use shadowtap_capture::CaptureError;

use crate::common::{capture, fixtures, read_rows};

#[test]
fn truncated_capture_keeps_what_was_read() {
    let src = fixtures().join("pcaps/zeek__wikipedia.pcap");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3 + 7]).unwrap();
    let (_d, summary, rows) = capture(std::slice::from_ref(&cut));
    let err = summary.inputs[0]
        .error
        .as_deref()
        .expect("the truncation is reported");
    assert!(
        err.contains("cut.pcap") && err.contains("byte offset"),
        "{err}"
    );
    assert!(!rows.is_empty() && rows.len() < 15, "{} rows", rows.len());
    // The offset reported is where the cut record starts: within the file, past the header.
    let offset: u64 = err
        .split("byte offset ")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        offset > 24 && offset <= bytes.len() as u64 * 2 / 3 + 7,
        "{offset}"
    );
}

#[test]
fn not_a_capture_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let opts = CaptureOptions::new(vec![junk], dir.path().join("out"));
    match capture_files(&opts) {
        Err(e @ CaptureError::Open { .. }) => assert!(
            e.to_string()
                .contains("junk.pcap: cannot open capture: not a pcap"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    let opts = CaptureOptions::new(vec![empty], dir.path().join("out"));
    assert!(matches!(
        capture_files(&opts),
        Err(CaptureError::Open { .. })
    ));
    let missing = CaptureOptions::new(vec![dir.path().join("nope.pcap")], dir.path().join("out"));
    assert!(matches!(
        capture_files(&missing),
        Err(CaptureError::Open { .. })
    ));
}

#[test]
fn one_bad_input_among_good_ones_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"garbage!").unwrap();
    let good = fixtures().join("pcaps/zeek__wikipedia.pcap");
    let (_d, summary, rows) = capture(&[good, junk]);
    assert_eq!(rows.len(), 15);
    assert!(summary
        .inputs
        .iter()
        .any(|i| i.error.as_deref().is_some_and(|e| e.contains("junk.pcap"))));
}

#[test]
fn bad_filter_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = CaptureOptions::new(
        vec![fixtures().join("pcaps/zeek__wikipedia.pcap")],
        dir.path().to_path_buf(),
    );
    opts.filter = Some("tcp port nonsense((".into());
    assert!(matches!(
        capture_files(&opts),
        Err(CaptureError::Filter { .. })
    ));
}

#[test]
fn garbage_inside_packets_is_counted_not_fatal() {
    // Overwrite the payload bytes of every 7th record of a pcap with noise: the decoder must
    // count malformed packets, keep going, and never panic.
    let src = std::fs::read(fixtures().join("pcaps/zeek__bro.org.pcap")).unwrap();
    let mut bytes = src.clone();
    let mut off = 24;
    let mut n = 0u32;
    while off + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        let start = off + 16;
        if n.is_multiple_of(7) {
            for (i, b) in bytes[start..(start + caplen).min(src.len())]
                .iter_mut()
                .enumerate()
                .skip(12)
            {
                *b = (i as u8).wrapping_mul(151) ^ 0x5a;
            }
        }
        off = start + caplen;
        n += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let noisy = dir.path().join("noisy.pcap");
    std::fs::write(&noisy, &bytes).unwrap();
    let (_d, summary, rows) = capture(&[noisy]);
    assert!(summary.malformed_packets + summary.other_skipped > 0);
    assert!(!rows.is_empty());
    let _ = read_rows;
}

#[test]
fn snaplen_truncated_capture_is_reported() {
    // Rewrite a pcap as if captured with a 96-byte snap length: payload beyond it is gone. The
    // summary must say so, and the packets must not silently count as fine.
    let src = std::fs::read(fixtures().join("pcaps/zeek__wikipedia.pcap")).unwrap();
    let mut out = src[..24].to_vec();
    out[16..20].copy_from_slice(&96u32.to_le_bytes());
    let mut off = 24;
    while off + 16 <= src.len() {
        let caplen = u32::from_le_bytes(src[off + 8..off + 12].try_into().unwrap()) as usize;
        let keep = caplen.min(96);
        let mut rec = src[off..off + 16].to_vec();
        rec[8..12].copy_from_slice(&(keep as u32).to_le_bytes());
        out.extend_from_slice(&rec);
        out.extend_from_slice(&src[off + 16..off + 16 + keep]);
        off += 16 + caplen;
    }
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.pcap");
    std::fs::write(&short, &out).unwrap();
    let (_d, summary, _rows) = capture(&[short]);
    assert!(summary.snaplen_truncated_packets > 0);
    assert!(summary.render().contains("snap length"));
}
