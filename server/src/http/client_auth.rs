//! Client authentication at the token, introspection and revocation endpoints:
//! `client_secret_basic`, `client_secret_post`, and `none` for public clients
//! (RFC 6749 §2.3.1; OpenID Connect Core §9).

use axum::http::HeaderMap;
use base64::Engine as _;

use super::oauth_error::OAuthError;
use super::params::Params;
use crate::config::Application;
use crate::crypto::constant_time_eq;

/// How a client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// HTTP Basic with the secret.
    Basic,
    /// The secret in the form body.
    Post,
    /// A public client: only its id.
    None,
}

/// Authenticates the client of a request; returns it and how it authenticated.
pub fn authenticate<'a>(
    applications: &'a std::collections::BTreeMap<String, Application>,
    headers: &HeaderMap,
    params: &Params,
) -> Result<(&'a Application, Method), OAuthError> {
    let basic = basic_credentials(headers)?;
    let used_basic = basic.is_some();
    let (client_id, secret, method) = match (basic, params.get("client_secret")) {
        (Some(_), Some(_)) => {
            return Err(OAuthError::invalid_request(
                "use one client authentication method, not both",
            ));
        }
        (Some((id, secret)), None) => {
            if params.get("client_id").is_some_and(|form_id| form_id != id) {
                return Err(OAuthError::invalid_request(
                    "client_id does not match the authenticated client",
                ));
            }
            (id, Some(secret), Method::Basic)
        }
        (None, Some(secret)) => (
            params.take("client_id").unwrap_or_default(),
            Some(secret.to_string()),
            Method::Post,
        ),
        (None, None) => (
            params.take("client_id").unwrap_or_default(),
            None,
            Method::None,
        ),
    };
    let unknown = || OAuthError::invalid_client("client authentication failed", used_basic);
    let client = applications.get(&client_id).ok_or_else(unknown)?;
    match (&client.secret, secret, client.public) {
        (Some(expected), Some(given), false)
            if constant_time_eq(expected.as_bytes(), given.as_bytes()) =>
        {
            Ok((client, method))
        }
        (None, None, true) => Ok((client, Method::None)),
        _ => Err(unknown()),
    }
}

/// Decodes `Authorization: Basic` credentials (each part form-urlencoded, RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(encoded) = super::authorization(headers, "Basic") else {
        return Ok(None);
    };
    let malformed = || OAuthError::invalid_client("malformed Basic credentials", true);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let text = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.to_string())
            .unwrap_or_default()
    };
    Ok(Some((unescape(id), unescape(secret))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderValue, header};
    use std::collections::BTreeMap;

    fn clients() -> BTreeMap<String, Application> {
        let app = |id: &str, secret: Option<&str>, public: bool| Application {
            client_id: id.into(),
            name: id.into(),
            secret: secret.map(String::from),
            public,
            redirect_uris: vec![],
            post_logout_redirect_uris: vec![],
            grant_types: vec![],
            scopes: vec![],
        };
        BTreeMap::from([
            (
                "web".to_string(),
                app("web", Some("s3cret:with%chars"), false),
            ),
            ("spa".to_string(), app("spa", None, true)),
        ])
    }

    fn basic(id: &str, secret: &str) -> HeaderMap {
        with_scheme("Basic", id, secret)
    }

    fn with_scheme(scheme: &str, id: &str, secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("{scheme} {encoded}")).expect("header"),
        );
        headers
    }

    #[test]
    fn the_basic_scheme_is_case_insensitive() {
        let clients = clients();
        for scheme in ["basic", "BASIC", "bAsIc"] {
            let headers = with_scheme(scheme, "web", "s3cret%3Awith%25chars");
            let (client, method) =
                authenticate(&clients, &headers, &Params::default()).expect(scheme);
            assert_eq!((client.client_id.as_str(), method), ("web", Method::Basic));
        }
        // Another scheme is not Basic, whatever it carries.
        let other = with_scheme("Basicx", "web", "s3cret%3Awith%25chars");
        assert!(authenticate(&clients, &other, &Params::default()).is_err());
    }

    #[test]
    fn basic_post_and_none() {
        let clients = clients();
        let none = Params::default();
        let (client, method) =
            authenticate(&clients, &basic("web", "s3cret%3Awith%25chars"), &none).expect("basic");
        assert_eq!((client.client_id.as_str(), method), ("web", Method::Basic));
        let form = Params::parse(b"client_id=web&client_secret=s3cret%3Awith%25chars").expect("ok");
        assert_eq!(
            authenticate(&clients, &HeaderMap::new(), &form)
                .expect("post")
                .1,
            Method::Post
        );
        let public = Params::parse(b"client_id=spa").expect("ok");
        assert_eq!(
            authenticate(&clients, &HeaderMap::new(), &public)
                .expect("none")
                .1,
            Method::None
        );
    }

    #[test]
    fn failures_are_invalid_client() {
        let clients = clients();
        let wrong = authenticate(&clients, &basic("web", "nope"), &Params::default()).unwrap_err();
        assert_eq!(
            (wrong.error, wrong.basic_challenge),
            ("invalid_client", true)
        );
        // A confidential client cannot skip its secret.
        let bare = Params::parse(b"client_id=web").expect("ok");
        assert_eq!(
            authenticate(&clients, &HeaderMap::new(), &bare)
                .unwrap_err()
                .error,
            "invalid_client"
        );
        // A public client cannot present a secret.
        let spa = Params::parse(b"client_id=spa&client_secret=x").expect("ok");
        assert_eq!(
            authenticate(&clients, &HeaderMap::new(), &spa)
                .unwrap_err()
                .error,
            "invalid_client"
        );
        let unknown = Params::parse(b"client_id=ghost").expect("ok");
        assert_eq!(
            authenticate(&clients, &HeaderMap::new(), &unknown)
                .unwrap_err()
                .error,
            "invalid_client"
        );
        let both = Params::parse(b"client_secret=x").expect("ok");
        assert_eq!(
            authenticate(&clients, &basic("web", "x"), &both)
                .unwrap_err()
                .error,
            "invalid_request"
        );
    }
}
