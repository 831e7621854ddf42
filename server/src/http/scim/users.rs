//! `/scim/v2/Users`: list and search, read, create, replace, PATCH and delete, with ETags
//! (`If-Match`) and an audit entry for every change.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use idflow_scim::query::{list_response, page, parse_attribute, parse_attributes, project, sort};
use idflow_scim::{ScimError, filter, patch};
use scim_v2::filter::AttrPath;
use serde_json::Value;

use super::resource::{READ_ONLY, absorb, render};
use super::{Scim, authenticate, base};
use crate::app::{App, now};
use crate::effects::audit;
use crate::http::AppState;
use crate::http::params::Params;
use crate::store::{StoreError, User, Write};

type Caller = std::net::SocketAddr;

/// What a list or search asks for.
pub(super) struct ListRequest {
    pub(super) filter: Option<scim_v2::filter::Filter>,
    pub(super) sort_by: Option<AttrPath>,
    pub(super) descending: bool,
    pub(super) start_index: i64,
    pub(super) count: Option<i64>,
    pub(super) attributes: Vec<AttrPath>,
    pub(super) excluded: Vec<AttrPath>,
}

pub(super) fn internal(error: impl std::fmt::Display) -> ScimError {
    ScimError::new_internal(error.to_string())
}

fn number(value: Option<&str>, name: &str) -> Result<Option<i64>, ScimError> {
    value
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ScimError::invalid_value(format!("`{name}` must be an integer")))
        })
        .transpose()
}

