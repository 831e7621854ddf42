//! `/scim/v2/Groups`: a SCIM Group is an idflow role, its members the users holding it.
//!
//! A group's `id` and `displayName` are the role's name. The name is immutable: flows, JIT
//! rules and applications test roles by name, so a rename would silently change who passes
//! them (rename by creating the new group, moving members and deleting the old one). Groups
//! made through SCIM are roles without privileges; a role that grants privileges (`admin`
//! among them) is read-only here unless the caller holds every privilege, since adding a
//! member to it would grant them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use idflow_scim::{ScimError, patch, urn};
use serde_json::{Value, json};

use super::resource::version;
use super::users::{
    Call, ListRequest, call, check_version, commit, holds_every_privilege, internal, json_body,
    query, read_answer,
};
use super::{Scim, authenticate, base};
use crate::app::{App, now};
use crate::http::AppState;
use crate::store::{Role, User, Write};

type Caller = std::net::SocketAddr;

/// Attributes of a Group the server sets.
const READ_ONLY: &[&str] = &["id", "meta"];
/// The longest role name SCIM may create.
const MAX_NAME: usize = 128;

/// The location of a group.
fn location(base: &str, name: &str) -> String {
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    format!("{base}/Groups/{}", encoded.replace('+', "%20"))
}

/// The resource for `role` with its `members` (users holding it, by id).
pub fn render(role: &Role, members: &[&User], base: &str) -> Value {
    let mut members: Vec<&&User> = members.iter().collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let members: Vec<Value> = members
        .iter()
        .map(|user| {
            json!({
                "value": user.id,
                "type": "User",
                "$ref": format!("{base}/Users/{}", user.id),
            })
        })
        .collect();
    let mut resource = json!({
        "schemas": [urn::GROUP],
        "id": role.name,
        "displayName": role.name,
        "meta": {
            "resourceType": "Group",
            "location": location(base, &role.name),
        },
    });
    if let Some(external_id) = &role.external_id {
        resource["externalId"] = external_id.clone().into();
    }
    if !members.is_empty() {
        resource["members"] = Value::Array(members);
    }
    let version = version(&resource);
    resource["meta"]["version"] = version.into();
    resource
}

fn load(app: &App, name: &str) -> Result<(Role, Vec<User>), ScimError> {
    let role = app
        .store
        .role(name)
        .map_err(internal)?
        .ok_or_else(|| ScimError::not_found(format!("no group `{name}`")))?;
    let members = app.store.role_members(name).map_err(internal)?;
    Ok((role, members))
}

fn rendered(app: &App, role: &Role, members: &[User]) -> Value {
    let members: Vec<&User> = members.iter().collect();
    render(role, &members, &base(app))
}

/// Refuses a change to a role that grants privileges, unless the caller holds them all.
fn guard(app: &App, actor: &str, role: &Role) -> Result<(), ScimError> {
    if role.privileges.is_empty() || holds_every_privilege(app, actor)? {
        Ok(())
    } else {
        Err(ScimError::forbidden(format!(
            "the role `{}` grants privileges; only a caller holding every privilege may change it through SCIM",
            role.name
        )))
    }
}

/// What a client's Group says: its name, its client's id for it, and its members' ids.
struct Wanted {
    name: String,
    external_id: Option<String>,
    members: BTreeSet<String>,
}

fn read_group(resource: &Value) -> Result<Wanted, ScimError> {
    let Value::Object(doc) = resource else {
        return Err(ScimError::invalid_syntax("a Group is a JSON object"));
    };
    if let Some(schemas) = idflow_scim::path::get(resource, "schemas") {
        let lists_group = schemas.as_array().is_some_and(|s| {
            s.iter().any(|u| {
                u.as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(urn::GROUP))
            })
        });
        if !lists_group {
            return Err(ScimError::invalid_value(format!(
                "`schemas` must list {}",
                urn::GROUP
            )));
        }
    }
    let name = idflow_scim::path::get(resource, "displayName")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ScimError::invalid_value("`displayName` is required"))?
        .to_string();
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ScimError::invalid_value(format!(
            "`displayName` is at most {MAX_NAME} characters, none of them control characters"
        )));
    }
    let external_id = match idflow_scim::path::get(resource, "externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => return Err(ScimError::invalid_value("`externalId` is a string")),
    };
    let mut members = BTreeSet::new();
    let listed = idflow_scim::path::key_of(doc, "members").and_then(|key| doc.get(&key));
    match listed {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let value = idflow_scim::path::get(item, "value")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ScimError::invalid_value("each member needs a `value`"))?;
                if let Some(kind) = idflow_scim::path::get(item, "type").and_then(Value::as_str)
                    && !kind.eq_ignore_ascii_case("User")
                {
                    return Err(ScimError::invalid_value(
                        "members are users (groups do not nest)",
                    ));
                }
                members.insert(value.to_string());
            }
        }
        Some(_) => return Err(ScimError::invalid_value("`members` is a list")),
    }
    Ok(Wanted {
        name,
        external_id,
        members,
    })
}

