//! The API side of the server core: every `/api/v1` operation of PROTOCOL.md §9–11 (docs/protocol.md §3.10–3.16)
//! except the code approvals, which live with the OAuth side ([`super::oauth`]).
//!
//! Each operation is a method on [`ServerCore`] that takes the caller as an authenticated [`Principal`] (from
//! [`ServerCore::authenticate`]) and enforces the endpoint matrix of PROTOCOL.md §10 itself: the scope first (403
//! `insufficient_scope` with the RFC 6750 §3.1 challenge), then the role (403 `forbidden`) and ownership (404: an
//! object of someone else does not exist for the caller, so the API is no oracle). Failures are RFC 9457 problems
//! ([`ApiFailure`]) with the statuses and type names of docs/protocol.md §3.1.
//!
//! Sans-IO as the rest of the core: time is the `now` argument, and the drive is reached only through the
//! [`DriveLinks`] the front end passes in (R-DATA-1: the core sees ids, names, sizes and links, never document
//! bytes). Push doorbells go to the core's outbox (R-PUSH-1: ids only). The core stores no plaintext ticket, no
//! pre-authorised URL and no scan file name (R-DATA-2, R-SEC-1): tickets are kept as SHA-256 hashes, URLs are
//! handed out once and forgotten.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::drive::{DriveLinks, Folder};
use super::mint::{SecretHash, SecretKind};
use super::model::{
    CodeState, Device, JobRecord, JobSource as StoredSource, JobState, Name, ScanRecord, Subject, TicketRecord, User,
};
use super::{ApiFailure, Principal, ServerCore};
use crate::api::{
    DesktopHandover, DeviceConfig, DeviceUpdate, DocumentLink, DriveFileList, ExportedJob, ExportedScan, Job, JobList,
    JobOutcome, JobResult, JobSource as WireSource, MeExport, PrintFeatures, PushCredentials, ReleaseAnswer,
    ReleaseRequest, ScanComplete, ScanCreate, ScanCreated, ScanProfileList, SessionEnd, SubmitJob, TicketRedeem,
    TicketRedemption, UploadLink, UserProfile, PRINT_FOLDER,
};
use crate::discovery::{check_transport, TransportPolicy};
use crate::push::{app_queue, device_queue, Id, PushEvent, PushTarget};
use crate::secret::{BrokerPassword, Ticket};
use crate::token::{client_id, scope};

/// docs/protocol.md C6: a repeat redemption of a ticket by the same device within this many seconds of the success
/// (a lost answer) gets the same answer again, as R-DEV-1 does for device codes.
pub const TICKET_GRACE_SECS: i64 = 30;

/// Longest `Idempotency-Key` (docs/protocol.md §3.13: 1–255 visible ASCII characters,
/// draft-ietf-httpapi-idempotency-key-header).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Longest app installation id (docs/protocol.md §3.16: 1–32 characters of the id alphabet).
pub const MAX_INSTALLATION_ID_LEN: usize = 32;

/// Longest `job_url` a device may publish (a sanity bound; bodies are capped at 64 KiB anyway, C10).
pub const MAX_JOB_URL_LEN: usize = 2048;

/// Longest desktop file name kept for a job (R-DATA-2 keeps file names; this bounds what is kept).
pub const MAX_FILE_NAME_LEN: usize = 255;

/// The broker the region offers, as the front end configures it (PROTOCOL.md §11, docs/protocol.md §4.2).
///
/// Production hands out per-principal broker users with topic permissions; the simulator may hand out a shared
/// test account on a loopback broker and says so (`shared_test_account`). `url: None` means the region has no
/// broker (`roger_push: null`, e.g. the simulator's in-process bus only): the push endpoints answer
/// `404 push-unavailable`.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The broker URL (`amqps://…`; `amqp://` only on a loopback test broker, R-DISC-2), or `None` without one.
    pub url: Option<String>,
    /// The AMQP virtual host.
    pub vhost: String,
    /// The broker user name handed out.
    pub username: String,
    /// The broker password handed out (a credential, R-SEC-1: `Debug` redacts it).
    pub password: BrokerPassword,
    /// The credentials are a shared test account (the simulator "says so", PROTOCOL.md §11).
    pub shared_test_account: bool,
    /// How long the handed-out credentials are good for, in seconds (`expires_at = now + ttl_secs`).
    pub ttl_secs: u64,
    /// Prepended to every queue name handed out (PROTOCOL.md §11 names; empty in production, unique per test run
    /// so runs sharing one broker stay apart).
    pub queue_prefix: String,
}

impl PushConfig {
    /// A region without a broker (`roger_push: null`): the push endpoints answer `404 push-unavailable`.
    pub fn without_broker() -> Self {
        Self {
            url: None,
            vhost: "/".into(),
            username: String::new(),
            password: BrokerPassword::new(""),
            shared_test_account: false,
            ttl_secs: 0,
            queue_prefix: String::new(),
        }
    }
}

/// What `POST /api/v1/jobs/{id}/release` answers (PROTOCOL.md §9, docs/protocol.md §3.13).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// At the MFP (user token, `roger.release`): `200`, no-store (R-SEC-1: it carries a URL or a ticket), with
    /// the drive URL or the desktop ticket.
    Answer(ReleaseAnswer),
    /// From the phone (app token with `{"device_id"}`): `202` — the printer got `job.release_requested` and
    /// releases with its own user token (docs/protocol.md C4). The body is optional.
    Requested(ReleaseRequested),
}

/// The `202` body of a phone release (docs/protocol.md §3.13): which job was asked for at which printer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReleaseRequested {
    /// The job.
    pub job_id: String,
    /// The printer that was rung.
    pub device_id: String,
}

/// The answer of `POST /api/v1/jobs/{id}/handover` (docs/protocol.md §3.13, C1): where and with which ticket the
/// desktop delivers a released desktop job. No-store (it carries a ticket, R-SEC-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Handover {
    /// The printer the job was released to.
    pub device_id: String,
    /// The printer's job endpoint (`PUT /api/v1/device`); the desktop `POST`s the file there.
    pub job_url: String,
    /// A fresh one-use ticket bound to this job and this printer, for `Authorization: Ticket <ticket>`.
    pub ticket: Ticket,
    /// When the ticket lapses.
    #[serde(with = "time::serde::rfc3339")]
    #[cfg_attr(feature = "schema", schemars(with = "crate::schema::Rfc3339"))]
    pub expires_at: OffsetDateTime,
}

/// A non-negative lifetime in seconds as a [`Duration`] (saturating, so a silly setting cannot overflow).
fn secs(n: u64) -> Duration {
    Duration::seconds(i64::try_from(n).unwrap_or(i64::MAX / 2).min(100 * 365 * 24 * 3600))
}

/// docs/protocol.md §3.1 `conflict` (409): the object's state forbids the request.
fn conflict(detail: &str) -> ApiFailure {
    ApiFailure::new(409, "conflict", "Conflict").with_detail(detail)
}

/// docs/protocol.md §3.1 `forbidden` (403): right scope, wrong role.
fn forbidden(detail: &str) -> ApiFailure {
    ApiFailure::new(403, "forbidden", "Forbidden").with_detail(detail)
}

/// A 404 with a detail (docs/protocol.md §3.1 `not-found`: unknown, expired, used, or someone else's).
fn not_found(detail: &str) -> ApiFailure {
    ApiFailure::not_found().with_detail(detail)
}

/// draft-ietf-httpapi-idempotency-key-header as docs/protocol.md §3.13 profiles it: 1–255 visible ASCII characters.
pub fn is_valid_idempotency_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_IDEMPOTENCY_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// docs/protocol.md §3.16: an installation id is 1–32 characters of the id alphabet, and one word of a routing key
/// (no `.`, PROTOCOL.md §11), so it can name the queue `roger.app.<installation_id>`.
pub fn is_valid_installation_id(id: &str) -> bool {
    id.len() <= MAX_INSTALLATION_ID_LEN && Id::new(id).is_ok_and(|i| i.is_routing_word())
}

/// The wire form of a stored job (PROTOCOL.md §9 job object).
fn wire_job(j: &JobRecord) -> Job {
    Job {
        id: j.id.clone(),
        file_name: j.file_name.clone(),
        pages: j.pages,
        source: wire_source(&j.source),
        created: Some(j.created),
        expires: Some(j.expires),
    }
}

fn wire_source(s: &StoredSource) -> WireSource {
    match s {
        StoredSource::Drive { .. } => WireSource::Drive,
        StoredSource::Desktop { .. } => WireSource::Desktop,
    }
}

/// The `?state=` filter of `GET /api/v1/jobs` (docs/protocol.md §3.13: default `queued`; unknown → 400).
fn parse_state(state: Option<&str>) -> Result<JobState, ApiFailure> {
    match state.unwrap_or("queued") {
        "queued" => Ok(JobState::Queued),
        "released" => Ok(JobState::Released),
        "printed" => Ok(JobState::Printed),
        "failed" => Ok(JobState::Failed),
        _ => Err(ApiFailure::bad_request("state must be queued, released, printed or failed")),
    }
}

impl ServerCore {
    // -------------------------------------------------------------------------------------------------------------
    // Who is calling (PROTOCOL.md §10 matrix)
    // -------------------------------------------------------------------------------------------------------------

    /// The calling device (PROTOCOL.md §10: device token, `roger.device`).
    fn calling_device(&self, who: &Principal) -> Result<Device, ApiFailure> {
        who.require_scope(&[scope::DEVICE])?;
        let Subject::Device { device_id } = &who.subject else {
            return Err(ApiFailure::insufficient_scope(scope::DEVICE));
        };
        self.state.devices.get(device_id).map(|d| (**d).clone()).ok_or_else(ApiFailure::invalid_token)
    }

    /// The calling user, if the token has one of `scopes` (PROTOCOL.md §10 matrix). A token whose user was erased
    /// is an invalid token (RFC 6750 §3.1).
    fn calling_user(&self, who: &Principal, scopes: &[&str]) -> Result<User, ApiFailure> {
        who.require_scope(scopes)?;
        who.user_id()
            .and_then(|u| self.state.users.get(u))
            .filter(|u| u.tenant == who.tenant)
            .cloned()
            .ok_or_else(ApiFailure::invalid_token)
    }

