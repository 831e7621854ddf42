//! The HTTP server: OpenID Connect and OAuth 2.0 endpoints, the login pages, operations
//! endpoints. One module per endpoint; shared pieces (parameters, cookies, client
//! authentication, OAuth errors, token minting) in their own modules.
//!
//! Protocol code here is written by hand over axum: the openidconnect and oauth2 crates are
//! client libraries whose provider-side types cover discovery and token responses but not the
//! endpoint logic (validation order, redirect-or-page error rules, PKCE, code reuse), and their
//! signing keys have no ES256. Each module says which RFC section it follows.

// Handlers and their helpers return a ready `Response` as the error of a `Result`: axum's own
// pattern. Boxing it to please `result_large_err` would add an allocation on every error path.
#![allow(clippy::result_large_err)]

pub mod account;
pub mod admin;
pub mod authorize;
pub mod basic;
pub mod client_auth;
pub mod console;
pub mod cookies;
pub mod cors;
pub mod discovery;
pub mod federation;
pub mod introspect;
pub mod login;
pub mod logout;
pub mod oauth_error;
pub mod ops;
pub mod pages;
pub mod params;
pub mod revoke;
pub mod saml;
pub mod scim;
pub mod token;
pub mod tokens;
pub mod userinfo;
pub mod wsfed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::app::App;

/// Handler state.
pub type AppState = State<Arc<App>>;

/// Largest request body accepted (forms and token requests are small).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The routes.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(account::page))
        .route(
            "/.well-known/openid-configuration",
            get(discovery::configuration),
        )
        .route("/jwks", get(discovery::jwks))
        .route("/authorize", get(authorize::get).post(authorize::post))
        .route("/login", get(login::page).post(login::submit))
        .route("/login/start", get(account::start_login_page))
        .route("/account/passkeys", post(account::add_passkey))
        .route("/federation/callback", get(federation::callback))
        .route("/federation/saml/acs", post(federation::saml_acs))
        .route("/federation/saml/metadata", get(federation::saml_metadata))
        .route("/saml2/metadata", get(saml::metadata::get))
        .route("/saml2/sso", get(saml::sso::get).post(saml::sso::post))
        .route("/saml2/slo", get(saml::slo::get))
        .route(
            "/scim/v2/ServiceProviderConfig",
            get(scim::discovery::service_provider_config).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/ResourceTypes",
            get(scim::discovery::resource_types).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/ResourceTypes/{id}",
            get(scim::discovery::resource_type).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Schemas",
            get(scim::discovery::schemas).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Schemas/{id}",
            get(scim::discovery::schema).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Users",
            get(scim::users::get_list)
                .post(scim::users::create)
                .fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Users/.search",
            post(scim::users::search).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/.search",
            post(scim::users::search_all).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Users/{id}",
            get(scim::users::get_one)
                .put(scim::users::replace)
                .patch(scim::users::patch)
                .delete(scim::users::delete)
                .fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Groups",
            get(scim::groups::get_list)
                .post(scim::groups::create)
                .fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Groups/.search",
            post(scim::groups::search).fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Groups/{id}",
            get(scim::groups::get_one)
                .put(scim::groups::replace)
                .patch(scim::groups::patch)
                .delete(scim::groups::delete)
                .fallback(scim::method_not_allowed),
        )
        .route(
            "/scim/v2/Bulk",
            post(scim::bulk::bulk)
                .fallback(scim::method_not_allowed)
                .layer(DefaultBodyLimit::max(scim::bulk::ROUTE_LIMIT)),
        )
        .route("/scim/v2/{*rest}", axum::routing::any(scim::not_found))
        .route("/wsfed", get(wsfed::get))
        .route(
            "/FederationMetadata/2007-06/FederationMetadata.xml",
            get(wsfed::metadata),
        )
        .route("/account/factors/remove", post(account::remove_factor))
        .route("/account/totp", post(account::add_totp))
        .route("/account/password", post(account::change_password))
        .route(
            "/account/sessions/end-others",
            post(account::end_other_sessions),
        )
        .route("/token", post(token::token))
        .route("/userinfo", get(userinfo::get).post(userinfo::post))
        .route("/introspect", post(introspect::introspect))
        .route("/revoke", post(revoke::revoke))
        .route("/logout", get(logout::get).post(logout::post))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/static/idflow.css", get(ops::stylesheet))
        .route("/static/webauthn.js", get(ops::webauthn_script))
        .route("/static/autopost.js", get(ops::autopost_script))
        .route("/console", get(console::redirect))
        .route("/console/", get(console::page))
        .route("/console/app.js", get(console::script))
        .route("/console/console.css", get(console::stylesheet))
        .merge(admin_routes(Arc::clone(&app)))
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), cors::cors))
        .route_layer(middleware::from_fn_with_state(Arc::clone(&app), observe))
        .with_state(app)
}

