//! The SCIM 2.0 provisioning target (RFC 7644 as a client).
//!
//! Written over reqwest rather than a SCIM client crate: the Rust SCIM crates model resources
//! but do not speak the protocol, and what a delivery needs is five requests.
//!
//! A user is found at the target by the id remembered from an earlier delivery, else by
//! `externalId` (which carries the local id), so a copy created just before a crash is found
//! again rather than created twice. A name the target already holds for an account not made
//! from here (409) is a refusal: linking to it could hand one person's downstream account to
//! another. Roles travel as group memberships; a group missing at the target is created.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Delivered, Delivering, DeliveryError, ProvisioningTarget, UserSync};
use crate::config::provisioning::{ScimEndpoint, Target, TargetAuth};
use crate::store::User;

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Answers from a target are read up to this size.
const MAX_ANSWER: usize = 1024 * 1024;

/// A SCIM 2.0 service provider users are sent to.
pub struct ScimTarget {
    name: String,
    endpoint: ScimEndpoint,
    http: reqwest::Client,
    /// A client_credentials token and when to stop using it.
    token: Mutex<Option<(String, Instant)>>,
}

impl ScimTarget {
    /// The target `config` describes; `None` when it has no endpoint.
    pub fn new(config: &Target) -> Result<Option<ScimTarget>, String> {
        let Some(endpoint) = config.endpoint.clone() else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.timeout_seconds))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Some(ScimTarget {
            name: config.name.clone(),
            endpoint,
            http,
            token: Mutex::new(None),
        }))
    }

    async fn authorization(&self) -> Result<String, DeliveryError> {
        match &self.endpoint.auth {
            TargetAuth::Bearer(token) => Ok(format!("Bearer {}", token.0)),
            TargetAuth::Basic { username, password } => {
                use base64::Engine as _;
                let pair = format!("{username}:{}", password.0);
                Ok(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            TargetAuth::ClientCredentials { .. } => {
                if let Ok(cached) = self.token.lock()
                    && let Some((token, until)) = cached.as_ref()
                    && Instant::now() < *until
                {
                    return Ok(format!("Bearer {token}"));
                }
                let (token, lifetime) = self.fetch_token().await?;
                // Renewed a little early (30 s, or half a short lifetime), so a token does not
                // expire in flight.
                let margin = Duration::from_secs(30).min(lifetime / 2);
                let until = Instant::now() + lifetime.saturating_sub(margin);
                if let Ok(mut cached) = self.token.lock() {
                    *cached = Some((token.clone(), until));
                }
                Ok(format!("Bearer {token}"))
            }
        }
    }

    /// A client_credentials grant. Hand-written (a form post and two fields read): the oauth2
    /// crate's client wants an authorization endpoint and typed flows this grant has no use for.
    async fn fetch_token(&self) -> Result<(String, Duration), DeliveryError> {
        let TargetAuth::ClientCredentials {
            token_url,
            client_id,
            client_secret,
            scope,
        } = &self.endpoint.auth
        else {
            return Err(DeliveryError::Refused(
                "not a client_credentials target".into(),
            ));
        };
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("scope", scope)
            .finish();
        let response = self
            .http
            .post(token_url)
            .basic_auth(client_id, Some(&client_secret.0))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .map_err(|e| DeliveryError::Retry(format!("token endpoint: {e}")))?;
        let status = response.status();
        let body = read(response).await?;
        if !status.is_success() {
            return Err(DeliveryError::Retry(format!(
                "token endpoint answered {status}: {}",
                summary(&body)
            )));
        }
        let token = body["access_token"].as_str().ok_or_else(|| {
            DeliveryError::Retry("the token endpoint gave no access_token".into())
        })?;
        let lifetime = body["expires_in"].as_u64().unwrap_or(300);
        Ok((token.to_string(), Duration::from_secs(lifetime)))
    }

    /// One request; the answer's status and JSON body (`Null` when empty). Only a failure to
    /// get an answer is an error here: callers decide what each status means.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), DeliveryError> {
        let authorization = self.authorization().await?;
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.endpoint.url))
            .header("authorization", authorization)
            .header("accept", "application/scim+json");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/scim+json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|e| DeliveryError::Retry(format!("{method} {path}: {e}")))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED
            && let Ok(mut cached) = self.token.lock()
        {
            // A token the target no longer takes is fetched again next time.
            *cached = None;
        }
        Ok((status, read(response).await?))
    }

    /// A request that must succeed.
    async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, DeliveryError> {
        let (status, answer) = self.call(method.clone(), path, body).await?;
        if status.is_success() {
            Ok(answer)
        } else {
            Err(failure(&method, path, status, &answer))
        }
    }

    /// The id of the one resource whose `attribute` is exactly `value`, if there is one. The
    /// answer is checked, not trusted: a target that ignores the filter and lists everyone
    /// must not make one person's record another's.
    async fn find_exact(
        &self,
        endpoint: &str,
        attribute: &str,
        value: &str,
    ) -> Result<Option<(String, Value)>, DeliveryError> {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("filter", &format!("{attribute} eq {}", quoted(value)))
            .append_pair("attributes", &format!("id,{attribute},externalId"))
            .finish();
        let answer = self
            .expect(Method::GET, &format!("/{endpoint}?{query}"), None)
            .await?;
        let listed = answer["Resources"].as_array().cloned().unwrap_or_default();
        let mut matching = listed
            .into_iter()
            .filter(|r| r[attribute].as_str() == Some(value));
        match (matching.next(), matching.next()) {
            (None, _) => Ok(None),
            (Some(found), None) => match found["id"].as_str() {
                Some(id) => Ok(Some((id.to_string(), found.clone()))),
                None => Err(DeliveryError::Refused(format!(
                    "{}: the target lists a resource without an id",
                    self.name
                ))),
            },
            (Some(_), Some(_)) => Err(DeliveryError::Refused(format!(
                "{}: the target has several {endpoint} with {attribute} `{value}`",
                self.name
            ))),
        }
    }

    /// The user's id at the target: remembered, or found by the `externalId` a delivery
    /// interrupted before it was remembered left there.
    async fn user_id(&self, sync: &UserSync) -> Result<Option<String>, DeliveryError> {
        if let Some(id) = &sync.remote_id {
            return Ok(Some(id.clone()));
        }
        Ok(self
            .find_exact("Users", "externalId", &sync.local_id)
            .await?
            .map(|(id, _)| id))
    }

    async fn delete_user(&self, sync: &UserSync) -> Result<Delivered, DeliveryError> {
        if let Some(id) = self.user_id(sync).await? {
            let path = format!("/Users/{}", segment(&id));
            let (status, answer) = self.call(Method::DELETE, &path, None).await?;
            // Gone already is what a delete wants (a redelivery, or removed there).
            if !status.is_success() && status != StatusCode::NOT_FOUND {
                return Err(failure(&Method::DELETE, &path, status, &answer));
            }
        }
        Ok(Delivered::default())
    }

    /// Replaces the user at the target, or creates them. Without a remembered id the create
    /// comes first (no directory search in the common case); a 409 then means either a copy
    /// an interrupted delivery made (found by `externalId`, and replaced) or somebody else's
    /// account with that name (a refusal).
    async fn put_user(&self, sync: &UserSync, user: &User) -> Result<Value, DeliveryError> {
        let body = resource(user, &sync.local_id);
        if let Some(id) = &sync.remote_id {
            let path = format!("/Users/{}", segment(id));
            let (status, answer) = self.call(Method::PUT, &path, Some(&body)).await?;
            if status.is_success() {
                return Ok(answer);
            }
            // Deleted at the target since: made again below.
            if status != StatusCode::NOT_FOUND {
                return Err(failure(&Method::PUT, &path, status, &answer));
            }
        }
        let (status, answer) = self.call(Method::POST, "/Users", Some(&body)).await?;
        if status.is_success() {
            return Ok(answer);
        }
        if status != StatusCode::CONFLICT {
            return Err(failure(&Method::POST, "/Users", status, &answer));
        }
        let Some((id, _)) = self
            .find_exact("Users", "externalId", &sync.local_id)
            .await?
        else {
            return Err(DeliveryError::Refused(format!(
                "{}: the target already has an account named `{}` that was not provisioned from here",
                self.name, user.username
            )));
        };
        self.expect(
            Method::PUT,
            &format!("/Users/{}", segment(&id)),
            Some(&body),
        )
        .await
    }

    /// The user's group ids at the target, from an answer or read; `None` when the target
    /// does not say (some do not return `groups`).
    async fn memberships(
        &self,
        answer: &Value,
        id: &str,
    ) -> Result<Option<BTreeSet<String>>, DeliveryError> {
        let listed = |value: &Value| -> Option<BTreeSet<String>> {
            value["groups"].as_array().map(|groups| {
                groups
                    .iter()
                    .filter_map(|g| g["value"].as_str().map(String::from))
                    .collect()
            })
        };
        if let Some(found) = listed(answer) {
            return Ok(Some(found));
        }
        let read = self
            .expect(
                Method::GET,
                &format!("/Users/{}?attributes=groups", segment(id)),
                None,
            )
            .await?;
        // A user in no group may be shown without `groups` at all.
        Ok(listed(&read).or_else(|| read["id"].is_string().then(BTreeSet::new)))
    }

    /// The group for `role` at the target: as remembered, created from here before (its
    /// `externalId` says so), adopted when the role is named in the target's `roles`, or
    /// created. A group somebody else made is never joined unasked: its name may mean more
    /// there than the role does here.
    async fn group(&self, sync: &UserSync, role: &str) -> Result<String, DeliveryError> {
        let marker = format!("idflow-role:{role}");
        if let Some((id, found)) = self.find_exact("Groups", "displayName", role).await? {
            let ours = found["externalId"].as_str() == Some(marker.as_str());
            if ours || sync.adopt.contains(role) {
                return Ok(id);
            }
            return Err(DeliveryError::Refused(format!(
                "{}: a group `{role}` exists at the target and was not created from here; name the role in the target's `roles` to use it",
                self.name
            )));
        }
        let created = self
            .expect(
                Method::POST,
                "/Groups",
                Some(
                    &json!({"schemas": [GROUP_SCHEMA], "displayName": role, "externalId": marker}),
                ),
            )
            .await?;
        created["id"].as_str().map(String::from).ok_or_else(|| {
            DeliveryError::Refused("the target created a group without an id".into())
        })
    }

    /// Adds or removes a membership; `false` when the group is gone at the target.
    async fn change_membership(
        &self,
        group: &str,
        member: &str,
        add: bool,
    ) -> Result<bool, DeliveryError> {
        let operation = if add {
            json!({"op": "add", "path": "members", "value": [{"value": member}]})
        } else {
            json!({"op": "remove", "path": format!("members[value eq {}]", quoted(member))})
        };
        let body = json!({"schemas": [PATCH_SCHEMA], "Operations": [operation]});
        let path = format!("/Groups/{}", segment(group));
        let (status, answer) = self.call(Method::PATCH, &path, Some(&body)).await?;
        // Removing a membership that is gone already is done (RFC 7644 3.5.2.2 `noTarget`).
        let gone = !add && answer["scimType"] == "noTarget";
        if status.is_success() || gone {
            Ok(true)
        } else if status == StatusCode::NOT_FOUND {
            Ok(false)
        } else {
            Err(failure(&Method::PATCH, &path, status, &answer))
        }
    }

    async fn sync(&self, sync: &UserSync) -> Result<Delivered, DeliveryError> {
        let Some(user) = &sync.user else {
            return self.delete_user(sync).await;
        };
        let answer = self.put_user(sync, user).await?;
        let id = answer["id"].as_str().map(String::from).ok_or_else(|| {
            DeliveryError::Refused("the target answered without the user's id".into())
        })?;
        let current = self.memberships(&answer, &id).await?;
        let member = |group: &String| current.as_ref().is_some_and(|c| c.contains(group));
        let mut delivered = Delivered {
            user: Some(id.clone()),
            groups: Vec::new(),
        };
        let mut wanted = BTreeSet::new();
        for (role, known) in &sync.groups {
            let mut group = match known {
                Some(known) => known.clone(),
                None => self.group(sync, role).await?,
            };
            if !member(&group) && !self.change_membership(&group, &id, true).await? {
                // The remembered group was deleted at the target: found or made again.
                group = self.group(sync, role).await?;
                if !self.change_membership(&group, &id, true).await? {
                    return Err(DeliveryError::Retry(format!(
                        "{}: the group for `{role}` disappeared at the target",
                        self.name
                    )));
                }
            }
            wanted.insert(group.clone());
            delivered.groups.push((role.clone(), group));
        }
        for group in sync.managed.keys() {
            // Without the target's word on the user's groups, every group sent from here
            // that the user should not be in is left (a removal of nothing is no error).
            let leave = current.is_none() || member(group);
            if leave && !wanted.contains(group) {
                self.change_membership(group, &id, false).await?;
            }
        }
        Ok(delivered)
    }
}

