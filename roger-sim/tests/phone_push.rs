//! Scenario (issue 5, PROTOCOL.md §11, R-PUSH-1): the phone's push receiver on the in-process bus.
//!
//! * alice's phone consumes its installation's queue and reads its job list once on connecting;
//! * a job her desktop queues reaches the phone as a `job.queued` doorbell and the phone re-reads the list: exactly
//!   one re-read per doorbell, no polling while push is healthy;
//! * duplicates change nothing, a code doorbell (meant for the installation that polls the code) is ignored;
//! * a cut subscription is re-established after a back-off, and the re-read after the reconnect finds the job
//!   queued meanwhile (a missed doorbell is never a missed job);
//! * without a receiver the phone re-reads every 5 s instead, and `roger-sim phone jobs --wait` waits the same way
//!   (exiting with an error when the job does not come).

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use roger_proto::api::Job;
use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};
use roger_proto::secret::Password;
use roger_sim::phone::app::ServerArgs;
use roger_sim::phone::cli::{execute, PhoneAction, PhoneArgs, PhoneCliError};
use roger_sim::phone::{ClientConfig, Phone, PhoneError, PushSource, PushStats};

const WAIT: Duration = Duration::from_secs(10);

fn has(jobs: &[Job], id: &str) -> bool {
    jobs.iter().any(|j| j.id == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_hears_its_jobs_by_push() {
    let s = TestServer::start().await;
    let mut phone = Phone::connect(&ClientConfig::loopback(&s.server.info.discovery)).await.expect("phone");
    let alice = phone.login("acme", "alice", Password::new("alice-pass")).await.expect("signed in");
    let desktop = s.app_login("alice", "alice-pass").await.access_token;
    let bus = s.server.shared.bus.clone();

    // Subscribes, and reads the list once (R-PUSH-1: after every (re)connect).
    phone.attach_push(PushSource::Bus(bus.clone()), "alices-phone").expect("receiver");
    let first = phone.wait_for_jobs(WAIT, |_| true).await.expect("first read");
    assert!(phone.push_connected());
    assert_eq!(phone.push_stats(), Some(PushStats { connects: 1, rereads: 1, ..PushStats::default() }));

    // A job queued on the desktop: the job.queued doorbell makes the phone re-read, and only that does.
    let job = s.queue_desktop_job(&desktop, "memo.pdf").await;
    let jobs = phone.wait_for_jobs(WAIT, |jobs| has(jobs, &job)).await.expect("seen by push");
    assert_eq!(jobs.len(), first.len() + 1);
    let stats = phone.push_stats().expect("stats");
    assert_eq!((stats.doorbells, stats.rereads, stats.connects), (1, 2, 1), "no polling while push is healthy");

    // At-least-once delivery (R-PUSH-1): a duplicate only re-reads; a code doorbell is not the phone's business.
    let user = PushTarget::User(Id::new(alice.id.clone()).expect("user id"));
    let now = time::OffsetDateTime::now_utc();
    let code = PushEvent::CodeApproved { request_id: Id::new("req_desktop").expect("id") };
    bus.publish(&PushEnvelope::new(Id::new("msg_code").expect("id"), now, user.clone(), code)).await.expect("code");
    let dup = PushEvent::JobQueued { job_id: Id::new(job.clone()).expect("job id") };
    bus.publish(&PushEnvelope::new(Id::new("msg_dup").expect("id"), now, user, dup)).await.expect("duplicate");
    let again = phone.wait_for_jobs(WAIT, |_| true).await.expect("the duplicate re-reads");
    assert_eq!(again, jobs, "a duplicate changes nothing");
    let stats = phone.push_stats().expect("stats");
    assert_eq!((stats.ignored, stats.doorbells, stats.rereads), (1, 2, 3));

    // A broker cut: the subscription ends; a job queued meanwhile is found by the re-read after the reconnect.
    assert!(bus.fault_cut(), "the in-process bus can be cut");
    let late = s.queue_desktop_job(&desktop, "late.pdf").await;
    let started = Instant::now();
    let jobs = phone.wait_for_jobs(WAIT, |jobs| has(jobs, &late)).await.expect("found after the reconnect");
    assert!(has(&jobs, &job) && has(&jobs, &late));
    let stats = phone.push_stats().expect("stats");
    assert_eq!((stats.ended, stats.connects), (1, 2), "resubscribed once: {stats:?}");
    assert_eq!(stats.doorbells, 2, "found by the re-read after the reconnect, not by the doorbell: {stats:?}");
    assert!(started.elapsed() >= Duration::from_millis(100), "the reconnect waited its back-off");
    // The doorbell queued during the cut still comes (it stayed in the queue): one more harmless re-read.
    phone.wait_for_jobs(WAIT, |_| true).await.expect("the queued doorbell");
    assert_eq!(phone.push_stats().expect("stats").doorbells, 3);

    // Without a receiver the phone re-reads every 5 s instead.
    let stats = phone.detach_push().expect("was attached");
    assert_eq!(stats.connects, 2);
    let (found, _) = tokio::join!(phone.wait_for_jobs(WAIT, |jobs| jobs.len() == first.len() + 3), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.queue_desktop_job(&desktop, "polled.pdf").await
    });
    let found = found.expect("found by polling");
    assert!(found.iter().any(|j| j.file_name == "polled.pdf"));
    assert_eq!(phone.push_stats(), None);
    s.server.stop().await;
}

fn phone_args(s: &TestServer, wait: u64, file: &str) -> PhoneArgs {
    PhoneArgs {
        server: ServerArgs::loopback(s.server.info.discovery.clone()),
        tenant: "acme".into(),
        user: "alice".into(),
        password: Some("alice-pass".into()),
        action: PhoneAction::Jobs { wait, file: Some(file.into()) },
    }
}

/// `roger-sim phone jobs --wait N --file NAME`: without a broker in the region it re-reads every 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_phone_command_waits_for_a_job() {
    let s = TestServer::start().await;
    let desktop = s.app_login("alice", "alice-pass").await.access_token;
    let (out, _) = tokio::join!(execute(phone_args(&s, 20, "report.pdf")), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.queue_desktop_job(&desktop, "report.pdf").await
    });
    let out = out.expect("the job came");
    assert!(out.iter().any(|l| l.contains("no broker")), "{out:?}");
    assert!(out.iter().any(|l| l.contains("report.pdf")), "{out:?}");

    let err = execute(phone_args(&s, 1, "never.pdf")).await.expect_err("the job never comes");
    assert!(matches!(err, PhoneCliError::Phone(PhoneError::WaitTimeout { .. })), "{err}");
    s.server.stop().await;
}
