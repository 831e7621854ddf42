//! A user as a SCIM User resource and back. The attributes idflow itself uses map onto the
//! user record (`userName`, `displayName`, the primary email, `active`, `password`); everything
//! else the client sent (name parts, phone numbers, the Enterprise extension, ...) is kept as
//! given in the user's `scim` attribute, so what a client writes it reads back unchanged.

use serde_json::{Map, Value, json};

use crate::store::User;
use idflow_scim::{ScimError, urn};

/// The user attribute holding the rest of the SCIM representation.
pub const DOCUMENT: &str = "scim";
/// The user attribute holding when SCIM last changed the user.
pub const MODIFIED: &str = "scim_modified";

/// Attributes the server sets, which a client's value for is ignored (`readOnly`).
pub const READ_ONLY: &[&str] = &["id", "meta", "groups"];

fn instant(seconds: u64) -> String {
    idflow_saml::xml::instant(seconds)
}

/// The resource for `user`, with its `meta` (location under `base`, version).
pub fn render(user: &User, base: &str) -> Value {
    let (mut doc, from_scim) = match user.attributes.get(DOCUMENT) {
        Some(Value::Object(doc)) => (doc.clone(), true),
        _ => (Map::new(), false),
    };
    let mut schemas = vec![json!(urn::USER)];
    if doc
        .keys()
        .any(|k| k.eq_ignore_ascii_case(urn::ENTERPRISE_USER))
    {
        schemas.push(json!(urn::ENTERPRISE_USER));
    }
    doc.insert("schemas".into(), Value::Array(schemas));
    doc.insert("id".into(), user.id.clone().into());
    doc.insert("userName".into(), user.username.clone().into());
    if user.name.is_empty() {
        doc.remove("displayName");
    } else {
        doc.insert("displayName".into(), user.name.clone().into());
    }
    if !doc.contains_key("emails") && !user.email.is_empty() {
        doc.insert(
            "emails".into(),
            json!([{"value": user.email, "primary": true}]),
        );
    }
    // `active` as the client left it (a PATCH may remove it); a disabled user always says so,
    // and a user not made through SCIM says whether it is active.
    if doc.contains_key("active") || user.disabled || !from_scim {
        doc.insert("active".into(), (!user.disabled).into());
    }
    if !user.roles.is_empty() {
        let groups: Vec<Value> = user
            .roles
            .iter()
            .map(|role| json!({"value": role, "display": role}))
            .collect();
        doc.insert("groups".into(), Value::Array(groups));
    }
    let modified = user
        .attributes
        .get(MODIFIED)
        .and_then(Value::as_u64)
        .unwrap_or(user.created);
    doc.insert(
        "meta".into(),
        json!({
            "resourceType": "User",
            "created": instant(user.created),
            "lastModified": instant(modified),
            "location": format!("{base}/Users/{}", user.id),
        }),
    );
    let mut resource = Value::Object(doc);
    let version = version(&resource);
    resource["meta"]["version"] = version.into();
    resource
}

/// The resource's version (its ETag): a digest of everything it says.
pub fn version(resource: &Value) -> String {
    let digest = crate::crypto::sha256(resource.to_string().as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("W/\"{hex}\"")
}

fn text(value: &Value, what: &str) -> Result<String, ScimError> {
    value
        .as_str()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .ok_or_else(|| ScimError::invalid_value(format!("`{what}` must be a non-empty string")))
}

/// Takes a client's resource into `user`; returns the new password, when one was given (the
/// caller hashes it). Read-only attributes in it are ignored.
pub fn absorb(user: &mut User, resource: Value, now: u64) -> Result<Option<String>, ScimError> {
    let Value::Object(mut doc) = resource else {
        return Err(ScimError::invalid_syntax("a User is a JSON object"));
    };
    let mut take =
        |name: &str| idflow_scim::path::key_of(&doc, name).and_then(|key| doc.remove(&key));
    if let Some(schemas) = take("schemas") {
        let lists_user = schemas.as_array().is_some_and(|s| {
            s.iter().any(|u| {
                u.as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(urn::USER))
            })
        });
        if !lists_user {
            return Err(ScimError::invalid_value(format!(
                "`schemas` must list {}",
                urn::USER
            )));
        }
    }
    let user_name =
        take("userName").ok_or_else(|| ScimError::invalid_value("`userName` is required"))?;
    user.username = text(&user_name, "userName")?;
    user.name = match take("displayName") {
        None | Some(Value::Null) => String::new(),
        Some(name) => text(&name, "displayName")?,
    };
    let active = match take("active") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(active)) => Some(active),
        Some(_) => return Err(ScimError::invalid_value("`active` must be true or false")),
    };
    // Absent, `active` leaves the account as it was (a PUT that omits it does not re-enable a
    // user an administrator disabled).
    if let Some(active) = active {
        user.disabled = !active;
    }
    let password = match take("password") {
        None | Some(Value::Null) => None,
        Some(password) => Some(text(&password, "password")?),
    };
    for read_only in READ_ONLY {
        take(read_only);
    }
    user.email = primary_email(&doc)?;
    if user.email.is_empty() {
        user.email_verified = false;
    }
    if let Some(active) = active {
        doc.insert("active".into(), active.into());
    }
    user.attributes.insert(DOCUMENT.into(), Value::Object(doc));
    user.attributes.insert(MODIFIED.into(), now.into());
    Ok(password)
}

