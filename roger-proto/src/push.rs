//! The push channel's envelope, routing keys and queue names (PROTOCOL.md §11).
//!
//! A push message is a doorbell (R-PUSH-1): it says *that* something happened, with ids only, and the receiver
//! confirms over HTTPS. This module makes the rule hold by construction:
//!
//! * every id in an envelope is an [`Id`], which only admits ASCII `[A-Za-z0-9._:-]{1,64}`, so a bearer token
//!   with `=`/`/`/`+`, a JWT (longer than 64), a URL, a sentence, a password with a space or symbol, or a document
//!   cannot be put into one, on the sending or the receiving side;
//! * an [`Id`] also refuses the shapes of every credential a Roger server mints: the typed secret prefixes of
//!   [`SECRET_PREFIXES`] (access and refresh tokens, device and authorization codes, tickets, drive URL tokens,
//!   CSRF tokens, all base64url and otherwise inside the id alphabet) and the user-code shape (8 letters of the
//!   RFC 8628 §6.1 consonant alphabet, with or without the hyphen), so a token or code in an id position is
//!   refused when the envelope is built and again when it is parsed;
//! * the event payloads ([`PushEvent`]) have no free-text members at all;
//! * an unknown event type parses as [`PushEvent::Unknown`] with its data dropped, so a receiver ignores it
//!   (forward compatibility) without ever holding what it carried.
//!
//! Delivery is at-least-once: duplicates, reordering and loss are harmless because the receiver re-reads its state
//! (PROTOCOL.md §11). Parsing never panics and its errors never echo the input.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::error::PeerViolation;

/// The topic exchange every push message is published to (PROTOCOL.md §11).
pub const EXCHANGE: &str = "roger.events";

/// The AMQP `content_type` of a push message (PROTOCOL.md §11).
pub const CONTENT_TYPE: &str = "application/json";

/// Longest AMQP 0-9-1 routing key or queue name (a `shortstr`: 255 octets).
pub const MAX_ROUTING_KEY_LEN: usize = 255;

/// Event type `code.approved` (PROTOCOL.md §8: the MFP polls at the earliest moment the interval allows).
pub const CODE_APPROVED: &str = "code.approved";
/// Event type `code.denied`.
pub const CODE_DENIED: &str = "code.denied";
/// Event type `session.ended` (PROTOCOL.md §8 "End").
pub const SESSION_ENDED: &str = "session.ended";
/// Event type `job.queued`.
pub const JOB_QUEUED: &str = "job.queued";
/// Event type `job.release_requested` (PROTOCOL.md §9).
pub const JOB_RELEASE_REQUESTED: &str = "job.release_requested";
/// Event type `device.disconnected` (R-TOK-4).
pub const DEVICE_DISCONNECTED: &str = "device.disconnected";
/// Event type `config.changed`.
pub const CONFIG_CHANGED: &str = "config.changed";

/// All event types of PROTOCOL.md §11.
pub const EVENT_TYPES: [&str; 7] =
    [CODE_APPROVED, CODE_DENIED, SESSION_ENDED, JOB_QUEUED, JOB_RELEASE_REQUESTED, DEVICE_DISCONNECTED, CONFIG_CHANGED];

// ---------------------------------------------------------------------------------------------------------------
// Id
// ---------------------------------------------------------------------------------------------------------------

/// Why a string is not an [`Id`]. Carries nothing of the input (it may be a secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not an id: ids are 1 to 128 characters of A-Z a-z 0-9 . _ : - (R-PUSH-1)")]
pub struct InvalidId;

/// The typed prefixes of the credentials a Roger server mints (`roger_proto::server::mint::SecretKind`, with the
/// `server` feature): access token, refresh token, device code, authorization code, hand-over ticket, drive URL
/// token, CSRF token. R-PUSH-1: an [`Id`] never starts with one, so none of these can ride in a push message.
pub const SECRET_PREFIXES: [&str; 7] = ["rat_", "rrt_", "rdc_", "rac_", "rtk_", "rdu_", "rcs_"];

