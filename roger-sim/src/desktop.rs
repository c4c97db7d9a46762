//! The simulated desktop client (issue 4): the Roger client on a user's computer.
//!
//! * Signs in with the device authorization grant as `roger-desktop` (PROTOCOL.md §4, RFC 8628): it shows the QR
//!   (`verification_uri_complete`) and the user code, a phone approves it, and `roger_proto`'s
//!   [`DevicePoller`] polls at the interval, honouring `slow_down` and back-off (R-POLL-1, RFC 8628 §3.5), driven by
//!   [`Driver::run_poller`](roger_proto::driver::Driver::run_poller).
//! * Submits jobs whose documents stay on the computer (R-DATA-1): only `{"desktop":{"file_name","pages"}}` goes
//!   to the server; the bytes are held here, keyed by job id.
//! * On `job.release_requested` (a push doorbell, R-PUSH-1) it confirms over HTTPS (re-reads its released jobs and
//!   fetches a fresh ticket and the printer's `job_url` with `POST /api/v1/jobs/{id}/handover`, docs/protocol.md
//!   §3.13 and C1), then `POST`s the document to `job_url` with `Authorization: Ticket <ticket>` (PROTOCOL.md §9,
//!   docs/protocol.md §3.14). Duplicate doorbells are harmless: a delivered job is not handed over again.
//!
//! Push (PROTOCOL.md §11): from the region's AMQP broker, the desktop fetches `GET /api/v1/me/push` for its
//! installation's queue and consumes it ([`Desktop::subscribe_push`], or [`Desktop::serve_broker`], which
//! reconnects with jittered back-off and re-reads its released jobs after every (re)connect). The in-process bus
//! has no wire protocol, so there the desktop receives envelopes through a [`Subscription`] its owner obtains (or an
//! mpsc receiver wrapped with [`Subscription::from_receiver`]); without push it can poll instead
//! ([`Desktop::check_releases`]).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use http::{Method, Request};
use roger_proto::api::{self, DesktopFile, Job, PushCredentials, SubmitJob};
use roger_proto::device_authorization::{self, DeviceAuthorizationRequest, DeviceAuthorizationResponse};
use roger_proto::discovery::{check_transport, DiscoveryError};
use roger_proto::driver::TransportError;
use roger_proto::poller::{DevicePoller, PollResult, PollerConfig};
use roger_proto::push::{PushEnvelope, PushEvent};
use roger_proto::secret::{Ticket, UserCode};
use roger_proto::server::api::Handover;
use roger_proto::token::{client_id, TokenUser};
use roger_proto::wire;

use crate::bus::Subscription;
use crate::phone::app::{AppClient, AppError, ClientConfig, ServerArgs};

/// The authentication scheme of the hand-over (PROTOCOL.md §9: `Authorization: Ticket <ticket>`).
pub const TICKET_SCHEME: &str = "Ticket";

