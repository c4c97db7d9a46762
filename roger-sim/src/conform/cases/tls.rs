//! TLS (R-DISC-2; RFC 6749 §10.9 via RFC 8414 §3): the MFP validates the server's certificate against its
//! configured roots and the host name, and refuses plain HTTP outside loopback testing.

use super::super::env::Transport;
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
            sources: &["R-DISC-2"],
            level: Level::Must,
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
            sources: &["R-DISC-2"],
            level: Level::Must,
            aimed_at: &["skip-tls-verify"],
            client: client!(wrong_host, refuses_tls),
            server: None,
        },
        Case {
            id: "roger/R-DISC-2/refuse-plain-http",
            area: Area::Tls,
            requirement: "The MFP sends no request to a plain `http` discovery URL on a non-loopback address.",
            sources: &["R-DISC-2"],
            level: Level::Must,
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