impl ListRequest {
    pub(super) fn from_query(params: &Params) -> Result<ListRequest, ScimError> {
        Ok(ListRequest {
            filter: params.get("filter").map(filter::parse).transpose()?,
            sort_by: params.get("sortBy").map(parse_attribute).transpose()?,
            descending: sort_order(params.get("sortOrder"))?,
            start_index: number(params.get("startIndex"), "startIndex")?.unwrap_or(1),
            count: number(params.get("count"), "count")?,
            attributes: params
                .get("attributes")
                .map(parse_attributes)
                .transpose()?
                .unwrap_or_default(),
            excluded: params
                .get("excludedAttributes")
                .map(parse_attributes)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    pub(super) fn from_search(body: &Value) -> Result<ListRequest, ScimError> {
        let text = |name: &str| idflow_scim::path::get(body, name).and_then(Value::as_str);
        let list = |name: &str| -> Result<Vec<AttrPath>, ScimError> {
            match idflow_scim::path::get(body, name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::String(text)) => parse_attributes(text),
                Some(Value::Array(items)) => {
                    let names: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                    parse_attributes(&names.join(","))
                }
                Some(_) => Err(ScimError::invalid_value(format!(
                    "`{name}` is a list of attribute names"
                ))),
            }
        };
        let int = |name: &str| match idflow_scim::path::get(body, name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_i64()
                .map(Some)
                .ok_or_else(|| ScimError::invalid_value(format!("`{name}` must be an integer"))),
        };
        Ok(ListRequest {
            filter: text("filter").map(filter::parse).transpose()?,
            sort_by: text("sortBy").map(parse_attribute).transpose()?,
            descending: sort_order(text("sortOrder"))?,
            start_index: int("startIndex")?.unwrap_or(1),
            count: int("count")?,
            attributes: list("attributes")?,
            excluded: list("excludedAttributes")?,
        })
    }
}

/// `sortOrder`: whether it says descending; anything but the two words is an error.
fn sort_order(order: Option<&str>) -> Result<bool, ScimError> {
    match order {
        None => Ok(false),
        Some(order) if order.eq_ignore_ascii_case("ascending") => Ok(false),
        Some(order) if order.eq_ignore_ascii_case("descending") => Ok(true),
        Some(_) => Err(ScimError::invalid_value(
            "`sortOrder` is ascending or descending",
        )),
    }
}

pub(super) fn query(raw: Option<String>) -> Result<Params, ScimError> {
    Params::parse_with_limit(raw.unwrap_or_default().as_bytes(), 16 * 1024)
        .map_err(ScimError::invalid_value)
}

pub(super) fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ScimError> {
    // A SCIM body is JSON and says so: a form or text/plain post (which a browser can send
    // across sites with cached Basic credentials) is refused.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if content_type != "application/scim+json" && content_type != "application/json" {
        return Err(ScimError::invalid_syntax(
            "the body must be application/scim+json (or application/json)",
        ));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ScimError::invalid_syntax(format!("the body is not JSON: {e}")))?;
    if let Some(key) = repeated_key(&value) {
        return Err(ScimError::invalid_syntax(format!(
            "the attribute `{key}` appears twice (attribute names ignore case)"
        )));
    }
    Ok(value)
}

/// A key that an object holds twice when case is ignored (at any depth): SCIM names ignore
/// case, so such a body says two things at once, and the second could hide from checks.
fn repeated_key(value: &Value) -> Option<String> {
    match value {
        Value::Object(members) => {
            let mut seen = std::collections::BTreeSet::new();
            for (key, inner) in members {
                if !seen.insert(key.to_lowercase()) {
                    return Some(key.clone());
                }
                if let Some(repeated) = repeated_key(inner) {
                    return Some(repeated);
                }
            }
            None
        }
        Value::Array(items) => items.iter().find_map(repeated_key),
        _ => None,
    }
}

/// The users a filter can match, found through an index when it pins `userName`, an email
/// or `id` with `eq` (the lookup every provisioning client makes before it creates or
/// updates); `None` when the whole directory must be read. The filter still decides.
fn candidates(app: &App, filter: &scim_v2::filter::Filter) -> Result<Option<Vec<User>>, ScimError> {
    use scim_v2::filter::{AttrExp, CompValue, CompareOp, Filter};
    match filter {
        Filter::Attr(AttrExp::Comparison(path, CompareOp::Eq, CompValue::Str(value)))
            if path.uri.as_deref().is_none_or(idflow_scim::path::is_core) =>
        {
            let name = path.name.to_ascii_lowercase();
            let sub = path.sub_attr.as_deref().map(str::to_ascii_lowercase);
            let found = match (name.as_str(), sub.as_deref()) {
                ("username", None) | ("emails", None | Some("value")) => {
                    app.store.user_by_login(value).map_err(internal)?
                }
                ("id", None) => app.store.user(value).map_err(internal)?,
                _ => return Ok(None),
            };
            Ok(Some(found.into_iter().collect()))
        }
        Filter::And(operands) => {
            for operand in operands.as_slice() {
                if let Some(found) = candidates(app, operand)? {
                    return Ok(Some(found));
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

pub(super) async fn list(
    app: &Arc<App>,
    request: ListRequest,
) -> Result<(StatusCode, Value), ScimError> {
    let base = base(app);
    let pinned = match &request.filter {
        Some(filter) => candidates(app, filter)?,
        None => None,
    };
    let store = Arc::clone(&app.store);
    // Reading, rendering, filtering and sorting a directory is CPU work: off the async
    // workers, so a large search does not stall sign-ins.
    crate::http::blocking(move || {
        let users = match pinned {
            Some(users) => users,
            None => store.users().map_err(internal)?,
        };
        Ok((StatusCode::OK, page_of(users, &request, &base)))
    })
    .await
    .map_err(internal)?
}

/// The page of `users` a list request asks for.
fn page_of(mut users: Vec<User>, request: &ListRequest, base: &str) -> Value {
    // Without a filter or a sort, the page is cut from the records by id and only it is
    // rendered: a directory of 100,000 users is not turned into JSON to show 100 of them.
    if request.filter.is_none() && request.sort_by.is_none() {
        users.sort_by(|a, b| a.id.cmp(&b.id));
        let total = users.len();
        let range = page(total, request.start_index, request.count);
        let start = range.start + 1;
        let shown = users[range]
            .iter()
            .map(|user| project(&render(user, base), &request.attributes, &request.excluded))
            .collect();
        return list_response(shown, total, start);
    }
    let resources: Vec<Value> = users.iter().map(|user| render(user, base)).collect();
    request.page(resources)
}

impl ListRequest {
    /// The page of `resources` the request asks for: filtered, sorted (by id without a
    /// `sortBy`, so pages do not overlap), cut and projected.
    pub(super) fn page(&self, mut resources: Vec<Value>) -> Value {
        if let Some(filter) = &self.filter {
            resources.retain(|resource| filter::matches(filter, resource));
        }
        match &self.sort_by {
            Some(by) => sort(&mut resources, by, self.descending),
            None => resources.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str())),
        }
        let total = resources.len();
        let range = page(total, self.start_index, self.count);
        let start = range.start + 1;
        let shown = resources[range]
            .iter()
            .map(|r| project(r, &self.attributes, &self.excluded))
            .collect();
        list_response(shown, total, start)
    }
}

/// `POST /scim/v2/.search`: every resource type at once (RFC 7644 3.4.3), users and groups.
pub async fn search_all(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            authenticate(&app, &headers, &ip, now()).await?;
            let request = ListRequest::from_search(&json_body(&headers, &body)?)?;
            let pinned = match &request.filter {
                Some(filter) => candidates(&app, filter)?,
                None => None,
            };
            let app = Arc::clone(&app);
            crate::http::blocking(move || {
                let users = match pinned {
                    Some(users) => users,
                    None => app.store.users().map_err(internal)?,
                };
                let base = base(&app);
                let mut resources: Vec<Value> =
                    users.iter().map(|user| render(user, &base)).collect();
                resources.extend(super::groups::all_groups(&app)?);
                Ok((StatusCode::OK, request.page(resources)))
            })
            .await
            .map_err(internal)?
        }
        .await,
    )
}

/// `GET /scim/v2/Users`.
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

/// `POST /scim/v2/Users/.search`.
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

pub(super) fn load(app: &App, id: &str) -> Result<User, ScimError> {
    app.store
        .user(id)
        .map_err(internal)?
        .ok_or_else(|| ScimError::not_found(format!("no user `{id}`")))
}

/// `GET /scim/v2/Users/{id}`.
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
            read_answer(&headers, raw, || Ok(render(&load(&app, &id)?, &base(&app))))
        }
        .await,
    )
}

