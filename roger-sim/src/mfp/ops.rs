//! What the printer does over the Roger API and the drive besides the machines' own requests (PROTOCOL.md §9):
//! list and release jobs, download from the pre-authorised drive URL and "print", report results, step-2 print
//! from drive, scan with a resumable upload, publish the job endpoint, redeem hand-over tickets.
//!
//! Tokens come from the snapshot the runner keeps. A device-token call refused with `401` asks the lifecycle for a
//! fresh token and retries once (R-TOK-1); a user-token call refused with `401` ends the session (RFC 6750 §3.1).
//! Idempotent calls are retried after transport errors, 5xx, 408 and 429 with a doubled wait that honours
//! `Retry-After` (PROTOCOL.md §12); others are sent once. No credential reaches the narration (R-SEC-1).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use roger_proto::api::{
    self, DeviceConfig, DeviceUpdate, DocumentLink, DriveFile, Job, JobOutcome, JobResult, ReleaseAnswer,
    ReleaseRequest, ScanComplete, ScanCreate, ScanCreated, ScanProfile, SubmitJob, TicketRedemption, UploadLink,
};
use roger_proto::discovery::{self, TransportPolicy};
use roger_proto::driver::mfp::MfpInput;
use roger_proto::driver::{Clock, Driver, HttpTransport};
use roger_proto::secret::{AccessToken, Ticket};
use roger_proto::token::scope;
use roger_proto::wire::{classify_api, classify_api_empty};
use roger_proto::ResponseError;
use serde::{Deserialize, Serialize};

use super::printer::{sha256_hex, PrintRecord, PrintSource};
use super::runtime::{lock, Core};
use super::MfpError;

/// Retries of an idempotent call after a transient failure.
const MAX_RETRIES: u32 = 3;
/// First wait before a retry; doubled each time (PROTOCOL.md §12).
const RETRY_BASE: Duration = Duration::from_millis(500);
/// A `Retry-After` longer than this is not waited for inside one call (the call fails instead).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How long a call waits for a device token (a restored printer's first refresh, a refresh after a refusal).
const TOKEN_WAIT: Duration = Duration::from_secs(20);
/// Upload chunk size for scans (Graph upload sessions accept any size below 60 MiB; small chunks exercise the
/// resumable protocol).
pub(crate) const UPLOAD_CHUNK: usize = 32 * 1024;
/// Attempts of one upload before giving up.
const MAX_UPLOAD_FAILURES: u32 = 5;

/// Whether a call may be repeated after a failure whose outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Idempotent (GET, PUT, release with its `Idempotency-Key`, result, ticket redemption, scan completion).
    Idempotent,
    /// Not idempotent (job submission, scan creation): sent once.
    Once,
}

/// Which user token a call needs (PROTOCOL.md §10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// The session token (`roger.release`): jobs, release, result.
    Release,
    /// A token with this step-2 scope (`roger.print` or `roger.scan`).
    Scope(&'static str),
}

/// The outcome of a release at the panel (PROTOCOL.md §9).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// The document printed (a drive job, or a desktop job whose hand-over arrived in time).
    Printed {
        /// What was printed.
        record: PrintRecord,
        /// Whether `POST /api/v1/jobs/{id}/result` was accepted.
        reported: bool,
    },
    /// A desktop job: the server issued a ticket and the desktop has not delivered the document yet; it prints
    /// when it arrives at the job endpoint.
    AwaitingHandover {
        /// The job.
        job_id: String,
    },
}

/// A finished scan (PROTOCOL.md §9: uploaded to the drive's "Scan" folder, then completed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRecord {
    /// The server's scan id (PROTOCOL.md §9 `scan_id`).
    pub scan_id: String,
    /// The profile used (PROTOCOL.md §9 `profile_id`).
    pub profile_id: String,
    /// Pages scanned (PROTOCOL.md §9 `complete {"pages"}`).
    pub pages: u32,
    /// Bytes uploaded (PROTOCOL.md §9 `complete {"size"}`).
    pub bytes: u64,
    /// SHA-256 of the uploaded document, lower-case hex.
    pub sha256: String,
}

/// Why a hand-over is refused (PROTOCOL.md §9, docs/protocol.md §3.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The HTTP status of the refusal (401, 403, 503, …; docs/protocol.md §3.14).
    pub status: u16,
    /// A short machine-readable reason.
    pub error: &'static str,
    /// A human-readable explanation (never a credential, R-SEC-1).
    pub detail: String,
}

impl Refusal {
    pub(crate) fn new(status: u16, error: &'static str, detail: impl Into<String>) -> Self {
        Self { status, error, detail: detail.into() }
    }
}

