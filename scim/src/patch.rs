//! PATCH (RFC 7644 3.5.2): operations read from a `PatchOp` request and applied to a resource
//! as JSON. Paths are attribute paths (`title`, `name.familyName`, with or without a schema URN
//! prefix), value paths (`emails[type eq "work"]`, `members[value eq "x"].display`), or a bare
//! extension URN (its whole object). Attribute names match without regard to case; a value
//! path that matches no element is `noTarget`; read-only attributes are `mutability` errors.

use scim_v2::filter::{AttrPath, PatchPath};
use serde_json::{Map, Value};

use crate::error::ScimError;
use crate::filter::element_matches;
use crate::path::{is_core, key_of};

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Add values (append to a multi-valued attribute, set a single-valued one).
    Add,
    /// Replace values.
    Replace,
    /// Remove values.
    Remove,
}

/// One PATCH operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// What it does.
    pub op: Op,
    /// Where; `None` means the resource itself (add and replace only).
    pub path: Option<String>,
    /// The value (add and replace).
    pub value: Option<Value>,
}

/// The largest number of operations in one request.
pub const MAX_OPERATIONS: usize = 1000;

/// Reads a `PatchOp` request body.
pub fn parse_request(body: &Value) -> Result<Vec<Operation>, ScimError> {
    let declared = body["schemas"]
        .as_array()
        .is_some_and(|s| s.iter().any(|u| u.as_str() == Some(crate::urn::PATCH_OP)));
    if !declared {
        return Err(ScimError::invalid_syntax(format!(
            "a PATCH request's schemas must include {}",
            crate::urn::PATCH_OP
        )));
    }
    let operations = crate::path::get(body, "Operations")
        .and_then(Value::as_array)
        .filter(|ops| !ops.is_empty())
        .ok_or_else(|| ScimError::invalid_syntax("a PATCH request needs a list of Operations"))?;
    if operations.len() > MAX_OPERATIONS {
        return Err(ScimError::too_many(format!(
            "at most {MAX_OPERATIONS} operations per request"
        )));
    }
    operations
        .iter()
        .map(|operation| {
            let op = match crate::path::get(operation, "op").and_then(Value::as_str) {
                Some(op) if op.eq_ignore_ascii_case("add") => Op::Add,
                Some(op) if op.eq_ignore_ascii_case("replace") => Op::Replace,
                Some(op) if op.eq_ignore_ascii_case("remove") => Op::Remove,
                other => {
                    return Err(ScimError::invalid_syntax(format!(
                        "`op` must be add, replace or remove, not {other:?}"
                    )));
                }
            };
            let path = match crate::path::get(operation, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(path)) => Some(path.clone()),
                Some(_) => return Err(ScimError::invalid_path("`path` must be a string")),
            };
            Ok(Operation {
                op,
                path,
                value: crate::path::get(operation, "value").cloned(),
            })
        })
        .collect()
}

/// Applies `operations` in order to `resource` (all or nothing: the caller keeps the original
/// if this fails). `read_only` names top-level attributes no operation may touch.
pub fn apply(
    resource: &mut Value,
    operations: &[Operation],
    read_only: &[&str],
) -> Result<(), ScimError> {
    let mut working = resource.clone();
    for operation in operations {
        apply_one(&mut working, operation, read_only)?;
    }
    *resource = working;
    Ok(())
}

fn object(value: &mut Value) -> Result<&mut Map<String, Value>, ScimError> {
    value
        .as_object_mut()
        .ok_or_else(|| ScimError::invalid_value("the target is not a complex attribute"))
}

fn value_of(operation: &Operation) -> Result<&Value, ScimError> {
    operation
        .value
        .as_ref()
        .ok_or_else(|| ScimError::invalid_value("add and replace need a value"))
}

fn check_writable(name: &str, read_only: &[&str]) -> Result<(), ScimError> {
    if read_only.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return Err(ScimError::mutability(format!("`{name}` is read-only")));
    }
    Ok(())
}

