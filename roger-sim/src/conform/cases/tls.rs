//! TLS (R-DISC-2; RFC 6749 §10.9 via RFC 8414 §3): the MFP validates the server's certificate against its
//! configured roots and the host name, and refuses plain HTTP outside loopback testing. In server mode: the server
//! refuses TLS 1.0 and 1.1 (RFC 8996) and TLS 1.2 without AEAD suites, and accepts TLS 1.2 and 1.3 with AEAD
//! suites (RFC 9325 §4.2), judged from hand-crafted ClientHellos ([`tls_probe`]).

use super::super::env::Transport;
use super::super::tls_probe;
use super::observe;
use super::prelude::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-DISC-2/verify-server-certificate",
            area: Area::Tls,
            requirement:
                "The MFP sends no request over a TLS connection whose certificate does not chain to the roots it \
                          was configured with.",
            sources: &["R-DISC-2", "RFC 6749 §10.9"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §10.9: \"The client MUST validate the authorization server's TLS certificate as \
                        defined by [RFC6125]\" (chain and server identity alike).",
            aimed_at: &["skip-tls-verify"],
            client: client!(rogue_ca, refuses_tls),
            server: None,
        },
        Case {
            id: "roger/R-DISC-2/verify-server-host-name",
            area: Area::Tls,
            requirement:
                "The MFP sends no request over a TLS connection whose certificate, though from a trusted CA, is \
                          for another host name.",
            sources: &["R-DISC-2", "RFC 6749 §10.9"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 6749 §10.9: \"The client MUST validate the authorization server's TLS certificate as \
                        defined by [RFC6125]\" (chain and server identity alike).",
            aimed_at: &["skip-tls-verify"],
            client: client!(wrong_host, refuses_tls),
            server: None,
        },
        Case {
            id: "roger/R-DISC-2/refuse-plain-http",
            area: Area::Tls,
            requirement: "The MFP sends no request to a plain `http` discovery URL on a non-loopback address.",
            sources: &["R-DISC-2"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "The first request goes to Roger's discovery document, which no RFC covers; refusing a plain \
                        http discovery URL outside loopback tests is R-DISC-2's (RFC 6750 §5.3's TLS MUST applies \
                        to requests with bearer tokens, which this case never reaches).",
            aimed_at: &[],
            client: client!(plain_non_loopback, refuses_plain),
            server: None,
        },
    ]
}

fn rogue_ca(s: &mut ClientSetup) {
    s.transport = Transport::RogueCa;
}

fn wrong_host(s: &mut ClientSetup) {
    s.transport = Transport::WrongHost;
}

fn plain_non_loopback(s: &mut ClientSetup) {
    s.transport = Transport::PlainNonLoopback;
}

/// Starts the shim and, if it started, asks it to register; whatever it answers, the wire decides.
async fn try_to_use(env: &mut ClientEnv) -> Result<(), CaseError> {
    let started = env.start_shim_answer().await?;
    if started.is_ok() {
        env.ask(&roger_proto::shim::ShimRequest::Register).await?;
    }
    observe(Duration::from_secs(1)).await;
    Ok(())
}

async fn refuses_tls(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    try_to_use(env).await?;
    let refused = env.recorder().tls_failures();
    for f in refused.iter().take(3) {
        env.note(EvidenceSource::Wire, format!("TLS handshake refused by the client: {f}"));
    }
    let ex = env.exchanges();
    env.note_exchanges(ex.iter(), 6);
    if !ex.is_empty() {
        return Ok(Finding::Broken(format!(
            "the MFP sent {} request(s) over a connection with a certificate it must not accept, first {} {}",
            ex.len(),
            ex[0].method,
            ex[0].path
        )));
    }
    Ok(Finding::check(!refused.is_empty(), || {
        "the MFP never attempted a connection, so its certificate check was not shown".into()
    }))
}

async fn refuses_plain(env: &mut ClientEnv) -> Result<Finding, CaseError> {
    let origin = env.api();
    env.note(EvidenceSource::Kit, format!("the MFP was given the discovery URL {origin}"));
    try_to_use(env).await?;
    let ex = env.exchanges();
    env.note_exchanges(ex.iter(), 6);
    Ok(match ex.first() {
        Some(e) => {
            Finding::Broken(format!("the MFP sent {} {} over plain HTTP to a non-loopback address", e.method, e.path))
        }
        None => Finding::Holds,
    })
}