/// Judges the server's answer to `POST /api/v1/tickets/redeem` for the printer `my_device` (PROTOCOL.md §9: one
/// use, bound to job and device; docs/protocol.md §3.10: "the MFP accepts the document only if `device_id` is its
/// own"). A refused ticket is `401` (docs/protocol.md §3.14); a ticket for another printer `403`; a server that
/// cannot be asked `503`.
pub(crate) fn judge_redemption(resp: &Response<Vec<u8>>, my_device: &str) -> Result<TicketRedemption, Refusal> {
    match resp.status().as_u16() {
        200..=299 => {
            let r: TicketRedemption = classify_api(resp).map_err(|_| {
                Refusal::new(503, "server_error", "the server's ticket redemption answer is unreadable")
            })?;
            if r.device_id != my_device {
                return Err(Refusal::new(403, "wrong_printer", "the ticket is bound to another printer"));
            }
            Ok(r)
        }
        401 | 403 => Err(Refusal::new(503, "printer_unauthorized", "this printer cannot check tickets right now")),
        408 | 429 | 500..=599 => {
            Err(Refusal::new(503, "server_unavailable", "the server cannot check the ticket right now; retry"))
        }
        _ => Err(Refusal::new(
            401,
            "invalid_ticket",
            "the server refused the ticket (unknown, expired, already used, or for another job or printer)",
        )),
    }
}

/// The first start offset of Graph's `nextExpectedRanges` (`["327680-"]` or `["10-20", …]`); `None` when the
/// list is empty (the upload is complete) or unreadable.
pub(crate) fn next_expected_start(body: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Ranges {
        #[serde(default)]
        next_expected_ranges: Vec<String>,
    }
    let r: Ranges = serde_json::from_slice(body).ok()?;
    let first = r.next_expected_ranges.first()?;
    first.split('-').next()?.trim().parse().ok()
}

/// A fresh `Idempotency-Key` for one release (PROTOCOL.md §9; 128 random bits, visible ASCII).
fn idempotency_key() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut key = String::from("mfp-release-");
    for b in bytes {
        key.push_str(&format!("{b:02x}"));
    }
    key
}

/// A simulated scan: a small PDF-like document with `pages` pages, made unique by `seed` (the scan id), large
/// enough (about 48 KiB a page) to need several upload chunks.
pub(crate) fn fake_scan(seed: &str, profile: &str, pages: u32) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in seed.bytes() {
        state = (state ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
    }
    let mut doc = format!("%PDF-1.7\n% roger-sim simulated scan, profile {profile}, {pages} page(s)\n").into_bytes();
    for page in 1..=pages {
        doc.extend_from_slice(format!("% page {page} of {pages}\nstream\n").as_bytes());
        for _ in 0..(48 * 1024 / 8) {
            // xorshift64: cheap, deterministic "image" data.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            doc.extend_from_slice(&state.to_le_bytes());
        }
        doc.extend_from_slice(b"\nendstream\n");
    }
    doc.extend_from_slice(b"%%EOF\n");
    doc
}

/// A resumable upload (Graph upload session, docs/protocol.md §3.14): `PUT` chunks with
/// `Content-Range: bytes a-b/total`; after a lost answer or a `416`, resume where the drive says
/// (`nextExpectedRanges`).
pub(crate) async fn upload<T: HttpTransport, C: Clock>(
    driver: &Driver<T, C>,
    policy: TransportPolicy,
    link: &UploadLink,
    doc: &[u8],
) -> Result<(), MfpError> {
    discovery::check_transport(link.url.secret(), policy)
        .map_err(|_| MfpError::Drive("the upload URL is not a TLS URL (R-DISC-2)".into()))?;
    let total = doc.len();
    let mut offset: usize = 0;
    let mut failures: u32 = 0;
    loop {
        if failures >= MAX_UPLOAD_FAILURES {
            return Err(MfpError::Drive("the upload failed repeatedly".into()));
        }
        let end = (offset + UPLOAD_CHUNK).min(total);
        let range = format!("bytes {offset}-{}/{total}", end - 1);
        let request = Request::put(link.url.secret())
            .header(http::header::CONTENT_RANGE, range)
            .body(doc[offset..end].to_vec())
            .map_err(build_err)?;
        let resp = match driver.send(request).await {
            Ok(r) => r,
            Err(_) => {
                // The answer may be lost: ask the session where to resume.
                failures += 1;
                tokio::time::sleep(RETRY_BASE * 2u32.pow(failures.min(4))).await;
                match upload_status(driver, link).await {
                    Some(Some(next)) => offset = next,
                    Some(None) => return Ok(()),
                    None => {}
                }
                continue;
            }
        };
        match resp.status().as_u16() {
            200 | 201 => return Ok(()),
            202 | 416 => {
                if resp.status() == http::StatusCode::RANGE_NOT_SATISFIABLE {
                    failures += 1;
                }
                match next_expected_start(resp.body()) {
                    Some(next) if (next as usize) < total => {
                        if next as usize <= offset {
                            // No progress: count it, so a drive that never moves on cannot loop us forever.
                            failures += 1;
                        }
                        offset = next as usize;
                    }
                    Some(_) | None if end == total && resp.status().is_success() => return Ok(()),
                    _ => return Err(MfpError::Drive("the drive's upload answer has no usable range".into())),
                }
            }
            410 => return Err(MfpError::Drive("the upload session expired".into())),
            st if st >= 500 || st == 429 => {
                failures += 1;
                tokio::time::sleep(RETRY_BASE * 2u32.pow(failures.min(4))).await;
            }
            st => return Err(MfpError::Drive(format!("the drive refused the upload ({st})"))),
        }
    }
}

