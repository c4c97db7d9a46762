//! Hand-crafted TLS ClientHellos and the first record of the server's answer (R-DISC-2 in server mode).
//!
//! rustls cannot speak TLS 1.0/1.1 or offer CBC cipher suites as a client, so the kit writes the ClientHello itself
//! (RFC 5246 §7.4.1.2 for TLS ≤ 1.2, RFC 8446 §4.1.2 for TLS 1.3), sends it over a plain TCP connection and reads
//! the first record back: a ServerHello says what the server negotiated, an alert (or a closed connection) that it
//! refused. No handshake is ever completed. Everything here is pure (bytes in, bytes out) except [`probe`].
//!
//! Record layer (RFC 8446 §5.1): `type(1) legacy_record_version(2) length(2) fragment`; handshake header
//! (RFC 8446 §4): `msg_type(1) length(3)`; alert (RFC 8446 §6): `level(1) description(1)`.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// TLS 1.0 (`0x0301`).
pub const TLS10: u16 = 0x0301;
/// TLS 1.1 (`0x0302`).
pub const TLS11: u16 = 0x0302;
/// TLS 1.2 (`0x0303`).
pub const TLS12: u16 = 0x0303;
/// TLS 1.3 (`0x0304`, only ever in `supported_versions`, RFC 8446 §4.2.1).
pub const TLS13: u16 = 0x0304;

/// Record content type `handshake` (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// Record content type `alert`.
const CONTENT_ALERT: u8 = 21;
/// Handshake type `client_hello`.
const HS_CLIENT_HELLO: u8 = 1;
/// Handshake type `server_hello`.
const HS_SERVER_HELLO: u8 = 2;

/// Extension `server_name` (RFC 6066 §3).
const EXT_SERVER_NAME: u16 = 0;
/// Extension `supported_groups` (RFC 8422 §5.1.1, RFC 8446 §4.2.7).
const EXT_SUPPORTED_GROUPS: u16 = 10;
/// Extension `ec_point_formats` (RFC 8422 §5.1.2).
const EXT_EC_POINT_FORMATS: u16 = 11;
/// Extension `signature_algorithms` (RFC 5246 §7.4.1.4.1, RFC 8446 §4.2.3).
const EXT_SIGNATURE_ALGORITHMS: u16 = 13;
/// Extension `extended_master_secret` (RFC 7627).
const EXT_EXTENDED_MASTER_SECRET: u16 = 23;
/// Extension `supported_versions` (RFC 8446 §4.2.1).
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// Extension `key_share` (RFC 8446 §4.2.8).
const EXT_KEY_SHARE: u16 = 51;
/// Extension `renegotiation_info` (RFC 5746 §3.2).
const EXT_RENEGOTIATION_INFO: u16 = 0xff01;

/// Named group x25519 (RFC 8446 §4.2.7).
const GROUP_X25519: u16 = 0x001d;

/// The `random` of a HelloRetryRequest (RFC 8446 §4.1.3): SHA-256 of "HelloRetryRequest".
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// CBC cipher suites (RFC 5246 Appendix A.5, RFC 4492 §6, RFC 5289 §3): ECDHE-RSA, ECDHE-ECDSA and RSA key
/// transport with AES-CBC, HMAC-SHA1 or SHA-256/384.
pub const CBC_SUITES: [u16; 12] = [
    0xc013, // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
    0xc014, // TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA
    0xc009, // TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA
    0xc00a, // TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA
    0xc027, // TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256
    0xc028, // TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384
    0xc023, // TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256
    0xc024, // TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384
    0x002f, // TLS_RSA_WITH_AES_128_CBC_SHA
    0x0035, // TLS_RSA_WITH_AES_256_CBC_SHA
    0x003c, // TLS_RSA_WITH_AES_128_CBC_SHA256
    0x000a, // TLS_RSA_WITH_3DES_EDE_CBC_SHA
];

/// TLS 1.2 AEAD suites with ECDHE (RFC 5289 §3, RFC 7905 §2; the suites RFC 9325 §4.2 recommends).
pub const TLS12_AEAD_SUITES: [u16; 6] = [
    0xc02b, // TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    0xc02f, // TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    0xc02c, // TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    0xc030, // TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
    0xcca9, // TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
    0xcca8, // TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
];

