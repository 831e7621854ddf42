//! Cookies: the SSO session and the binding of a browser to its login in progress. Both are
//! `HttpOnly`, `SameSite=Lax` (the login must survive the top-level redirect from an
//! application) and `Secure` when the issuer is https.

use axum::http::{HeaderMap, HeaderValue, header};

/// The SSO session cookie.
pub const SESSION: &str = "idflow_session";
/// The cookie binding a browser to the logins it starts: a random value per browser, whose
/// hash each login records, so several tabs can each run a login.
pub const BROWSER: &str = "idflow_browser";

/// The value of cookie `name` in the request, if sent.
pub fn read(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A `Set-Cookie` value setting `name` for `max_age` seconds.
pub fn set(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    // Values are our own base64url tokens: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// A `Set-Cookie` value deleting `name`.
pub fn clear(name: &str, secure: bool) -> HeaderValue {
    set(name, "", 0, secure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_cookie_among_several() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; idflow_session=abc; b=2"),
        );
        assert_eq!(read(&headers, SESSION).as_deref(), Some("abc"));
        assert_eq!(read(&headers, BROWSER), None);
    }

    #[test]
    fn set_cookie_has_the_security_attributes() {
        let value = set(SESSION, "abc", 60, true);
        let text = value.to_str().expect("ascii");
        for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=60"] {
            assert!(text.contains(attribute), "{text}");
        }
        assert!(
            !set(SESSION, "abc", 60, false)
                .to_str()
                .expect("ascii")
                .contains("Secure")
        );
    }
}
