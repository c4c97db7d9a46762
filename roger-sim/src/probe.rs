//! `roger-sim probe`: the checks a printer makes before it trusts a server, as a verdict list.

use std::path::PathBuf;
use std::process::ExitCode;

use roger_proto::discovery::{self, Regions, TransportPolicy};
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::Driver;
use roger_proto::metadata::{self, AuthorizationServerMetadata, GRANT_DEVICE_CODE};
use roger_proto::wire;

/// Arguments of `roger-sim probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// The discovery base URL (regions are at `{discovery}/regions`).
    #[arg(long)]
    discovery: String,
    /// Region id to check (default: every region offered).
    #[arg(long)]
    region: Option<String>,
    /// Extra CA certificate (PEM) to trust, e.g. the simulator's generated CA.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept plain http on loopback addresses (R-DISC-2 allows it only for tests).
    #[arg(long)]
    allow_loopback_http: bool,
    /// Print the verdicts as JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The rule holds.
    Pass,
    /// A MUST is broken.
    Fail(String),
    /// A SHOULD is missed.
    NonStrict(String),
}

/// A rule checked against one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable id, e.g. `roger/R-META-1/issuer-is-api-origin`.
    pub id: String,
    /// The verdict.
    pub verdict: Verdict,
}

fn check(id: &str, verdict: Verdict) -> Check {
    Check { id: id.to_owned(), verdict }
}

/// Runs every check and returns the verdicts (also used by the tests).
pub async fn checks(args: &ProbeArgs) -> Vec<Check> {
    let policy = if args.allow_loopback_http { TransportPolicy::AllowLoopbackPlain } else { TransportPolicy::TlsOnly };
    let mut out = Vec::new();
    let ca = match &args.ca {
        Some(p) => match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) => {
                out.push(check("setup/ca-readable", Verdict::Fail(format!("cannot read {}: {e}", p.display()))));
                return out;
            }
        },
        None => None,
    };
    let transport = match ReqwestTransport::new(ca.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            out.push(check("setup/tls", Verdict::Fail(e.to_string())));
            return out;
        }
    };
    let driver = Driver::new(transport);

    if let Err(e) = discovery::check_transport(&args.discovery, policy) {
        out.push(check("roger/R-DISC-2/discovery-is-tls", Verdict::Fail(e.to_string())));
        return out;
    }
    out.push(check("roger/R-DISC-2/discovery-is-tls", Verdict::Pass));

    let regions: Regions = match discovery::request(&args.discovery) {
        Ok(req) => match driver.send(req).await {
            Ok(resp) => match wire::classify_api(&resp) {
                Ok(r) => {
                    out.push(check("roger/R-DISC-1/regions-document", Verdict::Pass));
                    r
                }
                Err(e) => {
                    out.push(check("roger/R-DISC-1/regions-document", Verdict::Fail(e.to_string())));
                    return out;
                }
            },
            Err(e) => {
                out.push(check("roger/R-DISC-1/regions-document", Verdict::Fail(e.to_string())));
                return out;
            }
        },
        Err(e) => {
            out.push(check("setup/discovery-url", Verdict::Fail(e.to_string())));
            return out;
        }
    };

    let ids: Vec<String> = match &args.region {
        Some(r) => vec![r.clone()],
        None => regions.regions.iter().map(|r| r.id.clone()).collect(),
    };
    if ids.is_empty() {
        out.push(check("roger/R-DISC-1/at-least-one-region", Verdict::Fail("no region offered".into())));
    }
    for id in ids {
        let region = match regions.select(&id, policy) {
            Ok(r) => {
                out.push(check(&format!("roger/R-DISC-2/region-{id}-urls-tls"), Verdict::Pass));
                r
            }
            Err(e) => {
                out.push(check(&format!("roger/R-DISC-2/region-{id}-urls-tls"), Verdict::Fail(e.to_string())));
                continue;
            }
        };
        out.extend(metadata_checks(&driver, &region.api, &id, policy).await);
    }
    out
}