/// The TLS 1.3 suites (RFC 8446 §B.4), all AEAD.
pub const TLS13_SUITES: [u16; 3] = [0x1301, 0x1302, 0x1303];

/// Whether a cipher suite uses an AEAD cipher (AES-GCM, AES-CCM, ChaCha20-Poly1305, or any TLS 1.3 suite).
pub fn is_aead(suite: u16) -> bool {
    TLS13_SUITES.contains(&suite)
        || TLS12_AEAD_SUITES.contains(&suite)
        // The other GCM suites of RFC 5288 and RFC 5289, and the CCM suites of RFC 6655 and RFC 7251.
        || (0x009c..=0x00a7).contains(&suite)
        || (0xc02b..=0xc032).contains(&suite)
        || (0xc09c..=0xc0af).contains(&suite)
        || (0xcca8..=0xccae).contains(&suite)
}

/// What a probe offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Offer {
    /// TLS 1.0 only, CBC suites (no `supported_versions`).
    Tls10,
    /// TLS 1.1 only, CBC suites (no `supported_versions`).
    Tls11,
    /// TLS 1.2 with CBC suites only (no AEAD suite at all).
    Tls12Cbc,
    /// TLS 1.2 with ECDHE AEAD suites only.
    Tls12Aead,
    /// TLS 1.3 only (`supported_versions` 1.3, an x25519 key share).
    Tls13,
}

impl Offer {
    /// Every offer a server must refuse (RFC 8996 §2–3, RFC 9325 §4.2).
    pub const LEGACY: [Offer; 3] = [Offer::Tls10, Offer::Tls11, Offer::Tls12Cbc];
    /// Every offer a server must accept (RFC 9325 §3.1.1, §4.2).
    pub const MODERN: [Offer; 2] = [Offer::Tls12Aead, Offer::Tls13];

    /// A short name for evidence.
    pub fn label(self) -> &'static str {
        match self {
            Self::Tls10 => "TLS 1.0 (CBC suites)",
            Self::Tls11 => "TLS 1.1 (CBC suites)",
            Self::Tls12Cbc => "TLS 1.2 with CBC suites only",
            Self::Tls12Aead => "TLS 1.2 with AEAD suites",
            Self::Tls13 => "TLS 1.3",
        }
    }

    /// The highest version offered.
    pub fn version(self) -> u16 {
        match self {
            Self::Tls10 => TLS10,
            Self::Tls11 => TLS11,
            Self::Tls12Cbc | Self::Tls12Aead => TLS12,
            Self::Tls13 => TLS13,
        }
    }

    /// The cipher suites offered.
    pub fn suites(self) -> &'static [u16] {
        match self {
            Self::Tls10 | Self::Tls11 | Self::Tls12Cbc => &CBC_SUITES,
            Self::Tls12Aead => &TLS12_AEAD_SUITES,
            Self::Tls13 => &TLS13_SUITES,
        }
    }
}

/// The per-connection random bytes of a ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloRandom {
    /// `Random` (RFC 8446 §4.1.2).
    pub random: [u8; 32],
    /// `legacy_session_id` (32 bytes: TLS 1.3 middlebox compatibility mode, harmless for older versions).
    pub session_id: [u8; 32],
    /// The x25519 public key of the TLS 1.3 key share (any 32 bytes are a valid x25519 public value).
    pub key_share: [u8; 32],
}