fn apply_one(
    resource: &mut Value,
    operation: &Operation,
    read_only: &[&str],
) -> Result<(), ScimError> {
    let Some(path) = operation.path.as_deref() else {
        if operation.op == Op::Remove {
            return Err(ScimError::no_target("remove needs a path"));
        }
        let Value::Object(members) = value_of(operation)? else {
            return Err(ScimError::invalid_value(
                "without a path, the value must be an object",
            ));
        };
        for (name, value) in members {
            if name.contains(':') && !is_core(name) {
                set_extension(resource, name, Some(value), operation.op)?;
            } else {
                check_writable(name, read_only)?;
                set(object(resource)?, name, value.clone(), operation.op);
            }
        }
        return Ok(());
    };
    // A bare extension URN: the whole extension object.
    if path.contains(':') && !is_core(path) && !path.contains('[') && looks_like_schema(path) {
        let value = if operation.op == Op::Remove {
            None
        } else {
            Some(value_of(operation)?)
        };
        return set_extension(resource, path, value, operation.op);
    }
    let parsed: PatchPath = path
        .parse()
        .map_err(|e| ScimError::invalid_path(format!("the path `{path}` does not parse: {e}")))?;
    match parsed {
        PatchPath::Attr(attr) => attribute_path(resource, &attr, operation, read_only),
        PatchPath::Value(value_path) => {
            if value_path.attr.uri.as_deref().is_none_or(is_core) {
                check_writable(&value_path.attr.name, read_only)?;
            }
            let container = container_mut(resource, value_path.attr.uri.as_deref(), false)?
                .ok_or_else(|| ScimError::no_target(format!("nothing matches `{path}`")))?;
            let key = key_of(container, &value_path.attr.name)
                .ok_or_else(|| ScimError::no_target(format!("nothing matches `{path}`")))?;
            let Some(Value::Array(items)) = container.get_mut(&key) else {
                return Err(ScimError::invalid_path(format!(
                    "`{key}` is not multi-valued"
                )));
            };
            let matching: Vec<usize> = items
                .iter()
                .enumerate()
                .filter(|(_, item)| element_matches(&value_path.filter, item))
                .map(|(index, _)| index)
                .collect();
            if matching.is_empty() {
                return Err(ScimError::no_target(format!("nothing matches `{path}`")));
            }
            match (operation.op, &value_path.sub_attr) {
                (Op::Remove, None) => {
                    let mut index = 0;
                    items.retain(|_| {
                        let keep = !matching.contains(&index);
                        index += 1;
                        keep
                    });
                }
                (Op::Remove, Some(sub)) => {
                    for &index in &matching {
                        if let Some(element) = items[index].as_object_mut()
                            && let Some(key) = key_of(element, sub)
                        {
                            element.remove(&key);
                        }
                    }
                }
                (op, None) => {
                    let Value::Object(members) = value_of(operation)? else {
                        return Err(ScimError::invalid_value(
                            "a matched element takes an object",
                        ));
                    };
                    for &index in &matching {
                        let element = object(&mut items[index])?;
                        if op == Op::Replace && members.len() > 1 {
                            element.clear();
                        }
                        for (name, value) in members {
                            set(element, name, value.clone(), Op::Replace);
                        }
                    }
                }
                (_, Some(sub)) => {
                    let value = value_of(operation)?.clone();
                    for &index in &matching {
                        set(object(&mut items[index])?, sub, value.clone(), Op::Replace);
                    }
                }
            }
            if items.is_empty() {
                container.remove(&key);
            }
            Ok(())
        }
    }
}

/// Whether `path` is a schema URN (rather than a URN-prefixed attribute path): its last
/// segment is a resource type name, which starts with a capital letter by convention.
fn looks_like_schema(path: &str) -> bool {
    path.rsplit(':')
        .next()
        .is_some_and(|last| last.chars().next().is_some_and(char::is_uppercase))
}

