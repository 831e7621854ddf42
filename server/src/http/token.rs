//! The token endpoint (RFC 6749 §3.2): `authorization_code` with PKCE (RFC 7636),
//! `refresh_token` with rotation and reuse detection, `client_credentials`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::client_auth::{self, Method};
use super::oauth_error::OAuthError;
use super::params::Params;
use super::tokens::{self, IdTokenSubject, granted_scopes};
use super::{AppState, blocking};
use crate::app::{App, now};
use crate::config::{Application, GrantType};
use crate::crypto::{constant_time_eq, pkce_s256, random_token};
use crate::store::{
    AuditEvent, IssuedByCode, Redemption, RefreshToken, Rotation, Write, token_key,
};

/// `POST /token`.
pub async fn token(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let grant = Params::parse(&body)
        .ok()
        .and_then(|p| p.take("grant_type"))
        .unwrap_or_default();
    let result = handle(&app, &headers, &body).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(error) => error.error,
    };
    let grant_label = match grant.as_str() {
        "authorization_code" | "refresh_token" | "client_credentials" => grant.as_str(),
        _ => "other",
    };
    app.metrics.count(
        "idflow_grants_total",
        &[("grant", grant_label), ("outcome", outcome)],
    );
    match result {
        Ok(body) => {
            let mut response = Json(body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(error) => error.into_response(),
    }
}

async fn handle(app: &Arc<App>, headers: &HeaderMap, body: &[u8]) -> Result<Value, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let params = Params::parse(body).map_err(OAuthError::invalid_request)?;
    let config = app.config();
    let (client, method) = client_auth::authenticate(&config.applications, headers, &params)?;
    let grant = params
        .get("grant_type")
        .ok_or_else(|| OAuthError::invalid_request("grant_type is missing"))?;
    match grant {
        "authorization_code" => authorization_code(app, client, &params).await,
        "refresh_token" => refresh(app, client, &params).await,
        "client_credentials" => client_credentials(app, client, method, &params),
        _ => Err(OAuthError::bad(
            "unsupported_grant_type",
            format!("`{grant}` is not supported"),
        )),
    }
}

fn require_grant(client: &Application, grant: GrantType) -> Result<(), OAuthError> {
    if client.allows(grant) {
        Ok(())
    } else {
        Err(OAuthError::bad(
            "unauthorized_client",
            "this client may not use this grant type",
        ))
    }
}

