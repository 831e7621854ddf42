//! Token revocation (RFC 7009). Revoking a refresh token revokes its whole family; revoking an
//! access token puts its `jti` on the deny list until it would have expired. Unknown tokens and
//! other clients' tokens get the same 200, so the endpoint reveals nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::client_auth;
use super::oauth_error::OAuthError;
use super::params::Params;
use super::userinfo::validate_access_token;
use super::{AppState, blocking};
use crate::app::now;
use crate::store::{Write, token_key};

/// `POST /revoke`.
pub async fn revoke(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let params = match Params::parse(&body) {
        Ok(params) => params,
        Err(why) => return OAuthError::invalid_request(why).into_response(),
    };
    let config = app.config();
    let client = match client_auth::authenticate(&config.applications, &headers, &params) {
        Ok((client, _)) => client,
        Err(error) => return error.into_response(),
    };
    let Some(token) = params.get("token") else {
        return OAuthError::invalid_request("token is missing").into_response();
    };
    let now = now();
    let write = if let Ok(claims) = validate_access_token(&app, token, now) {
        (claims["client_id"].as_str() == Some(client.client_id.as_str())).then(|| {
            Write::RevokeAccess {
                jti: claims["jti"].as_str().unwrap_or_default().to_string(),
                expires: claims["exp"].as_u64().unwrap_or(now),
            }
        })
    } else {
        match app.store.refresh(&token_key(token)) {
            Ok(Some(refresh)) if refresh.client_id == client.client_id => {
                Some(Write::RevokeFamily(refresh.family))
            }
            Ok(_) => None,
            Err(error) => return OAuthError::server(error).into_response(),
        }
    };
    if let Some(write) = write {
        let store = Arc::clone(&app.store);
        match blocking(move || store.commit(vec![write])).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return OAuthError::server(error).into_response(),
            Err(error) => return OAuthError::server(error).into_response(),
        }
    }
    StatusCode::OK.into_response()
}
