//! Support for the roger benchmarks (DESIGN.md "Benchmarks"): every benchmark is measured beside a baseline in
//! the same run, and a small reporter of our own prints the ratio of the two.
//!
//! * [`fixtures`]: realistic wire bodies (the inputs of the parse benchmarks);
//! * [`baseline`]: plain structs with the same members as the roger-proto types, for bare `serde_json`;
//! * [`core_setup`]: admin login and printer registration straight through the server core's public API (the
//!   server benchmark's pre-registered printers, the memory test's 100,000 registrations);
//! * [`alloc_count`]: the counting global allocator of the allocation and memory tests;
//! * [`report`]: reads criterion's estimates and prints `name | ours ns | baseline ns | ratio` (time ratio, lower is
//!   better: the parse benchmarks);
//! * [`report_throughput`]: the same estimates as elements per second, `name | ours /s | baseline /s | ratio`
//!   (throughput ratio, higher is better: the server benchmarks).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The ratio the parse benchmarks aim for: ours at most 30% slower than bare `serde_json` into a plain struct.
pub const TARGET_RATIO: f64 = 1.3;

/// The ratio the server benchmarks aim for: our token endpoint serves at least 60% of the requests per second an
/// axum hello-world serves on the same stack, client and concurrency.
pub const SERVER_TARGET_RATIO: f64 = 0.6;

pub mod alloc_count;

/// Realistic bodies, as a Roger server sends them.
pub mod fixtures {
    /// A device registration's token response (RFC 6749 §5.1 with the Roger members, PROTOCOL.md §5).
    pub const TOKEN_RESPONSE: &str = r#"{"access_token":"2YotnFZFEjr1zCsicMWpAA-dGhpcyBpcyBhIGRldmljZSB0b2tlbg","token_type":"Bearer","expires_in":1200,"refresh_token":"tGzv3JOkF0XG5Qx2TlKWIA-cm90YXRpbmcgcmVmcmVzaCB0b2tlbg","scope":"roger.device","device_id":"dev-7f3c2a9e","tenant_id":"acme","user":{"id":"u-1","username":"alice","display_name":"Alice Example","email":"alice@example.com"}}"#;

    /// A device authorization response (RFC 8628 §3.2 with `request_id`, PROTOCOL.md §5.1).
    pub const DEVICE_AUTHORIZATION_RESPONSE: &str = r#"{"device_code":"GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS","user_code":"WDJBMJHT","verification_uri":"https://eu.roger.example/device","verification_uri_complete":"https://eu.roger.example/device?user_code=WDJBMJHT","expires_in":600,"interval":5,"request_id":"req-5b1d0c7e"}"#;

    /// A push envelope (PROTOCOL.md §11).
    pub const PUSH_ENVELOPE: &str = r#"{"id":"msg-0f9e8d7c","type":"job.release_requested","occurred_at":"2025-03-01T12:34:56.789Z","device_id":"dev-7f3c2a9e","data":{"job_id":"job-42","device_id":"dev-7f3c2a9e"}}"#;
}

/// Plain structs with the same members as the roger-proto types (no secret newtypes, no lenient numbers, no
/// validation): what bare `serde_json` costs for the same bytes.
pub mod baseline {
    use serde::Deserialize;

    /// The user of a token response.
    #[derive(Debug, Deserialize)]
    pub struct PlainTokenUser {
        /// Id.
        pub id: String,
        /// Login name.
        pub username: String,
        /// Display name.
        pub display_name: Option<String>,
        /// E-mail.
        pub email: Option<String>,
    }

    /// [`roger_proto::token::TokenResponse`] as plain fields.
    #[derive(Debug, Deserialize)]
    pub struct PlainTokenResponse {
        /// Access token.
        pub access_token: String,
        /// `Bearer`.
        pub token_type: String,
        /// Lifetime in seconds.
        pub expires_in: Option<u64>,
        /// Refresh token.
        pub refresh_token: Option<String>,
        /// Scope.
        pub scope: Option<String>,
        /// Device id.
        pub device_id: Option<String>,
        /// Tenant id.
        pub tenant_id: Option<String>,
        /// User.
        pub user: Option<PlainTokenUser>,
    }

    /// [`roger_proto::device_authorization::DeviceAuthorizationResponse`] as plain fields.
    #[derive(Debug, Deserialize)]
    pub struct PlainDeviceAuthorizationResponse {
        /// Device code.
        pub device_code: String,
        /// User code.
        pub user_code: String,
        /// Verification URI.
        pub verification_uri: String,
        /// Verification URI with the code.
        pub verification_uri_complete: Option<String>,
        /// Lifetime in seconds.
        pub expires_in: u64,
        /// Polling interval in seconds.
        pub interval: Option<u64>,
        /// Request id.
        pub request_id: Option<String>,
    }

