//! Token introspection (RFC 7662). Only confidential clients may ask, and a client learns only
//! about its own tokens: another client's token is reported inactive.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::client_auth::{self, Method};
use super::oauth_error::OAuthError;
use super::params::Params;
use super::userinfo::validate_access_token;
use crate::app::now;
use crate::store::token_key;

/// `POST /introspect`.
pub async fn introspect(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let params = match Params::parse(&body) {
        Ok(params) => params,
        Err(why) => return OAuthError::invalid_request(why).into_response(),
    };
    let config = app.config();
    let client = match client_auth::authenticate(&config.applications, &headers, &params) {
        Ok((_, Method::None)) => {
            return OAuthError::invalid_client("introspection needs client authentication", false)
                .into_response();
        }
        Ok((client, _)) => client,
        Err(error) => return error.into_response(),
    };
    let Some(token) = params.get("token") else {
        return OAuthError::invalid_request("token is missing").into_response();
    };
    let now = now();
    let inactive = Json(json!({ "active": false })).into_response();
    if let Ok(claims) = validate_access_token(&app, token, now) {
        if claims["client_id"].as_str() != Some(client.client_id.as_str()) {
            return inactive;
        }
        let mut body = json!({
            "active": true,
            "token_type": "Bearer",
            "scope": claims["scope"], "client_id": claims["client_id"], "sub": claims["sub"],
            "aud": claims["aud"], "iss": claims["iss"], "exp": claims["exp"], "iat": claims["iat"],
            "jti": claims["jti"],
        });
        let subject = claims["sub"].as_str().unwrap_or_default();
        if subject != client.client_id {
            // A user's token is active only while the user is.
            match app.store.user(subject) {
                Ok(Some(user)) if !user.disabled => body["username"] = json!(user.username),
                Ok(_) => return inactive,
                Err(error) => return OAuthError::server(error).into_response(),
            }
        }
        return Json(body).into_response();
    }
    match app.store.refresh(&token_key(token)) {
        Ok(Some(refresh))
            if refresh.client_id == client.client_id
                && !refresh.spent
                && refresh.expires > now
                && app.store.family_live(&refresh.family).unwrap_or(false)
                && app
                    .store
                    .user(&refresh.authentication.user)
                    .ok()
                    .flatten()
                    .is_some_and(|u| !u.disabled) =>
        {
            Json(json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": refresh.scopes.join(" "),
                "client_id": refresh.client_id,
                "sub": refresh.authentication.user,
                "exp": refresh.expires,
                "iss": app.config().issuer,
            }))
            .into_response()
        }
        Ok(_) => inactive,
        Err(error) => OAuthError::server(error).into_response(),
    }
}
