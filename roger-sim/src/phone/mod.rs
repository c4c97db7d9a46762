//! The simulated phone (issue 4): the Roger mobile app of a user or tenant admin, talking to the server only over
//! HTTP(S) with `roger_proto`'s messages.
//!
//! * signs in with the authorization-code grant and PKCE S256 through the server's login form, CSRF token and
//!   cookie included (PROTOCOL.md §4, RFC 6749 §4.1, RFC 7636, RFC 8252), and refreshes its app token with rotation
//!   (R-TOK-1, R-TOK-2);
//! * "scans" a QR from its payload or from a PNG screenshot of a panel, and refuses a QR whose origin is not its
//!   region's API origin before sending anything anywhere (R-QR-4);
//! * looks a code up and shows what it would approve before approving or denying (R-QR-2, RFC 8628 §5.4): an
//!   approval takes a [`CodeReview`], which only [`Phone::look_up`] makes;
//! * lists, submits, releases (to a printer it has a session at), deletes its user's jobs (PROTOCOL.md §9); ends
//!   its session at a printer (§8 "End"); exports its user's data (R-DATA-2);
//! * as a tenant admin approves printer registrations (§5) and removes printers (R-TOK-4).
//!
//! * receives its user's doorbells (PROTOCOL.md §11) on its installation's own queue, from the region's broker or
//!   the in-process bus, and re-reads its job list over HTTPS on each one and after every (re)connect
//!   ([`push`], [`Phone::wait_for_jobs`]).
//!
//! [`app`] holds the `roger.app` layer it shares with the simulated desktop ([`crate::desktop`]); [`cli`] the
//! `roger-sim phone` command.

pub mod app;
pub mod cli;
pub mod login;
pub mod push;
pub mod scan;

use std::time::{Duration, Instant};

use roger_proto::api::{
    self, CodeKind, CodeLookup, Job, MeExport, PushCredentials, ReleaseRequest, SessionEnd, SubmitJob,
};
use roger_proto::authorize::{self, AuthorizationRequest, LoginForm, RedirectError, MOBILE_REDIRECT_URI};
use roger_proto::qr::{self, QrError};
use roger_proto::secret::{CsrfToken, Password, UserCode};
use roger_proto::server::api::ReleaseRequested;
use roger_proto::token::{client_id, TokenRequest, TokenUser};
use roger_proto::{pkce, user_code};

pub use app::{AppClient, AppError, ClientConfig};
pub use cli::{run, PhoneArgs};
pub use login::LoginError;
pub use push::{PushSource, PushStats};
pub use scan::ScanError;

/// What the phone refused or the server answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneError {
    /// The shared app layer: discovery, metadata, transport, or the server's answer (status + problem type or
    /// OAuth error).
    #[error(transparent)]
    App(#[from] AppError),
    /// The login form round trip failed (PROTOCOL.md §4).
    #[error(transparent)]
    Login(#[from] LoginError),
    /// The redirect that ends the login is wrong or carries an error (RFC 6749 §4.1.2, §4.1.2.1, §10.12).
    #[error("sign-in redirect: {0}")]
    Redirect(#[from] RedirectError),
    /// The scanned QR is refused: another origin than the region's API (R-QR-4), another path, or no valid code.
    #[error(transparent)]
    Qr(#[from] QrError),
    /// The screenshot holds no readable QR code.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// A typed code is not a Roger user code (RFC 8628 §6.1).
    #[error("not a user code: {0}")]
    UserCode(#[from] user_code::UserCodeError),
    /// R-QR-2: the code is of a kind the phone does not know, so it cannot show the user what approving grants.
    #[error("the code is of an unknown kind; the phone does not approve what it cannot show (R-QR-2)")]
    UnknownKind,
    /// R-QR-2: the code grants something else than the user is doing (e.g. a desktop sign-in scanned at a printer,
    /// RFC 8628 §5.4 remote phishing).
    #[error("the code is a {found:?} code, not the {expected:?} code expected (R-QR-2)")]
    UnexpectedKind {
        /// What the user meant to approve.
        expected: CodeKind,
        /// What the server says the code is.
        found: CodeKind,
    },
    /// The push receiver could not be set up (PROTOCOL.md §11).
    #[error("push: {0}")]
    Push(#[from] push::PushError),
    /// [`Phone::wait_for_jobs`]: the job list did not become what was waited for in time.
    #[error(
        "the job list did not change as expected within {} s ({jobs} queued job(s) at the last look)",
        .waited.as_secs_f64()
    )]
    WaitTimeout {
        /// How long the phone waited.
        waited: Duration,
        /// How many jobs the last re-read found.
        jobs: usize,
    },
}

impl PhoneError {
    /// The HTTP status the server answered, if the error is a server answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::App(e) => e.status(),
            _ => None,
        }
    }

    /// The `urn:roger:problem:<name>` of a refusal, if that is what the server answered.
    pub fn problem_name(&self) -> Option<&str> {
        match self {
            Self::App(e) => e.problem_name(),
            _ => None,
        }
    }
}

/// A code the phone looked up (R-QR-2): the only way to approve or deny, so the user has always been shown what
/// the approval grants before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeReview {
    /// The user code, wire form.
    pub user_code: UserCode,
    /// What the server says about it: kind, and vendor, model and serial for printers.
    pub lookup: CodeLookup,
}