async fn authorization_code(
    app: &Arc<App>,
    client: &Application,
    params: &Params,
) -> Result<Value, OAuthError> {
    require_grant(client, GrantType::AuthorizationCode)?;
    let code = params
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    let key = token_key(code);
    let now = now();
    // Check what the code is bound to before spending it, so a wrong client or verifier
    // cannot burn another client's code.
    let record = app
        .store
        .code(&key)?
        .ok_or_else(|| OAuthError::invalid_grant("the code is not valid"))?;
    // Even a replay must come from the code's client to revoke anything: otherwise anyone who
    // saw a used code could cancel the victim's tokens.
    if record.request.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the code was issued to another client",
        ));
    }
    if record.redeemed.is_none() {
        if params.get("redirect_uri") != Some(record.request.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&record.request.code_challenge, params.get("code_verifier")) {
            (Some(challenge), Some(verifier)) => {
                if !valid_verifier(verifier)
                    || !constant_time_eq(pkce_s256(verifier).as_bytes(), challenge.as_bytes())
                {
                    return Err(OAuthError::invalid_grant(
                        "code_verifier does not match code_challenge",
                    ));
                }
            }
            (Some(_), None) => return Err(OAuthError::invalid_grant("code_verifier is missing")),
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier given but the request had no code_challenge",
                ));
            }
            (None, None) => {}
        }
    }
    let refresh_expires = now.saturating_add(app.config().tokens.refresh_token_seconds);
    let family = client
        .allows(GrantType::RefreshToken)
        .then(|| random_token(16));
    let jti = random_token(16);
    let access_expires = now + app.config().tokens.access_token_seconds;
    let issued = IssuedByCode {
        family: family.clone().map(|family| (family, refresh_expires)),
        access: (jti.clone(), access_expires),
    };
    if record.redeemed.is_none() && record.expires <= now {
        return Err(OAuthError::invalid_grant("the code has expired"));
    }
    // Sign before spending the code: a failure here leaves the code usable. A code already
    // used goes straight to redemption, which revokes what it issued.
    let prepared = if record.redeemed.is_none() {
        let user = app
            .store
            .user(&record.authentication.user)?
            .filter(|u| !u.disabled && !u.locked_at(now))
            .ok_or_else(|| OAuthError::invalid_grant("the user is not active"))?;
        let scopes = granted_scopes(&record.request.scopes, &client.scopes);
        let authentication = &record.authentication;
        let access = tokens::access_token(
            app,
            &client.client_id,
            &user.id,
            &scopes,
            Some(authentication),
            now,
            jti,
        )?;
        let mut response = json!({
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": app.config().tokens.access_token_seconds,
            "scope": scopes.join(" "),
        });
        if scopes.iter().any(|s| s == "openid") {
            response["id_token"] = json!(tokens::id_token(
                app,
                &IdTokenSubject {
                    client_id: &client.client_id,
                    user: &user,
                    scopes: &scopes,
                    authentication,
                    nonce: record.request.nonce.as_deref(),
                },
                &access.token,
                now,
            )?);
        }
        Some((scopes, response))
    } else {
        None
    };
    let store = Arc::clone(&app.store);
    let key_for_redeem = key.clone();
    let redemption = blocking(move || store.redeem_code(&key_for_redeem, now, &issued)).await??;
    let code = match redemption {
        Redemption::Fresh(code) => *code,
        Redemption::Reused => {
            let event = AuditEvent {
                time: now,
                event: "token.code_reuse".into(),
                actor: client.client_id.clone(),
                subject: record.authentication.user.clone(),
                ip: String::new(),
                detail: json!({ "revoked_family": record.redeemed.as_ref().and_then(|r| r.family.clone()) }),
            };
            commit(app, vec![Write::Audit(event)]).await?;
            return Err(OAuthError::invalid_grant(
                "the code was already used; the tokens it issued are revoked",
            ));
        }
        Redemption::Invalid => return Err(OAuthError::invalid_grant("the code is not valid")),
    };
    // Redeemed fresh, so it was unused when read and `prepared` is set.
    let Some((scopes, mut response)) = prepared else {
        return Err(OAuthError::invalid_grant("the code is not valid"));
    };
    if let Some(family) = family {
        let refresh = tokens::new_refresh_token();
        let record_family = family.clone();
        let record = RefreshToken {
            key: token_key(&refresh),
            family,
            client_id: client.client_id.clone(),
            scopes: scopes.clone(),
            authentication: code.authentication,
            expires: refresh_expires,
            spent: false,
        };
        match commit(app, vec![Write::PutRefresh(record)]).await {
            Ok(()) => {}
            // A replay of the code revoked the family between redemption and now.
            Err(_) if !app.store.family_live(&record_family)? => {
                return Err(OAuthError::invalid_grant(
                    "the code was used twice; the tokens it issued are revoked",
                ));
            }
            Err(error) => return Err(error),
        }
        response["refresh_token"] = json!(refresh);
    }
    Ok(response)
}

/// A PKCE verifier: 43 to 128 unreserved characters (RFC 7636 §4.1).
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

async fn commit(app: &Arc<App>, batch: crate::store::Batch) -> Result<(), OAuthError> {
    let store = Arc::clone(&app.store);
    blocking(move || store.commit(batch)).await??;
    Ok(())
}

