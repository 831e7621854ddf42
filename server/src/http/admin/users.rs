//! `/admin/v1/users`: list, create, read, change, delete; passwords, unlocking, factors and
//! roles. Every change is audited, and made only over the record as read (a conflict if it
//! changed meanwhile); nobody changes a user whose privileges they do not all hold.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Admin, AdminError, Answer, body, commit, load_user};
use crate::app::{App, now};
use crate::http::AppState;
use crate::http::params::Params;
use crate::store::{User, Write};

/// A user as the admin API shows them (never the password hash).
pub fn view(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "email": user.email,
        "email_verified": user.email_verified,
        "name": user.name,
        "roles": user.roles,
        "disabled": user.disabled,
        "locked_until": user.locked_until,
        "failed_attempts": user.failed_attempts,
        "has_password": user.password_hash.is_some(),
        "created": user.created,
    })
}

fn query(raw: Option<String>) -> Result<Params, AdminError> {
    Params::parse_with_limit(raw.unwrap_or_default().as_bytes(), 8 * 1024).map_err(AdminError::bad)
}

fn number(params: &Params, name: &str, default: usize) -> Result<usize, AdminError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| AdminError::bad(format!("`{name}` is a number")))
        })
        .transpose()
        .map(|v| v.unwrap_or(default))
}

/// `GET /admin/v1/users`.
pub async fn list(State(app): AppState, RawQuery(raw): RawQuery) -> Answer {
    let params = query(raw)?;
    let needle = params.get("q").unwrap_or_default().to_lowercase();
    let offset = number(&params, "offset", 0)?;
    let limit = number(&params, "limit", 100)?.min(1000);
    let store = Arc::clone(&app.store);
    let mut users = crate::http::blocking(move || store.users())
        .await
        .map_err(AdminError::internal)?
        .map_err(AdminError::internal)?;
    users.retain(|u| {
        needle.is_empty()
            || u.username.to_lowercase().contains(&needle)
            || u.email.to_lowercase().contains(&needle)
            || u.name.to_lowercase().contains(&needle)
    });
    users.sort_by(|a, b| a.username.cmp(&b.username));
    let total = users.len();
    let shown: Vec<Value> = users.iter().skip(offset).take(limit).map(view).collect();
    Ok((
        StatusCode::OK,
        Json(json!({ "total": total, "users": shown })),
    ))
}

