//! The declarative configuration, read-only (it changes by editing files and reloading):
//! applications, identity providers, service providers, provisioning targets. Secrets are
//! never shown, only whether one is set.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::Answer;
use crate::config::federation::UpstreamKind;
use crate::config::provisioning::TargetAuth;
use crate::http::AppState;

/// `GET /admin/v1/applications`.
pub async fn applications(State(app): AppState) -> Answer {
    let config = app.config();
    let shown: Vec<Value> = config
        .applications
        .values()
        .map(|a| {
            json!({
                "client_id": a.client_id,
                "name": a.name,
                "public": a.public,
                "has_secret": a.secret.is_some(),
                "redirect_uris": a.redirect_uris,
                "post_logout_redirect_uris": a.post_logout_redirect_uris,
                "grant_types": a.grant_types.iter().map(|g| format!("{g:?}")).collect::<Vec<_>>(),
                "scopes": a.scopes,
                "flow": app.registry.snapshot().flow_for(&a.client_id).map(|f| f.ir.flow.clone()),
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({ "applications": shown }))))
}

/// `GET /admin/v1/identity-providers`.
pub async fn identity_providers(State(app): AppState) -> Answer {
    let config = app.config();
    let shown: Vec<Value> = config
        .identity_providers
        .values()
        .map(|idp| {
            let (kind, detail) = match &idp.kind {
                UpstreamKind::Oidc { issuer, .. } => ("oidc", json!({ "issuer": issuer })),
                UpstreamKind::OAuth2 { .. } => ("oauth2", Value::Null),
                UpstreamKind::Saml { .. } => ("saml", Value::Null),
                UpstreamKind::NotConfigured(why) => ("not_configured", json!({ "why": why })),
            };
            json!({ "name": idp.name, "label": idp.label, "type": kind, "detail": detail })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({ "identity_providers": shown }))))
}

/// `GET /admin/v1/service-providers`.
pub async fn service_providers(State(app): AppState) -> Answer {
    let config = app.config();
    let shown: Vec<Value> = config
        .service_providers
        .values()
        .map(|sp| {
            json!({
                "name": sp.name,
                "display_name": sp.display_name,
                "entity_id": sp.entity_id,
                "acs_urls": sp.acs_urls,
                "requests_signed": sp.requests_signed,
                "name_id_format": sp.name_id_format,
                "slo_url": sp.slo_url,
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({ "service_providers": shown }))))
}

/// `GET /admin/v1/provisioning-targets`.
pub async fn provisioning_targets(State(app): AppState) -> Answer {
    let config = app.config();
    let shown: Vec<Value> = config
        .provisioning_targets
        .iter()
        .map(|t| {
            let auth = t.endpoint.as_ref().map(|e| match e.auth {
                TargetAuth::Bearer(_) => "bearer",
                TargetAuth::Basic { .. } => "basic",
                TargetAuth::ClientCredentials { .. } => "client_credentials",
            });
            json!({
                "name": t.name,
                "url": t.endpoint.as_ref().map(|e| e.url.clone()),
                "auth": auth,
                "on": t.on,
                "roles": t.roles,
                "max_attempts": t.max_attempts,
            })
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(json!({ "provisioning_targets": shown })),
    ))
}
