//! The whole printer client (lifecycle + panel) over HTTP against a scripted server: registration, a QR
//! session, step 2 by PIN, logout with revocation of both user tokens (PROTOCOL.md §5–8).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use roger_proto::driver::mfp::{MfpClient, MfpEvent, MfpInput};
use roger_proto::driver::reqwest_transport::ReqwestTransport;
use roger_proto::driver::{Driver, ScaledClock};
use roger_proto::lifecycle::{Connection, LifecycleConfig, LifecycleEvent};
use roger_proto::metadata::Endpoints;
use roger_proto::panel::{PanelConfig, PanelEvent, PanelState};
use roger_proto::secret::Password;
use tokio::sync::mpsc;
use wiremock::matchers::{body_string_contains, header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn json(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200).insert_header("cache-control", "no-store").set_body_raw(body, "application/json")
}

/// Session polls: pending once, then the user token.
struct SessionPolls(Mutex<u32>);

impl Respond for SessionPolls {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut n = self.0.lock().unwrap();
        *n += 1;
        if *n == 1 {
            ResponseTemplate::new(400).set_body_raw(r#"{"error":"authorization_pending"}"#, "application/json")
        } else {
            json(
                r#"{"access_token":"user-at-1","token_type":"Bearer","expires_in":1200,"scope":"roger.release",
                 "user":{"id":"u1","username":"alice","display_name":"Alice","email":"alice@acme.example"}}"#
                    .into(),
            )
        }
    }
}

/// Records the revoked tokens and the Authorization header they came with.
#[derive(Clone, Default)]
struct Revocations(Arc<Mutex<Vec<(String, String)>>>);

impl Respond for Revocations {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&r.body).to_string();
        let auth = r.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        self.0.lock().unwrap().push((body, auth));
        ResponseTemplate::new(200)
    }
}

#[tokio::test]
async fn register_session_pin_logout() {
    let server = MockServer::start().await;
    let api = server.uri();
    let code = |dc: &str, uc: &str, exp: u64| {
        json(format!(
            r#"{{"device_code":"{dc}","user_code":"{uc}","verification_uri":"{api}/device","verification_uri_complete":"{api}/device?user_code={uc}","expires_in":{exp},"interval":1,"request_id":"req-{dc}"}}"#
        ))
    };
    Mock::given(method("POST"))
        .and(path("/oauth/device_authorization"))
        .and(body_string_contains("scope=roger.device"))
        .respond_with(code("dc-reg", "BCDFGHJK", 600))
        .mount(&server)
        .await;
    // Session codes must be device-bound (PROTOCOL.md §7).
    Mock::given(method("POST"))
        .and(path("/oauth/device_authorization"))
        .and(body_string_contains("scope=roger.release"))
        .and(header("authorization", "Bearer dev-at-1"))
        .respond_with(code("dc-sess", "WDJBMJHT", 120))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("device_code=dc-reg"))
        .respond_with(json(
            r#"{"access_token":"dev-at-1","token_type":"Bearer","expires_in":1200,"refresh_token":"dev-rt-1","scope":"roger.device","device_id":"dev-1","tenant_id":"acme"}"#.into(),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("device_code=dc-sess"))
        .and(header("authorization", "Bearer dev-at-1"))
        .respond_with(SessionPolls(Mutex::new(0)))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains("grant_type=password"))
        .and(body_string_contains("username=alice"))
        .and(body_string_contains("password=1234"))
        .and(header("authorization", "Bearer dev-at-1"))
        .respond_with(json(
            r#"{"access_token":"user-at-2","token_type":"Bearer","expires_in":1200,"scope":"roger.print roger.scan"}"#
                .into(),
        ))
        .mount(&server)
        .await;
    let revocations = Revocations::default();
    Mock::given(method("POST")).and(path("/oauth/revoke")).respond_with(revocations.clone()).mount(&server).await;

    let driver = Driver::with_clock(ReqwestTransport::new(None).unwrap(), ScaledClock::new(20))
        .request_timeout(Duration::from_secs(5));
    let connection = Connection::new(LifecycleConfig::new("emb-acme", "MX-1", "SN-1"));
    let panel_config = PanelConfig { allow_password_grant: true, ..PanelConfig::default() };
    let mut client = MfpClient::new(connection, panel_config, Endpoints::conventional(&api));
    let (input_tx, mut input_rx) = mpsc::channel(8);
    let (event_tx, mut event_rx) = mpsc::unbounded_channel::<(MfpEvent, Option<PanelState>)>();

    let run = driver.run_mfp(&mut client, &mut input_rx, move |c, ev| {
        let _ = event_tx.send((ev.clone(), c.panel.as_ref().map(|p| p.state())));
    });
    let seen_revocations = revocations.clone();
    let script = async move {
        let mut log: Vec<MfpEvent> = Vec::new();
        async fn next(
            rx: &mut mpsc::UnboundedReceiver<(MfpEvent, Option<PanelState>)>,
            log: &mut Vec<MfpEvent>,
            pred: impl Fn(&MfpEvent) -> bool,
        ) -> Option<PanelState> {
            loop {
                let (ev, state) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                    .await
                    .expect("event in time")
                    .expect("runner alive");
                let hit = pred(&ev);
                log.push(ev);
                if hit {
                    return state;
                }
            }
        }
        next(&mut event_rx, &mut log, |e| matches!(e, MfpEvent::Lifecycle(LifecycleEvent::Registered { .. }))).await;
        next(
            &mut event_rx,
            &mut log,
            |e| matches!(e, MfpEvent::Panel(PanelEvent::ShowQr(q)) if q.user_code_display == "WDJB-MJHT"),
        )
        .await;
        let state =
            next(&mut event_rx, &mut log, |e| matches!(e, MfpEvent::Panel(PanelEvent::SessionStarted { .. }))).await;
        assert_eq!(state, Some(PanelState::Step1));
        input_tx.send(MfpInput::Pin { username: None, secret: Password::new("1234") }).await.unwrap();
        let state =
            next(&mut event_rx, &mut log, |e| matches!(e, MfpEvent::Panel(PanelEvent::Step2Granted { .. }))).await;
        assert_eq!(state, Some(PanelState::Step2));
        input_tx.send(MfpInput::Logout).await.unwrap();
        let state = next(&mut event_rx, &mut log, |e| matches!(e, MfpEvent::Panel(PanelEvent::LoggedOut))).await;
        assert_eq!(state, Some(PanelState::Idle));
        // Give the revocations a moment to go out, then stop.
        for _ in 0..200 {
            if seen_revocations.0.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        input_tx.send(MfpInput::Stop).await.unwrap();
        log
    };
    let (result, log) = tokio::join!(run, script);
    result.unwrap();
    assert!(log.iter().any(|e| matches!(e, MfpEvent::Lifecycle(LifecycleEvent::Persist(_)))));
    let revoked = revocations.0.lock().unwrap().clone();
    assert_eq!(revoked.len(), 2, "logout revokes both user tokens: {revoked:?}");
    assert!(revoked.iter().any(|(b, _)| b.contains("token=user-at-1")));
    assert!(revoked.iter().any(|(b, _)| b.contains("token=user-at-2")));
    assert!(revoked.iter().all(|(_, a)| a == "Bearer dev-at-1"), "revocation is device-bound (PROTOCOL.md §7)");
}
