//! Region discovery (PROTOCOL.md §2): `GET {discovery}/regions`.

use http::Request;
use serde::{Deserialize, Serialize};

/// One region: its API origin and its broker (R-DISC-1: unknown members are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Region {
    /// Short id, e.g. `eu`.
    pub id: String,
    /// Display name, e.g. `Europe`.
    pub name: String,
    /// The regional API origin (`https://host[:port]`, no path).
    pub api: String,
    /// The regional broker (`amqps://…`), if the region has push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amqp: Option<String>,
}

/// The answer of `GET {discovery}/regions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Regions {
    /// The regions on offer.
    pub regions: Vec<Region>,
}

/// Why a discovery answer or configured URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Not a URL.
    #[error("{0:?} is not a valid URL")]
    BadUrl(String),
    /// R-DISC-2: not TLS and loopback testing was not enabled.
    #[error("{0:?} is not an https URL (R-DISC-2); plain http is allowed only for loopback testing")]
    Insecure(String),
    /// An API base must be an origin (no path, query or fragment; PROTOCOL.md §1).
    #[error("{0:?} is not an origin (scheme://host[:port] with no path)")]
    NotAnOrigin(String),
    /// The requested region is not offered.
    #[error("region {0:?} is not offered by discovery")]
    UnknownRegion(String),
}

/// Whether a client accepts plain `http`/`amqp` URLs (R-DISC-2 allows it only for loopback tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportPolicy {
    /// Only `https` / `amqps` (production).
    #[default]
    TlsOnly,
    /// Plain `http` / `amqp` accepted when the host is a loopback address or `localhost`.
    AllowLoopbackPlain,
}

impl TransportPolicy {
    /// [`TransportPolicy::AllowLoopbackPlain`] if `allow` (a test setup's `--allow-loopback-http`), else
    /// [`TransportPolicy::TlsOnly`].
    pub fn loopback_plain_allowed(allow: bool) -> Self {
        if allow {
            Self::AllowLoopbackPlain
        } else {
            Self::TlsOnly
        }
    }
}

/// `GET {discovery}/regions`.
pub fn request(discovery_base: &str) -> Result<Request<Vec<u8>>, http::Error> {
    let base = discovery_base.trim_end_matches('/');
    Request::get(format!("{base}/regions")).header(http::header::ACCEPT, crate::wire::JSON).body(Vec::new())
}

/// R-DISC-2: checks that `url` uses TLS, or plain transport on loopback when the policy allows it.
pub fn check_transport(url: &str, policy: TransportPolicy) -> Result<url::Url, DiscoveryError> {
    let parsed = url::Url::parse(url).map_err(|_| DiscoveryError::BadUrl(url.to_owned()))?;
    match parsed.scheme() {
        "https" | "amqps" => Ok(parsed),
        "http" | "amqp" if policy == TransportPolicy::AllowLoopbackPlain && is_loopback(&parsed) => Ok(parsed),
        _ => Err(DiscoveryError::Insecure(url.to_owned())),
    }
}

/// Whether the URL's host is `localhost` or a loopback address. For schemes the URL standard does not know
/// (`amqp`, `amqps`) the host stays an opaque name, so a dotted IPv4 loopback address is recognised there too.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost") || d.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The ASCII serialisation of an API origin (`scheme://host[:port]`), refusing paths, queries, fragments and
/// credentials (PROTOCOL.md §1: "The API base is an origin with no path").
pub fn api_origin(url: &str, policy: TransportPolicy) -> Result<String, DiscoveryError> {
    let parsed = check_transport(url, policy)?;
    if !matches!(parsed.scheme(), "https" | "http") {
        // A broker URL is not an API origin (and its origin would serialise as "null").
        return Err(DiscoveryError::NotAnOrigin(url.to_owned()));
    }
    if (parsed.path() != "/" && !parsed.path().is_empty())
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(DiscoveryError::NotAnOrigin(url.to_owned()));
    }
    Ok(parsed.origin().ascii_serialization())
}

