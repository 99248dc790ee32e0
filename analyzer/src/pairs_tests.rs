//! Unit tests of the pairing helpers on in-memory Arrow arrays.

use super::*;
use arrow::array::{BinaryArray, ListBuilder, StringBuilder, StructBuilder};
use arrow::datatypes::{DataType, Field};

fn headers(rows: &[&[(&str, &str)]]) -> ArrayRef {
    let fields = vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ];
    let mut b = ListBuilder::new(StructBuilder::from_fields(fields, 0));
    for row in rows {
        for (n, v) in *row {
            let s = b.values();
            s.field_builder::<StringBuilder>(0).unwrap().append_value(n);
            s.field_builder::<StringBuilder>(1).unwrap().append_value(v);
            s.append(true);
        }
        b.append(true);
    }
    Arc::new(b.finish())
}

#[test]
fn a_coding_label_that_does_not_decode_is_a_header_difference() {
    let h = headers(&[
        &[("Content-Encoding", "gzip")],
        &[("Content-Encoding", "gzip")],
        &[("Content-Encoding", "identity")],
        &[],
    ]);
    let raw: ArrayRef = Arc::new(BinaryArray::from(vec![
        &b"plain"[..],
        &b"\x1f\x8b..."[..],
        &b"plain"[..],
        &b"plain"[..],
    ]));
    // Row 1 decoded; row 0 labelled gzip and not decoded.
    let dec: ArrayRef = Arc::new(BinaryArray::from(vec![
        None,
        Some(&b"plain"[..]),
        None,
        None,
    ]));
    let undecodable = |i| {
        headers_checked(&h, &raw, &dec, i)
            .iter()
            .any(|(n, _)| n == UNDECODABLE)
    };
    assert!(undecodable(0));
    assert!(!undecodable(1));
    assert!(!undecodable(2));
    assert!(!undecodable(3));
}
