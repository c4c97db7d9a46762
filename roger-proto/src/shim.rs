//! The conformance shim's line protocol (PROTOCOL.md §13).
//!
//! Like BoringSSL's BoGo shim, a vendor wraps its MFP client in a process. The runner writes one JSON object per
//! line to the shim's stdin ([`ShimRequest`]); the shim answers each with exactly one JSON line on stdout, in order
//! ([`ShimAnswer`]): `{"ok":true,…}` or `{"ok":false,"error":"…"}`. The typed answer bodies ([`StartAnswer`],
//! [`RegisterAnswer`], [`PanelAnswer`], …) are what `…` holds for each operation.
//!
//! Both directions use [`to_line`](ShimRequest::to_line) (compact JSON: one line, no embedded line break, since
//! JSON escapes control characters inside strings) and `parse_line` (never panics; errors never quote the line,
//! which may carry a PIN).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::push::redacted_json_error;
use crate::secret::Pin;

/// The `error` of a `wait` that did not reach its state in time (PROTOCOL.md §13).
pub const TIMEOUT_ERROR: &str = "timeout";

/// Capability `screenshot`: the shim can save the panel as a PNG (PROTOCOL.md §13 `start`).
pub const CAP_SCREENSHOT: &str = "screenshot";
/// Capability `push`: the MFP client uses the push channel (PROTOCOL.md §11, §13 `start`).
pub const CAP_PUSH: &str = "push";

/// Every `op` of PROTOCOL.md §13.
pub const OPS: [&str; 11] =
    ["start", "register", "panel", "wait", "pin", "jobs", "release", "scan", "logout", "restart", "stop"];

/// Why a line is not a shim message. Never quotes the line (it may carry a PIN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShimError {
    /// The line holds a line break before its end: a message is exactly one line.
    #[error("a shim message is exactly one line")]
    NotOneLine,
    /// Not a JSON object, or a member of the wrong type or missing.
    #[error("malformed shim message: {0}")]
    Malformed(String),
    /// A request without an `op` member.
    #[error("request has no op")]
    MissingOp,
    /// An `op` this protocol does not define (named only if it looks like an op name).
    #[error("unknown op {0}")]
    UnknownOp(String),
    /// An answer without a boolean `ok`, or with `"ok":false` and no string `error`.
    #[error("answer lacks a boolean ok or, when not ok, a string error")]
    BadAnswer,
    /// A typed answer was expected, but the shim answered `{"ok":false,"error":…}`.
    #[error("shim reported failure: {0}")]
    Failed(String),
}

/// Strips one trailing `\n` or `\r\n` and refuses any other line break.
fn one_line(line: &str) -> Result<&str, ShimError> {
    let line = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(line);
    if line.contains(['\n', '\r']) {
        return Err(ShimError::NotOneLine);
    }
    Ok(line)
}

/// A serde message without quoted values: `missing field `x`` names our own schema and is kept; anything else is
/// cut before its first quote (serde quotes offending values, which may be a PIN).
fn redacted_data_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("missing field") {
        return msg;
    }
    let head = msg.split(['"', '`']).next().unwrap_or("").trim().trim_end_matches(':').to_owned();
    if head.is_empty() {
        redacted_json_error(e)
    } else {
        head
    }
}

/// The state of the MFP panel as the shim reports it (PROTOCOL.md §13 `panel`, R-TOK-4 *disconnected*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum PanelState {
    /// Not registered yet.
    Unregistered,
    /// Showing the registration QR and user code (PROTOCOL.md §5).
    Registering,
    /// Registered, no user: showing the session QR (PROTOCOL.md §8).
    Idle,
    /// A user is logged in.
    Session,
    /// The registration is dead (R-TOK-4): no user login, a reconnect hint.
    Disconnected,
}