/// `GET {upload.url}`: `Some(Some(offset))` to resume, `Some(None)` when nothing is expected (complete),
/// `None` when the drive could not be asked.
async fn upload_status<T: HttpTransport, C: Clock>(driver: &Driver<T, C>, link: &UploadLink) -> Option<Option<usize>> {
    let request = Request::get(link.url.secret()).body(Vec::new()).ok()?;
    let resp = driver.send(request).await.ok()?;
    if resp.status() != http::StatusCode::OK {
        return None;
    }
    match next_expected_start(resp.body()) {
        Some(n) => Some(Some(n as usize)),
        None => Some(None),
    }
}

fn build_err(e: http::Error) -> MfpError {
    MfpError::Build(e.to_string())
}

impl Core {
    // -----------------------------------------------------------------------------------------------------------
    // Sending

    /// Sends a request built by `build`, retrying idempotent calls after transient failures (PROTOCOL.md §12).
    async fn send_api(
        &self,
        build: &(dyn Fn() -> Result<Request<Vec<u8>>, http::Error> + Send + Sync),
        retry: Retry,
    ) -> Result<Response<Vec<u8>>, MfpError> {
        let mut attempt: u32 = 0;
        loop {
            let request = build().map_err(build_err)?;
            let outcome = self.api.send(request).await;
            let transient = match &outcome {
                Ok(resp) => {
                    let st = resp.status().as_u16();
                    (st >= 500 || st == 429 || st == 408).then(|| roger_proto::wire::retry_after(resp.headers()))
                }
                Err(_) => Some(None),
            };
            match transient {
                Some(retry_after) if retry == Retry::Idempotent && attempt < MAX_RETRIES => {
                    let backoff = RETRY_BASE * 2u32.pow(attempt);
                    let wait = match retry_after {
                        Some(ra) if ra > MAX_RETRY_AFTER => return outcome.map_err(MfpError::Transport),
                        Some(ra) => ra.max(backoff),
                        None => backoff,
                    };
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                _ => return outcome.map_err(MfpError::Transport),
            }
        }
    }

    /// The current device token and its generation, waiting briefly for one (a restored printer refreshes first).
    async fn device_token(&self) -> Result<(AccessToken, u64), MfpError> {
        self.wait_until(TOKEN_WAIT, |s| s.device_token.is_some() || !s.connected() || s.stopped).await;
        self.snapshot(|s| match (&s.device_token, s.connected()) {
            (Some(t), true) => Ok((t.clone(), s.device_token_gen)),
            (_, false) => Err(MfpError::NotConnected),
            (None, true) => Err(MfpError::Timeout("a device token")),
        })
    }

    /// A call with the device token (`roger.device`, PROTOCOL.md §10); a `401` gets one refresh and one retry
    /// (R-TOK-1).
    pub(crate) async fn with_device_token(
        &self,
        build: impl Fn(&AccessToken) -> Result<Request<Vec<u8>>, http::Error> + Send + Sync,
        retry: Retry,
    ) -> Result<Response<Vec<u8>>, MfpError> {
        let (token, gen) = self.device_token().await?;
        let resp = self.send_api(&|| build(&token), retry).await?;
        if resp.status() != http::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        self.input(MfpInput::DeviceTokenRejected).await;
        self.wait_until(TOKEN_WAIT, |s| s.device_token_gen > gen || !s.connected() || s.stopped).await;
        let (token, _) = self.device_token().await?;
        self.send_api(&|| build(&token), retry).await
    }

    /// A call with a user token (PROTOCOL.md §10); a `401` ends the session (RFC 6750 §3.1).
    pub(crate) async fn with_user_token(
        &self,
        need: Need,
        build: impl Fn(&AccessToken) -> Result<Request<Vec<u8>>, http::Error> + Send + Sync,
        retry: Retry,
    ) -> Result<Response<Vec<u8>>, MfpError> {
        let token = self.snapshot(|s| {
            if !s.connected() {
                return Err(MfpError::NotConnected);
            }
            match need {
                Need::Release => s.release_token.clone().ok_or(MfpError::NoSession),
                Need::Scope(sc) => match &s.user_token {
                    None => Err(MfpError::NoSession),
                    Some(_) if !s.scopes.iter().any(|x| x == sc) => Err(MfpError::NeedsStep2),
                    Some(t) => Ok(t.clone()),
                },
            }
        })?;
        let resp = self.send_api(&|| build(&token), retry).await?;
        if resp.status() == http::StatusCode::UNAUTHORIZED {
            self.say("the API refused the user token; the session is over");
            self.input(MfpInput::UserTokenRejected).await;
            return Err(MfpError::SessionEnded);
        }
        Ok(resp)
    }

    // -----------------------------------------------------------------------------------------------------------
    // Device: job endpoint, configuration, tickets

    /// `PUT /api/v1/device {"job_url"}` (PROTOCOL.md §9 desktop hand-over).
    pub(crate) async fn publish_job_url(&self) -> Result<(), MfpError> {
        let api_base = self.endpoints.api.clone();
        let update = DeviceUpdate { job_url: Some(self.job_url.clone()) };
        let resp = self.with_device_token(|t| api::put_device(&api_base, t, &update), Retry::Idempotent).await?;
        let _: DeviceConfig = classify_api(&resp)?;
        Ok(())
    }

    /// `GET /api/v1/device` (docs/protocol.md §3.10: re-read after `config.changed` and push reconnects); the job
    /// endpoint is published again if the server lost it. Returns whether it was republished.
    pub(crate) async fn reread_device(&self) -> Result<bool, MfpError> {
        let api_base = self.endpoints.api.clone();
        let resp = self.with_device_token(|t| api::get_device(&api_base, t), Retry::Idempotent).await?;
        let config: DeviceConfig = classify_api(&resp)?;
        if config.job_url.as_deref() == Some(self.job_url.as_str()) {
            return Ok(false);
        }
        self.publish_job_url().await.map(|()| true)
    }

    /// Checks a hand-over ticket with `POST /api/v1/tickets/redeem` (PROTOCOL.md §9) and judges the answer
    /// ([`judge_redemption`]).
    pub(crate) async fn redeem(&self, ticket: &Ticket) -> Result<TicketRedemption, Refusal> {
        let api_base = self.endpoints.api.clone();
        let my_device = self
            .snapshot(|s| s.device_id.clone().filter(|_| s.connected()))
            .ok_or_else(|| Refusal::new(403, "not_connected", "this printer is not connected to a tenant"))?;
        let resp = self
            .with_device_token(|t| api::redeem_ticket(&api_base, t, ticket), Retry::Idempotent)
            .await
            .map_err(|e| match e {
                MfpError::NotConnected => {
                    Refusal::new(403, "not_connected", "this printer is not connected to a tenant")
                }
                _ => Refusal::new(503, "server_unavailable", "the server cannot check the ticket right now; retry"),
            })?;
        judge_redemption(&resp, &my_device)
    }

    /// Records a hand-over print and wakes a release waiting for it.
    pub(crate) fn note_handover(&self, record: PrintRecord) {
        lock(&self.handed_over).insert(record.job_id.clone(), record);
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    // -----------------------------------------------------------------------------------------------------------
    // Jobs (step 1)

    /// `GET /api/v1/jobs?state=queued` with the session token (PROTOCOL.md §9).
    pub(crate) async fn jobs(&self) -> Result<Vec<Job>, MfpError> {
        let api_base = self.endpoints.api.clone();
        let resp = self.with_user_token(Need::Release, |t| api::list_jobs(&api_base, t), Retry::Idempotent).await?;
        // One bad job never hides the others (docs/protocol.md §7).
        let list = self.api.noted(api::JOBS_ENDPOINT, api::classify_job_list(&resp))?;
        let mut cache = lock(&self.jobs_cache);
        for j in &list.jobs {
            cache.insert(j.id.clone(), j.clone());
        }
        Ok(list.jobs)
    }

    /// File name and page count of a job, from the last listing (listing again if it is not known).
    async fn job_meta(&self, job_id: &str) -> Result<(String, u32), MfpError> {
        let cached = lock(&self.jobs_cache).get(job_id).map(|j| (j.file_name.clone(), j.pages));
        if let Some(m) = cached {
            return Ok(m);
        }
        self.jobs().await?;
        let cached = lock(&self.jobs_cache).get(job_id).map(|j| (j.file_name.clone(), j.pages));
        // A job that is no longer queued (e.g. released before a restart) is still released by id; the server
        // decides whether it is this user's (404 otherwise).
        Ok(cached.unwrap_or_else(|| (job_id.to_owned(), 1)))
    }

    /// `POST /api/v1/jobs/{id}/release` with `key` (PROTOCOL.md §9).
    async fn release_once(&self, job_id: &str, key: &str) -> Result<ReleaseAnswer, MfpError> {
        let api_base = self.endpoints.api.clone();
        let body = ReleaseRequest::default();
        let resp = self
            .with_user_token(Need::Release, |t| api::release_job(&api_base, t, job_id, key, &body), Retry::Idempotent)
            .await?;
        match resp.status().as_u16() {
            404 => Err(MfpError::NotFound(format!("job {job_id}"))),
            409 => Err(MfpError::Conflict(format!("job {job_id} cannot be released (already printed?)"))),
            _ => {
                let answer = self.api.noted(api::RELEASE_ENDPOINT, api::classify_release(&resp))?;
                Ok(answer)
            }
        }
    }

    /// Downloads a released document straight from the drive (R-DATA-1). `Ok(None)`: the URL expired (`410`).
    async fn download(&self, doc: &DocumentLink) -> Result<Option<Vec<u8>>, MfpError> {
        discovery::check_transport(doc.url.secret(), self.policy)
            .map_err(|_| MfpError::Drive("the document URL is not a TLS URL (R-DISC-2)".into()))?;
        let url = doc.url.clone();
        let build = move || Request::get(url.secret()).body(Vec::new());
        let resp = self.send_api(&build, Retry::Idempotent).await?;
        match resp.status().as_u16() {
            200 => {
                let bytes = resp.into_body();
                // A link without `size` is read to the end (docs/protocol.md §7); with one, the length must match.
                if let Some(size) = doc.size.filter(|s| *s != bytes.len() as u64) {
                    return Err(MfpError::Drive(format!(
                        "the drive sent {} bytes, the release announced {size}",
                        bytes.len()
                    )));
                }
                Ok(Some(bytes))
            }
            410 => Ok(None),
            st => Err(MfpError::Drive(format!("the drive answered {st} to the download"))),
        }
    }

    /// `POST /api/v1/jobs/{id}/result` (PROTOCOL.md §9, idempotent). Returns whether it was accepted.
    pub(crate) async fn report_result(&self, job_id: &str, state: JobOutcome, pages: u32) -> bool {
        let api_base = self.endpoints.api.clone();
        let result = JobResult { state, pages };
        let sent = self
            .with_user_token(
                Need::Release,
                |t| api::report_job_result(&api_base, t, job_id, &result),
                Retry::Idempotent,
            )
            .await;
        match sent.map(|r| classify_api_empty(&r)) {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.say(format!("the result of job {job_id} was refused: {e}"));
                false
            }
            Err(e) => {
                self.say(format!("could not report the result of job {job_id}: {e}"));
                false
            }
        }
    }

    /// Releases one job and prints it (PROTOCOL.md §9): a drive job is downloaded from its pre-authorised URL
    /// (released again with the same `Idempotency-Key` if the URL expired), printed into the output folder and
    /// reported; a desktop job waits up to the configured time for the desktop's hand-over.
    pub(crate) async fn release(self: &Arc<Self>, job_id: &str) -> Result<ReleaseOutcome, MfpError> {
        let (file_name, pages) = self.job_meta(job_id).await?;
        let key = idempotency_key();
        let answer = self.release_once(job_id, &key).await?;
        match answer {
            ReleaseAnswer::Drive { document, .. } => {
                self.say(format!("released job {job_id} ({file_name}); downloading it from the drive"));
                let bytes = match self.download(&document).await {
                    Ok(Some(b)) => Ok(b),
                    Ok(None) => match self.release_once(job_id, &key).await? {
                        ReleaseAnswer::Drive { document, .. } => match self.download(&document).await {
                            Ok(Some(b)) => Ok(b),
                            Ok(None) => Err(MfpError::Drive("the fresh document URL expired at once".into())),
                            Err(e) => Err(e),
                        },
                        ReleaseAnswer::Desktop { .. } => {
                            Err(MfpError::Drive("the job changed from a drive job to a desktop job".into()))
                        }
                    },
                    Err(e) => Err(e),
                };
                let bytes = match bytes {
                    Ok(b) => b,
                    Err(e) => {
                        self.say(format!("job {job_id} could not be fetched: {e}"));
                        self.report_result(job_id, JobOutcome::Failed, 0).await;
                        return Err(e);
                    }
                };
                let record = match self.printer.print(job_id, &file_name, PrintSource::Drive, pages, &bytes) {
                    Ok(r) => r,
                    Err(e) => {
                        self.report_result(job_id, JobOutcome::Failed, 0).await;
                        return Err(e.into());
                    }
                };
                self.say(format!(
                    "printed job {job_id} ({file_name}, {} bytes, {pages} pages) into {}",
                    record.bytes,
                    self.printer.out_dir().display()
                ));
                let reported = self.report_result(job_id, JobOutcome::Printed, pages).await;
                if reported {
                    self.say(format!("reported job {job_id} printed"));
                }
                Ok(ReleaseOutcome::Printed { record, reported })
            }
            ReleaseAnswer::Desktop { .. } => {
                self.say(format!(
                    "released desktop job {job_id} ({file_name}); waiting for the desktop to hand it over"
                ));
                let wait = self.config.handover_wait;
                let id = job_id.to_owned();
                let core = self.clone();
                let arrived = self.wait_until(wait, move |_| lock(&core.handed_over).contains_key(&id)).await;
                let record = lock(&self.handed_over).get(job_id).cloned();
                match (arrived, record) {
                    (true, Some(record)) => Ok(ReleaseOutcome::Printed { record, reported: true }),
                    _ => Ok(ReleaseOutcome::AwaitingHandover { job_id: job_id.to_owned() }),
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------------------------
    // Step 2: print from drive, scan

    /// `GET /api/v1/drive/files?folder=Print` with the step-2 token (PROTOCOL.md §9).
    pub(crate) async fn drive_files(&self) -> Result<Vec<DriveFile>, MfpError> {
        let api_base = self.endpoints.api.clone();
        let resp = self
            .with_user_token(
                Need::Scope(scope::PRINT),
                |t| api::list_drive_files(&api_base, t, api::PRINT_FOLDER),
                Retry::Idempotent,
            )
            .await?;
        let list = self.api.noted(api::DRIVE_FILES_ENDPOINT, api::classify_drive_files(&resp))?;
        Ok(list.files)
    }

    /// `POST /api/v1/jobs {"drive_file_id"}` with the step-2 token (PROTOCOL.md §9); sent once (not idempotent).
    pub(crate) async fn submit_drive_file(&self, file_id: &str) -> Result<Job, MfpError> {
        let api_base = self.endpoints.api.clone();
        let body = SubmitJob::Drive { drive_file_id: file_id.to_owned() };
        let resp = self
            .with_user_token(Need::Scope(scope::PRINT), |t| api::submit_job(&api_base, t, &body), Retry::Once)
            .await?;
        match resp.status().as_u16() {
            404 => Err(MfpError::NotFound(format!("drive file {file_id}"))),
            409 => Err(MfpError::Conflict("the user's drive is not connected".into())),
            _ => {
                let job: Job = classify_api(&resp)?;
                lock(&self.jobs_cache).insert(job.id.clone(), job.clone());
                self.say(format!("submitted {} from the drive as job {}", job.file_name, job.id));
                Ok(job)
            }
        }
    }

    /// `GET /api/v1/scan-profiles` with the step-2 token (PROTOCOL.md §9).
    pub(crate) async fn scan_profiles(&self) -> Result<Vec<ScanProfile>, MfpError> {
        let api_base = self.endpoints.api.clone();
        let resp = self
            .with_user_token(Need::Scope(scope::SCAN), |t| api::list_scan_profiles(&api_base, t), Retry::Idempotent)
            .await?;
        let list = self.api.noted(api::SCAN_PROFILES_ENDPOINT, api::classify_scan_profiles(&resp))?;
        Ok(list.profiles)
    }

    /// Scans with `profile_id` (PROTOCOL.md §9): `POST /api/v1/scans`, upload to the drive with `Content-Range`
    /// chunks (resumable), `POST /api/v1/scans/{id}/complete`.
    pub(crate) async fn scan(&self, profile_id: &str) -> Result<ScanRecord, MfpError> {
        let api_base = self.endpoints.api.clone();
        let body = ScanCreate { profile_id: profile_id.to_owned() };
        let resp = self
            .with_user_token(Need::Scope(scope::SCAN), |t| api::create_scan(&api_base, t, &body), Retry::Once)
            .await?;
        let created: ScanCreated = match resp.status().as_u16() {
            404 => return Err(MfpError::NotFound(format!("scan profile {profile_id}"))),
            409 => return Err(MfpError::Conflict("the user's drive is not connected".into())),
            _ => self.api.noted(api::SCANS_ENDPOINT, api::classify_scan_created(&resp))?,
        };
        let pages = 2;
        let doc = fake_scan(&created.scan_id, profile_id, pages);
        self.say(format!("scanning {pages} pages with profile {profile_id}; uploading to the drive"));
        self.upload(&created.upload, &doc).await?;
        let done = ScanComplete { size: Some(doc.len() as u64), pages: Some(pages) };
        let scan_id = created.scan_id.clone();
        let resp = self
            .with_user_token(
                Need::Scope(scope::SCAN),
                |t| api::complete_scan(&api_base, t, &scan_id, &done),
                Retry::Idempotent,
            )
            .await?;
        classify_api_empty(&resp)?;
        self.say(format!("scan {scan_id} uploaded ({} bytes) and completed", doc.len()));
        Ok(ScanRecord {
            scan_id,
            profile_id: profile_id.to_owned(),
            pages,
            bytes: doc.len() as u64,
            sha256: sha256_hex(&doc),
        })
    }

    /// The resumable upload of a scan (see [`upload`]).
    async fn upload(&self, link: &UploadLink, doc: &[u8]) -> Result<(), MfpError> {
        upload(&self.api, self.policy, link, doc).await
    }

    // -----------------------------------------------------------------------------------------------------------
    // Push confirmations (R-PUSH-1)

    /// Confirms a `session.ended` doorbell over HTTPS (docs/protocol.md §4.4: probe the user token with
    /// `GET /api/v1/jobs`; a `401` ends the session). A stale doorbell for an earlier session changes nothing.
    pub(crate) async fn confirm_session_end(&self) {
        if self.snapshot(|s| s.release_token.is_none()) {
            return;
        }
        let api_base = self.endpoints.api.clone();
        match self.with_user_token(Need::Release, |t| api::list_jobs(&api_base, t), Retry::Idempotent).await {
            Err(MfpError::SessionEnded) => self.say("confirmed: the session was ended server-side"),
            Ok(_) => self.say("the session.ended doorbell was stale: the session is still valid"),
            Err(e) => self.say(format!("could not confirm the session end: {e}")),
        }
    }
}

impl From<ResponseError> for MfpError {
    fn from(e: ResponseError) -> Self {
        MfpError::Api(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> Response<Vec<u8>> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
            .expect("response")
    }

    const REDEEMED: &str = r#"{"job_id":"job_1","device_id":"dev_me","file_name":"memo.docx","pages":2}"#;

    /// PROTOCOL.md §9: a redeemed ticket bound to this printer is accepted.
    #[test]
    fn redemption_for_this_printer_is_accepted() {
        let r = judge_redemption(&resp(200, REDEEMED), "dev_me").expect("accepted");
        assert_eq!((r.job_id.as_str(), r.file_name.as_str(), r.pages), ("job_1", "memo.docx", 2));
    }

    /// docs/protocol.md §3.10: "the MFP accepts the document only if `device_id` is its own".
    #[test]
    fn redemption_for_another_printer_is_forbidden() {
        let e = judge_redemption(&resp(200, REDEEMED), "dev_other").expect_err("refused");
        assert_eq!((e.status, e.error), (403, "wrong_printer"));
    }

    /// docs/protocol.md §3.14: a ticket the server refuses (unknown, expired, used) is a 401 at the job endpoint.
    #[test]
    fn refused_ticket_is_unauthorized() {
        let problem = r#"{"type":"urn:roger:problem:not-found","title":"Not found","status":404}"#;
        for (status, body) in [(404, problem), (400, r#"{"type":"urn:roger:problem:invalid-request","status":400}"#)] {
            let e = judge_redemption(&resp(status, body), "dev_me").expect_err("refused");
            assert_eq!((e.status, e.error), (401, "invalid_ticket"), "{status}");
        }
    }

    /// A server that cannot be asked is no verdict on the ticket: 503, never a print.
    #[test]
    fn unavailable_server_is_503() {
        for status in [500, 503, 429, 401, 403] {
            let e = judge_redemption(&resp(status, "<html>"), "dev_me").expect_err("refused");
            assert_eq!(e.status, 503, "{status}");
        }
        let e = judge_redemption(&resp(200, r#"{"job_id":"job_1"}"#), "dev_me").expect_err("unreadable");
        assert_eq!(e.status, 503);
    }

    /// Graph's `nextExpectedRanges` (docs/protocol.md §3.14).
    #[test]
    fn next_expected_ranges() {
        assert_eq!(next_expected_start(br#"{"nextExpectedRanges":["327680-"]}"#), Some(327_680));
        assert_eq!(next_expected_start(br#"{"nextExpectedRanges":["10-20","30-"]}"#), Some(10));
        assert_eq!(next_expected_start(br#"{"nextExpectedRanges":[]}"#), None);
        assert_eq!(next_expected_start(br#"{"id":"x","size":3}"#), None);
        assert_eq!(next_expected_start(br#"{"nextExpectedRanges":["abc-"]}"#), None);
        assert_eq!(next_expected_start(b"not json"), None);
    }

    /// The simulated scan is deterministic per seed, distinct across seeds, and needs several chunks.
    #[test]
    fn fake_scan_shape() {
        let a = fake_scan("scn_1", "pdf300", 2);
        assert_eq!(a, fake_scan("scn_1", "pdf300", 2));
        assert_ne!(a, fake_scan("scn_2", "pdf300", 2));
        assert!(a.starts_with(b"%PDF-1.7") && a.ends_with(b"%%EOF\n"));
        assert!(a.len() > 2 * UPLOAD_CHUNK, "{} bytes", a.len());
    }

    /// A transport that loses the answer of the `n`th PUT after the drive processed it (a lost answer).
    struct LosesOneAnswer {
        inner: roger_proto::driver::reqwest_transport::ReqwestTransport,
        puts: std::sync::atomic::AtomicU32,
        lose: u32,
    }

    #[async_trait::async_trait]
    impl HttpTransport for LosesOneAnswer {
        async fn send(
            &self,
            request: Request<Vec<u8>>,
        ) -> Result<Response<Vec<u8>>, roger_proto::driver::TransportError> {
            let is_put = request.method() == http::Method::PUT;
            let answer = self.inner.send(request).await;
            if is_put && self.puts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.lose {
                return Err(roger_proto::driver::TransportError::new(
                    roger_proto::driver::TransportErrorKind::Reset,
                    "answer lost",
                ));
            }
            answer
        }
    }

    /// docs/protocol.md §3.14: after a lost chunk answer the upload asks the session where to resume and
    /// completes; the drive holds exactly the document (no chunk twice, none missing).
    #[tokio::test]
    async fn upload_resumes_after_a_lost_answer() {
        use roger_proto::server::drive::{DriveLinks, Folder};
        let mut drive = crate::drive::Drive::new(crate::drive::system_clock());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        drive.set_base_url(&base);
        let app = crate::drive::router(drive.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let now = drive.now();
        let url = drive.upload_link(now, "u1", Folder::Scan, now + time::Duration::seconds(600));
        let link = UploadLink { url, expires_at: Some(now + time::Duration::seconds(600)) };
        let transport = LosesOneAnswer {
            inner: roger_proto::driver::reqwest_transport::ReqwestTransport::new(None).expect("transport"),
            puts: std::sync::atomic::AtomicU32::new(0),
            lose: 2,
        };
        let driver = Driver::new(transport);
        let doc = fake_scan("scn_resume", "pdf-300", 2);
        upload(&driver, TransportPolicy::AllowLoopbackPlain, &link, &doc).await.expect("upload completes");
        let files = drive.files("u1", Folder::Scan);
        assert_eq!(files.len(), 1, "{files:?}");
        assert_eq!(drive.file_bytes("u1", &files[0].id).as_deref(), Some(&doc[..]));
        assert_eq!(drive.total_bytes_received(), doc.len() as u64, "no chunk was stored twice");
        // A plain-HTTP upload URL is refused without the loopback test mode (R-DISC-2).
        let refused = upload(&driver, TransportPolicy::TlsOnly, &link, &doc).await;
        assert!(matches!(refused, Err(MfpError::Drive(_))));
        server.abort();
    }

    /// Idempotency keys are fresh and valid header values (draft-ietf-httpapi-idempotency-key-header).
    #[test]
    fn idempotency_keys() {
        let (a, b) = (idempotency_key(), idempotency_key());
        assert_ne!(a, b);
        assert!(a.len() <= 255 && a.bytes().all(|c| c.is_ascii_graphic()));
        assert!(http::HeaderValue::from_str(&a).is_ok());
    }
}
