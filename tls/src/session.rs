//! One captured TLS connection: both directions' bytes in, record by record, the application
//! data's plaintext out. The hellos are read in clear (the client's random finds the keys in
//! the key log; the server's hello gives the version and the suite); records that need keys
//! the log does not have yet are held (bounded) and opened once the keys appear.

use crate::crypto::{self, Opener, Suite};
use crate::keylog::{KeyLog, Secrets};

/// Largest record payload (RFC 8446 §5.2: 2^14 + 256; TLS 1.2 allows 2^14 + 2048).
const MAX_RECORD: usize = (1 << 14) + 2048;
/// Encrypted bytes held per direction while waiting for keys.
const MAX_HELD: usize = 256 << 10;
/// Handshake bytes read in clear before the hellos must have been seen.
const MAX_HANDSHAKE: usize = 64 << 10;

/// Where a session stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The hellos are being read.
    Handshake,
    /// The keys were found; records are being opened.
    Decrypting,
    /// The key log has no keys for this session: its records are skipped.
    NoKeys,
    /// A suite or version shadowtap does not decrypt (named).
    Unsupported(String),
    /// Broken: not TLS, a record that does not authenticate, a lost segment (why).
    Failed(String),
}

/// What the handshake said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: Option<&'static str>,
    /// The suite's IANA name.
    pub cipher: Option<&'static str>,
    /// The ClientHello's server name.
    pub sni: Option<String>,
    /// The protocol the server chose (ALPN), when seen.
    pub alpn: Option<String>,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records read.
    pub records: u64,
    /// Records opened.
    pub opened: u64,
    /// Plaintext application bytes out.
    pub plaintext_bytes: u64,
}

#[derive(Default)]
struct Direction {
    /// Bytes not yet a whole record.
    buf: Vec<u8>,
    /// Handshake bytes not yet a whole message (in clear, or opened).
    handshake: Vec<u8>,
    /// Records from here on are encrypted (TLS 1.2: after ChangeCipherSpec; TLS 1.3: after
    /// the ServerHello).
    encrypted: bool,
    opener: Option<Opener>,
    /// TLS 1.3: the application traffic secret, taken over when a record no longer opens
    /// under the handshake key.
    next_secret: Option<Vec<u8>>,
    /// Encrypted records waiting for keys.
    held: Vec<([u8; 5], Vec<u8>)>,
    held_bytes: usize,
}

/// One TLS connection being decrypted. Direction numbers are the caller's (0 and 1).
#[derive(Default)]
pub struct Session {
    dirs: [Direction; 2],
    client_dir: Option<usize>,
    client_random: Option<[u8; 32]>,
    server_random: Option<[u8; 32]>,
    suite: Option<Suite>,
    tls13: bool,
    keyed: bool,
    status: Option<Status>,
    info: Info,
    counters: Counters,
}

/// The HelloRetryRequest's fixed "random" (RFC 8446 §4.1.3).
const HELLO_RETRY: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// A bounds-checked reader over a handshake message.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The extensions of a hello: (type, data).
fn extensions(mut r: Reader<'_>) -> Vec<(usize, &[u8])> {
    let mut out = Vec::new();
    let Some(all) = r.vec16() else {
        return out;
    };
    let mut r = Reader(all);
    while let (Some(t), Some(d)) = (r.u16(), r.vec16()) {
        out.push((t, d));
    }
    out
}

/// The first name of an ALPN extension's list.
fn first_alpn(data: &[u8]) -> Option<String> {
    let mut r = Reader(data);
    let list = r.vec16()?;
    let name = Reader(list).vec8()?;
    Some(String::from_utf8_lossy(name).into_owned())
}

impl Session {
    /// A session with nothing seen yet.
    pub fn new() -> Session {
        Session::default()
    }

    /// Where it stands.
    pub fn status(&self) -> Status {
        self.status.clone().unwrap_or(Status::Handshake)
    }

