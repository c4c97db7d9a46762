//! Shared wire helpers: form bodies (RFC 6749 Appendix B), header parsing (`Retry-After`, `WWW-Authenticate`),
//! lenient number parsing, and the two response classifiers every endpoint module uses.

use std::time::Duration;

use http::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Request, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::{OAuthErrorResponse, PeerViolation, ProblemDetails, ResponseError};
use crate::secret::AccessToken;

/// `application/x-www-form-urlencoded`, the body type of every OAuth endpoint (RFC 6749 §3.2, RFC 8628 §3.1).
pub const FORM: &str = "application/x-www-form-urlencoded";
/// `application/json`.
pub const JSON: &str = "application/json";

/// Why a form body cannot be read (RFC 6749 §3.1: "parameters MUST NOT be included more than once").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// The same parameter twice.
    #[error("parameter {0:?} appears more than once")]
    Duplicate(String),
    /// A required parameter is absent or empty.
    #[error("missing parameter {0:?}")]
    Missing(&'static str),
    /// A parameter has a value this protocol does not accept.
    #[error("parameter {name:?} has an unsupported value")]
    BadValue {
        /// Its name.
        name: &'static str,
    },
    /// The body is not UTF-8, or a percent-encoded name or value does not decode to UTF-8 (RFC 6749 Appendix B).
    #[error("form body is not UTF-8")]
    NotUtf8,
}

/// A parsed form: pairs in order, no duplicates.
///
/// The decoded names and values live in one buffer and the pairs are spans of it, so parsing a form costs two
/// allocations however many parameters it has (the token endpoint parses one per request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    text: String,
    pairs: Vec<(Span, Span)>,
}

/// A decoded name or value: `text[start..end]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Form {
    /// Parses `application/x-www-form-urlencoded` bytes, refusing duplicate parameters and invalid UTF-8, also when
    /// it is percent-encoded (`%FF`): RFC 6749 Appendix B encodes names and values as UTF-8 before percent-encoding,
    /// so such a request is malformed and is not silently decoded to U+FFFD.
    pub fn parse(body: &[u8]) -> Result<Self, FormError> {
        if std::str::from_utf8(body).is_err() {
            return Err(FormError::NotUtf8);
        }
        let mut text: Vec<u8> = Vec::with_capacity(body.len());
        // Separators are found with `memchr` (a form is mostly long tokens between a few of them).
        let mut pairs: Vec<(Span, Span)> = Vec::with_capacity(memchr::memchr_iter(b'&', body).count() + 1);
        let mut rest = body;
        while !rest.is_empty() {
            let pair;
            (pair, rest) = match memchr::memchr(b'&', rest) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            if pair.is_empty() {
                continue;
            }
            let (k, v) = match memchr::memchr(b'=', pair) {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            let k = decode_form_component(k, &mut text)?;
            let v = decode_form_component(v, &mut text)?;
            if k.start == k.end && v.start == v.end {
                continue;
            }
            if pairs.iter().any(|(name, _)| text[name.start..name.end] == text[k.start..k.end]) {
                let name = String::from_utf8_lossy(&text[k.start..k.end]).into_owned();
                return Err(FormError::Duplicate(name));
            }
            pairs.push((k, v));
        }
        // Every component was checked when decoded (the body is UTF-8, and so is each decoded escape sequence).
        let text = String::from_utf8(text).map_err(|_| FormError::NotUtf8)?;
        Ok(Self { text, pairs })
    }

    fn str(&self, span: Span) -> &str {
        &self.text[span.start..span.end]
    }

    /// The value of `name`, if present (RFC 6749 §3.1: empty values are treated as omitted).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs().find(|(k, _)| *k == name).map(|(_, v)| v).filter(|v| !v.is_empty())
    }

    /// The value of a required parameter.
    pub fn require(&self, name: &'static str) -> Result<&str, FormError> {
        self.get(name).ok_or(FormError::Missing(name))
    }

    /// All pairs `(name, value)`, in order.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.pairs.iter().map(|&(k, v)| (self.str(k), self.str(v)))
    }
}

