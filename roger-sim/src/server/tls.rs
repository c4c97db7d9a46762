//! TLS for the simulated server (DESIGN.md, roger-sim: "TLS by default (rustls, TLS 1.2+ with AEAD suites only, a CA
//! generated on first start and its path printed)"; PROTOCOL.md §2 R-DISC-2: clients refuse non-TLS URLs unless
//! configured for loopback testing).
//!
//! * A test CA (CN [`CA_COMMON_NAME`]) lives in a directory as [`CA_CERT_FILE`] and [`CA_KEY_FILE`] (the key with
//!   mode 0600). It is generated on first start and reused afterwards, so a client trusts it once (`--ca ca.pem`).
//! * On every start a fresh leaf certificate is issued for the server's host names (IP SANs for addresses, DNS SANs
//!   otherwise), signed by that CA, and checked to chain to it before the server uses it.
//! * One crypto provider across the workspace (DESIGN.md): rustls' `ring` provider ([`install_crypto_provider`]),
//!   restricted to TLS 1.3 and TLS 1.2 and to the AEAD cipher suites of [`AEAD_SUITES`] (ECDHE with AES-GCM or
//!   ChaCha20-Poly1305; no CBC, no static RSA key exchange). ALPN offers `http/1.1`.
//!
//! Several servers may start at once on one directory (conformance cases run in parallel, DESIGN.md): the key file
//! is published with a no-replace hard link, so exactly one process creates the CA and the others wait and reuse it.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{CipherSuite, ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

/// The CA certificate's file name in the TLS directory (PEM; give it to clients as their trust anchor).
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in the TLS directory (PKCS#8 PEM, mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The CA's common name.
pub const CA_COMMON_NAME: &str = "roger-sim test CA";
/// The ALPN protocol the server offers (axum serves HTTP/1.1).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// Host names the leaf certificate covers when none are given.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The protocol versions the server and [`client_config_trusting`] accept: TLS 1.3 and TLS 1.2 (DESIGN.md "TLS
/// 1.2+").
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The cipher suites the server accepts (DESIGN.md "AEAD suites only"): the three TLS 1.3 suites, and for TLS 1.2
/// ECDHE key exchange (forward secrecy) with AES-GCM or ChaCha20-Poly1305.
pub const AEAD_SUITES: [CipherSuite; 9] = [
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// How long a starting server waits for another process that is creating the CA in the same directory.
const CREATE_WAIT: Duration = Duration::from_secs(10);
const CREATE_POLL: Duration = Duration::from_millis(50);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Reading or writing a file or directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The stored CA is unusable (unparsable, or its key does not match its certificate). Delete both files to have
    /// a new CA generated.
    #[error(
        "the CA in {dir} is unusable ({reason}); delete {CA_CERT_FILE} and {CA_KEY_FILE} there to generate a new one"
    )]
    BadCa {
        /// The TLS directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A host name is neither an IP address nor a valid DNS name.
    #[error("invalid host name for the server certificate: {0:?}")]
    BadHost(String),
    /// The PEM given as a trust anchor holds no usable certificate.
    #[error("no usable certificate in the PEM trust anchor: {0}")]
    BadTrustAnchor(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The server's TLS setup: where the CA is, and the rustls configuration to accept connections with.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The CA certificate file (print it at start-up: clients trust it).
    pub ca_path: PathBuf,
    /// The CA certificate, PEM (the contents of `ca_path`).
    pub ca_pem: String,
    /// Whether this call generated the CA (first start) rather than reusing it.
    pub created_ca: bool,
    /// The host names the leaf certificate covers.
    pub hosts: Vec<String>,
    /// The server configuration (TLS 1.3 + 1.2, AEAD suites only, ALPN `http/1.1`) for `tokio_rustls::TlsAcceptor`.
    pub config: Arc<ServerConfig>,
}

/// Installs rustls' `ring` provider as the process default (DESIGN.md: "One rustls crypto provider across the
/// workspace … install it explicitly at start-up"). Idempotent: a second call, or a call after another component
/// installed a provider, does nothing.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race against another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The `ring` provider restricted to [`AEAD_SUITES`] (DESIGN.md "AEAD suites only").
pub fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.retain(|s| AEAD_SUITES.contains(&s.suite()));
    p
}