/// The primary email (or the first), as the user's address for mail and sign-in.
fn primary_email(doc: &Map<String, Value>) -> Result<String, ScimError> {
    let Some(emails) = idflow_scim::path::key_of(doc, "emails").and_then(|k| doc.get(&k)) else {
        return Ok(String::new());
    };
    let Some(emails) = emails.as_array() else {
        return Err(ScimError::invalid_value("`emails` must be a list"));
    };
    let primary = emails
        .iter()
        .find(|e| idflow_scim::path::get(e, "primary") == Some(&Value::Bool(true)))
        .or(emails.first());
    match primary.map(|e| idflow_scim::path::get(e, "value")) {
        None => Ok(String::new()),
        Some(Some(Value::String(value))) => Ok(value.trim().to_string()),
        Some(_) => Err(ScimError::invalid_value(
            "each email needs a string `value`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_client_writes_it_reads_back_with_server_attributes_added() {
        let sent = json!({
            "schemas": [urn::USER, urn::ENTERPRISE_USER],
            "userName": "bjensen",
            "displayName": "Babs Jensen",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "emails": [{"value": "b@home.example", "type": "home"}, {"value": "b@work.example", "type": "work", "primary": true}],
            "active": false,
            "password": "a long passphrase",
            "id": "ignored", "meta": {"version": "ignored"},
            urn::ENTERPRISE_USER: {"employeeNumber": "701"}
        });
        let mut user = User::new("u-1".into(), String::new(), 100);
        let password = absorb(&mut user, sent, 200).expect("absorbs");
        assert_eq!(password.as_deref(), Some("a long passphrase"));
        assert_eq!(
            (
                user.username.as_str(),
                user.name.as_str(),
                user.email.as_str(),
                user.disabled
            ),
            ("bjensen", "Babs Jensen", "b@work.example", true)
        );
        let shown = render(&user, "https://idp.test/scim/v2");
        assert_eq!(shown["id"], "u-1");
        assert_eq!(shown["name"]["givenName"], "Barbara");
        assert_eq!(shown["emails"][1]["primary"], true);
        assert_eq!(shown[urn::ENTERPRISE_USER]["employeeNumber"], "701");
        assert!(
            shown.get("password").is_none(),
            "a password is never returned"
        );
        assert_eq!(
            shown["meta"]["location"],
            "https://idp.test/scim/v2/Users/u-1"
        );
        assert_eq!(shown["meta"]["lastModified"], "1970-01-01T00:03:20Z");
        assert!(
            shown["meta"]["version"]
                .as_str()
                .is_some_and(|v| v.starts_with("W/\""))
        );
        assert_eq!(shown["schemas"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn a_user_without_a_user_name_or_with_wrong_types_is_refused() {
        for bad in [
            json!({"displayName": "x"}),
            json!({"userName": ""}),
            json!({"userName": "a", "active": "yes"}),
            json!({"userName": "a", "emails": "a@b"}),
            json!({"userName": "a", "schemas": ["urn:other"]}),
        ] {
            let mut user = User::new("u".into(), String::new(), 0);
            let error = absorb(&mut user, bad.clone(), 0).expect_err(&bad.to_string());
            assert_eq!(error.scim_type, Some("invalidValue"), "{bad}");
        }
    }
}
