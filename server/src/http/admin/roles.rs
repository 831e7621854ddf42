//! Roles: list, create or change, delete. A caller hands out only privileges they hold, and
//! changes or deletes only a role whose privileges they hold: a user manager cannot make
//! themselves, or anyone, an administrator.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminError, Answer, body, commit};
use crate::http::AppState;
use crate::store::{Role, Write};

/// `GET /admin/v1/roles`.
pub async fn list(State(app): AppState) -> Answer {
    let roles = app.store.roles().map_err(AdminError::internal)?;
    let store = Arc::clone(&app.store);
    let users = crate::http::blocking(move || store.users())
        .await
        .map_err(AdminError::internal)?
        .map_err(AdminError::internal)?;
    let shown: Vec<Value> = roles
        .iter()
        .map(|role| {
            let members = users
                .iter()
                .filter(|u| u.roles.contains(&role.name))
                .count();
            json!({
                "name": role.name,
                "description": role.description,
                "privileges": role.privileges,
                "members": members,
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({ "roles": shown }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleBody {
    #[serde(default)]
    description: String,
    #[serde(default)]
    privileges: Vec<String>,
}

/// `PUT /admin/v1/roles/{name}`.
pub async fn put(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Answer {
    let wanted: RoleBody = body(&bytes)?;
    let name = name.trim().to_string();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(AdminError::bad(
            "a role name is 1 to 128 characters, none of them control characters",
        ));
    }
    if !admin.holds_all(&wanted.privileges) {
        return Err(AdminError::forbidden(
            "you can only give a role privileges you hold",
        ));
    }
    let existing = app.store.role(&name).map_err(AdminError::internal)?;
    if let Some(existing) = &existing
        && !admin.holds_all(&existing.privileges)
    {
        return Err(AdminError::forbidden(format!(
            "the role `{name}` grants privileges you do not hold"
        )));
    }
    if name.eq_ignore_ascii_case(crate::app::ADMIN) && !wanted.privileges.iter().any(|p| p == "*") {
        return Err(AdminError::forbidden(
            "the built-in `admin` role keeps every privilege",
        ));
    }
    let role = Role {
        name: name.clone(),
        description: wanted.description,
        privileges: wanted.privileges,
        external_id: existing.and_then(|r| r.external_id),
    };
    let shown = json!({ "name": role.name, "description": role.description, "privileges": role.privileges });
    commit(
        &app,
        vec![
            admin.audited("role.put", &name, shown.clone()),
            Write::PutRole(role),
        ],
    )
    .await?;
    Ok((StatusCode::OK, Json(shown)))
}

/// `DELETE /admin/v1/roles/{name}`.
pub async fn delete(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(name): Path<String>,
) -> Answer {
    let role = app
        .store
        .role(&name)
        .map_err(AdminError::internal)?
        .ok_or_else(|| AdminError::not_found(format!("no role `{name}`")))?;
    if !admin.holds_all(&role.privileges) {
        return Err(AdminError::forbidden(format!(
            "the role `{name}` grants privileges you do not hold"
        )));
    }
    if name.eq_ignore_ascii_case(crate::app::ADMIN) {
        return Err(AdminError::forbidden("the built-in `admin` role stays"));
    }
    let members = app
        .store
        .role_members(&name)
        .map_err(AdminError::internal)?;
    let config = app.config();
    let mut batch = vec![admin.audited("role.delete", &name, json!({ "members": members.len() }))];
    for user in &members {
        batch.extend(crate::provisioning::queue(
            &config.provisioning_targets,
            "role.unassigned",
            &user.id,
            crate::app::now(),
        ));
    }
    batch.push(Write::DeleteRole(name.clone()));
    commit(&app, batch).await?;
    Ok((StatusCode::OK, Json(json!({ "deleted": name }))))
}
