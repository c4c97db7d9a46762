//! The shared state of a running server and the one way every handler touches the core: lock, act at the clock's
//! `now`, commit the journal before answering, hand push messages to the bus.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::response::Response;
use roger_proto::push::Id;
use roger_proto::server::{ApiFailure, ServerCore, Table};
use time::OffsetDateTime;

use super::clock::SharedClock;
use super::log::{LogEntry, RequestLog};
use super::respond::problem;
use super::store::Store;
use crate::bus::{PushBus, QueueSpec};
use crate::drive::Drive;

/// Everything a handler can reach.
pub struct Shared {
    /// The protocol core.
    pub core: Mutex<ServerCore>,
    /// Where the journal goes.
    pub store: Mutex<Store>,
    /// Whether the store is a file (`--state`): only then is the journal written, under the core lock.
    pub persistent: bool,
    /// The clock every lifetime reads.
    pub clock: SharedClock,
    /// The push bus.
    pub bus: Arc<dyn PushBus>,
    /// The fake drive (its own listener).
    pub drive: Drive,
    /// The request log.
    pub log: Mutex<RequestLog>,
    /// The API origin.
    pub api: String,
    /// The discovery base.
    pub discovery: String,
    /// The broker URL handed out in discovery and push credentials.
    pub amqp: Option<String>,
    /// What `GET /api/v1/device/push` and `/api/v1/me/push` hand out (PROTOCOL.md §11; `url: None` without a
    /// broker, so they answer `404 push-unavailable`).
    pub push: roger_proto::server::api::PushConfig,
    /// A token that opens `/sim/` to non-loopback callers.
    pub control_token: Option<String>,
    /// Key for the login form's CSRF tokens.
    pub csrf_key: [u8; 32],
    /// Whether the API listener speaks TLS (cookies get `Secure`).
    pub tls: bool,
    /// The fault plan of `/sim/faults` and its seeded random stream (DESIGN.md "Faults").
    pub faults: super::faults::FaultState,
    /// What the API listener received in request bodies (R-DATA-1 evidence, `GET /sim/traffic`).
    pub traffic: super::traffic::Traffic,
    /// The test-only mutant this server runs, if any, and what it keeps ([`super::mutant`]).
    pub mutant: super::mutant::MutantState,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock means a handler panicked mid-update; the data is still the last consistent journal state, so
    // carry on rather than turning every later request into a 500.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The current time on the server's clock.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Runs `f` on the core at `now`, commits the journal (before the caller answers), and publishes push
    /// messages. A failed commit answers 503: the client retries, nothing was promised.
    pub fn act<R>(&self, f: impl FnOnce(&mut ServerCore, OffsetDateTime) -> R) -> Result<R, Response> {
        let mut core = lock(&self.core);
        // Read under the lock: requests apply their times in the order they change the core, so a poll's gap to
        // the previous poll of its code is never negative, whichever request waited longer for the lock.
        let now = self.now();
        let result = f(&mut core, now);
        let push = core.take_push();
        // Devices created or updated by this request (their queues are declared below).
        let devices: Vec<String> = if self.persistent {
            let changes = core.take_changes();
            if let Err(e) = lock(&self.store).commit(&changes) {
                tracing::error!("state commit failed: {e}");
                return Err(problem(&ApiFailure::new(503, "unavailable", "State could not be saved; retry")));
            }
            changes.into_iter().filter(|c| c.table == Table::Devices && c.value.is_some()).map(|c| c.key).collect()
        } else {
            // Nothing to write (and no store lock to take): the keys suffice, no record is serialised.
            core.take_changed_keys(Table::Devices)
        };
        drop(core);
        // PROTOCOL.md §11: the server declares each device's queue, so doorbells published before the printer
        // first subscribes wait for it instead of being dropped.
        for key in devices {
            if let Ok(id) = Id::new(key) {
                let bus = self.bus.clone();
                tokio::spawn(async move {
                    if let Err(e) = bus.declare(QueueSpec::Device(id)).await {
                        tracing::warn!("queue declaration failed: {e}");
                    }
                });
            }
        }
        for msg in push {
            let bus = self.bus.clone();
            tokio::spawn(async move {
                if let Err(e) = bus.publish(&msg).await {
                    tracing::warn!("push publish failed: {e}");
                }
            });
        }
        Ok(result)
    }

    /// Reads the core without mutating it.
    pub fn read<R>(&self, f: impl FnOnce(&ServerCore, OffsetDateTime) -> R) -> R {
        let now = self.now();
        let core = lock(&self.core);
        f(&core, now)
    }

    /// Appends to the request log.
    pub fn log(&self, e: LogEntry) {
        lock(&self.log).push(e);
    }

    /// The request log since `seq`.
    pub fn log_since(&self, seq: u64) -> Vec<LogEntry> {
        lock(&self.log).since(seq)
    }
}