/// Decodes one name or value onto the end of `out` as `form_urlencoded::parse` does (`+` is a space, `%XX` a byte, a
/// `%` without two hex digits stays as it is), but strictly: bytes that are not UTF-8 are an error, not U+FFFD.
/// Returns the span of `out` it wrote.
fn decode_form_component(input: &[u8], out: &mut Vec<u8>) -> Result<Span, FormError> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let start = out.len();
    let mut escaped = false;
    let mut rest = input;
    // Runs without `+` or `%` (all of a token, a client id, a grant type) are copied whole.
    while let Some(i) = memchr::memchr2(b'+', b'%', rest) {
        out.extend_from_slice(&rest[..i]);
        let mut used = 1;
        if rest[i] == b'+' {
            out.push(b' ');
        } else if let (Some(h), Some(l)) =
            (rest.get(i + 1).and_then(|b| hex(*b)), rest.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push(h << 4 | l);
            escaped = true;
            used = 3;
        } else {
            out.push(b'%');
        }
        rest = &rest[i + used..];
    }
    out.extend_from_slice(rest);
    // Unescaped bytes come from a UTF-8 body and `+`/`%` are ASCII: only a decoded escape can break UTF-8.
    if escaped && std::str::from_utf8(&out[start..]).is_err() {
        return Err(FormError::NotUtf8);
    }
    Ok(Span { start, end: out.len() })
}

/// Serialises pairs as a form body; `None` values are left out.
pub fn encode_form<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Vec<u8> {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            ser.append_pair(k, v);
        }
    }
    ser.finish().into_bytes()
}

/// Builds a POST with a form body, optionally with the device-bound `Authorization: Bearer` of PROTOCOL.md §7.
pub(crate) fn post_form(
    uri: &str,
    body: Vec<u8>,
    bearer: Option<&AccessToken>,
) -> Result<Request<Vec<u8>>, http::Error> {
    let mut b = Request::post(uri).header(CONTENT_TYPE, FORM).header(http::header::ACCEPT, JSON);
    if let Some(token) = bearer {
        b = b.header(http::header::AUTHORIZATION, bearer_value(token));
    }
    b.body(body)
}

/// `Bearer <token>` (RFC 6750 §2.1). The header value is marked sensitive so `http`'s `Debug` hides it.
pub fn bearer_value(token: &AccessToken) -> http::HeaderValue {
    let mut v = http::HeaderValue::from_str(&format!("Bearer {}", token.secret()))
        .unwrap_or_else(|_| http::HeaderValue::from_static("Bearer invalid"));
    v.set_sensitive(true);
    v
}

/// Builds an API request with a bearer token in the header (never in the query: RFC 6750 §2.3, RFC 9700 §2.5).
pub fn api_request(
    method: http::Method,
    uri: &str,
    token: &AccessToken,
    json_body: Option<Vec<u8>>,
) -> Result<Request<Vec<u8>>, http::Error> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header(http::header::AUTHORIZATION, bearer_value(token))
        .header(http::header::ACCEPT, JSON);
    if json_body.is_some() {
        b = b.header(CONTENT_TYPE, JSON);
    }
    b.body(json_body.unwrap_or_default())
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delta-seconds, or an HTTP-date measured against the response's own
/// `Date` header (so no clock is read here). Anything unreadable is `None`.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = raw.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(86_400)));
    }
    let when = parse_http_date(raw)?;
    let date = parse_http_date(headers.get(http::header::DATE)?.to_str().ok()?.trim())?;
    let delta = (when - date).whole_seconds();
    Some(Duration::from_secs(delta.clamp(0, 86_400) as u64))
}

fn parse_http_date(s: &str) -> Option<time::OffsetDateTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s, &fmt).ok().map(|p| p.assume_utc())
}

/// The `error` auth-param of a `WWW-Authenticate: Bearer …` challenge (RFC 6750 §3).
pub fn www_authenticate_error(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(s) = value.to_str() else { continue };
        if let Some(v) = auth_param(s, "error") {
            return Some(v);
        }
    }
    None
}

/// Reads one auth-param (`name="value"` or `name=token`) out of a challenge string.
pub fn auth_param(challenge: &str, name: &str) -> Option<String> {
    let mut rest = challenge;
    while let Some(pos) = rest.find(name) {
        let before_ok = pos == 0 || matches!(rest.as_bytes()[pos - 1], b' ' | b',' | b'\t');
        let after = rest[pos + name.len()..].trim_start();
        if before_ok {
            if let Some(after_eq) = after.strip_prefix('=') {
                let after_eq = after_eq.trim_start();
                if let Some(quoted) = after_eq.strip_prefix('"') {
                    let end = quoted.find('"')?;
                    return Some(quoted[..end].to_owned());
                }
                let end = after_eq.find([',', ' ']).unwrap_or(after_eq.len());
                return Some(after_eq[..end].to_owned());
            }
        }
        rest = &rest[pos + name.len()..];
    }
    None
}