/// A request from the runner to the shim (PROTOCOL.md §13), one JSON line tagged by `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ShimRequest {
    /// Start the MFP client against a discovery service; answer [`StartAnswer`].
    Start {
        /// The discovery base URL (PROTOCOL.md §2).
        discovery: String,
        /// A PEM CA bundle to trust, or `null` for the system roots.
        ca: Option<String>,
        /// The MFP's client id (`emb-<vendor>`, PROTOCOL.md §3).
        client_id: String,
        /// Where the MFP keeps its state; the runner may read it.
        state_dir: String,
    },
    /// Begin registration (PROTOCOL.md §5); answer [`RegisterAnswer`].
    Register,
    /// Report the panel; answer [`PanelAnswer`].
    Panel,
    /// Wait until the panel reaches `state`; answer [`PanelAnswer`], or [`TIMEOUT_ERROR`] with the panel fields.
    Wait {
        /// The state to wait for.
        state: PanelState,
        /// How long to wait, in milliseconds.
        timeout_ms: u64,
    },
    /// Type a user name and PIN at the panel (PROTOCOL.md §8 step 2 / PIN login); answer [`PinAnswer`].
    Pin {
        /// The user name.
        username: String,
        /// The PIN (redacted in `Debug`, R-SEC-1).
        pin: Pin,
    },
    /// List the session user's jobs as the panel shows them; answer [`JobsAnswer`].
    Jobs,
    /// Release one job and print it (PROTOCOL.md §9); answer [`ReleaseAnswer`].
    Release {
        /// The job id.
        job: String,
    },
    /// Scan with a profile and upload (PROTOCOL.md §9); answer [`ScanAnswer`].
    Scan {
        /// The scan profile id.
        profile: String,
    },
    /// Log the user out (PROTOCOL.md §8 "End"); answer `{"ok":true}`.
    Logout,
    /// Restart from `state_dir`, as after a power cycle; answer `{"ok":true}`.
    Restart,
    /// Answer `{"ok":true}`, then exit.
    Stop,
}

#[derive(Deserialize)]
struct OpProbe {
    #[serde(default)]
    op: Option<Value>,
}

impl ShimRequest {
    /// The `op` name.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Start { .. } => "start",
            Self::Register => "register",
            Self::Panel => "panel",
            Self::Wait { .. } => "wait",
            Self::Pin { .. } => "pin",
            Self::Jobs => "jobs",
            Self::Release { .. } => "release",
            Self::Scan { .. } => "scan",
            Self::Logout => "logout",
            Self::Restart => "restart",
            Self::Stop => "stop",
        }
    }

    /// The request as one line of JSON, without the trailing newline.
    pub fn to_line(&self) -> String {
        // Strings, numbers and a unit-variant tag always serialise; the fallback is unreachable.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one line (a trailing `\n` or `\r\n` is allowed). Unknown members are ignored; an unknown `op`,
    /// a missing member or a wrong type is an error that does not quote the line.
    pub fn parse_line(line: &str) -> Result<Self, ShimError> {
        let line = one_line(line)?;
        match serde_json::from_str::<Self>(line) {
            Ok(req) => Ok(req),
            Err(e) => Err(Self::diagnose(line, &e)),
        }
    }

    fn diagnose(line: &str, e: &serde_json::Error) -> ShimError {
        if !line.trim_start().starts_with('{') {
            return ShimError::Malformed("not a JSON object".to_owned());
        }
        match serde_json::from_str::<OpProbe>(line) {
            Err(probe) => ShimError::Malformed(redacted_json_error(&probe)),
            Ok(OpProbe { op: None }) => ShimError::MissingOp,
            Ok(OpProbe { op: Some(Value::String(op)) }) if !OPS.contains(&op.as_str()) => {
                let printable = op.len() <= 32 && op.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                ShimError::UnknownOp(if printable { op } else { "(unprintable)".to_owned() })
            }
            Ok(OpProbe { op: Some(Value::String(_)) }) => ShimError::Malformed(redacted_data_error(e)),
            Ok(OpProbe { op: Some(_) }) => ShimError::Malformed("op is not a string".to_owned()),
        }
    }
}

/// One answer line (PROTOCOL.md §13): `{"ok":true,…fields}` or `{"ok":false,"error":"…",…fields}`.
///
/// The fields are kept as JSON so the runner can read any shim; [`typed`](Self::typed) turns them into an
/// answer struct.
#[derive(Debug, Clone, PartialEq)]
pub struct ShimAnswer {
    error: Option<String>,
    fields: Map<String, Value>,
}

fn into_fields<T: Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        Ok(Value::Null) | Err(_) => Map::new(),
        Ok(other) => {
            let mut map = Map::new();
            map.insert("value".to_owned(), other);
            map
        }
    }
}

impl ShimAnswer {
    /// `{"ok":true,…}` with the members of `value` (a struct or map; `&()` gives `{"ok":true}`; any other JSON
    /// value goes under `"value"`). An `ok` member of `value` is dropped.
    pub fn ok<T: Serialize>(value: &T) -> Self {
        let mut fields = into_fields(value);
        fields.remove("ok");
        Self { error: None, fields }
    }