fn attribute_path(
    resource: &mut Value,
    attr: &AttrPath,
    operation: &Operation,
    read_only: &[&str],
) -> Result<(), ScimError> {
    if attr.uri.as_deref().is_none_or(is_core) {
        check_writable(&attr.name, read_only)?;
    }
    let creating = operation.op != Op::Remove;
    let Some(container) = container_mut(resource, attr.uri.as_deref(), creating)? else {
        return Ok(()); // removing from an extension that is not there
    };
    match (&attr.sub_attr, operation.op) {
        (None, Op::Remove) => {
            if let Some(key) = key_of(container, &attr.name) {
                container.remove(&key);
            }
        }
        (None, op) => set(container, &attr.name, value_of(operation)?.clone(), op),
        (Some(sub), op) => {
            let key = key_of(container, &attr.name).unwrap_or_else(|| attr.name.clone());
            let parent = container
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            let targets: Vec<&mut Value> = match parent {
                Value::Array(items) => items.iter_mut().collect(),
                other => vec![other],
            };
            for target in targets {
                let element = object(target)?;
                match op {
                    Op::Remove => {
                        if let Some(key) = key_of(element, sub) {
                            element.remove(&key);
                        }
                    }
                    _ => set(element, sub, value_of(operation)?.clone(), Op::Replace),
                }
            }
            if container
                .get(&key)
                .is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
            {
                container.remove(&key);
            }
        }
    }
    Ok(())
}

/// The object holding a URN's attributes, created (for add and replace) when missing.
fn container_mut<'a>(
    resource: &'a mut Value,
    uri: Option<&str>,
    create: bool,
) -> Result<Option<&'a mut Map<String, Value>>, ScimError> {
    let root = object(resource)?;
    let Some(uri) = uri.filter(|u| !is_core(u)) else {
        return Ok(Some(root));
    };
    let key = match key_of(root, uri) {
        Some(key) => key,
        None if create => {
            root.insert(uri.to_string(), Value::Object(Map::new()));
            uri.to_string()
        }
        None => return Ok(None),
    };
    root.get_mut(&key).map(object).transpose()
}

/// Adds or replaces (or, with no value, removes) a whole extension object.
fn set_extension(
    resource: &mut Value,
    uri: &str,
    value: Option<&Value>,
    op: Op,
) -> Result<(), ScimError> {
    let root = object(resource)?;
    let key = key_of(root, uri).unwrap_or_else(|| uri.to_string());
    match (op, value) {
        (Op::Remove, _) => {
            root.remove(&key);
        }
        (_, Some(Value::Object(members))) => {
            let target = root.entry(key).or_insert_with(|| Value::Object(Map::new()));
            let target = object(target)?;
            for (name, value) in members {
                set(target, name, value.clone(), op);
            }
        }
        _ => return Err(ScimError::invalid_value(format!("`{uri}` takes an object"))),
    }
    Ok(())
}

