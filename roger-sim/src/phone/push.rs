//! The phone's push receiver (PROTOCOL.md §11, R-PUSH-1; issue 5: receivers "reconnect with jittered exponential
//! backoff, and after a reconnect re-read their state over HTTPS").
//!
//! The phone's state is its user's job list. Its doorbells arrive on the installation's own queue
//! `roger.app.<installation_id>`, bound to `user.<user_id>.#` (docs/protocol.md §4.1), so a phone never eats its
//! desktop's messages:
//!
//! | type | what the phone does |
//! |---|---|
//! | `job.queued`, `job.release_requested`, `session.ended` | re-reads its job list over HTTPS (`GET /api/v1/jobs?state=queued`, docs/protocol.md §4.4) |
//! | `code.approved`, `code.denied` | nothing: the phone approves codes, it does not poll them (the desktop that does is another installation) |
//! | another user's or a device's message, an unknown type | nothing |
//!
//! The source ([`PushSource`]) is the region's AMQP broker, consumed through a [`BrokerPool`] with the
//! credentials of `GET /api/v1/me/push?installation_id=…` (the server declares the queue before it answers), or
//! an in-process [`PushBus`] (the demo and the scenario tests; it has no wire protocol, so the phone subscribes its
//! queue on it directly). Either way:
//!
//! * after every (re)connect the phone re-reads its job list, so a doorbell lost while it was away costs nothing;
//! * a subscription that ends (or cannot be made) is retried after a jittered exponential back-off ([`Backoff`]:
//!   250 ms doubling to 30 s, the same as the MFP and the desktop), and while push is down the phone re-reads
//!   every [`FALLBACK_POLL`] instead (a region without a broker, `404 push-unavailable`, is asked again only
//!   after [`UNAVAILABLE_WAIT`]);
//! * every delivery is acknowledged after the re-read it caused (manual acknowledgements: a phone that dies first
//!   gets the message again); duplicates and reordering are harmless because a doorbell only ever causes a
//!   re-read (R-PUSH-1).
//!
//! [`Phone::wait_for_jobs`](super::Phone::wait_for_jobs) is where the phone waits for events: it drives all of
//! the above until the job list satisfies the caller.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use roger_proto::push::{Id, PushEnvelope, PushEvent, PushTarget};
use tokio::time::Instant;

use crate::amqp::{Backoff, BrokerPool, ConsumerError};
use crate::bus::{BusError, PushBus, Subscription};

/// How often a phone without a healthy push connection re-reads its job list (PROTOCOL.md §3: the default polling
/// interval; §11: without push a receiver polls).
pub const FALLBACK_POLL: Duration = Duration::from_secs(5);
/// First wait before a resubscription; the ceiling doubles up to [`MAX_RESUBSCRIBE_WAIT`] (PROTOCOL.md §12).
pub const RESUBSCRIBE_BASE: Duration = Duration::from_millis(250);
/// Longest wait between two subscription attempts (PROTOCOL.md §12 doubling, capped; docs/protocol.md §4.1).
pub const MAX_RESUBSCRIBE_WAIT: Duration = Duration::from_secs(30);
/// How long a phone whose region has no broker (`404 push-unavailable`) waits before asking again.
pub const UNAVAILABLE_WAIT: Duration = Duration::from_secs(300);

/// Where the phone's doorbells come from (PROTOCOL.md §11).
#[derive(Clone)]
pub enum PushSource {
    /// The region's AMQP broker, with the credentials of `GET /api/v1/me/push`, on a channel of this pool.
    Broker(Arc<BrokerPool>),
    /// An in-process bus (the demo and the scenario tests): the installation's queue is subscribed on it directly.
    Bus(Arc<dyn PushBus>),
}

impl fmt::Debug for PushSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Broker(pool) => f.debug_tuple("Broker").field(pool).finish(),
            Self::Bus(bus) => f.debug_tuple("Bus").field(&bus.broker_url()).finish(),
        }
    }
}