impl HelloRandom {
    /// Fresh random bytes.
    pub fn fresh() -> Self {
        use rand::RngCore;
        let mut r = Self { random: [0; 32], session_id: [0; 32], key_share: [0; 32] };
        let mut rng = rand::rngs::OsRng;
        rng.fill_bytes(&mut r.random);
        rng.fill_bytes(&mut r.session_id);
        rng.fill_bytes(&mut r.key_share);
        r
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `body` with a big-endian length prefix of `width` bytes (1, 2 or 3; every length here fits).
fn put_vec(out: &mut Vec<u8>, width: usize, body: &[u8]) {
    let len = body.len().to_be_bytes();
    out.extend_from_slice(&len[len.len() - width..]);
    out.extend_from_slice(body);
}

fn put_ext(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    put_u16(out, kind);
    put_vec(out, 2, body);
}

/// Whether `host` may go into `server_name` (RFC 6066 §3: a DNS host name, never an IP literal).
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.parse::<std::net::IpAddr>().is_err()
        && !host.starts_with('[')
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The ClientHello record for `offer` (one record, RFC 5246 §7.4.1.2 / RFC 8446 §4.1.2). `host` goes into
/// `server_name` when it is a DNS name. TLS ≤ 1.1 offers carry no `supported_versions` and no
/// `signature_algorithms` (RFC 5246 §7.4.1.4.1: not offered with prior versions).
pub fn client_hello(offer: Offer, host: &str, r: &HelloRandom) -> Vec<u8> {
    let legacy_version = offer.version().min(TLS12);
    let mut body = Vec::with_capacity(256);
    put_u16(&mut body, legacy_version);
    body.extend_from_slice(&r.random);
    put_vec(&mut body, 1, &r.session_id);
    let mut suites = Vec::new();
    for s in offer.suites() {
        put_u16(&mut suites, *s);
    }
    put_vec(&mut body, 2, &suites);
    put_vec(&mut body, 1, &[0]); // compression_methods: null only

    let mut ext = Vec::new();
    if is_dns_name(host) {
        let mut entry = vec![0u8]; // name_type host_name
        put_vec(&mut entry, 2, host.as_bytes());
        let mut list = Vec::new();
        put_vec(&mut list, 2, &entry);
        put_ext(&mut ext, EXT_SERVER_NAME, &list);
    }
    let mut groups = Vec::new();
    for g in [GROUP_X25519, 0x0017, 0x0018] {
        put_u16(&mut groups, g); // x25519, secp256r1, secp384r1
    }
    let mut groups_ext = Vec::new();
    put_vec(&mut groups_ext, 2, &groups);
    put_ext(&mut ext, EXT_SUPPORTED_GROUPS, &groups_ext);
    if offer != Offer::Tls13 {
        put_ext(&mut ext, EXT_EC_POINT_FORMATS, &[1, 0]); // uncompressed
        put_ext(&mut ext, EXT_RENEGOTIATION_INFO, &[0]); // empty renegotiated_connection
    }
    if offer.version() >= TLS12 {
        let mut algs = Vec::new();
        // ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256, ecdsa_secp384r1_sha384,
        // rsa_pss_rsae_sha384, rsa_pkcs1_sha384, ed25519, rsa_pss_rsae_sha512, rsa_pkcs1_sha512, rsa_pkcs1_sha1,
        // ecdsa_sha1
        for a in [0x0403u16, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0807, 0x0806, 0x0601, 0x0201, 0x0203] {
            put_u16(&mut algs, a);
        }
        let mut algs_ext = Vec::new();
        put_vec(&mut algs_ext, 2, &algs);
        put_ext(&mut ext, EXT_SIGNATURE_ALGORITHMS, &algs_ext);
        put_ext(&mut ext, EXT_EXTENDED_MASTER_SECRET, &[]);
    }
    if offer == Offer::Tls13 {
        put_ext(&mut ext, EXT_SUPPORTED_VERSIONS, &[2, 0x03, 0x04]);
        let mut share = Vec::new();
        put_u16(&mut share, GROUP_X25519);
        put_vec(&mut share, 2, &r.key_share);
        let mut shares = Vec::new();
        put_vec(&mut shares, 2, &share);
        put_ext(&mut ext, EXT_KEY_SHARE, &shares);
    }
    put_vec(&mut body, 2, &ext);

    let mut hs = vec![HS_CLIENT_HELLO];
    put_vec(&mut hs, 3, &body);
    let mut record = vec![CONTENT_HANDSHAKE];
    put_u16(&mut record, TLS10); // legacy_record_version of a first ClientHello (RFC 8446 §5.1)
    put_vec(&mut record, 2, &hs);
    record
}

/// What a server's ServerHello says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerHello {
    /// The negotiated version: `supported_versions` when present (TLS 1.3), else `legacy_version`.
    pub version: u16,
    /// The chosen cipher suite.
    pub cipher_suite: u16,
    /// Whether it is a HelloRetryRequest (RFC 8446 §4.1.3): the server accepts TLS 1.3 but wants another share.
    pub retry: bool,
}

/// The server's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A ServerHello: the server accepted the offer.
    ServerHello(ServerHello),
    /// An alert (RFC 8446 §6): the server refused.
    Alert {
        /// 1 warning, 2 fatal.
        level: u8,
        /// The `AlertDescription` (70 `protocol_version`, 40 `handshake_failure`, …).
        description: u8,
    },
    /// The connection was closed before any byte came back: the server refused.
    Closed,
}

