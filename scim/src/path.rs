//! Finding an attribute in a resource: names compare case-insensitively (RFC 7643 2.1), a
//! schema URN prefix selects the core attributes or an extension's object, and a multi-valued
//! attribute yields each of its values.

use scim_v2::filter::AttrPath;
use serde_json::{Map, Value};

/// Whether `uri` names a core resource schema (whose attributes sit at the top level).
pub fn is_core(uri: &str) -> bool {
    [crate::urn::USER, crate::urn::GROUP]
        .iter()
        .any(|core| core.eq_ignore_ascii_case(uri))
}

/// The key of `object` that is `name` regardless of case.
pub fn key_of(object: &Map<String, Value>, name: &str) -> Option<String> {
    object
        .keys()
        .find(|key| key.eq_ignore_ascii_case(name))
        .cloned()
}

/// The member of `value` (an object) named `name` regardless of case.
pub fn get<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    let object = value.as_object()?;
    object.get(&key_of(object, name)?)
}

/// The object holding the attributes of `uri`: the resource itself for the core schema (or no
/// URN), else the extension's object.
pub fn container<'a>(resource: &'a Value, uri: Option<&str>) -> Option<&'a Value> {
    match uri {
        None => Some(resource),
        Some(uri) if is_core(uri) => Some(resource),
        Some(uri) => get(resource, uri),
    }
}

/// Every value `path` reaches in `resource`: one for a single-valued attribute, one per element
/// of a multi-valued one, and with a sub-attribute, that sub-attribute of each.
pub fn values<'a>(resource: &'a Value, path: &AttrPath) -> Vec<&'a Value> {
    let Some(attribute) = container(resource, path.uri.as_deref()).and_then(|c| get(c, &path.name))
    else {
        return Vec::new();
    };
    let items: Vec<&Value> = match attribute {
        Value::Array(items) => items.iter().collect(),
        one => vec![one],
    };
    match &path.sub_attr {
        None => items,
        Some(sub) => items
            .into_iter()
            .filter_map(|item| get(item, sub))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(text: &str) -> AttrPath {
        match text.parse::<scim_v2::filter::PatchPath>() {
            Ok(scim_v2::filter::PatchPath::Attr(path)) => path,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn names_ignore_case_urns_select_the_container_and_lists_flatten() {
        let user = json!({
            "userName": "ann",
            "emails": [{"value": "a@x", "type": "work"}, {"value": "a@y"}],
            "name": {"familyName": "Lee"},
            crate::urn::ENTERPRISE_USER: {"employeeNumber": "7"}
        });
        assert_eq!(values(&user, &path("USERNAME")), vec![&json!("ann")]);
        assert_eq!(values(&user, &path("name.FAMILYNAME")), vec![&json!("Lee")]);
        assert_eq!(
            values(&user, &path("emails.value")),
            vec![&json!("a@x"), &json!("a@y")]
        );
        assert_eq!(values(&user, &path("emails.type")), vec![&json!("work")]);
        let core = format!("{}:userName", crate::urn::USER);
        assert_eq!(values(&user, &path(&core)), vec![&json!("ann")]);
        let enterprise = format!("{}:employeeNumber", crate::urn::ENTERPRISE_USER);
        assert_eq!(values(&user, &path(&enterprise)), vec![&json!("7")]);
        assert!(values(&user, &path("nickName")).is_empty());
    }
}
