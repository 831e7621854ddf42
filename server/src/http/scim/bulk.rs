//! `POST /scim/v2/Bulk` (RFC 7644 3.7): many changes in one request, each run as if sent alone
//! (its own transaction, audit entry and provisioning events), in order. `bulkId:X` in an
//! operation's path or data names the resource an earlier POST with `bulkId` X created;
//! `failOnErrors` stops after that many failures. The request is not atomic, as the RFC says:
//! the response tells the client what happened to each operation.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use idflow_scim::ScimError;
use serde_json::{Map, Value, json};

use super::users::{Call, json_body};
use super::{Scim, authenticate, groups, users};
use crate::app::now;
use crate::http::AppState;

/// The most operations one request may carry.
pub const MAX_OPERATIONS: usize = 1000;
/// The largest request body, in bytes.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// The body limit of the route: above [`MAX_PAYLOAD`], so a request a little too large gets
/// the SCIM error rather than the server's plain one.
pub const ROUTE_LIMIT: usize = 2 * MAX_PAYLOAD;

const BULK_REQUEST: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
const BULK_RESPONSE: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

/// `POST /scim/v2/Bulk`.
pub async fn bulk(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            let now = now();
            let actor = authenticate(&app, &headers, &ip, now).await?;
            if body.len() > MAX_PAYLOAD {
                return Err(too_large(format!(
                    "a Bulk request is at most {MAX_PAYLOAD} bytes"
                )));
            }
            let request = json_body(&headers, &body)?;
            let (operations, fail_on_errors) = read_request(&request)?;
            let mut ids: BTreeMap<String, String> = BTreeMap::new();
            let mut errors = 0usize;
            let mut results = Vec::new();
            for operation in operations {
                let (result, failed) = run(&app, &actor, ip, operation, &mut ids).await;
                results.push(result);
                errors += usize::from(failed);
                if fail_on_errors.is_some_and(|limit| errors >= limit) {
                    break;
                }
            }
            Ok((
                StatusCode::OK,
                json!({ "schemas": [BULK_RESPONSE], "Operations": results }),
            ))
        }
        .await,
    )
}

fn too_large(detail: String) -> ScimError {
    let mut error = ScimError::invalid_value(detail);
    error.status = 413;
    error.scim_type = None;
    error
}

/// The operations and `failOnErrors` of a request.
fn read_request(request: &Value) -> Result<(&Vec<Value>, Option<usize>), ScimError> {
    let schemas = idflow_scim::path::get(request, "schemas").and_then(Value::as_array);
    let is_bulk = schemas.is_some_and(|s| {
        s.iter().any(|u| {
            u.as_str()
                .is_some_and(|u| u.eq_ignore_ascii_case(BULK_REQUEST))
        })
    });
    if !is_bulk {
        return Err(ScimError::invalid_syntax(format!(
            "`schemas` must list {BULK_REQUEST}"
        )));
    }
    let operations = idflow_scim::path::get(request, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("`Operations` is a list of operations"))?;
    if operations.len() > MAX_OPERATIONS {
        return Err(too_large(format!(
            "a Bulk request carries at most {MAX_OPERATIONS} operations"
        )));
    }
    let fail_on_errors = match idflow_scim::path::get(request, "failOnErrors") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| ScimError::invalid_value("`failOnErrors` is a positive integer"))?,
        ),
    };
    Ok((operations, fail_on_errors))
}

/// Runs one operation; its entry in the response, and whether it failed.
async fn run(
    app: &std::sync::Arc<crate::app::App>,
    actor: &str,
    ip: std::net::SocketAddr,
    operation: &Value,
    ids: &mut BTreeMap<String, String>,
) -> (Value, bool) {
    let text = |name: &str| {
        idflow_scim::path::get(operation, name)
            .and_then(Value::as_str)
            .map(String::from)
    };
    let method = text("method").unwrap_or_default().to_ascii_uppercase();
    let bulk_id = text("bulkId");
    let mut entry = Map::new();
    entry.insert("method".into(), method.clone().into());
    if let Some(bulk_id) = &bulk_id {
        entry.insert("bulkId".into(), bulk_id.clone().into());
    }
    let call = Call {
        app,
        actor: actor.to_string(),
        ip,
        now: now(),
        if_match: text("version"),
    };
    let outcome = dispatch(&call, &method, bulk_id.as_deref(), operation, ids).await;
    let failed = match outcome {
        Ok((status, resource, location)) => {
            entry.insert("status".into(), status.as_u16().to_string().into());
            if let Some(location) = location {
                entry.insert("location".into(), location.into());
            }
            if let Some(version) = resource["meta"]["version"].as_str() {
                entry.insert("version".into(), version.into());
            }
            if method == "POST"
                && let (Some(bulk_id), Some(id)) = (&bulk_id, resource["id"].as_str())
            {
                ids.insert(bulk_id.clone(), id.to_string());
            }
            false
        }
        Err(error) => {
            if error.status >= 500 {
                tracing::error!(detail = error.detail, "SCIM bulk operation failed");
            }
            let mut body = error.body();
            if error.status >= 500 {
                body["detail"] = "the server could not complete the request".into();
            }
            entry.insert("status".into(), error.status.to_string().into());
            entry.insert("response".into(), body);
            true
        }
    };
    (Value::Object(entry), failed)
}

/// Which endpoint an operation's path names.
enum Endpoint {
    Users,
    Groups,
}