/// Why the answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The answer ended inside a record or message.
    #[error("the answer ends inside a TLS record ({0} bytes)")]
    Truncated(usize),
    /// The first byte is not a TLS content type the server may send first (handshake or alert).
    #[error("the answer is not TLS (first byte 0x{0:02x}); a plain HTTP server?")]
    NotTls(u8),
    /// A handshake message other than ServerHello came first.
    #[error("the first handshake message is of type {0}, not ServerHello")]
    UnexpectedHandshake(u8),
    /// The connection failed.
    #[error("connection: {0}")]
    Io(String),
    /// No answer in time.
    #[error("no answer within {0} s")]
    Timeout(u64),
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    total: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProbeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or(ProbeError::Truncated(self.total))?;
        let s = &self.buf[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ProbeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, ProbeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Result<usize, ProbeError> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

/// Whether `bytes` (what arrived so far) hold a complete first answer (for [`probe`]'s read loop): a whole record,
/// or a whole ServerHello when it spans records.
pub fn is_complete(bytes: &[u8]) -> bool {
    !matches!(parse_answer(bytes), Err(ProbeError::Truncated(_)))
}

/// Parses the first answer to a ClientHello: a ServerHello (possibly spread over several handshake records), an
/// alert, or nothing (an empty answer: the server closed the connection).
pub fn parse_answer(bytes: &[u8]) -> Result<Answer, ProbeError> {
    if bytes.is_empty() {
        return Ok(Answer::Closed);
    }
    let mut r = Reader { buf: bytes, at: 0, total: bytes.len() };
    let content = r.u8()?;
    if content != CONTENT_HANDSHAKE && content != CONTENT_ALERT {
        return Err(ProbeError::NotTls(content));
    }
    let _record_version = r.u16()?;
    let len = usize::from(r.u16()?);
    let fragment = r.take(len)?;
    if content == CONTENT_ALERT {
        let mut a = Reader { buf: fragment, at: 0, total: bytes.len() };
        return Ok(Answer::Alert { level: a.u8()?, description: a.u8()? });
    }
    // The handshake message may continue in the following handshake records (RFC 8446 §5.1).
    let mut hs = fragment.to_vec();
    while hs.len() < 4 || hs.len() < 4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3])) {
        if r.u8()? != CONTENT_HANDSHAKE {
            return Err(ProbeError::UnexpectedHandshake(hs.first().copied().unwrap_or(0)));
        }
        let _ = r.u16()?;
        let len = usize::from(r.u16()?);
        hs.extend_from_slice(r.take(len)?);
    }
    let mut h = Reader { buf: &hs, at: 0, total: bytes.len() };
    let kind = h.u8()?;
    if kind != HS_SERVER_HELLO {
        return Err(ProbeError::UnexpectedHandshake(kind));
    }
    let body_len = h.u24()?;
    let body = h.take(body_len)?;
    let mut b = Reader { buf: body, at: 0, total: bytes.len() };
    let legacy_version = b.u16()?;
    let random = b.take(32)?;
    let sid_len = usize::from(b.u8()?);
    b.take(sid_len)?;
    let cipher_suite = b.u16()?;
    let _compression = b.u8()?;
    let mut version = legacy_version;
    if b.at < body.len() {
        let ext_len = usize::from(b.u16()?);
        let mut e = Reader { buf: b.take(ext_len)?, at: 0, total: bytes.len() };
        while e.at < e.buf.len() {
            let kind = e.u16()?;
            let len = usize::from(e.u16()?);
            let data = e.take(len)?;
            if kind == EXT_SUPPORTED_VERSIONS && data.len() == 2 {
                version = u16::from_be_bytes([data[0], data[1]]);
            }
        }
    }
    Ok(Answer::ServerHello(ServerHello { version, cipher_suite, retry: random == HRR_RANDOM }))
}