/// An identifier as a push message may carry it (R-PUSH-1 "ids only, never a token, code, URL or document"):
/// 1 to [`Id::MAX_LEN`] ASCII characters of `A–Z a–z 0–9 . _ : -`, not shaped like a Roger credential.
///
/// * The alphabet has no space, `/`, `+`, `=`, `?`, `#`, `%` or `@`, so URLs, sentences, base64 with padding and
///   `Bearer …` values are refused when an `Id` is made or deserialised; the 64-character cap keeps out JWTs,
///   long opaque tokens and documents.
/// * Strings starting with a typed secret prefix ([`SECRET_PREFIXES`]: every token, code, ticket and URL token a
///   Roger server mints) are refused, and so is the user-code shape (8 letters of the RFC 8628 §6.1 consonant
///   alphabet `BCDFGHJKLMNPQRSTVWXZ`, in any case, optionally as `XXXX-XXXX`), the code a panel shows.
///
/// What a type cannot know is whether some other system's random string is secret; ids minted by a Roger server
/// (`dev_…`, `job_…`, `req_…`, `msg_…`) and installation ids are never credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// The longest id accepted (R-PUSH-1: long enough for any id a Roger server mints or an installation picks,
    /// too short for a JWT or a document).
    pub const MAX_LEN: usize = 64;

    /// Validates and wraps an id.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidId> {
        let value = value.into();
        if Self::is_valid(&value) {
            Ok(Self(value))
        } else {
            Err(InvalidId)
        }
    }

    /// Whether `s` is a valid id: the alphabet and length of [`Id`], and not shaped like a credential
    /// ([`Id::looks_like_credential`]).
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
            && !Self::looks_like_credential(s)
    }

    /// R-PUSH-1: whether `s` has the shape of a credential a Roger server mints or shows: a typed secret prefix
    /// ([`SECRET_PREFIXES`]) or a user code (RFC 8628 §6.1: 8 letters of the consonant alphabet, case-insensitive,
    /// optionally with a hyphen after the fourth).
    pub fn looks_like_credential(s: &str) -> bool {
        if SECRET_PREFIXES.iter().any(|p| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p)) {
            return true;
        }
        let bytes = s.as_bytes();
        let letters: Vec<u8> = match bytes.len() {
            8 => bytes.to_vec(),
            9 if bytes[4] == b'-' => bytes[..4].iter().chain(&bytes[5..]).copied().collect(),
            _ => return false,
        };
        letters.iter().all(|b| crate::user_code::in_alphabet(b.to_ascii_uppercase()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Whether the id can stand as one word of an AMQP topic routing key (PROTOCOL.md §11): no `.`, because
    /// `.` separates words, and a device `a` bound to `device.a.#` would otherwise also receive the messages of
    /// device `a.b`.
    pub fn is_routing_word(&self) -> bool {
        !self.0.contains('.')
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Id {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<String> for Id {
    type Error = InvalidId;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for Id {
    type Error = InvalidId;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    /// Refuses anything that is not an id (R-PUSH-1), without quoting it in the error.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        if Self::is_valid(&s) {
            Ok(Self(s.into_owned()))
        } else {
            Err(serde::de::Error::custom(InvalidId))
        }
    }
}

/// The JSON Schema pattern of an [`Id`]'s alphabet and length (R-PUSH-1); [`ID_CREDENTIAL_PATTERNS`] says what
/// it must not match besides.
#[cfg(feature = "schema")]
pub const ID_PATTERN: &str = "^[A-Za-z0-9._:-]{1,64}$";

/// JSON Schema patterns of the credential shapes an [`Id`] refuses ([`Id::looks_like_credential`]): a typed
/// secret prefix, a user code.
#[cfg(feature = "schema")]
pub const ID_CREDENTIAL_PATTERNS: [&str; 2] = [
    "^([rR][aA][tT]|[rR][rR][tT]|[rR][dD][cC]|[rR][aA][cC]|[rR][tT][kK]|[rR][dD][uU]|[rR][cC][sS])_",
    "^[BCDFGHJKLMNPQRSTVWXZbcdfghjklmnpqrstvwxz]{4}-?[BCDFGHJKLMNPQRSTVWXZbcdfghjklmnpqrstvwxz]{4}$",
];

/// A string of [`ID_PATTERN`] that matches none of [`ID_CREDENTIAL_PATTERNS`] (`schema` feature).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for Id {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PushId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let [prefixed, user_code] = ID_CREDENTIAL_PATTERNS;
        schemars::json_schema!({
            "description": concat!(
                "An id (R-PUSH-1): 1 to 64 characters of A-Z a-z 0-9 . _ : -, never shaped like a credential ",
                "(a typed secret prefix rat_ rrt_ rdc_ rac_ rtk_ rdu_ rcs_, or a user code)"
            ),
            "type": "string",
            "pattern": ID_PATTERN,
            "not": { "anyOf": [ { "pattern": prefixed }, { "pattern": user_code } ] }
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/// Why bytes are not a push envelope, or an id cannot go into a routing key. Never quotes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// Not JSON, or an envelope member of the wrong type or missing (`id`, `type`, `occurred_at`).
    #[error("not a push envelope: {0}")]
    Malformed(String),
    /// A member that must be an id is not one (R-PUSH-1).
    #[error("member {field:?} is not an id (R-PUSH-1)")]
    BadId {
        /// The member (`id`, `device_id`, `user_id`, or a `data` member).
        field: &'static str,
    },
    /// A `data` member the event type requires is missing.
    #[error("data member {field:?} is missing")]
    MissingData {
        /// The member.
        field: &'static str,
    },
    /// `data` is present but not a JSON object.
    #[error("data is not a JSON object")]
    DataNotObject,
    /// Neither `device_id` nor `user_id` names the recipient.
    #[error("the envelope names neither device_id nor user_id")]
    MissingTarget,
    /// Both `device_id` and `user_id` are present (PROTOCOL.md §11: one or the other).
    #[error("the envelope names both device_id and user_id")]
    AmbiguousTarget,
    /// `type` is not a plausible event type name (same alphabet as [`Id`]).
    #[error("type is not an event type name")]
    BadType,
    /// Strict parsing only: something other than the envelope's members, or a `data` value that is not an id
    /// (R-PUSH-1 "ids only, never a token, code, URL or document").
    #[error("not a doorbell: {0}")]
    NotADoorbell(String),
    /// An id with a `.` (or a key over 255 octets) cannot be a word of a topic routing key (PROTOCOL.md §11).
    #[error("id cannot be used in a routing key or queue name")]
    BadRoutingKey,
}

impl PushError {
    /// The peer violation this error reports to the conformance suite, if it is one: a payload carrying
    /// something other than ids is [`PeerViolation::SecretInPush`] (R-PUSH-1).
    pub fn violation(&self) -> Option<PeerViolation> {
        match self {
            Self::BadId { .. } | Self::NotADoorbell(_) => Some(PeerViolation::SecretInPush),
            Self::MissingData { .. } | Self::MissingTarget => Some(PeerViolation::MissingRequiredField),
            _ => None,
        }
    }
}

/// A `serde_json` error without its message text (which may quote the input): category and position only.
pub(crate) fn redacted_json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "io error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end",
    };
    if e.line() == 0 {
        kind.to_owned()
    } else {
        format!("{kind} at line {} column {}", e.line(), e.column())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Envelope
// ---------------------------------------------------------------------------------------------------------------

/// Who a push message is for (PROTOCOL.md §11: `device_id` or `user_id` in the envelope; it also picks the
/// routing key prefix).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PushTarget {
    /// A device: routing key `device.<id>.<type>`, queue `roger.device.<id>`.
    Device(Id),
    /// A user (all their app installations): routing key `user.<id>.<type>`.
    User(Id),
}

impl PushTarget {
    /// The routing key of an event for this target (PROTOCOL.md §11).
    pub fn routing_key(&self, event_type: &str) -> Result<String, PushError> {
        match self {
            Self::Device(id) => device_routing_key(id, event_type),
            Self::User(id) => user_routing_key(id, event_type),
        }
    }
}

/// What happened (PROTOCOL.md §11 types). Payloads hold ids only (R-PUSH-1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PushEvent {
    /// `code.approved {request_id}`: a device authorization request was approved; poll now (PROTOCOL.md §8).
    CodeApproved {
        /// The `request_id` of the device authorization answer (PROTOCOL.md §5 step 1).
        request_id: Id,
    },
    /// `code.denied {request_id}`: poll now to learn `access_denied`.
    CodeDenied {
        /// The `request_id` of the device authorization answer.
        request_id: Id,
    },
    /// `session.ended {device_id}`: the user's session at that printer was ended server-side (PROTOCOL.md §8).
    SessionEnded {
        /// The printer.
        device_id: Id,
    },
    /// `job.queued {job_id}`: a new job is waiting; re-read the job list.
    JobQueued {
        /// The job.
        job_id: Id,
    },
    /// `job.release_requested {job_id, device_id}`: release this job at this printer (PROTOCOL.md §9; to the
    /// printer when the phone releases, to the desktop for a desktop hand-over).
    JobReleaseRequested {
        /// The job.
        job_id: Id,
        /// The printer.
        device_id: Id,
    },
    /// `device.disconnected {device_id}`: the device was removed or its registration died (R-TOK-4).
    DeviceDisconnected {
        /// The device.
        device_id: Id,
    },
    /// `config.changed {}`: re-read `GET /api/v1/device`.
    ConfigChanged,
    /// A type this crate does not know: receivers ignore it (not an error). Its data is dropped. When produced by
    /// parsing, the name is never one of [`EVENT_TYPES`].
    Unknown(Id),
}

impl PushEvent {
    /// The wire `type` (PROTOCOL.md §11).
    pub fn event_type(&self) -> &str {
        match self {
            Self::CodeApproved { .. } => CODE_APPROVED,
            Self::CodeDenied { .. } => CODE_DENIED,
            Self::SessionEnded { .. } => SESSION_ENDED,
            Self::JobQueued { .. } => JOB_QUEUED,
            Self::JobReleaseRequested { .. } => JOB_RELEASE_REQUESTED,
            Self::DeviceDisconnected { .. } => DEVICE_DISCONNECTED,
            Self::ConfigChanged => CONFIG_CHANGED,
            Self::Unknown(name) => name.as_str(),
        }
    }

    /// The `data` object: the ids of the payload, nothing else.
    fn data(&self) -> Map<String, Value> {
        let pairs: Vec<(&str, &Id)> = match self {
            Self::CodeApproved { request_id } | Self::CodeDenied { request_id } => vec![("request_id", request_id)],
            Self::SessionEnded { device_id } | Self::DeviceDisconnected { device_id } => vec![("device_id", device_id)],
            Self::JobQueued { job_id } => vec![("job_id", job_id)],
            Self::JobReleaseRequested { job_id, device_id } => vec![("job_id", job_id), ("device_id", device_id)],
            Self::ConfigChanged | Self::Unknown(_) => vec![],
        };
        pairs.into_iter().map(|(k, v)| (k.to_owned(), Value::String(v.as_str().to_owned()))).collect()
    }

    fn from_wire(event_type: &str, data: &mut RawData) -> Result<Self, PushError> {
        Ok(match event_type {
            CODE_APPROVED => Self::CodeApproved { request_id: data_id(&mut data.request_id, "request_id")? },
            CODE_DENIED => Self::CodeDenied { request_id: data_id(&mut data.request_id, "request_id")? },
            SESSION_ENDED => Self::SessionEnded { device_id: data_id(&mut data.device_id, "device_id")? },
            JOB_QUEUED => Self::JobQueued { job_id: data_id(&mut data.job_id, "job_id")? },
            JOB_RELEASE_REQUESTED => Self::JobReleaseRequested {
                job_id: data_id(&mut data.job_id, "job_id")?,
                device_id: data_id(&mut data.device_id, "device_id")?,
            },
            DEVICE_DISCONNECTED => Self::DeviceDisconnected { device_id: data_id(&mut data.device_id, "device_id")? },
            CONFIG_CHANGED => Self::ConfigChanged,
            other => Self::Unknown(Id::new(other).map_err(|_| PushError::BadType)?),
        })
    }
}

fn data_id(value: &mut Option<DataValue>, field: &'static str) -> Result<Id, PushError> {
    match value.take() {
        None | Some(DataValue::Null) => Err(PushError::MissingData { field }),
        Some(DataValue::Str(s)) => Id::new(s).map_err(|_| PushError::BadId { field }),
        Some(DataValue::Other) => Err(PushError::BadId { field }),
    }
}

/// One push message (PROTOCOL.md §11): `{"id","type","occurred_at","device_id"|"user_id","data":{…}}`.
///
/// Published with `content_type=application/json`, `message_id` = [`id`](Self::id), persistent, to
/// [`EXCHANGE`] under [`routing_key`](Self::routing_key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEnvelope {
    /// The message id (also the AMQP `message_id`); receivers may use it to drop duplicates.
    pub id: Id,
    /// When the event happened (RFC 3339 UTC on the wire).
    pub occurred_at: OffsetDateTime,
    /// Who it is for.
    pub target: PushTarget,
    /// What happened.
    pub event: PushEvent,
}

/// The wire shape, converted to and from [`PushEnvelope`] (serde's internally tagged enums do not combine with
/// flattened targets cleanly).
#[derive(Serialize, Deserialize)]
struct RawEnvelope<D = RawData> {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(with = "time::serde::rfc3339")]
    occurred_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default)]
    data: D,
}

