//! Reading the app login form (PROTOCOL.md §4, docs/protocol.md §3.4) the way a native app's browser tab would:
//! the CSRF token from the form's hidden field and the cookie it is bound to (RFC 6749 §10.12), so the phone can
//! post the form back. Pure functions over the HTTP answer; the round trip itself is in [`super::Phone::login`].

use http::header::{HeaderMap, SET_COOKIE};

/// Why the login form could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// `GET /oauth/authorize` did not answer `200` with the form (RFC 6749 §4.1.2.1: a bad `client_id` or
    /// `redirect_uri` gets an error page, never a redirect).
    #[error("the authorization endpoint answered HTTP {0} instead of the login form")]
    NoForm(u16),
    /// The form has no `csrf_token` field, or the answer set no cookie to bind it to (PROTOCOL.md §10: the login
    /// form carries a CSRF token and a SameSite cookie).
    #[error("the login form carries no CSRF token and cookie")]
    NoCsrf,
    /// The server refused the form post as cross-site (`403`, RFC 6749 §10.12).
    #[error("the server refused the form post (HTTP 403, CSRF check)")]
    CsrfRefused,
    /// The tenant, user name or password is wrong, or the user is locked (docs/protocol.md §3.4: the form is shown
    /// again with `200` and one generic message, R-PWD-2).
    #[error("sign-in refused: {0}")]
    BadCredentials(String),
    /// The server answered the post with another status than `302`, `200` or `403`.
    #[error("the form post answered HTTP {0}")]
    Unexpected(u16),
    /// The `302` has no `Location` header.
    #[error("the sign-in redirect has no Location")]
    NoLocation,
}

/// The value of the form field `name` (an `<input … name="…" value="…">`), with HTML character references of the
/// escaping the server applies decoded.
pub fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = html.find(&marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value_at = tag.find("value=\"")? + "value=\"".len();
    let value = &tag[value_at..];
    let value = &value[..value.find('"')?];
    Some(unescape(value))
}

/// The text of the form's alert (`<p role="alert">…</p>`), the generic sign-in failure message.
pub fn alert_text(html: &str) -> Option<String> {
    let start = html.find("role=\"alert\">")? + "role=\"alert\">".len();
    let end = start + html[start..].find('<')?;
    Some(unescape(&html[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The `Cookie` header value that returns every cookie the form's answer set (`name=value` pairs of the
/// `Set-Cookie` headers, RFC 6265 §4.2.1), or `None` if it set none.
pub fn cookie_header(headers: &HeaderMap) -> Option<String> {
    let pairs: Vec<&str> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .map(str::trim)
        .filter(|pair| pair.split_once('=').is_some_and(|(name, _)| !name.is_empty()))
        .collect();
    (!pairs.is_empty()).then(|| pairs.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: &str = "<form method=\"post\" action=\"/oauth/authorize\">\
        <input type=\"hidden\" name=\"state\" value=\"a&amp;b&quot;c\">\
        <input type=\"hidden\" name=\"csrf_token\" value=\"0f1e2d\">\
        <label>Tenant <input name=\"tenant\" required></label></form>";

    #[test]
    fn reads_hidden_fields_and_unescapes() {
        assert_eq!(hidden_field(FORM, "csrf_token").as_deref(), Some("0f1e2d"));
        assert_eq!(hidden_field(FORM, "state").as_deref(), Some("a&b\"c"));
        assert_eq!(hidden_field(FORM, "tenant"), None, "a field without a value");
        assert_eq!(hidden_field(FORM, "missing"), None);
        assert_eq!(hidden_field("<input name=\"csrf_token\" value=\"x", "csrf_token"), None, "truncated page");
    }

    #[test]
    fn reads_the_alert() {
        let page = "<p role=\"alert\">The tenant, user name or password is wrong.</p><form></form>";
        assert_eq!(alert_text(page).as_deref(), Some("The tenant, user name or password is wrong."));
        assert_eq!(alert_text(FORM), None);
    }

    /// RFC 6265 §4.2.1: only `name=value` goes back, attributes stay behind.
    #[test]
    fn returns_set_cookies() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie_header(&h), None);
        h.append(SET_COOKIE, "roger_csrf=abc; Path=/oauth/authorize; HttpOnly; SameSite=Strict".parse().unwrap());
        h.append(SET_COOKIE, "other=1".parse().unwrap());
        h.append(SET_COOKIE, "=junk".parse().unwrap());
        assert_eq!(cookie_header(&h).as_deref(), Some("roger_csrf=abc; other=1"));
    }
}