    /// What the handshake said.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The direction the ClientHello came from.
    pub fn client_dir(&self) -> Option<usize> {
        self.client_dir
    }

    /// Bytes held (partial records, records waiting for keys).
    pub fn buffered_bytes(&self) -> usize {
        self.dirs
            .iter()
            .map(|d| d.buf.len() + d.handshake.len() + d.held_bytes)
            .sum()
    }

    fn fail(&mut self, why: impl Into<String>) {
        if !matches!(self.status, Some(Status::Failed(_))) {
            self.status = Some(Status::Failed(why.into()));
        }
        for d in &mut self.dirs {
            d.buf = Vec::new();
            d.held = Vec::new();
            d.held_bytes = 0;
        }
    }

    fn stopped(&self) -> bool {
        matches!(
            self.status,
            Some(Status::Failed(_) | Status::Unsupported(_) | Status::NoKeys)
        )
    }

    /// `len` bytes of direction `dir` were never captured: record boundaries are lost, so the
    /// rest of the connection cannot be read.
    pub fn gap(&mut self, _dir: usize, len: u64) {
        if !self.stopped() {
            self.fail(format!("{len} bytes were not captured"));
        }
    }

    /// Contiguous bytes of direction `dir`; the application data opened from them is appended
    /// to `out` as (direction, plaintext), in order.
    pub fn feed(
        &mut self,
        dir: usize,
        data: &[u8],
        keys: &KeyLog,
        out: &mut Vec<(usize, Vec<u8>)>,
    ) {
        if self.stopped() {
            return;
        }
        self.dirs[dir].buf.extend_from_slice(data);
        loop {
            let buf = &self.dirs[dir].buf;
            if buf.len() < 5 {
                break;
            }
            let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
            if !(20..=24).contains(&buf[0]) || buf[1] != 3 || len > MAX_RECORD {
                self.fail("not a TLS record");
                return;
            }
            if buf.len() < 5 + len {
                break;
            }
            let header: [u8; 5] = buf[..5].try_into().expect("five bytes");
            let payload = buf[5..5 + len].to_vec();
            self.dirs[dir].buf.drain(..5 + len);
            self.counters.records += 1;
            self.record(dir, header, payload, keys, out);
            if self.stopped() {
                return;
            }
        }
    }

    fn record(
        &mut self,
        dir: usize,
        header: [u8; 5],
        payload: Vec<u8>,
        keys: &KeyLog,
        out: &mut Vec<(usize, Vec<u8>)>,
    ) {
        let kind = header[0];
        if !self.dirs[dir].encrypted {
            match kind {
                22 => self.handshake(dir, &payload, keys),
                // TLS 1.2: the sender's next records are protected.
                20 => self.dirs[dir].encrypted = true,
                21 => {}
                _ => self.fail("application data before the handshake"),
            }
            return;
        }
        // TLS 1.3 sends ChangeCipherSpec in clear for middleboxes only.
        if kind == 20 && self.tls13 {
            return;
        }
        if !self.keyed {
            self.find_keys(keys);
            // Found now: what was held goes first.
            self.flush_held(keys, out);
            if self.stopped() {
                return;
            }
        }
        if self.dirs[dir].opener.is_none() {
            let d = &mut self.dirs[dir];
            if d.held_bytes + payload.len() > MAX_HELD {
                self.status = Some(Status::NoKeys);
                for d in &mut self.dirs {
                    d.held = Vec::new();
                    d.held_bytes = 0;
                }
                return;
            }
            d.held_bytes += payload.len();
            d.held.push((header, payload));
            return;
        }
        self.open(dir, &header, &payload, out);
    }