/// What the desktop refused, or what the server or the printer answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DesktopError {
    /// The shared app layer: discovery, metadata, transport, or the server's answer (status + problem type or
    /// OAuth error).
    #[error(transparent)]
    App(#[from] AppError),
    /// The sign-in was denied on the phone (RFC 8628 §3.5 `access_denied`).
    #[error("the sign-in was denied")]
    LoginDenied,
    /// The login code expired before anyone approved it (RFC 8628 §3.5 `expired_token`, or `expires_in` passed).
    #[error("the sign-in code expired; start again")]
    LoginExpired,
    /// The sign-in ended otherwise (`invalid_grant`, a refused client id, another error; RFC 8628 §3.5).
    #[error("the sign-in failed: {0}")]
    LoginFailed(String),
    /// R-DISC-2: the printer's `job_url` is not `https` (plain `http` only on loopback when configured).
    #[error("refusing the printer's job endpoint: {0}")]
    InsecureJobUrl(#[source] DiscoveryError),
    /// The printer did not take the document (`401` + `WWW-Authenticate: Ticket realm="roger-mfp"` for a ticket
    /// the server refused, docs/protocol.md §3.14).
    #[error("the printer refused the hand-over of job {job_id}: HTTP {status}")]
    HandoverRefused {
        /// The job.
        job_id: String,
        /// The printer's status code.
        status: u16,
    },
    /// The printer could not be reached; a later doorbell or [`Desktop::check_releases`] tries again with a fresh
    /// ticket.
    #[error("the printer's job endpoint is unreachable for job {job_id}: {source}")]
    HandoverTransport {
        /// The job.
        job_id: String,
        /// What failed.
        #[source]
        source: TransportError,
    },
    /// The region's broker could not be consumed (PROTOCOL.md §11); doorbells wait in the queue, and
    /// [`Desktop::check_releases`] still works.
    #[error("push: {0}")]
    Push(#[from] crate::amqp::ConsumerError),
    /// A local file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no usable name.
    #[error("{0} has no file name")]
    NoFileName(PathBuf),
}

/// A desktop sign-in in progress (PROTOCOL.md §4): what to show, and the poller that waits for the approval.
#[derive(Debug)]
pub struct PendingLogin {
    answer: DeviceAuthorizationResponse,
    poller: DevicePoller,
}

impl PendingLogin {
    /// The user code, wire form (8 letters).
    pub fn user_code(&self) -> &UserCode {
        &self.answer.user_code
    }

    /// The user code as shown beside the QR: `XXXX-XXXX` (R-QR-1, RFC 8628 §6.1).
    pub fn display_code(&self) -> String {
        self.answer.user_code.display().as_str().to_owned()
    }

    /// The QR payload (`verification_uri_complete`, RFC 8628 §3.3.1), if the server sent one.
    pub fn qr_payload(&self) -> Option<&str> {
        self.answer.verification_uri_complete.as_ref().map(|v| v.secret())
    }

    /// Where to type the code by hand (RFC 8628 §3.2 `verification_uri`).
    pub fn verification_uri(&self) -> &str {
        &self.answer.verification_uri
    }

    /// How long the code lives from when it was received (PROTOCOL.md §3: 120 s).
    pub fn expires_in(&self) -> Duration {
        Duration::from_secs(self.answer.expires_in)
    }
}

/// A document held on the desktop for a queued job (R-DATA-1: the server has its name and page count only).
#[derive(Clone)]
pub struct HeldDocument {
    /// The file name sent to the server.
    pub file_name: String,
    /// The page count sent to the server.
    pub pages: u32,
    bytes: Vec<u8>,
}

impl HeldDocument {
    /// The document's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for HeldDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldDocument")
            .field("file_name", &self.file_name)
            .field("pages", &self.pages)
            .field("size", &self.bytes.len())
            .finish()
    }
}

/// What one doorbell or hand-over attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandoverOutcome {
    /// The printer took the document (`2xx` from its `job_url`).
    Delivered {
        /// The job.
        job_id: String,
        /// The printer the server bound the ticket to.
        device_id: String,
        /// The printer's status code (`201` per docs/protocol.md §3.14).
        status: u16,
    },
    /// The job was handed over before: a duplicate doorbell (R-PUSH-1 at-least-once delivery), nothing sent.
    AlreadyDelivered {
        /// The job.
        job_id: String,
    },
    /// The job is not held on this desktop (another installation's, or a drive job): ignored, as docs/protocol.md
    /// §4.4 says ("for its own jobs, ignoring others").
    NotOurs {
        /// The job.
        job_id: String,
    },
    /// The server does not confirm a pending release (a stale or forged doorbell, R-PUSH-1): nothing sent.
    NotReleased {
        /// The job.
        job_id: String,
    },
    /// Another event type: nothing to do for a desktop.
    Ignored,
}

/// The simulated desktop client (see the module documentation).
#[derive(Debug)]
pub struct Desktop {
    app: AppClient,
    held: HashMap<String, HeldDocument>,
    delivered: HashSet<String>,
}

impl Desktop {
    /// Discovers the region and checks its metadata (PROTOCOL.md §2; R-DISC-1, R-DISC-2, R-META-1).
    pub async fn connect(config: &ClientConfig) -> Result<Self, DesktopError> {
        let app = AppClient::connect(config, client_id::DESKTOP).await?;
        Ok(Self { app, held: HashMap::new(), delivered: HashSet::new() })
    }

    /// The shared app layer (API origin, user, raw calls).
    pub fn app(&self) -> &AppClient {
        &self.app
    }

    /// The signed-in user.
    pub fn user(&self) -> Option<&TokenUser> {
        self.app.user()
    }

