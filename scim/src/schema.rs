//! The discovery documents (RFC 7643 5-7, RFC 7644 4): the schemas idflow serves (RFC 7643's
//! own definitions, as `scim_v2` carries them), its resource types and its service provider
//! configuration.

use serde_json::{Value, json};

use crate::error::ScimError;

/// The schema definitions of the User resource, its Enterprise extension and Group. A
/// Group's `displayName` is declared immutable: idflow's groups are roles, named for good.
pub fn schemas(base: &str) -> Result<Vec<Value>, ScimError> {
    let parsed =
        scim_v2::models::scim_schema::get_schemas(vec!["user", "enterprise_user", "group"])
            .map_err(|e| ScimError::new_internal(format!("schema definitions: {e}")))?;
    parsed
        .into_iter()
        .map(|schema| {
            let mut value = serde_json::to_value(schema)
                .map_err(|e| ScimError::new_internal(format!("schema definitions: {e}")))?;
            let id = value["id"].as_str().unwrap_or_default().to_string();
            value["schemas"] = json!(["urn:ietf:params:scim:schemas:core:2.0:Schema"]);
            if id == crate::urn::GROUP {
                describe_groups_as_roles(&mut value);
            }
            value["meta"] = json!({
                "resourceType": "Schema",
                "location": format!("{base}/Schemas/{id}"),
            });
            Ok(value)
        })
        .collect()
}

/// RFC 7643's Group schema, adjusted to what idflow's groups (its roles) are: the name is
/// required and immutable (flows test roles by name); members are users only (roles do not
/// nest).
fn describe_groups_as_roles(schema: &mut Value) {
    let Some(attributes) = schema["attributes"].as_array_mut() else {
        return;
    };
    for attribute in attributes {
        if attribute["name"] == "displayName" {
            attribute["mutability"] = "immutable".into();
            attribute["required"] = true.into();
        }
        if attribute["name"] != "members" {
            continue;
        }
        let Some(sub) = attribute["subAttributes"].as_array_mut() else {
            continue;
        };
        for part in sub.iter_mut() {
            if part["name"] == "$ref" {
                part["referenceTypes"] = json!(["User"]);
            }
            if part["name"] == "type" {
                part["canonicalValues"] = json!(["User"]);
            }
        }
    }
}

/// The resource types idflow serves.
pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
        "id": "User",
        "name": "User",
        "endpoint": "/Users",
        "description": "User Account",
        "schema": crate::urn::USER,
        "schemaExtensions": [{"schema": crate::urn::ENTERPRISE_USER, "required": false}],
        "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
            "id": "Group",
            "name": "Group",
            "endpoint": "/Groups",
            "description": "Group: an idflow role",
            "schema": crate::urn::GROUP,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

/// What idflow supports, for clients that adapt to it.
pub fn service_provider_config(base: &str, max_results: usize, bulk: (usize, usize)) -> Value {
    let (max_operations, max_payload) = bulk;
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
        "patch": {"supported": true},
        "bulk": {"supported": true, "maxOperations": max_operations, "maxPayloadSize": max_payload},
        "filter": {"supported": true, "maxResults": max_results},
        "changePassword": {"supported": true},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "authenticationSchemes": [
            {"type": "oauthbearertoken", "name": "OAuth Bearer Token", "description": "An access token from client_credentials with the `scim` scope", "primary": true},
            {"type": "httpbasic", "name": "HTTP Basic", "description": "A user holding the `scim` privilege"}
        ],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_schemas_are_rfc_7643s_with_their_meta() {
        let schemas = schemas("https://idp.test/scim/v2").expect("schemas");
        let ids: Vec<&str> = schemas.iter().filter_map(|s| s["id"].as_str()).collect();
        assert_eq!(
            ids,
            [
                crate::urn::USER,
                crate::urn::ENTERPRISE_USER,
                crate::urn::GROUP
            ]
        );
        let display_name = schemas[2]["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|attr| attr["name"] == "displayName"))
            .expect("displayName");
        assert_eq!(display_name["mutability"], "immutable");
        let user = &schemas[0];
        let user_name = user["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|attr| attr["name"] == "userName"))
            .expect("userName");
        assert_eq!(user_name["uniqueness"], "server");
        assert_eq!(
            user["meta"]["location"],
            format!("https://idp.test/scim/v2/Schemas/{}", crate::urn::USER)
        );
    }
}