    /// A job of `user` (someone else's or unknown → 404, PROTOCOL.md §9). A queued job past its lifetime is gone
    /// even before [`ServerCore::sweep`] removed it.
    fn own_job(&self, now: OffsetDateTime, user: &User, job_id: &str) -> Result<JobRecord, ApiFailure> {
        self.state
            .jobs
            .get(job_id)
            .filter(|j| j.user_id == user.id && j.tenant == user.tenant)
            .filter(|j| !(j.state == JobState::Queued && j.expires <= now))
            .cloned()
            .ok_or_else(|| not_found("no such job"))
    }

    /// A device of the caller's tenant (another tenant's or unknown → 404, docs/protocol.md §3.10, §3.12).
    fn tenant_device(&self, tenant: &str, device_id: &str) -> Result<Device, ApiFailure> {
        self.state
            .devices
            .get(device_id)
            .filter(|d| d.tenant == tenant)
            .map(|d| (**d).clone())
            .ok_or_else(|| not_found("no such device"))
    }

    fn push_device(&mut self, now: OffsetDateTime, device_id: &str, event: PushEvent) {
        if let Ok(id) = Id::new(device_id) {
            self.push(now, PushTarget::Device(id), event);
        }
    }

    fn push_user(&mut self, now: OffsetDateTime, user_id: &str, event: PushEvent) {
        if let Ok(id) = Id::new(user_id) {
            self.push(now, PushTarget::User(id), event);
        }
    }

    /// The live user tokens at a printer, i.e. its open sessions (PROTOCOL.md §8: step-1 and step-2 tokens carry
    /// `Subject::User { device_id: Some(..) }`). Returns the user ids.
    fn session_users(&self, now: OffsetDateTime, device_id: &str) -> Vec<String> {
        let mut users: Vec<String> = self
            .state
            .access
            .values()
            .filter(|a| a.expires > now)
            .filter_map(|a| match &a.subject {
                Subject::User { user_id, device_id: Some(d) } if d == device_id => Some(user_id.to_string()),
                _ => None,
            })
            .collect();
        users.sort();
        users.dedup();
        users
    }

    /// Whether `user_id` has an open session at `device_id`: a live `roger.release` user token issued at that
    /// printer (docs/protocol.md C4).
    fn has_session(&self, now: OffsetDateTime, user_id: &str, device_id: &str) -> bool {
        self.state.access.values().any(|a| {
            a.expires > now
                && scope::contains(&a.scope, scope::RELEASE)
                && matches!(&a.subject, Subject::User { user_id: u, device_id: Some(d) } if u == user_id && d == device_id)
        })
    }

    /// Mints a one-use ticket bound to `job_id` and `device_id` (PROTOCOL.md §9) and stores only its hash
    /// (R-DATA-2, PROTOCOL.md §6 "stored only as SHA-256 hashes").
    fn mint_ticket(&mut self, now: OffsetDateTime, tenant: &str, job_id: &str, device_id: &str) -> DesktopHandover {
        let expires = now + secs(self.settings(tenant).ticket_secs);
        let (plain, hash) = self.minter.secret(SecretKind::Ticket);
        self.put_ticket(TicketRecord {
            hash,
            job_id: job_id.to_owned(),
            device_id: device_id.to_owned(),
            expires,
            redeemed: None,
        });
        DesktopHandover { ticket: Ticket::new(plain), expires_at: expires }
    }

    /// Deletes the tickets of `job_id` that pass `pred` (voided by a redemption, a result, a deletion).
    fn drop_tickets(&mut self, pred: impl Fn(&TicketRecord) -> bool) {
        let hashes: Vec<SecretHash> = self.state.tickets.values().filter(|t| pred(t)).map(|t| t.hash).collect();
        for h in hashes {
            self.delete_ticket(&h);
        }
    }

    fn device_config(d: &Device) -> DeviceConfig {
        DeviceConfig {
            device_id: d.id.to_string(),
            tenant_id: Some(d.tenant.to_string()),
            vendor: d.client_id.strip_prefix(client_id::EMB_PREFIX).map(str::to_owned),
            model: d.model.clone().map(Into::into),
            serial: d.serial.clone().map(Into::into),
            job_url: d.job_url.clone().map(Into::into),
        }
    }

    fn push_credentials(
        &self,
        now: OffsetDateTime,
        cfg: &PushConfig,
        queue: String,
    ) -> Result<PushCredentials, ApiFailure> {
        let Some(url) = cfg.url.clone() else {
            return Err(ApiFailure::new(404, "push-unavailable", "This region has no push broker")
                .with_detail("roger_push is null: poll at the plain interval"));
        };
        Ok(PushCredentials {
            url,
            vhost: cfg.vhost.clone(),
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            queue: format!("{}{queue}", cfg.queue_prefix),
            expires_at: now + secs(cfg.ttl_secs),
            shared_test_account: cfg.shared_test_account,
        })
    }

    // -------------------------------------------------------------------------------------------------------------
    // Device endpoints (device token, roger.device; docs/protocol.md §3.10)
    // -------------------------------------------------------------------------------------------------------------

    /// `GET /api/v1/device` (PROTOCOL.md §9–10, `roger.device`): the calling printer's record.
    pub fn get_device(&self, who: &Principal) -> Result<DeviceConfig, ApiFailure> {
        Ok(Self::device_config(&self.calling_device(who)?))
    }

    /// `PUT /api/v1/device {"job_url"}` (PROTOCOL.md §9 desktop hand-over, `roger.device`): publishes or withdraws
    /// (`null`) the printer's job endpoint. It must be `https`, or plain `http` on a loopback host for tests
    /// (R-DISC-2); anything else → `400 invalid-request`.
    pub fn update_device(&mut self, who: &Principal, body: &DeviceUpdate) -> Result<DeviceConfig, ApiFailure> {
        let mut device = self.calling_device(who)?;
        if let Some(url) = &body.job_url {
            if url.len() > MAX_JOB_URL_LEN {
                return Err(ApiFailure::bad_request("job_url is too long"));
            }
            check_transport(url, TransportPolicy::AllowLoopbackPlain)
                .map_err(|_| ApiFailure::bad_request("job_url must be an https URL (R-DISC-2)"))?;
        }
        device.job_url = body.job_url.clone().map(Into::into);
        self.put_device(device.clone());
        Ok(Self::device_config(&device))
    }

    /// `GET /api/v1/device/push` (PROTOCOL.md §11, `roger.device`): broker credentials for the queue
    /// `roger.device.<device_id>`; `404 push-unavailable` when the region has no broker (docs/protocol.md §3.10).
    pub fn device_push_credentials(
        &self,
        now: OffsetDateTime,
        who: &Principal,
        cfg: &PushConfig,
    ) -> Result<PushCredentials, ApiFailure> {
        let device = self.calling_device(who)?;
        let id = Id::new(device.id).map_err(|_| ApiFailure::invalid_token())?;
        self.push_credentials(now, cfg, device_queue(&id))
    }

    /// `GET /api/v1/me/push?installation_id=…` (docs/protocol.md C2, §3.16, `roger.app`): broker credentials for the
    /// queue `roger.app.<installation_id>`, one per app installation (PROTOCOL.md §11). A malformed installation id
    /// → `400`; no broker → `404 push-unavailable`.
    pub fn app_push_credentials(
        &self,
        now: OffsetDateTime,
        who: &Principal,
        installation_id: &str,
        cfg: &PushConfig,
    ) -> Result<PushCredentials, ApiFailure> {
        self.calling_user(who, &[scope::APP])?;
        let id = Id::new(installation_id)
            .ok()
            .filter(|_| is_valid_installation_id(installation_id))
            .ok_or_else(|| ApiFailure::bad_request("installation_id must be 1-32 characters of A-Z a-z 0-9 _ : -"))?;
        self.push_credentials(now, cfg, app_queue(&id))
    }

    /// `POST /api/v1/tickets/redeem {"ticket"}` (PROTOCOL.md §9, `roger.device`): a ticket is one-use and bound to
    /// one job and one device. Unknown, expired, used, or bound to another device → `404 not-found`
    /// (docs/protocol.md §3.10); a repeat by the same device within 30 s of the success gets the same answer again
    /// (C6, the lost-answer grace of R-DEV-1). A redemption voids the job's other outstanding tickets.
    pub fn redeem_ticket(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        body: &TicketRedeem,
    ) -> Result<TicketRedemption, ApiFailure> {
        let device = self.calling_device(who)?;
        let gone = || not_found("unknown, expired or used ticket");
        let hash = SecretHash::of(body.ticket.secret());
        let mut ticket = self.state.tickets.get(&hash).cloned().ok_or_else(gone)?;
        if ticket.device_id != device.id || ticket.expires <= now {
            return Err(gone());
        }
        if let Some(at) = ticket.redeemed {
            if (now - at).whole_seconds() > TICKET_GRACE_SECS {
                return Err(gone());
            }
        }
        let job = self.state.jobs.get(&ticket.job_id).cloned().ok_or_else(gone)?;
        let answer = TicketRedemption {
            job_id: job.id.clone(),
            device_id: device.id.to_string(),
            file_name: job.file_name,
            pages: job.pages,
        };
        if ticket.redeemed.is_none() {
            ticket.redeemed = Some(now);
            self.put_ticket(ticket);
            self.drop_tickets(|t| t.job_id == job.id && t.hash != hash && t.redeemed.is_none());
        }
        Ok(answer)
    }

    // -------------------------------------------------------------------------------------------------------------
    // Jobs (PROTOCOL.md §9, docs/protocol.md §3.13)
    // -------------------------------------------------------------------------------------------------------------

    /// `GET /api/v1/jobs?state=…` (PROTOCOL.md §9; `roger.release` at the MFP or `roger.app`): the caller's jobs in
    /// that state (default `queued`; an unknown state → `400`), oldest first. Expired queued jobs are left out.
    pub fn list_jobs(&self, now: OffsetDateTime, who: &Principal, state: Option<&str>) -> Result<JobList, ApiFailure> {
        let user = self.calling_user(who, &[scope::RELEASE, scope::APP])?;
        let wanted = parse_state(state)?;
        let mut jobs: Vec<&JobRecord> = self
            .state
            .jobs
            .values()
            .filter(|j| j.user_id == user.id && j.state == wanted)
            .filter(|j| !(j.state == JobState::Queued && j.expires <= now))
            .collect();
        jobs.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(JobList { jobs: jobs.into_iter().map(wire_job).collect() })
    }

