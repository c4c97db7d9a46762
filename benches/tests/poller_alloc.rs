//! The poller's state transitions allocate nothing (poller.rs module documentation): `poll_transmit`,
//! `handle_outcome`, `handle_transport_error`, `handle_timeout`, `handle_doorbell`, `handle_device_token`,
//! `poll_timeout` and `poll_event` run through thousands of steps under a counting global allocator.
//!
//! This file holds this one test only: the global allocator is per test binary, and the counter only counts
//! allocations made on the measuring thread while measuring is switched on (a thread-local flag), so the test
//! harness's own threads cannot disturb it.

use std::time::{Duration, Instant};

use roger_benches::alloc_count::{counted, CountingAllocator};
use roger_proto::device_authorization::DeviceAuthorizationResponse;
use roger_proto::poller::{DevicePoller, PollOutcome, PollResult, PollerConfig, PollerEvent};
use roger_proto::token::TokenResponse;

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Runs `f` with allocation counting on for this thread and returns how many allocations it made.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let (counts, r) = counted(f);
    (counts.allocations.unsigned_abs(), r)
}

#[test]
fn poller_transitions_do_not_allocate() {
    // The counter works: a Vec allocates.
    let (n, v) = allocations_in(|| Vec::<u8>::with_capacity(16));
    assert!(n >= 1, "the counting allocator counts");
    drop(v);

    // Everything that allocates is built first: the poller, the outcomes, the boxed grant.
    let t0 = Instant::now();
    let auth = DeviceAuthorizationResponse {
        device_code: "GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS".into(),
        user_code: "WDJBMJHT".into(),
        verification_uri: "https://eu.roger.example/device".into(),
        verification_uri_complete: None,
        // The longest lifetime the poller believes (90 days): room for thousands of polls.
        expires_in: 90 * 24 * 3600,
        interval: Some(5),
        request_id: Some("req-1".into()),
    };
    let config = PollerConfig { device_bound: true, ..PollerConfig::default() };
    let mut poller = DevicePoller::new(t0, &auth, "emb-acme", config);
    let outcomes = [
        PollOutcome::Pending,
        PollOutcome::Transient { retry_after: None },
        PollOutcome::Pending,
        PollOutcome::Transient { retry_after: Some(Duration::from_secs(3)) },
        PollOutcome::Pending,
        PollOutcome::DeviceTokenRejected,
        PollOutcome::Pending,
        PollOutcome::SlowDown { retry_after: None },
        PollOutcome::Pending,
        PollOutcome::SlowDown { retry_after: Some(Duration::from_secs(20)) },
    ];
    let granted = PollOutcome::Granted(Box::new(TokenResponse {
        access_token: "at".into(),
        token_type: "Bearer".into(),
        expires_in: Some(300),
        refresh_token: None,
        scope: Some("roger.release".into()),
        device_id: None,
        tenant_id: None,
        user: None,
    }));
    const STEPS: usize = 3_000;

    let (allocations, (polls, token_requests, now)) = allocations_in(|| {
        let mut now = t0;
        let mut polls = 0usize;
        let mut token_requests = 0usize;
        for step in 0..STEPS {
            // A spurious timeout and a doorbell every few steps (both no-ops or at most a rescheduling).
            poller.handle_timeout(now);
            if step % 7 == 0 {
                poller.handle_doorbell(now);
            }
            if step % 3 == 0 {
                poller.set_push_healthy(step % 2 == 0);
            }
            let Some(due) = poller.poll_timeout() else { panic!("a waiting poller has a timer") };
            now = now.max(due);
            poller.handle_timeout(now);
            if poller.poll_transmit(now).is_none() {
                panic!("the poll is due at its timer");
            }
            polls += 1;
            assert!(poller.poll_transmit(now).is_none(), "one poll in flight");
            if step % 11 == 10 {
                poller.handle_transport_error(now);
            } else {
                poller.handle_outcome(now, outcomes[step % outcomes.len()].clone());
            }
            while let Some(event) = poller.poll_event() {
                match event {
                    PollerEvent::NeedDeviceToken => {
                        token_requests += 1;
                        now += Duration::from_millis(250);
                        poller.handle_device_token(now);
                    }
                    PollerEvent::Finished => panic!("the flow must not end inside the loop"),
                    // Outcomes are fed pre-classified: no answer to deviate.
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(!poller.is_finished());
        }
        // The end of the flow is a transition too: the grant's box only moves.
        let due = poller.poll_timeout().expect("still waiting");
        now = now.max(due);
        poller.poll_transmit(now).expect("due");
        poller.handle_outcome(now, granted);
        assert_eq!(poller.poll_event(), Some(PollerEvent::Finished));
        assert_eq!(poller.poll_timeout(), None);
        (polls, token_requests, now)
    });

    assert_eq!(allocations, 0, "the poller's state transitions allocated {allocations} times in {polls} polls");
    assert_eq!(polls, STEPS);
    assert!(token_requests > 0, "the device-token path was exercised");
    assert!(now < poller.expires_at(), "the code never expired during the loop");
    assert!(matches!(poller.take_result(), Some(PollResult::Granted(_))));
}
