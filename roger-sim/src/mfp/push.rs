//! The printer's push input (PROTOCOL.md §11): consumes the device queue `roger.device.<device_id>` and turns every
//! envelope into a doorbell for the machines or a confirmation over HTTPS (R-PUSH-1).
//!
//! | type | what the printer does |
//! |---|---|
//! | `code.approved`, `code.denied` | [`MfpInput::Doorbell`] with the `request_id`: the code is polled at the earliest allowed moment (PROTOCOL.md §8) |
//! | `session.ended` | probes its user token (`GET /api/v1/jobs`); a `401` ends the session (docs/protocol.md §4.4) |
//! | `device.disconnected` | [`MfpInput::DeviceDisconnected`]: the lifecycle refreshes; `invalid_grant` disconnects (R-TOK-4) |
//! | `job.release_requested` | releases that job with its session token (the phone's release, PROTOCOL.md §9), once |
//! | `config.changed` | re-reads `GET /api/v1/device` (docs/protocol.md §3.10) |
//!
//! The source (`Source`) is an in-process [`PushBus`](crate::bus::PushBus) or the region's AMQP broker: for the broker
//! the printer fetches `GET /api/v1/device/push` with its device token (short-lived credentials for its own queue only)
//! and consumes through a [`BrokerPool`](crate::amqp::BrokerPool), acknowledging each message after it acted on it. The
//! connection's health goes to the machines as [`MfpInput::PushHealthy`] (with push healthy they poll less, at least
//! every 30 s). A subscription that ends is re-established after a jittered exponential back-off
//! ([`Backoff`](crate::amqp::Backoff)), and after every (re)connect the printer re-reads its state (R-PUSH-1): the
//! device configuration, the codes on display (polled at once, so an approval whose doorbell was lost still opens the
//! session) and its session token. Duplicates and reordering are harmless: a release is done at most once per job, and
//! everything else is a confirmation over HTTPS. Envelopes for another device are ignored.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use roger_proto::api::{self, PushCredentials};
use roger_proto::driver::mfp::MfpInput;
use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};
use roger_proto::wire::classify_api;

use super::mutant::MfpMutant;
use super::ops::Retry;
use super::runtime::Core;
use super::MfpError;
use crate::amqp::{Backoff, BrokerPool, ConsumerError};
use crate::bus::{BusError, PushBus, QueueSpec, Subscription};

/// First wait before a resubscription; the ceiling doubles up to [`MAX_RESUBSCRIBE_WAIT`] (PROTOCOL.md §12).
const RESUBSCRIBE_BASE: Duration = Duration::from_millis(250);
/// Longest wait between two subscription attempts (PROTOCOL.md §12 doubling, capped).
const MAX_RESUBSCRIBE_WAIT: Duration = Duration::from_secs(30);
/// How long a printer whose region has no broker (`404 push-unavailable`) waits before asking again.
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(300);
/// Job ids remembered as released through push (duplicates of these are ignored).
const MAX_REMEMBERED_RELEASES: usize = 1024;

/// Where the printer's doorbells come from (PROTOCOL.md §11).
pub(crate) enum Source {
    /// An in-process bus (the demo and the scenario tests).
    Bus(Arc<dyn PushBus>),
    /// The region's broker, with the credentials of `GET /api/v1/device/push`.
    Broker(Arc<BrokerPool>),
}

/// Why no subscription came about.
#[derive(Debug, thiserror::Error)]
enum SubscribeError {
    /// The region has no broker (`404 push-unavailable`): poll only.
    #[error("the region has no push broker")]
    Unavailable,
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("push credentials: {0}")]
    Credentials(#[from] MfpError),
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The server handed out credentials for a queue that is not this printer's.
    #[error("the push credentials name another queue")]
    WrongQueue,
}