/// The privileges `user`'s roles give.
pub(super) fn privileges(app: &App, user: &User) -> Result<Vec<String>, ScimError> {
    let mut all = Vec::new();
    for role in &user.roles {
        if let Some(found) = app.store.role(role).map_err(internal)? {
            all.extend(found.privileges);
        }
    }
    Ok(all)
}

/// Whether the caller holds every privilege (`*`): only such a caller may change, through
/// SCIM, what carries privileges. A client's `scim` scope never does.
pub(super) fn holds_every_privilege(app: &App, actor: &str) -> Result<bool, ScimError> {
    if actor.starts_with("client:") {
        return Ok(false);
    }
    Ok(match app.store.user(actor).map_err(internal)? {
        Some(caller) => privileges(app, &caller)?.iter().any(|p| p == "*"),
        None => false,
    })
}

/// SCIM manages ordinary accounts, and their membership of roles that grant no privilege (its
/// Groups): that is what an HR system provisions. A user whose roles give privileges (the
/// built-in `admin` among them) is changed or deleted only by a caller who holds every
/// privilege: the `scim` privilege or scope must not become an administrator's password.
fn guard(app: &App, actor: &str, target: &User) -> Result<(), ScimError> {
    let reserved = target.username.eq_ignore_ascii_case(crate::app::ADMIN);
    if !reserved && privileges(app, target)?.is_empty() {
        return Ok(());
    }
    if holds_every_privilege(app, actor)? {
        Ok(())
    } else {
        Err(ScimError::forbidden(
            "this user holds privileges; only a caller holding every privilege may change them through SCIM",
        ))
    }
}

/// Refuses a change whose `If-Match` names another version.
pub fn check_version(if_match: Option<&str>, current: &Value) -> Result<(), ScimError> {
    let Some(wanted) = if_match else {
        return Ok(());
    };
    let version = current["meta"]["version"].as_str().unwrap_or_default();
    if wanted.trim() == "*" || wanted.split(',').any(|v| v.trim() == version) {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!(
            "the resource is at version {version}"
        )))
    }
}

/// Who is asking, from where, when, and on which version: what every SCIM change needs
/// besides its body, whether it came alone or in a Bulk request.
pub struct Call<'a> {
    /// The server.
    pub app: &'a Arc<App>,
    /// The authenticated caller (a user id, or `client:ID`).
    pub actor: String,
    /// Their address.
    pub ip: Caller,
    /// Now.
    pub now: u64,
    /// The version the change is made over (`If-Match`, or a Bulk operation's `version`).
    pub if_match: Option<String>,
}

impl Call<'_> {
    /// An audit entry for this call about `subject`.
    pub fn audited(&self, event: &str, subject: &str) -> Write {
        audited(event, &self.actor, subject, &self.ip, self.now)
    }
}

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The authenticated caller of a changing request, as a [`Call`].
pub(super) async fn call<'a>(
    app: &'a Arc<App>,
    headers: &HeaderMap,
    ip: Caller,
) -> Result<Call<'a>, ScimError> {
    let now = now();
    let actor = authenticate(app, headers, &ip, now).await?;
    Ok(Call {
        app,
        actor,
        ip,
        now,
        if_match: if_match(headers),
    })
}

