//! TLS key logs carried inside pcapng files: Decryption Secrets Blocks (pcapng §4.7, type
//! 0x0000000A, secrets type `TLSK` 0x544c534b), as `editcap --inject-secrets` writes them.
//! libpcap skips these blocks, so they are read here, block header by block header.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const SECTION_HEADER: u32 = 0x0A0D_0D0A;
const DECRYPTION_SECRETS: u32 = 0x0000_000A;
const TLS_KEY_LOG: u32 = 0x544C_534B;
/// A key log block larger than this is not one (a damaged length).
const MAX_SECRETS: u32 = 64 << 20;

/// The TLS key logs in the pcapng file at `path`, joined (empty for a pcap file, a file with
/// none, or a damaged one: the packets are read and reported by libpcap either way).
pub fn tls_key_logs(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let mut out = String::new();
    let mut big_endian = false;
    let mut first = true;
    loop {
        let mut head = [0u8; 8];
        if f.read_exact(&mut head).is_err() {
            break;
        }
        let raw_type = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        if raw_type == SECTION_HEADER {
            // The byte-order magic follows: it says how the section's numbers are written.
            let mut magic = [0u8; 4];
            if f.read_exact(&mut magic).is_err() {
                break;
            }
            big_endian = magic == [0x1A, 0x2B, 0x3C, 0x4D];
            if f.seek(SeekFrom::Current(-4)).is_err() {
                break;
            }
        } else if first {
            // Not pcapng.
            break;
        }
        first = false;
        let num = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().expect("4 bytes");
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let (kind, len) = (num(&head[..4]), num(&head[4..]));
        if len < 12 || !len.is_multiple_of(4) {
            break;
        }
        let body = u64::from(len) - 8;
        if kind == DECRYPTION_SECRETS && len >= 20 {
            let mut h = [0u8; 8];
            if f.read_exact(&mut h).is_err() {
                break;
            }
            let (secrets_type, n) = (num(&h[..4]), num(&h[4..]));
            if secrets_type == TLS_KEY_LOG && n <= MAX_SECRETS && u64::from(n) + 8 <= body {
                let mut data = vec![0; n as usize];
                if f.read_exact(&mut data).is_err() {
                    break;
                }
                out.push_str(&String::from_utf8_lossy(&data));
                out.push('\n');
                if f.seek(SeekFrom::Current(body as i64 - 8 - i64::from(n)))
                    .is_err()
                {
                    break;
                }
                continue;
            }
            if f.seek(SeekFrom::Current(body as i64 - 8)).is_err() {
                break;
            }
            continue;
        }
        if f.seek(SeekFrom::Current(body as i64)).is_err() {
            break;
        }
    }
    out
}
