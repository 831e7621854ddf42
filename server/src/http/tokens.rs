//! Minting tokens: JWT access tokens (RFC 9068 profile), ID tokens (OpenID Connect Core §2)
//! and refresh tokens, and the claims each scope releases.

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::crypto::{b64url, random_token, sha256};
use crate::keys::Alg;
use crate::store::{Authentication, StoreError, User};

/// Scopes the server knows; others are ignored (OpenID Connect Core §3.1.2.1).
pub const SCOPES: [&str; 5] = ["openid", "profile", "email", "roles", "offline_access"];

/// Claims only the protocol sets in an ID token.
pub const RESERVED_CLAIMS: [&str; 14] = [
    "iss",
    "sub",
    "aud",
    "azp",
    "iat",
    "exp",
    "nbf",
    "jti",
    "auth_time",
    "amr",
    "acr",
    "at_hash",
    "c_hash",
    "nonce",
];

/// An access token and what the store needs to know about it.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The JWT.
    pub token: String,
    /// Its `jti`.
    pub jti: String,
    /// Its `exp`.
    pub expires: u64,
}

/// The scopes a user's token carries: the OpenID scopes idflow knows that were asked for, and
/// the API scopes (e.g. `admin`) that were asked for and the client is allowed.
pub fn granted_scopes(requested: &[String], allowed: &[String]) -> Vec<String> {
    let mut granted: Vec<String> = SCOPES
        .iter()
        .filter(|s| requested.iter().any(|r| r == *s))
        .map(|s| s.to_string())
        .collect();
    for scope in requested {
        if allowed.contains(scope) && !granted.contains(scope) {
            granted.push(scope.clone());
        }
    }
    granted
}

fn alg(name: &str) -> Alg {
    Alg::parse(name).unwrap_or(Alg::Rs256)
}

/// Signs an access token for `subject` (a user id, or the client id for client_credentials).
pub fn access_token(
    app: &App,
    client_id: &str,
    subject: &str,
    scopes: &[String],
    authentication: Option<&Authentication>,
    now: u64,
    jti: String,
) -> Result<AccessToken, StoreError> {
    let expires = now + app.config().tokens.access_token_seconds;
    let mut claims = json!({
        "iss": app.config().issuer,
        "sub": subject,
        "aud": client_id,
        "client_id": client_id,
        "iat": now,
        "exp": expires,
        "jti": jti,
        "scope": scopes.join(" "),
    });
    if let Some(authentication) = authentication {
        claims["auth_time"] = json!(authentication.auth_time);
        claims["acr"] = json!(authentication.acr);
        if !authentication.sid.is_empty() {
            claims["sid"] = json!(authentication.sid);
        }
    }
    let token = app.keys.sign(
        alg(&app.config().tokens.access_token_alg),
        "at+jwt",
        &claims,
    )?;
    Ok(AccessToken {
        token,
        jti,
        expires,
    })
}

/// The user claims `scopes` release (OpenID Connect Core §5.4), plus `roles`.
pub fn user_claims(user: &User, scopes: &[String]) -> Map<String, Value> {
    let mut claims = Map::new();
    let has = |scope: &str| scopes.iter().any(|s| s == scope);
    if has("profile") {
        claims.insert("preferred_username".into(), json!(user.username));
        if !user.name.is_empty() {
            claims.insert("name".into(), json!(user.name));
        }
    }
    if has("email") && !user.email.is_empty() {
        claims.insert("email".into(), json!(user.email));
        claims.insert("email_verified".into(), json!(user.email_verified));
    }
    if has("roles") {
        claims.insert("roles".into(), json!(user.roles));
    }
    claims
}

/// What an ID token is about: the client, the user, the scopes granted, how the user
/// authenticated, and the nonce of the authorization request.
pub struct IdTokenSubject<'a> {
    /// The client (the audience).
    pub client_id: &'a str,
    /// The user.
    pub user: &'a User,
    /// Granted scopes.
    pub scopes: &'a [String],
    /// How the user authenticated.
    pub authentication: &'a Authentication,
    /// The request's nonce (absent on refresh).
    pub nonce: Option<&'a str>,
}

/// Signs an ID token.
pub fn id_token(
    app: &App,
    subject: &IdTokenSubject,
    access_token: &str,
    now: u64,
) -> Result<String, StoreError> {
    let IdTokenSubject {
        client_id,
        user,
        scopes,
        authentication,
        nonce,
    } = *subject;
    let mut claims = Map::new();
    // Claims the flow set come first, so the protocol claims below always win; reserved names
    // are dropped so a flow cannot forge a nonce or a hash for a request that had none.
    for (name, value) in &authentication.claims {
        if !RESERVED_CLAIMS.contains(&name.as_str()) {
            claims.insert(name.clone(), value.clone());
        }
    }
    claims.extend(user_claims(user, scopes));
    let half = &sha256(access_token.as_bytes())[..16];
    let protocol = json!({
        "iss": app.config().issuer,
        "sub": user.id,
        "aud": client_id,
        "azp": client_id,
        "iat": now,
        "exp": now + app.config().tokens.id_token_seconds,
        "auth_time": authentication.auth_time,
        "amr": authentication.amr,
        "acr": authentication.acr,
        "at_hash": b64url(half),
        "sid": authentication.sid,
    });
    if let Value::Object(protocol) = protocol {
        claims.extend(protocol);
    }
    if let Some(nonce) = nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    // ID tokens are RS256: every OpenID client supports it (Discovery §3 requires it).
    app.keys.sign(Alg::Rs256, "JWT", &Value::Object(claims))
}

/// A new refresh token value.
pub fn new_refresh_token() -> String {
    random_token(32)
}