impl Regions {
    /// Picks a region by id and checks its URLs (R-DISC-2). Returns the region with `api` as a clean origin.
    pub fn select(&self, id: &str, policy: TransportPolicy) -> Result<Region, DiscoveryError> {
        let region =
            self.regions.iter().find(|r| r.id == id).ok_or_else(|| DiscoveryError::UnknownRegion(id.into()))?;
        let api = api_origin(&region.api, policy)?;
        if let Some(amqp) = &region.amqp {
            check_transport(amqp, policy)?;
        }
        Ok(Region { api, ..region.clone() })
    }

    /// The first region whose URLs pass [`Regions::select`]'s checks.
    pub fn first(&self, policy: TransportPolicy) -> Result<Region, DiscoveryError> {
        let first = self.regions.first().ok_or_else(|| DiscoveryError::UnknownRegion("(any)".into()))?;
        self.select(&first.id, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// R-DISC-1: unknown fields ignored.
    #[test]
    fn parses_with_unknown_fields() {
        let r: Regions = serde_json::from_str(
            r#"{"regions":[{"id":"eu","name":"Europe","api":"https://eu.example","amqp":"amqps://q.example","x":1}],"v":2}"#,
        )
        .unwrap();
        assert_eq!(r.regions[0].id, "eu");
        assert_eq!(r.select("eu", TransportPolicy::TlsOnly).unwrap().api, "https://eu.example");
    }

    /// R-DISC-2: http refused unless loopback testing is on.
    #[test]
    fn refuses_plain_http() {
        assert!(check_transport("http://127.0.0.1:8080", TransportPolicy::TlsOnly).is_err());
        assert!(check_transport("http://127.0.0.1:8080", TransportPolicy::AllowLoopbackPlain).is_ok());
        assert!(check_transport("http://localhost:1", TransportPolicy::AllowLoopbackPlain).is_ok());
        assert!(check_transport("http://[::1]:1", TransportPolicy::AllowLoopbackPlain).is_ok());
        assert!(check_transport("http://10.0.0.1", TransportPolicy::AllowLoopbackPlain).is_err());
        assert!(check_transport("amqp://127.0.0.1", TransportPolicy::TlsOnly).is_err());
        // A broker URL's host is opaque to the URL standard; a loopback test broker is still recognised.
        assert!(check_transport("amqp://127.0.0.1:5672", TransportPolicy::AllowLoopbackPlain).is_ok());
        assert!(check_transport("amqp://127.8.9.1:5672", TransportPolicy::AllowLoopbackPlain).is_ok());
        assert!(check_transport("amqp://localhost", TransportPolicy::AllowLoopbackPlain).is_ok());
        assert!(check_transport("amqp://[::1]:5672", TransportPolicy::AllowLoopbackPlain).is_ok());
        assert!(check_transport("amqp://10.0.0.1:5672", TransportPolicy::AllowLoopbackPlain).is_err());
        assert!(check_transport("amqp://127.0.0.1.evil.example", TransportPolicy::AllowLoopbackPlain).is_err());
        assert!(check_transport("amqps://broker.example:5671", TransportPolicy::TlsOnly).is_ok());
        assert!(check_transport("ftp://x", TransportPolicy::AllowLoopbackPlain).is_err());
    }

    /// PROTOCOL.md §1: the API base is an origin.
    #[test]
    fn api_must_be_an_origin() {
        assert_eq!(api_origin("https://a.example/", TransportPolicy::TlsOnly).unwrap(), "https://a.example");
        assert_eq!(api_origin("https://a.example:8443", TransportPolicy::TlsOnly).unwrap(), "https://a.example:8443");
        assert!(api_origin("https://a.example/api", TransportPolicy::TlsOnly).is_err());
        assert!(api_origin("https://u:p@a.example", TransportPolicy::TlsOnly).is_err());
        assert!(api_origin("amqps://q.example", TransportPolicy::TlsOnly).is_err(), "a broker is not an API");
    }

    #[test]
    fn request_path() {
        assert_eq!(request("https://d.example/").unwrap().uri(), "https://d.example/regions");
    }

    proptest! {
        #[test]
        fn round_trip(id in "[a-z]{1,4}", name in ".{0,20}", port in 1u16.., amqp in proptest::option::of("[a-z]{1,8}")) {
            let r = Regions { regions: vec![Region { id, name, api: format!("https://h.example:{port}"), amqp: amqp.map(|h| format!("amqps://{h}.example")) }] };
            let back: Regions = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
            prop_assert_eq!(back, r);
        }
    }
}
