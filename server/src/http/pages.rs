//! Pages for people: the login form, messages and error pages, the account page. Rendered
//! with minijinja templates compiled into the binary (HTML auto-escaping on), served with
//! headers that forbid framing, caching and inline scripts.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use minijinja::Environment;
use serde::Serialize;

/// The stylesheet, served at `/static/idflow.css` (a file, so the CSP needs no inline styles).
pub const STYLESHEET: &str = include_str!("../../templates/idflow.css");

/// The compiled templates.
pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Pages::new()
    }
}

impl Pages {
    /// Loads the templates compiled into the binary.
    pub fn new() -> Pages {
        let mut env = Environment::new();
        for (name, source) in [
            ("layout.html", include_str!("../../templates/layout.html")),
            ("login.html", include_str!("../../templates/login.html")),
            ("confirm.html", include_str!("../../templates/confirm.html")),
            (
                "register.html",
                include_str!("../../templates/register.html"),
            ),
            ("post.html", include_str!("../../templates/post.html")),
            ("message.html", include_str!("../../templates/message.html")),
            ("account.html", include_str!("../../templates/account.html")),
            ("logout.html", include_str!("../../templates/logout.html")),
        ] {
            // The templates are part of the binary and covered by tests; a syntax error is a
            // build defect, reported at the first render rather than by a panic here.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(%error, template = name, "template does not compile");
            }
        }
        Pages { env }
    }

    /// Renders `template` with `context` as an HTML response with `status`.
    pub fn render(&self, status: StatusCode, template: &str, context: impl Serialize) -> Response {
        let body = self
            .env
            .get_template(template)
            .and_then(|t| t.render(minijinja::value::Serde(&context)));
        match body {
            Ok(body) => html(status, body),
            Err(error) => {
                tracing::error!(%error, template, "template failed to render");
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>Something went wrong.</p>".into(),
                )
            }
        }
    }

    /// A page with a title and a message (`error` styles it as an alert).
    pub fn message(&self, status: StatusCode, title: &str, message: &str) -> Response {
        self.render(
            status,
            "message.html",
            serde_json::json!({ "title": title, "message": message, "error": status.is_client_error() || status.is_server_error() }),
        )
    }
}

/// A page that posts `fields` to `action` at once (a SAML or WS-Federation answer): the one
/// page whose own form leaves this origin; its CSP allows exactly the target's origin in
/// `form-action`. (Other pages set no `form-action`: Chromium applies it to the redirect after
/// a login form, which goes to the application.)
pub fn autopost(
    pages: &Pages,
    action: &str,
    fields: &[(&str, &str)],
    application: Option<&str>,
) -> Response {
    let fields: Vec<serde_json::Value> = fields
        .iter()
        .map(|(name, value)| serde_json::json!({ "name": name, "value": value }))
        .collect();
    let mut response = pages.render(
        StatusCode::OK,
        "post.html",
        serde_json::json!({ "action": action, "fields": fields, "application": application }),
    );
    let origin = url::Url::parse(action)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; form-action {origin}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// An HTML response with the headers every page gets.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        let pages = Pages::new();
        let response = pages.message(StatusCode::BAD_REQUEST, "Oops", "<script>x</script>");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        for (template, context) in [
            (
                "login.html",
                serde_json::json!({"handle": "h", "csrf": "c", "options": [{"value": "password", "label": "Password", "fields": [{"name": "username", "label": "Username", "type": "text", "autocomplete": "username", "value": ""}]}], "attempts_left": 3}),
            ),
            (
                "account.html",
                serde_json::json!({"user": "alice", "csrf": "c"}),
            ),
            ("logout.html", serde_json::json!({"csrf": "c"})),
            (
                "post.html",
                serde_json::json!({"action": "https://sp/acs", "fields": [{"name": "SAMLResponse", "value": "PHg+"}]}),
            ),
            (
                "confirm.html",
                serde_json::json!({"handle": "h", "csrf": "c", "provider": "Acme", "ask_username": true, "ask_password": true, "ask_consent": true}),
            ),
        ] {
            let body = pages
                .env
                .get_template(template)
                .and_then(|t| t.render(minijinja::value::Serde(&context)))
                .unwrap_or_else(|e| panic!("{template}: {e}"));
            assert!(body.contains("<main>"), "{template}");
        }
        let body = pages
            .env
            .get_template("message.html")
            .and_then(|t| {
                t.render(minijinja::value::Serde(
                    serde_json::json!({ "title": "t", "message": "<b>" }),
                ))
            })
            .expect("render");
        assert!(body.contains("&lt;b&gt;") && !body.contains("<b>"));
    }
}
