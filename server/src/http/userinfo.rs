//! The UserInfo endpoint (OpenID Connect Core §5.3) and the check of access tokens that it
//! shares with introspection.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use super::params::Params;
use super::tokens::user_claims;
use crate::app::{App, now};

/// Verifies one of our access tokens: signature, type, issuer, expiry, revocation. Returns
/// its claims.
pub fn validate_access_token(app: &App, token: &str, now: u64) -> Result<Value, &'static str> {
    let (typ, claims) = app
        .keys
        .verify(token)
        .map_err(|_| "the token is not valid")?;
    if typ != "at+jwt" {
        return Err("the token is not an access token");
    }
    if claims["iss"].as_str() != Some(app.config().issuer.as_str()) {
        return Err("the token is from another issuer");
    }
    if claims["exp"].as_u64().is_none_or(|exp| exp <= now) {
        return Err("the token has expired");
    }
    let jti = claims["jti"].as_str().unwrap_or_default();
    match app.store.access_revoked(jti) {
        Ok(false) => Ok(claims),
        Ok(true) => Err("the token was revoked"),
        Err(error) => {
            tracing::error!(%error, "revocation check failed");
            Err("the token cannot be checked now")
        }
    }
}

fn bearer_error(status: StatusCode, error: &str, description: &str) -> Response {
    let challenge = format!("Bearer error=\"{error}\", error_description=\"{description}\"");
    let mut response = (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// `GET /userinfo`.
pub async fn get(State(app): AppState, headers: HeaderMap) -> Response {
    userinfo(&app, &headers, None)
}

/// `POST /userinfo` (the token may be in the form body, RFC 6750 §2.2).
pub async fn post(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let form_token = Params::parse(&body)
        .ok()
        .and_then(|p| p.take("access_token"));
    userinfo(&app, &headers, form_token)
}

fn userinfo(app: &App, headers: &HeaderMap, form_token: Option<String>) -> Response {
    let header_token = super::authorization(headers, "Bearer").map(str::to_string);
    let token = match (header_token, form_token) {
        (Some(_), Some(_)) => {
            return bearer_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "give the token once",
            );
        }
        (Some(token), None) | (None, Some(token)) => token,
        (None, None) => {
            let mut response = StatusCode::UNAUTHORIZED.into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"idflow\""),
            );
            return response;
        }
    };
    let claims = match validate_access_token(app, &token, now()) {
        Ok(claims) => claims,
        Err(why) => return bearer_error(StatusCode::UNAUTHORIZED, "invalid_token", why),
    };
    let scopes: Vec<String> = claims["scope"]
        .as_str()
        .unwrap_or_default()
        .split(' ')
        .map(String::from)
        .collect();
    if !scopes.iter().any(|s| s == "openid") {
        return bearer_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the token lacks the openid scope",
        );
    }
    let subject = claims["sub"].as_str().unwrap_or_default();
    let user = match app.store.user(subject) {
        Ok(Some(user)) if !user.disabled => user,
        Ok(_) => {
            return bearer_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "the user is not active",
            );
        }
        Err(error) => {
            tracing::error!(%error, "userinfo lookup failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let mut body = user_claims(&user, &scopes);
    body.insert("sub".into(), json!(user.id));
    let mut response = Json(Value::Object(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