/// Deserialises a lifetime in seconds that servers send as a number or, wrongly but commonly, as a string
/// (`"expires_in":"3600"`). Negative or fractional numbers are clamped/truncated; other types are an error.
pub fn lenient_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    LenientSeconds::deserialize(d).map(|l| l.secs)
}

/// A lifetime in seconds read like [`lenient_seconds`], remembering whether it came as a string, so that a
/// classifier can report [`PeerViolation::ExpiresInAsString`] (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LenientSeconds {
    /// The seconds.
    pub secs: u64,
    /// Whether the server sent a string (`"1200"`) instead of a number (RFC 6749 §5.1).
    pub from_string: bool,
}

impl<'de> Deserialize<'de> for LenientSeconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LenientSeconds;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(LenientSeconds { secs: v, from_string: false })
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(LenientSeconds { secs: v.max(0) as u64, from_string: false })
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                if v.is_finite() {
                    Ok(LenientSeconds { secs: v.max(0.0) as u64, from_string: false })
                } else {
                    Err(E::custom("lifetime is not a finite number"))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let secs = v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| E::custom("lifetime string is not a whole number of seconds"))?;
                Ok(LenientSeconds { secs, from_string: true })
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether `Cache-Control` carries `no-store` (RFC 6749 §5.1, RFC 9111 §5.2.2.5; R-SEC-1), in any of its values.
pub fn has_no_store(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-store"))))
}

/// [`lenient_seconds`] for optional members.
pub fn lenient_seconds_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "lenient_seconds")] u64);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}

/// Whether a JSON body has an `"error"` key (or string), found with a SIMD substring search so the common success
/// path pays a few nanoseconds.
fn mentions_error(body: &[u8]) -> bool {
    memchr::memmem::find(body, b"\"error\"").is_some()
}