/// A version number as text.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        TLS10 => "TLS 1.0".into(),
        TLS11 => "TLS 1.1".into(),
        TLS12 => "TLS 1.2".into(),
        TLS13 => "TLS 1.3".into(),
        other => format!("version 0x{other:04x}"),
    }
}

/// An alert description as text (RFC 8446 §6, RFC 5246 §7.2).
pub fn alert_name(d: u8) -> String {
    match d {
        0 => "close_notify".into(),
        10 => "unexpected_message".into(),
        40 => "handshake_failure".into(),
        47 => "illegal_parameter".into(),
        50 => "decode_error".into(),
        70 => "protocol_version".into(),
        71 => "insufficient_security".into(),
        80 => "internal_error".into(),
        86 => "inappropriate_fallback".into(),
        109 => "missing_extension".into(),
        112 => "unrecognized_name".into(),
        other => format!("alert {other}"),
    }
}

/// Describes an answer for evidence.
pub fn describe(a: &Answer) -> String {
    match a {
        Answer::ServerHello(h) => format!(
            "{}ServerHello: {}, cipher suite 0x{:04x}{}",
            if h.retry { "HelloRetryRequest " } else { "" },
            version_name(h.version),
            h.cipher_suite,
            if is_aead(h.cipher_suite) { " (AEAD)" } else { " (not AEAD)" }
        ),
        Answer::Alert { level, description } => {
            format!("alert {} ({}, level {level})", alert_name(*description), description)
        }
        Answer::Closed => "connection closed without an answer".into(),
    }
}

/// Judges the answer to an offer the server must refuse ([`Offer::LEGACY`]): `Ok` with how it refused, `Err` with
/// what it negotiated.
pub fn judge_refusal(offer: Offer, answer: &Answer) -> Result<String, String> {
    match answer {
        Answer::Alert { .. } | Answer::Closed => Ok(format!("{}: refused with {}", offer.label(), describe(answer))),
        Answer::ServerHello(h) => {
            let what = describe(answer);
            if h.version < TLS12 {
                Err(format!("{}: the server negotiated {} ({what})", offer.label(), version_name(h.version)))
            } else if !is_aead(h.cipher_suite) {
                Err(format!("{}: the server chose a cipher suite without AEAD ({what})", offer.label()))
            } else {
                Err(format!(
                    "{}: the server answered with a suite or version that was not offered ({what})",
                    offer.label()
                ))
            }
        }
    }
}

/// Judges the answer to an offer the server must accept ([`Offer::MODERN`]): `Ok` with what it negotiated, `Err`
/// with why that is not an acceptance of the offer.
pub fn judge_acceptance(offer: Offer, answer: &Answer) -> Result<String, String> {
    let what = describe(answer);
    let Answer::ServerHello(h) = answer else { return Err(format!("{}: refused ({what})", offer.label())) };
    if h.version != offer.version() {
        return Err(format!("{}: the server negotiated {} ({what})", offer.label(), version_name(h.version)));
    }
    if !offer.suites().contains(&h.cipher_suite) {
        return Err(format!("{}: the server chose a cipher suite that was not offered ({what})", offer.label()));
    }
    Ok(format!("{}: accepted with {what}", offer.label()))
}

