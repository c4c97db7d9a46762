//! A fake drive: the subset of Microsoft Graph (OneDrive for Business) that Roger needs, on **its own listener**
//! (PROTOCOL.md §1 and §9, R-DATA-1: document bytes go between the drive and the MFP, never through the API
//! listener).
//!
//! Two faces share one [`Drive`] handle:
//!
//! * the server core calls it through [`DriveLinks`] (metadata and pre-authorised links only: ids, names, sizes,
//!   URLs; never bytes);
//! * the MFP talks to [`router`] over HTTP: `GET /dl/{token}` downloads a document, `PUT /upload/{token}` uploads a
//!   scan with `Content-Range` chunks (Graph's resumable upload session), `GET /upload/{token}` asks which ranges
//!   the session still expects, `DELETE /upload/{token}` cancels it.
//!
//! Link tokens are 256-bit random `rdu_…` secrets ([`SecretKind::DriveUrl`]) stored only as SHA-256 hashes
//! (PROTOCOL.md §6 "tokens are stored only as SHA-256 hashes" applied to drive links; R-SEC-1: whoever holds the
//! URL can read or write the document). Links expire by the same clock the server uses ([`NowFn`]): the core passes
//! `now` into [`DriveLinks`] calls, and the HTTP side reads the clock given to [`Drive::new`].
//!
//! The name of an uploaded scan is chosen here (`scan-<timestamp>.pdf`); the server never learns it (R-DATA-2).
//! Errors are Graph-shaped JSON, `{"error":{"code","message"}}`, and bad input never panics or yields a 5xx
//! (PROTOCOL.md §10).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use roger_proto::api::DriveFile;
use roger_proto::secret::PreAuthorizedUrl;
use roger_proto::server::drive::{DriveLinks, Folder};
use roger_proto::server::mint::{Minter, SecretHash, SecretKind};
use roger_proto::server::settings::AfterPrint;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

/// The clock the drive reads on its HTTP side to decide whether a link has expired. The server hands in its own
/// clock (system or virtual, DESIGN.md "Clock"), so a link minted with the core's `now` expires by the same time
/// line even after `/sim/clock/advance`.
pub type NowFn = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The system clock as a [`NowFn`] (for tools and tests that have no virtual clock).
pub fn system_clock() -> NowFn {
    Arc::new(OffsetDateTime::now_utc)
}

/// Largest file an upload session accepts (`TOTAL` of `Content-Range`): 64 MiB. Larger totals get `413`.
pub const MAX_UPLOAD_BYTES: u64 = 64 * 1024 * 1024;

/// Largest request body (one upload chunk): 8 MiB. Larger bodies get `413`. Graph recommends chunks that are
/// multiples of 320 KiB and below 60 MiB; a smaller cap keeps the simulator's memory bounded.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// The origin of links minted before [`Drive::set_base_url`] is called (`.invalid` never resolves, RFC 6761 §6.4).
pub const PLACEHOLDER_BASE_URL: &str = "https://drive.invalid";

/// How long after expiry a link is still recognised (answered `410 Gone`) before it is forgotten (then `404`).
const EXPIRED_MEMORY: Duration = Duration::days(1);

// ---------------------------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------------------------

/// One stored document.
#[derive(Debug, Clone)]
struct StoredFile {
    name: String,
    folder: Folder,
    bytes: Bytes,
    /// Insertion order, so listings are stable.
    seq: u64,
}

impl StoredFile {
    fn meta(&self, id: &str) -> DriveFile {
        DriveFile { id: id.to_owned(), name: self.name.clone(), size: self.bytes.len() as u64 }
    }
}

/// One user's drive: the folders created so far and the files by id.
#[derive(Debug, Default)]
struct UserDrive {
    /// Folders in creation order (whitepaper: Roger creates "Print" and "Scan" if they do not exist).
    folders: Vec<Folder>,
    files: HashMap<String, StoredFile>,
}

impl UserDrive {
    fn ensure_folder(&mut self, folder: Folder) {
        if !self.folders.contains(&folder) {
            self.folders.push(folder);
        }
    }

    fn name_taken(&self, folder: Folder, name: &str) -> bool {
        self.files.values().any(|f| f.folder == folder && f.name == name)
    }
}

/// A pre-authorised download link (stored under the hash of its token).
#[derive(Debug, Clone)]
struct DownloadLink {
    user_id: String,
    file_id: String,
    expires: OffsetDateTime,
}

/// A resumable upload session (Graph `createUploadSession`), stored under the hash of its token.
#[derive(Debug)]
struct UploadSession {
    user_id: String,
    folder: Folder,
    expires: OffsetDateTime,
    /// The file's total size, fixed by the first chunk.
    total: Option<u64>,
    /// The bytes received so far, in order.
    data: Vec<u8>,
    /// The created file, once the last byte arrived.
    done: Option<DriveFile>,
}

struct Inner {
    base_url: String,
    minter: Minter,
    users: HashMap<String, UserDrive>,
    downloads: HashMap<SecretHash, DownloadLink>,
    uploads: HashMap<SecretHash, UploadSession>,
    next_seq: u64,
    bytes_served: u64,
    bytes_received: u64,
}

