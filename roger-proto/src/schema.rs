//! Shared pieces of the JSON Schemas of the wire types (feature `schema`).
//!
//! DESIGN.md asks for "a machine-readable contract generated from the Rust types: OpenAPI for the REST API, JSON
//! Schema for the push envelope and the shim messages". Every serde message type of this crate derives
//! `schemars::JsonSchema` under this feature; the types whose wire form serde cannot describe by itself get a
//! manual schema:
//!
//! * timestamps: `time::OffsetDateTime` fields travel as RFC 3339 strings (PROTOCOL.md §1), so they are described
//!   with [`Rfc3339`] (`{"type":"string","format":"date-time"}`);
//! * secrets ([`crate::secret`]): a plain string on the wire, marked with the extension keyword
//!   [`SECRET_KEYWORD`] so a validator or a log scanner knows the value is a credential (R-SEC-1);
//! * [`crate::OAuthErrorCode`]: a string (RFC 6749 §5.2 codes and any other, PROTOCOL.md §10);
//! * [`crate::push::Id`] and [`crate::push::PushEnvelope`]: ids only (R-PUSH-1), see [`crate::push`];
//! * [`crate::shim::ShimAnswer`]: `{"ok":true,…}` or `{"ok":false,"error":"…",…}` (PROTOCOL.md §13).
//!
//! The schemas describe what this crate *accepts* (schemars' deserialize contract): members with a serde default
//! are optional, unknown members are allowed (DESIGN.md: "unknown JSON fields are ignored").

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

/// The extension keyword that marks a credential in a schema (R-SEC-1: "every response that carries a credential
/// … has `Cache-Control: no-store`"; logs and reports redact it). JSON Schema ignores unknown keywords, and OpenAPI
/// 3.1 allows `x-` extensions in schema objects.
pub const SECRET_KEYWORD: &str = "x-roger-secret";

/// The schema of an RFC 3339 timestamp (PROTOCOL.md §1: "Timestamps in API bodies are RFC 3339 UTC strings").
///
/// Used as `#[schemars(with = "crate::schema::Rfc3339")]` on `time::OffsetDateTime` fields, which serde writes
/// with `time::serde::rfc3339`.
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339;

impl JsonSchema for Rfc3339 {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Rfc3339".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// The schema of a credential string (a [`crate::secret`] newtype): a string marked with [`SECRET_KEYWORD`].
pub fn secret_string() -> Schema {
    json_schema!({ "type": "string", SECRET_KEYWORD: true })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CodeLookup, ExportedScan};

    fn schema_of<T: JsonSchema>() -> serde_json::Value {
        serde_json::to_value(schemars::schema_for!(T)).expect("schema")
    }

    /// PROTOCOL.md §1: timestamps are RFC 3339 strings, also inside `Option`.
    #[test]
    fn timestamps_are_date_time_strings() {
        let v = schema_of::<CodeLookup>();
        assert_eq!(v["properties"]["expires"]["type"], "string");
        assert_eq!(v["properties"]["expires"]["format"], "date-time");
        let v = schema_of::<ExportedScan>();
        assert_eq!(v["properties"]["completed"]["type"], serde_json::json!(["string", "null"]));
        assert_eq!(v["properties"]["completed"]["format"], "date-time");
        assert!(!v["required"].as_array().expect("required").iter().any(|r| r == "completed"));
    }

    /// R-SEC-1: credentials are strings marked as secrets.
    #[test]
    fn secrets_are_marked() {
        let v = schema_of::<crate::token::TokenResponse>();
        assert_eq!(v["properties"]["access_token"]["type"], "string");
        assert_eq!(v["properties"]["access_token"][SECRET_KEYWORD], true);
        assert_eq!(v["properties"]["token_type"].get(SECRET_KEYWORD), None);
    }
}