/// The `data` member as received: only the members some event type uses are kept (each as it came, so a wrong type
/// is reported as a bad id), everything else is skipped without building a JSON tree.
#[derive(Default)]
struct RawData {
    request_id: Option<DataValue>,
    device_id: Option<DataValue>,
    job_id: Option<DataValue>,
    not_object: bool,
}

/// One `data` member: a string (moved into an [`Id`] without a copy), or anything else (a bad id).
enum DataValue {
    Str(String),
    Null,
    Other,
}

impl<'de> Deserialize<'de> for DataValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DataValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id string")
            }

            fn visit_str<E>(self, v: &str) -> Result<DataValue, E> {
                Ok(DataValue::Str(v.to_owned()))
            }

            fn visit_string<E>(self, v: String) -> Result<DataValue, E> {
                Ok(DataValue::Str(v))
            }

            fn visit_unit<E>(self) -> Result<DataValue, E> {
                Ok(DataValue::Null)
            }

            fn visit_bool<E>(self, _: bool) -> Result<DataValue, E> {
                Ok(DataValue::Other)
            }

            fn visit_i64<E>(self, _: i64) -> Result<DataValue, E> {
                Ok(DataValue::Other)
            }

            fn visit_u64<E>(self, _: u64) -> Result<DataValue, E> {
                Ok(DataValue::Other)
            }

            fn visit_f64<E>(self, _: f64) -> Result<DataValue, E> {
                Ok(DataValue::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DataValue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(DataValue::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DataValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(DataValue::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawData;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawData, A::Error> {
                let mut r = RawData::default();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "request_id" => &mut r.request_id,
                        "device_id" => &mut r.device_id,
                        "job_id" => &mut r.job_id,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(r)
            }

            fn visit_unit<E>(self) -> Result<RawData, E> {
                Ok(RawData::default())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawData, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawData { not_object: true, ..RawData::default() })
            }

            fn visit_bool<E>(self, _: bool) -> Result<RawData, E> {
                Ok(RawData { not_object: true, ..RawData::default() })
            }

            fn visit_i64<E>(self, _: i64) -> Result<RawData, E> {
                Ok(RawData { not_object: true, ..RawData::default() })
            }

            fn visit_u64<E>(self, _: u64) -> Result<RawData, E> {
                Ok(RawData { not_object: true, ..RawData::default() })
            }

            fn visit_f64<E>(self, _: f64) -> Result<RawData, E> {
                Ok(RawData { not_object: true, ..RawData::default() })
            }

            fn visit_str<E>(self, _: &str) -> Result<RawData, E> {
                Ok(RawData { not_object: true, ..RawData::default() })
            }
        }
        deserializer.deserialize_any(V)
    }
}