impl Inner {
    fn user(&mut self, user_id: &str) -> &mut UserDrive {
        self.users.entry(user_id.to_owned()).or_default()
    }

    /// Stores a file under a fresh id (the folder is created on first use).
    fn insert(&mut self, user_id: &str, folder: Folder, name: String, bytes: Bytes) -> String {
        let mut file_id = self.minter.id("drv");
        while self.users.values().any(|u| u.files.contains_key(&file_id)) {
            file_id = self.minter.id("drv");
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let user = self.user(user_id);
        user.ensure_folder(folder);
        user.files.insert(file_id.clone(), StoredFile { name, folder, bytes, seq });
        file_id
    }

    /// Forgets links that expired more than [`EXPIRED_MEMORY`] ago, so the tables stay bounded.
    fn purge(&mut self, now: OffsetDateTime) {
        self.downloads.retain(|_, l| l.expires + EXPIRED_MEMORY > now);
        self.uploads.retain(|_, s| s.expires + EXPIRED_MEMORY > now);
    }

    fn link(&self, kind: &str, token: &str) -> String {
        format!("{}/{kind}/{token}", self.base_url)
    }
}

/// The fake drive (PROTOCOL.md §1 "drive"; §9). A cheaply cloneable handle: clones share one store.
///
/// Holds per-user folders "Print", "Scan" and "Printed" (each created on first use), files (id, name, bytes), the
/// hashed link tokens, and counters of the bytes moved over HTTP. Serve its HTTP side with [`router`] on a listener
/// of its own, then tell it its origin with [`set_base_url`](Self::set_base_url).
#[derive(Clone)]
pub struct Drive {
    inner: Arc<Mutex<Inner>>,
    now: NowFn,
}

impl fmt::Debug for Drive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Link tokens are never stored in plaintext, so there is nothing secret to hide; documents are left out.
        let inner = self.lock();
        f.debug_struct("Drive")
            .field("base_url", &inner.base_url)
            .field("users", &inner.users.len())
            .field("download_links", &inner.downloads.len())
            .field("upload_sessions", &inner.uploads.len())
            .field("bytes_served", &inner.bytes_served)
            .field("bytes_received", &inner.bytes_received)
            .finish()
    }
}

impl Drive {
    /// An empty drive on the server's clock `now` (read on the HTTP side to expire links). Its links point at
    /// [`PLACEHOLDER_BASE_URL`] until the listener is bound and [`set_base_url`](Self::set_base_url) is called.
    pub fn new(now: NowFn) -> Self {
        Self::with_base_url(PLACEHOLDER_BASE_URL, now)
    }

    /// An empty drive whose links point at `base_url` (an origin such as `https://127.0.0.1:8443`), on the
    /// server's clock `now`.
    pub fn with_base_url(base_url: impl Into<String>, now: NowFn) -> Self {
        let inner = Inner {
            base_url: normalise_base(base_url.into()),
            minter: Minter::new(Box::new(rand::rngs::OsRng)),
            users: HashMap::new(),
            downloads: HashMap::new(),
            uploads: HashMap::new(),
            next_seq: 0,
            bytes_served: 0,
            bytes_received: 0,
        };
        Self { inner: Arc::new(Mutex::new(inner)), now }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated in a way that matters to a simulator;
        // keep serving rather than poisoning every later request.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the origin that minted links point at (once the listener is bound). A trailing `/` is dropped.
    /// Links minted earlier keep their old URL but stay valid (the token is what counts).
    pub fn set_base_url(&self, url: impl Into<String>) {
        self.lock().base_url = normalise_base(url.into());
    }

    /// The origin links point at.
    pub fn base_url(&self) -> String {
        self.lock().base_url.clone()
    }

    /// The clock this drive expires links by.
    pub fn now(&self) -> OffsetDateTime {
        (self.now)()
    }

    /// Stores a document in `user_id`'s `folder` (created on first use) and returns its file id. For fixtures and
    /// tests (in production the user puts files into OneDrive themselves). Names need not be unique, as in Graph
    /// listings of different uploads; ids are.
    pub fn put_file(&self, user_id: &str, folder: Folder, name: &str, bytes: impl Into<Bytes>) -> String {
        self.lock().insert(user_id, folder, name.to_owned(), bytes.into())
    }

    /// The files in `user_id`'s `folder`, oldest first (ids, names, sizes; PROTOCOL.md §9). Does not create the
    /// folder (use [`DriveLinks::list`] for the server's view, which does).
    pub fn files(&self, user_id: &str, folder: Folder) -> Vec<DriveFile> {
        let inner = self.lock();
        let Some(user) = inner.users.get(user_id) else { return Vec::new() };
        list_folder(user, folder)
    }

    /// The bytes of one of `user_id`'s files (tests check what the MFP uploaded or will print).
    pub fn file_bytes(&self, user_id: &str, file_id: &str) -> Option<Bytes> {
        self.lock().users.get(user_id)?.files.get(file_id).map(|f| f.bytes.clone())
    }

    /// The folder one of `user_id`'s files is in (after-print moves it to [`Folder::Printed`]).
    pub fn folder_of(&self, user_id: &str, file_id: &str) -> Option<Folder> {
        self.lock().users.get(user_id)?.files.get(file_id).map(|f| f.folder)
    }

    /// The folders of `user_id`'s drive that exist so far, in creation order (the whitepaper: Roger creates
    /// "Print" and "Scan" if they do not exist).
    pub fn folders(&self, user_id: &str) -> Vec<Folder> {
        self.lock().users.get(user_id).map(|u| u.folders.clone()).unwrap_or_default()
    }

    /// Document bytes sent by `GET /dl/{token}` so far (for the demo's summary: these bytes never touched the API
    /// listener, R-DATA-1).
    pub fn total_bytes_served(&self) -> u64 {
        self.lock().bytes_served
    }

    /// Document bytes accepted by `PUT /upload/{token}` so far.
    pub fn total_bytes_received(&self) -> u64 {
        self.lock().bytes_received
    }
}

fn normalise_base(mut url: String) -> String {
    while url.ends_with('/') {
        url.pop();
    }
    url
}

fn list_folder(user: &UserDrive, folder: Folder) -> Vec<DriveFile> {
    let mut files: Vec<(&String, &StoredFile)> = user.files.iter().filter(|(_, f)| f.folder == folder).collect();
    files.sort_by_key(|(_, f)| f.seq);
    files.into_iter().map(|(id, f)| f.meta(id)).collect()
}

impl DriveLinks for Drive {
    /// Creates the folder on first use (whitepaper), then lists it.
    fn list(&mut self, user_id: &str, folder: Folder) -> Vec<DriveFile> {
        let mut inner = self.lock();
        let user = inner.user(user_id);
        user.ensure_folder(folder);
        list_folder(user, folder)
    }

