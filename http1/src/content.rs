//! Undoing HTTP content codings (`Content-Encoding: gzip, deflate, br, zstd`), with the decoded
//! size capped: a small compressed body cannot grow without bound in memory.

use std::io::Read;

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// A coding this crate does not know (`compress`, …).
    #[error("unsupported content coding {0:?}")]
    Unsupported(String),
    /// The bytes are not valid for the coding.
    #[error("invalid {coding} data: {message}")]
    Invalid {
        /// The coding that failed.
        coding: String,
        /// What the decoder said.
        message: String,
    },
    /// The decoded body would exceed the cap.
    #[error("decoded body exceeds {0} bytes")]
    TooLarge(u64),
}

/// Decodes `body` according to a `Content-Encoding` header value (codings applied in order,
/// so they are undone in reverse). Returns `Ok(None)` when there is nothing to undo.
pub fn decode_body(encoding: &str, body: &[u8], cap: u64) -> Result<Option<Vec<u8>>, DecodeError> {
    let codings: Vec<String> = encoding
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() {
        return Ok(None);
    }
    let mut data = body.to_vec();
    for coding in codings.iter().rev() {
        data = decode_one(coding, &data, cap)?;
    }
    Ok(Some(data))
}

/// The largest zstd window accepted, as a power of two: 8 MiB (RFC 9659).
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

fn decode_one(coding: &str, input: &[u8], cap: u64) -> Result<Vec<u8>, DecodeError> {
    let invalid = |e: std::io::Error| DecodeError::Invalid {
        coding: coding.to_owned(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    match coding {
        "gzip" | "x-gzip" => {
            read_capped(flate2::read::MultiGzDecoder::new(input), cap, &mut out).map_err(invalid)?
        }
        "deflate" => {
            // RFC 9110 says zlib-wrapped; many servers send raw deflate. Try zlib first.
            let zlib = read_capped(flate2::read::ZlibDecoder::new(input), cap, &mut out);
            if zlib.is_err() {
                out.clear();
                read_capped(flate2::read::DeflateDecoder::new(input), cap, &mut out)
                    .map_err(invalid)?;
            }
        }
        "br" => {
            read_capped(brotli::Decompressor::new(input, 4096), cap, &mut out).map_err(invalid)?
        }
        "zstd" => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(invalid)?;
            // RFC 9659: HTTP recipients need not support windows over 8 MiB; a frame asking
            // for more (up to 2 GiB of decoder memory) is refused rather than honoured.
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(invalid)?;
            read_capped(decoder, cap, &mut out).map_err(invalid)?
        }
        other => return Err(DecodeError::Unsupported(other.to_owned())),
    }
    if out.len() as u64 > cap {
        return Err(DecodeError::TooLarge(cap));
    }
    Ok(out)
}

fn read_capped(reader: impl Read, cap: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    reader
        .take(cap.saturating_add(1))
        .read_to_end(out)
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_deflate_round_trip() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello gzip").unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decode_body("gzip", &gz, 1 << 20).unwrap().unwrap(),
            b"hello gzip"
        );

        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(b"raw deflate").unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            decode_body("deflate", &raw, 1 << 20).unwrap().unwrap(),
            b"raw deflate"
        );
    }

    #[test]
    fn brotli_round_trip() {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(b"hello brotli").unwrap();
        }
        assert_eq!(
            decode_body("br", &out, 1 << 20).unwrap().unwrap(),
            b"hello brotli"
        );
    }

    #[test]
    fn zstd_round_trips_and_obeys_the_cap_and_the_window_limit() {
        let text = b"hello zstd ".repeat(100);
        let z = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decode_body("zstd", &z, 1 << 20).unwrap().unwrap(), text);
        // Codings are undone last first: zstd decodes, then the result is not gzip.
        assert!(matches!(
            decode_body("gzip, zstd", &z, 1 << 20),
            Err(DecodeError::Invalid { coding, .. }) if coding == "gzip"
        ));
        assert_eq!(
            decode_body("zstd", &z, 100),
            Err(DecodeError::TooLarge(100))
        );
        // A frame that declares a 64 MiB window is refused, not decoded.
        let mut big = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        big.window_log(26).unwrap();
        big.long_distance_matching(true).unwrap();
        big.include_contentsize(false).unwrap();
        big.write_all(&vec![7u8; 9 << 20]).unwrap();
        let big = big.finish().unwrap();
        assert!(matches!(
            decode_body("zstd", &big, 64 << 20),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn identity_and_errors() {
        assert_eq!(decode_body("identity", b"x", 10), Ok(None));
        assert!(matches!(
            decode_body("gzip", b"not gzip", 10),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            decode_body("compress", b"", 10),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode_body("zstd", b"not zstd", 10),
            Err(DecodeError::Invalid { .. })
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&[b'a'; 1000]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decode_body("gzip", &gz, 100),
            Err(DecodeError::TooLarge(100))
        );
    }
}