async fn dispatch(
    call: &Call<'_>,
    method: &str,
    bulk_id: Option<&str>,
    operation: &Value,
    ids: &BTreeMap<String, String>,
) -> Result<(StatusCode, Value, Option<String>), ScimError> {
    let path = idflow_scim::path::get(operation, "path")
        .and_then(Value::as_str)
        .ok_or_else(|| ScimError::invalid_value("each operation needs a `path`"))?;
    let (endpoint, id) = parse_path(path)?;
    let id = id.map(|id| resolve_id(&id, ids)).transpose()?;
    let data = || -> Result<Value, ScimError> {
        let mut data = idflow_scim::path::get(operation, "data")
            .cloned()
            .ok_or_else(|| {
                ScimError::invalid_value(format!("a {method} operation needs `data`"))
            })?;
        resolve_references(&mut data, ids)?;
        Ok(data)
    };
    let base = super::base(call.app);
    let kind = match endpoint {
        Endpoint::Users => "Users",
        Endpoint::Groups => "Groups",
    };
    let (status, resource) = match (method, &endpoint, id.as_deref()) {
        ("POST", _, None) => {
            if bulk_id.is_none_or(str::is_empty) {
                return Err(ScimError::invalid_value(
                    "a POST operation needs a `bulkId`",
                ));
            }
            match endpoint {
                Endpoint::Users => users::create_user(call, data()?).await?,
                Endpoint::Groups => groups::create_group(call, data()?).await?,
            }
        }
        ("PUT", Endpoint::Users, Some(id)) => users::replace_user(call, id, data()?).await?,
        ("PUT", Endpoint::Groups, Some(id)) => groups::replace_group(call, id, data()?).await?,
        ("PATCH", Endpoint::Users, Some(id)) => users::patch_user(call, id, data()?).await?,
        ("PATCH", Endpoint::Groups, Some(id)) => groups::patch_group(call, id, data()?).await?,
        ("DELETE", Endpoint::Users, Some(id)) => users::delete_user(call, id).await?,
        ("DELETE", Endpoint::Groups, Some(id)) => groups::delete_group(call, id).await?,
        ("POST" | "PUT" | "PATCH" | "DELETE", _, _) => {
            return Err(ScimError::invalid_value(format!(
                "{method} takes {}",
                if method == "POST" {
                    "a resource type's path, such as /Users"
                } else {
                    "a resource's path, such as /Users/ID"
                }
            )));
        }
        _ => {
            return Err(ScimError::invalid_value(format!(
                "`{method}` is not a Bulk method; use POST, PUT, PATCH or DELETE"
            )));
        }
    };
    let location = resource["meta"]["location"]
        .as_str()
        .map(String::from)
        .or_else(|| id.map(|id| format!("{base}/{kind}/{id}")));
    Ok((status, resource, location))
}

fn parse_path(path: &str) -> Result<(Endpoint, Option<String>), ScimError> {
    let trimmed = path.trim().trim_start_matches('/');
    let (kind, id) = match trimmed.split_once('/') {
        Some((kind, id)) if !id.is_empty() && !id.contains('/') => (kind, Some(id.to_string())),
        Some(_) => {
            return Err(ScimError::invalid_path(format!(
                "`{path}` names no resource"
            )));
        }
        None => (trimmed, None),
    };
    let endpoint = match kind {
        "Users" => Endpoint::Users,
        "Groups" => Endpoint::Groups,
        _ => {
            return Err(ScimError::invalid_path(format!(
                "`{path}` is not under /Users or /Groups"
            )));
        }
    };
    Ok((endpoint, id))
}

fn unresolved(reference: &str) -> ScimError {
    let mut error = ScimError::invalid_value(format!(
        "`{reference}` names no resource created earlier in this request"
    ));
    error.status = 409;
    error
}

/// An id, or the id an earlier operation's `bulkId` stands for.
fn resolve_id(id: &str, ids: &BTreeMap<String, String>) -> Result<String, ScimError> {
    match id.strip_prefix("bulkId:") {
        Some(reference) => ids.get(reference).cloned().ok_or_else(|| unresolved(id)),
        None => Ok(id.to_string()),
    }
}

/// Replaces every string `bulkId:X` in `data` with the id X stands for.
fn resolve_references(data: &mut Value, ids: &BTreeMap<String, String>) -> Result<(), ScimError> {
    match data {
        Value::String(text) if text.starts_with("bulkId:") => {
            *text = resolve_id(text, ids)?;
            Ok(())
        }
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|item| resolve_references(item, ids)),
        Value::Object(members) => members
            .values_mut()
            .try_for_each(|value| resolve_references(value, ids)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_to_earlier_ids_and_unknown_ones_are_conflicts() {
        let ids = BTreeMap::from([("u1".to_string(), "abc".to_string())]);
        let mut data = json!({"members": [{"value": "bulkId:u1"}], "displayName": "bulkId"});
        resolve_references(&mut data, &ids).expect("resolved");
        assert_eq!(data["members"][0]["value"], "abc");
        assert_eq!(data["displayName"], "bulkId");
        let mut unknown = json!({"members": [{"value": "bulkId:zz"}]});
        let error = resolve_references(&mut unknown, &ids).expect_err("unknown");
        assert_eq!(error.status, 409);
        assert_eq!(error.scim_type, Some("invalidValue"));
        assert_eq!(resolve_id("bulkId:u1", &ids).expect("id"), "abc");
    }

    #[test]
    fn paths_name_users_or_groups() {
        assert!(matches!(parse_path("/Users"), Ok((Endpoint::Users, None))));
        assert!(matches!(parse_path("/Groups/g1"), Ok((Endpoint::Groups, Some(id))) if id == "g1"));
        for bad in ["/Roles", "/Users/", "/Users/a/b", ""] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}