    /// `{"ok":true}`, the answer of `logout`, `restart` and `stop`.
    pub fn ok_empty() -> Self {
        Self { error: None, fields: Map::new() }
    }

    /// `{"ok":false,"error":msg}`.
    pub fn err(msg: impl Into<String>) -> Self {
        Self { error: Some(msg.into()), fields: Map::new() }
    }

    /// `{"ok":false,"error":msg,…}` with the members of `value`, e.g. a `wait` [`TIMEOUT_ERROR`] with the panel.
    pub fn err_with<T: Serialize>(msg: impl Into<String>, value: &T) -> Self {
        let mut fields = into_fields(value);
        fields.remove("ok");
        fields.remove("error");
        Self { error: Some(msg.into()), fields }
    }

    /// Whether the answer is `"ok":true`.
    pub fn is_ok(&self) -> bool {
        self.error.is_none()
    }

    /// The `error` of a failed answer.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The members besides `ok` and `error`.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// Reads the members as a typed answer; a failed answer is [`ShimError::Failed`].
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, ShimError> {
        if let Some(error) = &self.error {
            return Err(ShimError::Failed(error.clone()));
        }
        self.fields_as()
    }

    /// Reads the members as `T` whatever `ok` says (e.g. the panel fields of a `wait` timeout).
    pub fn fields_as<T: DeserializeOwned>(&self) -> Result<T, ShimError> {
        T::deserialize(&Value::Object(self.fields.clone())).map_err(|e| ShimError::Malformed(redacted_data_error(&e)))
    }

    /// The answer as one line of JSON, `ok` first, without the trailing newline.
    pub fn to_line(&self) -> String {
        // A map of JSON values always serialises; the fallback is unreachable.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses one answer line (a trailing `\n` or `\r\n` is allowed).
    pub fn parse_line(line: &str) -> Result<Self, ShimError> {
        let line = one_line(line)?;
        let value: Value = serde_json::from_str(line).map_err(|e| ShimError::Malformed(redacted_json_error(&e)))?;
        let Value::Object(fields) = value else {
            return Err(ShimError::Malformed("not a JSON object".to_owned()));
        };
        Self::from_fields(fields)
    }

    fn from_fields(mut fields: Map<String, Value>) -> Result<Self, ShimError> {
        match fields.remove("ok") {
            Some(Value::Bool(true)) => Ok(Self { error: None, fields }),
            Some(Value::Bool(false)) => match fields.remove("error") {
                Some(Value::String(error)) => Ok(Self { error: Some(error), fields }),
                _ => Err(ShimError::BadAnswer),
            },
            _ => Err(ShimError::BadAnswer),
        }
    }
}

impl Serialize for ShimAnswer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("ok", &self.error.is_none())?;
        if let Some(error) = &self.error {
            map.serialize_entry("error", error)?;
        }
        for (k, v) in &self.fields {
            let reserved = k == "ok" || (self.error.is_some() && k == "error");
            if !reserved {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ShimAnswer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = Map::<String, Value>::deserialize(deserializer)?;
        Self::from_fields(fields).map_err(serde::de::Error::custom)
    }
}

/// `{"ok":true,…}` or `{"ok":false,"error":"…",…}` (PROTOCOL.md §13, `schema` feature); the other members are
/// those of the typed answer of the request's `op` ([`StartAnswer`], [`RegisterAnswer`], [`PanelAnswer`], …).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for ShimAnswer {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ShimAnswer".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "One answer line of the conformance shim (PROTOCOL.md §13).",
            "type": "object",
            "properties": { "ok": { "type": "boolean" }, "error": { "type": "string" } },
            "required": ["ok"],
            "if": { "properties": { "ok": { "const": false } } },
            "then": { "required": ["error"] }
        })
    }
}

/// The answer to `start` (PROTOCOL.md §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StartAnswer {
    /// What the shim can do, e.g. [`CAP_SCREENSHOT`], [`CAP_PUSH`].
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// The answer to `register` (PROTOCOL.md §13, R-QR-1: the QR and the user code are both shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RegisterAnswer {
    /// The QR payload (`verification_uri_complete`); `null` when the server sent none and the panel shows the
    /// verification URI and the code instead (docs/protocol.md §7).
    #[serde(default)]
    pub qr: Option<String>,
    /// The user code as shown (`XXXX-XXXX`).
    pub user_code: String,
    /// A PNG of the panel, if the shim has the `screenshot` capability.
    #[serde(default)]
    pub screenshot: Option<String>,
}