    fn open(
        &mut self,
        dir: usize,
        header: &[u8; 5],
        payload: &[u8],
        out: &mut Vec<(usize, Vec<u8>)>,
    ) {
        let Some(opener) = self.dirs[dir].opener.as_mut() else {
            return;
        };
        let opened = match opener.open(header, payload) {
            Some(o) => o,
            None => {
                // TLS 1.3: the handshake epoch is over, the application secret takes over.
                let next = self.dirs[dir]
                    .next_secret
                    .take()
                    .and_then(|s| Opener::tls13(self.suite?, &s));
                match next {
                    Some(mut n) => match n.open(header, payload) {
                        Some(o) => {
                            self.dirs[dir].opener = Some(n);
                            o
                        }
                        None => return self.fail("a record did not authenticate"),
                    },
                    None => return self.fail("a record did not authenticate"),
                }
            }
        };
        self.counters.opened += 1;
        match opened.content_type {
            23 => {
                self.counters.plaintext_bytes += opened.data.len() as u64;
                if !opened.data.is_empty() {
                    out.push((dir, opened.data));
                }
            }
            22 => self.encrypted_handshake(dir, &opened.data),
            _ => {}
        }
    }

    /// Handshake messages opened from records (TLS 1.3: EncryptedExtensions' ALPN,
    /// KeyUpdate; TLS 1.2: Finished).
    fn encrypted_handshake(&mut self, dir: usize, data: &[u8]) {
        self.dirs[dir].handshake.extend_from_slice(data);
        loop {
            let h = &self.dirs[dir].handshake;
            if h.len() < 4 {
                break;
            }
            let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
            if h.len() < 4 + len {
                if h.len() > MAX_HANDSHAKE {
                    return self.fail("a handshake message too large");
                }
                break;
            }
            let msg: Vec<u8> = self.dirs[dir].handshake.drain(..4 + len).collect();
            match msg[0] {
                // EncryptedExtensions.
                8 if self.tls13 => {
                    for (t, e) in extensions(Reader(&msg[4..])) {
                        if t == 16 {
                            self.info.alpn = first_alpn(e);
                        }
                    }
                }
                // KeyUpdate: the sender's next records are under the next secret.
                24 if self.tls13 => {
                    let next = self.dirs[dir].opener.as_ref().and_then(Opener::updated);
                    if next.is_none() {
                        return self.fail("a KeyUpdate could not be followed");
                    }
                    self.dirs[dir].opener = next;
                }
                _ => {}
            }
        }
    }

    /// Handshake messages in clear: the hellos.
    fn handshake(&mut self, dir: usize, data: &[u8], keys: &KeyLog) {
        self.dirs[dir].handshake.extend_from_slice(data);
        loop {
            let h = &self.dirs[dir].handshake;
            if h.len() < 4 {
                break;
            }
            let len = usize::from(h[1]) << 16 | usize::from(h[2]) << 8 | usize::from(h[3]);
            if h.len() < 4 + len {
                if h.len() > MAX_HANDSHAKE {
                    return self.fail("a handshake message too large");
                }
                break;
            }
            let msg: Vec<u8> = self.dirs[dir].handshake.drain(..4 + len).collect();
            let mut r = Reader(&msg[4..]);
            match msg[0] {
                1 => {
                    let (Some(_), Some(random)) = (r.take(2), r.take(32)) else {
                        return self.fail("a short ClientHello");
                    };
                    self.client_dir = Some(dir);
                    self.client_random = Some(random.try_into().expect("32 bytes"));
                    let (Some(_), Some(_), Some(_)) = (r.vec8(), r.vec16(), r.vec8()) else {
                        return self.fail("a short ClientHello");
                    };
                    for (t, e) in extensions(r) {
                        if t == 0 {
                            // server_name_list: type 0 (host_name), then the name.
                            if let Some(list) = Reader(e).vec16() {
                                let mut l = Reader(list);
                                if l.u8() == Some(0) {
                                    if let Some(name) = l.vec16() {
                                        self.info.sni =
                                            Some(String::from_utf8_lossy(name).into_owned());
                                    }
                                }
                            }
                        }
                    }
                }
                2 => {
                    let (Some(_), Some(random)) = (r.take(2), r.take(32)) else {
                        return self.fail("a short ServerHello");
                    };
                    let random: [u8; 32] = random.try_into().expect("32 bytes");
                    let (Some(_), Some(id)) = (r.vec8(), r.u16()) else {
                        return self.fail("a short ServerHello");
                    };
                    if r.u8().is_none() {
                        return self.fail("a short ServerHello");
                    }
                    let mut tls13 = false;
                    for (t, e) in extensions(r) {
                        match t {
                            43 if e == [3, 4] => tls13 = true,
                            16 => self.info.alpn = first_alpn(e),
                            _ => {}
                        }
                    }
                    if random == HELLO_RETRY {
                        // A second ClientHello (same random) and ServerHello follow.
                        continue;
                    }
                    self.server_random = Some(random);
                    self.tls13 = tls13;
                    self.info.version = Some(if tls13 { "TLSv1.3" } else { "TLSv1.2" });
                    let Some(suite) = crypto::suite(id as u16) else {
                        self.status = Some(Status::Unsupported(format!("cipher suite 0x{id:04x}")));
                        return;
                    };
                    self.info.cipher = Some(suite.name);
                    self.suite = Some(suite);
                    if tls13 {
                        // Everything after the ServerHello is protected, both ways.
                        self.dirs[0].encrypted = true;
                        self.dirs[1].encrypted = true;
                    }
                    self.find_keys(keys);
                }
                _ => {}
            }
        }
    }

