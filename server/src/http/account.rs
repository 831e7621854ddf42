//! The account page at `/`: who is signed in, and a way to sign in or out without an
//! application.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::AppState;
use super::authorize::{current_session, start_login};
use crate::app::now;

/// `GET /`.
pub async fn page(State(app): AppState, headers: HeaderMap) -> Response {
    let session = match current_session(&app, &headers, now()) {
        Ok(session) => session,
        Err(response) => return response,
    };
    let user = session
        .as_ref()
        .and_then(|s| app.store.user(&s.user).ok().flatten())
        .map(|u| u.username);
    app.pages.render(
        StatusCode::OK,
        "account.html",
        serde_json::json!({ "user": user, "csrf": session.map(|s| s.csrf) }),
    )
}

/// `GET /login/start`: a login on the default flow, ending at the account page.
pub async fn start_login_page(
    State(app): AppState,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    start_login(&app, None, addr, &headers, now()).await
}