async fn refresh(
    app: &Arc<App>,
    client: &Application,
    params: &Params,
) -> Result<Value, OAuthError> {
    require_grant(client, GrantType::RefreshToken)?;
    let presented = params
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    let key = token_key(presented);
    let now = now();
    let record = app
        .store
        .refresh(&key)?
        .ok_or_else(|| OAuthError::invalid_grant("the refresh token is not valid"))?;
    if record.client_id != client.client_id {
        return Err(OAuthError::invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    let requested = params.list("scope");
    if requested.iter().any(|s| !record.scopes.contains(s)) {
        return Err(OAuthError::bad(
            "invalid_scope",
            "a refresh cannot widen the granted scopes",
        ));
    }
    // Everything that can fail is checked and signed before the token is spent, so a failure
    // here leaves the client's token usable rather than looking like reuse on its retry.
    // A spent token goes on to the rotation below, which detects the reuse atomically and
    // revokes its family.
    if record.expires <= now || (!record.spent && !app.store.family_live(&record.family)?) {
        return Err(OAuthError::invalid_grant("the refresh token is not valid"));
    }
    let user = app.store.user(&record.authentication.user)?;
    let user = match user {
        Some(user) if !user.disabled && !user.locked_at(now) => user,
        // A lock is temporary (anyone can cause one with wrong passwords): refuse, keep the
        // family. A disabled or deleted user's tokens are revoked.
        Some(user) if !user.disabled => {
            return Err(OAuthError::invalid_grant("the user is locked"));
        }
        _ => {
            commit(app, vec![Write::RevokeFamily(record.family.clone())]).await?;
            return Err(OAuthError::invalid_grant("the user is not active"));
        }
    };
    let token = record;
    let scopes = if requested.is_empty() {
        token.scopes.clone()
    } else {
        granted_scopes(&requested, &client.scopes)
    };
    let authentication = &token.authentication;
    let access = tokens::access_token(
        app,
        &client.client_id,
        &user.id,
        &scopes,
        Some(authentication),
        now,
        random_token(16),
    )?;
    let next = tokens::new_refresh_token();
    let mut response = json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": app.config().tokens.access_token_seconds,
        "refresh_token": next,
        "scope": scopes.join(" "),
    });
    if app.config().tokens.id_token_on_refresh && scopes.iter().any(|s| s == "openid") {
        response["id_token"] = json!(tokens::id_token(
            app,
            &IdTokenSubject {
                client_id: &client.client_id,
                user: &user,
                scopes: &scopes,
                authentication,
                nonce: None,
            },
            &access.token,
            now,
        )?);
    }
    let next_key = token_key(&next);
    let store = Arc::clone(&app.store);
    let rotation = blocking(move || store.rotate_refresh(&key, &next_key, now)).await??;
    match rotation {
        Rotation::Rotated(_) => Ok(response),
        Rotation::Reused => {
            let event = AuditEvent {
                time: now,
                event: "token.refresh_reuse".into(),
                actor: client.client_id.clone(),
                subject: token.authentication.user.clone(),
                ip: String::new(),
                detail: json!({ "revoked_family": token.family }),
            };
            commit(app, vec![Write::Audit(event)]).await?;
            Err(OAuthError::invalid_grant(
                "the refresh token was already used; its family is revoked",
            ))
        }
        Rotation::Invalid => Err(OAuthError::invalid_grant("the refresh token is not valid")),
    }
}

fn client_credentials(
    app: &Arc<App>,
    client: &Application,
    method: Method,
    params: &Params,
) -> Result<Value, OAuthError> {
    if method == Method::None {
        return Err(OAuthError::bad(
            "unauthorized_client",
            "public clients cannot use client_credentials",
        ));
    }
    require_grant(client, GrantType::ClientCredentials)?;
    // Only the API scopes configured for the client; OpenID scopes need a user.
    let scopes = params.list("scope");
    if let Some(refused) = scopes.iter().find(|s| !client.scopes.contains(s)) {
        return Err(OAuthError::bad(
            "invalid_scope",
            format!("the scope `{refused}` is not allowed for this client"),
        ));
    }
    let now = now();
    let access = tokens::access_token(
        app,
        &client.client_id,
        &client.client_id,
        &scopes,
        None,
        now,
        random_token(16),
    )?;
    Ok(json!({
        "access_token": access.token,
        "token_type": "Bearer",
        "expires_in": app.config().tokens.access_token_seconds,
        "scope": scopes.join(" "),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifiers_follow_rfc_7636() {
        assert!(valid_verifier(&"a".repeat(43)));
        assert!(valid_verifier(&"a-._~".repeat(20)));
        assert!(!valid_verifier(&"a".repeat(42)));
        assert!(!valid_verifier(&"a".repeat(129)));
        assert!(!valid_verifier(&format!("{}+", "a".repeat(43))));
    }
}

/// Property tests of the verifier check on any text (see `server/tests/never_panics.rs`).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::http::params::fuzz_config(512))]

        #[test]
        fn any_text_is_a_verifier_or_not_without_panicking(text in "\\PC{0,140}") {
            let _ = valid_verifier(&text);
        }

        #[test]
        fn rfc_7636_verifiers_pass_and_one_character_off_fails(
            verifier in "[A-Za-z0-9._~-]{43,128}",
            at in any::<prop::sample::Index>(),
            bad in "[^A-Za-z0-9._~-]",
        ) {
            prop_assert!(valid_verifier(&verifier));
            let mut altered = verifier.clone();
            altered.insert_str(at.index(verifier.len() + 1), &bad);
            prop_assert!(!valid_verifier(&altered), "{}", altered);
            prop_assert!(!valid_verifier(&verifier[..42]));
            let longer = format!("{verifier}{}", "a".repeat(129 - verifier.len()));
            prop_assert!(!valid_verifier(&longer));
        }
    }
}