const ENVELOPE_MEMBERS: [&str; 6] = ["id", "type", "occurred_at", "device_id", "user_id", "data"];

impl PushEnvelope {
    /// Builds an envelope.
    pub fn new(id: Id, occurred_at: OffsetDateTime, target: PushTarget, event: PushEvent) -> Self {
        Self { id, occurred_at, target, event }
    }

    /// The wire `type`.
    pub fn event_type(&self) -> &str {
        self.event.event_type()
    }

    /// The routing key: `device.<id>.<type>` or `user.<id>.<type>` (PROTOCOL.md §11).
    pub fn routing_key(&self) -> Result<String, PushError> {
        self.target.routing_key(self.event_type())
    }

    fn to_raw(&self) -> RawEnvelope<Value> {
        let (device_id, user_id) = match &self.target {
            PushTarget::Device(id) => (Some(id.as_str().to_owned()), None),
            PushTarget::User(id) => (None, Some(id.as_str().to_owned())),
        };
        RawEnvelope {
            id: self.id.as_str().to_owned(),
            event_type: self.event_type().to_owned(),
            occurred_at: self.occurred_at,
            device_id,
            user_id,
            data: Value::Object(self.event.data()),
        }
    }

    fn from_raw(mut raw: RawEnvelope) -> Result<Self, PushError> {
        let id = Id::new(raw.id).map_err(|_| PushError::BadId { field: "id" })?;
        let target = match (raw.device_id, raw.user_id) {
            (Some(d), None) => PushTarget::Device(Id::new(d).map_err(|_| PushError::BadId { field: "device_id" })?),
            (None, Some(u)) => PushTarget::User(Id::new(u).map_err(|_| PushError::BadId { field: "user_id" })?),
            (Some(_), Some(_)) => return Err(PushError::AmbiguousTarget),
            (None, None) => return Err(PushError::MissingTarget),
        };
        if raw.data.not_object {
            return Err(PushError::DataNotObject);
        }
        let event = PushEvent::from_wire(&raw.event_type, &mut raw.data)?;
        Ok(Self { id, occurred_at: raw.occurred_at, target, event })
    }

