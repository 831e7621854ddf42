//! `GET /saml2/metadata`: the IdP metadata service providers import.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

/// The metadata document, with our signing certificate and endpoints.
pub async fn get(State(app): AppState) -> Response {
    let issuer = &app.config().issuer;
    let body = idflow_saml::metadata::idp_metadata(
        &super::entity_id(&app),
        &format!("{issuer}/saml2/sso"),
        &format!("{issuer}/saml2/slo"),
        &app.saml.certificate_base64(),
    );
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/samlmetadata+xml"),
    );
    response
}