impl ProvisioningTarget for ScimTarget {
    fn sync_user<'a>(&'a self, sync: &'a UserSync) -> Delivering<'a> {
        Box::pin(self.sync(sync))
    }
}

/// The user as the target gets it: the SCIM representation idflow serves, without what the
/// target assigns itself (`id`, `meta`, `groups`), with `externalId` set to the local id.
pub fn resource(user: &User, local_id: &str) -> Value {
    let mut resource = crate::http::scim::resource::render(user, "");
    if let Some(members) = resource.as_object_mut() {
        members.retain(|key, _| {
            !["id", "meta", "groups", "externalid"].contains(&key.to_ascii_lowercase().as_str())
        });
        members.insert("externalId".into(), local_id.into());
        members.insert("active".into(), (!user.disabled).into());
        if !members.contains_key("schemas") {
            members.insert("schemas".into(), json!([USER_SCHEMA]));
        }
    }
    resource
}

/// A SCIM filter string literal.
fn quoted(text: &str) -> String {
    Value::String(text.to_string()).to_string()
}

/// An id as one URL path segment.
fn segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

async fn read(mut response: reqwest::Response) -> Result<Value, DeliveryError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| DeliveryError::Retry(format!("reading the answer: {e}")))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(DeliveryError::Retry(
                "the answer is larger than 1 MiB".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// What an error answer says, shortened for a log line or a dead letter.
fn summary(answer: &Value) -> String {
    let detail = answer["detail"]
        .as_str()
        .or_else(|| answer["error_description"].as_str())
        .or_else(|| answer["error"].as_str())
        .unwrap_or("");
    detail.chars().take(200).collect()
}

/// An answer that is not a success: worth retrying when the target is busy, down or did not
/// take our credentials; a refusal otherwise.
fn failure(method: &Method, path: &str, status: StatusCode, answer: &Value) -> DeliveryError {
    let why = format!("{method} {path} answered {status}: {}", summary(answer));
    let transient = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::UNAUTHORIZED;
    if transient {
        DeliveryError::Retry(why)
    } else {
        DeliveryError::Refused(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sent_user_carries_the_local_id_and_nothing_the_target_assigns() {
        let mut user = User::new("local-1".into(), "ann".into(), 0);
        user.email = "ann@example.com".into();
        user.roles = vec!["staff".into()];
        user.disabled = true;
        let sent = resource(&user, "local-1");
        assert_eq!(sent["externalId"], "local-1");
        assert_eq!(sent["userName"], "ann");
        assert_eq!(sent["active"], false);
        assert_eq!(sent["emails"][0]["value"], "ann@example.com");
        for absent in ["id", "meta", "groups", "password"] {
            assert!(sent.get(absent).is_none(), "{absent} must not be sent");
        }
    }

    #[test]
    fn busy_or_down_targets_are_retried_and_refusals_are_not() {
        let retry = |status| {
            matches!(
                failure(&Method::PUT, "/Users/x", status, &Value::Null),
                DeliveryError::Retry(_)
            )
        };
        assert!(retry(StatusCode::SERVICE_UNAVAILABLE));
        assert!(retry(StatusCode::TOO_MANY_REQUESTS));
        assert!(retry(StatusCode::UNAUTHORIZED));
        assert!(!retry(StatusCode::BAD_REQUEST));
        assert!(!retry(StatusCode::FORBIDDEN));
    }
}