impl CodeReview {
    /// What the phone shows before the user decides (R-QR-2: the kind, and for printers vendor, model, serial).
    pub fn describe(&self) -> String {
        let code = self.user_code.display();
        let printer = || {
            let l = &self.lookup;
            let part = |label: &str, v: &Option<String>| v.as_deref().map(|v| format!(" {label} {v}"));
            [part("vendor", &l.vendor), part("model", &l.model), part("serial", &l.serial)]
                .into_iter()
                .flatten()
                .collect::<String>()
        };
        match self.lookup.kind {
            CodeKind::Session => format!("sign in at the printer{} (code {})", printer(), code.as_str()),
            CodeKind::Registration => {
                format!("register the printer{} to your tenant (code {})", printer(), code.as_str())
            }
            CodeKind::Desktop => format!("sign a desktop computer in to your account (code {})", code.as_str()),
            CodeKind::Unknown => format!("an unknown kind of request (code {}): not approvable", code.as_str()),
        }
    }
}

/// The simulated phone app (see the module documentation).
#[derive(Debug)]
pub struct Phone {
    app: AppClient,
    /// The push receiver, once attached ([`Phone::attach_push`]).
    push: Option<push::PushReceiver>,
}

impl Phone {
    /// Discovers the region and checks its metadata (PROTOCOL.md §2; R-DISC-1, R-DISC-2, R-META-1). The phone
    /// also refuses a server without PKCE S256 only at sign-in, where the form would fail.
    pub async fn connect(config: &ClientConfig) -> Result<Self, PhoneError> {
        Ok(Self { app: AppClient::connect(config, client_id::MOBILE).await?, push: None })
    }

    /// The shared app layer (API origin, user, raw calls).
    pub fn app(&self) -> &AppClient {
        &self.app
    }

    /// The region's API origin: the only origin whose QR codes the phone accepts (R-QR-4).
    pub fn api(&self) -> &str {
        self.app.api()
    }

    /// The signed-in user.
    pub fn user(&self) -> Option<&TokenUser> {
        self.app.user()
    }

