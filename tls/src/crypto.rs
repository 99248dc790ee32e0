//! The key schedules and record protection of the suites shadowtap reads, on `ring`'s
//! primitives (HKDF, HMAC, AEAD): TLS 1.3 (RFC 8446 §7: HKDF-Expand-Label, per-record nonce,
//! KeyUpdate) and TLS 1.2's AEAD suites (RFC 5246 §5 PRF, RFC 5288 AES-GCM with an explicit
//! nonce, RFC 7905 ChaCha20-Poly1305).

use ring::{aead, hkdf, hmac};

/// The record cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

/// The suite's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
}

/// A cipher suite shadowtap can decrypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suite {
    /// Its IANA code.
    pub id: u16,
    /// Its IANA name.
    pub name: &'static str,
    /// The record cipher.
    pub cipher: Cipher,
    /// The PRF's / HKDF's hash.
    pub hash: Hash,
}

/// The suite of IANA code `id`, when it is one shadowtap decrypts: TLS 1.3's three, and TLS
/// 1.2's AEAD suites (AES-GCM, ChaCha20-Poly1305) with RSA, DHE or ECDHE key exchange. CBC
/// and stream suites are not read (counted as unsupported).
pub fn suite(id: u16) -> Option<Suite> {
    use Cipher::*;
    use Hash::*;
    let (name, cipher, hash) = match id {
        0x1301 => ("TLS_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0x1302 => ("TLS_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0x1303 => ("TLS_CHACHA20_POLY1305_SHA256", Chacha20Poly1305, Sha256),
        0x009C => ("TLS_RSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0x009D => ("TLS_RSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0x009E => ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0x009F => ("TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0xC02B => ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0xC02C => ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0xC02F => ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", Aes128Gcm, Sha256),
        0xC030 => ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", Aes256Gcm, Sha384),
        0xCCA8 => (
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Chacha20Poly1305,
            Sha256,
        ),
        0xCCA9 => (
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
            Chacha20Poly1305,
            Sha256,
        ),
        0xCCAA => (
            "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            Chacha20Poly1305,
            Sha256,
        ),
        _ => return None,
    };
    Some(Suite {
        id,
        name,
        cipher,
        hash,
    })
}

impl Cipher {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Cipher::Aes128Gcm => &aead::AES_128_GCM,
            Cipher::Aes256Gcm => &aead::AES_256_GCM,
            Cipher::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    fn key_len(self) -> usize {
        self.algorithm().key_len()
    }
}

impl Hash {
    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Hash::Sha256 => hkdf::HKDF_SHA256,
            Hash::Sha384 => hkdf::HKDF_SHA384,
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha256 => hmac::HMAC_SHA256,
            Hash::Sha384 => hmac::HMAC_SHA384,
        }
    }

    fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
        }
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// RFC 8446 §7.1 HKDF-Expand-Label with an empty context.
pub(crate) fn expand_label(hash: Hash, secret: &[u8], label: &str, len: usize) -> Option<Vec<u8>> {
    let prk = hkdf::Prk::new_less_safe(hash.hkdf(), secret);
    let full = [b"tls13 ", label.as_bytes()].concat();
    let length = u16::try_from(len).ok()?.to_be_bytes();
    let label_len = [u8::try_from(full.len()).ok()?];
    let info: [&[u8]; 5] = [&length, &label_len, &full, &[0u8], &[]];
    let mut out = vec![0; len];
    prk.expand(&info, Len(len)).ok()?.fill(&mut out).ok()?;
    Some(out)
}

/// RFC 5246 §5 PRF: P_hash(secret, label + seed), `len` bytes.
fn prf(hash: Hash, secret: &[u8], label: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let key = hmac::Key::new(hash.hmac(), secret);
    let seed = [label, seed].concat();
    let mut a = hmac::sign(&key, &seed).as_ref().to_vec();
    let mut out = Vec::with_capacity(len + hash.len());
    while out.len() < len {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&a);
        ctx.update(&seed);
        out.extend_from_slice(ctx.sign().as_ref());
        a = hmac::sign(&key, &a).as_ref().to_vec();
    }
    out.truncate(len);
    out
}

/// The protection of one direction's records under one key.
pub struct Opener {
    suite: Suite,
    key: aead::LessSafeKey,
    /// TLS 1.3 and ChaCha20: the 12-byte IV; TLS 1.2 GCM: the 4-byte salt.
    iv: Vec<u8>,
    /// The next record's sequence number.
    seq: u64,
    /// TLS 1.3: the traffic secret (for KeyUpdate); none for TLS 1.2.
    secret: Option<Vec<u8>>,
}

/// A record's plaintext and its real content type.
pub struct Opened {
    /// The content type (TLS 1.3: the inner one).
    pub content_type: u8,
    /// The plaintext.
    pub data: Vec<u8>,
}

impl Opener {
    /// TLS 1.3: the opener of a traffic secret.
    pub fn tls13(suite: Suite, secret: &[u8]) -> Option<Opener> {
        let key = expand_label(suite.hash, secret, "key", suite.cipher.key_len())?;
        let iv = expand_label(suite.hash, secret, "iv", 12)?;
        Some(Opener {
            suite,
            key: aead::LessSafeKey::new(
                aead::UnboundKey::new(suite.cipher.algorithm(), &key).ok()?,
            ),
            iv,
            seq: 0,
            secret: Some(secret.to_vec()),
        })
    }