    fn file(&mut self, user_id: &str, file_id: &str) -> Option<DriveFile> {
        self.lock().users.get(user_id)?.files.get(file_id).map(|f| f.meta(file_id))
    }

    /// `{base}/dl/rdu_…`: a fresh 256-bit token per call, stored as its SHA-256, valid until `expires`
    /// (PROTOCOL.md §9: 300 s). `None` if the file is not in `user_id`'s drive.
    fn download_link(
        &mut self,
        now: OffsetDateTime,
        user_id: &str,
        file_id: &str,
        expires: OffsetDateTime,
    ) -> Option<PreAuthorizedUrl> {
        let mut inner = self.lock();
        inner.users.get(user_id)?.files.get(file_id)?;
        inner.purge(now);
        let (token, hash) = inner.minter.secret(SecretKind::DriveUrl);
        inner
            .downloads
            .insert(hash, DownloadLink { user_id: user_id.to_owned(), file_id: file_id.to_owned(), expires });
        Some(PreAuthorizedUrl::new(inner.link("dl", &token)))
    }

    /// `{base}/upload/rdu_…`: a resumable upload session into `folder` (created now if missing), valid until
    /// `expires`. The file's name is chosen by the drive when the last byte arrives (R-DATA-2).
    fn upload_link(
        &mut self,
        now: OffsetDateTime,
        user_id: &str,
        folder: Folder,
        expires: OffsetDateTime,
    ) -> PreAuthorizedUrl {
        let mut inner = self.lock();
        inner.purge(now);
        inner.user(user_id).ensure_folder(folder);
        let (token, hash) = inner.minter.secret(SecretKind::DriveUrl);
        inner.uploads.insert(
            hash,
            UploadSession { user_id: user_id.to_owned(), folder, expires, total: None, data: Vec::new(), done: None },
        );
        PreAuthorizedUrl::new(inner.link("upload", &token))
    }