/// `GET /api/v1/device/push` (PROTOCOL.md §11), then consumes the queue it names.
async fn broker_subscribe(core: &Core, pool: &BrokerPool, device: &Id) -> Result<Subscription, SubscribeError> {
    let api_base = core.endpoints.api.clone();
    let resp = core.with_device_token(|t| api::get_device_push(&api_base, t), Retry::Idempotent).await?;
    if resp.status() == http::StatusCode::NOT_FOUND {
        return Err(SubscribeError::Unavailable);
    }
    let creds: PushCredentials = classify_api(&resp).map_err(MfpError::from)?;
    if !creds.queue.ends_with(&roger_proto::push::device_queue(device)) {
        return Err(SubscribeError::WrongQueue);
    }
    Ok(pool.consume(&creds).await?)
}

async fn subscribe(core: &Core, source: &Source, device: &Id) -> Result<Subscription, SubscribeError> {
    match source {
        Source::Bus(bus) => Ok(bus.subscribe(QueueSpec::Device(device.clone())).await?),
        Source::Broker(pool) => broker_subscribe(core, pool, device).await,
    }
}

/// Releases already done (or under way) through push, so a duplicate doorbell never prints a job twice.
#[derive(Default)]
struct Released {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Released {
    /// Remembers `job`; `false` if it was remembered already.
    fn first_time(&mut self, job: &str) -> bool {
        if !self.ids.insert(job.to_owned()) {
            return false;
        }
        self.order.push_back(job.to_owned());
        if self.order.len() > MAX_REMEMBERED_RELEASES {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

/// The push task: subscribes for the current device, feeds the machines, resubscribes when the subscription or
/// the device changes, and stops with the printer.
pub(crate) async fn run(core: Arc<Core>, source: Source) {
    let mut version = core.version.subscribe();
    let mut shutdown = core.shutdown.subscribe();
    let mut backoff = Backoff::new(RESUBSCRIBE_BASE, MAX_RESUBSCRIBE_WAIT);
    let mut released = Released::default();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Wait until the printer is registered.
        let device = loop {
            if let Some(d) = core.snapshot(|s| s.device_id.clone().filter(|_| s.connected())) {
                break d;
            }
            tokio::select! {
                r = version.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
        };
        let Ok(id) = Id::new(device.clone()) else {
            core.say(format!("push: the device id {device:?} cannot name a queue; polling only"));
            wait_for_device_change(&core, &mut version, &mut shutdown, &device).await;
            continue;
        };
        let mut subscription = match subscribe(&core, &source, &id).await {
            Ok(s) => s,
            Err(SubscribeError::Unavailable) => {
                core.input(MfpInput::PushHealthy(false)).await;
                core.say("push: the region has no push broker; polling at the plain interval");
                tokio::select! {
                    () = tokio::time::sleep(UNAVAILABLE_WAIT) => continue,
                    () = wait_for_device_change(&core, &mut version, &mut shutdown, &device) => continue,
                }
            }
            Err(e) => {
                if core.config.mutant != Some(MfpMutant::NoPollFallback) {
                    core.input(MfpInput::PushHealthy(false)).await;
                }
                let wait = backoff.next_delay();
                core.say(format!("push: cannot subscribe ({e}); retrying in {} ms", wait.as_millis()));
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        backoff.reset();
        core.input(MfpInput::PushHealthy(true)).await;
        core.say("push: connected to the device queue");
        // R-PUSH-1: after a (re)connect the receiver re-reads its state; a doorbell lost meanwhile costs nothing.
        reread_after_connect(&core).await;
        // Test-only mutant `no-poll-fallback`: a lost connection is never reported, so the machines keep the
        // relaxed push cadence (breaks R-PUSH-1: a missed doorbell delays the session).
        let fallback = core.config.mutant != Some(MfpMutant::NoPollFallback);
        let ended = loop {
            tokio::select! {
                delivery = subscription.next_delivery() => match delivery {
                    Some(delivery) => {
                        handle(&core, &device, &delivery.envelope, &mut released).await;
                        // Acknowledged once acted on: a printer that dies first gets the message again.
                        if let Err(e) = delivery.ack().await {
                            core.say(format!("push: acknowledgement failed ({e}); the broker will redeliver"));
                        }
                    }
                    None => break true,
                },
                r = version.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let same = core.snapshot(|s| s.connected() && s.device_id.as_deref() == Some(device.as_str()));
                    if !same {
                        break false;
                    }
                }
                _ = shutdown.changed() => return,
            }
        };
        if fallback {
            core.input(MfpInput::PushHealthy(false)).await;
        }
        if ended {
            let wait = backoff.next_delay();
            core.say(format!("push: the subscription ended; resubscribing in {} ms", wait.as_millis()));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// R-PUSH-1 after a (re)connect: re-read the device configuration, poll the codes on display now (their doorbell
/// may have been lost while disconnected), and confirm the session token is still good.
async fn reread_after_connect(core: &Arc<Core>) {
    core.update(|s| s.reread_device = true);
    let shown: Vec<String> = core.snapshot(|s| {
        [s.registration.as_ref(), s.session_qr.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|c| c.request_id.clone())
            .collect()
    });
    for request_id in shown {
        core.input(MfpInput::Doorbell(request_id)).await;
    }
    if core.snapshot(|s| s.release_token.is_some()) {
        let core = core.clone();
        tokio::spawn(async move { core.confirm_session_end().await });
    }
}

async fn wait_for_device_change(
    core: &Core,
    version: &mut tokio::sync::watch::Receiver<u64>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    device: &str,
) {
    loop {
        tokio::select! {
            r = version.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
        if core.snapshot(|s| s.device_id.as_deref() != Some(device)) {
            return;
        }
    }
}

/// Whether an envelope is addressed to `device`.
pub(crate) fn for_device(envelope: &PushEnvelope, device: &str) -> bool {
    matches!(&envelope.target, PushTarget::Device(id) if id.as_str() == device)
}

/// What one envelope asks of the printer (the pure half of [`handle`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Feed this input to the machines.
    Input(DoorbellInput),
    /// Confirm a session end over HTTPS.
    ConfirmSessionEnd,
    /// Release this job with the session token.
    Release(String),
    /// Re-read the device configuration.
    RereadDevice,
    /// Nothing to do (another device's message, a user-only type, an unknown type).
    Ignore(&'static str),
}

/// The inputs a push message may produce (a cloneable mirror of the [`MfpInput`] variants concerned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DoorbellInput {
    Doorbell(String),
    DeviceDisconnected,
}

/// Classifies an envelope for `device` (PROTOCOL.md §11 types, docs/protocol.md §4.4).
pub(crate) fn action(envelope: &PushEnvelope, device: &str) -> Action {
    if !for_device(envelope, device) {
        return Action::Ignore("addressed to another target");
    }
    let ours = |id: &Id| id.as_str() == device;
    match &envelope.event {
        PushEvent::CodeApproved { request_id } | PushEvent::CodeDenied { request_id } => {
            Action::Input(DoorbellInput::Doorbell(request_id.as_str().to_owned()))
        }
        PushEvent::SessionEnded { device_id } if ours(device_id) => Action::ConfirmSessionEnd,
        PushEvent::DeviceDisconnected { device_id } if ours(device_id) => {
            Action::Input(DoorbellInput::DeviceDisconnected)
        }
        PushEvent::JobReleaseRequested { job_id, device_id } if ours(device_id) => {
            Action::Release(job_id.as_str().to_owned())
        }
        PushEvent::ConfigChanged => Action::RereadDevice,
        PushEvent::SessionEnded { .. }
        | PushEvent::DeviceDisconnected { .. }
        | PushEvent::JobReleaseRequested { .. } => Action::Ignore("names another device"),
        PushEvent::JobQueued { .. } => Action::Ignore("job.queued is for apps"),
        _ => Action::Ignore("unknown type"),
    }
}

async fn handle(core: &Arc<Core>, device: &str, envelope: &PushEnvelope, released: &mut Released) {
    let kind = envelope.event_type().to_owned();
    match action(envelope, device) {
        Action::Input(DoorbellInput::Doorbell(request_id)) => {
            core.say(format!("push: {kind} doorbell; polling the code now"));
            core.input(MfpInput::Doorbell(request_id)).await;
        }
        Action::Input(DoorbellInput::DeviceDisconnected) => {
            core.say("push: device.disconnected; confirming with a refresh (R-PUSH-1)");
            core.input(MfpInput::DeviceDisconnected).await;
        }
        Action::ConfirmSessionEnd if core.config.mutant == Some(MfpMutant::TrustDoorbell) => {
            // Test-only mutant `trust-doorbell`: the doorbell is taken at its word (breaks R-PUSH-1).
            core.say("push: session.ended; logging out without confirming");
            core.input(MfpInput::Logout).await;
        }
        Action::ConfirmSessionEnd => {
            core.say("push: session.ended; confirming over HTTPS");
            let core = core.clone();
            tokio::spawn(async move { core.confirm_session_end().await });
        }
        Action::Release(job_id) => {
            if core.snapshot(|s| s.release_token.is_none()) {
                core.say(format!("push: release of job {job_id} requested, but no session is open; ignored"));
                return;
            }
            // At-least-once delivery (R-PUSH-1): a duplicate doorbell never prints a job twice.
            let printed_before = core.printer.records().iter().any(|r| r.job_id == job_id);
            if printed_before || !released.first_time(&job_id) {
                core.say(format!("push: release of job {job_id} requested again; already released here, ignored"));
                return;
            }
            core.say(format!("push: release of job {job_id} requested from the app"));
            let core = core.clone();
            tokio::spawn(async move {
                if let Err(e) = core.release(&job_id).await {
                    core.say(format!("the requested release of job {job_id} failed: {e}"));
                }
            });
        }
        Action::RereadDevice => {
            core.say("push: config.changed; re-reading the device configuration");
            core.update(|s| s.reread_device = true);
        }
        Action::Ignore(why) => core.say(format!("push: ignored {kind} ({why})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    fn env(target: PushTarget, event: PushEvent) -> PushEnvelope {
        PushEnvelope::new(id("msg_1"), OffsetDateTime::UNIX_EPOCH, target, event)
    }

    /// PROTOCOL.md §11 types as the printer treats them (docs/protocol.md §4.4).
    #[test]
    fn envelopes_become_actions() {
        let me = PushTarget::Device(id("dev_me"));
        let cases = [
            (
                PushEvent::CodeApproved { request_id: id("req_1") },
                Action::Input(DoorbellInput::Doorbell("req_1".into())),
            ),
            (PushEvent::CodeDenied { request_id: id("req_2") }, Action::Input(DoorbellInput::Doorbell("req_2".into()))),
            (PushEvent::SessionEnded { device_id: id("dev_me") }, Action::ConfirmSessionEnd),
            (
                PushEvent::DeviceDisconnected { device_id: id("dev_me") },
                Action::Input(DoorbellInput::DeviceDisconnected),
            ),
            (
                PushEvent::JobReleaseRequested { job_id: id("job_1"), device_id: id("dev_me") },
                Action::Release("job_1".into()),
            ),
            (PushEvent::ConfigChanged, Action::RereadDevice),
        ];
        for (event, want) in cases {
            assert_eq!(action(&env(me.clone(), event.clone()), "dev_me"), want, "{event:?}");
        }
    }

    /// Messages for another device, naming another device, or meant for apps change nothing (R-PUSH-1).
    #[test]
    fn foreign_and_app_messages_are_ignored() {
        let me = PushTarget::Device(id("dev_me"));
        let other = PushTarget::Device(id("dev_other"));
        let user = PushTarget::User(id("usr_1"));
        assert!(matches!(
            action(&env(other, PushEvent::DeviceDisconnected { device_id: id("dev_other") }), "dev_me"),
            Action::Ignore(_)
        ));
        assert!(matches!(
            action(&env(user, PushEvent::CodeApproved { request_id: id("r") }), "dev_me"),
            Action::Ignore(_)
        ));
        assert!(matches!(
            action(&env(me.clone(), PushEvent::DeviceDisconnected { device_id: id("dev_other") }), "dev_me"),
            Action::Ignore(_)
        ));
        assert!(matches!(
            action(&env(me.clone(), PushEvent::JobQueued { job_id: id("job_1") }), "dev_me"),
            Action::Ignore(_)
        ));
        assert!(matches!(action(&env(me, PushEvent::Unknown(id("future.type"))), "dev_me"), Action::Ignore(_)));
    }
}
