//! The whole printer client on one task: the connection lifecycle and the panel session over a transport, with
//! user actions and push doorbells arriving on a channel (PROTOCOL.md §5–8).
//!
//! The two machines meet in one place: device-bound requests of the panel (session codes, polls, the password
//! grant, revocations; PROTOCOL.md §7) carry the lifecycle's device token, and when the panel reports
//! `NeedDeviceToken` the lifecycle refreshes and the panel retries (R-TOK-1).
//!
//! Requests are sent one at a time in the order the machines release them; inputs that arrive meanwhile wait in
//! the channel. The panel exists only while the printer is connected: a disconnected printer offers no login.

use std::time::Instant;

use tokio::sync::mpsc;

use super::{Clock, Driver, DriverError, HttpTransport};
use crate::lifecycle::{Connection, ConnectionState, LifecycleEvent};
use crate::metadata::Endpoints;
use crate::panel::{PanelConfig, PanelError, PanelEvent, PanelSession};
use crate::secret::Password;

/// Something that happens to the printer from outside: a user at the panel, or a push doorbell.
#[derive(Debug)]
#[non_exhaustive]
pub enum MfpInput {
    /// The user typed a PIN or password (step 2, or PIN login from idle with a user name; PROTOCOL.md §8).
    Pin {
        /// User name (required from idle; in step 1 it must be the step-1 user or `None`).
        username: Option<String>,
        /// The secret (wiped by the panel after its request, R-PWD-1).
        secret: Password,
    },
    /// The user pressed logout.
    Logout,
    /// Push `code.approved`/`code.denied` with its `request_id` (PROTOCOL.md §8).
    Doorbell(String),
    /// Push `session.ended` (PROTOCOL.md §8 "End").
    SessionEnded,
    /// Push `device.disconnected` (confirmed over HTTPS before acting, R-PUSH-1).
    DeviceDisconnected,
    /// A user-token API call was answered 401 (the session is gone).
    UserTokenRejected,
    /// A device-token API call was answered 401 (refresh and retry, R-TOK-1).
    DeviceTokenRejected,
    /// The push connection came up or went down (PROTOCOL.md §8 relaxed polling).
    PushHealthy(bool),
    /// (Re)connect a printer that is unregistered or disconnected: a new registration (R-TOK-4).
    Register,
    /// Stop the runner.
    Stop,
}

/// What the runner reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MfpEvent {
    /// From the connection lifecycle (show the registration QR, persist state, disconnected…).
    Lifecycle(LifecycleEvent),
    /// From the panel (show the session QR, session started, PIN rejected…).
    Panel(PanelEvent),
    /// A PIN input was refused locally (ROPC not enabled, wrong user, missing user name).
    PinRefused(PanelError),
}

/// The printer client: lifecycle + panel.
#[derive(Debug)]
pub struct MfpClient {
    /// The connection lifecycle.
    pub connection: Connection,
    /// The panel session (present while connected).
    pub panel: Option<PanelSession>,
    panel_config: PanelConfig,
    endpoints: Endpoints,
    push_healthy: bool,
}