/// The answer to a GET of one resource (`read`, after the query is checked): `304` when
/// `If-None-Match` names its version, else the resource with the `attributes` or
/// `excludedAttributes` the query asks for.
pub(super) fn read_answer(
    headers: &HeaderMap,
    raw: Option<String>,
    read: impl FnOnce() -> Result<Value, ScimError>,
) -> Result<(StatusCode, Value), ScimError> {
    let params = query(raw)?;
    let attributes = params
        .get("attributes")
        .map(parse_attributes)
        .transpose()?
        .unwrap_or_default();
    let excluded = params
        .get("excludedAttributes")
        .map(parse_attributes)
        .transpose()?
        .unwrap_or_default();
    let resource = read()?;
    if let Some(version) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        && resource["meta"]["version"].as_str() == Some(version)
    {
        return Ok((StatusCode::NOT_MODIFIED, Value::Null));
    }
    Ok((StatusCode::OK, project(&resource, &attributes, &excluded)))
}

/// A name or address another user holds: 409 `uniqueness`. The built-in administrator's name
/// is reserved even while no such user exists (start-up creates it when missing).
fn check_unique(app: &App, user: &User) -> Result<(), ScimError> {
    if user.username.eq_ignore_ascii_case(crate::app::ADMIN) {
        let admin = app
            .store
            .user_by_login(crate::app::ADMIN)
            .map_err(internal)?;
        if admin.is_none_or(|a| a.id != user.id) {
            return Err(ScimError::uniqueness(format!(
                "the username `{}` is reserved",
                crate::app::ADMIN
            )));
        }
    }
    for name in [&user.username, &user.email] {
        if name.is_empty() {
            continue;
        }
        if let Some(other) = app.store.user_by_login(name).map_err(internal)?
            && other.id != user.id
        {
            return Err(ScimError::uniqueness(format!(
                "`{name}` is another user's username or email"
            )));
        }
    }
    Ok(())
}

/// Hashes a password set through SCIM like any other (the policy applies).
async fn hash(app: &App, password: Option<String>) -> Result<Option<String>, ScimError> {
    let Some(password) = password else {
        return Ok(None);
    };
    let hasher = app.passwords.clone();
    match crate::http::blocking(move || hasher.hash(&password)).await {
        Ok(Ok(hash)) => Ok(Some(hash)),
        Ok(Err(why)) => Err(ScimError::invalid_value(format!(
            "the password is not acceptable: {why}"
        ))),
        Err(error) => Err(internal(error)),
    }
}

pub(super) async fn commit(app: &Arc<App>, batch: Vec<Write>) -> Result<(), ScimError> {
    let store = Arc::clone(&app.store);
    match crate::http::blocking(move || store.commit(batch))
        .await
        .map_err(internal)?
    {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict(why)) => Err(ScimError::precondition_failed(why)),
        Err(error) if error.name_taken().is_some() => Err(ScimError::uniqueness(
            error.name_taken().unwrap_or_default().to_string(),
        )),
        Err(error) => Err(internal(error)),
    }
}

fn audited(event: &str, actor: &str, user: &str, ip: &Caller, now: u64) -> Write {
    let mut entry = audit(
        event,
        user,
        &ip.ip().to_string(),
        now,
        serde_json::json!({ "by": "scim" }),
    );
    if let Write::Audit(event) = &mut entry {
        event.actor = actor.to_string();
    }
    entry
}

/// `POST /scim/v2/Users`.
pub async fn create(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            let body = json_body(&headers, &body)?;
            let call = call(&app, &headers, ip).await?;
            create_user(&call, body).await
        }
        .await,
    )
}

/// Creates a user from a SCIM body.
pub async fn create_user(call: &Call<'_>, body: Value) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let mut user = User::new(crate::crypto::random_token(12), String::new(), call.now);
    let password = absorb(&mut user, body, call.now)?;
    check_unique(app, &user)?;
    user.password_hash = hash(app, password).await?;
    let resource = render(&user, &base(app));
    let mut batch = vec![call.audited("scim.user.create", &user.id)];
    batch.extend(crate::provisioning::queue(
        &app.config().provisioning_targets,
        "user.created",
        &user.id,
        call.now,
    ));
    batch.push(Write::CreateUser(user));
    commit(app, batch).await?;
    Ok((StatusCode::CREATED, resource))
}