pub(super) fn server_cases() -> Vec<Case> {
    vec![
        Case {
            id: "roger/R-DISC-2/server-refuses-tls-1-0-and-1-1",
            area: Area::Tls,
            requirement: "The server refuses a ClientHello offering only TLS 1.0, and one offering only TLS 1.1 (an \
                          alert or a closed connection, never a ServerHello).",
            sources: &["R-DISC-2", "RFC 8996 §2"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 8996 §2 and §3: TLS 1.0 and TLS 1.1 \"MUST NOT be used\"; negotiating them \"MUST NOT be \
                        permitted\".",
            aimed_at: &[],
            client: None,
            server: server!(false, server_refuses_old_versions, oauth),
        },
        Case {
            id: "roger/R-DISC-2/server-refuses-tls-1-2-without-aead",
            area: Area::Tls,
            requirement: "The server refuses a TLS 1.2 ClientHello that offers only CBC cipher suites (no AEAD).",
            sources: &["R-DISC-2", "RFC 9325 §4.2"],
            level: Level::Should,
            basis: Basis::Roger,
            rationale: "RFC 9325 §4.2 recommends AEAD suites for TLS 1.2 but does not forbid CBC ones; refusing them \
                        is R-DISC-2's.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_refuses_cbc, oauth),
        },
        Case {
            id: "roger/R-DISC-2/server-accepts-tls-1-2-and-1-3-aead",
            area: Area::Tls,
            requirement: "The server accepts a TLS 1.2 ClientHello offering ECDHE AEAD suites, answering with a \
                          ServerHello for TLS 1.2 and an offered suite; refusing a TLS 1.3 ClientHello is INFO.",
            sources: &["R-DISC-2", "RFC 9325 §4.2"],
            level: Level::Must,
            basis: Basis::Rfc,
            rationale: "RFC 9325 §3.1.1: \"Implementations MUST support TLS 1.2\" (with the AEAD suites §4.2 \
                        recommends) and SHOULD support TLS 1.3, so a refused TLS 1.3 hello is INFO.",
            aimed_at: &[],
            client: None,
            server: server!(false, server_accepts_modern, oauth),
        },
    ]
}

/// How long a probe waits to connect and for the first record.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The distinct `https` origins of the run (the API and, when elsewhere, discovery) as `(host, port)`; `Err` with
/// the reason to skip when the server speaks plain HTTP (loopback testing, `--allow-loopback-http`).
fn tls_origins(env: &ServerEnv) -> Result<Vec<(String, u16)>, String> {
    let mut out: Vec<(String, u16)> = Vec::new();
    for url in [env.endpoints.api.clone(), env.discovery_url().to_owned()] {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "{url} is plain HTTP (loopback testing): there is no TLS to probe; run against the server's https \
                 origin to judge its TLS versions"
            ));
        }
        let host = uri.host().unwrap_or_default().to_owned();
        let origin = (host, uri.port_u16().unwrap_or(443));
        if !out.contains(&origin) {
            out.push(origin);
        }
    }
    Ok(out)
}

/// Sends each offer to each origin; `Broken` with the first answer `judge` rejects.
async fn probe_all(
    env: &mut ServerEnv,
    offers: &[tls_probe::Offer],
    judge: fn(tls_probe::Offer, &tls_probe::Answer) -> Result<String, String>,
) -> Result<Finding, CaseError> {
    let origins = match tls_origins(env) {
        Ok(o) => o,
        Err(why) => return Ok(Finding::Skip(why)),
    };
    for (host, port) in origins {
        for offer in offers {
            let answer = tls_probe::probe(&host, port, *offer, PROBE_TIMEOUT)
                .await
                .map_err(|e| CaseError::Peer(format!("{host}:{port}, {}: {e}", offer.label())))?;
            match judge(*offer, &answer) {
                Ok(how) => env.note(EvidenceSource::Wire, format!("{host}:{port}: {how}")),
                Err(why) => {
                    env.note(EvidenceSource::Wire, format!("{host}:{port}: {why}"));
                    return Ok(Finding::Broken(format!("{host}:{port}: {why}")));
                }
            }
        }
    }
    Ok(Finding::Holds)
}

async fn server_refuses_old_versions(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    probe_all(env, &[tls_probe::Offer::Tls10, tls_probe::Offer::Tls11], tls_probe::judge_refusal).await
}

async fn server_refuses_cbc(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    probe_all(env, &[tls_probe::Offer::Tls12Cbc], tls_probe::judge_refusal).await
}

async fn server_accepts_modern(env: &mut ServerEnv) -> Result<Finding, CaseError> {
    let tls12 = probe_all(env, &[tls_probe::Offer::Tls12Aead], tls_probe::judge_acceptance).await?;
    if tls12 != Finding::Holds {
        return Ok(tls12);
    }
    Ok(match probe_all(env, &[tls_probe::Offer::Tls13], tls_probe::judge_acceptance).await? {
        Finding::Broken(why) => {
            Finding::Info(format!("TLS 1.2 with AEAD is accepted; TLS 1.3 is not (RFC 9325 §3.1.1: SHOULD): {why}"))
        }
        other => other,
    })
}