    /// Asks for a desktop login code (`POST /oauth/device_authorization`, `client_id=roger-desktop`,
    /// `scope=roger.app`, PROTOCOL.md §4, RFC 8628 §3.1). Show [`PendingLogin::qr_payload`] and
    /// [`PendingLogin::display_code`], then wait with [`finish_login`](Self::finish_login).
    pub async fn start_login(&mut self) -> Result<PendingLogin, DesktopError> {
        let mut request = DeviceAuthorizationRequest::desktop();
        request.device_model = Some(format!("roger-sim desktop ({})", std::env::consts::OS));
        let http = request
            .to_http(&self.app.endpoints().device_authorization, None)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let resp = self.app.send("desktop login code", http).await?;
        let answer = self
            .app
            .driver()
            .noted(device_authorization::ENDPOINT, device_authorization::classify_noted(&resp))
            .map_err(|source| AppError::Server { what: "desktop login code", source })?;
        let poller = DevicePoller::new(Instant::now(), &answer, client_id::DESKTOP, PollerConfig::default());
        Ok(PendingLogin { answer, poller })
    }

    /// Polls until the code is approved, denied or expired (RFC 8628 §3.4–3.5 through `roger_proto`'s poller:
    /// never faster than the interval, +5 s for good on `slow_down`, doubling after failures; PROTOCOL.md §12).
    pub async fn finish_login(&mut self, mut login: PendingLogin) -> Result<TokenUser, DesktopError> {
        let token_endpoint = self.app.endpoints().token.clone();
        let result = self.app.driver().run_poller(&token_endpoint, &mut login.poller, || None).await;
        let result = result.map_err(|e| DesktopError::LoginFailed(e.to_string()))?;
        match result {
            PollResult::Granted(tokens) => {
                self.app.install(Instant::now(), *tokens)?;
                self.app.user().cloned().ok_or(DesktopError::App(AppError::UnusableGrant("the token names no user")))
            }
            PollResult::Denied => Err(DesktopError::LoginDenied),
            PollResult::Expired => Err(DesktopError::LoginExpired),
            PollResult::InvalidGrant => Err(DesktopError::LoginFailed("invalid_grant".into())),
            PollResult::ClientRejected => {
                Err(DesktopError::LoginFailed("the server refused client roger-desktop".into()))
            }
            PollResult::Failed(e) => Err(DesktopError::LoginFailed(crate::phone::app::describe(&e))),
            other => Err(DesktopError::LoginFailed(format!("{other:?}"))),
        }
    }

    /// Queues a document that stays here (PROTOCOL.md §9 `POST /api/v1/jobs {"desktop":{"file_name","pages"}}`,
    /// R-DATA-1): only the name and page count go to the server; the bytes are held under the new job id.
    pub async fn submit(&mut self, file_name: &str, pages: u32, bytes: Vec<u8>) -> Result<Job, DesktopError> {
        let body = SubmitJob::Desktop { desktop: DesktopFile { file_name: file_name.to_owned(), pages } };
        let job: Job = self.app.call("submit desktop job", |a, t| api::submit_job(a, t, &body)).await?;
        self.held.insert(job.id.clone(), HeldDocument { file_name: job.file_name.clone(), pages, bytes });
        Ok(job)
    }

