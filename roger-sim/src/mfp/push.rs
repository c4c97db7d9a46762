//! The printer's push input (PROTOCOL.md §11): consumes the device queue `roger.device.<device_id>` of a
//! [`PushBus`](crate::bus::PushBus) and turns every envelope into a doorbell for the machines or a confirmation over HTTPS (R-PUSH-1).
//!
//! | type | what the printer does |
//! |---|---|
//! | `code.approved`, `code.denied` | [`MfpInput::Doorbell`] with the `request_id`: the code is polled at the earliest allowed moment (PROTOCOL.md §8) |
//! | `session.ended` | probes its user token (`GET /api/v1/jobs`); a `401` ends the session (docs/protocol.md §4.4) |
//! | `device.disconnected` | [`MfpInput::DeviceDisconnected`]: the lifecycle refreshes; `invalid_grant` disconnects (R-TOK-4) |
//! | `job.release_requested` | releases that job with its session token (the phone's release, PROTOCOL.md §9) |
//! | `config.changed` | re-reads `GET /api/v1/device` (docs/protocol.md §3.10) |
//!
//! The bus is any [`PushBus`](crate::bus::PushBus) (the in-process bus today, AMQP later), so the push input stays pluggable; a
//! vendor-specific source can also feed [`MfpInput`]s through the control API. The connection's health goes to the
//! machines as [`MfpInput::PushHealthy`] (with push healthy they poll less, at least every 30 s). A subscription
//! that ends is re-established with a doubling back-off, and after every (re)connect the printer re-reads its
//! state (R-PUSH-1). Envelopes for another device are ignored.

use std::sync::Arc;
use std::time::Duration;

use roger_proto::driver::mfp::MfpInput;
use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};

use super::runtime::Core;
use crate::bus::{PushBus, QueueSpec};

/// Longest wait between two subscription attempts (PROTOCOL.md §12 doubling, capped).
const MAX_RESUBSCRIBE_WAIT: Duration = Duration::from_secs(30);

/// The push task: subscribes for the current device, feeds the machines, resubscribes when the subscription or
/// the device changes, and stops with the printer.
pub(crate) async fn run(core: Arc<Core>, bus: Arc<dyn PushBus>) {
    let mut version = core.version.subscribe();
    let mut shutdown = core.shutdown.subscribe();
    let mut failures: u32 = 0;
    loop {
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
        let mut subscription = match bus.subscribe(QueueSpec::Device(id)).await {
            Ok(s) => s,
            Err(e) => {
                failures = failures.saturating_add(1);
                core.input(MfpInput::PushHealthy(false)).await;
                let wait = Duration::from_millis(250u64.saturating_mul(1 << failures.min(8))).min(MAX_RESUBSCRIBE_WAIT);
                core.say(format!("push: cannot subscribe ({e}); retrying in {} ms", wait.as_millis()));
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        failures = 0;
        core.input(MfpInput::PushHealthy(true)).await;
        // R-PUSH-1: after a (re)connect the receiver re-reads its state.
        core.update(|s| s.reread_device = true);
        core.say("push: connected to the device queue");
        let ended = loop {
            tokio::select! {
                msg = subscription.next() => match msg {
                    Some(envelope) => handle(&core, &device, envelope).await,
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
        core.input(MfpInput::PushHealthy(false)).await;
        if ended {
            core.say("push: the subscription ended; resubscribing");
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return,
            }
        }
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

async fn handle(core: &Arc<Core>, device: &str, envelope: PushEnvelope) {
    let kind = envelope.event_type().to_owned();
    match action(&envelope, device) {
        Action::Input(DoorbellInput::Doorbell(request_id)) => {
            core.say(format!("push: {kind} doorbell; polling the code now"));
            core.input(MfpInput::Doorbell(request_id)).await;
        }
        Action::Input(DoorbellInput::DeviceDisconnected) => {
            core.say("push: device.disconnected; confirming with a refresh (R-PUSH-1)");
            core.input(MfpInput::DeviceDisconnected).await;
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
