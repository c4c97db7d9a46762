//! Scenario (issue 5, PROTOCOL.md §11, R-PUSH-1) against the machine's RabbitMQ (`ROGER_AMQP_URL`; skipped
//! without it): the simulated MFP consumes its device queue through a TCP proxy inside the test (the server hands
//! the proxy's address out as the broker), and the proxy cuts every connection mid-session and refuses new ones
//! for a while.
//!
//! * The printer notices, reports push unhealthy, reconnects after a jittered back-off and consumes again.
//! * No session is lost: alice stays signed in throughout, and her token still works after the reconnect.
//! * A release the phone requests while the printer is cut off waits in the durable queue and prints once after
//!   the reconnect; duplicates of the doorbell change nothing, so no job is printed twice.
//! * A session code approved while the printer is cut off still opens the session (the queued doorbell and the
//!   re-read after the reconnect: a missed doorbell is never a lost session).

mod common;
mod mfp_support;

use std::time::Duration;

use common::amqp::{broker_url, clean_up, eventually, proxy, server, test_config, unique_prefix, upstream, via};
use mfp_support::{qr_sign_in, registered, temp_dir, WAIT};
use roger_proto::api::{self, JobList, ReleaseRequest};
use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};
use roger_proto::wire::classify_api;
use roger_sim::mfp::{MfpHandle, PanelState};

fn count(mfp: &MfpHandle, needle: &str) -> usize {
    mfp.events().iter().filter(|l| l.contains(needle)).count()
}

const CONNECTED: &str = "push: connected to the device queue";
const ENDED: &str = "push: the subscription ended";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mfp_survives_a_cut_broker_connection() {
    let Some(url) = broker_url() else { return };
    let proxy = proxy(upstream(&url).await, None).await;
    let mut config = test_config(&url, &unique_prefix("cut"));
    // The server publishes straight to the broker; the printer is told the proxy's address.
    config.client_url = Some(via(&url, proxy.addr, "amqp"));
    let s = server(config, 1).await;
    let dir = temp_dir("amqp-cut");
    let mut c = mfp_support::config(&s, &dir);
    c.push = None; // not the in-process bus: the region's broker, with the credentials of GET /api/v1/device/push
    let (mfp, device_id) = registered(&s, c).await;
    assert!(eventually(WAIT, || count(&mfp, CONNECTED) >= 1).await, "push connected: {:#?}", mfp.events());
    assert!(proxy.accepted() >= 1, "the printer consumes through the proxy");

    // alice signs in by the panel QR (the code.approved doorbell comes through the broker).
    let app = qr_sign_in(&s, &mfp, "alice", "alice-pass").await;
    let api_base = s.api.clone();
    let list = s.send(api::list_jobs(&api_base, &app).expect("request")).await;
    let jobs: JobList = classify_api(&list.to_http()).expect("alice's jobs");
    let job = jobs.jobs.first().expect("alice has a queued drive job").id.clone();

    // Cut every connection and refuse new ones: the printer's consumer is gone.
    proxy.set_refusing(true);
    proxy.cut();
    assert!(eventually(WAIT, || count(&mfp, ENDED) >= 1).await, "the printer noticed: {:#?}", mfp.events());
    // While cut off, the phone asks the printer to release the job: the doorbell waits in the durable queue.
    let body = ReleaseRequest { device_id: Some(device_id.clone()) };
    let a = s.send(api::release_job(&api_base, &app, &job, "phone-release-1", &body).expect("request")).await;
    assert_eq!(a.status, 202, "release requested: {}", String::from_utf8_lossy(&a.body));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(mfp.panel().state, PanelState::Session, "no session lost while cut off");
    assert!(mfp.printed().is_empty(), "nothing can arrive while cut off");
    let failed_attempts = count(&mfp, "push: cannot subscribe");
    assert!(failed_attempts >= 1, "reconnects are attempted and fail while refused: {:#?}", mfp.events());

    // The network is back: the printer reconnects, takes the queued doorbell and prints the job once.
    proxy.set_refusing(false);
    assert!(eventually(WAIT, || count(&mfp, CONNECTED) >= 2).await, "reconnected: {:#?}", mfp.events());
    assert!(eventually(WAIT, || mfp.printed().iter().any(|r| r.job_id == job)).await, "printed after the reconnect");
    let view = mfp.panel();
    assert_eq!((view.state, view.user.as_deref()), (PanelState::Session, Some("alice")), "still alice's session");
    mfp.jobs().await.expect("the session token still works after the reconnect");

    // Duplicates (at-least-once delivery, R-PUSH-1) print nothing twice.
    let dup = PushEnvelope::new(
        Id::new("msg_duplicate").expect("id"),
        time::OffsetDateTime::now_utc(),
        PushTarget::Device(Id::new(device_id.clone()).expect("id")),
        PushEvent::JobReleaseRequested {
            job_id: Id::new(job.clone()).expect("id"),
            device_id: Id::new(device_id.clone()).expect("id"),
        },
    );
    for _ in 0..2 {
        s.server.shared.bus.publish(&dup).await.expect("published");
    }
    assert!(eventually(WAIT, || count(&mfp, "requested again; already released here") >= 2).await);
    assert_eq!(mfp.printed().iter().filter(|r| r.job_id == job).count(), 1, "printed exactly once");
    let store = s.store().await;
    assert_eq!(store["jobs"][&job]["state"], "printed");

    // A session code approved while the printer is cut off still opens the session.
    mfp.logout().await.expect("logout");
    let (shown, view) = mfp.wait_until(WAIT, |v| v.state == PanelState::Idle && v.user_code.is_some()).await;
    assert!(shown, "a fresh session QR: {view:?}");
    let code = view.user_code.expect("user code");
    let connected_before = count(&mfp, CONNECTED);
    proxy.set_refusing(true);
    proxy.cut();
    assert!(eventually(WAIT, || count(&mfp, ENDED) >= 2).await, "cut again");
    let bob = s.app_login("bob", "bob-pass").await;
    let a = s.decide(&bob.access_token, &code, true).await;
    assert_eq!(a.status, 204, "approved while the printer is cut off");
    tokio::time::sleep(Duration::from_millis(800)).await;
    proxy.set_refusing(false);
    assert!(eventually(WAIT, || count(&mfp, CONNECTED) > connected_before).await, "reconnected again");
    let view = mfp.wait_for(PanelState::Session, WAIT).await.expect("the approval was not lost");
    assert_eq!(view.user.as_deref(), Some("bob"));

    mfp.stop().await;
    clean_up(s).await;
}