/// `/admin/v1`: every route behind the guard that enforces its privilege from the table.
fn admin_routes(app: Arc<App>) -> Router<Arc<App>> {
    use admin::{audit, config, flows, provisioning, reload, roles, routes, sessions, users};
    use axum::routing::{delete, put};
    Router::new()
        .route("/admin/v1/openapi.json", get(routes::openapi))
        .route("/admin/v1/users", get(users::list).post(users::create))
        .route(
            "/admin/v1/users/{id}",
            get(users::read).patch(users::change).delete(users::delete),
        )
        .route("/admin/v1/users/{id}/password", post(users::set_password))
        .route("/admin/v1/users/{id}/unlock", post(users::unlock))
        .route("/admin/v1/users/{id}/factors", get(users::factors))
        .route(
            "/admin/v1/users/{id}/factors/{factor}",
            delete(users::remove_factor),
        )
        .route(
            "/admin/v1/users/{id}/roles/{role}",
            put(users::grant).delete(users::revoke),
        )
        .route(
            "/admin/v1/users/{id}/sessions",
            get(sessions::of_user).delete(sessions::end_all),
        )
        .route("/admin/v1/sessions/{sid}", delete(sessions::end_one))
        .route("/admin/v1/roles", get(roles::list))
        .route(
            "/admin/v1/roles/{name}",
            put(roles::put).delete(roles::delete),
        )
        .route("/admin/v1/applications", get(config::applications))
        .route(
            "/admin/v1/identity-providers",
            get(config::identity_providers),
        )
        .route(
            "/admin/v1/service-providers",
            get(config::service_providers),
        )
        .route(
            "/admin/v1/provisioning-targets",
            get(config::provisioning_targets),
        )
        .route("/admin/v1/flows", get(flows::list))
        .route("/admin/v1/flows/{id}", get(flows::read))
        .route("/admin/v1/flows/{id}/graph", get(flows::graph))
        .route("/admin/v1/flows/{id}/test", get(flows::test))
        .route("/admin/v1/audit", get(audit::query))
        .route("/admin/v1/provisioning/queue", get(provisioning::queue))
        .route("/admin/v1/provisioning/dead", get(provisioning::dead))
        .route(
            "/admin/v1/provisioning/dead/{seq}/retry",
            post(provisioning::retry),
        )
        .route("/admin/v1/reload", post(reload::reload))
        .route_layer(middleware::from_fn_with_state(app, admin::guard))
}

/// Records each request's latency under its route.
async fn observe(State(app): AppState, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    app.metrics.observe(&route, started.elapsed());
    response
}

/// The credentials of an `Authorization` header whose scheme is `scheme`, compared without
/// regard to case as RFC 9110 §11.1 requires (`basic`, `BASIC` and `Basic` are one scheme).
pub fn authorization<'a>(headers: &'a axum::http::HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (name, credentials) = value.split_once(' ')?;
    name.eq_ignore_ascii_case(scheme)
        .then(|| credentials.trim())
}

/// The client's address as this server saw it (no proxy headers are trusted yet).
pub fn client_ip(addr: Option<&SocketAddr>) -> String {
    addr.map(|a| a.ip().to_string()).unwrap_or_default()
}

/// Runs blocking work (argon2, durable store writes) off the async workers.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, crate::store::StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| crate::store::StoreError::Failed(format!("worker failed: {e}")))
}
