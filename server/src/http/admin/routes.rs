//! The admin API's routes with the privilege each needs: the table the [`super::guard`]
//! middleware enforces, the OpenAPI document is made from, and the privilege tests walk.

use axum::Json;
use serde_json::{Map, Value, json};

/// Every privilege the admin API knows (a role may hold others, e.g. `scim`).
pub const PRIVILEGES: &[&str] = &[
    "users:read",
    "users:write",
    "roles:read",
    "roles:write",
    "roles:assign",
    "sessions:read",
    "sessions:write",
    "config:read",
    "config:reload",
    "audit:read",
    "provisioning:read",
    "provisioning:write",
];

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The HTTP method.
    pub method: &'static str,
    /// The path as the router matches it (`{id}` for a parameter).
    pub path: &'static str,
    /// The privilege it needs; `None` for the public OpenAPI document.
    pub privilege: Option<&'static str>,
    /// What it does.
    pub summary: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    privilege: &'static str,
    summary: &'static str,
) -> Route {
    Route {
        method,
        path,
        privilege: Some(privilege),
        summary,
    }
}

/// The admin API.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/admin/v1/openapi.json",
        privilege: None,
        summary: "This document",
    },
    route(
        "GET",
        "/admin/v1/users",
        "users:read",
        "List users (`q` matches username, email or name; `offset`, `limit`)",
    ),
    route(
        "POST",
        "/admin/v1/users",
        "users:write",
        "Create a user (`roles` need roles:assign and their privileges)",
    ),
    route("GET", "/admin/v1/users/{id}", "users:read", "Read a user"),
    route(
        "PATCH",
        "/admin/v1/users/{id}",
        "users:write",
        "Change a user's email, name or disabled flag",
    ),
    route(
        "DELETE",
        "/admin/v1/users/{id}",
        "users:write",
        "Delete a user with their factors, links and sessions",
    ),
    route(
        "POST",
        "/admin/v1/users/{id}/password",
        "users:write",
        "Set a user's password (their sessions end)",
    ),
    route(
        "POST",
        "/admin/v1/users/{id}/unlock",
        "users:write",
        "Clear a user's lock and failure count",
    ),
    route(
        "GET",
        "/admin/v1/users/{id}/factors",
        "users:read",
        "List a user's second factors",
    ),
    route(
        "DELETE",
        "/admin/v1/users/{id}/factors/{factor}",
        "users:write",
        "Remove a factor (or `all`); the user's sessions end",
    ),
    route(
        "PUT",
        "/admin/v1/users/{id}/roles/{role}",
        "roles:assign",
        "Give a user a role whose privileges you hold",
    ),
    route(
        "DELETE",
        "/admin/v1/users/{id}/roles/{role}",
        "roles:assign",
        "Take a role from a user",
    ),
    route(
        "GET",
        "/admin/v1/users/{id}/sessions",
        "sessions:read",
        "List a user's sessions",
    ),
    route(
        "DELETE",
        "/admin/v1/users/{id}/sessions",
        "sessions:write",
        "End every session of a user",
    ),
    route(
        "DELETE",
        "/admin/v1/sessions/{sid}",
        "sessions:write",
        "End one session",
    ),
    route(
        "GET",
        "/admin/v1/roles",
        "roles:read",
        "List roles with their privileges and member counts",
    ),
    route(
        "PUT",
        "/admin/v1/roles/{name}",
        "roles:write",
        "Create or change a role (only privileges you hold)",
    ),
    route(
        "DELETE",
        "/admin/v1/roles/{name}",
        "roles:write",
        "Delete a role (taken from its members)",
    ),
    route(
        "GET",
        "/admin/v1/applications",
        "config:read",
        "The applications (declarative; no secrets)",
    ),
    route(
        "GET",
        "/admin/v1/identity-providers",
        "config:read",
        "The upstream identity providers (no secrets)",
    ),
    route(
        "GET",
        "/admin/v1/service-providers",
        "config:read",
        "The SAML service providers",
    ),
    route(
        "GET",
        "/admin/v1/provisioning-targets",
        "config:read",
        "The provisioning targets (no secrets)",
    ),
    route(
        "GET",
        "/admin/v1/flows",
        "config:read",
        "The live flows with their versions",
    ),
    route(
        "GET",
        "/admin/v1/flows/{id}",
        "config:read",
        "A live flow's IR",
    ),
    route(
        "GET",
        "/admin/v1/flows/{id}/graph",
        "config:read",
        "A live flow's state machine (`format=mermaid|dot|svg`; `coverage=true` marks what its scenarios miss)",
    ),
    route(
        "GET",
        "/admin/v1/flows/{id}/test",
        "config:read",
        "Run a live flow's scenarios: results and coverage",
    ),
    route(
        "GET",
        "/admin/v1/audit",
        "audit:read",
        "Audit entries, newest first (`user`, `event`, `since`, `until`, `limit`)",
    ),
    route(
        "GET",
        "/admin/v1/provisioning/queue",
        "provisioning:read",
        "Provisioning events waiting for delivery",
    ),
    route(
        "GET",
        "/admin/v1/provisioning/dead",
        "provisioning:read",
        "Provisioning events that failed for good",
    ),
    route(
        "POST",
        "/admin/v1/provisioning/dead/{seq}/retry",
        "provisioning:write",
        "Put a dead letter back in the outbox",
    ),
    route(
        "POST",
        "/admin/v1/reload",
        "config:reload",
        "Reload the configuration and flows (all checked first)",
    ),
];