    /// [`submit`](Self::submit) for a file on disk (its bytes are read now and held in memory).
    pub async fn submit_file(&mut self, path: &std::path::Path, pages: u32) -> Result<Job, DesktopError> {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| DesktopError::NoFileName(path.to_path_buf()))?
            .to_owned();
        let bytes = std::fs::read(path).map_err(|source| DesktopError::File { path: path.to_path_buf(), source })?;
        self.submit(&name, pages, bytes).await
    }

    /// The document held for `job_id`, if this desktop submitted it.
    pub fn held(&self, job_id: &str) -> Option<&HeldDocument> {
        self.held.get(job_id)
    }

    /// Whether the job has been handed over to a printer.
    pub fn is_delivered(&self, job_id: &str) -> bool {
        self.delivered.contains(job_id)
    }

    /// Handles one push envelope (R-PUSH-1: a doorbell, confirmed over HTTPS before anything happens):
    /// `job.release_requested` for a held job leads to [`hand_over`](Self::hand_over); everything else is ignored.
    pub async fn handle_push(&mut self, envelope: &PushEnvelope) -> Result<HandoverOutcome, DesktopError> {
        match &envelope.event {
            PushEvent::JobReleaseRequested { job_id, .. } => self.hand_over(job_id.as_str()).await,
            _ => Ok(HandoverOutcome::Ignored),
        }
    }

    /// Hands a held job to the printer it was released to (PROTOCOL.md §9, docs/protocol.md §3.13–3.14):
    ///
    /// 1. a job not held here, or already delivered, is left alone (duplicates are harmless, R-PUSH-1);
    /// 2. `GET /api/v1/jobs?state=released` confirms the release over HTTPS;
    /// 3. `POST /api/v1/jobs/{id}/handover` gives the printer's `job_url` and a fresh one-use ticket bound to job
    ///    and printer (C1; `404` means no release is pending);
    /// 4. the `job_url` must be TLS (R-DISC-2), then `POST {job_url}` with `Authorization: Ticket <ticket>` and
    ///    the document as body; a `2xx` marks the job delivered.
    pub async fn hand_over(&mut self, job_id: &str) -> Result<HandoverOutcome, DesktopError> {
        let job_id = job_id.to_owned();
        let Some(document) = self.held.get(&job_id).cloned() else {
            return Ok(HandoverOutcome::NotOurs { job_id });
        };
        if self.delivered.contains(&job_id) {
            return Ok(HandoverOutcome::AlreadyDelivered { job_id });
        }
        let released = self.released_jobs().await?;
        if !released.iter().any(|j| j.id == job_id) {
            return Ok(HandoverOutcome::NotReleased { job_id });
        }
        let path = format!("{}/{}/handover", api::paths::JOBS, api::encode_path_segment(&job_id));
        let handover = self
            .app
            .call::<Handover>("handover", |a, t| {
                wire::api_request(Method::POST, &format!("{}{path}", a.trim_end_matches('/')), t, None)
            })
            .await;
        let handover = match handover {
            Ok(h) => h,
            Err(e) if e.status() == Some(404) => return Ok(HandoverOutcome::NotReleased { job_id }),
            Err(e) => return Err(e.into()),
        };
        check_transport(&handover.job_url, self.app.policy()).map_err(DesktopError::InsecureJobUrl)?;
        let request = handover_request(&handover.job_url, &handover.ticket, document.bytes)
            .map_err(|e| AppError::Setup(e.to_string()))?;
        let answer = match self.app.driver().send(request).await {
            Ok(a) => a,
            Err(source) => return Err(DesktopError::HandoverTransport { job_id, source }),
        };
        let status = answer.status().as_u16();
        if !answer.status().is_success() {
            return Err(DesktopError::HandoverRefused { job_id, status });
        }
        self.delivered.insert(job_id.clone());
        Ok(HandoverOutcome::Delivered { job_id, device_id: handover.device_id, status })
    }

    /// `GET /api/v1/jobs?state=released` (PROTOCOL.md §9): the user's jobs released and not yet printed.
    async fn released_jobs(&mut self) -> Result<Vec<Job>, DesktopError> {
        let resp = self
            .app
            .call_raw("released jobs", |a, t| {
                let url = format!("{}{}?state=released", a.trim_end_matches('/'), api::paths::JOBS);
                wire::api_request(Method::GET, &url, t, None)
            })
            .await?;
        // Item by item (docs/protocol.md §7).
        let list = self
            .app
            .driver()
            .noted(api::JOBS_ENDPOINT, api::classify_job_list(&resp))
            .map_err(|source| AppError::Server { what: "released jobs", source })?;
        Ok(list.jobs)
    }

    /// Without push: re-reads the released jobs and hands over every held one not yet delivered (the polling
    /// fallback of a receiver without a healthy push connection, PROTOCOL.md §11).
    pub async fn check_releases(&mut self) -> Result<Vec<HandoverOutcome>, DesktopError> {
        let released = self.released_jobs().await?;
        let mut out = Vec::new();
        for job in released {
            if self.held.contains_key(&job.id) && !self.delivered.contains(&job.id) {
                out.push(self.hand_over(&job.id).await?);
            }
        }
        Ok(out)
    }

    /// `GET /api/v1/me/push?installation_id=…` (PROTOCOL.md §11): short-lived broker credentials for this
    /// installation's own queue (`roger.app.<installation_id>`, bound to the signed-in user's messages).
    pub async fn push_credentials(&mut self, installation_id: &str) -> Result<PushCredentials, DesktopError> {
        let installation = installation_id.to_owned();
        Ok(self.app.call("push credentials", |a, t| api::get_app_push(a, t, &installation)).await?)
    }

    /// Fetches the push credentials and consumes the installation's queue through `pool` (manual acknowledgements;
    /// [`Subscription::next`] acknowledges at once).
    pub async fn subscribe_push(
        &mut self,
        installation_id: &str,
        pool: &crate::amqp::BrokerPool,
    ) -> Result<Subscription, DesktopError> {
        let creds = self.push_credentials(installation_id).await?;
        Ok(pool.consume(&creds).await?)
    }

    /// Serves doorbells from the region's broker until `done` holds or `timeout` passes (returns whether `done`
    /// held): consumes the installation's queue, re-reads the released jobs after every (re)connect (R-PUSH-1: a
    /// doorbell missed while disconnected costs nothing), acknowledges each doorbell after handling it, and
    /// reconnects after a jittered exponential back-off when the connection ends or cannot be made.
    pub async fn serve_broker(
        &mut self,
        installation_id: &str,
        pool: &crate::amqp::BrokerPool,
        timeout: Duration,
        done: impl Fn(&Self) -> bool,
        mut report: impl FnMut(&Result<HandoverOutcome, DesktopError>),
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut backoff = crate::amqp::Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        while !done(self) && tokio::time::Instant::now() < deadline {
            let mut sub = match self.subscribe_push(installation_id, pool).await {
                Ok(sub) => sub,
                Err(e) => {
                    report(&Err(e));
                    tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + backoff.next_delay())).await;
                    continue;
                }
            };
            backoff.reset();
            match self.check_releases().await {
                Ok(outcomes) => outcomes.into_iter().for_each(|o| report(&Ok(o))),
                Err(e) => report(&Err(e)),
            }
            while !done(self) {
                let Ok(next) = tokio::time::timeout_at(deadline, sub.next_delivery()).await else { return done(self) };
                let Some(delivery) = next else { break };
                let result = self.handle_push(&delivery.envelope).await;
                report(&result);
                if let Err(e) = delivery.ack().await {
                    tracing::debug!("desktop: acknowledgement failed ({e}); the broker redelivers");
                }
            }
            if !done(self) {
                tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + backoff.next_delay())).await;
            }
        }
        done(self)
    }

    /// Serves doorbells until the subscription ends (connection cut, PROTOCOL.md §11), handing each result to
    /// `report`. An error for one doorbell does not stop the loop (the next doorbell, or
    /// [`check_releases`](Self::check_releases) after a reconnect, tries again).
    pub async fn serve(
        &mut self,
        subscription: &mut Subscription,
        mut report: impl FnMut(&Result<HandoverOutcome, DesktopError>),
    ) {
        while let Some(envelope) = subscription.next().await {
            let result = self.handle_push(&envelope).await;
            report(&result);
        }
    }
}