/// `PUT /scim/v2/Users/{id}`: the whole resource replaced (the password kept unless given).
pub async fn replace(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            let body = json_body(&headers, &body)?;
            let call = call(&app, &headers, ip).await?;
            replace_user(&call, &id, body).await
        }
        .await,
    )
}

/// Replaces a user with a SCIM body.
pub async fn replace_user(
    call: &Call<'_>,
    id: &str,
    body: Value,
) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let original = load(app, id)?;
    guard(app, &call.actor, &original)?;
    check_version(call.if_match.as_deref(), &render(&original, &base(app)))?;
    let mut user = original.clone();
    let password = absorb(&mut user, body, call.now)?;
    let change = Change {
        original,
        user,
        password,
        event: "scim.user.replace",
    };
    store_change(call, change).await
}

/// `PATCH /scim/v2/Users/{id}`.
pub async fn patch(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Scim {
    Scim(
        async {
            let body = json_body(&headers, &body)?;
            let call = call(&app, &headers, ip).await?;
            patch_user(&call, &id, body).await
        }
        .await,
    )
}

/// Applies a SCIM PATCH request to a user.
pub async fn patch_user(
    call: &Call<'_>,
    id: &str,
    body: Value,
) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let operations = patch::parse_request(&body)?;
    let original = load(app, id)?;
    guard(app, &call.actor, &original)?;
    let mut resource = render(&original, &base(app));
    check_version(call.if_match.as_deref(), &resource)?;
    let had_active = idflow_scim::path::get(&resource, "active").is_some();
    patch::apply(&mut resource, &operations, READ_ONLY)?;
    // Removing `active` says nothing about the account any more: it is not disabled
    // (unlike a PUT that merely omits it, which leaves it as it was).
    let removed_active = had_active && idflow_scim::path::get(&resource, "active").is_none();
    let mut user = original.clone();
    let password = absorb(&mut user, resource, call.now)?;
    if removed_active {
        user.disabled = false;
    }
    let change = Change {
        original,
        user,
        password,
        event: "scim.user.patch",
    };
    store_change(call, change).await
}

/// A user as read and as the request leaves them.
struct Change {
    original: User,
    user: User,
    password: Option<String>,
    event: &'static str,
}

/// Stores a change, only if the user is still as read: anything another request or an admin
/// changed meanwhile (a role, a lock, another SCIM write) is not overwritten, and the client
/// gets 412 to read again.
async fn store_change(call: &Call<'_>, change: Change) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let Change {
        original,
        mut user,
        password,
        event,
    } = change;
    if !original.email.eq_ignore_ascii_case(&user.email) {
        // A new address is not verified, whatever the old one was.
        user.email_verified = false;
    }
    check_unique(app, &user)?;
    if let Some(hash) = hash(app, password).await? {
        user.password_hash = Some(hash);
    }
    let resource = render(&user, &base(app));
    let mut batch = vec![call.audited(event, &user.id)];
    for event in crate::provisioning::update_events(&original, &user) {
        batch.extend(crate::provisioning::queue(
            &app.config().provisioning_targets,
            event,
            &user.id,
            call.now,
        ));
    }
    // A deactivated user is signed out everywhere.
    if user.disabled {
        batch.push(Write::EndUserSessions {
            user: user.id.clone(),
            except: None,
        });
    }
    batch.push(Write::ReplaceUser {
        user,
        expected: Box::new(original),
    });
    commit(app, batch).await?;
    Ok((StatusCode::OK, resource))
}