    /// The JSON body to publish (PROTOCOL.md §11).
    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, a timestamp and a map of strings always serialises; the fallback is unreachable.
        serde_json::to_vec(&self.to_raw()).unwrap_or_default()
    }

    /// Parses a received body. Unknown members are ignored and unknown types become [`PushEvent::Unknown`]
    /// (forward compatibility); every id is validated (R-PUSH-1). Never panics; errors never quote the input.
    pub fn parse(bytes: &[u8]) -> Result<Self, PushError> {
        let raw: RawEnvelope =
            serde_json::from_slice(bytes).map_err(|e| PushError::Malformed(redacted_json_error(&e)))?;
        Self::from_raw(raw)
    }

    /// [`parse`](Self::parse) plus the conformance check of R-PUSH-1 on a server under test: the envelope has no
    /// members beyond those of PROTOCOL.md §11 and every `data` value is an id string. A receiver in production
    /// uses [`parse`](Self::parse); the suite uses this to report [`PeerViolation::SecretInPush`].
    pub fn parse_strict(bytes: &[u8]) -> Result<Self, PushError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| PushError::Malformed(redacted_json_error(&e)))?;
        if let Value::Object(obj) = &value {
            for key in obj.keys() {
                if !ENVELOPE_MEMBERS.contains(&key.as_str()) {
                    return Err(PushError::NotADoorbell(format!("extra envelope member {}", describe_key(key))));
                }
            }
            if let Some(Value::Object(data)) = obj.get("data") {
                for (key, v) in data {
                    let is_id = matches!(v, Value::String(s) if Id::is_valid(s));
                    if !is_id {
                        return Err(PushError::NotADoorbell(format!("data member {} is not an id", describe_key(key))));
                    }
                }
            }
        }
        // The typed parse refuses what a production receiver refuses (duplicate members among them, which a
        // `Value` silently collapses), so strict is never more lenient than `parse`.
        Self::parse(bytes)
    }
}

/// Names a JSON key in an error only if it looks like an identifier (a key could itself be a leaked secret).
fn describe_key(key: &str) -> String {
    if Id::is_valid(key) && key.len() <= 32 {
        format!("{key:?}")
    } else {
        "(unprintable)".to_owned()
    }
}

impl Serialize for PushEnvelope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_raw().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PushEnvelope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = RawEnvelope::deserialize(deserializer)?;
        Self::from_raw(raw).map_err(serde::de::Error::custom)
    }
}

/// The strict wire contract of R-PUSH-1 (what [`PushEnvelope::parse_strict`] accepts, `schema` feature): exactly
/// the members of PROTOCOL.md §11, one of `device_id` and `user_id`, every `data` value an id, and for each known
/// event type the data members it must carry.
#[cfg(feature = "schema")]
impl schemars::JsonSchema for PushEnvelope {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "PushEnvelope".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let id = generator.subschema_for::<Id>();
        let data_members: [(&str, &[&str]); 7] = [
            (CODE_APPROVED, &["request_id"]),
            (CODE_DENIED, &["request_id"]),
            (SESSION_ENDED, &["device_id"]),
            (JOB_QUEUED, &["job_id"]),
            (JOB_RELEASE_REQUESTED, &["job_id", "device_id"]),
            (DEVICE_DISCONNECTED, &["device_id"]),
            (CONFIG_CHANGED, &[]),
        ];
        let rules: Vec<Value> = data_members
            .iter()
            .filter(|(_, members)| !members.is_empty())
            .map(|(event_type, members)| {
                serde_json::json!({
                    "if": { "properties": { "type": { "const": event_type } }, "required": ["type"] },
                    "then": {
                        "properties": { "data": { "type": "object", "required": members } },
                        "required": ["data"]
                    }
                })
            })
            .collect();
        schemars::json_schema!({
            "description": concat!(
                "A push doorbell (PROTOCOL.md §11, R-PUSH-1): ids only, never a token, code, URL or document. ",
                "Published to the topic exchange roger.events with content_type application/json, message_id = id, ",
                "persistent."
            ),
            "type": "object",
            "properties": {
                "id": id,
                "type": { "type": "string", "pattern": ID_PATTERN, "examples": EVENT_TYPES },
                "occurred_at": { "type": "string", "format": "date-time" },
                "device_id": id,
                "user_id": id,
                "data": { "type": ["object", "null"], "additionalProperties": id }
            },
            "required": ["id", "type", "occurred_at"],
            "additionalProperties": false,
            "oneOf": [{ "required": ["device_id"] }, { "required": ["user_id"] }],
            "allOf": rules
        })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Routing keys and queues
// ---------------------------------------------------------------------------------------------------------------

fn routing(prefix: &str, id: &Id, tail: &str) -> Result<String, PushError> {
    if !id.is_routing_word() {
        return Err(PushError::BadRoutingKey);
    }
    let key = format!("{prefix}.{id}.{tail}");
    if key.len() > MAX_ROUTING_KEY_LEN {
        return Err(PushError::BadRoutingKey);
    }
    Ok(key)
}

fn check_event_type(event_type: &str) -> Result<(), PushError> {
    if Id::is_valid(event_type) {
        Ok(())
    } else {
        Err(PushError::BadType)
    }
}

/// `device.<device_id>.<type>` (PROTOCOL.md §11). The id must not contain `.` ([`Id::is_routing_word`]).
pub fn device_routing_key(device_id: &Id, event_type: &str) -> Result<String, PushError> {
    check_event_type(event_type)?;
    routing("device", device_id, event_type)
}

/// `user.<user_id>.<type>` (PROTOCOL.md §11). The id must not contain `.` ([`Id::is_routing_word`]).
pub fn user_routing_key(user_id: &Id, event_type: &str) -> Result<String, PushError> {
    check_event_type(event_type)?;
    routing("user", user_id, event_type)
}

/// The binding of a device queue: `device.<device_id>.#` (PROTOCOL.md §11).
pub fn device_binding_key(device_id: &Id) -> Result<String, PushError> {
    routing("device", device_id, "#")
}

/// The binding of an app installation's queue: `user.<user_id>.#` (PROTOCOL.md §11).
pub fn user_binding_key(user_id: &Id) -> Result<String, PushError> {
    routing("user", user_id, "#")
}

/// The queue of a device: `roger.device.<device_id>` (PROTOCOL.md §11, declared by the server).
pub fn device_queue(device_id: &Id) -> String {
    format!("roger.device.{device_id}")
}

/// The queue of one app installation: `roger.app.<installation_id>` (PROTOCOL.md §11: one queue per
/// installation, so a phone never eats a desktop's message).
pub fn app_queue(installation_id: &Id) -> String {
    format!("roger.app.{installation_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(s: &str) -> Id {
        Id::new(s).expect("valid id")
    }

    fn arb_id() -> impl Strategy<Value = Id> {
        "[A-Za-z0-9._:-]{1,64}"
            .prop_filter("not credential-shaped", |s| !Id::looks_like_credential(s))
            .prop_map(|s| Id::new(s).expect("strategy yields valid ids"))
    }

    fn arb_time() -> impl Strategy<Value = OffsetDateTime> {
        (0i64..4_102_444_800).prop_map(|s| OffsetDateTime::from_unix_timestamp(s).unwrap_or(OffsetDateTime::UNIX_EPOCH))
    }

    fn arb_event() -> impl Strategy<Value = PushEvent> {
        prop_oneof![
            arb_id().prop_map(|request_id| PushEvent::CodeApproved { request_id }),
            arb_id().prop_map(|request_id| PushEvent::CodeDenied { request_id }),
            arb_id().prop_map(|device_id| PushEvent::SessionEnded { device_id }),
            arb_id().prop_map(|job_id| PushEvent::JobQueued { job_id }),
            (arb_id(), arb_id()).prop_map(|(job_id, device_id)| PushEvent::JobReleaseRequested { job_id, device_id }),
            arb_id().prop_map(|device_id| PushEvent::DeviceDisconnected { device_id }),
            Just(PushEvent::ConfigChanged),
            "x-[a-z0-9.]{1,30}".prop_map(|t| PushEvent::Unknown(Id::new(t).expect("valid type"))),
        ]
    }

    fn arb_envelope() -> impl Strategy<Value = PushEnvelope> {
        let target = prop_oneof![arb_id().prop_map(PushTarget::Device), arb_id().prop_map(PushTarget::User)];
        (arb_id(), arb_time(), target, arb_event())
            .prop_map(|(id, t, target, event)| PushEnvelope::new(id, t, target, event))
    }

    proptest! {
        #[test]
        fn envelope_round_trips(env in arb_envelope()) {
            let bytes = env.to_json();
            prop_assert_eq!(&PushEnvelope::parse(&bytes), &Ok(env.clone()));
            prop_assert_eq!(&PushEnvelope::parse_strict(&bytes), &Ok(env.clone()));
            // Through serde as well (e.g. embedded in another message).
            let via_serde: PushEnvelope = serde_json::from_slice(&serde_json::to_vec(&env).expect("ser")).expect("de");
            prop_assert_eq!(via_serde, env);
        }

        #[test]
        fn id_round_trips(i in arb_id()) {
            let json = serde_json::to_string(&i).expect("ser");
            prop_assert_eq!(serde_json::from_str::<Id>(&json).expect("de"), i);
        }

        /// Parsing arbitrary bytes never panics and never quotes them.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let input = String::from_utf8_lossy(&bytes).into_owned();
            for result in [PushEnvelope::parse(&bytes), PushEnvelope::parse_strict(&bytes)] {
                let err = result.expect_err("random bytes are not an envelope");
                if input.trim().len() >= 8 {
                    prop_assert!(!err.to_string().contains(input.trim()));
                }
            }
        }

        /// Any string outside the id alphabet is refused in every id position.
        #[test]
        fn non_ids_are_refused(bad in "[ -~]{0,40}[ /=+?#%@\"][ -~]{0,40}") {
            prop_assert!(Id::new(bad.clone()).is_err());
            let body = serde_json::json!({
                "id": "m1", "type": "job.queued", "occurred_at": "2024-01-01T00:00:00Z",
                "device_id": "d1", "data": {"job_id": bad}
            });
            let r = PushEnvelope::parse(&serde_json::to_vec(&body).expect("json"));
            prop_assert_eq!(r, Err(PushError::BadId { field: "job_id" }));
        }
    }