/// `POST {job_url}` with `Authorization: Ticket <ticket>` (sensitive, R-SEC-1) and the document as body
/// (PROTOCOL.md §9, docs/protocol.md §3.14).
pub fn handover_request(job_url: &str, ticket: &Ticket, document: Vec<u8>) -> Result<Request<Vec<u8>>, http::Error> {
    let mut auth = http::HeaderValue::from_str(&format!("{TICKET_SCHEME} {}", ticket.secret()))?;
    auth.set_sensitive(true);
    Request::post(job_url)
        .header(http::header::AUTHORIZATION, auth)
        .header(http::header::CONTENT_TYPE, "application/octet-stream")
        .body(document)
}

// -------------------------------------------------------------------------------------------------------------------
// `roger-sim desktop`
// -------------------------------------------------------------------------------------------------------------------

/// Arguments of `roger-sim desktop` (issue 4: the simulated desktop client).
///
/// ```text
/// roger-sim desktop --discovery URL login                    # shows the QR and code, waits for the phone
/// roger-sim desktop --discovery URL submit report.pdf --pages 3 --wait 300
/// ```
#[derive(Debug, clap::Args)]
pub struct DesktopArgs {
    /// How to find and trust the server.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Also write the login QR as a PNG here (for `roger-sim phone approve --png`).
    #[arg(long)]
    pub qr_png: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub action: DesktopAction,
}

