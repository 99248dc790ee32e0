//! Text bodies that are records, read as JSON so they diff field by field: NDJSON (one JSON
//! value per line: `/3/price`) and CSV with a header row (`/3/price`, by column name, numbers
//! as numbers so the numeric tolerance applies). Anything that does not parse whole is left
//! to the text diff: a structured reading is never a guess.

use serde_json::{Map, Number, Value};

/// The most rows read as structure (past it, the text diff).
const MAX_ROWS: usize = 100_000;

/// A body as structured records: its kind (`ndjson`, `csv`) and the rows as a JSON array.
pub fn records(content_type: Option<&str>, body: &[u8]) -> Option<(&'static str, Value)> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let text = std::str::from_utf8(body).ok()?;
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.ends_with("ndjson")
        || media.ends_with("jsonl")
        || media.ends_with("json-seq")
        || media.ends_with("jsonlines")
    {
        return ndjson(text).map(|v| ("ndjson", v));
    }
    if media == "text/csv" || media == "application/csv" {
        return csv(text).map(|v| ("csv", v));
    }
    None
}

/// Every non-empty line one JSON value (a `json-seq` record separator is dropped).
fn ndjson(text: &str) -> Option<Value> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim_matches(|c: char| c.is_whitespace() || c == '\u{1e}');
        if line.is_empty() {
            continue;
        }
        if rows.len() == MAX_ROWS {
            return None;
        }
        rows.push(serde_json::from_str::<Value>(line).ok()?);
    }
    Some(Value::Array(rows))
}

/// RFC 4180: the first record names the columns; quoted fields may hold commas, quotes
/// (doubled) and line breaks. A record with a different number of fields is not CSV.
fn csv(text: &str) -> Option<Value> {
    let mut records = csv_records(text)?.into_iter();
    let header = records.next()?;
    if header.iter().any(String::is_empty) {
        return None;
    }
    let mut rows = Vec::new();
    for r in records {
        if r.len() == 1 && r[0].is_empty() {
            continue;
        }
        if r.len() != header.len() || rows.len() == MAX_ROWS {
            return None;
        }
        let mut row = Map::new();
        for (name, cell) in header.iter().zip(r) {
            row.insert(name.clone(), cell_value(cell));
        }
        rows.push(Value::Object(row));
    }
    Some(Value::Array(rows))
}

/// A number where the cell is one (so `9.99` vs `9.990` is no change), else the text.
fn cell_value(cell: String) -> Value {
    let t = cell.trim();
    let numeric = !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
    if numeric {
        if let Ok(n) = serde_json::from_str::<Number>(t.trim_start_matches('+')) {
            return Value::Number(n);
        }
    }
    Value::String(cell)
}

fn csv_records(text: &str) -> Option<Vec<Vec<String>>> {
    let mut out = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(ch) = chars.next() {
        if quoted {
            match ch {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    quoted = false;
                    // Only a separator or the end of the record may follow a closing quote.
                    if !matches!(chars.peek(), None | Some(',') | Some('\r') | Some('\n')) {
                        return None;
                    }
                }
                c => field.push(c),
            }
            continue;
        }
        match ch {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' => return None,
            ',' => {
                record.push(std::mem::take(&mut field));
                at_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                out.push(std::mem::take(&mut record));
                at_start = true;
            }
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return None;
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        out.push(record);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_are_rows() {
        let (kind, v) = records(
            Some("application/x-ndjson"),
            b"{\"id\":1,\"price\":9.5}\n\n{\"id\":2,\"price\":3}\n",
        )
        .unwrap();
        assert_eq!(kind, "ndjson");
        assert_eq!(v.pointer("/1/price"), Some(&Value::from(3)));
        assert!(records(Some("application/x-ndjson"), b"{\"id\":1}\nnot json\n").is_none());
        assert!(records(Some("text/plain"), b"{\"id\":1}\n").is_none());
    }

    #[test]
    fn csv_rows_by_column_with_quotes_and_numbers() {
        let body = b"sku,name,price\r\nA1,\"Widget, large\",9.99\r\nB2,\"say \"\"hi\"\"\",10\r\n";
        let (kind, v) = records(Some("text/csv; charset=utf-8"), body).unwrap();
        assert_eq!(kind, "csv");
        assert_eq!(v.pointer("/0/name"), Some(&Value::from("Widget, large")));
        assert_eq!(v.pointer("/1/name"), Some(&Value::from("say \"hi\"")));
        assert_eq!(v.pointer("/0/price").and_then(Value::as_f64), Some(9.99));
        assert_eq!(v.pointer("/1/sku"), Some(&Value::from("B2")));
        // A ragged row, a stray quote, an unclosed quote: not read as CSV.
        for bad in [
            &b"a,b\n1\n"[..],
            b"a,b\n1,x\"y\n",
            b"a,b\n1,\"open\n",
            b"a,b\n1,\"x\"y\n",
        ] {
            assert!(records(Some("text/csv"), bad).is_none(), "{bad:?}");
        }
        // Identifiers that look numeric but are not numbers stay text.
        let (_, v) = records(Some("text/csv"), b"code\n00-12\n").unwrap();
        assert_eq!(v.pointer("/0/code"), Some(&Value::from("00-12")));
    }
}