    /// Signs in through the login form (PROTOCOL.md §4, docs/protocol.md §3.4): a fresh PKCE verifier (RFC 7636
    /// §4.1) and `state` (128 bits, RFC 6749 §10.12); `GET /oauth/authorize` for the form, its CSRF token and
    /// cookie; `POST /oauth/authorize` with tenant and credentials; the `302` to `roger://callback` checked for
    /// target and `state`; the code redeemed at the token endpoint with the verifier (RFC 7636 §4.5). The password
    /// is wiped once the form has been built (R-PWD-1 applies in spirit to the app too).
    pub async fn login(
        &mut self,
        tenant: &str,
        username: &str,
        mut password: Password,
    ) -> Result<TokenUser, PhoneError> {
        let mut rng = rand::rngs::OsRng;
        let verifier = pkce::new_verifier(&mut rng);
        let state = {
            let mut bytes = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rng, &mut bytes);
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let request = AuthorizationRequest::for_app(client_id::MOBILE, MOBILE_REDIRECT_URI, &verifier, &state);
        let endpoint = self.app.endpoints().authorization.clone();

        let form_request = http::Request::get(request.to_url(&endpoint))
            .header(http::header::ACCEPT, "text/html")
            .body(Vec::new())
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let form = self.app.send("login form", form_request).await?;
        if form.status() != http::StatusCode::OK {
            return Err(LoginError::NoForm(form.status().as_u16()).into());
        }
        let html = String::from_utf8_lossy(form.body());
        let csrf = login::hidden_field(&html, "csrf_token").ok_or(LoginError::NoCsrf)?;
        let cookie = login::cookie_header(form.headers()).ok_or(LoginError::NoCsrf)?;

        let body = LoginForm {
            request,
            tenant: tenant.to_owned(),
            username: username.to_owned(),
            password: password.clone(),
            csrf: CsrfToken::new(csrf),
        }
        .to_form();
        password.wipe();
        let mut post = http::Request::post(&endpoint)
            .header(http::header::CONTENT_TYPE, roger_proto::wire::FORM)
            .header(http::header::COOKIE, cookie)
            .body(body)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        if let Some(v) = post.headers_mut().get_mut(http::header::COOKIE) {
            v.set_sensitive(true);
        }
        let answer = self.app.send("login", post).await?;
        match answer.status().as_u16() {
            302 => {}
            200 => {
                let page = String::from_utf8_lossy(answer.body());
                let message = login::alert_text(&page).unwrap_or_else(|| "the form was shown again".into());
                return Err(LoginError::BadCredentials(message).into());
            }
            403 => return Err(LoginError::CsrfRefused.into()),
            other => return Err(LoginError::Unexpected(other).into()),
        }
        let location =
            answer.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).ok_or(LoginError::NoLocation)?;
        let code = authorize::parse_redirect(location, MOBILE_REDIRECT_URI, &state)?;
        let token_request = TokenRequest::AuthorizationCode {
            code,
            redirect_uri: MOBILE_REDIRECT_URI.into(),
            code_verifier: verifier,
            client_id: client_id::MOBILE.into(),
        };
        let tokens = self.app.token_request("code redemption", &token_request).await?;
        self.app.install(Instant::now(), tokens)?;
        self.app.user().cloned().ok_or(PhoneError::App(AppError::UnusableGrant("the app token names no user")))
    }

    /// Refreshes the app token now (RFC 6749 §6, R-TOK-2: the new refresh token replaces the old one).
    pub async fn refresh(&mut self) -> Result<(), PhoneError> {
        Ok(self.app.refresh().await?)
    }

    /// Reads a scanned QR payload (RFC 8628 §3.3.1). R-QR-4: a payload not on the region's API origin, not on the
    /// `/device` path, or without a valid `user_code` is refused here, and the phone sends no request anywhere.
    pub fn scan_payload(&self, payload: &str) -> Result<UserCode, PhoneError> {
        Ok(qr::parse(payload, self.app.api())?)
    }

    /// Scans a PNG screenshot of a panel: decodes its QR code(s) and reads the first one as
    /// [`scan_payload`](Self::scan_payload) does. A screenshot whose QR points elsewhere is refused (R-QR-4).
    pub fn scan_png(&self, png: &[u8]) -> Result<UserCode, PhoneError> {
        let payloads = scan::decode_png(png)?;
        let first = payloads.first().ok_or(ScanError::NoQrCode)?;
        self.scan_payload(first)
    }

    /// A code typed by hand (`WDJB-MJHT`, any case, RFC 8628 §6.1 normalisation).
    pub fn typed_code(&self, typed: &str) -> Result<UserCode, PhoneError> {
        Ok(UserCode::new(user_code::normalize(typed)?))
    }

    /// `GET /api/v1/codes/{user_code}` (R-QR-2, RFC 8628 §5.4): what approving the code would grant.
    pub async fn look_up(&mut self, code: &UserCode) -> Result<CodeReview, PhoneError> {
        let lookup: CodeLookup = self.app.call("code lookup", |a, t| api::lookup_code(a, t, code)).await?;
        Ok(CodeReview { user_code: code.clone(), lookup })
    }

    fn check_kind(review: &CodeReview, expect: Option<CodeKind>) -> Result<(), PhoneError> {
        if review.lookup.kind == CodeKind::Unknown {
            return Err(PhoneError::UnknownKind);
        }
        match expect {
            Some(expected) if expected != review.lookup.kind => {
                Err(PhoneError::UnexpectedKind { expected, found: review.lookup.kind })
            }
            _ => Ok(()),
        }
    }

    /// `POST /api/v1/codes/approve` for a reviewed code (PROTOCOL.md §5 step 3, §8; R-QR-2). With `expect`, a code
    /// of another kind is refused before anything is sent (RFC 8628 §5.4: e.g. a desktop sign-in code on a sticker
    /// at a printer). Registration codes need a tenant admin (`403 forbidden` otherwise).
    pub async fn approve(&mut self, review: &CodeReview, expect: Option<CodeKind>) -> Result<(), PhoneError> {
        Self::check_kind(review, expect)?;
        let code = &review.user_code;
        Ok(self.app.call_empty("approve", |a, t| api::approve_code(a, t, code)).await?)
    }

    /// `POST /api/v1/codes/deny` for a reviewed code (PROTOCOL.md §5 step 3, §8).
    pub async fn deny(&mut self, review: &CodeReview) -> Result<(), PhoneError> {
        let code = &review.user_code;
        Ok(self.app.call_empty("deny", |a, t| api::deny_code(a, t, code)).await?)
    }

    /// `GET /api/v1/jobs?state=queued` (PROTOCOL.md §9): the user's queued jobs.
    pub async fn jobs(&mut self) -> Result<Vec<Job>, PhoneError> {
        // Item by item: one job a server sends without a needed member never hides the others (docs/protocol.md
        // §7).
        let resp = self.app.call_raw("list jobs", api::list_jobs).await?;
        let list = self
            .app
            .driver()
            .noted(api::JOBS_ENDPOINT, api::classify_job_list(&resp))
            .map_err(|source| AppError::Server { what: "list jobs", source })?;
        Ok(list.jobs)
    }

    /// `POST /api/v1/jobs {"drive_file_id"}` (PROTOCOL.md §9, app token): queues a file of the user's drive.
    pub async fn submit_drive_job(&mut self, drive_file_id: &str) -> Result<Job, PhoneError> {
        let body = SubmitJob::Drive { drive_file_id: drive_file_id.to_owned() };
        Ok(self.app.call("submit job", |a, t| api::submit_job(a, t, &body)).await?)
    }

    /// `POST /api/v1/jobs/{id}/release {"device_id"}` (PROTOCOL.md §9, docs/protocol.md §3.13, C4): the printer gets
    /// `job.release_requested` and releases with its user token. The user needs an open session there
    /// (`409 no-session`). The `Idempotency-Key` makes a retry after a lost answer safe.
    pub async fn release(&mut self, job_id: &str, device_id: &str) -> Result<ReleaseRequested, PhoneError> {
        let body = ReleaseRequest { device_id: Some(device_id.to_owned()) };
        let key = idempotency_key();
        Ok(self.app.call("release", |a, t| api::release_job(a, t, job_id, &key, &body)).await?)
    }

    /// `DELETE /api/v1/jobs/{id}` (PROTOCOL.md §9): someone else's or unknown job → `404`.
    pub async fn delete_job(&mut self, job_id: &str) -> Result<(), PhoneError> {
        Ok(self.app.call_empty("delete job", |a, t| api::delete_job(a, t, job_id)).await?)
    }

    /// `POST /api/v1/sessions/end {"device_id"}` (PROTOCOL.md §8 "End"): the server revokes the session's user
    /// tokens and pushes `session.ended` to the printer. Idempotent.
    pub async fn end_session(&mut self, device_id: &str) -> Result<(), PhoneError> {
        let body = SessionEnd { device_id: device_id.to_owned() };
        Ok(self.app.call_empty("end session", |a, t| api::end_session(a, t, &body)).await?)
    }

    /// `DELETE /api/v1/devices/{id}` as a tenant admin (R-TOK-4): the printer's tokens are revoked and it is pushed
    /// `device.disconnected`. Non-admins get `403 forbidden`.
    pub async fn remove_device(&mut self, device_id: &str) -> Result<(), PhoneError> {
        Ok(self.app.call_empty("remove device", |a, t| api::remove_device(a, t, device_id)).await?)
    }

    /// `GET /api/v1/me/export` (R-DATA-2): everything the server keeps about the user.
    pub async fn export(&mut self) -> Result<MeExport, PhoneError> {
        Ok(self.app.call("export", api::export_me).await?)
    }

    // -----------------------------------------------------------------------------------------------------------
    // Push (PROTOCOL.md §11)

    /// `GET /api/v1/me/push?installation_id=…` (docs/protocol.md §3.16, §4.2): short-lived broker credentials for
    /// this installation's own queue `roger.app.<installation_id>`, bound to the signed-in user's messages. A
    /// region without a broker answers `404 push-unavailable`.
    pub async fn push_credentials(&mut self, installation_id: &str) -> Result<PushCredentials, PhoneError> {
        let installation = installation_id.to_owned();
        Ok(self.app.call("push credentials", |a, t| api::get_app_push(a, t, &installation)).await?)
    }

    /// Attaches the push receiver for installation `installation_id` (an id the app makes once and keeps,
    /// docs/protocol.md §3.16) on `source`; it subscribes the next time the phone waits for events
    /// ([`wait_for_jobs`](Self::wait_for_jobs)). Replaces a receiver attached before (its subscription ends).
    pub fn attach_push(&mut self, source: PushSource, installation_id: &str) -> Result<(), PhoneError> {
        self.push = Some(push::PushReceiver::new(source, installation_id)?);
        Ok(())
    }

    /// Detaches the push receiver: its subscription ends (a broker puts back what was not acknowledged). Returns
    /// what it did.
    pub fn detach_push(&mut self) -> Option<PushStats> {
        self.push.take().map(|p| p.stats)
    }

    /// What the push receiver did so far (`None` without one).
    pub fn push_stats(&self) -> Option<PushStats> {
        self.push.as_ref().map(|p| p.stats)
    }

    /// Whether the push receiver consumes its queue right now.
    pub fn push_connected(&self) -> bool {
        self.push.as_ref().is_some_and(|p| p.subscription.is_some())
    }

    /// The last reason the receiver could not subscribe, while it cannot (for diagnostics).
    pub fn push_last_error(&self) -> Option<&str> {
        self.push.as_ref().and_then(|p| p.last_error.as_deref())
    }

    /// Waits up to `timeout` until the user's queued jobs satisfy `done`, and returns them: the phone waiting for
    /// events (PROTOCOL.md §11, R-PUSH-1). With a push receiver attached it (re)subscribes its queue, re-reads the
    /// job list after every (re)connect and on each doorbell of its user (`job.queued`, `job.release_requested`,
    /// `session.ended`), acknowledging each delivery after the re-read, and reconnects after a jittered
    /// exponential back-off when the subscription ends; while it has no subscription, or without a receiver, it
    /// re-reads every [`push::FALLBACK_POLL`]. A re-read that fails for a transient reason (no answer, `5xx`,
    /// `429`) is tried again at the next doorbell or fallback poll; any other refusal ends the wait with it.
    pub async fn wait_for_jobs(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Job]) -> bool,
    ) -> Result<Vec<Job>, PhoneError> {
        let mut receiver = self.push.take();
        let result = self.wait_with(&mut receiver, timeout, done).await;
        self.push = receiver;
        result
    }

    async fn wait_with(
        &mut self,
        receiver: &mut Option<push::PushReceiver>,
        timeout: Duration,
        done: impl Fn(&[Job]) -> bool,
    ) -> Result<Vec<Job>, PhoneError> {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let user_id = self.user().map(|u| u.id.clone());
        let mut seen = 0usize;
        // Without a receiver: when the list was last read (`None`: read at once). A receiver keeps its own, so its
        // fallback polling keeps its cadence from one wait to the next.
        let mut last_read: Option<tokio::time::Instant> = None;
        loop {
            let now = tokio::time::Instant::now();
            let mut read_now = false;
            if let Some(r) = receiver.as_mut().filter(|r| r.attempt_due(now)) {
                match self.subscribe(r).await {
                    Ok(subscription) => {
                        r.connected(subscription);
                        // R-PUSH-1: after every (re)connect the receiver re-reads its state.
                        read_now = true;
                    }
                    Err(e) => r.failed(tokio::time::Instant::now(), &e),
                }
            }
            let subscribed = receiver.as_ref().is_some_and(|r| r.subscription.is_some());
            let read_at = receiver.as_ref().map_or(last_read, |r| r.last_read);
            let fallback_due = read_at.is_none_or(|t| now.duration_since(t) >= push::FALLBACK_POLL);
            if read_now || (!subscribed && fallback_due) {
                if let Some(jobs) = self.reread(receiver, &mut last_read).await? {
                    if done(&jobs) {
                        return Ok(jobs);
                    }
                    seen = jobs.len();
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PhoneError::WaitTimeout { waited: started.elapsed(), jobs: seen });
            }
            match receiver.as_mut().and_then(|r| r.subscription.as_mut()) {
                Some(subscription) => match tokio::time::timeout_at(deadline, subscription.next_delivery()).await {
                    Err(_) => continue,
                    Ok(None) => {
                        if let Some(r) = receiver.as_mut() {
                            r.ended(tokio::time::Instant::now());
                        }
                    }
                    Ok(Some(delivery)) => {
                        let act = push::action(&delivery.envelope, user_id.as_deref().unwrap_or_default());
                        let mut outcome = None;
                        match act {
                            push::Action::RereadJobs => {
                                if let Some(r) = receiver.as_mut() {
                                    r.stats.doorbells += 1;
                                }
                                outcome = self.reread(receiver, &mut last_read).await?;
                            }
                            push::Action::Ignore(why) => {
                                tracing::debug!("phone push: ignored {} ({why})", delivery.envelope.event_type());
                                if let Some(r) = receiver.as_mut() {
                                    r.stats.ignored += 1;
                                }
                            }
                        }
                        // Acknowledged once acted on: a phone that dies first gets the message again.
                        if let Err(e) = delivery.ack().await {
                            tracing::debug!("phone push: acknowledgement failed ({e}); the broker redelivers");
                        }
                        if let Some(jobs) = outcome {
                            if done(&jobs) {
                                return Ok(jobs);
                            }
                            seen = jobs.len();
                        }
                    }
                },
                None => {
                    let mut wake = deadline;
                    if let Some(at) = receiver.as_ref().and_then(|r| r.next_attempt()) {
                        wake = wake.min(at);
                    }
                    if let Some(t) = receiver.as_ref().map_or(last_read, |r| r.last_read) {
                        wake = wake.min(t + push::FALLBACK_POLL);
                    }
                    tokio::time::sleep_until(wake).await;
                }
            }
        }
    }

    /// One re-read of the job list, noted as the receiver's (or, without one, in `last_read`); `Ok(None)` when it
    /// failed for a transient reason (tried again at the next doorbell or fallback poll).
    async fn reread(
        &mut self,
        receiver: &mut Option<push::PushReceiver>,
        last_read: &mut Option<tokio::time::Instant>,
    ) -> Result<Option<Vec<Job>>, PhoneError> {
        let read = self.jobs().await;
        let at = Some(tokio::time::Instant::now());
        match receiver.as_mut() {
            Some(r) => {
                r.stats.rereads += 1;
                r.last_read = at;
            }
            None => *last_read = at,
        }
        match read {
            Ok(jobs) => Ok(Some(jobs)),
            Err(e) if is_transient(&e) => {
                tracing::debug!("phone: re-reading the job list failed ({e}); trying again later");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Subscribes the receiver's queue: on the broker with the credentials of `GET /api/v1/me/push` (checked to
    /// name this installation's queue), or on the in-process bus directly.
    async fn subscribe(&mut self, receiver: &push::PushReceiver) -> Result<crate::bus::Subscription, push::PushError> {
        let installation = receiver.installation.clone();
        match &receiver.source {
            PushSource::Broker(pool) => {
                let creds = match self.push_credentials(installation.as_str()).await {
                    Ok(c) => c,
                    Err(e) if e.problem_name() == Some("push-unavailable") => return Err(push::PushError::Unavailable),
                    Err(e) => return Err(push::PushError::Credentials(e.to_string())),
                };
                if !creds.queue.ends_with(&roger_proto::push::app_queue(&installation)) {
                    return Err(push::PushError::WrongQueue);
                }
                Ok(pool.consume(&creds).await?)
            }
            PushSource::Bus(bus) => {
                let user = self.user().ok_or(push::PushError::NotSignedIn)?;
                let user_id = roger_proto::push::Id::new(user.id.clone()).map_err(|_| push::PushError::NotSignedIn)?;
                let queue = crate::bus::QueueSpec::App { user_id, installation_id: installation };
                Ok(bus.subscribe(queue).await?)
            }
        }
    }
}

/// Whether a failed call may succeed when simply tried again later (PROTOCOL.md §12: no answer, `5xx`, `429`).
fn is_transient(e: &PhoneError) -> bool {
    match e {
        PhoneError::App(AppError::Transport { .. }) => true,
        other => other.status().is_some_and(|s| s >= 500 || s == 429),
    }
}

/// A fresh `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header): 128 random bits in hex.
fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn review(kind: CodeKind) -> CodeReview {
        CodeReview {
            user_code: UserCode::new("WDJBMJHT"),
            lookup: CodeLookup {
                kind,
                vendor: Some("acme".into()),
                model: Some("MX-1".into()),
                serial: Some("SN-7".into()),
                expires: OffsetDateTime::UNIX_EPOCH,
            },
        }
    }

    /// R-QR-2: the phone shows kind and printer facts before it decides.
    #[test]
    fn review_shows_what_is_approved() {
        let s = review(CodeKind::Session).describe();
        assert!(s.contains("sign in at the printer") && s.contains("serial SN-7") && s.contains("WDJB-MJHT"), "{s}");
        assert!(review(CodeKind::Registration).describe().starts_with("register the printer vendor acme"));
        assert!(review(CodeKind::Desktop).describe().contains("desktop"));
    }

    /// R-QR-2 / RFC 8628 §5.4: unknown kinds are never approved; a kind mismatch is refused before sending.
    #[test]
    fn kind_checks() {
        assert!(matches!(Phone::check_kind(&review(CodeKind::Unknown), None), Err(PhoneError::UnknownKind)));
        assert!(matches!(
            Phone::check_kind(&review(CodeKind::Desktop), Some(CodeKind::Session)),
            Err(PhoneError::UnexpectedKind { expected: CodeKind::Session, found: CodeKind::Desktop })
        ));
        assert!(Phone::check_kind(&review(CodeKind::Session), Some(CodeKind::Session)).is_ok());
        assert!(Phone::check_kind(&review(CodeKind::Registration), None).is_ok());
    }

    #[test]
    fn idempotency_keys_are_fresh_and_valid() {
        let (a, b) = (idempotency_key(), idempotency_key());
        assert_ne!(a, b);
        assert!(roger_proto::server::api::is_valid_idempotency_key(&a));
    }
}