/// Sends the ClientHello of `offer` to `host:port` over a fresh TCP connection and reads the first answer (up to
/// `timeout` for connecting and for the answer). The connection is dropped without completing any handshake.
pub async fn probe(host: &str, port: u16, offer: Offer, timeout: Duration) -> Result<Answer, ProbeError> {
    let secs = timeout.as_secs();
    let addr_host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((addr_host, port));
    let mut stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ProbeError::Timeout(secs))?
        .map_err(|e| ProbeError::Io(e.to_string()))?;
    let hello = client_hello(offer, addr_host, &HelloRandom::fresh());
    stream.write_all(&hello).await.map_err(|e| ProbeError::Io(e.to_string()))?;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if is_complete(&got) || got.len() > 64 * 1024 {
                        return Ok(());
                    }
                }
                // A reset after an alert, or instead of one: what arrived decides.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(ProbeError::Io(e.to_string())),
            }
        }
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| ProbeError::Timeout(secs))??;
    parse_answer(&got)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn fixed() -> HelloRandom {
        HelloRandom { random: [7; 32], session_id: [9; 32], key_share: [5; 32] }
    }

    /// The simulated server's own TLS configuration (TLS 1.2/1.3, AEAD suites only), in a temporary directory.
    fn rustls_server() -> (crate::test_support::TempDir, Arc<rustls::ServerConfig>) {
        crate::server::tls::install_crypto_provider();
        let dir = crate::test_support::TempDir::new("tls-probe");
        let tls = crate::server::tls::load_or_create(dir.path(), &[]).expect("server TLS");
        let config = Arc::clone(&tls.config);
        (dir, config)
    }

    /// Feeds a crafted ClientHello to a real rustls server and returns the bytes it answers.
    fn rustls_answer(config: &Arc<rustls::ServerConfig>, offer: Offer) -> Vec<u8> {
        let mut conn = rustls::ServerConnection::new(Arc::clone(config)).expect("connection");
        let hello = client_hello(offer, "localhost", &HelloRandom::fresh());
        let mut input: &[u8] = &hello;
        while !input.is_empty() {
            conn.read_tls(&mut input).expect("read_tls");
        }
        let _ = conn.process_new_packets();
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    #[test]
    fn hello_layout() {
        let h = client_hello(Offer::Tls10, "api.example", &fixed());
        assert_eq!(&h[..3], &[22, 0x03, 0x01], "handshake record, TLS 1.0 record version");
        assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])), h.len() - 5, "record length");
        assert_eq!(h[5], HS_CLIENT_HELLO);
        let hs_len = usize::from(h[6]) << 16 | usize::from(h[7]) << 8 | usize::from(h[8]);
        assert_eq!(hs_len, h.len() - 9, "handshake length");
        assert_eq!(&h[9..11], &[0x03, 0x01], "legacy_version TLS 1.0");
        assert_eq!(&h[11..43], &[7; 32]);
        assert_eq!(h[43], 32, "session id length");
        let suites_at = 44 + 32;
        assert_eq!(usize::from(u16::from_be_bytes([h[suites_at], h[suites_at + 1]])), CBC_SUITES.len() * 2);
        assert_eq!(&h[suites_at + 2..suites_at + 4], &[0xc0, 0x13]);
        let contains = |needle: &[u8]| h.windows(needle.len()).any(|w| w == needle);
        assert!(contains(b"api.example"), "server_name");
        assert!(!contains(&[0x00, 0x2b, 0x00, 0x03]), "no supported_versions for TLS <= 1.1");
        let ip = client_hello(Offer::Tls13, "127.0.0.1", &fixed());
        assert!(!ip.windows(9).any(|w| w == b"127.0.0.1"), "no IP literal in server_name (RFC 6066 §3)");
        assert!(ip.windows(5).any(|w| w == [0x00, 0x2b, 0x00, 0x03, 0x02]), "supported_versions for TLS 1.3");
    }

    /// The simulated server's rustls refuses every legacy offer with a fatal `handshake_failure` or
    /// `protocol_version` alert (never `decode_error`: the hellos are well formed; OpenSSL 3.0's `s_server` with
    /// `-tls1`, `-tls1_1` and `-tls1_2 -cipher ALL:@SECLEVEL=0` negotiates each of them), and accepts the modern
    /// ones.
    #[test]
    fn a_real_rustls_server_judges_the_crafted_hellos() {
        let (_dir, config) = rustls_server();
        for offer in Offer::LEGACY {
            let answer = parse_answer(&rustls_answer(&config, offer)).expect("an alert");
            assert!(
                matches!(answer, Answer::Alert { level: 2, description: 40 | 70 }),
                "{offer:?}: {}",
                describe(&answer)
            );
            assert!(judge_refusal(offer, &answer).is_ok());
            assert!(judge_acceptance(offer, &answer).is_err());
        }
        let tls12 = parse_answer(&rustls_answer(&config, Offer::Tls12Aead)).expect("a ServerHello");
        let Answer::ServerHello(h) = tls12 else { panic!("{tls12:?}") };
        assert_eq!(h.version, TLS12);
        assert!(TLS12_AEAD_SUITES.contains(&h.cipher_suite) && !h.retry);
        assert!(judge_acceptance(Offer::Tls12Aead, &tls12).is_ok());
        let tls13 = parse_answer(&rustls_answer(&config, Offer::Tls13)).expect("a ServerHello");
        let Answer::ServerHello(h) = tls13 else { panic!("{tls13:?}") };
        assert_eq!(h.version, TLS13);
        assert!(TLS13_SUITES.contains(&h.cipher_suite));
        assert!(judge_acceptance(Offer::Tls13, &tls13).is_ok());
        assert!(judge_refusal(Offer::Tls13, &tls13).is_err());
    }

    /// A real TLS 1.0 ServerHello (OpenSSL 3.0 `s_server -tls1 -cipher ALL:@SECLEVEL=0`, answering
    /// `client_hello(Offer::Tls10, …)` with TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA; the record holds the ServerHello
    /// only, as read by [`probe`]): a server that negotiates it fails.
    #[test]
    fn a_legacy_server_hello_is_a_failure() {
        let answer = parse_answer(&hex(OPENSSL_TLS10_SERVER_HELLO)).expect("a ServerHello");
        assert_eq!(answer, Answer::ServerHello(ServerHello { version: TLS10, cipher_suite: 0xc013, retry: false }));
        let why = judge_refusal(Offer::Tls10, &answer).unwrap_err();
        assert!(why.contains("negotiated TLS 1.0"), "{why}");
        // TLS 1.2 with a CBC suite: not AEAD.
        let cbc = Answer::ServerHello(ServerHello { version: TLS12, cipher_suite: 0xc013, retry: false });
        assert!(judge_refusal(Offer::Tls12Cbc, &cbc).unwrap_err().contains("without AEAD"));
        assert!(judge_acceptance(Offer::Tls12Aead, &cbc).unwrap_err().contains("not offered"));
        assert!(judge_refusal(Offer::Tls11, &Answer::Closed).is_ok());
    }

    #[test]
    fn bad_answers_are_typed_errors() {
        assert_eq!(parse_answer(b""), Ok(Answer::Closed));
        assert_eq!(parse_answer(b"HTTP/1.1 400 Bad Request\r\n\r\n"), Err(ProbeError::NotTls(b'H')));
        assert!(matches!(parse_answer(&[22, 3, 3, 0, 10, 2, 0]), Err(ProbeError::Truncated(_))));
        assert!(!is_complete(&[21, 3, 3, 0, 2, 2]));
        assert!(is_complete(&[21, 3, 3, 0, 2, 2, 70]));
        // A certificate message first.
        assert_eq!(parse_answer(&[22, 3, 3, 0, 4, 11, 0, 0, 0]), Err(ProbeError::UnexpectedHandshake(11)));
        // A ServerHello whose extension block lies about its length.
        let mut sh = vec![2, 0, 0, 0];
        sh.extend_from_slice(&[3, 3]);
        sh.extend_from_slice(&[0; 32]);
        sh.extend_from_slice(&[0, 0x13, 0x01, 0, 0, 9]);
        let n = sh.len() - 4;
        sh[3] = n as u8;
        let mut rec = vec![22, 3, 3, 0, sh.len() as u8];
        rec.extend_from_slice(&sh);
        assert!(matches!(parse_answer(&rec), Err(ProbeError::Truncated(_))));
        // Every prefix of a real answer is either incomplete or an error, never a panic.
        let real = hex(OPENSSL_TLS10_SERVER_HELLO);
        for n in 0..real.len() {
            let _ = parse_answer(&real[..n]);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap_or("00"), 16).unwrap_or(0)).collect()
    }

    const OPENSSL_TLS10_SERVER_HELLO: &str = concat!(
        "16030100590200005503014ee1629f73d6a1622c592070ccf264bf3dbbf2de84c2bfdb3c6c512bb11cde7220650b6d6b96dd",
        "7875bf7735e9a5213910d352d28efe7c31520921a9d42db6db71c01300000dff01000100000b000403000102",
    );
}
