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

use crate::app::App;

/// Our entity id as an IdP: the metadata URL, by convention.
pub fn entity_id(app: &App) -> String {
    format!("{}/saml2/metadata", app.config.issuer)
}