/// Why the phone could not consume its queue (it re-reads every [`FALLBACK_POLL`] meanwhile).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// docs/protocol.md §3.16: an installation id is 1–32 characters of `A-Z a-z 0-9 _ : -` (one routing word).
    #[error("the installation id must be 1-32 characters of A-Z a-z 0-9 _ : - (docs/protocol.md §3.16)")]
    BadInstallationId,
    /// The region has no push broker (`404 push-unavailable`).
    #[error("the region has no push broker")]
    Unavailable,
    /// The server handed out credentials for a queue that is not this installation's.
    #[error("the push credentials name another queue than this installation's")]
    WrongQueue,
    /// The phone is not signed in (its queue is bound to its user).
    #[error("not signed in: the installation's queue is bound to the signed-in user")]
    NotSignedIn,
    /// The broker refused the connection, the channel or the consumer, or is unreachable.
    #[error(transparent)]
    Consumer(#[from] ConsumerError),
    /// The in-process bus refused the subscription.
    #[error("push bus: {0}")]
    Bus(#[from] BusError),
    /// `GET /api/v1/me/push` failed (status and problem type, or the transport failure).
    #[error("push credentials: {0}")]
    Credentials(String),
}

/// What the receiver did so far (for tests, the CLI and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushStats {
    /// Subscriptions established (the first one and every reconnect).
    pub connects: u64,
    /// Subscription attempts that failed.
    pub failed_attempts: u64,
    /// Subscriptions that ended (connection cut, queue deleted or rebound).
    pub ended: u64,
    /// Doorbells that caused a re-read.
    pub doorbells: u64,
    /// Deliveries ignored (see the module documentation).
    pub ignored: u64,
    /// Job-list re-reads over HTTPS, for whatever reason (connect, doorbell, fallback polling).
    pub rereads: u64,
}

/// What one envelope asks of the phone (the pure half of the receiver).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Re-read the job list over HTTPS (R-PUSH-1: confirm before acting).
    RereadJobs,
    /// Nothing to do, and why.
    Ignore(&'static str),
}

/// Classifies an envelope for the phone of `user_id` (docs/protocol.md §4.4).
pub fn action(envelope: &PushEnvelope, user_id: &str) -> Action {
    match &envelope.target {
        PushTarget::User(id) if id.as_str() == user_id => {}
        PushTarget::User(_) => return Action::Ignore("addressed to another user"),
        _ => return Action::Ignore("addressed to a device"),
    }
    match &envelope.event {
        PushEvent::JobQueued { .. } | PushEvent::JobReleaseRequested { .. } | PushEvent::SessionEnded { .. } => {
            Action::RereadJobs
        }
        PushEvent::CodeApproved { .. } | PushEvent::CodeDenied { .. } => {
            Action::Ignore("a code doorbell is for the installation that polls the code")
        }
        PushEvent::DeviceDisconnected { .. } | PushEvent::ConfigChanged => Action::Ignore("a printer's type"),
        _ => Action::Ignore("unknown type"),
    }
}

/// The receiver's state between calls of [`Phone::wait_for_jobs`](super::Phone::wait_for_jobs): the source, the
/// installation, the live subscription and the back-off.
pub(crate) struct PushReceiver {
    pub(crate) source: PushSource,
    pub(crate) installation: Id,
    pub(crate) subscription: Option<Subscription>,
    backoff: Backoff,
    /// No subscription attempt before this instant (`None`: at once).
    next_attempt: Option<Instant>,
    pub(crate) stats: PushStats,
    pub(crate) last_error: Option<String>,
    /// When the job list was last read (the fallback polling counts from it while push is down).
    pub(crate) last_read: Option<Instant>,
}