    /// `POST /api/v1/jobs` (PROTOCOL.md §9): `{"drive_file_id"}` with `roger.print` (step 2) or `roger.app` — the
    /// file must exist in the user's drive, else `404` — or `{"desktop":{"file_name","pages"}}` with `roger.app`
    /// (the document stays on the desktop, R-DATA-1). The job is queued for the tenant's job lifetime (7 days by
    /// default, PROTOCOL.md §3) and the user's apps get `job.queued {job_id}`. Answer: `201` with the job.
    ///
    /// A drive job's page count is `0`: the drive reports ids, names and sizes only (PROTOCOL.md §9).
    pub fn submit_job(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        body: &SubmitJob,
        drive: &mut dyn DriveLinks,
    ) -> Result<Job, ApiFailure> {
        let (user, file_name, pages, source) = match body {
            SubmitJob::Drive { drive_file_id } => {
                let user = self.calling_user(who, &[scope::PRINT, scope::APP])?;
                let file = drive.file(&user.id, drive_file_id).ok_or_else(|| not_found("no such file in the drive"))?;
                (user, file.name, 0, StoredSource::Drive { drive_file_id: file.id })
            }
            SubmitJob::Desktop { desktop } => {
                let user = self.calling_user(who, &[scope::APP])?;
                let name = desktop.file_name.trim();
                if name.is_empty() || name.chars().count() > MAX_FILE_NAME_LEN || name.chars().any(char::is_control) {
                    return Err(ApiFailure::bad_request("file_name must be 1-255 printable characters"));
                }
                (user, name.to_owned(), desktop.pages, StoredSource::Desktop { installation: who.family.clone() })
            }
        };
        let job = JobRecord {
            id: self.minter.id("job"),
            tenant: user.tenant.clone(),
            user_id: user.id.clone(),
            file_name,
            pages,
            source,
            state: JobState::Queued,
            created: now,
            expires: now + secs(self.settings(&user.tenant).job_secs),
            released_to: None,
            release_keys: Default::default(),
        };
        let wire = wire_job(&job);
        let job_id = job.id.clone();
        self.put_job(job);
        if let Ok(id) = Id::new(job_id) {
            self.push_user(now, &user.id, PushEvent::JobQueued { job_id: id });
        }
        Ok(wire)
    }

    /// `DELETE /api/v1/jobs/{id}` (PROTOCOL.md §9, app token of the owner, `roger.app`): deletes the job and its
    /// outstanding tickets. Unknown or someone else's → `404`.
    ///
    /// (Named `cancel_job` because [`ServerCore`] already has the journalled setter `delete_job`.)
    pub fn cancel_job(&mut self, now: OffsetDateTime, who: &Principal, job_id: &str) -> Result<(), ApiFailure> {
        let user = self.calling_user(who, &[scope::APP])?;
        let job = self.own_job(now, &user, job_id)?;
        self.drop_tickets(|t| t.job_id == job.id);
        self.delete_job(&job.id);
        Ok(())
    }

    /// `POST /api/v1/jobs/{id}/release` (PROTOCOL.md §9, docs/protocol.md §3.13).
    ///
    /// *At the MFP* (user token with `roger.release`; the printer is the token's): `Idempotency-Key` is required
    /// (`400 idempotency-key-required`; malformed → `400`; the same key used for another job → `422
    /// idempotency-key-mismatch`). A drive job answers a fresh pre-authorised URL (the tenant's `drive_url_secs`,
    /// 300 s) and the tenant's default print options; a desktop job answers a fresh one-use ticket bound to job and
    /// printer, and the owner's apps get `job.release_requested {job_id, device_id}`. The job becomes `released`.
    /// Repeating the release with the same key answers equivalently (same job and printer, a fresh URL or ticket).
    ///
    /// *From the phone* (app token, body `{"device_id"}`): the user must have an open session at that printer
    /// (`409 no-session`, docs/protocol.md C4); the printer gets `job.release_requested` and the answer is
    /// [`ReleaseOutcome::Requested`] (`202`).
    ///
    /// Either way: someone else's or unknown job → `404`; a printed job → `409`; a job released to another printer
    /// and not yet printed or failed → `409`. A failed job may be released again.
    pub fn release_job(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        job_id: &str,
        idempotency_key: Option<&str>,
        body: &ReleaseRequest,
        drive: &mut dyn DriveLinks,
    ) -> Result<ReleaseOutcome, ApiFailure> {
        who.require_scope(&[scope::RELEASE, scope::APP])?;
        let at_mfp = match &who.subject {
            Subject::User { device_id: Some(d), .. } if who.has_any_scope(&[scope::RELEASE]) => Some(d.clone()),
            _ => None,
        };
        if let Some(key) = idempotency_key {
            if !is_valid_idempotency_key(key) {
                return Err(ApiFailure::bad_request("Idempotency-Key must be 1-255 visible ASCII characters"));
            }
        }
        match at_mfp {
            Some(device_id) => {
                if body.device_id.as_deref().is_some_and(|d| d != device_id) {
                    return Err(ApiFailure::bad_request("at the printer, device_id is the printer's own or absent"));
                }
                self.release_at_mfp(now, who, job_id, idempotency_key, &device_id, drive)
            }
            None => self.release_from_app(now, who, job_id, body).map(ReleaseOutcome::Requested),
        }
    }

    /// The state rules shared by both kinds of release (PROTOCOL.md §9).
    fn check_releasable(job: &JobRecord, device_id: &str) -> Result<(), ApiFailure> {
        match (job.state, job.released_to.as_deref()) {
            (JobState::Printed, _) => Err(conflict("the job was printed already")),
            (JobState::Released, Some(d)) if d != device_id => {
                Err(conflict("the job is released to another printer and not finished"))
            }
            _ => Ok(()),
        }
    }

    fn release_at_mfp(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        job_id: &str,
        idempotency_key: Option<&str>,
        device_id: &str,
        drive: &mut dyn DriveLinks,
    ) -> Result<ReleaseOutcome, ApiFailure> {
        let user = self.calling_user(who, &[scope::RELEASE])?;
        let Some(key) = idempotency_key else {
            return Err(ApiFailure::new(400, "idempotency-key-required", "Idempotency-Key is required")
                .with_detail("a release at the printer carries an Idempotency-Key header"));
        };
        let mut job = self.own_job(now, &user, job_id)?;
        let reused = self
            .state
            .jobs
            .values()
            .any(|j| j.user_id == user.id && j.id != job.id && j.release_keys.contains_key(key));
        if reused {
            return Err(ApiFailure::new(422, "idempotency-key-mismatch", "Idempotency-Key reused")
                .with_detail("this Idempotency-Key was used for another job"));
        }
        Self::check_releasable(&job, device_id)?;
        let answer = match &job.source {
            StoredSource::Drive { drive_file_id } => {
                let gone = || not_found("the document is no longer in the drive");
                let file = drive.file(&user.id, drive_file_id).ok_or_else(gone)?;
                let expires_at = now + secs(self.settings(&job.tenant).drive_url_secs);
                let url = drive.download_link(now, &user.id, drive_file_id, expires_at).ok_or_else(gone)?;
                let options = self.state.tenants.get(&job.tenant).map(|t| t.print_features.defaults.clone());
                ReleaseAnswer::Drive {
                    document: DocumentLink { url, expires_at: Some(expires_at), size: Some(file.size) },
                    options: options.unwrap_or_default(),
                }
            }
            StoredSource::Desktop { .. } => {
                let desktop = self.mint_ticket(now, &job.tenant, &job.id, device_id);
                if let (Ok(j), Ok(d)) = (Id::new(job.id.clone()), Id::new(device_id)) {
                    self.push_user(now, &user.id, PushEvent::JobReleaseRequested { job_id: j, device_id: d });
                }
                ReleaseAnswer::Desktop { desktop }
            }
        };
        job.state = JobState::Released;
        job.released_to = Some(device_id.to_owned());
        job.release_keys.insert(key.to_owned(), device_id.to_owned());
        self.put_job(job);
        Ok(ReleaseOutcome::Answer(answer))
    }

    fn release_from_app(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        job_id: &str,
        body: &ReleaseRequest,
    ) -> Result<ReleaseRequested, ApiFailure> {
        let user = self.calling_user(who, &[scope::APP])?;
        let Some(device_id) = body.device_id.as_deref() else {
            return Err(ApiFailure::bad_request("a release from the app names the printer: {\"device_id\":…}"));
        };
        let job = self.own_job(now, &user, job_id)?;
        let device = self.tenant_device(&user.tenant, device_id)?;
        Self::check_releasable(&job, &device.id)?;
        if !self.has_session(now, &user.id, &device.id) {
            return Err(ApiFailure::new(409, "no-session", "No open session at that printer")
                .with_detail("log in at the printer first (scan its QR code), then release"));
        }
        if let (Ok(j), Ok(d)) = (Id::new(job.id.clone()), Id::new(device.id.clone())) {
            self.push_device(now, &device.id, PushEvent::JobReleaseRequested { job_id: j, device_id: d });
        }
        Ok(ReleaseRequested { job_id: job.id, device_id: device.id.to_string() })
    }

    /// `POST /api/v1/jobs/{id}/handover` (docs/protocol.md C1, app token of the owner, `roger.app`): for a desktop
    /// job released to a printer, mints a **new** one-use ticket bound to the job and that printer (the server keeps
    /// only ticket hashes, so it cannot repeat the one in the release answer) and returns it with the printer's
    /// `job_url`. No pending release (or not a desktop job, or someone else's) → `404`; the printer has published
    /// no `job_url` → `409`.
    pub fn handover(&mut self, now: OffsetDateTime, who: &Principal, job_id: &str) -> Result<Handover, ApiFailure> {
        let user = self.calling_user(who, &[scope::APP])?;
        let job = self.own_job(now, &user, job_id)?;
        let pending = || not_found("no release of this desktop job is pending");
        if !matches!(job.source, StoredSource::Desktop { .. }) || job.state != JobState::Released {
            return Err(pending());
        }
        let device_id = job.released_to.clone().ok_or_else(pending)?;
        let device = self.tenant_device(&user.tenant, &device_id).map_err(|_| pending())?;
        let job_url = device.job_url.clone().ok_or_else(|| conflict("the printer has published no job_url"))?;
        let DesktopHandover { ticket, expires_at } = self.mint_ticket(now, &job.tenant, &job.id, &device.id);
        Ok(Handover { device_id: device.id.to_string(), job_url: job_url.to_string(), ticket, expires_at })
    }