    /// The tenant's rule after a drive job printed (whitepaper; PROTOCOL.md §9): delete the file, move it to
    /// "Printed" (created on first use; the id stays the same, as a Graph move keeps the item id), or leave it.
    /// Unknown files are ignored, so the call is idempotent.
    fn after_print(&mut self, user_id: &str, file_id: &str, rule: AfterPrint) {
        let mut inner = self.lock();
        let Some(user) = inner.users.get_mut(user_id) else { return };
        if !user.files.contains_key(file_id) {
            return;
        }
        match rule {
            AfterPrint::Delete => {
                user.files.remove(file_id);
            }
            AfterPrint::MovePrinted => {
                user.ensure_folder(Folder::Printed);
                if let Some(file) = user.files.get_mut(file_id) {
                    file.folder = Folder::Printed;
                }
            }
            AfterPrint::Leave => {}
        }
    }
}

/// Fixture files (`[[tenants.drive_files]]`) go into the drive, never into the server (R-DATA-1).
impl crate::server::fixtures::FixtureDrive for Drive {
    /// Stores the file via [`Drive::put_file`]. The fixture parser admits only `Print` and `Scan`; any other name
    /// falls back to "Print".
    fn put_file(&mut self, user_id: &str, folder: &str, name: &str, bytes: Vec<u8>) -> String {
        Drive::put_file(self, user_id, Folder::parse(folder).unwrap_or(Folder::Print), name, bytes)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP side
// ---------------------------------------------------------------------------------------------------------------

/// The drive's HTTP routes (serve them on their own listener, R-DATA-1):
///
/// * `GET /dl/{token}`: `200` with the bytes (`application/octet-stream`, `Cache-Control: no-store`), `404` for an
///   unknown token or a deleted file, `410` for an expired token;
/// * `PUT /upload/{token}` with `Content-Range: bytes START-END/TOTAL`: chunks in order; `202
///   {"expirationDateTime","nextExpectedRanges":["N-"]}` until complete, then `201 {"id","name","size"}` (a repeat
///   of the final chunk after a lost answer gets the same `201`); `416` with `nextExpectedRanges` for a chunk out of
///   order; `400` for a missing or invalid `Content-Range` or a body whose length does not match it; `413` for a
///   total above [`MAX_UPLOAD_BYTES`] or a body above [`MAX_REQUEST_BYTES`];
/// * `GET /upload/{token}`: `200 {"expirationDateTime","nextExpectedRanges"}` (Graph's session status);
/// * `DELETE /upload/{token}`: `204`, the session is cancelled.
///
/// Every error is `{"error":{"code","message"}}` as Graph answers; every response has `Cache-Control: no-store`.
pub fn router(drive: Drive) -> Router {
    Router::new()
        .route("/dl/{token}", get(download))
        .route("/upload/{token}", get(upload_status).put(upload_chunk).delete(upload_cancel))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(drive)
}

/// A Graph-style error answer.
fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"error": {"code": code, "message": message}}))
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    no_store(response.headers_mut());
    response
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC).format(&Rfc3339).unwrap_or_default()
}

async fn not_found() -> Response {
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "no such resource")
}

async fn method_not_allowed() -> Response {
    graph_error(StatusCode::METHOD_NOT_ALLOWED, "notSupported", "method not allowed on this resource")
}

fn unknown_link() -> Response {
    graph_error(StatusCode::NOT_FOUND, "itemNotFound", "the link is not valid")
}

fn expired_link() -> Response {
    graph_error(StatusCode::GONE, "expired", "the link has expired")
}

/// `GET /dl/{token}`.
async fn download(State(drive): State<Drive>, method: Method, token: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(token)) = token else { return unknown_link() };
    let now = drive.now();
    let mut inner = drive.lock();
    let Some(link) = inner.downloads.get(&SecretHash::of(&token)).cloned() else { return unknown_link() };
    if now >= link.expires {
        return expired_link();
    }
    let Some(bytes) = inner.users.get(&link.user_id).and_then(|u| u.files.get(&link.file_id)).map(|f| f.bytes.clone())
    else {
        return graph_error(StatusCode::NOT_FOUND, "itemNotFound", "the file no longer exists");
    };
    if method != Method::HEAD {
        inner.bytes_served += bytes.len() as u64;
    }
    drop(inner);
    let mut response = (StatusCode::OK, bytes).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    no_store(response.headers_mut());
    response
}

/// A parsed `Content-Range: bytes START-END/TOTAL` (RFC 9110 §14.4; Graph resumable uploads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    start: u64,
    /// Inclusive.
    end: u64,
    total: u64,
}