impl MfpClient {
    /// A client over `connection` (new or restored) talking to `endpoints`. A connection configured without an
    /// API origin gets `endpoints.api`, so that registration QRs are checked against it (R-QR-4); the panel
    /// checks session QRs against the same origin.
    pub fn new(mut connection: Connection, panel_config: PanelConfig, endpoints: Endpoints) -> Self {
        connection.set_api_if_unset(&endpoints.api);
        Self { connection, panel: None, panel_config, endpoints, push_healthy: false }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    fn ensure_panel(&mut self) {
        match self.connection.state() {
            ConnectionState::Connected if self.panel.is_none() => {
                let mut p = PanelSession::new(
                    self.panel_config,
                    self.connection.client_id().to_owned(),
                    self.endpoints.clone(),
                );
                p.set_push_healthy(self.push_healthy);
                self.panel = Some(p);
            }
            ConnectionState::Connected => {}
            _ => self.panel = None,
        }
    }

    fn apply(&mut self, now: Instant, input: MfpInput, events: &mut Vec<MfpEvent>) -> bool {
        match input {
            MfpInput::Pin { username, secret } => match &mut self.panel {
                Some(p) => {
                    if let Err(e) = p.enter_pin(now, username.as_deref(), secret) {
                        events.push(MfpEvent::PinRefused(e));
                    }
                }
                None => events.push(MfpEvent::PinRefused(PanelError::NotConnected)),
            },
            MfpInput::Logout => {
                if let Some(p) = &mut self.panel {
                    p.logout(now);
                }
            }
            MfpInput::Doorbell(request_id) => {
                self.connection.handle_doorbell(now);
                if let Some(p) = &mut self.panel {
                    p.handle_doorbell(now, &request_id);
                }
            }
            MfpInput::SessionEnded => {
                if let Some(p) = &mut self.panel {
                    p.handle_session_ended(now);
                }
            }
            MfpInput::UserTokenRejected => {
                if let Some(p) = &mut self.panel {
                    p.handle_user_token_rejected(now);
                }
            }
            MfpInput::DeviceDisconnected => self.connection.handle_disconnected_push(now),
            MfpInput::DeviceTokenRejected => self.connection.request_fresh_device_token(now),
            MfpInput::PushHealthy(h) => {
                self.push_healthy = h;
                self.connection.set_push_healthy(h);
                if let Some(p) = &mut self.panel {
                    p.set_push_healthy(h);
                }
            }
            MfpInput::Register => self.connection.start_registration(now),
            MfpInput::Stop => return false,
        }
        true
    }

    /// The next deadline. The panel's deadlines count only while a device token is held: without one the panel
    /// cannot send anything, and the lifecycle's refresh deadline is what moves things on.
    fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let a = self.connection.poll_timeout();
        let b = if self.connection.device_token(now).is_some() {
            self.panel.as_ref().and_then(PanelSession::poll_timeout)
        } else {
            None
        };
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<T: HttpTransport, C: Clock> Driver<T, C> {
    /// Runs the printer until [`MfpInput::Stop`] arrives or the input channel closes, reporting events to
    /// `on_event` (and the deviations of the server, once per kind, to the driver's report sink,
    /// [`Driver::on_peer_report`]). Starts a registration when the printer is unregistered.
    pub async fn run_mfp(
        &self,
        client: &mut MfpClient,
        inputs: &mut mpsc::Receiver<MfpInput>,
        mut on_event: impl FnMut(&MfpClient, &MfpEvent) + Send,
    ) -> Result<(), DriverError> {
        if client.connection.state() == ConnectionState::Unregistered {
            client.connection.start_registration(self.clock.now());
        }
        let mut events = Vec::new();
        let mut spun = false;
        loop {
            let now = self.clock.now();
            // 1. Release and send what is due, lifecycle first (the panel needs its device token).
            if let Some(tx) = client.connection.poll_transmit(now) {
                let request = tx.to_http(&client.endpoints)?;
                match self.send(request).await {
                    Ok(resp) => client.connection.handle_response(self.clock.now(), &resp),
                    Err(_) => client.connection.handle_transport_error(self.clock.now()),
                }
            }
            while let Some(ev) = client.connection.poll_event() {
                if ev == LifecycleEvent::DeviceTokenRefreshed {
                    if let Some(p) = &mut client.panel {
                        p.handle_device_token(self.clock.now());
                    }
                }
                events.push(MfpEvent::Lifecycle(ev));
            }
            client.ensure_panel();
            let now = self.clock.now();
            if let Some(token) = client.connection.device_token(now).cloned() {
                if let Some(panel) = &mut client.panel {
                    while let Some(tx) = panel.poll_transmit(now) {
                        let id = tx.id();
                        let request = tx.to_http(&client.endpoints, Some(&token));
                        drop(tx);
                        let request = request?;
                        match self.send(request).await {
                            Ok(resp) => panel.handle_response(self.clock.now(), id, &resp),
                            Err(_) => panel.handle_transport_error(self.clock.now(), id),
                        }
                    }
                }
            }
            if let Some(panel) = &mut client.panel {
                while let Some(ev) = panel.poll_event() {
                    if ev == PanelEvent::NeedDeviceToken {
                        client.connection.request_fresh_device_token(self.clock.now());
                    }
                    events.push(MfpEvent::Panel(ev));
                }
            }
            for ev in events.drain(..) {
                // Deviations of the server go to the driver's report sink too, once per kind (docs/protocol.md §7).
                if let MfpEvent::Lifecycle(LifecycleEvent::PeerViolation(r))
                | MfpEvent::Panel(PanelEvent::PeerViolation(r)) = &ev
                {
                    self.report(*r);
                }
                on_event(client, &ev);
            }

            // 2. Wait for the next deadline or an input. A deadline that is already due is served at once, but
            //    never twice in a row without a short real pause (a guard against a busy loop).
            let now = self.clock.now();
            let wake = client.poll_timeout(now);
            let due_now = wake.is_some_and(|w| w <= now);
            if due_now && spun {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            spun = due_now;
            let input = if due_now {
                inputs.try_recv().ok()
            } else {
                let sleep = async {
                    match wake {
                        Some(w) => self.clock.sleep_until(w).await,
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    biased;
                    input = inputs.recv() => match input {
                        Some(i) => Some(i),
                        None => return Ok(()),
                    },
                    () = sleep => None,
                }
            };
            let now = self.clock.now();
            if let Some(input) = input {
                if !client.apply(now, input, &mut events) {
                    return Ok(());
                }
            }
            client.connection.handle_timeout(now);
            if let Some(p) = &mut client.panel {
                p.handle_timeout(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::LifecycleConfig;

    /// R-QR-4: the client checks registration QRs against the metadata's API origin unless told another one.
    #[test]
    fn api_origin_handed_to_the_lifecycle() {
        let endpoints = Endpoints::conventional("https://eu.roger.example");
        let config = LifecycleConfig::new("emb-acme", "MX-1", "SN1");
        let client = MfpClient::new(Connection::new(config.clone()), PanelConfig::default(), endpoints.clone());
        assert_eq!(client.connection.config().api.as_deref(), Some("https://eu.roger.example"));
        let own = config.with_api("https://configured.example");
        let client = MfpClient::new(Connection::new(own), PanelConfig::default(), endpoints);
        assert_eq!(client.connection.config().api.as_deref(), Some("https://configured.example"));
    }
}