/// One desktop action.
#[derive(Debug, clap::Subcommand)]
pub enum DesktopAction {
    /// Sign in: show the QR and the user code (PROTOCOL.md §4), wait for the phone's approval, print the user.
    Login,
    /// Sign in, queue FILE with metadata only (R-DATA-1), then wait for its release and hand it to the printer.
    Submit {
        /// The document; it never leaves this computer except to the printer.
        file: PathBuf,
        /// Page count sent with the job.
        #[arg(long, default_value_t = 1)]
        pages: u32,
        /// Seconds to wait for the release (by push from the region's broker when it has one, PROTOCOL.md §11,
        /// else checked every 5 s); 0 returns right after queueing.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
}

/// Why `roger-sim desktop` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DesktopCliError {
    /// The desktop refused or the server answered with a refusal.
    #[error(transparent)]
    Desktop(#[from] DesktopError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The QR could not be drawn.
    #[error("cannot draw the QR: {0}")]
    Qr(String),
    /// The job was not released within `--wait`.
    #[error("job {0} was not handed over within the wait")]
    NotHandedOver(String),
}

/// Runs `roger-sim desktop`; progress on stdout, exit `0` on success, `1` with the reason on stderr otherwise.
pub async fn run(args: DesktopArgs) -> ExitCode {
    match execute(args, &mut |line: &str| println!("{line}")).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roger-sim desktop: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Draws `payload` as a terminal QR code with half blocks (dark modules as spaces on a light quiet zone, so it
/// scans on dark terminals).
pub fn terminal_qr(payload: &str) -> Result<String, DesktopCliError> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(payload.as_bytes()).map_err(|e| DesktopCliError::Qr(e.to_string()))?;
    Ok(code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).quiet_zone(true).build())
}

/// Renders `payload` as a PNG QR code (4 pixels per module, 4-module quiet zone).
pub fn qr_png(payload: &str) -> Result<Vec<u8>, DesktopCliError> {
    let code = qrcode::QrCode::new(payload.as_bytes()).map_err(|e| DesktopCliError::Qr(e.to_string()))?;
    let modules = u32::try_from(code.width()).map_err(|e| DesktopCliError::Qr(e.to_string()))?;
    let colors = code.to_colors();
    let scale = 4;
    let side = (modules + 8) * scale;
    let img = image::GrayImage::from_fn(side, side, |x, y| {
        let (mx, my) = ((x / scale).wrapping_sub(4), (y / scale).wrapping_sub(4));
        let dark = mx < modules
            && my < modules
            && colors.get((my * modules + mx) as usize).is_some_and(|c| *c == qrcode::Color::Dark);
        image::Luma([if dark { 0 } else { 255 }])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| DesktopCliError::Qr(e.to_string()))?;
    Ok(out)
}

/// Does the work of [`run`], printing progress through `say`.
pub async fn execute(args: DesktopArgs, say: &mut (dyn FnMut(&str) + Send)) -> Result<(), DesktopCliError> {
    let config = args.server.client_config().map_err(|(path, source)| DesktopCliError::Io { path, source })?;
    let mut desktop = Desktop::connect(&config).await?;
    let login = desktop.start_login().await?;
    if let Some(payload) = login.qr_payload() {
        say(&terminal_qr(payload)?);
        if let Some(path) = &args.qr_png {
            std::fs::write(path, qr_png(payload)?)
                .map_err(|source| DesktopCliError::Io { path: path.clone(), source })?;
            say(&format!("QR written to {}", path.display()));
        }
    }
    say(&format!(
        "approve code {} in the Roger app (or at {}); it expires in {} s",
        login.display_code(),
        login.verification_uri(),
        login.expires_in().as_secs()
    ));
    let user = desktop.finish_login(login).await?;
    say(&format!("signed in as {}", user.username));
    if let DesktopAction::Submit { file, pages, wait } = args.action {
        let job = desktop.submit_file(&file, pages).await?;
        say(&format!("queued {} as job {} ({} page(s)); the document stays here", job.file_name, job.id, job.pages));
        if wait > 0 && desktop.app().region().amqp.is_some() {
            // PROTOCOL.md §11: the doorbell comes from the broker; the desktop re-reads after every (re)connect.
            let ca_pem = config.ca_pem.as_deref().and_then(|c| String::from_utf8(c.to_vec()).ok());
            let options = crate::amqp::ConsumerOptions::new(config.policy(), ca_pem, "roger-desktop");
            let pool = crate::amqp::BrokerPool::new(options, 1);
            let installation = format!("desktop-{:08x}", rand::random::<u32>());
            let id = job.id.clone();
            let mut lines = Vec::new();
            let delivered = desktop
                .serve_broker(
                    &installation,
                    &pool,
                    Duration::from_secs(wait),
                    |d| d.is_delivered(&id),
                    |r| match r {
                        Ok(HandoverOutcome::Delivered { job_id, device_id, status }) => {
                            lines.push(format!("handed job {job_id} to printer {device_id} (HTTP {status})"))
                        }
                        Err(e) => lines.push(format!("push: {e}")),
                        Ok(_) => {}
                    },
                )
                .await;
            pool.close().await;
            for line in lines {
                say(&line);
            }
            if !delivered {
                return Err(DesktopCliError::NotHandedOver(job.id));
            }
            return Ok(());
        }
        let deadline = Instant::now() + Duration::from_secs(wait);
        while wait > 0 && !desktop.is_delivered(&job.id) {
            for outcome in desktop.check_releases().await? {
                if let HandoverOutcome::Delivered { job_id, device_id, status } = outcome {
                    say(&format!("handed job {job_id} to printer {device_id} (HTTP {status})"));
                }
            }
            if desktop.is_delivered(&job.id) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(DesktopCliError::NotHandedOver(job.id));
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §9: the ticket travels as `Authorization: Ticket <ticket>`, marked sensitive (R-SEC-1).
    #[test]
    fn handover_request_carries_the_ticket() {
        let req = handover_request("https://10.0.0.42:8443/roger/jobs", &Ticket::new("tkt-1"), b"%PDF".to_vec())
            .expect("request");
        assert_eq!(req.method(), Method::POST);
        let auth = req.headers().get(http::header::AUTHORIZATION).expect("authorization");
        assert_eq!(auth.as_bytes(), b"Ticket tkt-1");
        assert!(auth.is_sensitive());
        assert_eq!(req.body().as_slice(), b"%PDF");
        assert!(handover_request("https://a/j", &Ticket::new("bad\nticket"), Vec::new()).is_err());
    }

    /// R-SEC-1 / R-DATA-1: a held document's `Debug` shows its size, not its content.
    #[test]
    fn held_document_debug_hides_content() {
        let d = HeldDocument { file_name: "a.pdf".into(), pages: 2, bytes: b"TOP-SECRET".to_vec() };
        let s = format!("{d:?}");
        assert!(s.contains("size: 10") && !s.contains("TOP-SECRET"), "{s}");
    }

    /// The login QR can be scanned back by the phone's decoder.
    #[test]
    fn login_qr_png_round_trips() {
        let payload = "http://127.0.0.1:1/device?user_code=BCDFGHJK";
        let png = qr_png(payload).expect("png");
        assert_eq!(crate::phone::scan::decode_png(&png).expect("decoded"), vec![payload.to_owned()]);
        assert!(terminal_qr(payload).expect("drawn").lines().count() > 10);
    }
}

#[cfg(test)]
mod cli_tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: DesktopArgs,
    }

    #[test]
    fn command_line_is_consistent() {
        Wrapper::command().debug_assert();
        let w =
            Wrapper::try_parse_from(["desktop", "--discovery", "d", "submit", "a.pdf", "--pages", "3", "--wait", "60"])
                .expect("submit");
        assert!(matches!(w.args.action, DesktopAction::Submit { pages: 3, wait: 60, .. }));
        let w = Wrapper::try_parse_from(["desktop", "--discovery", "d", "--qr-png", "qr.png", "login"]).expect("login");
        assert!(matches!(w.args.action, DesktopAction::Login) && w.args.qr_png.is_some());
    }
}