impl ContentRange {
    /// Parses the header strictly: unit `bytes`, decimal numbers, `START <= END < TOTAL`. No `*` forms.
    fn parse(value: &str) -> Option<Self> {
        let rest = value.trim();
        let (unit, rest) = rest.split_once(' ')?;
        if !unit.eq_ignore_ascii_case("bytes") {
            return None;
        }
        let (range, total) = rest.trim().split_once('/')?;
        let (start, end) = range.split_once('-')?;
        let number = |s: &str| -> Option<u64> {
            if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (start, end, total) = (number(start)?, number(end)?, number(total)?);
        (start <= end && end < total).then_some(Self { start, end, total })
    }

    fn len(self) -> u64 {
        self.end - self.start + 1
    }
}

fn next_expected(received: u64) -> serde_json::Value {
    json!([format!("{received}-")])
}

/// `PUT /upload/{token}`: one chunk of a resumable upload.
async fn upload_chunk(
    State(drive): State<Drive>,
    token: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Ok(Path(token)) = token else { return unknown_link() };
    let now = drive.now();
    let hash = SecretHash::of(&token);
    {
        let inner = drive.lock();
        match inner.uploads.get(&hash) {
            None => return unknown_link(),
            Some(s) if now >= s.expires => return expired_link(),
            Some(_) => {}
        }
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return graph_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "requestTooLarge",
                "a chunk may carry at most 8 MiB; send smaller Content-Range chunks",
            );
        }
        Err(_) => return graph_error(StatusCode::BAD_REQUEST, "invalidRequest", "the request body could not be read"),
    };
    let Some(range) = headers.get(header::CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(ContentRange::parse)
    else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "a Content-Range header of the form `bytes START-END/TOTAL` is required",
        );
    };
    if range.total > MAX_UPLOAD_BYTES {
        return graph_error(StatusCode::PAYLOAD_TOO_LARGE, "maxFileSizeExceeded", "the file is larger than 64 MiB");
    }
    if body.len() as u64 != range.len() {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "invalidRequest",
            "the body length does not match the Content-Range header",
        );
    }

    let mut guard = drive.lock();
    let inner = &mut *guard;
    // The session may have gone between the two locks (cancelled); look it up again.
    let Some(session) = inner.uploads.get_mut(&hash) else { return unknown_link() };
    if let Some(done) = &session.done {
        // A repeat of the final chunk (the answer was lost): the same answer again.
        if range.end + 1 == range.total && range.total == done.size {
            let done = done.clone();
            return created(&done);
        }
        return graph_error(StatusCode::CONFLICT, "invalidRequest", "the upload session is already complete");
    }
    if let Some(total) = session.total {
        if total != range.total {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "invalidRequest",
                "the total size differs from the one given by the first chunk",
            );
        }
    }
    let received = session.data.len() as u64;
    if range.start != received {
        let body = json!({
            "error": {"code": "invalidRange", "message": "chunks must arrive in order; resume at nextExpectedRanges"},
            "nextExpectedRanges": next_expected(received),
        });
        return json_response(StatusCode::RANGE_NOT_SATISFIABLE, body);
    }
    session.total = Some(range.total);
    session.data.extend_from_slice(&body);
    let expires = session.expires;
    inner.bytes_received += body.len() as u64;
    if range.end + 1 < range.total {
        return json_response(
            StatusCode::ACCEPTED,
            json!({"expirationDateTime": rfc3339(expires), "nextExpectedRanges": next_expected(range.end + 1)}),
        );
    }
    // Complete: the drive names the file (R-DATA-2: the server never learns the scan's name).
    let (user_id, folder) = (session.user_id.clone(), session.folder);
    let data = Bytes::from(std::mem::take(&mut session.data));
    let name = scan_name(inner.user(&user_id), folder, now);
    let file_id = inner.insert(&user_id, folder, name.clone(), data.clone());
    let file = DriveFile { id: file_id, name, size: data.len() as u64 };
    if let Some(session) = inner.uploads.get_mut(&hash) {
        session.done = Some(file.clone());
    }
    created(&file)
}

fn created(file: &DriveFile) -> Response {
    json_response(StatusCode::CREATED, json!({"id": file.id, "name": file.name, "size": file.size}))
}

/// `scan-YYYYMMDD-HHMMSS.pdf` (UTC), with `-2`, `-3`, … if a scan of the same second is already in the folder.
fn scan_name(user: &UserDrive, folder: Folder, now: OffsetDateTime) -> String {
    let t = now.to_offset(UtcOffset::UTC);
    let stamp = format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let mut name = format!("scan-{stamp}.pdf");
    let mut n = 2u32;
    while user.name_taken(folder, &name) {
        name = format!("scan-{stamp}-{n}.pdf");
        n += 1;
    }
    name
}

/// `GET /upload/{token}`: which ranges the session still expects (Graph's upload session status).
async fn upload_status(State(drive): State<Drive>, token: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(token)) = token else { return unknown_link() };
    let now = drive.now();
    let inner = drive.lock();
    let Some(session) = inner.uploads.get(&SecretHash::of(&token)) else { return unknown_link() };
    if now >= session.expires {
        return expired_link();
    }
    let ranges = if session.done.is_some() { json!([]) } else { next_expected(session.data.len() as u64) };
    json_response(StatusCode::OK, json!({"expirationDateTime": rfc3339(session.expires), "nextExpectedRanges": ranges}))
}