    /// `POST /api/v1/jobs/{id}/result {"state","pages"}` (PROTOCOL.md §9; as release: `roger.release` or
    /// `roger.app`, the owner). Idempotent: the same result again is accepted. `printed` → the job is printed and
    /// the tenant's after-print rule (delete / move to "Printed" / leave) is applied to a drive job's file through
    /// [`DriveLinks::after_print`]; `failed` → failed. A job that was never released, a contradictory result
    /// (`failed` after `printed` or the reverse), or a report from another printer than the one it was released to
    /// → `409`. Outstanding tickets of the job are voided.
    pub fn report_result(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        job_id: &str,
        result: &JobResult,
        drive: &mut dyn DriveLinks,
    ) -> Result<(), ApiFailure> {
        let user = self.calling_user(who, &[scope::RELEASE, scope::APP])?;
        let mut job = self.own_job(now, &user, job_id)?;
        if let Some(d) = who.device_id() {
            if job.released_to.as_deref().is_some_and(|r| r != d) {
                return Err(conflict("the job was released to another printer"));
            }
        }
        let new_state = match result.state {
            JobOutcome::Printed => JobState::Printed,
            JobOutcome::Failed => JobState::Failed,
        };
        match job.state {
            JobState::Queued => return Err(conflict("the job was not released")),
            s if s == new_state => return Ok(()),
            JobState::Printed | JobState::Failed => return Err(conflict("the job already has another result")),
            JobState::Released => {}
        }
        job.state = new_state;
        let (job_id, tenant, owner, source) =
            (job.id.clone(), job.tenant.clone(), job.user_id.clone(), job.source.clone());
        self.put_job(job);
        self.drop_tickets(|t| t.job_id == job_id && t.redeemed.is_none());
        if let (JobState::Printed, StoredSource::Drive { drive_file_id }) = (new_state, &source) {
            drive.after_print(&owner, drive_file_id, self.settings(&tenant).after_print);
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------------------------------
    // Drive files, print features, scans (user token, step 2; docs/protocol.md §3.15)
    // -------------------------------------------------------------------------------------------------------------

    /// `GET /api/v1/drive/files?folder=Print` (PROTOCOL.md §9, `roger.print`): ids, names and sizes, read from the
    /// drive and not stored. Only the `Print` folder is listed (`400` otherwise).
    pub fn drive_files(
        &self,
        who: &Principal,
        folder: Option<&str>,
        drive: &mut dyn DriveLinks,
    ) -> Result<DriveFileList, ApiFailure> {
        let user = self.calling_user(who, &[scope::PRINT])?;
        if Folder::parse(folder.unwrap_or(PRINT_FOLDER)) != Some(Folder::Print) {
            return Err(ApiFailure::bad_request("only folder=Print is listed"));
        }
        Ok(DriveFileList { files: drive.list(&user.id, Folder::Print) })
    }

    /// `GET /api/v1/print-features` (PROTOCOL.md §9, `roger.print`): the tenant's choices and defaults.
    pub fn print_features(&self, who: &Principal) -> Result<PrintFeatures, ApiFailure> {
        let user = self.calling_user(who, &[scope::PRINT])?;
        Ok(self.state.tenants.get(&user.tenant).map(|t| t.print_features.clone()).unwrap_or_default())
    }

    /// `GET /api/v1/scan-profiles` (PROTOCOL.md §9, `roger.scan`): the tenant's scan profiles.
    pub fn scan_profiles(&self, who: &Principal) -> Result<ScanProfileList, ApiFailure> {
        let user = self.calling_user(who, &[scope::SCAN])?;
        let profiles = self.state.tenants.get(&user.tenant).map(|t| t.scan_profiles.clone()).unwrap_or_default();
        Ok(ScanProfileList { profiles })
    }

    /// `POST /api/v1/scans {"profile_id"}` (PROTOCOL.md §9, `roger.scan`): a resumable upload session into the
    /// user's "Scan" folder, valid for the tenant's `drive_url_secs` (R-DATA-1: the scan goes to the drive, never
    /// through the server). The server records the scan's id, profile and time only — no file name (R-DATA-2).
    /// Unknown profile → `404`. Answer `201`, no-store.
    pub fn create_scan(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        body: &ScanCreate,
        drive: &mut dyn DriveLinks,
    ) -> Result<ScanCreated, ApiFailure> {
        let user = self.calling_user(who, &[scope::SCAN])?;
        let known = self
            .state
            .tenants
            .get(&user.tenant)
            .is_some_and(|t| t.scan_profiles.iter().any(|p| p.id == body.profile_id));
        if !known {
            return Err(not_found("no such scan profile"));
        }
        let expires_at = now + secs(self.settings(&user.tenant).drive_url_secs);
        let url = drive.upload_link(now, &user.id, Folder::Scan, expires_at);
        let id = self.minter.id("scn");
        self.put_scan(ScanRecord {
            id: id.clone(),
            tenant: user.tenant.clone(),
            user_id: user.id.clone(),
            profile_id: body.profile_id.clone(),
            created: now,
            completed: false,
            completed_at: None,
        });
        Ok(ScanCreated { scan_id: id, upload: UploadLink { url, expires_at: Some(expires_at) } })
    }

    /// `POST /api/v1/scans/{id}/complete` (PROTOCOL.md §9, `roger.scan`, the scan's owner; idempotent): records the
    /// completion time — never a file name (R-DATA-2); the technical facts of the body are not kept. Unknown or
    /// someone else's scan → `404`.
    pub fn complete_scan(
        &mut self,
        now: OffsetDateTime,
        who: &Principal,
        scan_id: &str,
        _body: &ScanComplete,
    ) -> Result<(), ApiFailure> {
        let user = self.calling_user(who, &[scope::SCAN])?;
        let mut scan = self
            .state
            .scans
            .get(scan_id)
            .filter(|s| s.user_id == user.id)
            .cloned()
            .ok_or_else(|| not_found("no such scan"))?;
        if !scan.completed {
            scan.completed = true;
            scan.completed_at = Some(now);
            self.put_scan(scan);
        }
        Ok(())
    }

    // -------------------------------------------------------------------------------------------------------------
    // Sessions, devices, personal data (app token, roger.app)
    // -------------------------------------------------------------------------------------------------------------

    /// `POST /api/v1/sessions/end {"device_id"}` (PROTOCOL.md §8 "End", docs/protocol.md §3.12, `roger.app`): revokes
    /// the caller's user tokens at that printer (a tenant admin's call ends every session there) and pushes
    /// `session.ended {device_id}` to it. Idempotent: no open session → `204` without a push. Unknown device or
    /// another tenant's → `404`; only someone else's session open and the caller no admin → `403 forbidden`.
    pub fn end_session(&mut self, now: OffsetDateTime, who: &Principal, body: &SessionEnd) -> Result<(), ApiFailure> {
        let user = self.calling_user(who, &[scope::APP])?;
        let device = self.tenant_device(&user.tenant, &body.device_id)?;
        let open = self.session_users(now, &device.id);
        let mine = open.contains(&user.id);
        if open.is_empty() {
            return Ok(());
        }
        if !mine && !user.admin {
            return Err(forbidden("the open session at that printer is someone else's"));
        }
        let (me, all, d) = (user.id.clone(), user.admin, device.id.clone());
        self.revoke_where(
            |s| matches!(s, Subject::User { user_id, device_id: Some(x) } if *x == d && (all || *user_id == me)),
        );
        if let Ok(id) = Id::new(device.id.clone()) {
            self.push_device(now, &device.id, PushEvent::SessionEnded { device_id: id });
        }
        Ok(())
    }

    /// `DELETE /api/v1/devices/{id}` (PROTOCOL.md §6 R-TOK-4, docs/protocol.md §3.10; app token of a tenant admin):
    /// revokes every token of the printer and of the users at it, voids its tickets and pending codes, puts jobs
    /// released to it back in the queue, deletes it and pushes `device.disconnected {device_id}`. Unknown or another
    /// tenant's → `404`; not an admin → `403 forbidden`.
    pub fn remove_device(&mut self, now: OffsetDateTime, who: &Principal, device_id: &str) -> Result<(), ApiFailure> {
        let user = self.calling_user(who, &[scope::APP])?;
        let device = self.tenant_device(&user.tenant, device_id)?;
        if !user.admin {
            return Err(forbidden("only tenant admins remove printers"));
        }
        let d = device.id.clone();
        self.revoke_where(|s| match s {
            Subject::Device { device_id } => *device_id == d,
            Subject::User { device_id, .. } => device_id.as_deref() == Some(d.as_str()),
        });
        self.drop_tickets(|t| t.device_id == d);
        let codes: Vec<SecretHash> =
            self.state.codes.values().filter(|c| c.device_id.as_deref() == Some(d.as_str())).map(|c| c.hash).collect();
        for h in codes {
            self.delete_code(&h);
        }
        let released: Vec<JobRecord> = self
            .state
            .jobs
            .values()
            .filter(|j| j.state == JobState::Released && j.released_to.as_deref() == Some(d.as_str()))
            .cloned()
            .collect();
        for mut j in released {
            j.state = JobState::Queued;
            j.released_to = None;
            self.put_job(j);
        }
        self.delete_device(&d);
        if let Ok(id) = Id::new(d.clone()) {
            self.push_device(now, &d, PushEvent::DeviceDisconnected { device_id: id });
        }
        Ok(())
    }

    /// `GET /api/v1/me/export` (R-DATA-2, docs/protocol.md §3.16, `roger.app`; no-store): everything the server keeps
    /// about the caller — the profile (user name, display name, e-mail), the jobs with their file names, the scans
    /// with timestamps only. Hashes are never exported.
    pub fn export_me(&self, who: &Principal) -> Result<MeExport, ApiFailure> {
        let user = self.calling_user(who, &[scope::APP])?;
        let mut jobs: Vec<ExportedJob> = self
            .state
            .jobs
            .values()
            .filter(|j| j.user_id == user.id)
            .map(|j| ExportedJob {
                id: j.id.clone(),
                file_name: j.file_name.clone(),
                pages: j.pages,
                source: wire_source(&j.source),
                created: j.created,
            })
            .collect();
        jobs.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let mut scans: Vec<ExportedScan> = self
            .state
            .scans
            .values()
            .filter(|s| s.user_id == user.id)
            .map(|s| ExportedScan { id: s.id.clone(), created: s.created, completed: s.completed_at })
            .collect();
        scans.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(MeExport {
            user: UserProfile {
                id: user.id,
                username: user.username,
                display_name: user.display_name,
                email: user.email,
            },
            jobs,
            scans,
        })
    }

    /// `DELETE /api/v1/me` (R-DATA-2, docs/protocol.md §3.16, `roger.app`): erases the caller. Open sessions end
    /// (`session.ended` to each printer), every token and refresh family of the user is revoked and deleted, and
    /// the user's jobs (with their tickets), scans, authorization codes, the device codes they approved, and the
    /// account itself are deleted. A tenant's last admin may erase themselves too.
    pub fn delete_me(&mut self, now: OffsetDateTime, who: &Principal) -> Result<(), ApiFailure> {
        let user = self.calling_user(who, &[scope::APP])?;
        let me = user.id.clone();
        let mut devices: Vec<String> = self
            .state
            .access
            .values()
            .filter(|a| a.expires > now)
            .filter_map(|a| match &a.subject {
                Subject::User { user_id, device_id: Some(d) } if *user_id == me => Some(d.to_string()),
                _ => None,
            })
            .collect();
        devices.sort();
        devices.dedup();
        self.revoke_where(|s| matches!(s, Subject::User { user_id, .. } if *user_id == me));
        let families: Vec<Name> = self
            .state
            .families
            .values()
            .filter(|f| matches!(&f.subject, Subject::User { user_id, .. } if *user_id == me))
            .map(|f| f.id.clone())
            .collect();
        for f in families {
            self.delete_family(&f);
        }
        let jobs: Vec<String> = self.state.jobs.values().filter(|j| j.user_id == me).map(|j| j.id.clone()).collect();
        for j in jobs {
            self.drop_tickets(|t| t.job_id == j);
            self.delete_job(&j);
        }
        let scans: Vec<String> = self.state.scans.values().filter(|s| s.user_id == me).map(|s| s.id.clone()).collect();
        for s in scans {
            self.delete_scan(&s);
        }
        let auth: Vec<SecretHash> =
            self.state.auth_codes.values().filter(|a| a.user_id == me).map(|a| a.hash).collect();
        for h in auth {
            self.delete_auth_code(&h);
        }
        let codes: Vec<SecretHash> = self
            .state
            .codes
            .values()
            .filter(|c| match &c.state {
                CodeState::Approved { user } => *user == me,
                CodeState::Redeemed(r) => r.user == me,
                CodeState::Pending | CodeState::Denied => false,
            })
            .map(|c| c.hash)
            .collect();
        for h in codes {
            self.delete_code(&h);
        }
        self.delete_user(&me);
        for d in devices {
            if let Ok(id) = Id::new(d.clone()) {
                self.push_device(now, &d, PushEvent::SessionEnded { device_id: id });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::drive::NoDrive;
    use super::super::model::{AccessRecord, Tenant};
    use super::super::settings::AfterPrint;
    use super::super::test_support::{core, t0};
    use super::*;
    use crate::api::{DesktopFile, DriveFile, ScanProfile};
    use crate::push::PushEnvelope;
    use crate::secret::PreAuthorizedUrl;

    fn at(s: i64) -> OffsetDateTime {
        t0() + Duration::seconds(s)
    }

    /// A fake drive: files per user, links minted with a counter, after-print calls recorded.
    #[derive(Default)]
    struct FakeDrive {
        files: HashMap<(String, String), DriveFile>,
        links: u32,
        after: Vec<(String, String, AfterPrint)>,
    }

    impl FakeDrive {
        fn with(user: &str, id: &str, name: &str, size: u64) -> Self {
            let mut d = Self::default();
            d.files.insert((user.into(), id.into()), DriveFile { id: id.into(), name: name.into(), size });
            d
        }
    }

    impl DriveLinks for FakeDrive {
        fn list(&mut self, user_id: &str, _: Folder) -> Vec<DriveFile> {
            self.files.iter().filter(|((u, _), _)| u == user_id).map(|(_, f)| f.clone()).collect()
        }
        fn file(&mut self, user_id: &str, file_id: &str) -> Option<DriveFile> {
            self.files.get(&(user_id.to_owned(), file_id.to_owned())).cloned()
        }
        fn download_link(
            &mut self,
            _: OffsetDateTime,
            u: &str,
            f: &str,
            _: OffsetDateTime,
        ) -> Option<PreAuthorizedUrl> {
            self.files.contains_key(&(u.to_owned(), f.to_owned())).then(|| {
                self.links += 1;
                PreAuthorizedUrl::new(format!("https://drive.test/dl/{f}?sig=SIG{}", self.links))
            })
        }
        fn upload_link(&mut self, _: OffsetDateTime, _: &str, folder: Folder, _: OffsetDateTime) -> PreAuthorizedUrl {
            self.links += 1;
            PreAuthorizedUrl::new(format!("https://drive.test/up/{}?sig=SIG{}", folder.name(), self.links))
        }
        fn after_print(&mut self, user_id: &str, file_id: &str, rule: AfterPrint) {
            self.after.push((user_id.into(), file_id.into(), rule));
        }
    }

    /// Stores a token for `subject` with `scope` and authenticates it, as the front end would.
    fn principal(c: &mut ServerCore, name: &str, client: &str, subject: Subject, scope: &str) -> Principal {
        let plain = format!("tok-{name}");
        c.put_access(
            t0(),
            AccessRecord {
                hash: SecretHash::of(&plain),
                client_id: client.into(),
                tenant: "acme".into(),
                subject,
                scope: scope.into(),
                expires: t0() + Duration::seconds(1200),
                family: Some(format!("fam-{name}").into()),
            },
        );
        c.authenticate(t0(), Some(&format!("Bearer {plain}"))).expect("authenticates")
    }

    fn app(c: &mut ServerCore, user: &str) -> Principal {
        let s = Subject::User { user_id: user.into(), device_id: None };
        principal(c, &format!("app-{user}"), "roger-mobile", s, scope::APP)
    }

    fn mfp_user(c: &mut ServerCore, user: &str, device: &str, scope: &str) -> Principal {
        let s = Subject::User { user_id: user.into(), device_id: Some(device.into()) };
        principal(c, &format!("mfp-{user}-{device}-{}", scope.len()), "emb-acme", s, scope)
    }

    fn device(c: &mut ServerCore, id: &str) -> Principal {
        c.put_device(Device {
            id: id.into(),
            tenant: "acme".into(),
            client_id: "emb-acme".into(),
            model: Some("MX-1".into()),
            serial: Some("SN-1".into()),
            job_url: None,
            created: t0(),
        });
        principal(c, &format!("dev-{id}"), "emb-acme", Subject::Device { device_id: id.into() }, scope::DEVICE)
    }

    fn desktop_job(c: &mut ServerCore, who: &Principal, name: &str) -> Job {
        let body = SubmitJob::Desktop { desktop: DesktopFile { file_name: name.into(), pages: 3 } };
        c.submit_job(t0(), who, &body, &mut NoDrive).expect("submitted")
    }

    fn drive_job(c: &mut ServerCore, who: &Principal, drive: &mut FakeDrive, file: &str) -> Job {
        c.submit_job(t0(), who, &SubmitJob::Drive { drive_file_id: file.into() }, drive).expect("submitted")
    }

    fn release(
        c: &mut ServerCore,
        who: &Principal,
        job: &str,
        key: &str,
        drive: &mut dyn DriveLinks,
    ) -> Result<ReleaseOutcome, ApiFailure> {
        c.release_job(at(10), who, job, Some(key), &ReleaseRequest::default(), drive)
    }

    fn name(f: &ApiFailure) -> &str {
        f.problem.roger_name().unwrap_or("")
    }

    fn events(c: &mut ServerCore) -> Vec<(PushTarget, PushEvent)> {
        c.take_push().into_iter().map(|e: PushEnvelope| (e.target, e.event)).collect()
    }

    fn id(s: &str) -> Id {
        Id::new(s).expect("id")
    }

    fn push_cfg(url: Option<&str>) -> PushConfig {
        PushConfig {
            url: url.map(str::to_owned),
            vhost: "roger".into(),
            username: "test".into(),
            password: BrokerPassword::new("broker-pw"),
            shared_test_account: true,
            ttl_secs: 3600,
            queue_prefix: String::new(),
        }
    }

    /// PROTOCOL.md §10 matrix / RFC 6750 §3.1: a token without the endpoint's scope gets 403 with
    /// `WWW-Authenticate: Bearer … error="insufficient_scope", scope="…"`, for every family of endpoints.
    #[test]
    fn endpoint_matrix_scopes() {
        let mut c = core();
        let dev = device(&mut c, "dev_1");
        let alice_app = app(&mut c, "u-alice");
        let step1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let step2 = mfp_user(&mut c, "u-alice", "dev_1", scope::STEP2);
        let cfg = push_cfg(Some("amqps://bus.test"));
        let check = |r: Result<(), ApiFailure>, needed: &str| {
            let e = r.expect_err("refused");
            assert_eq!((e.status, name(&e)), (403, "insufficient-scope"));
            let www = e.www_authenticate.expect("challenge");
            assert!(
                www.contains(r#"error="insufficient_scope""#) && www.contains(&format!(r#"scope="{needed}""#)),
                "{www}"
            );
        };
        // Device endpoints: roger.device only.
        check(c.get_device(&alice_app).map(drop), "roger.device");
        check(c.device_push_credentials(t0(), &step1, &cfg).map(drop), "roger.device");
        let t = TicketRedeem { ticket: Ticket::new("rtk_x") };
        check(c.redeem_ticket(t0(), &step2, &t).map(drop), "roger.device");
        // App endpoints: roger.app only.
        check(c.export_me(&dev).map(drop), "roger.app");
        check(c.export_me(&step1).map(drop), "roger.app");
        check(c.end_session(t0(), &step2, &SessionEnd { device_id: "dev_1".into() }), "roger.app");
        check(c.remove_device(t0(), &step1, "dev_1"), "roger.app");
        check(c.app_push_credentials(t0(), &dev, "inst1", &cfg).map(drop), "roger.app");
        check(c.cancel_job(t0(), &step1, "job_x"), "roger.app");
        // Jobs: roger.release or roger.app; a step-2-only token or a device token is refused.
        check(c.list_jobs(t0(), &step2, None).map(drop), "roger.release roger.app");
        check(c.list_jobs(t0(), &dev, None).map(drop), "roger.release roger.app");
        let r = ReleaseRequest::default();
        check(c.release_job(t0(), &step2, "job_x", Some("k"), &r, &mut NoDrive).map(drop), "roger.release roger.app");
        // Step 2: roger.print / roger.scan.
        check(c.drive_files(&step1, None, &mut NoDrive).map(drop), "roger.print");
        check(c.print_features(&alice_app).map(drop), "roger.print");
        check(c.scan_profiles(&step1).map(drop), "roger.scan");
        check(
            c.create_scan(t0(), &alice_app, &ScanCreate { profile_id: "p".into() }, &mut NoDrive).map(drop),
            "roger.scan",
        );
        let sub = SubmitJob::Drive { drive_file_id: "f".into() };
        check(c.submit_job(t0(), &step1, &sub, &mut NoDrive).map(drop), "roger.print roger.app");
        let desk = SubmitJob::Desktop { desktop: DesktopFile { file_name: "a.pdf".into(), pages: 1 } };
        check(c.submit_job(t0(), &step2, &desk, &mut NoDrive).map(drop), "roger.app");
        // And the right scopes pass.
        assert!(c.get_device(&dev).is_ok());
        assert!(c.list_jobs(t0(), &step1, None).is_ok());
        assert!(c.list_jobs(t0(), &alice_app, Some("printed")).is_ok());
        assert_eq!(c.list_jobs(t0(), &alice_app, Some("lost")).unwrap_err().status, 400, "unknown state → 400");
        assert!(c.print_features(&step2).is_ok() && c.scan_profiles(&step2).is_ok());
    }

    /// docs/protocol.md §3.10 / R-DISC-2: `PUT /api/v1/device` takes an https `job_url` (or loopback http), else 400.
    #[test]
    fn device_job_url_must_be_tls() {
        let mut c = core();
        let dev = device(&mut c, "dev_1");
        let put =
            |c: &mut ServerCore, u: Option<&str>| c.update_device(&dev, &DeviceUpdate { job_url: u.map(Into::into) });
        assert_eq!(
            put(&mut c, Some("https://10.0.0.42:8443/roger/jobs")).unwrap().job_url.as_deref(),
            Some("https://10.0.0.42:8443/roger/jobs")
        );
        assert!(put(&mut c, Some("http://127.0.0.1:9000/jobs")).is_ok(), "loopback tests");
        let e = put(&mut c, Some("http://10.0.0.42/jobs")).unwrap_err();
        assert_eq!((e.status, name(&e)), (400, "invalid-request"));
        assert_eq!(put(&mut c, Some("not a url")).unwrap_err().status, 400);
        let cfg = put(&mut c, None).unwrap();
        assert_eq!((cfg.job_url, cfg.vendor.as_deref(), cfg.model.as_deref()), (None, Some("acme"), Some("MX-1")));
        assert_eq!(c.get_device(&dev).unwrap().device_id, "dev_1");
    }

    /// PROTOCOL.md §11, docs/protocol.md C2/§4.2: push credentials name the principal's queue; no broker → 404
    /// `push-unavailable`; a malformed installation id → 400.
    #[test]
    fn push_credentials() {
        let mut c = core();
        let dev = device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let cfg = push_cfg(Some("amqp://127.0.0.1:5672"));
        let d = c.device_push_credentials(t0(), &dev, &cfg).unwrap();
        assert_eq!((d.queue.as_str(), d.expires_at, d.shared_test_account), ("roger.device.dev_1", at(3600), true));
        let a = c.app_push_credentials(t0(), &alice, "inst-7", &cfg).unwrap();
        assert_eq!(a.queue, "roger.app.inst-7");
        assert_eq!(c.app_push_credentials(t0(), &alice, "a.b", &cfg).unwrap_err().status, 400, "no dot (routing word)");
        assert_eq!(c.app_push_credentials(t0(), &alice, &"x".repeat(33), &cfg).unwrap_err().status, 400);
        let e = c.device_push_credentials(t0(), &dev, &push_cfg(None)).unwrap_err();
        assert_eq!((e.status, name(&e)), (404, "push-unavailable"));
        assert!(!format!("{cfg:?}").contains("broker-pw"), "R-SEC-1: Debug redacts the broker password");
        // A name prefix (a test run sharing the broker) is part of the queue handed out.
        let prefixed = PushConfig { queue_prefix: "t-1.".into(), ..cfg };
        assert_eq!(c.device_push_credentials(t0(), &dev, &prefixed).unwrap().queue, "t-1.roger.device.dev_1");
        assert_eq!(c.app_push_credentials(t0(), &alice, "inst-7", &prefixed).unwrap().queue, "t-1.roger.app.inst-7");
    }

    /// PROTOCOL.md §9 / draft-ietf-httpapi-idempotency-key-header: repeating a release with the same key answers
    /// equivalently (same job and printer, a fresh URL); no key → 400; the key used for another job → 422.
    #[test]
    fn idempotent_release() {
        let mut c = core();
        device(&mut c, "dev_1");
        let mut drive = FakeDrive::with("u-alice", "f1", "report.pdf", 4242);
        drive
            .files
            .insert(("u-alice".into(), "f2".into()), DriveFile { id: "f2".into(), name: "b.pdf".into(), size: 1 });
        let alice = app(&mut c, "u-alice");
        let job = drive_job(&mut c, &alice, &mut drive, "f1");
        let job2 = drive_job(&mut c, &alice, &mut drive, "f2");
        let step1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let first = release(&mut c, &step1, &job.id, "key-1", &mut drive).unwrap();
        let again = release(&mut c, &step1, &job.id, "key-1", &mut drive).unwrap();
        let (
            ReleaseOutcome::Answer(ReleaseAnswer::Drive { document: d1, .. }),
            ReleaseOutcome::Answer(ReleaseAnswer::Drive { document: d2, .. }),
        ) = (&first, &again)
        else {
            panic!("drive answers: {first:?} {again:?}");
        };
        assert_eq!((d1.size, d1.expires_at), (Some(4242), Some(at(10 + 300))), "300 s URL (PROTOCOL.md §9)");
        assert_eq!((d2.size, d2.expires_at), (d1.size, d1.expires_at));
        assert_ne!(d1.url, d2.url, "a fresh URL is an equivalent answer");
        let j = &c.state().jobs[&job.id];
        assert_eq!((j.state, j.released_to.as_deref()), (JobState::Released, Some("dev_1")));
        assert_eq!(j.release_keys.get("key-1").map(String::as_str), Some("dev_1"));
        let e = c.release_job(at(11), &step1, &job.id, None, &ReleaseRequest::default(), &mut drive).unwrap_err();
        assert_eq!((e.status, name(&e)), (400, "idempotency-key-required"));
        let e = release(&mut c, &step1, &job2.id, "key-1", &mut drive).unwrap_err();
        assert_eq!((e.status, name(&e)), (422, "idempotency-key-mismatch"));
        assert_eq!(release(&mut c, &step1, &job2.id, "bad key", &mut drive).unwrap_err().status, 400);
        assert!(!serde_json::to_string(c.state()).unwrap().contains("sig=SIG"), "R-DATA-2: no URL is kept");
    }

    /// PROTOCOL.md §9: releasing a printed job → 409; a job released to printer A cannot go to printer B while
    /// unfinished → 409; a failed job may be released again.
    #[test]
    fn printed_job_conflicts() {
        let mut c = core();
        device(&mut c, "dev_a");
        device(&mut c, "dev_b");
        let mut drive = FakeDrive::with("u-alice", "f1", "a.pdf", 1);
        let alice = app(&mut c, "u-alice");
        let job = drive_job(&mut c, &alice, &mut drive, "f1");
        let at_a = mfp_user(&mut c, "u-alice", "dev_a", scope::RELEASE);
        let at_b = mfp_user(&mut c, "u-alice", "dev_b", scope::RELEASE);
        release(&mut c, &at_a, &job.id, "k1", &mut drive).unwrap();
        let e = release(&mut c, &at_b, &job.id, "k2", &mut drive).unwrap_err();
        assert_eq!((e.status, name(&e)), (409, "conflict"));
        let printed = JobResult { state: JobOutcome::Printed, pages: 1 };
        assert_eq!(
            c.report_result(at(20), &at_b, &job.id, &printed, &mut drive).unwrap_err().status,
            409,
            "wrong printer"
        );
        c.report_result(at(20), &at_a, &job.id, &printed, &mut drive).unwrap();
        let e = release(&mut c, &at_a, &job.id, "k3", &mut drive).unwrap_err();
        assert_eq!((e.status, name(&e)), (409, "conflict"));
        let e = c.release_job(
            at(30),
            &alice,
            &job.id,
            None,
            &ReleaseRequest { device_id: Some("dev_a".into()) },
            &mut drive,
        );
        assert_eq!(e.unwrap_err().status, 409, "the phone gets the same answer");
        // A failed job may be released again, elsewhere.
        let job2 = drive_job(&mut c, &alice, &mut drive, "f1");
        release(&mut c, &at_a, &job2.id, "k4", &mut drive).unwrap();
        c.report_result(at(40), &at_a, &job2.id, &JobResult { state: JobOutcome::Failed, pages: 0 }, &mut drive)
            .unwrap();
        assert!(release(&mut c, &at_b, &job2.id, "k5", &mut drive).is_ok());
    }

    /// PROTOCOL.md §9: someone else's job is not found (404) for release, result, delete and hand-over.
    #[test]
    fn other_users_job_is_not_found() {
        let mut c = core();
        device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let bob = app(&mut c, "u-bob");
        let job = desktop_job(&mut c, &alice, "secret-plans.pdf");
        let bob_mfp = mfp_user(&mut c, "u-bob", "dev_1", scope::RELEASE);
        let e = release(&mut c, &bob_mfp, &job.id, "k", &mut NoDrive).unwrap_err();
        assert_eq!((e.status, name(&e)), (404, "not-found"));
        let r = JobResult { state: JobOutcome::Printed, pages: 1 };
        assert_eq!(c.report_result(at(1), &bob_mfp, &job.id, &r, &mut NoDrive).unwrap_err().status, 404);
        assert_eq!(c.cancel_job(at(1), &bob, &job.id).unwrap_err().status, 404);
        assert_eq!(c.handover(at(1), &bob, &job.id).unwrap_err().status, 404);
        assert!(c.list_jobs(at(1), &bob, None).unwrap().jobs.is_empty());
        assert_eq!(c.list_jobs(at(1), &alice, None).unwrap().jobs.len(), 1);
        c.cancel_job(at(2), &alice, &job.id).unwrap();
        assert!(c.state().jobs.is_empty());
        assert_eq!(c.cancel_job(at(3), &alice, &job.id).unwrap_err().status, 404, "unknown → 404");
    }

    /// PROTOCOL.md §9 desktop hand-over, docs/protocol.md C1 and C6: the release answers a ticket and pushes
    /// `job.release_requested` to the owner; the ticket is one-use, bound to job and device (another device → 404),
    /// repeatable by the same device within 30 s, then 404; `POST …/handover` mints a new ticket with the `job_url`.
    #[test]
    fn ticket_one_use_and_bound_to_device() {
        let mut c = core();
        let dev1 = device(&mut c, "dev_1");
        let dev2 = device(&mut c, "dev_2");
        c.update_device(&dev1, &DeviceUpdate { job_url: Some("https://10.0.0.42:8443/roger/jobs".into()) }).unwrap();
        let alice = app(&mut c, "u-alice");
        let job = desktop_job(&mut c, &alice, "memo.docx");
        assert_eq!(
            events(&mut c),
            vec![(PushTarget::User(id("u-alice")), PushEvent::JobQueued { job_id: id(&job.id) })]
        );
        assert_eq!(c.handover(at(1), &alice, &job.id).unwrap_err().status, 404, "no release pending");
        let step1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let ReleaseOutcome::Answer(ReleaseAnswer::Desktop { desktop }) =
            release(&mut c, &step1, &job.id, "k", &mut NoDrive).unwrap()
        else {
            panic!("desktop answer")
        };
        assert_eq!(desktop.expires_at, at(10 + 300));
        assert_eq!(
            events(&mut c),
            vec![(
                PushTarget::User(id("u-alice")),
                PushEvent::JobReleaseRequested { job_id: id(&job.id), device_id: id("dev_1") }
            )]
        );
        let h = c.handover(at(12), &alice, &job.id).unwrap();
        assert_eq!((h.device_id.as_str(), h.job_url.as_str()), ("dev_1", "https://10.0.0.42:8443/roger/jobs"));
        assert_ne!(h.ticket, desktop.ticket, "a new ticket: only hashes are stored");
        let redeem = |c: &mut ServerCore, who: &Principal, t: &Ticket, s: i64| {
            c.redeem_ticket(at(s), who, &TicketRedeem { ticket: t.clone() })
        };
        let e = redeem(&mut c, &dev2, &h.ticket, 13).unwrap_err();
        assert_eq!((e.status, name(&e)), (404, "not-found"), "bound to the device");
        let ok = redeem(&mut c, &dev1, &h.ticket, 14).unwrap();
        assert_eq!(
            (ok.job_id.as_str(), ok.device_id.as_str(), ok.file_name.as_str(), ok.pages),
            (job.id.as_str(), "dev_1", "memo.docx", 3)
        );
        assert_eq!(redeem(&mut c, &dev1, &h.ticket, 40).unwrap(), ok, "C6: the same answer within 30 s");
        assert_eq!(redeem(&mut c, &dev1, &h.ticket, 45).unwrap_err().status, 404, "one use");
        assert_eq!(
            redeem(&mut c, &dev1, &desktop.ticket, 15).unwrap_err().status,
            404,
            "the redemption voided the job's other tickets"
        );
        assert_eq!(redeem(&mut c, &dev1, &Ticket::new("rtk_forged"), 15).unwrap_err().status, 404);
        // Expiry.
        let h2 = c.handover(at(50), &alice, &job.id).unwrap();
        assert_eq!(redeem(&mut c, &dev1, &h2.ticket, 50 + 300).unwrap_err().status, 404, "expired");
        let stored = serde_json::to_string(c.state()).unwrap();
        for t in [&desktop.ticket, &h.ticket, &h2.ticket] {
            assert!(!stored.contains(t.secret()), "R-DATA-2: tickets are stored by hash only");
        }
    }

    /// PROTOCOL.md §9: `printed` applies the tenant's after-print rule to the drive file (once: the result is
    /// idempotent); a contradictory result → 409; a result before any release → 409.
    #[test]
    fn after_print_rule_applied() {
        let mut c = core();
        device(&mut c, "dev_1");
        let mut t = c.state().tenants["acme"].clone();
        t.settings.after_print = AfterPrint::Delete;
        c.put_tenant(t);
        let mut drive = FakeDrive::with("u-alice", "f1", "a.pdf", 10);
        let alice = app(&mut c, "u-alice");
        let job = drive_job(&mut c, &alice, &mut drive, "f1");
        let step1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let printed = JobResult { state: JobOutcome::Printed, pages: 1 };
        let failed = JobResult { state: JobOutcome::Failed, pages: 0 };
        assert_eq!(
            c.report_result(at(5), &step1, &job.id, &printed, &mut drive).unwrap_err().status,
            409,
            "not released"
        );
        release(&mut c, &step1, &job.id, "k", &mut drive).unwrap();
        c.report_result(at(20), &step1, &job.id, &printed, &mut drive).unwrap();
        c.report_result(at(21), &step1, &job.id, &printed, &mut drive).unwrap();
        assert_eq!(drive.after, vec![("u-alice".to_owned(), "f1".to_owned(), AfterPrint::Delete)], "applied once");
        assert_eq!(c.state().jobs[&job.id].state, JobState::Printed);
        let e = c.report_result(at(22), &step1, &job.id, &failed, &mut drive).unwrap_err();
        assert_eq!((e.status, name(&e)), (409, "conflict"));
        // A desktop job has no drive file: no rule.
        let desk = desktop_job(&mut c, &alice, "d.pdf");
        release(&mut c, &step1, &desk.id, "k2", &mut NoDrive).unwrap();
        c.report_result(at(30), &step1, &desk.id, &printed, &mut drive).unwrap();
        assert_eq!(drive.after.len(), 1);
    }

    /// PROTOCOL.md §9: a drive job needs the file in the user's own drive (else 404); the job is pushed as
    /// `job.queued` and listed for the MFP user token.
    #[test]
    fn submit_drive_job() {
        let mut c = core();
        device(&mut c, "dev_1");
        let mut drive = FakeDrive::with("u-alice", "f1", "report.pdf", 10);
        let step2 = mfp_user(&mut c, "u-alice", "dev_1", scope::STEP2);
        let bob2 = mfp_user(&mut c, "u-bob", "dev_1", scope::STEP2);
        let files = c.drive_files(&step2, Some("print"), &mut drive).unwrap();
        assert_eq!(files.files.len(), 1);
        assert_eq!(c.drive_files(&step2, Some("Scan"), &mut drive).unwrap_err().status, 400, "only Print");
        let sub = SubmitJob::Drive { drive_file_id: "f1".into() };
        assert_eq!(c.submit_job(t0(), &bob2, &sub, &mut drive).unwrap_err().status, 404, "not in bob's drive");
        let job = c.submit_job(t0(), &step2, &sub, &mut drive).unwrap();
        assert_eq!(
            (job.file_name.as_str(), job.source, job.expires),
            ("report.pdf", WireSource::Drive, Some(at(7 * 24 * 3600)))
        );
        assert_eq!(
            events(&mut c),
            vec![(PushTarget::User(id("u-alice")), PushEvent::JobQueued { job_id: id(&job.id) })]
        );
        let step1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        assert_eq!(c.list_jobs(at(1), &step1, None).unwrap().jobs, vec![job]);
    }

    /// PROTOCOL.md §3 (queued job 7 days) and §9: a queued job expires; `sweep` removes it, and it is gone from the
    /// list and from release even before the sweep.
    #[test]
    fn job_expiry_via_sweep() {
        let mut c = core();
        device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let job = desktop_job(&mut c, &alice, "old.pdf");
        let week = 7 * 24 * 3600;
        c.sweep(at(week - 1));
        assert!(c.state().jobs.contains_key(&job.id));
        assert!(c.list_jobs(at(week), &alice, None).unwrap().jobs.is_empty(), "expired before the sweep");
        c.sweep(at(week));
        assert!(!c.state().jobs.contains_key(&job.id), "swept");
        assert!(
            c.take_changes()
                .iter()
                .any(|ch| ch.table == super::super::Table::Jobs && ch.key == job.id && ch.value.is_none()),
            "journalled"
        );
    }

    /// docs/protocol.md C4: a phone release needs the user's open session at that printer (409 `no-session`);
    /// with one, the printer gets `job.release_requested {job_id, device_id}` and the answer is 202-like.
    #[test]
    fn phone_release_requires_session() {
        let mut c = core();
        device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let job = desktop_job(&mut c, &alice, "a.pdf");
        c.take_push();
        let body = ReleaseRequest { device_id: Some("dev_1".into()) };
        let e = c.release_job(at(1), &alice, &job.id, None, &body, &mut NoDrive).unwrap_err();
        assert_eq!((e.status, name(&e)), (409, "no-session"));
        mfp_user(&mut c, "u-bob", "dev_1", scope::RELEASE);
        let e = c.release_job(at(1), &alice, &job.id, None, &body, &mut NoDrive).unwrap_err();
        assert_eq!(name(&e), "no-session", "someone else's session does not count");
        mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let out = c.release_job(at(2), &alice, &job.id, None, &body, &mut NoDrive).unwrap();
        assert_eq!(
            out,
            ReleaseOutcome::Requested(ReleaseRequested { job_id: job.id.clone(), device_id: "dev_1".into() })
        );
        assert_eq!(
            events(&mut c),
            vec![(
                PushTarget::Device(id("dev_1")),
                PushEvent::JobReleaseRequested { job_id: id(&job.id), device_id: id("dev_1") }
            )]
        );
        assert_eq!(c.state().jobs[&job.id].state, JobState::Queued, "the printer releases with its own token");
        let unknown = ReleaseRequest { device_id: Some("dev_9".into()) };
        assert_eq!(c.release_job(at(3), &alice, &job.id, None, &unknown, &mut NoDrive).unwrap_err().status, 404);
        let none = ReleaseRequest::default();
        assert_eq!(c.release_job(at(3), &alice, &job.id, None, &none, &mut NoDrive).unwrap_err().status, 400);
        // The session ends when its token expires.
        assert_eq!(c.release_job(at(1200), &alice, &job.id, None, &body, &mut NoDrive).unwrap_err().status, 409);
    }

    /// PROTOCOL.md §8 "End", docs/protocol.md §3.12: the user ends their session: their tokens at that printer are
    /// revoked and the printer gets `session.ended`; idempotent; someone else's session → 403 unless admin;
    /// unknown device → 404.
    #[test]
    fn end_session_revokes_and_pushes() {
        let mut c = core();
        device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let bob = app(&mut c, "u-bob");
        let admin = app(&mut c, "u-admin");
        let s1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let s2 = mfp_user(&mut c, "u-alice", "dev_1", scope::STEP2);
        c.take_push();
        let end = SessionEnd { device_id: "dev_1".into() };
        assert_eq!(c.end_session(at(1), &alice, &SessionEnd { device_id: "dev_9".into() }).unwrap_err().status, 404);
        let e = c.end_session(at(1), &bob, &end).unwrap_err();
        assert_eq!((e.status, name(&e)), (403, "forbidden"));
        c.end_session(at(2), &alice, &end).unwrap();
        for t in [&s1, &s2] {
            assert!(!c.state().access.contains_key(&t.token), "revoked");
        }
        assert!(c.state().access.contains_key(&alice.token), "the app token stays");
        assert_eq!(
            events(&mut c),
            vec![(PushTarget::Device(id("dev_1")), PushEvent::SessionEnded { device_id: id("dev_1") })]
        );
        c.end_session(at(3), &alice, &end).unwrap();
        assert!(events(&mut c).is_empty(), "idempotent: nothing open, nothing pushed");
        let b = mfp_user(&mut c, "u-bob", "dev_1", scope::RELEASE);
        c.end_session(at(4), &admin, &end).unwrap();
        assert!(!c.state().access.contains_key(&b.token), "an admin ends anyone's session");
    }

    /// PROTOCOL.md §6 R-TOK-4, docs/protocol.md §3.10: an admin removes a printer: its tokens and its users'
    /// tokens are revoked, the device is gone, `device.disconnected` is pushed; non-admin → 403; unknown → 404.
    #[test]
    fn remove_device_revokes_and_pushes() {
        let mut c = core();
        let dev = device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let admin = app(&mut c, "u-admin");
        let step1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let job = desktop_job(&mut c, &alice, "a.pdf");
        release(&mut c, &step1, &job.id, "k", &mut NoDrive).unwrap();
        c.take_push();
        let e = c.remove_device(at(20), &alice, "dev_1").unwrap_err();
        assert_eq!((e.status, name(&e)), (403, "forbidden"));
        assert_eq!(c.remove_device(at(20), &admin, "dev_9").unwrap_err().status, 404);
        c.remove_device(at(21), &admin, "dev_1").unwrap();
        assert!(!c.state().devices.contains_key("dev_1"));
        assert!(!c.state().access.contains_key(&dev.token) && !c.state().access.contains_key(&step1.token));
        assert!(c.authenticate(at(22), Some("Bearer tok-dev-dev_1")).is_err());
        assert!(c.state().tickets.is_empty(), "its tickets are void");
        let j = &c.state().jobs[&job.id];
        assert_eq!((j.state, j.released_to.as_deref()), (JobState::Queued, None), "back in the queue");
        assert_eq!(
            events(&mut c),
            vec![(PushTarget::Device(id("dev_1")), PushEvent::DeviceDisconnected { device_id: id("dev_1") })]
        );
        assert_eq!(c.remove_device(at(23), &admin, "dev_1").unwrap_err().status, 404, "gone");
    }

    /// R-DATA-2 / docs/protocol.md §3.15–3.16: scans keep timestamps only; the export holds the profile, job file
    /// names and scan timestamps; neither the stored state nor the export contains a PIN, password, ticket, URL or
    /// scan file name.
    #[test]
    fn export_contains_only_r_data_2_fields() {
        let mut c = core();
        const PIN: &str = "86420975";
        let mut u = c.state().users["u-alice"].clone();
        let cost = c.settings("acme").argon2;
        u.pin_hash = Some(c.hash_secret(PIN, cost));
        c.put_user(u);
        let mut t: Tenant = c.state().tenants["acme"].clone();
        t.scan_profiles.push(ScanProfile {
            id: "pdf300".into(),
            name: "PDF".into(),
            format: None,
            dpi: None,
            color: None,
            duplex: None,
        });
        c.put_tenant(t);
        device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let step2 = mfp_user(&mut c, "u-alice", "dev_1", scope::PIN_LOGIN);
        let mut drive = FakeDrive::with("u-alice", "f1", "Quarterly report.pdf", 10);
        let job = drive_job(&mut c, &alice, &mut drive, "f1");
        let desk = desktop_job(&mut c, &alice, "memo.docx");
        let ReleaseOutcome::Answer(ReleaseAnswer::Drive { document, .. }) =
            release(&mut c, &step2, &job.id, "k", &mut drive).unwrap()
        else {
            panic!("drive")
        };
        let ReleaseOutcome::Answer(ReleaseAnswer::Desktop { desktop }) =
            release(&mut c, &step2, &desk.id, "k2", &mut drive).unwrap()
        else {
            panic!("desktop")
        };
        assert_eq!(
            c.create_scan(at(20), &step2, &ScanCreate { profile_id: "nope".into() }, &mut drive).unwrap_err().status,
            404
        );
        let scan = c.create_scan(at(20), &step2, &ScanCreate { profile_id: "pdf300".into() }, &mut drive).unwrap();
        assert_eq!(scan.upload.expires_at, Some(at(20 + 300)));
        c.complete_scan(at(30), &step2, &scan.scan_id, &ScanComplete { size: Some(5), pages: Some(1) }).unwrap();
        c.complete_scan(at(31), &step2, &scan.scan_id, &ScanComplete::default()).unwrap();
        let bob2 = mfp_user(&mut c, "u-bob", "dev_1", scope::STEP2);
        assert_eq!(c.complete_scan(at(32), &bob2, &scan.scan_id, &ScanComplete::default()).unwrap_err().status, 404);

        let export = c.export_me(&alice).unwrap();
        assert_eq!(export.user.username, "alice");
        assert_eq!(export.user.email.as_deref(), Some("alice@acme.example"));
        let mut names: Vec<&str> = export.jobs.iter().map(|j| j.file_name.as_str()).collect();
        names.sort();
        assert_eq!(names, ["Quarterly report.pdf", "memo.docx"]);
        assert_eq!(export.scans.len(), 1);
        assert_eq!(
            (export.scans[0].created, export.scans[0].completed),
            (at(20), Some(at(30))),
            "the first completion time"
        );
        let exported = serde_json::to_string(&export).unwrap();
        assert!(!exported.contains("argon2") && !exported.contains("hash"), "hashes are never exported");
        let stored = serde_json::to_string(c.state()).unwrap();
        for (what, secret) in [
            ("PIN", PIN),
            ("password", "alice-pass"),
            ("ticket", desktop.ticket.secret()),
            ("drive URL", document.url.secret()),
            ("upload URL", scan.upload.url.secret()),
            ("URL signature", "sig=SIG"),
        ] {
            assert!(!stored.contains(secret), "the state holds the {what}");
            assert!(!exported.contains(secret), "the export holds the {what}");
        }
        let scan_json = serde_json::to_value(&c.state().scans[&scan.scan_id]).unwrap();
        let keys: Vec<&String> = scan_json.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["completed", "completed_at", "created", "id", "profile_id", "tenant", "user_id"],
            "no file name"
        );
    }

    /// R-DATA-2 `DELETE /api/v1/me`: the user, their jobs, tickets, scans, tokens and families are erased; open
    /// sessions end with `session.ended`.
    #[test]
    fn delete_me_erases_everything() {
        let mut c = core();
        device(&mut c, "dev_1");
        let alice = app(&mut c, "u-alice");
        let bob = app(&mut c, "u-bob");
        let step1 = mfp_user(&mut c, "u-alice", "dev_1", scope::RELEASE);
        let job = desktop_job(&mut c, &alice, "a.pdf");
        desktop_job(&mut c, &bob, "b.pdf");
        release(&mut c, &step1, &job.id, "k", &mut NoDrive).unwrap();
        c.put_family(super::super::model::RefreshFamily {
            id: "fam-app-u-alice".into(),
            client_id: "roger-mobile".into(),
            tenant: "acme".into(),
            subject: Subject::User { user_id: "u-alice".into(), device_id: None },
            scope: scope::APP.into(),
            handle: SecretHash::of("alice-family-handle0"),
            current: SecretHash::of("rrt_alice"),
            previous: None,
            previous_until: None,
            expires: at(90 * 24 * 3600),
            revoked: false,
        });
        c.take_push();
        c.delete_me(at(20), &alice).unwrap();
        let s = c.state();
        assert!(!s.users.contains_key("u-alice"));
        assert!(s.jobs.values().all(|j| j.user_id != "u-alice") && s.jobs.len() == 1, "bob's job stays");
        assert!(s.tickets.is_empty() && s.families.is_empty());
        assert!(s
            .access
            .values()
            .all(|a| !matches!(&a.subject, Subject::User { user_id, .. } if user_id == "u-alice")));
        assert!(!c.refresh_index.contains_key(&SecretHash::of("alice-family-handle0")));
        assert_eq!(
            events(&mut c),
            vec![(PushTarget::Device(id("dev_1")), PushEvent::SessionEnded { device_id: id("dev_1") })]
        );
        assert!(c.authenticate(at(21), Some("Bearer tok-app-u-alice")).is_err());
        assert!(c.export_me(&bob).is_ok());
        assert!(serde_json::to_string(c.state()).unwrap().find("u-alice").is_none(), "nothing of alice is left");
    }

    /// PROTOCOL.md §9: print features come from the tenant record.
    #[test]
    fn print_features_from_tenant() {
        let mut c = core();
        let mut t = c.state().tenants["acme"].clone();
        t.print_features.paper_sizes = vec!["A4".into()];
        t.print_features.defaults.copies = Some(1);
        c.put_tenant(t);
        device(&mut c, "dev_1");
        let step2 = mfp_user(&mut c, "u-alice", "dev_1", scope::STEP2);
        let f = c.print_features(&step2).unwrap();
        assert_eq!((f.paper_sizes, f.defaults.copies), (vec!["A4".to_owned()], Some(1)));
        assert!(c.scan_profiles(&step2).unwrap().profiles.is_empty());
    }
}