/// Whether `suite` is one the server accepts.
pub fn is_aead_suite(suite: CipherSuite) -> bool {
    AEAD_SUITES.contains(&suite)
}

/// Loads the CA from `dir` ([`CA_CERT_FILE`], [`CA_KEY_FILE`]) or generates it there (creating `dir`), issues a
/// fresh leaf certificate for `hosts` (IP SANs for addresses, DNS SANs otherwise; brackets around IPv6 addresses are
/// dropped; [`DEFAULT_HOSTS`] if empty) signed by the CA, checks that it chains to the CA, and builds the server
/// configuration.
///
/// If only one of the two CA files exists (a crash during the first start), a new CA replaces it: at once for a
/// certificate without its key, after waiting for a concurrent creator (up to 10 s) for a key without its certificate.
pub fn load_or_create(dir: &Path, hosts: &[String]) -> Result<ServerTls, TlsError> {
    let hosts = normalise_hosts(hosts)?;
    create_dir(dir)?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let deadline = std::time::Instant::now() + CREATE_WAIT;
    loop {
        let waited_out = std::time::Instant::now() >= deadline;
        if key_path.exists() {
            match try_load(dir, &cert_path, &key_path, &hosts) {
                Ok(tls) => return Ok(tls),
                // A key without its certificate for the whole wait: a first start crashed in between. Replace it.
                Err(TlsError::Io { source, .. }) if waited_out && source.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::remove_file(&key_path).map_err(io(&key_path))?;
                    if let Some(tls) = try_create(dir, &cert_path, &key_path, &hosts)? {
                        return Ok(tls);
                    }
                }
                // Another process may be between publishing the key and the certificate: wait for it.
                Err(e @ (TlsError::BadCa { .. } | TlsError::Io { .. })) => {
                    if waited_out {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        } else if let Some(tls) = try_create(dir, &cert_path, &key_path, &hosts)? {
            return Ok(tls);
        } else if waited_out {
            return Err(TlsError::BadCa {
                dir: dir.to_owned(),
                reason: "another process did not finish creating it".into(),
            });
        }
        std::thread::sleep(CREATE_POLL);
    }
}

/// A client configuration trusting only the CA in `ca_pem` (tests and the simulator's own clients), with the same
/// provider, versions and ALPN as the server.
pub fn client_config_trusting(ca_pem: &[u8]) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut added = 0usize;
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| TlsError::BadTrustAnchor(e.to_string()))?;
        roots.add(cert).map_err(|e| TlsError::BadTrustAnchor(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(TlsError::BadTrustAnchor("no CERTIFICATE block".into()));
    }
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(config)
}

fn normalise_hosts(hosts: &[String]) -> Result<Vec<String>, TlsError> {
    let mut out: Vec<String> = Vec::new();
    let given: Vec<String> =
        if hosts.is_empty() { DEFAULT_HOSTS.iter().map(|h| (*h).to_owned()).collect() } else { hosts.to_vec() };
    for h in given {
        let h = h.trim();
        let h = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
        let ok = h.parse::<IpAddr>().is_ok() || ServerName::try_from(h.to_owned()).is_ok();
        if h.is_empty() || !ok {
            return Err(TlsError::BadHost(h.to_owned()));
        }
        if !out.iter().any(|o| o == h) {
            out.push(h.to_owned());
        }
    }
    Ok(out)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io { path: path.to_owned(), source }
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// The CA's parameters. Regenerated identically on reuse: the issuer name and key identifier of a leaf come from
/// here (rcgen's `x509-parser` feature, which would read them back from `ca.pem`, is not enabled), and the leaf is
/// then checked against the stored certificate.
fn ca_params() -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, "roger-sim");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(10 * 365);
    Ok(p)
}