/// `DELETE /upload/{token}`: cancels the session (Graph answers `204`).
async fn upload_cancel(State(drive): State<Drive>, token: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(token)) = token else { return unknown_link() };
    let removed = drive.lock().uploads.remove(&SecretHash::of(&token));
    match removed {
        Some(_) => {
            let mut response = StatusCode::NO_CONTENT.into_response();
            no_store(response.headers_mut());
            response
        }
        None => unknown_link(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as StdDuration;

    /// A settable test clock.
    #[derive(Clone)]
    struct TestClock(Arc<Mutex<OffsetDateTime>>);

    impl TestClock {
        fn new() -> Self {
            Self(Arc::new(Mutex::new(OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"))))
        }
        fn get(&self) -> OffsetDateTime {
            *self.0.lock().expect("clock")
        }
        fn advance(&self, d: Duration) {
            *self.0.lock().expect("clock") += d;
        }
        fn now_fn(&self) -> NowFn {
            let c = self.clone();
            Arc::new(move || c.get())
        }
    }

    async fn serve(drive: &Drive) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let base = format!("http://{addr}");
        drive.set_base_url(format!("{base}/"));
        let app = router(drive.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        base
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().timeout(StdDuration::from_secs(20)).build().expect("client")
    }

    fn setup() -> (Drive, TestClock) {
        let clock = TestClock::new();
        (Drive::new(clock.now_fn()), clock)
    }

    async fn error_code(resp: reqwest::Response) -> String {
        let v: serde_json::Value = resp.json().await.expect("json error body");
        assert!(v["error"]["message"].is_string(), "{v}");
        v["error"]["code"].as_str().expect("code").to_owned()
    }

    #[tokio::test]
    async fn download_valid_unknown_and_expired() {
        let (mut drive, clock) = setup();
        let base = serve(&drive).await;
        let id = drive.put_file("u1", Folder::Print, "report.pdf", b"%PDF-1.7 hello".to_vec());
        let now = clock.get();
        let url = drive.download_link(now, "u1", &id, now + Duration::seconds(300)).expect("link");
        let url = url.secret().to_owned();
        assert!(url.starts_with(&format!("{base}/dl/rdu_")), "{url}");
        assert_eq!(url.len(), base.len() + "/dl/rdu_".len() + 43, "256-bit token");

        let c = client();
        let resp = c.get(&url).send().await.expect("get");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(&resp.bytes().await.expect("body")[..], b"%PDF-1.7 hello");
        assert_eq!(drive.total_bytes_served(), 14);

        // Unknown token, and garbage that must not panic.
        let resp = c.get(format!("{base}/dl/rdu_nope")).send().await.expect("get");
        assert_eq!(resp.status(), 404);
        assert_eq!(error_code(resp).await, "itemNotFound");
        let resp = c.get(format!("{base}/dl/%FF%FE{}", "x".repeat(5000))).send().await.expect("get");
        assert_eq!(resp.status(), 404, "not UTF-8 after percent-decoding");
        assert_eq!(error_code(resp).await, "itemNotFound");
        let resp = c.put(format!("{base}/upload/%C0%AF")).header("Content-Range", "bytes 0-0/1").body("a");
        assert_eq!(error_code(resp.send().await.expect("put")).await, "itemNotFound");
        let resp = c.get(format!("{base}/nowhere")).send().await.expect("get");
        assert_eq!(resp.status(), 404);
        assert_eq!(error_code(resp).await, "itemNotFound");
        let resp = c.post(&url).send().await.expect("post");
        assert_eq!(resp.status(), 405);
        assert_eq!(error_code(resp).await, "notSupported");

        // Expired by the shared clock.
        clock.advance(Duration::seconds(300));
        let resp = c.get(&url).send().await.expect("get");
        assert_eq!(resp.status(), 410);
        assert_eq!(error_code(resp).await, "expired");
        assert_eq!(drive.total_bytes_served(), 14);

        // No link for a file of another user, or a missing file.
        let now = clock.get();
        assert!(drive.download_link(now, "u2", &id, now + Duration::seconds(300)).is_none());
        assert!(drive.download_link(now, "u1", "drv_missing", now + Duration::seconds(300)).is_none());

        // A deleted file behind a valid link: 404.
        let url = drive.download_link(now, "u1", &id, now + Duration::seconds(300)).expect("link");
        drive.after_print("u1", &id, AfterPrint::Delete);
        let resp = c.get(url.secret()).send().await.expect("get");
        assert_eq!(resp.status(), 404);
    }

    #[tokio::test]
    async fn resumable_upload_in_three_chunks() {
        let (mut drive, clock) = setup();
        let base = serve(&drive).await;
        let now = clock.get();
        let url = drive.upload_link(now, "u1", Folder::Scan, now + Duration::seconds(600));
        let url = url.secret().to_owned();
        assert!(url.starts_with(&format!("{base}/upload/rdu_")), "{url}");
        let doc: Vec<u8> = (0..30u8).collect();
        let c = client();
        let put =
            |range: &str, body: &[u8]| c.put(&url).header("Content-Range", range.to_owned()).body(body.to_vec()).send();

        let resp = put("bytes 0-9/30", &doc[0..10]).await.expect("put");
        assert_eq!(resp.status(), 202);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["nextExpectedRanges"], json!(["10-"]));
        assert!(v["expirationDateTime"].as_str().is_some_and(|s| s.ends_with('Z')));

        // Chunk 3 before chunk 2: 416 with where to resume.
        let resp = put("bytes 20-29/30", &doc[20..30]).await.expect("put");
        assert_eq!(resp.status(), 416);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["nextExpectedRanges"], json!(["10-"]));
        assert_eq!(v["error"]["code"], "invalidRange");

        // Status query.
        let resp = c.get(&url).send().await.expect("get");
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["nextExpectedRanges"], json!(["10-"]));

        let resp = put("bytes 10-19/30", &doc[10..20]).await.expect("put");
        assert_eq!(resp.status(), 202);
        let resp = put("bytes 20-29/30", &doc[20..30]).await.expect("put");
        assert_eq!(resp.status(), 201);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["size"], 30);
        let name = v["name"].as_str().expect("name").to_owned();
        assert_eq!(name, "scan-20231114-221320.pdf");
        let id = v["id"].as_str().expect("id").to_owned();
        assert_eq!(drive.file_bytes("u1", &id).as_deref(), Some(&doc[..]));
        assert_eq!(drive.files("u1", Folder::Scan), vec![DriveFile { id: id.clone(), name, size: 30 }]);
        assert_eq!(drive.total_bytes_received(), 30);

        // The final chunk again (lost answer): the same 201, no second file.
        let resp = put("bytes 20-29/30", &doc[20..30]).await.expect("put");
        assert_eq!(resp.status(), 201);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["id"], id.as_str());
        assert_eq!(drive.files("u1", Folder::Scan).len(), 1);
        let resp = c.get(&url).send().await.expect("get");
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["nextExpectedRanges"], json!([]));

        // A second scan in the same second gets a distinct name.
        let url2 = drive.upload_link(now, "u1", Folder::Scan, now + Duration::seconds(600));
        let resp = c.put(url2.secret()).header("Content-Range", "bytes 0-2/3").body("abc").send().await.expect("put");
        assert_eq!(resp.status(), 201);
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["name"], "scan-20231114-221320-2.pdf");

        // Cancel a session.
        let url3 = drive.upload_link(now, "u1", Folder::Scan, now + Duration::seconds(600));
        assert_eq!(c.delete(url3.secret()).send().await.expect("delete").status(), 204);
        assert_eq!(c.get(url3.secret()).send().await.expect("get").status(), 404);
    }

    #[tokio::test]
    async fn upload_errors() {
        let (mut drive, clock) = setup();
        let base = serve(&drive).await;
        let now = clock.get();
        let url = drive.upload_link(now, "u1", Folder::Scan, now + Duration::seconds(60));
        let url = url.secret().to_owned();
        let c = client();

        let resp = c.put(&url).body("abc").send().await.expect("put");
        assert_eq!(resp.status(), 400, "missing Content-Range");
        assert_eq!(error_code(resp).await, "invalidRequest");
        for bad in ["bytes 0-2", "bytes */3", "items 0-2/3", "bytes 2-0/3", "bytes 0-3/3", "bytes -1-2/3", "0-2/3"] {
            let resp = c.put(&url).header("Content-Range", bad).body("abc").send().await.expect("put");
            assert_eq!(resp.status(), 400, "{bad}");
        }
        let resp = c.put(&url).header("Content-Range", "bytes 0-3/10").body("abc").send().await.expect("put");
        assert_eq!(resp.status(), 400, "length mismatch");
        let huge = format!("bytes 0-2/{}", MAX_UPLOAD_BYTES + 1);
        let resp = c.put(&url).header("Content-Range", huge).body("abc").send().await.expect("put");
        assert_eq!(resp.status(), 413);
        assert_eq!(error_code(resp).await, "maxFileSizeExceeded");
        let resp = c
            .put(&url)
            .header("Content-Range", format!("bytes 0-{}/{}", MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1))
            .body(vec![0u8; MAX_REQUEST_BYTES + 1])
            .send()
            .await
            .expect("put");
        assert_eq!(resp.status(), 413, "chunk above 8 MiB");
        assert_eq!(error_code(resp).await, "requestTooLarge");
        // Total changes between chunks.
        let resp = c.put(&url).header("Content-Range", "bytes 0-2/6").body("abc").send().await.expect("put");
        assert_eq!(resp.status(), 202);
        let resp = c.put(&url).header("Content-Range", "bytes 3-5/7").body("def").send().await.expect("put");
        assert_eq!(resp.status(), 400);
        assert_eq!(drive.total_bytes_received(), 3);

        let resp = c.put(format!("{base}/upload/rdu_unknown")).header("Content-Range", "bytes 0-2/3").body("abc");
        assert_eq!(resp.send().await.expect("put").status(), 404);
        assert_eq!(c.get(format!("{base}/upload/rdu_unknown")).send().await.expect("get").status(), 404);

        clock.advance(Duration::seconds(60));
        let resp = c.put(&url).header("Content-Range", "bytes 3-5/6").body("def").send().await.expect("put");
        assert_eq!(resp.status(), 410);
        assert_eq!(c.get(&url).send().await.expect("get").status(), 410);
        assert!(drive.files("u1", Folder::Scan).is_empty());
    }

    #[test]
    fn after_print_rules() {
        let (mut drive, _) = setup();
        let a = drive.put_file("u1", Folder::Print, "a.pdf", &b"a"[..]);
        let b = drive.put_file("u1", Folder::Print, "b.pdf", &b"bb"[..]);
        let c = drive.put_file("u1", Folder::Print, "c.pdf", &b"ccc"[..]);

        drive.after_print("u1", &a, AfterPrint::Delete);
        assert_eq!(drive.file("u1", &a), None);
        assert_eq!(drive.file_bytes("u1", &a), None);

        assert!(!drive.folders("u1").contains(&Folder::Printed));
        drive.after_print("u1", &b, AfterPrint::MovePrinted);
        assert_eq!(drive.folder_of("u1", &b), Some(Folder::Printed));
        assert!(drive.folders("u1").contains(&Folder::Printed), "created on first use");
        assert_eq!(
            drive.files("u1", Folder::Printed),
            vec![DriveFile { id: b.clone(), name: "b.pdf".into(), size: 2 }]
        );

        drive.after_print("u1", &c, AfterPrint::Leave);
        assert_eq!(drive.list("u1", Folder::Print), vec![DriveFile { id: c.clone(), name: "c.pdf".into(), size: 3 }]);

        // Idempotent, and another user's id is not touched.
        drive.after_print("u1", &a, AfterPrint::Delete);
        drive.after_print("u2", &c, AfterPrint::Delete);
        assert!(drive.file("u1", &c).is_some());
        assert_eq!(drive.file("u2", &c), None);
    }

    #[test]
    fn fixture_files_go_into_the_drive() {
        use crate::server::fixtures::FixtureDrive;
        let (mut drive, _) = setup();
        let id = FixtureDrive::put_file(&mut drive, "u1", "Scan", "old-scan.pdf", b"%PDF".to_vec());
        assert_eq!(drive.folder_of("u1", &id), Some(Folder::Scan));
        assert_eq!(drive.file_bytes("u1", &id).as_deref(), Some(&b"%PDF"[..]));
    }

    #[test]
    fn folders_are_created_on_first_use() {
        let (mut drive, clock) = setup();
        assert!(drive.folders("u1").is_empty());
        assert!(drive.files("u1", Folder::Print).is_empty());
        assert!(drive.folders("u1").is_empty(), "an inspection creates nothing");
        assert!(drive.list("u1", Folder::Print).is_empty());
        assert_eq!(drive.folders("u1"), vec![Folder::Print]);
        let now = clock.get();
        let _ = drive.upload_link(now, "u1", Folder::Scan, now + Duration::seconds(60));
        assert_eq!(drive.folders("u1"), vec![Folder::Print, Folder::Scan]);
        drive.put_file("u2", Folder::Scan, "x.pdf", Vec::<u8>::new());
        assert_eq!(drive.folders("u2"), vec![Folder::Scan]);
        assert_eq!(drive.folders("u1").len(), 2, "per user");
    }

    #[test]
    fn link_tokens_are_stored_hashed() {
        let (mut drive, clock) = setup();
        let id = drive.put_file("u1", Folder::Print, "a.pdf", &b"a"[..]);
        let now = clock.get();
        let dl = drive.download_link(now, "u1", &id, now + Duration::seconds(300)).expect("link");
        let up = drive.upload_link(now, "u1", Folder::Scan, now + Duration::seconds(300));
        let dl_token = dl.secret().rsplit('/').next().expect("token").to_owned();
        let up_token = up.secret().rsplit('/').next().expect("token").to_owned();
        assert!(dl_token.starts_with("rdu_") && up_token.starts_with("rdu_"));
        assert_ne!(dl_token, up_token);
        let inner = drive.lock();
        assert!(inner.downloads.contains_key(&SecretHash::of(&dl_token)));
        assert!(inner.uploads.contains_key(&SecretHash::of(&up_token)));
        let stored = format!("{:?} {:?}", inner.downloads, inner.uploads);
        let keys: Vec<String> = inner.downloads.keys().chain(inner.uploads.keys()).map(|k| k.to_hex()).collect();
        for token in [&dl_token, &up_token] {
            assert!(!stored.contains(token.as_str()));
            assert!(!stored.contains(&token[4..20]));
            assert!(!keys.iter().any(|k| k.contains(&token[4..20])));
        }
        drop(inner);
        assert!(!format!("{drive:?}").contains(&dl_token[4..]));
        assert!(!format!("{dl:?}").contains(&dl_token[4..]), "PreAuthorizedUrl is redacted (R-SEC-1)");
    }

    #[test]
    fn old_links_are_forgotten() {
        let (mut drive, clock) = setup();
        let id = drive.put_file("u1", Folder::Print, "a.pdf", &b"a"[..]);
        let now = clock.get();
        drive.download_link(now, "u1", &id, now + Duration::seconds(300)).expect("link");
        let later = now + Duration::days(2);
        drive.download_link(later, "u1", &id, later + Duration::seconds(300)).expect("link");
        assert_eq!(drive.lock().downloads.len(), 1);
    }

    #[test]
    fn content_range_parsing() {
        assert_eq!(ContentRange::parse("bytes 0-9/30"), Some(ContentRange { start: 0, end: 9, total: 30 }));
        assert_eq!(ContentRange::parse(" Bytes 29-29/30 "), Some(ContentRange { start: 29, end: 29, total: 30 }));
        for bad in [
            "",
            "bytes",
            "bytes 0-9",
            "bytes 0-9/*",
            "bytes */30",
            "bytes 9-0/30",
            "bytes 0-30/30",
            "bytes +1-2/30",
            "bytes 0-99999999999999999999/1",
            "bytes 0 - 9/30",
        ] {
            assert_eq!(ContentRange::parse(bad), None, "{bad:?}");
        }
    }
}
