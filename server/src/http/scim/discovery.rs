//! `/ServiceProviderConfig`, `/ResourceTypes`, `/Schemas` (RFC 7644 4): what SCIM clients read
//! before anything else. Served to authenticated callers only, like the rest.

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use idflow_scim::ScimError;
use idflow_scim::query::list_response;
use serde_json::Value;

use super::{Scim, authenticate, base};
use crate::app::now;
use crate::http::AppState;

/// `GET /scim/v2/ServiceProviderConfig`.
pub async fn service_provider_config(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Scim {
    if let Err(error) = authenticate(&app, &headers, &ip, now()).await {
        return Scim(Err(error));
    }
    let config = idflow_scim::schema::service_provider_config(
        &base(&app),
        idflow_scim::query::MAX_PAGE,
        (super::bulk::MAX_OPERATIONS, super::bulk::MAX_PAYLOAD),
    );
    Scim(Ok((StatusCode::OK, config)))
}

fn listed(items: Vec<Value>) -> Scim {
    let total = items.len();
    Scim(Ok((StatusCode::OK, list_response(items, total, 1))))
}

fn one(items: Vec<Value>, id: &str) -> Scim {
    match items
        .into_iter()
        .find(|item| item["id"].as_str() == Some(id))
    {
        Some(item) => Scim(Ok((StatusCode::OK, item))),
        None => Scim(Err(ScimError::not_found(format!("no `{id}` here")))),
    }
}

/// `GET /scim/v2/ResourceTypes`.
pub async fn resource_types(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Scim {
    if let Err(error) = authenticate(&app, &headers, &ip, now()).await {
        return Scim(Err(error));
    }
    listed(idflow_scim::schema::resource_types(&base(&app)))
}

/// `GET /scim/v2/ResourceTypes/{id}`.
pub async fn resource_type(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Scim {
    if let Err(error) = authenticate(&app, &headers, &ip, now()).await {
        return Scim(Err(error));
    }
    one(idflow_scim::schema::resource_types(&base(&app)), &id)
}

/// `GET /scim/v2/Schemas`.
pub async fn schemas(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
) -> Scim {
    if let Err(error) = authenticate(&app, &headers, &ip, now()).await {
        return Scim(Err(error));
    }
    match idflow_scim::schema::schemas(&base(&app)) {
        Ok(items) => listed(items),
        Err(error) => Scim(Err(error)),
    }
}

/// `GET /scim/v2/Schemas/{id}`.
pub async fn schema(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Scim {
    if let Err(error) = authenticate(&app, &headers, &ip, now()).await {
        return Scim(Err(error));
    }
    match idflow_scim::schema::schemas(&base(&app)) {
        Ok(items) => one(items, &id),
        Err(error) => Scim(Err(error)),
    }
}