fn leaf_params(hosts: &[String]) -> Result<CertificateParams, TlsError> {
    let mut p = CertificateParams::new(hosts.to_vec()).map_err(|_| TlsError::BadHost(hosts.join(",")))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, hosts.first().map(String::as_str).unwrap_or("localhost"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(397);
    Ok(p)
}

/// Reads and uses an existing CA.
fn try_load(dir: &Path, cert_path: &Path, key_path: &Path, hosts: &[String]) -> Result<ServerTls, TlsError> {
    let bad = |reason: String| TlsError::BadCa { dir: dir.to_owned(), reason };
    let ca_pem = std::fs::read_to_string(cert_path).map_err(io(cert_path))?;
    let key_pem = std::fs::read_to_string(key_path).map_err(io(key_path))?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| bad(format!("{CA_CERT_FILE}: {e}")))?
        .into_owned();
    let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(format!("{CA_KEY_FILE}: {e}")))?;
    let issuer = Issuer::new(ca_params()?, key);
    finish(dir, cert_path, ca_pem, ca_der, &issuer, hosts, false)
}

/// Generates a CA and publishes it unless another process got there first (then `None`: load theirs).
fn try_create(dir: &Path, cert_path: &Path, key_path: &Path, hosts: &[String]) -> Result<Option<ServerTls>, TlsError> {
    let params = ca_params()?;
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let ca_pem = cert.pem();
    let ca_der = cert.der().clone();
    let unique = format!("{}.{}", std::process::id(), rand::random::<u64>());
    let key_tmp = dir.join(format!(".{CA_KEY_FILE}.{unique}.tmp"));
    let cert_tmp = dir.join(format!(".{CA_CERT_FILE}.{unique}.tmp"));
    write_file(&key_tmp, key.serialize_pem().as_bytes(), true)?;
    // Publish the key without replacing: exactly one creator wins.
    let linked = std::fs::hard_link(&key_tmp, key_path);
    let _ = std::fs::remove_file(&key_tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(TlsError::Io { path: key_path.to_owned(), source: e }),
    }
    write_file(&cert_tmp, ca_pem.as_bytes(), false)?;
    std::fs::rename(&cert_tmp, cert_path).map_err(io(cert_path))?;
    sync_dir(dir);
    let issuer = Issuer::new(params, key);
    finish(dir, cert_path, ca_pem, ca_der, &issuer, hosts, true).map(Some)
}