    /// The `data` of a push envelope: the ids any event type carries.
    #[derive(Debug, Deserialize)]
    pub struct PlainPushData {
        /// `code.*`.
        pub request_id: Option<String>,
        /// `job.*`.
        pub job_id: Option<String>,
        /// `session.ended`, `job.release_requested`, `device.disconnected`.
        pub device_id: Option<String>,
    }

    /// [`roger_proto::push::PushEnvelope`] as plain fields (the timestamp left as a string).
    #[derive(Debug, Deserialize)]
    pub struct PlainPushEnvelope {
        /// Message id.
        pub id: String,
        /// Event type.
        #[serde(rename = "type")]
        pub event_type: String,
        /// RFC 3339 timestamp.
        pub occurred_at: String,
        /// Target device.
        pub device_id: Option<String>,
        /// Target user.
        pub user_id: Option<String>,
        /// Event data.
        pub data: PlainPushData,
    }
}

/// Driving `roger_proto::server::ServerCore` through its public API only, the way roger-sim's handlers do: one
/// call per request, and the journal and the push outbox drained after each (`Shared::act` commits
/// [`ServerCore::take_changes`](roger_proto::server::ServerCore::take_changes) before answering), so nothing is measured that a running server would not keep.
pub mod core_setup {
    use roger_proto::authorize::{parse_redirect, AuthorizationRequest, LoginForm, MOBILE_REDIRECT_URI};
    use roger_proto::device_authorization::{DeviceAuthorizationRequest, DeviceAuthorizationResponse};
    use roger_proto::secret::{CsrfToken, Password, PkceVerifier};
    use roger_proto::server::{Principal, ServerCore};
    use roger_proto::token::{client_id, TokenRequest, TokenResponse};
    use time::OffsetDateTime;

    /// The MFP client of the registrations (`emb-<vendor>`, PROTOCOL.md §3).
    pub const MFP: &str = "emb-acme";

    /// What a front end does after each request: commit (here: drop) the journal, publish (drop) push messages.
    pub fn drain(core: &mut ServerCore) {
        drop(core.take_changes());
        drop(core.take_push());
    }

    /// An app session of `username` (PROTOCOL.md §4: login form, then the authorization-code grant with PKCE),
    /// authenticated as an API caller. One Argon2id verification at the tenant's cost.
    ///
    /// # Panics
    /// If the login or the code grant fails (a setup error of the caller).
    pub fn app_principal(
        core: &mut ServerCore,
        now: OffsetDateTime,
        tenant: &str,
        username: &str,
        password: &str,
    ) -> Principal {
        let verifier = PkceVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let request = AuthorizationRequest::for_app(client_id::MOBILE, MOBILE_REDIRECT_URI, &verifier, "bench");
        let form = LoginForm {
            request,
            tenant: tenant.into(),
            username: username.into(),
            password: Password::new(password),
            csrf: CsrfToken::new("checked-by-the-front-end"),
        };
        let location = core.app_login(now, &form).expect("app login");
        drain(core);
        let code = parse_redirect(&location, MOBILE_REDIRECT_URI, "bench").expect("redirect with a code");
        let grant = TokenRequest::AuthorizationCode {
            code,
            redirect_uri: MOBILE_REDIRECT_URI.into(),
            code_verifier: verifier,
            client_id: client_id::MOBILE.into(),
        };
        let tokens = core.token(now, grant, None).expect("authorization-code grant");
        drain(core);
        let bearer = format!("Bearer {}", tokens.access_token.secret());
        core.authenticate(now, Some(&bearer)).expect("the app token authenticates")
    }

    /// `POST /oauth/device_authorization` for a printer registration (PROTOCOL.md §5.1).
    ///
    /// # Panics
    /// If the core refuses.
    pub fn registration_code(
        core: &mut ServerCore,
        now: OffsetDateTime,
        request: &DeviceAuthorizationRequest,
    ) -> DeviceAuthorizationResponse {
        let answer = core.device_authorization(now, request, None).expect("device authorization");
        drain(core);
        answer
    }