/// Sets `name` in `object`: `add` appends to a list (without repeating an equal value) and
/// merges into a complex value; `replace` overwrites. The existing key's case is kept.
fn set(object: &mut Map<String, Value>, name: &str, value: Value, op: Op) {
    let key = key_of(object, name).unwrap_or_else(|| name.to_string());
    match (op, object.get_mut(&key), value) {
        (Op::Add, Some(Value::Array(items)), Value::Array(new)) => {
            for item in new {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
        }
        (Op::Add, Some(Value::Array(items)), one) => {
            if !items.contains(&one) {
                items.push(one);
            }
        }
        (Op::Add, Some(Value::Object(existing)), Value::Object(new)) => {
            for (name, value) in new {
                set(existing, &name, value, Op::Replace);
            }
        }
        (_, _, value) => {
            object.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const READ_ONLY: &[&str] = &["id", "meta", "groups"];

    fn user() -> Value {
        json!({
            "schemas": [crate::urn::USER],
            "id": "U-1",
            "userName": "ann",
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [
                {"value": "ann@work.example", "type": "work", "primary": true},
                {"value": "ann@home.example", "type": "home"}
            ]
        })
    }

    fn patch(ops: Value) -> Result<Value, ScimError> {
        let body = json!({"schemas": [crate::urn::PATCH_OP], "Operations": ops});
        let operations = parse_request(&body)?;
        let mut resource = user();
        apply(&mut resource, &operations, READ_ONLY)?;
        Ok(resource)
    }

    #[test]
    fn add_replace_and_remove_simple_and_sub_attributes() {
        let done = patch(json!([
            {"op": "add", "path": "nickName", "value": "Annie"},
            {"op": "Replace", "path": "NAME.familyName", "value": "Li"},
            {"op": "remove", "path": "name.givenName"},
            {"op": "add", "path": "displayName", "value": "A. Li"},
            {"op": "replace", "path": "displayName", "value": "Ann Li"}
        ]))
        .expect("applies");
        assert_eq!(done["nickName"], "Annie");
        assert_eq!(done["name"], json!({"familyName": "Li"}));
        assert_eq!(done["displayName"], "Ann Li");
    }

    #[test]
    fn add_appends_to_lists_without_repeating_and_no_path_merges() {
        let done = patch(json!([
            {"op": "add", "path": "emails", "value": [{"value": "ann@other.example", "type": "other"}]},
            {"op": "add", "path": "emails", "value": [{"value": "ann@other.example", "type": "other"}]},
            {"op": "add", "value": {"title": "Engineer", "name": {"middleName": "B"}}}
        ]))
        .expect("applies");
        assert_eq!(done["emails"].as_array().map(Vec::len), Some(3));
        assert_eq!(done["title"], "Engineer");
        assert_eq!(done["name"]["middleName"], "B");
        assert_eq!(
            done["name"]["givenName"], "Ann",
            "add merges, it does not replace"
        );
    }

    #[test]
    fn value_paths_select_elements_to_change_or_remove() {
        let done = patch(json!([
            {"op": "replace", "path": "emails[type eq \"work\"].value", "value": "ann@new.example"},
            {"op": "remove", "path": "emails[type eq \"home\"]"}
        ]))
        .expect("applies");
        assert_eq!(
            done["emails"],
            json!([{"value": "ann@new.example", "type": "work", "primary": true}])
        );
        let removed_all = patch(json!([{"op": "remove", "path": "emails[value ew \"example\"]"}]))
            .expect("applies");
        assert!(removed_all.get("emails").is_none(), "an emptied list goes");
        let missing = patch(
            json!([{"op": "replace", "path": "emails[type eq \"fax\"].value", "value": "x"}]),
        );
        assert_eq!(missing.expect_err("no match").scim_type, Some("noTarget"));
    }

    #[test]
    fn extension_urns_as_prefix_and_as_the_whole_path() {
        let enterprise = crate::urn::ENTERPRISE_USER;
        let done = patch(json!([
            {"op": "add", "path": format!("{enterprise}:employeeNumber"), "value": "701"},
            {"op": "add", "path": enterprise, "value": {"department": "R&D"}},
            {"op": "replace", "value": {enterprise: {"costCenter": "4130"}}}
        ]))
        .expect("applies");
        assert_eq!(
            done[enterprise],
            json!({"employeeNumber": "701", "department": "R&D", "costCenter": "4130"})
        );
        let removed = patch(json!([
            {"op": "add", "path": enterprise, "value": {"department": "R&D"}},
            {"op": "remove", "path": enterprise}
        ]))
        .expect("applies");
        assert!(removed.get(enterprise).is_none());
    }

    #[test]
    fn bad_requests_are_the_right_errors_and_change_nothing() {
        let cases = [
            (
                json!([{"op": "add", "path": "id", "value": "x"}]),
                "mutability",
            ),
            (json!([{"op": "remove"}]), "noTarget"),
            (
                json!([{"op": "add", "path": "emails[type eq", "value": "x"}]),
                "invalidPath",
            ),
            (json!([{"op": "add", "path": "title"}]), "invalidValue"),
            (
                json!([{"op": "move", "path": "title", "value": 1}]),
                "invalidSyntax",
            ),
            (
                json!([{"op": "add", "value": "not an object"}]),
                "invalidValue",
            ),
        ];
        for (ops, kind) in cases {
            let error = patch(ops.clone()).expect_err(&ops.to_string());
            assert_eq!(error.scim_type, Some(kind), "{ops}");
        }
        let no_schema =
            parse_request(&json!({"Operations": [{"op": "add", "path": "a", "value": 1}]}));
        assert_eq!(
            no_schema.expect_err("schema").scim_type,
            Some("invalidSyntax")
        );
        // All or nothing: a failing second operation leaves the first undone.
        let operations = parse_request(&json!({"schemas": [crate::urn::PATCH_OP], "Operations": [
            {"op": "add", "path": "title", "value": "x"},
            {"op": "add", "path": "meta", "value": {}}
        ]}))
        .expect("parses");
        let mut resource = user();
        assert!(apply(&mut resource, &operations, READ_ONLY).is_err());
        assert_eq!(resource, user());
    }
}