    /// Looks the session's keys up and, when found, sets each direction's opener and opens
    /// what was held.
    fn find_keys(&mut self, keys: &KeyLog) {
        self.find_keys_with(keys, false);
    }

    fn find_keys_with(&mut self, keys: &KeyLog, fresh: bool) {
        let (Some(client), Some(cr), Some(sr), Some(suite)) = (
            self.client_dir,
            self.client_random,
            self.server_random,
            self.suite,
        ) else {
            return;
        };
        let found = if fresh {
            keys.lookup_fresh(&cr)
        } else {
            keys.lookup(&cr)
        };
        let Some(secrets) = found else {
            return;
        };
        let server = 1 - client;
        if self.tls13 {
            let Secrets {
                client_handshake: Some(ch),
                server_handshake: Some(sh),
                client_traffic,
                server_traffic,
                ..
            } = secrets
            else {
                return;
            };
            let (Some(c), Some(s)) = (Opener::tls13(suite, &ch), Opener::tls13(suite, &sh)) else {
                return self.fail("keys of the wrong length");
            };
            self.dirs[client].opener = Some(c);
            self.dirs[client].next_secret = client_traffic;
            self.dirs[server].opener = Some(s);
            self.dirs[server].next_secret = server_traffic;
        } else {
            let Some(master) = secrets.master else {
                return;
            };
            let Some([c, s]) = Opener::tls12(suite, &master, &cr, &sr) else {
                return self.fail("keys of the wrong length");
            };
            self.dirs[client].opener = Some(c);
            self.dirs[server].opener = Some(s);
        }
        self.keyed = true;
        self.status = Some(Status::Decrypting);
    }

    /// Opens the records held for keys, once they are found (the caller's next `feed` does it
    /// too); the plaintext to `out`.
    pub fn flush_held(&mut self, keys: &KeyLog, out: &mut Vec<(usize, Vec<u8>)>) {
        if self.stopped() || self.dirs.iter().all(|d| d.held.is_empty()) {
            return;
        }
        if !self.keyed {
            self.find_keys(keys);
        }
        // The client's first: a request before its response.
        let client = self.client_dir.unwrap_or(0);
        for dir in [client, 1 - client] {
            if self.dirs[dir].opener.is_none() {
                continue;
            }
            let held = std::mem::take(&mut self.dirs[dir].held);
            self.dirs[dir].held_bytes = 0;
            for (h, p) in held {
                self.open(dir, &h, &p, out);
                if self.stopped() {
                    return;
                }
            }
        }
    }