    /// A full registration (PROTOCOL.md §5): device authorization, approval by `admin`, the first poll. Returns the
    /// token response (device id, access and refresh token).
    ///
    /// # Panics
    /// If any step is refused.
    pub fn register_printer(
        core: &mut ServerCore,
        now: OffsetDateTime,
        admin: &Principal,
        request: &DeviceAuthorizationRequest,
    ) -> TokenResponse {
        let code = registration_code(core, now, request);
        core.decide_code(now, admin, code.user_code.secret(), true).expect("approval");
        drain(core);
        let poll = TokenRequest::DeviceCode { device_code: code.device_code, client_id: request.client_id.clone() };
        let tokens = core.token(now, poll, None).expect("the first poll redeems the approved code");
        drain(core);
        tokens
    }
}

/// One row of the report: a benchmark of ours and the baseline it is compared with, as criterion
/// `(group, function)` ids.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    /// What the row shows.
    pub name: &'static str,
    /// Our benchmark: `(group, function)`.
    pub ours: (&'static str, &'static str),
    /// The baseline measured in the same run: `(group, function)`.
    pub baseline: (&'static str, &'static str),
}

/// A measured row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What the row shows.
    pub name: &'static str,
    /// Mean time of ours in ns, if measured in this run.
    pub ours_ns: Option<f64>,
    /// Mean time of the baseline in ns, if measured in this run.
    pub baseline_ns: Option<f64>,
}

impl Row {
    /// `ours / baseline`, if both were measured.
    pub fn ratio(&self) -> Option<f64> {
        match (self.ours_ns, self.baseline_ns) {
            (Some(o), Some(b)) if b > 0.0 => Some(o / b),
            _ => None,
        }
    }

    /// `WITHIN TARGET`, `OVER TARGET` or `NOT MEASURED` against `target`.
    pub fn verdict(&self, target: f64) -> &'static str {
        match self.ratio() {
            Some(r) if r <= target => "WITHIN TARGET",
            Some(_) => "OVER TARGET",
            None => "NOT MEASURED",
        }
    }
}

/// Where criterion writes its estimates, found the way criterion 0.5 finds it: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else the `criterion` directory of the target directory holding this executable
/// (`target/release/deps/<bench>` → `target/criterion`), else `target/criterion`.
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.ancestors().map(|a| a.join("criterion")).find(|d| d.is_dir()) {
            return dir;
        }
    }
    PathBuf::from("target/criterion")
}

/// The mean (`mean.point_estimate`, in ns) of `target/criterion/<group>/<function>/new/estimates.json`, if the
/// file exists and was written at or after `since` (so a bench filtered out of this run is not reported with an
/// old number).
pub fn read_mean_ns(criterion_dir: &Path, (group, function): (&str, &str), since: SystemTime) -> Option<f64> {
    let path = criterion_dir.join(safe_name(group)).join(safe_name(function)).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json.get("mean")?.get("point_estimate")?.as_f64()
}

/// Criterion's directory-name mangling of an id (`make_filename_safe`, without the Windows-only parts).
fn safe_name(id: &str) -> String {
    id.replace(['?', '"', '/', '\\', '*', '<', '>', ':', '|', '^'], "_")
}

/// Reads every comparison's estimates.
pub fn measure(criterion_dir: &Path, comparisons: &[Comparison], since: SystemTime) -> Vec<Row> {
    comparisons
        .iter()
        .map(|c| Row {
            name: c.name,
            ours_ns: read_mean_ns(criterion_dir, c.ours, since),
            baseline_ns: read_mean_ns(criterion_dir, c.baseline, since),
        })
        .collect()
}

/// The table: `name | ours ns | baseline ns | ratio | verdict`, with the target in the heading.
pub fn render(title: &str, rows: &[Row], target: f64) -> String {
    let name_w = rows.iter().map(|r| r.name.len()).chain([4]).max().unwrap_or(4);
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let mut out = String::new();
    let _ = writeln!(out, "\n{title}: ratio = ours / baseline (measured in the same run); target ratio ≤ {target}");
    let _ = writeln!(out, "{:<name_w$} | {:>12} | {:>12} | {:>6} | verdict", "name", "ours ns", "baseline ns", "ratio");
    let _ = writeln!(out, "{}", "-".repeat(name_w + 55));
    for r in rows {
        let ratio = r.ratio().map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{:<name_w$} | {:>12} | {:>12} | {:>6} | {}",
            r.name,
            num(r.ours_ns),
            num(r.baseline_ns),
            ratio,
            r.verdict(target)
        );
    }
    out
}

/// Reads the estimates of this run (files written since `since`) and prints the table to stdout. Never fails the
/// process: benchmarks report, they do not gate.
pub fn report(title: &str, comparisons: &[Comparison], since: SystemTime) -> Vec<Row> {
    let dir = criterion_dir();
    let rows = measure(&dir, comparisons, since);
    print!("{}", render(title, &rows, TARGET_RATIO));
    if rows.iter().all(|r| r.ratio().is_none()) {
        println!("(no estimates from this run under {}: benchmarks filtered out or run with --test)", dir.display());
    }
    rows
}