async fn metadata_checks(
    driver: &Driver<ReqwestTransport>,
    api: &str,
    region: &str,
    policy: TransportPolicy,
) -> Vec<Check> {
    let mut out = Vec::new();
    let id = |rule: &str| format!("{rule} [{region}]");
    let meta: AuthorizationServerMetadata = match metadata::request(api) {
        Ok(req) => match driver.send(req).await {
            Ok(resp) => match wire::classify_api(&resp) {
                Ok(m) => m,
                Err(e) => {
                    out.push(check(&id("rfc8414/3.2/metadata-document"), Verdict::Fail(e.to_string())));
                    return out;
                }
            },
            Err(e) => {
                out.push(check(&id("rfc8414/3.2/metadata-document"), Verdict::Fail(e.to_string())));
                return out;
            }
        },
        Err(e) => {
            out.push(check(&id("setup/api-url"), Verdict::Fail(e.to_string())));
            return out;
        }
    };
    out.push(check(&id("rfc8414/3.2/metadata-document"), Verdict::Pass));
    out.push(check(
        &id("roger/R-META-1/issuer-is-api-origin"),
        match meta.validate(api, policy) {
            Ok(_) => Verdict::Pass,
            Err(e) => Verdict::Fail(e.to_string()),
        },
    ));
    let has = |list: &[String], v: &str| list.iter().any(|x| x == v);
    out.push(check(
        &id("rfc7636/4.2/s256-offered"),
        if meta.supports_s256() {
            Verdict::Pass
        } else {
            Verdict::Fail("code_challenge_methods_supported lacks S256".into())
        },
    ));
    for grant in ["authorization_code", GRANT_DEVICE_CODE, "password", "refresh_token"] {
        out.push(check(
            &id(&format!("roger/2/grant-{grant}-listed")),
            if has(&meta.grant_types_supported, grant) {
                Verdict::Pass
            } else {
                Verdict::NonStrict(format!("grant_types_supported lacks {grant}"))
            },
        ));
    }
    out.push(check(
        &id("roger/2/device-bearer-auth-listed"),
        if has(&meta.token_endpoint_auth_methods_supported, metadata::AUTH_METHOD_DEVICE_BEARER) {
            Verdict::Pass
        } else {
            Verdict::NonStrict("token_endpoint_auth_methods_supported lacks roger_device_bearer".into())
        },
    ));
    out.push(check(
        &id("rfc8414/2/revocation-endpoint-listed"),
        if meta.revocation_endpoint.is_some() {
            Verdict::Pass
        } else {
            Verdict::NonStrict("no revocation_endpoint".into())
        },
    ));
    out
}

/// `roger-sim probe`.
pub async fn run(args: ProbeArgs) -> ExitCode {
    let results = checks(&args).await;
    let mut failed = false;
    for c in &results {
        let (word, why) = match &c.verdict {
            Verdict::Pass => ("PASS", String::new()),
            Verdict::Fail(w) => {
                failed = true;
                ("FAIL", w.clone())
            }
            Verdict::NonStrict(w) => ("NON-STRICT", w.clone()),
        };
        if args.json {
            println!("{}", serde_json::json!({"id": c.id, "verdict": word, "reason": why}));
        } else if why.is_empty() {
            println!("{word:<10} {}", c.id);
        } else {
            println!("{word:<10} {}: {why}", c.id);
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn args(discovery: String) -> ProbeArgs {
        ProbeArgs { discovery, region: None, ca: None, allow_loopback_http: true, json: false }
    }

    async fn server(issuer_override: Option<&str>) -> MockServer {
        let s = MockServer::start().await;
        let api = s.uri();
        Mock::given(method("GET"))
            .and(path("/regions"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "regions": [{"id": "eu", "name": "Europe", "api": api, "amqp": null, "future_field": true}]
            })))
            .mount(&s)
            .await;
        let mut meta = AuthorizationServerMetadata::for_api(&api, false);
        if let Some(i) = issuer_override {
            meta.issuer = i.to_owned();
        }
        Mock::given(method("GET"))
            .and(path("/.well-known/oauth-authorization-server"))
            .respond_with(ResponseTemplate::new(200).set_body_json(&meta))
            .mount(&s)
            .await;
        s
    }

    /// A conforming server passes every check.
    #[tokio::test]
    async fn good_server_passes() {
        let s = server(None).await;
        let results = checks(&args(s.uri())).await;
        assert!(results.len() >= 9, "{results:?}");
        assert!(results.iter().all(|c| c.verdict == Verdict::Pass), "{results:?}");
    }

    /// R-META-1: an issuer that is not the API origin fails.
    #[tokio::test]
    async fn wrong_issuer_fails() {
        let s = server(Some("https://evil.example")).await;
        let results = checks(&args(s.uri())).await;
        let c = results.iter().find(|c| c.id.starts_with("roger/R-META-1")).unwrap();
        assert!(matches!(c.verdict, Verdict::Fail(_)), "{c:?}");
    }

    /// R-DISC-2: plain http is refused unless loopback testing is allowed.
    #[tokio::test]
    async fn plain_http_refused_without_flag() {
        let s = server(None).await;
        let mut a = args(s.uri());
        a.allow_loopback_http = false;
        let results = checks(&a).await;
        assert!(matches!(results[0].verdict, Verdict::Fail(_)), "{results:?}");
        assert_eq!(results.len(), 1);
    }
}