/// The writes that make `role`'s members exactly `wanted`, from `current`, with their
/// provisioning events. Every user added or removed must exist and be SCIM's to change.
fn membership(
    call: &Call<'_>,
    role: &str,
    current: &[User],
    wanted: &BTreeSet<String>,
) -> Result<Vec<Write>, ScimError> {
    let app = call.app;
    let held: BTreeSet<&str> = current.iter().map(|u| u.id.as_str()).collect();
    let mut writes = Vec::new();
    let targets = &app.config().provisioning_targets;
    for id in wanted.iter().filter(|id| !held.contains(id.as_str())) {
        let user = app
            .store
            .user(id)
            .map_err(internal)?
            .ok_or_else(|| ScimError::invalid_value(format!("member `{id}` is not a user")))?;
        member_guard(call, &user)?;
        writes.push(Write::GrantRole {
            user: id.clone(),
            role: role.to_string(),
        });
        writes.extend(crate::provisioning::queue(
            targets,
            "role.assigned",
            id,
            call.now,
        ));
    }
    for user in current.iter().filter(|u| !wanted.contains(&u.id)) {
        member_guard(call, user)?;
        writes.push(Write::RevokeRole {
            user: user.id.clone(),
            role: role.to_string(),
        });
        writes.extend(crate::provisioning::queue(
            targets,
            "role.unassigned",
            &user.id,
            call.now,
        ));
    }
    Ok(writes)
}

/// A member whose other roles give privileges is an administrator's to change.
fn member_guard(call: &Call<'_>, user: &User) -> Result<(), ScimError> {
    let privileged = !super::users::privileges(call.app, user)?.is_empty()
        || user.username.eq_ignore_ascii_case(crate::app::ADMIN);
    if privileged && !holds_every_privilege(call.app, &call.actor)? {
        return Err(ScimError::forbidden(format!(
            "the user `{}` holds privileges; only a caller holding every privilege may change their roles through SCIM",
            user.id
        )));
    }
    Ok(())
}

fn members_detail(writes: &[Write]) -> Value {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for write in writes {
        match write {
            Write::GrantRole { user, .. } => added.push(user.clone()),
            Write::RevokeRole { user, .. } => removed.push(user.clone()),
            _ => {}
        }
    }
    json!({ "by": "scim", "added": added, "removed": removed })
}

fn audited(call: &Call<'_>, event: &str, role: &str, detail: Value) -> Write {
    let mut entry = call.audited(event, role);
    if let Write::Audit(event) = &mut entry {
        event.detail = detail;
    }
    entry
}

/// Creates a group.
pub async fn create_group(call: &Call<'_>, body: Value) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let wanted = read_group(&body)?;
    if app.store.role(&wanted.name).map_err(internal)?.is_some() {
        return Err(ScimError::uniqueness(format!(
            "a group named `{}` exists",
            wanted.name
        )));
    }
    let role = Role {
        name: wanted.name.clone(),
        description: String::new(),
        privileges: Vec::new(),
        external_id: wanted.external_id.clone(),
    };
    let changes = membership(call, &role.name, &[], &wanted.members)?;
    let mut batch = vec![audited(
        call,
        "scim.group.create",
        &role.name,
        members_detail(&changes),
    )];
    batch.push(Write::CreateRole(role.clone()));
    batch.extend(changes);
    commit(app, batch).await?;
    let (role, members) = load(app, &role.name)?;
    Ok((StatusCode::CREATED, rendered(app, &role, &members)))
}

/// Replaces a group (its members; the name must stay).
pub async fn replace_group(
    call: &Call<'_>,
    id: &str,
    body: Value,
) -> Result<(StatusCode, Value), ScimError> {
    let wanted = read_group(&body)?;
    change_group(call, id, "scim.group.replace", |_| Ok(wanted)).await
}

/// Applies a SCIM PATCH request to a group.
pub async fn patch_group(
    call: &Call<'_>,
    id: &str,
    body: Value,
) -> Result<(StatusCode, Value), ScimError> {
    let operations = patch::parse_request(&body)?;
    change_group(call, id, "scim.group.patch", |mut resource| {
        patch::apply(&mut resource, &operations, READ_ONLY)?;
        read_group(&resource)
    })
    .await
}