/// One row of a throughput report: like [`Comparison`], for benchmarks whose iteration is a batch of `elements`
/// operations (criterion's `Throughput::Elements(elements)`), reported as operations per second.
#[derive(Debug, Clone, Copy)]
pub struct ThroughputComparison {
    /// What the row shows.
    pub name: &'static str,
    /// Operations per criterion iteration (the same for ours and the baseline).
    pub elements: u64,
    /// Our benchmark: `(group, function)`.
    pub ours: (&'static str, &'static str),
    /// The baseline measured in the same run: `(group, function)`.
    pub baseline: (&'static str, &'static str),
}

/// A measured throughput row.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputRow {
    /// What the row shows.
    pub name: &'static str,
    /// Operations per iteration.
    pub elements: u64,
    /// Mean time of one iteration of ours in ns, if measured in this run.
    pub ours_ns: Option<f64>,
    /// Mean time of one iteration of the baseline in ns, if measured in this run.
    pub baseline_ns: Option<f64>,
}

fn per_second(elements: u64, ns: Option<f64>) -> Option<f64> {
    ns.filter(|ns| *ns > 0.0).map(|ns| elements as f64 * 1e9 / ns)
}

impl ThroughputRow {
    /// Our operations per second.
    pub fn ours_per_sec(&self) -> Option<f64> {
        per_second(self.elements, self.ours_ns)
    }

    /// The baseline's operations per second.
    pub fn baseline_per_sec(&self) -> Option<f64> {
        per_second(self.elements, self.baseline_ns)
    }

    /// `ours / baseline` in operations per second (higher is better), if both were measured.
    pub fn ratio(&self) -> Option<f64> {
        match (self.ours_per_sec(), self.baseline_per_sec()) {
            (Some(o), Some(b)) if b > 0.0 => Some(o / b),
            _ => None,
        }
    }

    /// `WITHIN TARGET` (ratio ≥ `min_ratio`), `UNDER TARGET` or `NOT MEASURED`.
    pub fn verdict(&self, min_ratio: f64) -> &'static str {
        match self.ratio() {
            Some(r) if r >= min_ratio => "WITHIN TARGET",
            Some(_) => "UNDER TARGET",
            None => "NOT MEASURED",
        }
    }
}

/// Reads every throughput comparison's estimates.
pub fn measure_throughput(
    criterion_dir: &Path,
    comparisons: &[ThroughputComparison],
    since: SystemTime,
) -> Vec<ThroughputRow> {
    comparisons
        .iter()
        .map(|c| ThroughputRow {
            name: c.name,
            elements: c.elements,
            ours_ns: read_mean_ns(criterion_dir, c.ours, since),
            baseline_ns: read_mean_ns(criterion_dir, c.baseline, since),
        })
        .collect()
}

/// The table: `name | ours /s | baseline /s | ratio | verdict`, with the target in the heading.
pub fn render_throughput(title: &str, rows: &[ThroughputRow], min_ratio: f64) -> String {
    let name_w = rows.iter().map(|r| r.name.len()).chain([4]).max().unwrap_or(4);
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{title}: ratio = ours / baseline in operations per second (same run); target ratio ≥ {min_ratio}"
    );
    let _ = writeln!(out, "{:<name_w$} | {:>12} | {:>12} | {:>6} | verdict", "name", "ours /s", "baseline /s", "ratio");
    let _ = writeln!(out, "{}", "-".repeat(name_w + 55));
    for r in rows {
        let ratio = r.ratio().map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{:<name_w$} | {:>12} | {:>12} | {:>6} | {}",
            r.name,
            num(r.ours_per_sec()),
            num(r.baseline_per_sec()),
            ratio,
            r.verdict(min_ratio)
        );
    }
    out
}