impl fmt::Debug for PushReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushReceiver")
            .field("source", &self.source)
            .field("installation", &self.installation)
            .field("subscribed", &self.subscription.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl PushReceiver {
    /// A receiver for `installation_id` (checked as docs/protocol.md §3.16 requires).
    pub(crate) fn new(source: PushSource, installation_id: &str) -> Result<Self, PushError> {
        if !roger_proto::server::api::is_valid_installation_id(installation_id) {
            return Err(PushError::BadInstallationId);
        }
        let installation = Id::new(installation_id).map_err(|_| PushError::BadInstallationId)?;
        Ok(Self {
            source,
            installation,
            subscription: None,
            backoff: Backoff::new(RESUBSCRIBE_BASE, MAX_RESUBSCRIBE_WAIT),
            next_attempt: None,
            stats: PushStats::default(),
            last_error: None,
            last_read: None,
        })
    }

    /// Whether a subscription attempt is due at `now`.
    pub(crate) fn attempt_due(&self, now: Instant) -> bool {
        self.subscription.is_none() && self.next_attempt.is_none_or(|t| t <= now)
    }

    /// When the next subscription attempt is due, if one is pending.
    pub(crate) fn next_attempt(&self) -> Option<Instant> {
        if self.subscription.is_some() {
            None
        } else {
            self.next_attempt
        }
    }

    /// A subscription came about: the back-off starts over.
    pub(crate) fn connected(&mut self, subscription: Subscription) {
        self.subscription = Some(subscription);
        self.backoff.reset();
        self.next_attempt = None;
        self.last_error = None;
        self.stats.connects += 1;
    }

    /// An attempt failed: the next one after a back-off wait (or [`UNAVAILABLE_WAIT`] without a broker).
    pub(crate) fn failed(&mut self, now: Instant, error: &PushError) {
        self.stats.failed_attempts += 1;
        let wait = match error {
            PushError::Unavailable => UNAVAILABLE_WAIT,
            _ => self.backoff.next_delay(),
        };
        tracing::debug!("phone push: cannot subscribe ({error}); next attempt in {} ms", wait.as_millis());
        self.last_error = Some(error.to_string());
        self.next_attempt = Some(now + wait);
    }

    /// The subscription ended: resubscribe after a back-off wait.
    pub(crate) fn ended(&mut self, now: Instant) {
        self.subscription = None;
        self.stats.ended += 1;
        self.next_attempt = Some(now + self.backoff.next_delay());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    fn envelope(target: PushTarget, event: PushEvent) -> PushEnvelope {
        PushEnvelope::new(id("msg_1"), OffsetDateTime::UNIX_EPOCH, target, event)
    }

    /// docs/protocol.md §4.4: the user's job doorbells make the phone re-read; everything else is ignored.
    #[test]
    fn doorbells_for_the_user_cause_a_reread() {
        let me = PushTarget::User(id("u-alice"));
        for event in [
            PushEvent::JobQueued { job_id: id("job_1") },
            PushEvent::JobReleaseRequested { job_id: id("job_1"), device_id: id("dev_1") },
            PushEvent::SessionEnded { device_id: id("dev_1") },
        ] {
            assert_eq!(action(&envelope(me.clone(), event.clone()), "u-alice"), Action::RereadJobs, "{event:?}");
        }
        for event in [
            PushEvent::CodeApproved { request_id: id("req_1") },
            PushEvent::CodeDenied { request_id: id("req_1") },
            PushEvent::ConfigChanged,
            PushEvent::DeviceDisconnected { device_id: id("dev_1") },
            PushEvent::Unknown(id("job.archived")),
        ] {
            assert!(matches!(action(&envelope(me.clone(), event.clone()), "u-alice"), Action::Ignore(_)), "{event:?}");
        }
        let queued = PushEvent::JobQueued { job_id: id("job_1") };
        assert_eq!(
            action(&envelope(PushTarget::User(id("u-bob")), queued.clone()), "u-alice"),
            Action::Ignore("addressed to another user")
        );
        assert_eq!(
            action(&envelope(PushTarget::Device(id("u-alice")), queued), "u-alice"),
            Action::Ignore("addressed to a device")
        );
    }

    /// docs/protocol.md §3.16 installation ids; the receiver backs off between failed attempts and starts over once
    /// connected (PROTOCOL.md §12 doubling, jittered).
    #[tokio::test]
    async fn installation_ids_and_back_off() {
        let bus: Arc<dyn PushBus> = Arc::new(crate::bus::InProcessBus::new());
        for bad in ["", "a.b", "a b", &"x".repeat(33)] {
            assert!(matches!(PushReceiver::new(PushSource::Bus(bus.clone()), bad), Err(PushError::BadInstallationId)));
        }
        let mut r = PushReceiver::new(PushSource::Bus(bus), "phone-1").expect("receiver");
        let t0 = Instant::now();
        assert!(r.attempt_due(t0), "the first attempt is due at once");
        r.failed(t0, &PushError::Credentials("HTTP 503".into()));
        let first = r.next_attempt().expect("scheduled") - t0;
        assert!(first >= RESUBSCRIBE_BASE / 2 && first <= RESUBSCRIBE_BASE, "{first:?}");
        assert!(!r.attempt_due(t0));
        r.failed(t0, &PushError::Credentials("HTTP 503".into()));
        let second = r.next_attempt().expect("scheduled") - t0;
        assert!(second >= RESUBSCRIBE_BASE && second <= RESUBSCRIBE_BASE * 2, "doubled: {second:?}");
        r.failed(t0, &PushError::Unavailable);
        assert_eq!(r.next_attempt(), Some(t0 + UNAVAILABLE_WAIT), "no broker: ask again much later");
        assert_eq!(r.stats.failed_attempts, 3);
        assert!(r.last_error.as_deref().is_some_and(|e| e.contains("no push broker")));

        let (tx, rx) = tokio::sync::mpsc::channel(1);
        r.connected(Subscription::from_receiver(rx));
        assert_eq!((r.stats.connects, r.next_attempt(), r.last_error.as_deref()), (1, None, None));
        drop(tx);
        r.ended(t0);
        let after = r.next_attempt().expect("scheduled") - t0;
        assert!(after <= RESUBSCRIBE_BASE, "the back-off started over: {after:?}");
        assert_eq!(r.stats.ended, 1);
    }
}