/// `GET /admin/v1/users/{id}`.
pub async fn read(State(app): AppState, Path(id): Path<String>) -> Answer {
    Ok((StatusCode::OK, Json(view(&load_user(&app, &id)?))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    password: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

async fn hash(app: &App, password: String) -> Result<String, AdminError> {
    let hasher = app.passwords.clone();
    crate::http::blocking(move || hasher.hash(&password))
        .await
        .map_err(AdminError::internal)?
        .map_err(|why| AdminError::bad(format!("the password is not acceptable: {why}")))
}

/// Refuses a change that would leave no enabled user holding every privilege: disabling or
/// deleting `user`, or (with `losing`) taking that role from them. Someone must be able to
/// administer the server without editing its data directory.
fn keeps_an_administrator(app: &App, user: &User, losing: Option<&str>) -> Result<(), AdminError> {
    let everything = |roles: &[String]| -> Result<bool, AdminError> {
        for role in roles {
            let found = app.store.role(role).map_err(AdminError::internal)?;
            if found.is_some_and(|r| r.privileges.iter().any(|p| p == "*")) {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if user.disabled || !everything(&user.roles)? {
        return Ok(());
    }
    if let Some(role) = losing {
        let remaining: Vec<String> = user.roles.iter().filter(|r| *r != role).cloned().collect();
        if everything(&remaining)? {
            return Ok(());
        }
    }
    for other in app.store.users().map_err(AdminError::internal)? {
        if other.id != user.id && !other.disabled && everything(&other.roles)? {
            return Ok(());
        }
    }
    Err(AdminError::conflict(format!(
        "`{}` is the last enabled user holding every privilege",
        user.username
    )))
}

/// Refuses a role the caller may not hand out: unknown, or with privileges they lack.
fn check_grant(app: &App, admin: &Admin, role: &str) -> Result<(), AdminError> {
    if !admin.holds("roles:assign") {
        return Err(AdminError::forbidden("giving roles needs roles:assign"));
    }
    let found = app
        .store
        .role(role)
        .map_err(AdminError::internal)?
        .ok_or_else(|| AdminError::bad(format!("no role `{role}`")))?;
    if admin.holds_all(&found.privileges) {
        Ok(())
    } else {
        Err(AdminError::forbidden(format!(
            "the role `{role}` grants privileges you do not hold"
        )))
    }
}

/// `POST /admin/v1/users`.
pub async fn create(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    bytes: Bytes,
) -> Answer {
    let new: NewUser = body(&bytes)?;
    let username = new.username.trim().to_string();
    if username.is_empty() || username.chars().any(char::is_control) {
        return Err(AdminError::bad(
            "`username` is required, without control characters",
        ));
    }
    for role in &new.roles {
        check_grant(&app, &admin, role)?;
    }
    let mut user = User::new(crate::crypto::random_token(12), username, now());
    user.email = new.email.trim().to_string();
    user.name = new.name.trim().to_string();
    user.roles = new.roles;
    if let Some(password) = new.password {
        user.password_hash = Some(hash(&app, password).await?);
    }
    let config = app.config();
    let mut batch = vec![admin.audited(
        "user.create",
        &user.id,
        json!({ "username": user.username, "roles": user.roles, "by": "admin-api" }),
    )];
    batch.extend(crate::provisioning::queue(
        &config.provisioning_targets,
        "user.created",
        &user.id,
        now(),
    ));
    let shown = view(&user);
    batch.push(Write::CreateUser(user));
    commit(&app, batch).await?;
    Ok((StatusCode::CREATED, Json(shown)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    email: Option<String>,
    name: Option<String>,
    disabled: Option<bool>,
}

/// Stores `user` over `original`, with the audit entry and provisioning events.
async fn store(
    app: &Arc<App>,
    admin: &Admin,
    original: User,
    user: User,
    event: &str,
    detail: Value,
    mut extra: Vec<Write>,
) -> Answer {
    let config = app.config();
    let mut batch = vec![admin.audited(event, &user.id, detail)];
    for change in crate::provisioning::update_events(&original, &user) {
        batch.extend(crate::provisioning::queue(
            &config.provisioning_targets,
            change,
            &user.id,
            now(),
        ));
    }
    if user.disabled && !original.disabled {
        batch.push(Write::EndUserSessions {
            user: user.id.clone(),
            except: None,
        });
    }
    batch.append(&mut extra);
    let shown = view(&user);
    batch.push(Write::ReplaceUser {
        user,
        expected: Box::new(original),
    });
    commit(app, batch).await?;
    Ok((StatusCode::OK, Json(shown)))
}

/// `PATCH /admin/v1/users/{id}`.
pub async fn change(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let change: Change = body(&bytes)?;
    let original = load_user(&app, &id)?;
    admin.may_manage(&app, &original)?;
    let mut user = original.clone();
    if let Some(email) = change.email {
        admin.not_self(&original, "email")?;
        let email = email.trim().to_string();
        if !email.eq_ignore_ascii_case(&user.email) {
            user.email_verified = false;
        }
        user.email = email;
    }
    if let Some(name) = change.name {
        user.name = name.trim().to_string();
    }
    if let Some(disabled) = change.disabled {
        if disabled && admin.user.as_ref().is_some_and(|me| me.id == user.id) {
            return Err(AdminError::bad("you cannot disable yourself"));
        }
        if disabled && !original.disabled {
            keeps_an_administrator(&app, &original, None)?;
        }
        user.disabled = disabled;
    }
    let detail = json!({ "email": user.email, "name": user.name, "disabled": user.disabled });
    store(
        &app,
        &admin,
        original,
        user,
        "user.update",
        detail,
        Vec::new(),
    )
    .await
}

/// `DELETE /admin/v1/users/{id}`.
pub async fn delete(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(id): Path<String>,
) -> Answer {
    let user = load_user(&app, &id)?;
    admin.may_manage(&app, &user)?;
    if user.username.eq_ignore_ascii_case(crate::app::ADMIN) {
        return Err(AdminError::forbidden("the built-in `admin` user stays"));
    }
    keeps_an_administrator(&app, &user, None)?;
    let config = app.config();
    let mut batch = vec![admin.audited("user.delete", &id, json!({ "username": user.username }))];
    batch.extend(crate::provisioning::queue(
        &config.provisioning_targets,
        "user.deleted",
        &id,
        now(),
    ));
    batch.push(Write::DeleteUser(id.clone()));
    commit(&app, batch).await?;
    Ok((StatusCode::OK, Json(json!({ "deleted": id }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
}

/// `POST /admin/v1/users/{id}/password`: a new password; the user's sessions and refresh
/// tokens end (whoever knew the old one is signed out).
pub async fn set_password(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    let new: NewPassword = body(&bytes)?;
    let original = load_user(&app, &id)?;
    admin.may_manage(&app, &original)?;
    admin.not_self(&original, "password")?;
    let mut user = original.clone();
    user.password_hash = Some(hash(&app, new.password).await?);
    user.failed_attempts = 0;
    user.locked_until = 0;
    let end = vec![Write::EndUserSessions {
        user: id.clone(),
        except: None,
    }];
    store(
        &app,
        &admin,
        original,
        user,
        "user.set_password",
        Value::Null,
        end,
    )
    .await
}

/// `POST /admin/v1/users/{id}/unlock`.
pub async fn unlock(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path(id): Path<String>,
) -> Answer {
    let original = load_user(&app, &id)?;
    admin.may_manage(&app, &original)?;
    let mut user = original.clone();
    user.failed_attempts = 0;
    user.locked_until = 0;
    store(
        &app,
        &admin,
        original,
        user,
        "user.unlock",
        Value::Null,
        Vec::new(),
    )
    .await
}

/// `GET /admin/v1/users/{id}/factors`: kinds, labels and dates (never secrets).
pub async fn factors(State(app): AppState, Path(id): Path<String>) -> Answer {
    load_user(&app, &id)?;
    let factors = app.store.factors(&id).map_err(AdminError::internal)?;
    let shown: Vec<Value> = factors
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "kind": f.kind,
                "label": f.label,
                "created": f.created,
                "last_used": f.last_used,
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({ "factors": shown }))))
}

/// `DELETE /admin/v1/users/{id}/factors/{factor}` (`all` for every one).
pub async fn remove_factor(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path((id, factor)): Path<(String, String)>,
) -> Answer {
    let user = load_user(&app, &id)?;
    admin.may_manage(&app, &user)?;
    admin.not_self(&user, "factors")?;
    let factors = app.store.factors(&id).map_err(AdminError::internal)?;
    let doomed: Vec<String> = factors
        .iter()
        .filter(|f| factor == "all" || f.id == factor)
        .map(|f| f.id.clone())
        .collect();
    if doomed.is_empty() && factor != "all" {
        return Err(AdminError::not_found(format!("no factor `{factor}`")));
    }
    let mut batch = vec![admin.audited("factor.removed", &id, json!({ "factors": doomed }))];
    batch.extend(doomed.iter().map(|f| Write::DeleteFactor {
        user: id.clone(),
        id: f.clone(),
    }));
    batch.push(Write::EndUserSessions {
        user: id.clone(),
        except: None,
    });
    commit(&app, batch).await?;
    Ok((StatusCode::OK, Json(json!({ "removed": doomed }))))
}

/// `PUT /admin/v1/users/{id}/roles/{role}`: only a role whose privileges the caller holds,
/// to a user the caller may manage.
pub async fn grant(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path((id, role)): Path<(String, String)>,
) -> Answer {
    let user = load_user(&app, &id)?;
    admin.may_manage(&app, &user)?;
    check_grant(&app, &admin, &role)?;
    let write = Write::GrantRole {
        user: id.clone(),
        role: role.clone(),
    };
    change_role(&app, &admin, &id, &role, write).await
}

/// Stores a role given or taken, with its audit entry and provisioning events; the user as
/// they are now.
async fn change_role(app: &Arc<App>, admin: &Admin, id: &str, role: &str, write: Write) -> Answer {
    let (event, provisioning) = match write {
        Write::GrantRole { .. } => ("user.grant", "role.assigned"),
        _ => ("user.revoke", "role.unassigned"),
    };
    let config = app.config();
    let mut batch = vec![admin.audited(event, id, json!({ "role": role, "by": "admin-api" }))];
    batch.extend(crate::provisioning::queue(
        &config.provisioning_targets,
        provisioning,
        id,
        now(),
    ));
    batch.push(write);
    commit(app, batch).await?;
    Ok((StatusCode::OK, Json(view(&load_user(app, id)?))))
}

/// `DELETE /admin/v1/users/{id}/roles/{role}`.
pub async fn revoke(
    State(app): AppState,
    Extension(admin): Extension<Arc<Admin>>,
    Path((id, role)): Path<(String, String)>,
) -> Answer {
    let user = load_user(&app, &id)?;
    admin.may_manage(&app, &user)?;
    if user.username.eq_ignore_ascii_case(crate::app::ADMIN)
        && role.eq_ignore_ascii_case(crate::app::ADMIN)
    {
        return Err(AdminError::forbidden(
            "the built-in `admin` user keeps the `admin` role",
        ));
    }
    keeps_an_administrator(&app, &user, Some(&role))?;
    if !user.roles.contains(&role) {
        return Err(AdminError::not_found(format!(
            "the user does not hold `{role}`"
        )));
    }
    let write = Write::RevokeRole {
        user: id.clone(),
        role: role.clone(),
    };
    change_role(&app, &admin, &id, &role, write).await
}
