//! idflow as a SAML 2.0 identity provider: metadata at `/saml2/metadata`, single sign-on at
//! `/saml2/sso` (HTTP-Redirect and HTTP-POST bindings, and IdP-initiated with `?sp=NAME`).
//! A service provider is an application (`[service_providers.NAME]`): its login runs the flow
//! that applies to it, like an OAuth client's, and completes with a signed response posted to
//! its registered ACS URL.
//!
//! Single Logout at `/saml2/slo` (HTTP-Redirect), SP- and IdP-initiated.
//!
//! One module per part: `metadata`, `sso` (reading the request), `respond` (the response),
//! `slo` (logout).

pub mod metadata;
pub mod respond;
pub mod slo;
pub mod sso;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;

use crate::app::App;
use crate::http::authorize::server_error;
use crate::store::{Challenge, StoreError, Write, token_key};

/// Our entity id as an IdP: the metadata URL, by convention.
pub fn entity_id(app: &App) -> String {
    format!("{}/saml2/metadata", app.config().issuer)
}

/// The page refusing an application's sign-in request (SAML or WS-Federation, `protocol` for
/// the log) before it is trusted enough to answer: nothing is posted anywhere.
pub fn refused(app: &App, protocol: &str, why: &str) -> Response {
    tracing::info!(protocol, why, "sign-in request refused");
    app.pages.message(
        StatusCode::BAD_REQUEST,
        "The sign-in request from the application is not valid",
        &format!("{why}. Return to the application and try again, or tell its administrator."),
    )
}

/// How long a service provider's request may take to reach us (beyond the configured skew).
const REQUEST_WINDOW_SECONDS: u64 = 600;

/// Why a service provider's request is not admitted.
pub enum NotAdmitted {
    /// Refused, saying why (for the refusal page).
    Refused(&'static str),
    /// The store failed: the 500 page.
    Failed(Response),
}

/// Admits a service provider's request once: issued within the window around now (allowing
/// `[saml] skew_seconds`), and with an id that SP has not used before for `purpose` (sign-in
/// and logout ids are kept apart), recorded until the window closes.
pub async fn admit_once(
    app: &Arc<App>,
    purpose: &str,
    sp: &str,
    id: &str,
    issued: Option<u64>,
    now: u64,
) -> Result<(), NotAdmitted> {
    let skew = app.config().saml.skew_seconds;
    let in_window =
        issued.is_some_and(|at| at <= now + skew && at + REQUEST_WINDOW_SECONDS + skew >= now);
    if !in_window {
        return Err(NotAdmitted::Refused(
            "It was made too long ago, or its clock is wrong",
        ));
    }
    let seen = Write::RecordOnce {
        seen: Challenge {
            key: format!("{purpose}:{}", token_key(&format!("{sp}\u{0}{id}"))),
            user: String::new(),
            data: serde_json::Value::Null,
            expires: now + REQUEST_WINDOW_SECONDS + 2 * skew,
        },
        now,
    };
    let store = Arc::clone(&app.store);
    match crate::http::blocking(move || store.commit(vec![seen])).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(StoreError::Conflict(_))) => Err(NotAdmitted::Refused("It was already used")),
        Ok(Err(error)) => Err(NotAdmitted::Failed(server_error(app, &error))),
        Err(error) => Err(NotAdmitted::Failed(server_error(app, &error))),
    }
}