    /// The end of the capture: records still waiting for keys mean the log never had them.
    pub fn finish(&mut self, keys: &KeyLog, out: &mut Vec<(usize, Vec<u8>)>) {
        if !self.keyed && !self.stopped() {
            self.find_keys_with(keys, true);
        }
        self.flush_held(keys, out);
        if !self.stopped() && !self.keyed && self.suite.is_some() {
            self.status = Some(Status::NoKeys);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{expand_label, suite, Hash};
    use proptest::prelude::*;
    use ring::aead;

    /// The sending side of TLS 1.3 records, as a peer would write them.
    struct Sealer {
        secret: Vec<u8>,
        key: aead::LessSafeKey,
        iv: Vec<u8>,
        seq: u64,
    }

    impl Sealer {
        fn new(secret: &[u8]) -> Sealer {
            let key = expand_label(Hash::Sha256, secret, "key", 16).unwrap();
            Sealer {
                secret: secret.to_vec(),
                key: aead::LessSafeKey::new(
                    aead::UnboundKey::new(&aead::AES_128_GCM, &key).unwrap(),
                ),
                iv: expand_label(Hash::Sha256, secret, "iv", 12).unwrap(),
                seq: 0,
            }
        }

        fn seal(&mut self, content_type: u8, data: &[u8]) -> Vec<u8> {
            let mut inner = data.to_vec();
            inner.push(content_type);
            inner.extend_from_slice(&[0, 0, 0]); // padding
            let len = (inner.len() + 16) as u16;
            let header = [23, 3, 3, (len >> 8) as u8, len as u8];
            let mut nonce = [0u8; 12];
            nonce.copy_from_slice(&self.iv);
            for (b, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
                *b ^= s;
            }
            self.key
                .seal_in_place_append_tag(
                    aead::Nonce::assume_unique_for_key(nonce),
                    aead::Aad::from(header),
                    &mut inner,
                )
                .unwrap();
            self.seq += 1;
            [&header[..], &inner].concat()
        }

        fn update(&mut self) {
            let next = expand_label(Hash::Sha256, &self.secret, "traffic upd", 32).unwrap();
            *self = Sealer::new(&next);
        }
    }

    fn plain_record(kind: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len() as u16;
        [&[kind, 3, 3, (len >> 8) as u8, len as u8][..], body].concat()
    }

    fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
        let len = body.len() as u32;
        [
            &[kind, (len >> 16) as u8, (len >> 8) as u8, len as u8][..],
            body,
        ]
        .concat()
    }

    const RANDOM: [u8; 32] = [7; 32];

    fn client_hello() -> Vec<u8> {
        let sni = {
            let name = b"api.example";
            let entry = [&[0u8][..], &(name.len() as u16).to_be_bytes(), name].concat();
            let list = [&(entry.len() as u16).to_be_bytes()[..], &entry].concat();
            [
                &0u16.to_be_bytes()[..],
                &(list.len() as u16).to_be_bytes(),
                &list,
            ]
            .concat()
        };
        let body = [
            &[3, 3][..],
            &RANDOM,
            &[0],                // session id
            &[0, 2, 0x13, 0x01], // suites
            &[1, 0],             // compression
            &(sni.len() as u16).to_be_bytes(),
            &sni,
        ]
        .concat();
        plain_record(22, &handshake(1, &body))
    }

    fn server_hello() -> Vec<u8> {
        let ext = [&43u16.to_be_bytes()[..], &[0, 2, 3, 4]].concat();
        let body = [
            &[3, 3][..],
            &[9; 32],
            &[0],
            &[0x13, 0x01],
            &[0],
            &(ext.len() as u16).to_be_bytes(),
            &ext,
        ]
        .concat();
        plain_record(22, &handshake(2, &body))
    }

    fn keys() -> KeyLog {
        let r: String = RANDOM.iter().map(|b| format!("{b:02x}")).collect();
        let hex = |b: u8| format!("{b:02x}").repeat(32);
        KeyLog::from_text(&format!(
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET {r} {}\nSERVER_HANDSHAKE_TRAFFIC_SECRET {r} {}\nCLIENT_TRAFFIC_SECRET_0 {r} {}\nSERVER_TRAFFIC_SECRET_0 {r} {}\n",
            hex(1), hex(2), hex(3), hex(4)
        ))
    }

    /// A whole TLS 1.3 conversation, direction 0 the client: (direction, wire bytes) in order,
    /// and the plaintext each side sent. The server updates its key half way.
    /// (direction, bytes) chunks on the wire.
    type Wire = Vec<(usize, Vec<u8>)>;

    fn conversation(messages: &[(bool, Vec<u8>)]) -> (Wire, [Vec<u8>; 2]) {
        let mut wire = vec![(0, client_hello()), (1, server_hello())];
        let (mut ch, mut sh) = (Sealer::new(&[1; 32]), Sealer::new(&[2; 32]));
        wire.push((1, plain_record(20, &[1]))); // middlebox compatibility
        wire.push((1, sh.seal(22, &handshake(8, &[0, 0]))));
        wire.push((1, sh.seal(22, &handshake(20, &[0; 32]))));
        wire.push((0, ch.seal(22, &handshake(20, &[0; 32]))));
        let (mut ca, mut sa) = (Sealer::new(&[3; 32]), Sealer::new(&[4; 32]));
        let mut sent = [Vec::new(), Vec::new()];
        for (i, (from_server, m)) in messages.iter().enumerate() {
            if *from_server {
                if i == messages.len() / 2 {
                    wire.push((1, sa.seal(22, &handshake(24, &[0]))));
                    sa.update();
                }
                wire.push((1, sa.seal(23, m)));
                sent[1].extend_from_slice(m);
            } else {
                wire.push((0, ca.seal(23, m)));
                sent[0].extend_from_slice(m);
            }
        }
        (wire, sent)
    }

    proptest! {
        /// Whatever the messages and however the bytes are cut, each direction's plaintext
        /// comes out whole and in order, across the epochs and a KeyUpdate.
        #[test]
        fn every_byte_sent_comes_out_in_order(
            messages in proptest::collection::vec((any::<bool>(), proptest::collection::vec(1u8..=255, 1..300)), 1..12),
            cut in 1usize..64,
        ) {
            let (wire, sent) = conversation(&messages);
            let keys = keys();
            let mut s = Session::new();
            let mut out = Vec::new();
            for (dir, bytes) in &wire {
                for chunk in bytes.chunks(cut) {
                    s.feed(*dir, chunk, &keys, &mut out);
                }
            }
            prop_assert_eq!(s.status(), Status::Decrypting);
            let mut got = [Vec::new(), Vec::new()];
            for (dir, p) in out {
                got[dir].extend_from_slice(&p);
            }
            prop_assert_eq!(&got, &sent);
            prop_assert_eq!(s.info().sni.as_deref(), Some("api.example"));
            prop_assert_eq!(s.info().cipher, Some(suite(0x1301).unwrap().name));
        }
    }

    /// Keys that arrive after the records (a live client's log written late) open what was
    /// held, in order.
    #[test]
    fn records_wait_for_keys_that_come_late() {
        let (wire, sent) = conversation(&[(false, b"GET / HTTP/1.1\r\n\r\n".to_vec())]);
        let late = KeyLog::default();
        let mut s = Session::new();
        let mut out = Vec::new();
        for (dir, bytes) in &wire {
            s.feed(*dir, bytes, &late, &mut out);
        }
        assert!(out.is_empty());
        let keys = keys();
        s.finish(&keys, &mut out);
        assert_eq!(out, vec![(0, sent[0].clone())]);
    }

    #[test]
    fn bytes_that_are_not_tls_fail_the_session() {
        let mut s = Session::new();
        let mut out = Vec::new();
        s.feed(0, b"GET / HTTP/1.1\r\n\r\n", &keys(), &mut out);
        assert!(matches!(s.status(), Status::Failed(_)));
        assert_eq!(s.buffered_bytes(), 0);
    }
}