/// The answer to `panel`, and to `wait` once the state is reached (PROTOCOL.md §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PanelAnswer {
    /// The panel state.
    pub state: PanelState,
    /// The QR shown, if any.
    #[serde(default)]
    pub qr: Option<String>,
    /// The user code shown, if any.
    #[serde(default)]
    pub user_code: Option<String>,
    /// A PNG of the panel, if available.
    #[serde(default)]
    pub screenshot: Option<String>,
    /// The logged-in user's name, in `session`.
    #[serde(default)]
    pub user: Option<String>,
    /// The scopes the MFP holds for the user.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// The answer to `pin` (PROTOCOL.md §13: `false` in `disconnected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PinAnswer {
    /// Whether the login succeeded.
    pub accepted: bool,
}

/// One job as the panel lists it (PROTOCOL.md §13 `jobs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ShimJob {
    /// The job id.
    pub id: String,
    /// The file name.
    pub file_name: String,
}

/// The answer to `jobs` (PROTOCOL.md §13).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobsAnswer {
    /// The jobs.
    pub jobs: Vec<ShimJob>,
}

/// The answer to `release` (PROTOCOL.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
// Named apart from the API's `ReleaseAnswer` in generated schemas.
#[cfg_attr(feature = "schema", schemars(rename = "ShimReleaseAnswer"))]
pub struct ReleaseAnswer {
    /// Whether the job printed.
    pub printed: bool,
}