async fn change_group(
    call: &Call<'_>,
    id: &str,
    event: &str,
    change: impl FnOnce(Value) -> Result<Wanted, ScimError>,
) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let (role, members) = load(app, id)?;
    let resource = rendered(app, &role, &members);
    check_version(call.if_match.as_deref(), &resource)?;
    guard(app, &call.actor, &role)?;
    let wanted = change(resource)?;
    if wanted.name != role.name {
        return Err(ScimError::mutability(format!(
            "a group's displayName is its role's name, which flows test: `{}` cannot be renamed",
            role.name
        )));
    }
    let changes = membership(call, &role.name, &members, &wanted.members)?;
    let mut batch = vec![audited(call, event, &role.name, members_detail(&changes))];
    if wanted.external_id != role.external_id {
        batch.push(Write::PutRole(Role {
            external_id: wanted.external_id,
            ..role.clone()
        }));
    }
    batch.extend(changes);
    commit(app, batch).await?;
    let (role, members) = load(app, &role.name)?;
    Ok((StatusCode::OK, rendered(app, &role, &members)))
}

/// Deletes a group: the role, taken from every member.
pub async fn delete_group(call: &Call<'_>, id: &str) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let (role, members) = load(app, id)?;
    check_version(call.if_match.as_deref(), &rendered(app, &role, &members))?;
    guard(app, &call.actor, &role)?;
    if role.name.eq_ignore_ascii_case(crate::app::ADMIN) {
        return Err(ScimError::forbidden("the built-in `admin` role stays"));
    }
    // Deleting the group takes the role from every member: each must be SCIM's to change.
    for user in &members {
        member_guard(call, user)?;
    }
    let mut batch = vec![audited(
        call,
        "scim.group.delete",
        &role.name,
        json!({ "by": "scim", "members": members.iter().map(|u| &u.id).collect::<Vec<_>>() }),
    )];
    for user in &members {
        batch.extend(crate::provisioning::queue(
            &app.config().provisioning_targets,
            "role.unassigned",
            &user.id,
            call.now,
        ));
    }
    batch.push(Write::DeleteRole(role.name.clone()));
    commit(app, batch).await?;
    Ok((StatusCode::NO_CONTENT, Value::Null))
}

/// Every group, rendered (one pass over the users for all memberships).
pub(super) fn all_groups(app: &App) -> Result<Vec<Value>, ScimError> {
    let roles = app.store.roles().map_err(internal)?;
    let users = app.store.users().map_err(internal)?;
    let mut holders: BTreeMap<&str, Vec<&User>> = BTreeMap::new();
    for user in &users {
        for role in &user.roles {
            holders.entry(role.as_str()).or_default().push(user);
        }
    }
    let base = base(app);
    Ok(roles
        .iter()
        .map(|role| {
            let members = holders
                .get(role.name.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            render(role, members, &base)
        })
        .collect())
}

async fn list(app: &Arc<App>, request: ListRequest) -> Result<(StatusCode, Value), ScimError> {
    let app = Arc::clone(app);
    crate::http::blocking(move || {
        let resources = all_groups(&app)?;
        Ok((StatusCode::OK, request.page(resources)))
    })
    .await
    .map_err(internal)?
}

/// `GET /scim/v2/Groups`.
pub async fn get_list(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Scim {
    Scim(
        async {
            authenticate(&app, &headers, &ip, now()).await?;
            list(&app, ListRequest::from_query(&query(raw)?)?).await
        }
        .await,
    )
}

/// `POST /scim/v2/Groups/.search`.
pub async fn search(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            authenticate(&app, &headers, &ip, now()).await?;
            list(
                &app,
                ListRequest::from_search(&json_body(&headers, &body)?)?,
            )
            .await
        }
        .await,
    )
}

/// `GET /scim/v2/Groups/{id}`.
pub async fn get_one(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Scim {
    Scim(
        async {
            authenticate(&app, &headers, &ip, now()).await?;
            read_answer(&headers, raw, || {
                let (role, members) = load(&app, &id)?;
                Ok(rendered(&app, &role, &members))
            })
        }
        .await,
    )
}

/// `POST /scim/v2/Groups`.
pub async fn create(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            let call = call(&app, &headers, ip).await?;
            create_group(&call, json_body(&headers, &body)?).await
        }
        .await,
    )
}

/// `PUT /scim/v2/Groups/{id}`.
pub async fn replace(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            let call = call(&app, &headers, ip).await?;
            replace_group(&call, &id, json_body(&headers, &body)?).await
        }
        .await,
    )
}

/// `PATCH /scim/v2/Groups/{id}`.
pub async fn patch(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            let call = call(&app, &headers, ip).await?;
            patch_group(&call, &id, json_body(&headers, &body)?).await
        }
        .await,
    )
}

/// `DELETE /scim/v2/Groups/{id}`.
pub async fn delete(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Scim {
    Scim(
        async {
            let call = call(&app, &headers, ip).await?;
            delete_group(&call, &id).await
        }
        .await,
    )
}