/// `DELETE /scim/v2/Users/{id}`.
pub async fn delete(
    State(app): AppState,
    ConnectInfo(ip): ConnectInfo<Caller>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Scim {
    Scim(
        async {
            let call = call(&app, &headers, ip).await?;
            delete_user(&call, &id).await
        }
        .await,
    )
}

/// Deletes a user.
pub async fn delete_user(call: &Call<'_>, id: &str) -> Result<(StatusCode, Value), ScimError> {
    let app = call.app;
    let user = load(app, id)?;
    guard(app, &call.actor, &user)?;
    check_version(call.if_match.as_deref(), &render(&user, &base(app)))?;
    let mut batch = vec![call.audited("scim.user.delete", id)];
    batch.extend(crate::provisioning::queue(
        &app.config().provisioning_targets,
        "user.deleted",
        id,
        call.now,
    ));
    batch.push(Write::DeleteUser(id.to_string()));
    commit(app, batch).await?;
    Ok((StatusCode::NO_CONTENT, Value::Null))
}

/// Property tests of how a list request is read, from a query string and from a
/// `POST /.search` body (see `server/tests/never_panics.rs`).
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const FILTERS: &[&str] = &[
        r#"userName eq "ann""#,
        r#"emails[type eq "work" and value co "@"]"#,
        "not (active eq true) or title pr",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter ge 4130",
        "((",
        "title pr and",
        "userName eq",
    ];

    const PATHS: &[&str] = &[
        "userName",
        "name.familyName",
        "emails.value, emails.type",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        "emails[type eq \"work\"]",
        "1x",
        ",,",
    ];

    /// One parameter value: a likely one, or any text.
    fn value(likely: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            3 => prop::sample::select(likely).prop_map(String::from),
            1 => "\\PC{1,20}",
        ])
    }

    fn number() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (-5i64..20).prop_map(|n| format!(" {n} ")),
            prop::sample::select(&["1.5", "1e3", "x", "99999999999999999999", "+3"][..])
                .prop_map(String::from),
        ])
    }

    type Fields = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );

    fn fields() -> impl Strategy<Value = Fields> {
        (
            value(FILTERS),
            value(PATHS),
            value(&["ascending", "DESCENDING", "up"]),
            number(),
            number(),
            value(PATHS),
            value(PATHS),
        )
    }

    const NAMES: [&str; 7] = [
        "filter",
        "sortBy",
        "sortOrder",
        "startIndex",
        "count",
        "attributes",
        "excludedAttributes",
    ];

    fn values(fields: &Fields) -> [&Option<String>; 7] {
        let (a, b, c, d, e, f, g) = fields;
        [a, b, c, d, e, f, g]
    }

    #[allow(clippy::type_complexity)]
    fn seen(
        request: &ListRequest,
    ) -> (
        Option<&scim_v2::filter::Filter>,
        Option<&AttrPath>,
        bool,
        i64,
        Option<i64>,
        &[AttrPath],
        &[AttrPath],
    ) {
        (
            request.filter.as_ref(),
            request.sort_by.as_ref(),
            request.descending,
            request.start_index,
            request.count,
            &request.attributes,
            &request.excluded,
        )
    }

    proptest! {
        #![proptest_config(crate::http::params::fuzz_config(512))]

        #[test]
        fn any_query_string_is_a_list_request_or_a_400(raw in "\\PC{0,200}") {
            if let Ok(params) = query(Some(raw))
                && let Err(error) = ListRequest::from_query(&params)
            {
                prop_assert_eq!(error.status, 400);
            }
        }

        #[test]
        fn a_query_and_a_search_body_saying_the_same_are_read_the_same(fields in fields()) {
            let mut pairs = url::form_urlencoded::Serializer::new(String::new());
            let mut body = serde_json::Map::new();
            for (name, value) in NAMES.iter().zip(values(&fields)) {
                let Some(value) = value else { continue };
                pairs.append_pair(name, value);
                let number = matches!(*name, "startIndex" | "count")
                    .then(|| value.trim().parse::<i64>().ok())
                    .flatten();
                body.insert(name.to_string(), number.map_or_else(|| json!(value), |n| json!(n)));
            }
            let params = query(Some(pairs.finish())).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let from_query = ListRequest::from_query(&params);
            let from_search = ListRequest::from_search(&Value::Object(body));
            match (&from_query, &from_search) {
                (Ok(a), Ok(b)) => prop_assert_eq!(seen(a), seen(b)),
                (Err(a), Err(b)) => prop_assert_eq!((a.status, b.status), (400, 400)),
                _ => prop_assert!(
                    false,
                    "{:?}: the query {}, the body {}",
                    fields,
                    if from_query.is_ok() { "reads" } else { "fails" },
                    if from_search.is_ok() { "reads" } else { "fails" }
                ),
            }
        }

        #[test]
        fn any_body_is_json_or_a_400(
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..200),
                "\\{\"[a-zA-Z]{1,3}\": ?(1|\"x\"|\\{\"[a-zA-Z]{1,3}\": 2, \"[a-zA-Z]{1,3}\": 3\\})(, \"[a-zA-Z]{1,3}\": 4)?\\}"
                    .prop_map(String::into_bytes),
            ],
            search in any::<bool>(),
        ) {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/scim+json"));
            match json_body(&headers, &Bytes::from(body)) {
                Ok(value) => {
                    prop_assert!(repeated_key(&value).is_none());
                    if search && let Err(error) = ListRequest::from_search(&value) {
                        prop_assert_eq!(error.status, 400);
                    }
                }
                Err(error) => prop_assert_eq!(error.status, 400),
            }
        }
    }
}