    fn raw(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("json")
    }

    /// R-PUSH-1: a token, URL or sentence in any id position is refused, and the error does not quote it.
    #[test]
    fn doorbell_refuses_token_like_ids() {
        let token = "Bearer eyJhbGciOi.J9/abc+def==";
        for (event_type, field) in [
            (CODE_APPROVED, "request_id"),
            (CODE_DENIED, "request_id"),
            (SESSION_ENDED, "device_id"),
            (JOB_QUEUED, "job_id"),
            (DEVICE_DISCONNECTED, "device_id"),
        ] {
            let body = raw(serde_json::json!({
                "id": "m1", "type": event_type, "occurred_at": "2024-01-01T00:00:00Z",
                "device_id": "d1", "data": { field: token }
            }));
            let err = PushEnvelope::parse(&body).expect_err("token refused");
            assert_eq!(err, PushError::BadId { field });
            assert!(!err.to_string().contains("eyJ"));
            assert_eq!(err.violation(), Some(PeerViolation::SecretInPush));
        }
        let body = raw(serde_json::json!({
            "id": "m1", "type": JOB_RELEASE_REQUESTED, "occurred_at": "2024-01-01T00:00:00Z",
            "user_id": "u1", "data": {"job_id": "j1", "device_id": token}
        }));
        assert_eq!(PushEnvelope::parse(&body), Err(PushError::BadId { field: "device_id" }));
        for bad in ["https://drive.example/doc?sig=abc", "a b", "abc=", "a/b", "", &"x".repeat(65)] {
            let body = raw(serde_json::json!({
                "id": "m1", "type": "job.queued", "occurred_at": "2024-01-01T00:00:00Z",
                "user_id": bad, "data": {"job_id": "j1"}
            }));
            assert_eq!(PushEnvelope::parse(&body), Err(PushError::BadId { field: "user_id" }), "{bad:?}");
            let body = raw(serde_json::json!({
                "id": bad, "type": "config.changed", "occurred_at": "2024-01-01T00:00:00Z",
                "device_id": "d1", "data": {}
            }));
            assert_eq!(PushEnvelope::parse(&body), Err(PushError::BadId { field: "id" }), "{bad:?}");
            assert!(serde_json::from_value::<Id>(serde_json::json!(bad)).is_err());
        }
        assert!(Id::new("x".repeat(64)).is_ok());
        assert!(Id::new("x".repeat(65)).is_err(), "longer than MAX_LEN");
        assert!(Id::new("dev-01:a_b.c").is_ok());
        assert!(Id::new("ünïcode").is_err());
        let body = raw(serde_json::json!({
            "id": "m1", "type": "job.queued", "occurred_at": "2024-01-01T00:00:00Z",
            "device_id": "d1", "data": {"job_id": 42}
        }));
        assert_eq!(PushEnvelope::parse(&body), Err(PushError::BadId { field: "job_id" }), "wrong type");
    }

