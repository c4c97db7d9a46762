//! An [`HttpTransport`] on `reqwest` with rustls and the `ring` crypto provider (feature `reqwest`).
//!
//! TLS 1.2 and 1.3 only, certificates always verified (the simulator's CA can be added as an extra root), no
//! redirects followed, no cookies, no proxy from the environment.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Request, Response};

use super::{HttpTransport, TransportError, TransportErrorKind};

/// How long an idle keep-alive connection stays in the pool for reuse.
///
/// Below 30 s on purpose: with a healthy push connection an MFP polls a code only every 30 s (PROTOCOL.md §8), and
/// servers commonly close connections idle for 30 s (roger-sim's server does: hyper's header-read timeout covers
/// the wait for the next request on a kept-alive connection). Reusing a connection at the very moment its server
/// closes it loses the request to a reset (the asynchronous close of RFC 9112 §9.3.1), which a poller must treat
/// as a connection failure and back off from (PROTOCOL.md §12): the next poll, even one rung in by a doorbell,
/// then waits twice the interval. A connection idle this long is dropped instead and the request opens a fresh one.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Installs `ring` as the process-wide rustls provider (one provider for the whole workspace). Idempotent:
/// a second call, or a provider installed by someone else, is fine.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Builds a rustls client configuration: ring provider, TLS 1.2+ (RFC 9325), the webpki roots plus `extra_ca_pem`.
pub fn rustls_config(extra_ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, TransportError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let mut added = 0;
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TransportError::new(TransportErrorKind::Tls, format!("bad CA PEM: {e}")))?;
            roots.add(cert).map_err(|e| TransportError::new(TransportErrorKind::Tls, format!("bad CA: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(TransportError::new(TransportErrorKind::Tls, "the CA file holds no certificate"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TransportError::new(TransportErrorKind::Tls, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The largest answer a [`ReqwestTransport`] reads by default: 64 MiB, room for a print document from the drive;
/// an answer from a hostile or broken server cannot exhaust a printer's memory ([`ReqwestTransport::max_body`]).
pub const DEFAULT_MAX_BODY: usize = 64 * 1024 * 1024;

/// The reqwest transport.
#[derive(Debug, Clone)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_body: usize,
}

impl ReqwestTransport {
    /// A transport trusting the webpki roots and, if given, the PEM CA (e.g. the simulator's `ca` path).
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<Self, TransportError> {
        let tls = rustls_config(extra_ca_pem)?;
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build()
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))?;
        Ok(Self { client, max_body: DEFAULT_MAX_BODY })
    }

    /// Wraps an existing client (the caller vouches for its TLS settings).
    pub fn from_client(client: reqwest::Client) -> Self {
        Self { client, max_body: DEFAULT_MAX_BODY }
    }

    /// Sets the largest answer body read, in bytes; a longer one fails as a transport error (default
    /// [`DEFAULT_MAX_BODY`]).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }
}

fn classify(e: &reqwest::Error) -> TransportErrorKind {
    use std::error::Error as _;
    if e.is_timeout() {
        return TransportErrorKind::Timeout;
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return TransportErrorKind::Tls;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.get_ref().is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()) {
                return TransportErrorKind::Tls;
            }
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => TransportErrorKind::Connect,
                std::io::ErrorKind::TimedOut => TransportErrorKind::Timeout,
                _ => TransportErrorKind::Reset,
            };
        }
        source = s.source();
    }
    if e.is_connect() {
        TransportErrorKind::Connect
    } else if e.is_request() || e.is_body() {
        TransportErrorKind::Reset
    } else {
        TransportErrorKind::Other
    }
}

fn to_transport_error(e: reqwest::Error) -> TransportError {
    // `without_url`: URLs can carry pre-authorised drive links (R-SEC-1).
    let kind = classify(&e);
    TransportError::new(kind, e.without_url().to_string())
}

#[async_trait]
impl HttpTransport for ReqwestTransport {
    async fn send(&self, request: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, TransportError> {
        let request = reqwest::Request::try_from(request)
            .map_err(|e| TransportError::new(TransportErrorKind::Other, e.without_url().to_string()))?;
        let mut resp = self.client.execute(request).await.map_err(to_transport_error)?;
        let mut builder = Response::builder().status(resp.status()).version(resp.version());
        if let Some(h) = builder.headers_mut() {
            *h = resp.headers().clone();
        }
        let too_large = || {
            TransportError::new(TransportErrorKind::Other, format!("the answer is larger than {} bytes", self.max_body))
        };
        if resp.content_length().is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(to_transport_error)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        builder.body(body).map_err(|e| TransportError::new(TransportErrorKind::Other, e.to_string()))
    }
}