/// The answer to `scan` (PROTOCOL.md §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ScanAnswer {
    /// Whether the scan reached the drive.
    pub uploaded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Debug;

    fn arb_state() -> impl Strategy<Value = PanelState> {
        prop_oneof![
            Just(PanelState::Unregistered),
            Just(PanelState::Registering),
            Just(PanelState::Idle),
            Just(PanelState::Session),
            Just(PanelState::Disconnected),
        ]
    }

    fn arb_request() -> impl Strategy<Value = ShimRequest> {
        let s = any::<String>;
        prop_oneof![
            (s(), proptest::option::of(s()), s(), s()).prop_map(|(discovery, ca, client_id, state_dir)| {
                ShimRequest::Start { discovery, ca, client_id, state_dir }
            }),
            Just(ShimRequest::Register),
            Just(ShimRequest::Panel),
            (arb_state(), any::<u64>()).prop_map(|(state, timeout_ms)| ShimRequest::Wait { state, timeout_ms }),
            (s(), s()).prop_map(|(username, pin)| ShimRequest::Pin { username, pin: Pin::new(pin) }),
            Just(ShimRequest::Jobs),
            s().prop_map(|job| ShimRequest::Release { job }),
            s().prop_map(|profile| ShimRequest::Scan { profile }),
            Just(ShimRequest::Logout),
            Just(ShimRequest::Restart),
            Just(ShimRequest::Stop),
        ]
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        // No floats: serde_json's default float parsing is not exact, and shim answers carry none.
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_fields() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map("[a-z_]{1,12}", arb_json(), 0..5)
            .prop_map(|m| m.into_iter().filter(|(k, _)| k != "ok" && k != "error").collect::<Map<String, Value>>())
    }

    fn arb_answer() -> impl Strategy<Value = ShimAnswer> {
        prop_oneof![
            arb_fields().prop_map(|f| ShimAnswer::ok(&f)),
            (any::<String>(), arb_fields()).prop_map(|(e, f)| ShimAnswer::err_with(e, &f)),
        ]
    }

    fn typed_round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Result<(), TestCaseError> {
        let line = ShimAnswer::ok(value).to_line();
        prop_assert!(!line.contains('\n') && !line.contains('\r'));
        let answer = ShimAnswer::parse_line(&format!("{line}\n")).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(answer.is_ok());
        let back: T = answer.typed().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back, value);
        Ok(())
    }

    proptest! {
        #[test]
        fn request_round_trips(req in arb_request()) {
            let line = req.to_line();
            prop_assert!(!line.contains('\n') && !line.contains('\r'), "one line: {}", line);
            prop_assert_eq!(&ShimRequest::parse_line(&line), &Ok(req.clone()));
            prop_assert_eq!(&ShimRequest::parse_line(&format!("{line}\r\n")), &Ok(req.clone()));
            let v: Value = serde_json::from_str(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(v["op"].as_str(), Some(req.op()));
        }

        #[test]
        fn answer_round_trips(answer in arb_answer()) {
            let line = answer.to_line();
            prop_assert!(!line.contains('\n'));
            let prefix = if answer.is_ok() { r#"{"ok":true"# } else { r#"{"ok":false,"error":"# };
            prop_assert!(line.starts_with(prefix), "{}", line);
            prop_assert_eq!(ShimAnswer::parse_line(&line), Ok(answer));
        }

        #[test]
        fn typed_answers_round_trip(
            capabilities in proptest::collection::vec(any::<String>(), 0..4),
            qr in proptest::option::of(any::<String>()), user_code in any::<String>(), screenshot in proptest::option::of(any::<String>()),
            state in arb_state(), pqr in proptest::option::of(any::<String>()),
            puc in proptest::option::of(any::<String>()), user in proptest::option::of(any::<String>()),
            scopes in proptest::collection::vec(any::<String>(), 0..3),
            flag in any::<bool>(),
            jobs in proptest::collection::vec((any::<String>(), any::<String>()), 0..4),
        ) {
            typed_round_trip(&StartAnswer { capabilities })?;
            typed_round_trip(&RegisterAnswer { qr, user_code, screenshot: screenshot.clone() })?;
            typed_round_trip(&PanelAnswer { state, qr: pqr, user_code: puc, screenshot, user, scopes })?;
            typed_round_trip(&PinAnswer { accepted: flag })?;
            let jobs = jobs.into_iter().map(|(id, file_name)| ShimJob { id, file_name }).collect();
            typed_round_trip(&JobsAnswer { jobs })?;
            typed_round_trip(&ReleaseAnswer { printed: flag })?;
            typed_round_trip(&ScanAnswer { uploaded: !flag })?;
        }

        /// Arbitrary input never panics, and errors never quote it.
        #[test]
        fn parse_never_panics(line in any::<String>()) {
            if let Err(e) = ShimRequest::parse_line(&line) {
                if line.trim().len() >= 8 {
                    prop_assert!(!e.to_string().contains(line.trim()));
                }
            }
            let _ = ShimAnswer::parse_line(&line);
        }
    }

    /// PROTOCOL.md §13 wire forms, exactly as the table writes them.
    #[test]
    fn request_wire_forms() {
        let start = ShimRequest::parse_line(
            r#"{"op":"start","discovery":"https://d:1","ca":null,"client_id":"emb-acme","state_dir":"/tmp/s"}"#,
        )
        .expect("start");
        assert_eq!(
            start,
            ShimRequest::Start {
                discovery: "https://d:1".into(),
                ca: None,
                client_id: "emb-acme".into(),
                state_dir: "/tmp/s".into()
            }
        );
        assert!(start.to_line().contains(r#""ca":null"#), "ca is stated as null");
        assert_eq!(ShimRequest::parse_line(r#"{"op":"register"}"#), Ok(ShimRequest::Register));
        assert_eq!(ShimRequest::Stop.to_line(), r#"{"op":"stop"}"#);
        assert_eq!(
            ShimRequest::parse_line(r#"{"op":"wait","state":"idle","timeout_ms":5000,"extra":[1]}"#),
            Ok(ShimRequest::Wait { state: PanelState::Idle, timeout_ms: 5000 })
        );
        let pin = ShimRequest::parse_line(r#"{"op":"pin","username":"alice","pin":"4321"}"#).expect("pin");
        assert_eq!(pin, ShimRequest::Pin { username: "alice".into(), pin: Pin::new("4321") });
        assert!(!format!("{pin:?}").contains("4321"), "Debug redacts the PIN (R-SEC-1)");
        assert_ne!(pin, ShimRequest::Pin { username: "alice".into(), pin: Pin::new("4322") }, "PINs compare by value");
        assert_eq!(
            ShimRequest::parse_line(r#"{"op":"release","job":"j-1"}"#),
            Ok(ShimRequest::Release { job: "j-1".into() })
        );
    }

    /// Bad lines are refused with a typed error that never quotes the PIN.
    #[test]
    fn bad_requests_are_refused_without_echo() {
        let err = ShimRequest::parse_line(r#"{"op":"pin","username":"alice","pin":98765432}"#).expect_err("number");
        assert!(matches!(&err, ShimError::Malformed(_)));
        assert!(!err.to_string().contains("98765432"), "{err}");
        let err = ShimRequest::parse_line(r#"{"op":"pin","username":"alice"}"#).expect_err("missing");
        assert_eq!(err, ShimError::Malformed("missing field `pin`".into()));
        assert_eq!(ShimRequest::parse_line(r#"{"op":"dance"}"#), Err(ShimError::UnknownOp("dance".into())));
        assert_eq!(
            ShimRequest::parse_line(r#"{"op":"pin 1234 secret"}"#),
            Err(ShimError::UnknownOp("(unprintable)".into()))
        );
        assert_eq!(ShimRequest::parse_line(r#"{"username":"x"}"#), Err(ShimError::MissingOp));
        assert!(matches!(ShimRequest::parse_line(r#"{"op":7}"#), Err(ShimError::Malformed(_))));
        assert!(matches!(ShimRequest::parse_line("[]"), Err(ShimError::Malformed(_))));
        assert!(matches!(ShimRequest::parse_line(""), Err(ShimError::Malformed(_))));
        assert_eq!(ShimRequest::parse_line("{\"op\":\n\"stop\"}"), Err(ShimError::NotOneLine));
        assert!(matches!(
            ShimRequest::parse_line(r#"{"op":"wait","state":"asleep","timeout_ms":1}"#),
            Err(ShimError::Malformed(_))
        ));
        assert!(matches!(
            ShimRequest::parse_line(r#"{"op":"wait","state":"idle","timeout_ms":-1}"#),
            Err(ShimError::Malformed(_))
        ));
    }

    #[test]
    fn answer_wire_forms() {
        assert_eq!(ShimAnswer::ok_empty().to_line(), r#"{"ok":true}"#);
        assert_eq!(ShimAnswer::ok(&()).to_line(), r#"{"ok":true}"#);
        assert_eq!(ShimAnswer::err("no session").to_line(), r#"{"ok":false,"error":"no session"}"#);
        assert_eq!(ShimAnswer::ok(&PinAnswer { accepted: true }).to_line(), r#"{"ok":true,"accepted":true}"#);
        let panel = PanelAnswer {
            state: PanelState::Registering,
            qr: Some("https://api/device?user_code=BCDFGHJK".into()),
            user_code: Some("BCDF-GHJK".into()),
            screenshot: None,
            user: None,
            scopes: vec![],
        };
        let timeout = ShimAnswer::err_with(TIMEOUT_ERROR, &panel);
        let line = timeout.to_line();
        assert!(line.starts_with(r#"{"ok":false,"error":"timeout","#), "{line}");
        let back = ShimAnswer::parse_line(&line).expect("parse");
        assert_eq!(back.error(), Some(TIMEOUT_ERROR));
        assert_eq!(back.typed::<PanelAnswer>(), Err(ShimError::Failed("timeout".into())));
        assert_eq!(back.fields_as::<PanelAnswer>(), Ok(panel));
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["user"], Value::Null, "null members are stated, as in the §13 table");
    }

    #[test]
    fn bad_answers_are_refused() {
        assert_eq!(ShimAnswer::parse_line(r#"{"accepted":true}"#), Err(ShimError::BadAnswer));
        assert_eq!(ShimAnswer::parse_line(r#"{"ok":"yes"}"#), Err(ShimError::BadAnswer));
        assert_eq!(ShimAnswer::parse_line(r#"{"ok":false}"#), Err(ShimError::BadAnswer));
        assert_eq!(ShimAnswer::parse_line(r#"{"ok":false,"error":3}"#), Err(ShimError::BadAnswer));
        assert!(matches!(ShimAnswer::parse_line("true"), Err(ShimError::Malformed(_))));
        assert_eq!(ShimAnswer::parse_line("{\"ok\":true}\n{\"ok\":true}"), Err(ShimError::NotOneLine));
        let wrong = ShimAnswer::parse_line(r#"{"ok":true,"accepted":"SECRETyes"}"#).expect("line");
        let err = wrong.typed::<PinAnswer>().expect_err("wrong type");
        assert!(matches!(&err, ShimError::Malformed(m) if !m.contains("SECRET")), "{err}");
        let panel = ShimAnswer::parse_line(r#"{"ok":true,"state":"idle","qr":"q","future":1}"#).expect("line");
        let p: PanelAnswer = panel.typed().expect("unknown members ignored, absent optionals default");
        assert_eq!((p.state, p.qr.as_deref(), p.user, p.scopes.len()), (PanelState::Idle, Some("q"), None, 0));
    }
}