    /// R-PUSH-1 by construction: the shapes of every credential a Roger server mints or shows are refused as ids,
    /// whether built in code or received in an envelope; ordinary minted ids are not.
    #[test]
    fn credential_shaped_ids_are_refused() {
        let b64 = "Xk3_9aQ-7fLmZ0pR2sTuVwYb4cDeF6gHiJkLmNoPqRs";
        for prefix in SECRET_PREFIXES {
            let token = format!("{prefix}{b64}");
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "in the alphabet");
            assert_eq!(Id::new(token.clone()), Err(InvalidId), "{prefix}");
            assert_eq!(Id::new(token.to_uppercase()), Err(InvalidId), "{prefix} in upper case");
            assert_eq!(Id::new(prefix), Err(InvalidId), "the bare prefix");
            let body = raw(serde_json::json!({
                "id": "m1", "type": "job.queued", "occurred_at": "2024-01-01T00:00:00Z",
                "device_id": "d1", "data": {"job_id": token}
            }));
            assert_eq!(PushEnvelope::parse(&body), Err(PushError::BadId { field: "job_id" }));
        }
        for code in ["WDJBMJHT", "WDJB-MJHT", "wdjbmjht", "BCDF-GHJK"] {
            assert!(Id::looks_like_credential(code), "{code}");
            assert!(Id::new(code).is_err(), "{code}");
            let body = raw(serde_json::json!({
                "id": "m1", "type": "code.approved", "occurred_at": "2024-01-01T00:00:00Z",
                "device_id": "d1", "data": {"request_id": code}
            }));
            assert_eq!(PushEnvelope::parse(&body), Err(PushError::BadId { field: "request_id" }), "{code}");
        }
        // A JWT is longer than any id.
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert!(Id::new(jwt).is_err());
        for fine in [
            "dev_AbCdEfGhIjKlMnOp",
            "job_x1",
            "req_Zz9",
            "msg_42",
            "WDJBMJH",
            "WDJBMJHTX",
            "rat",
            "ratx_1",
            "inst-7",
            "demo-desktop",
            "d1",
            "AEIOUAEI",
        ] {
            assert!(Id::new(fine).is_ok(), "{fine}");
        }
    }

    /// Every kind of secret the server core mints is refused as an id (the list of prefixes cannot fall behind).
    #[cfg(feature = "server")]
    #[test]
    fn every_minted_secret_is_refused_as_an_id() {
        use crate::server::mint::{Minter, SecretKind};
        use rand::SeedableRng;
        let mut minter = Minter::new(Box::new(rand::rngs::StdRng::seed_from_u64(5)));
        for kind in [
            SecretKind::AccessToken,
            SecretKind::RefreshToken,
            SecretKind::DeviceCode,
            SecretKind::AuthorizationCode,
            SecretKind::Ticket,
            SecretKind::DriveUrl,
            SecretKind::Csrf,
        ] {
            assert!(SECRET_PREFIXES.contains(&kind.prefix()), "{kind:?}");
            let (plain, _) = minter.secret(kind);
            assert_eq!(Id::new(plain), Err(InvalidId), "{kind:?}");
        }
        let handle = minter.family_handle();
        assert_eq!(Id::new(minter.refresh_token(&handle).0), Err(InvalidId));
        assert_eq!(Id::new(minter.user_code().as_str()), Err(InvalidId));
        for prefix in ["dev", "job", "req", "msg", "scn", "fam"] {
            assert!(Id::new(minter.id(prefix)).is_ok(), "minted ids are ids: {prefix}");
        }
    }

    /// PROTOCOL.md §11: unknown types are ignored by receivers, not an error; their data is dropped.
    #[test]
    fn unknown_type_parses_as_unknown() {
        let body = raw(serde_json::json!({
            "id": "m1", "type": "printer.on_fire", "occurred_at": "2024-01-01T00:00:00Z",
            "device_id": "d1", "data": {"note": "anything at all, even text"}, "extra": 1
        }));
        let env = PushEnvelope::parse(&body).expect("unknown type is fine");
        assert_eq!(env.event, PushEvent::Unknown(id("printer.on_fire")));
        assert_eq!(env.event_type(), "printer.on_fire");
        assert!(!String::from_utf8_lossy(&env.to_json()).contains("anything at all"), "data dropped");
        let body = raw(serde_json::json!({
            "id": "m1", "type": "no such/type", "occurred_at": "2024-01-01T00:00:00Z", "device_id": "d1", "data": {}
        }));
        assert_eq!(PushEnvelope::parse(&body), Err(PushError::BadType));
        let body = raw(serde_json::json!({
            "id": "m1", "type": "config.changed", "occurred_at": "2024-01-01T00:00:00Z", "device_id": "d1"
        }));
        assert_eq!(PushEnvelope::parse(&body).map(|e| e.event), Ok(PushEvent::ConfigChanged), "data may be absent");
    }

    #[test]
    fn envelope_structure_errors() {
        let base = |extra: serde_json::Value| {
            let mut v = serde_json::json!({"id": "m1", "type": "job.queued", "occurred_at": "2024-01-01T00:00:00Z",
                                          "data": {"job_id": "j1"}});
            if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            raw(v)
        };
        assert_eq!(PushEnvelope::parse(&base(serde_json::json!({}))), Err(PushError::MissingTarget));
        assert_eq!(
            PushEnvelope::parse(&base(serde_json::json!({"device_id": "d", "user_id": "u"}))),
            Err(PushError::AmbiguousTarget)
        );
        assert_eq!(
            PushEnvelope::parse(&base(serde_json::json!({"device_id": "d", "data": "job j1"}))),
            Err(PushError::DataNotObject)
        );
        assert_eq!(
            PushEnvelope::parse(&base(serde_json::json!({"device_id": "d", "data": {}}))),
            Err(PushError::MissingData { field: "job_id" })
        );
        assert!(matches!(
            PushEnvelope::parse(&base(serde_json::json!({"device_id": "d", "occurred_at": "yesterday"}))),
            Err(PushError::Malformed(_))
        ));
        for body in [
            &br#"{"id":"m1","type":"job.queued","occurred_at":"SECRET-ish","device_id":"d"}"#[..],
            br#"{"id":["SECRET-ish"],"type":"job.queued","occurred_at":"2024-01-01T00:00:00Z","device_id":"d"}"#,
            br#"{"id":"m1","type":"job.queued","occurred_at":"2024-01-01T00:00:00Z","user_id":"SECRET ish"}"#,
        ] {
            let err = PushEnvelope::parse(body).expect_err("refused");
            assert!(!err.to_string().contains("SECRET"), "errors never quote the input: {err}");
        }
        assert!(matches!(PushEnvelope::parse(b"not json"), Err(PushError::Malformed(_))));
        assert!(matches!(PushEnvelope::parse(b""), Err(PushError::Malformed(_))));
    }

    /// The wire form is exactly PROTOCOL.md §11.
    #[test]
    fn wire_form() {
        let env = PushEnvelope::new(
            id("evt-1"),
            OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
            PushTarget::Device(id("dev-7")),
            PushEvent::JobReleaseRequested { job_id: id("job-3"), device_id: id("dev-7") },
        );
        let v: serde_json::Value = serde_json::from_slice(&env.to_json()).expect("json");
        assert_eq!(
            v,
            serde_json::json!({
                "id": "evt-1", "type": "job.release_requested", "occurred_at": "2023-11-14T22:13:20Z",
                "device_id": "dev-7", "data": {"job_id": "job-3", "device_id": "dev-7"}
            })
        );
        assert_eq!(env.routing_key().as_deref(), Ok("device.dev-7.job.release_requested"));
        let user = PushEnvelope { target: PushTarget::User(id("u-1")), event: PushEvent::ConfigChanged, ..env };
        let v: serde_json::Value = serde_json::from_slice(&user.to_json()).expect("json");
        assert_eq!(v["user_id"], "u-1");
        assert!(v.get("device_id").is_none());
        assert_eq!(v["data"], serde_json::json!({}));
        assert_eq!(user.routing_key().as_deref(), Ok("user.u-1.config.changed"));
        for t in EVENT_TYPES {
            assert!(Id::is_valid(t), "{t}");
        }
    }

    /// PROTOCOL.md §11 names, and the topic-word rule for ids in routing keys.
    #[test]
    fn routing_keys_and_queues() {
        assert_eq!(EXCHANGE, "roger.events");
        let d = id("d-1");
        assert_eq!(device_routing_key(&d, JOB_QUEUED).as_deref(), Ok("device.d-1.job.queued"));
        assert_eq!(user_routing_key(&id("u:9"), CODE_APPROVED).as_deref(), Ok("user.u:9.code.approved"));
        assert_eq!(device_binding_key(&d).as_deref(), Ok("device.d-1.#"));
        assert_eq!(user_binding_key(&id("u9")).as_deref(), Ok("user.u9.#"));
        assert_eq!(device_queue(&d), "roger.device.d-1");
        assert_eq!(app_queue(&id("inst-42")), "roger.app.inst-42");
        // A dotted id would make `device.a.#` match device `a.b`'s messages.
        assert_eq!(device_binding_key(&id("a.b")), Err(PushError::BadRoutingKey));
        assert_eq!(device_routing_key(&id("a.b"), JOB_QUEUED), Err(PushError::BadRoutingKey));
        assert_eq!(device_routing_key(&d, "job.#"), Err(PushError::BadType), "wildcards are not event types");
        // The longest id and type still make a routing key within AMQP's 255 octets.
        let longest = device_routing_key(&id(&"x".repeat(Id::MAX_LEN)), &"y".repeat(Id::MAX_LEN)).expect("fits");
        assert!(longest.len() <= MAX_ROUTING_KEY_LEN);
    }

    /// Strict parsing (the suite's check on a server under test) refuses anything beyond ids.
    #[test]
    fn strict_parse_refuses_payload_beyond_ids() {
        let with_token = raw(serde_json::json!({
            "id": "m1", "type": "code.approved", "occurred_at": "2024-01-01T00:00:00Z", "device_id": "d1",
            "data": {"request_id": "r1", "access_token": "abc def/ghi="}
        }));
        assert!(PushEnvelope::parse(&with_token).is_ok(), "lenient receivers ignore and drop it");
        let err = PushEnvelope::parse_strict(&with_token).expect_err("strict refuses");
        assert!(matches!(&err, PushError::NotADoorbell(m) if m.contains("access_token") && !m.contains("ghi")));
        assert_eq!(err.violation(), Some(PeerViolation::SecretInPush));
        let extra = raw(serde_json::json!({
            "id": "m1", "type": "config.changed", "occurred_at": "2024-01-01T00:00:00Z", "device_id": "d1",
            "data": {}, "url": "https://x"
        }));
        assert!(matches!(PushEnvelope::parse_strict(&extra), Err(PushError::NotADoorbell(_))));
    }
}