/// Writes `bytes` to a new file (mode 0600 if `private`) and syncs it.
fn write_file(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn sync_dir(dir: &Path) {
    // Best effort: makes the new directory entries durable on Unix; not supported everywhere.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Issues the leaf, checks it chains to the CA certificate, and builds the server configuration.
fn finish(
    dir: &Path,
    cert_path: &Path,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: &Issuer<'_, KeyPair>,
    hosts: &[String],
    created_ca: bool,
) -> Result<ServerTls, TlsError> {
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params(hosts)?.signed_by(&leaf_key, issuer)?;
    let leaf_der = leaf.der().clone();
    verify_chain(dir, &ca_der, &leaf_der, hosts)?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(vec![leaf_der, ca_der], key_der)?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(ServerTls { ca_path: cert_path.to_owned(), ca_pem, created_ca, hosts: hosts.to_vec(), config: Arc::new(config) })
}

/// Checks that `leaf` verifies against `ca` for the first host (catches a key that does not match its certificate,
/// or files changed by hand), exactly as a client trusting `ca.pem` would.
fn verify_chain(
    dir: &Path,
    ca: &CertificateDer<'static>,
    leaf: &CertificateDer<'static>,
    hosts: &[String],
) -> Result<(), TlsError> {
    let bad = |reason: String| TlsError::BadCa { dir: dir.to_owned(), reason };
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| bad(format!("{CA_CERT_FILE}: {e}")))?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(provider()))
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let host = hosts.first().cloned().unwrap_or_else(|| "localhost".to_owned());
    let name = ServerName::try_from(host.clone()).map_err(|_| TlsError::BadHost(host))?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
        .map_err(|e| bad(format!("a certificate it signed does not verify: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TempDir;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hosts() -> Vec<String> {
        vec!["127.0.0.1".into(), "localhost".into()]
    }

    /// First start creates the CA (key 0600); the second reuses the same CA bytes.
    #[test]
    fn creates_then_reuses_the_ca() {
        let d = TempDir::new("tls");
        let a = load_or_create(d.path(), &hosts()).expect("create");
        assert!(a.created_ca);
        assert_eq!(a.ca_path, d.path().join(CA_CERT_FILE));
        let on_disk = std::fs::read_to_string(&a.ca_path).expect("ca.pem");
        assert_eq!(on_disk, a.ca_pem);
        assert!(on_disk.starts_with("-----BEGIN CERTIFICATE-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join(CA_KEY_FILE)).expect("key").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
        let b = load_or_create(d.path(), &hosts()).expect("reuse");
        assert!(!b.created_ca);
        assert_eq!(b.ca_pem, a.ca_pem);
        assert_eq!(b.hosts, hosts());
    }

    /// Parallel first starts on one directory agree on one CA.
    #[test]
    fn parallel_first_starts_share_one_ca() {
        let d = TempDir::new("tls");
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let dir = d.path().to_path_buf();
                std::thread::spawn(move || load_or_create(&dir, &hosts()).map(|t| (t.ca_pem, t.created_ca)))
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().expect("thread").expect("tls")).collect();
        assert_eq!(results.iter().filter(|r| r.1).count(), 1, "exactly one creator");
        let on_disk = std::fs::read_to_string(d.path().join(CA_CERT_FILE)).expect("ca.pem");
        assert!(results.iter().all(|r| r.0 == on_disk));
    }

    /// A key that does not belong to the certificate is reported, not used.
    #[test]
    fn mismatched_ca_files_are_refused() {
        let d = TempDir::new("tls");
        let other = TempDir::new("tls");
        load_or_create(d.path(), &hosts()).expect("a");
        load_or_create(other.path(), &hosts()).expect("b");
        std::fs::copy(other.path().join(CA_CERT_FILE), d.path().join(CA_CERT_FILE)).expect("copy");
        // Shorten the wait: the error path is what is tested, not the wait for a concurrent creator.
        let err = try_load(d.path(), &d.path().join(CA_CERT_FILE), &d.path().join(CA_KEY_FILE), &hosts())
            .expect_err("mismatch");
        assert!(matches!(err, TlsError::BadCa { .. }), "{err}");
        std::fs::write(d.path().join(CA_KEY_FILE), "garbage").expect("write");
        let err = try_load(d.path(), &d.path().join(CA_CERT_FILE), &d.path().join(CA_KEY_FILE), &hosts())
            .expect_err("garbage");
        assert!(matches!(err, TlsError::BadCa { .. }), "{err}");
    }

    #[test]
    fn bad_hosts_are_refused_and_ipv6_brackets_dropped() {
        assert!(matches!(normalise_hosts(&["not a host".into()]), Err(TlsError::BadHost(_))));
        assert!(matches!(normalise_hosts(&["".into()]), Err(TlsError::BadHost(_))));
        assert_eq!(normalise_hosts(&["[::1]".into(), "::1".into()]).ok(), Some(vec!["::1".to_owned()]));
        assert_eq!(normalise_hosts(&[]).ok().map(|h| h.len()), Some(DEFAULT_HOSTS.len()));
        assert!(matches!(client_config_trusting(b"nothing here"), Err(TlsError::BadTrustAnchor(_))));
    }

    /// DESIGN.md "AEAD suites only": every configured suite is ECDHE/TLS 1.3 with AES-GCM or ChaCha20-Poly1305.
    #[test]
    fn server_offers_only_aead_suites() {
        let d = TempDir::new("tls");
        let tls = load_or_create(d.path(), &hosts()).expect("tls");
        let suites: Vec<CipherSuite> = tls.config.crypto_provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert!(!suites.is_empty());
        for s in &suites {
            assert!(is_aead_suite(*s), "{s:?}");
            let name = format!("{s:?}");
            assert!(name.contains("GCM") || name.contains("CHACHA20_POLY1305"), "{name}");
            assert!(name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"), "{name}");
        }
        assert!(suites.contains(&CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(tls.config.alpn_protocols, vec![ALPN_HTTP11.to_vec()]);
    }

    /// Runs one handshake on loopback and returns the client's view (version, suite, ALPN) or the client's error.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: ClientConfig,
        name: &str,
    ) -> Result<(rustls::ProtocolVersion, CipherSuite, Option<Vec<u8>>), String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let srv = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
            let mut s = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            s.write_all(&buf).await.map_err(|e| e.to_string())?;
            s.shutdown().await.map_err(|e| e.to_string())
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        let result = async {
            let mut c = connector.connect(server_name, tcp).await.map_err(|e| e.to_string())?;
            c.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut buf = [0u8; 4];
            c.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            assert_eq!(&buf, b"ping");
            let conn = c.get_ref().1;
            Ok::<_, String>((
                conn.protocol_version().ok_or("no version")?,
                conn.negotiated_cipher_suite().ok_or("no suite")?.suite(),
                conn.alpn_protocol().map(<[u8]>::to_vec),
            ))
        }
        .await;
        srv.abort();
        result
    }

    /// A client trusting the CA completes a TLS 1.3 handshake (by IP and by DNS name) and negotiates `http/1.1`.
    #[tokio::test]
    async fn trusted_client_handshakes_with_tls13() {
        install_crypto_provider();
        let d = TempDir::new("tls");
        let tls = load_or_create(d.path(), &hosts()).expect("tls");
        for name in ["127.0.0.1", "localhost"] {
            let client = client_config_trusting(tls.ca_pem.as_bytes()).expect("client");
            let (v, suite, alpn) = handshake(tls.config.clone(), client, name).await.expect("handshake");
            assert_eq!(v, rustls::ProtocolVersion::TLSv1_3);
            assert!(is_aead_suite(suite));
            assert_eq!(alpn.as_deref(), Some(ALPN_HTTP11));
        }
    }

    /// A TLS 1.2-only client still connects, with an ECDHE AEAD suite.
    #[tokio::test]
    async fn tls12_client_gets_an_aead_suite() {
        let d = TempDir::new("tls");
        let tls = load_or_create(d.path(), &hosts()).expect("tls");
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(tls.ca_pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        let client = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("tls12")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (v, suite, _) = handshake(tls.config.clone(), client, "127.0.0.1").await.expect("handshake");
        assert_eq!(v, rustls::ProtocolVersion::TLSv1_2);
        assert!(is_aead_suite(suite), "{suite:?}");
    }

    /// A client trusting another CA, or asking for a name not in the certificate, fails.
    #[tokio::test]
    async fn untrusting_client_fails() {
        let d = TempDir::new("tls");
        let other = TempDir::new("tls");
        let tls = load_or_create(d.path(), &hosts()).expect("tls");
        let stranger = load_or_create(other.path(), &hosts()).expect("other CA");
        let client = client_config_trusting(stranger.ca_pem.as_bytes()).expect("client");
        let err = handshake(tls.config.clone(), client, "127.0.0.1").await.expect_err("must fail");
        assert!(err.contains("certificate") || err.contains("Certificate"), "{err}");
        let client = client_config_trusting(tls.ca_pem.as_bytes()).expect("client");
        assert!(handshake(tls.config.clone(), client, "example.com").await.is_err());
    }
}