fn is_json_object(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn content_type(headers: &HeaderMap) -> &str {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[derive(Deserialize)]
struct ErrorProbe {
    error: Option<serde_json::Value>,
}

/// Classifies the answer of an OAuth endpoint (RFC 6749 §5.1/§5.2, RFC 8628 §3.2/§3.5, RFC 7009 §2.2).
///
/// * any status with a JSON body carrying a string `error` → [`ResponseError::OAuth`] (a 200 carrying an error is
///   what some servers do; it is still an error);
/// * 2xx → the success type, or [`ResponseError::Malformed`];
/// * 5xx, 429, 408 with another body (an HTML page from a proxy) → [`ResponseError::Unavailable`], retryable;
/// * other 4xx → problem details if they parse, else [`ResponseError::UnexpectedStatus`].
pub fn classify_oauth<T: DeserializeOwned>(resp: &Response<Vec<u8>>) -> Result<T, ResponseError> {
    classify(resp, true)
}

/// Classifies the answer of a Roger API endpoint (PROTOCOL.md §9–10): 2xx → `T`; errors as
/// [`classify_oauth`], with RFC 9457 problem details preferred.
pub fn classify_api<T: DeserializeOwned>(resp: &Response<Vec<u8>>) -> Result<T, ResponseError> {
    classify(resp, false)
}

/// Like [`classify_api`] for answers without a body of interest (204, or a 200 whose body is ignored).
pub fn classify_api_empty(resp: &Response<Vec<u8>>) -> Result<(), ResponseError> {
    if resp.status().is_success() {
        return Ok(());
    }
    classify::<serde::de::IgnoredAny>(resp, false).map(|_| ())
}

/// Classifies an API answer of the form `{"<member>":[…]}` item by item (docs/protocol.md §7): the list itself must
/// be there (else [`PeerViolation::MissingRequiredField`], refused), but an item that does not read as `T` is left
/// out and noted as [`PeerViolation::ListItemRefused`], and an item without one of the `defaulted` members is
/// kept with `T`'s default for it and noted as [`PeerViolation::MemberDefaulted`]. Errors as [`classify_api`].
pub fn classify_api_list<T: DeserializeOwned>(
    resp: &Response<Vec<u8>>,
    member: &'static str,
    defaulted: &[&str],
) -> Result<(Vec<T>, crate::error::PeerViolations), ResponseError> {
    let status = resp.status().as_u16();
    let mut body: serde_json::Map<String, serde_json::Value> = classify_api(resp)?;
    let Some(serde_json::Value::Array(items)) = body.remove(member) else {
        return Err(ResponseError::Malformed {
            status,
            violation: PeerViolation::MissingRequiredField,
            detail: format!("the answer has no `{member}` list"),
        });
    };
    let mut notes = crate::error::PeerViolations::NONE;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        if let serde_json::Value::Object(map) = &item {
            if defaulted.iter().any(|m| !map.contains_key(*m)) {
                notes.insert(PeerViolation::MemberDefaulted);
            }
        }
        match T::deserialize(item) {
            Ok(t) => out.push(t),
            Err(_) => notes.insert(PeerViolation::ListItemRefused),
        }
    }
    Ok((out, notes))
}

/// Classifies an API answer as [`classify_api`] does, noting [`PeerViolation::MemberDefaulted`] when one of the
/// `optional` member paths (e.g. `["upload", "expires_at"]`) is absent from an object that is there
/// (docs/protocol.md §7).
pub fn classify_api_defaults<T: DeserializeOwned>(
    resp: &Response<Vec<u8>>,
    optional: &[&[&str]],
) -> Result<(T, crate::error::PeerViolations), ResponseError> {
    let status = resp.status().as_u16();
    let value: serde_json::Value = classify_api(resp)?;
    let mut notes = crate::error::PeerViolations::NONE;
    for path in optional {
        let Some((last, parents)) = path.split_last() else { continue };
        let parent = parents.iter().try_fold(&value, |v, m| v.get(*m));
        if parent.is_some_and(|p| p.is_object() && p.get(*last).is_none()) {
            notes.insert(PeerViolation::MemberDefaulted);
        }
    }
    let t = T::deserialize(value).map_err(|e| ResponseError::Malformed {
        status,
        violation: PeerViolation::MalformedSuccessBody,
        detail: redact_serde_error(&e),
    })?;
    Ok((t, notes))
}

fn classify<T: DeserializeOwned>(resp: &Response<Vec<u8>>, oauth: bool) -> Result<T, ResponseError> {
    let status = resp.status().as_u16();
    let body = resp.body().as_slice();
    let json_like = is_json_object(body);

    // An OAuth error, whatever the status (a 200 carrying `{"error":…}` is still an error). Headers are read only
    // on this path and below, so the success path costs little more than the parse itself.
    let oauth_error = || -> Option<ResponseError> {
        if !json_like || !mentions_error(body) {
            return None;
        }
        match serde_json::from_slice::<ErrorProbe>(body) {
            Ok(ErrorProbe { error: Some(serde_json::Value::String(_)) }) => {}
            _ => return None,
        }
        let parsed = serde_json::from_slice::<OAuthErrorResponse>(body).ok()?;
        Some(ResponseError::OAuth {
            status,
            body: Box::new(parsed),
            retry_after: retry_after(resp.headers()),
            www_authenticate_error: www_authenticate_error(resp.headers()),
        })
    };

    if resp.status().is_success() {
        return match serde_json::from_slice::<T>(body) {
            // A success type with only optional members could also swallow an error body: check for one.
            Ok(t) => match oauth_error() {
                Some(e) => Err(e),
                None => Ok(t),
            },
            Err(e) => Err(oauth_error().unwrap_or_else(|| ResponseError::Malformed {
                status,
                violation: PeerViolation::MalformedSuccessBody,
                detail: redact_serde_error(&e),
            })),
        };
    }
    if let Some(e) = oauth_error() {
        return Err(e);
    }
    let headers = resp.headers();
    let retry_after = retry_after(headers);
    let www = www_authenticate_error(headers);
    let problem = if json_like && (!oauth || content_type(headers).starts_with(crate::error::PROBLEM_JSON)) {
        serde_json::from_slice::<ProblemDetails>(body).ok()
    } else {
        None
    };
    if let Some(problem) = problem {
        return Err(ResponseError::Problem {
            status,
            problem: Box::new(problem),
            retry_after,
            www_authenticate_error: www,
        });
    }
    if status >= 500 || status == 429 || status == 408 {
        return Err(ResponseError::Unavailable { status, retry_after });
    }
    Err(ResponseError::UnexpectedStatus { status, www_authenticate_error: www })
}

/// serde_json's messages quote offending values (`invalid type: string "tok…"`); keep only the category and position.
fn redact_serde_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "unexpected end",
    };
    let msg = e.to_string();
    let what = msg.split(&['"', '`'][..]).next().unwrap_or("").trim().trim_end_matches(':');
    format!("{kind} at line {} column {}: {what}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, ct: &str, body: &str) -> Response<Vec<u8>> {
        Response::builder().status(status).header(CONTENT_TYPE, ct).body(body.as_bytes().to_vec()).unwrap()
    }

    #[derive(Debug, Deserialize, PartialEq)]
    struct Ok1 {
        a: u32,
    }

    /// RFC 6749 §3.1: duplicate parameters are refused.
    #[test]
    fn form_refuses_duplicates() {
        assert_eq!(Form::parse(b"a=1&a=2"), Err(FormError::Duplicate("a".into())));
        let f = Form::parse(b"a=1&b=&c=x%20y").unwrap();
        assert_eq!(f.get("a"), Some("1"));
        assert_eq!(f.get("b"), None, "empty values are omitted (RFC 6749 §3.1)");
        assert_eq!(f.get("c"), Some("x y"));
        assert_eq!(Form::parse(&[0xff, b'=', b'1']), Err(FormError::NotUtf8));
    }

    /// RFC 6749 Appendix B: percent-encoded bytes must decode to UTF-8 too; otherwise decoding is that of
    /// `form_urlencoded` (`+`, `%XX`, a stray `%` kept as it is).
    #[test]
    fn form_refuses_percent_encoded_invalid_utf8() {
        assert_eq!(Form::parse(b"a=%ff%fe"), Err(FormError::NotUtf8));
        assert_eq!(Form::parse(b"%C3=1"), Err(FormError::NotUtf8), "names too");
        for body in ["a=%C3%A9+b&c=%&d=%4&e=%zz%41&f=100%25&g&&=&h==x", "", "&&", "x=%EF%BF%BD"] {
            let ours = Form::parse(body.as_bytes()).unwrap();
            let theirs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
                .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let ours: Vec<(&str, &str)> = ours.pairs().collect();
            let theirs: Vec<(&str, &str)> = theirs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            assert_eq!(ours, theirs, "{body}");
        }
    }

    proptest::proptest! {
        /// Decoding agrees with `form_urlencoded` on any body it accepts (runs copied whole, `+`, `%XX` and stray
        /// `%` in any position), and any body it refuses has a duplicate name or an escape that is not UTF-8.
        #[test]
        fn form_decodes_as_form_urlencoded(body in "([a-c%+=&]|%[0-9a-fA-F]{0,2}|%[cC]3%[aA]9|[éx]){0,24}") {
            let theirs: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
                .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            match Form::parse(body.as_bytes()) {
                Ok(ours) => {
                    let ours: Vec<(&str, &str)> = ours.pairs().collect();
                    let theirs: Vec<(&str, &str)> = theirs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                    proptest::prop_assert_eq!(ours, theirs);
                }
                Err(FormError::Duplicate(name)) => {
                    proptest::prop_assert!(theirs.iter().filter(|(k, _)| *k == name).count() > 1);
                }
                Err(FormError::NotUtf8) => {
                    let replaced = |s: &String| s.contains(char::REPLACEMENT_CHARACTER);
                    let lossy = theirs.iter().any(|(k, v)| replaced(k) || replaced(v));
                    proptest::prop_assert!(lossy, "refused as not UTF-8, but no escape decodes lossily");
                }
                Err(e) => proptest::prop_assert!(false, "unexpected {e:?}"),
            }
        }
    }

    /// A 200 that carries `{"error":…}` is an error (GitHub's device flow), and so is a 403 that carries one
    /// (OpenAM, PingAM answer `authorization_pending` with 403): the `error` member decides, not the status
    /// (docs/protocol.md §7).
    #[test]
    fn ok_status_with_error_body() {
        let r = resp(200, JSON, r#"{"error":"authorization_pending"}"#);
        let e = classify_oauth::<Ok1>(&r).unwrap_err();
        assert_eq!(e.oauth_code(), Some(&crate::error::OAuthErrorCode::AuthorizationPending));
        let r = resp(403, JSON, r#"{"error":"authorization_pending","error_description":"pending"}"#);
        let e = classify_oauth::<Ok1>(&r).unwrap_err();
        assert_eq!(e.oauth_code(), Some(&crate::error::OAuthErrorCode::AuthorizationPending));
        assert!(!e.is_retryable());
    }

    /// PROTOCOL.md §12: a 503 with an HTML page is retryable, not a parse failure.
    #[test]
    fn html_5xx_is_unavailable() {
        let mut r = resp(503, "text/html", "<html><body>Bad gateway</body></html>");
        r.headers_mut().insert(RETRY_AFTER, "7".parse().unwrap());
        let e = classify_oauth::<Ok1>(&r).unwrap_err();
        assert_eq!(e, ResponseError::Unavailable { status: 503, retry_after: Some(Duration::from_secs(7)) });
        assert!(e.is_retryable());
    }

    #[test]
    fn garbage_success_is_malformed_without_echoing_the_body() {
        let r = resp(200, JSON, r#"{"a":"secret-token-value"}"#);
        let e = classify_oauth::<Ok1>(&r).unwrap_err();
        match e {
            ResponseError::Malformed { detail, violation, .. } => {
                assert_eq!(violation, PeerViolation::MalformedSuccessBody);
                assert!(!detail.contains("secret-token-value"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(classify_oauth::<Ok1>(&resp(200, JSON, "not json")), Err(ResponseError::Malformed { .. })));
    }

    #[test]
    fn api_problem_and_unknown_4xx() {
        let r = resp(404, crate::error::PROBLEM_JSON, r#"{"type":"urn:roger:problem:not-found","status":404}"#);
        match classify_api::<Ok1>(&r).unwrap_err() {
            ResponseError::Problem { problem, .. } => assert_eq!(problem.roger_name(), Some("not-found")),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify_api::<Ok1>(&resp(418, "text/plain", "teapot")).unwrap_err(),
            ResponseError::UnexpectedStatus { status: 418, www_authenticate_error: None }
        );
        assert_eq!(classify_api::<Ok1>(&resp(200, JSON, r#"{"a":1,"z":2}"#)).unwrap(), Ok1 { a: 1 });
    }

    /// RFC 6750 §3: the `error` auth-param.
    #[test]
    fn www_authenticate_parsing() {
        assert_eq!(
            auth_param(r#"Bearer realm="roger", error="invalid_token""#, "error").as_deref(),
            Some("invalid_token")
        );
        assert_eq!(
            auth_param(r#"Bearer error=insufficient_scope, scope="a b""#, "error").as_deref(),
            Some("insufficient_scope")
        );
        assert_eq!(auth_param(r#"Bearer realm="roger""#, "error"), None);
        assert_eq!(auth_param(r#"Bearer xerror="no""#, "error"), None);
    }

    /// RFC 9110 §10.2.3: both forms of Retry-After.
    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "120".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(120)));
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:30 GMT".parse().unwrap());
        h.insert(http::header::DATE, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(30)));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn lenient_seconds_accepts_strings() {
        #[derive(Deserialize)]
        struct T {
            #[serde(deserialize_with = "lenient_seconds")]
            e: u64,
        }
        assert_eq!(serde_json::from_str::<T>(r#"{"e":"3600"}"#).unwrap().e, 3600);
        assert_eq!(serde_json::from_str::<T>(r#"{"e":3600}"#).unwrap().e, 3600);
        assert_eq!(serde_json::from_str::<T>(r#"{"e":-5}"#).unwrap().e, 0);
        assert!(serde_json::from_str::<T>(r#"{"e":"soon"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"e":true}"#).is_err());
    }

    /// The same readings, and whether a string was read (docs/protocol.md §7 `ExpiresInAsString`).
    #[test]
    fn lenient_seconds_type_remembers_strings() {
        let read = |j: &str| serde_json::from_str::<LenientSeconds>(j).map(|l| (l.secs, l.from_string)).ok();
        assert_eq!(read("3600"), Some((3600, false)));
        assert_eq!(read("\" 3600 \""), Some((3600, true)));
        assert_eq!(read("-5"), Some((0, false)));
        assert_eq!(read("12.9"), Some((12, false)));
        assert_eq!(read("\"soon\""), None);
        assert_eq!(read("true"), None);
        assert_eq!(read("null"), None);
    }

    /// RFC 6749 §5.1 `Cache-Control: no-store`, among other directives and values.
    #[test]
    fn no_store_detection() {
        let mut h = HeaderMap::new();
        assert!(!has_no_store(&h));
        h.append(http::header::CACHE_CONTROL, "private".parse().unwrap());
        assert!(!has_no_store(&h));
        h.append(http::header::CACHE_CONTROL, "max-age=0, No-Store".parse().unwrap());
        assert!(has_no_store(&h));
    }
}