    /// TLS 1.2: the client's and the server's openers from the master secret and the hellos'
    /// randoms.
    pub fn tls12(
        suite: Suite,
        master: &[u8],
        client_random: &[u8; 32],
        server_random: &[u8; 32],
    ) -> Option<[Opener; 2]> {
        let key_len = suite.cipher.key_len();
        let iv_len = match suite.cipher {
            Cipher::Chacha20Poly1305 => 12,
            _ => 4,
        };
        let block = prf(
            suite.hash,
            master,
            b"key expansion",
            &[&server_random[..], &client_random[..]].concat(),
            2 * (key_len + iv_len),
        );
        let (client_key, rest) = block.split_at(key_len);
        let (server_key, rest) = rest.split_at(key_len);
        let (client_iv, server_iv) = rest.split_at(iv_len);
        let make = |key: &[u8], iv: &[u8]| -> Option<Opener> {
            Some(Opener {
                suite,
                key: aead::LessSafeKey::new(
                    aead::UnboundKey::new(suite.cipher.algorithm(), key).ok()?,
                ),
                iv: iv.to_vec(),
                seq: 0,
                secret: None,
            })
        };
        Some([make(client_key, client_iv)?, make(server_key, server_iv)?])
    }

    /// TLS 1.3 KeyUpdate: the opener of the next traffic secret.
    pub fn updated(&self) -> Option<Opener> {
        let secret = self.secret.as_ref()?;
        let next = expand_label(
            self.suite.hash,
            secret,
            "traffic upd",
            self.suite.hash.len(),
        )?;
        Opener::tls13(self.suite, &next)
    }

    fn xor_nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n.copy_from_slice(&self.iv[..12]);
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }

    /// Opens the record with `header` (its 5 bytes) and `payload`; the sequence number moves
    /// on only when it authenticates.
    pub fn open(&mut self, header: &[u8; 5], payload: &[u8]) -> Option<Opened> {
        let tag = self.suite.cipher.algorithm().tag_len();
        let opened = match (self.secret.is_some(), self.suite.cipher) {
            (true, _) => {
                let mut buf = payload.to_vec();
                let nonce = aead::Nonce::assume_unique_for_key(self.xor_nonce());
                let plain = self
                    .key
                    .open_in_place(nonce, aead::Aad::from(*header), &mut buf)
                    .ok()?;
                // The inner plaintext: content, its type, zero padding.
                let end = plain.iter().rposition(|b| *b != 0)?;
                let content_type = plain[end];
                let mut data = plain[..end].to_vec();
                data.shrink_to_fit();
                Opened { content_type, data }
            }
            (false, cipher) => {
                let (nonce, body) = match cipher {
                    Cipher::Chacha20Poly1305 => (self.xor_nonce(), payload),
                    _ => {
                        if payload.len() < 8 {
                            return None;
                        }
                        let mut n = [0u8; 12];
                        n[..4].copy_from_slice(&self.iv[..4]);
                        n[4..].copy_from_slice(&payload[..8]);
                        (n, &payload[8..])
                    }
                };
                let plain_len = u16::try_from(body.len().checked_sub(tag)?).ok()?;
                let mut aad = [0u8; 13];
                aad[..8].copy_from_slice(&self.seq.to_be_bytes());
                aad[8..11].copy_from_slice(&header[..3]);
                aad[11..].copy_from_slice(&plain_len.to_be_bytes());
                let mut buf = body.to_vec();
                let plain = self
                    .key
                    .open_in_place(
                        aead::Nonce::assume_unique_for_key(nonce),
                        aead::Aad::from(aad),
                        &mut buf,
                    )
                    .ok()?;
                let n = plain.len();
                buf.truncate(n);
                Opened {
                    content_type: header[0],
                    data: buf,
                }
            }
        };
        self.seq += 1;
        Some(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 8448 §3 (a simple 1-RTT handshake): the server's handshake traffic secret gives
    /// its key and IV.
    #[test]
    fn hkdf_expand_label_gives_rfc_8448s_keys() {
        let secret = hex(
            "b6 7b 7d 69 0c c1 6c 4e 75 e5 42 13 cb 2d 37 b4 e9 c9 12 bc de d9 10 5d 42 be fd 59 d3 91 ad 38",
        );
        let s = suite(0x1301).unwrap();
        assert_eq!(
            expand_label(s.hash, &secret, "key", 16).unwrap(),
            hex("3f ce 51 60 09 c2 17 27 d0 f2 e4 e8 6e e4 03 bc")
        );
        assert_eq!(
            expand_label(s.hash, &secret, "iv", 12).unwrap(),
            hex("5d 31 3e b2 67 12 76 ee 13 00 0b 30")
        );
    }

    /// The TLS 1.2 PRF (SHA-256) on the test vector the IETF TLS list circulated
    /// (www.ietf.org/mail-archive/web/tls/current/msg03416.html).
    #[test]
    fn the_tls12_prf_matches_the_published_vector() {
        let out = prf(
            Hash::Sha256,
            &hex("9b be 43 6b a9 40 f0 17 b1 76 52 84 9a 71 db 35"),
            b"test label",
            &hex("a0 ba 9f 93 6c da 31 18 27 a6 f7 96 ff d5 19 8c"),
            100,
        );
        assert_eq!(
            out[..16],
            hex("e3 f2 29 ba 72 7b e1 7b 8d 12 26 20 55 7c d4 53")[..]
        );
        assert_eq!(out.len(), 100);
    }

    #[test]
    fn a_record_under_another_key_does_not_open_and_keeps_the_sequence() {
        let s = suite(0x1301).unwrap();
        let mut a = Opener::tls13(s, &[1; 32]).unwrap();
        let header = [23, 3, 3, 0, 20];
        assert!(a.open(&header, &[0; 20]).is_none());
        assert_eq!(a.seq, 0);
    }
}