/// Reads the estimates of this run (files written since `since`) and prints the throughput table to stdout against
/// `min_ratio`. Never fails the process: benchmarks report, they do not gate.
pub fn report_throughput(
    title: &str,
    comparisons: &[ThroughputComparison],
    since: SystemTime,
    min_ratio: f64,
) -> Vec<ThroughputRow> {
    let dir = criterion_dir();
    let rows = measure_throughput(&dir, comparisons, since);
    print!("{}", render_throughput(title, &rows, min_ratio));
    if rows.iter().all(|r| r.ratio().is_none()) {
        println!("(no estimates from this run under {}: benchmarks filtered out or run with --test)", dir.display());
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baselines_parse_the_fixtures() {
        let t: baseline::PlainTokenResponse = serde_json::from_str(fixtures::TOKEN_RESPONSE).unwrap();
        assert_eq!(t.expires_in, Some(1200));
        let d: baseline::PlainDeviceAuthorizationResponse =
            serde_json::from_str(fixtures::DEVICE_AUTHORIZATION_RESPONSE).unwrap();
        assert_eq!(d.user_code, "WDJBMJHT");
        let p: baseline::PlainPushEnvelope = serde_json::from_str(fixtures::PUSH_ENVELOPE).unwrap();
        assert_eq!(p.data.job_id.as_deref(), Some("job-42"));
    }

    #[test]
    fn roger_proto_parses_the_fixtures() {
        let t: roger_proto::token::TokenResponse = serde_json::from_str(fixtures::TOKEN_RESPONSE).unwrap();
        assert!(t.is_bearer());
        let d: roger_proto::device_authorization::DeviceAuthorizationResponse =
            serde_json::from_str(fixtures::DEVICE_AUTHORIZATION_RESPONSE).unwrap();
        assert_eq!(d.interval, Some(5));
        let p = roger_proto::push::PushEnvelope::parse(fixtures::PUSH_ENVELOPE.as_bytes()).unwrap();
        assert_eq!(p.event_type(), "job.release_requested");
    }

    #[test]
    fn reads_estimates_and_renders() {
        let dir = std::env::temp_dir().join(format!("roger-benches-test-{}", std::process::id()));
        let since = SystemTime::now() - std::time::Duration::from_secs(5);
        for (bench, mean) in [("ours", 260.0), ("baseline", 200.0)] {
            let d = dir.join("g_x").join(bench).join("new");
            std::fs::create_dir_all(&d).unwrap();
            let json = format!(r#"{{"mean":{{"point_estimate":{mean},"standard_error":1.0}}}}"#);
            std::fs::write(d.join("estimates.json"), json).unwrap();
        }
        let c = Comparison { name: "x", ours: ("g/x", "ours"), baseline: ("g/x", "baseline") };
        let missing = Comparison { name: "y", ours: ("g/x", "nope"), baseline: ("g/x", "baseline") };
        let rows = measure(&dir, &[c, missing], since);
        assert_eq!(rows[0].ratio(), Some(1.3));
        assert_eq!(rows[0].verdict(TARGET_RATIO), "WITHIN TARGET");
        assert_eq!(rows[0].verdict(1.2), "OVER TARGET");
        assert_eq!(rows[1].verdict(TARGET_RATIO), "NOT MEASURED");
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(measure(&dir, &[c], later)[0].ratio(), None, "estimates older than the run are ignored");
        let table = render("t", &rows, TARGET_RATIO);
        assert!(table.contains("260.0") && table.contains("1.30") && table.contains("NOT MEASURED"), "{table}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_throughput_and_renders() {
        let dir = std::env::temp_dir().join(format!("roger-benches-thrpt-test-{}", std::process::id()));
        let since = SystemTime::now() - std::time::Duration::from_secs(5);
        // 256 requests per iteration: 25.6 ms → 10,000/s; 12.8 ms → 20,000/s.
        for (bench, mean) in [("ours", 25_600_000.0), ("hello", 12_800_000.0)] {
            let d = dir.join("srv").join(bench).join("new");
            std::fs::create_dir_all(&d).unwrap();
            let json = format!(r#"{{"mean":{{"point_estimate":{mean},"standard_error":1.0}}}}"#);
            std::fs::write(d.join("estimates.json"), json).unwrap();
        }
        let c = ThroughputComparison { name: "x", elements: 256, ours: ("srv", "ours"), baseline: ("srv", "hello") };
        let missing = ThroughputComparison { ours: ("srv", "nope"), ..c };
        let rows = measure_throughput(&dir, &[c, missing], since);
        assert_eq!(rows[0].ours_per_sec().map(f64::round), Some(10_000.0));
        assert_eq!(rows[0].baseline_per_sec().map(f64::round), Some(20_000.0));
        assert_eq!(rows[0].ratio(), Some(0.5));
        assert_eq!(rows[0].verdict(SERVER_TARGET_RATIO), "UNDER TARGET");
        assert_eq!(rows[0].verdict(0.5), "WITHIN TARGET");
        assert_eq!(rows[1].verdict(SERVER_TARGET_RATIO), "NOT MEASURED");
        let table = render_throughput("t", &rows, SERVER_TARGET_RATIO);
        assert!(table.contains("10000") && table.contains("20000") && table.contains("0.50"), "{table}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