/// The route for a method and matched path.
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    // HEAD is answered by the GET handler, and needs what GET needs.
    let method = if method.eq_ignore_ascii_case("HEAD") {
        "GET"
    } else {
        method
    };
    ROUTES
        .iter()
        .find(|r| r.method.eq_ignore_ascii_case(method) && r.path == path)
}

/// `GET /admin/v1/openapi.json`: the OpenAPI 3.1 document of this API, made from [`ROUTES`].
pub async fn openapi() -> Json<Value> {
    Json(document())
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let relative = route.path.trim_start_matches("/admin/v1");
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            "summary": route.summary,
            "operationId": format!("{} {}", route.method, relative),
            "parameters": parameters,
            "responses": {
                "200": {"description": "Done", "content": {"application/json": {}}},
                "400": {"$ref": "#/components/responses/Error"},
                "401": {"$ref": "#/components/responses/Error"},
                "403": {"$ref": "#/components/responses/Error"},
                "404": {"$ref": "#/components/responses/Error"},
            },
        });
        match route.privilege {
            Some(privilege) => {
                operation["x-idflow-privilege"] = privilege.into();
                operation["security"] = json!([{"basic": []}, {"bearer": []}]);
            }
            None => operation["security"] = json!([]),
        }
        let entry = paths
            .entry(relative.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "idflow admin API",
            "version": "1",
            "description": "Users, roles, sessions, configuration, flows, audit and provisioning. Each operation names the privilege it needs in x-idflow-privilege; a role with `*` holds them all.",
        },
        "servers": [{"url": "/admin/v1"}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "A user's access token with the `admin` scope, or a client_credentials token whose scopes are privileges"},
            },
            "responses": {
                "Error": {
                    "description": "An error",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
                        "required": ["error", "detail"],
                    }}},
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_but_the_document_needs_a_known_privilege() {
        for route in ROUTES {
            match route.privilege {
                Some(privilege) => assert!(PRIVILEGES.contains(&privilege), "{route:?}"),
                None => assert_eq!(route.path, "/admin/v1/openapi.json"),
            }
        }
    }

    #[test]
    fn the_document_lists_every_route_once() {
        let document = document();
        let operations: usize = document["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|methods| methods.as_object().map_or(0, |m| m.len()))
            .sum();
        assert_eq!(operations, ROUTES.len());
        assert_eq!(
            document["paths"]["/users/{id}/roles/{role}"]["put"]["x-idflow-privilege"],
            "roles:assign"
        );
    }
}
