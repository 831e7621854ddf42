//! List and read responses: `attributes` / `excludedAttributes` (RFC 7644 3.9), `sortBy` /
//! `sortOrder` (3.4.2.3) and `startIndex` / `count` pagination (3.4.2.4).

use std::cmp::Ordering;
use std::ops::Range;

use scim_v2::filter::{AttrPath, PatchPath};
use serde_json::{Map, Value, json};

use crate::error::ScimError;
use crate::path::{is_core, key_of, values};

/// Attributes every representation carries whatever is asked (`returned: always`).
const ALWAYS: &[&str] = &["id", "schemas"];

/// Reads a comma-separated attribute list (`attributes`, `excludedAttributes`).
pub fn parse_attributes(text: &str) -> Result<Vec<AttrPath>, ScimError> {
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| match name.parse::<PatchPath>() {
            Ok(PatchPath::Attr(path)) => Ok(path),
            _ => Err(ScimError::invalid_value(format!(
                "`{name}` is not an attribute path"
            ))),
        })
        .collect()
}

/// Reads one attribute path (`sortBy`).
pub fn parse_attribute(text: &str) -> Result<AttrPath, ScimError> {
    match parse_attributes(text)?.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(ScimError::invalid_value(format!(
            "`{text}` is not one attribute path"
        ))),
    }
}

/// `resource` with only `attributes` (when given) and without `excluded`.
pub fn project(resource: &Value, attributes: &[AttrPath], excluded: &[AttrPath]) -> Value {
    let Some(all) = resource.as_object() else {
        return resource.clone();
    };
    let mut out = if attributes.is_empty() {
        all.clone()
    } else {
        keep(all, attributes)
    };
    for path in excluded {
        if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(&path.name)) && path.sub_attr.is_none() {
            continue;
        }
        remove(&mut out, path);
    }
    Value::Object(out)
}

fn containers<'a>(
    object: &'a Map<String, Value>,
    uri: Option<&str>,
) -> Option<(Option<String>, &'a Map<String, Value>)> {
    match uri.filter(|u| !is_core(u)) {
        None => Some((None, object)),
        Some(uri) => {
            let key = key_of(object, uri)?;
            object
                .get(&key)?
                .as_object()
                .map(|inner| (Some(key), inner))
        }
    }
}

/// What `attributes` asks of one attribute: all of it, or some of its sub-attributes.
enum Wanted {
    Whole,
    Subs(Vec<String>),
}

/// The members of `all` that `attributes` (and [`ALWAYS`]) ask for. Paths that name one
/// attribute are taken together, so `emails.value,emails.type` keeps both sub-attributes of
/// each email, and `emails,emails.value` keeps the emails whole.
fn keep(all: &Map<String, Value>, attributes: &[AttrPath]) -> Map<String, Value> {
    // (extension key or None for the core schema, attribute key, what is wanted), in order.
    let mut wanted: Vec<(Option<String>, String, Wanted)> = Vec::new();
    let always = ALWAYS.iter().map(|name| AttrPath {
        uri: None,
        name: (*name).to_string(),
        sub_attr: None,
    });
    for path in always.chain(attributes.iter().cloned()) {
        let Some((extension, source)) = containers(all, path.uri.as_deref()) else {
            continue;
        };
        let Some(key) = key_of(source, &path.name) else {
            continue;
        };
        let index = match wanted
            .iter()
            .position(|(e, k, _)| *e == extension && *k == key)
        {
            Some(index) => index,
            None => {
                wanted.push((extension, key, Wanted::Subs(Vec::new())));
                wanted.len() - 1
            }
        };
        let entry = &mut wanted[index].2;
        match (path.sub_attr, &mut *entry) {
            (None, _) => *entry = Wanted::Whole,
            (Some(sub), Wanted::Subs(subs)) => subs.push(sub),
            (Some(_), Wanted::Whole) => {}
        }
    }
    let mut kept = Map::new();
    for (extension, key, wanted) in wanted {
        let Some((_, source)) = containers(all, extension.as_deref()) else {
            continue;
        };
        let value = match wanted {
            Wanted::Whole => source[&key].clone(),
            Wanted::Subs(subs) => match sub_attributes(&source[&key], &subs) {
                Some(value) => value,
                None => continue,
            },
        };
        let target = match extension {
            None => &mut kept,
            Some(extension) => match kept
                .entry(extension)
                .or_insert_with(|| Value::Object(Map::new()))
            {
                Value::Object(inner) => inner,
                _ => continue,
            },
        };
        target.insert(key, value);
    }
    kept
}

/// `value` with only the sub-attributes `subs`: of each element of a multi-valued attribute
/// (elements with none of them go), or of a complex one (`None` if it has none of them).
fn sub_attributes(value: &Value, subs: &[String]) -> Option<Value> {
    let pick = |object: &Map<String, Value>| -> Map<String, Value> {
        subs.iter()
            .filter_map(|sub| key_of(object, sub))
            .map(|key| {
                let value = object[&key].clone();
                (key, value)
            })
            .collect()
    };
    match value {
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(Value::as_object)
                .map(pick)
                .filter(|picked| !picked.is_empty())
                .map(Value::Object)
                .collect(),
        )),
        Value::Object(object) => {
            let picked = pick(object);
            (!picked.is_empty()).then_some(Value::Object(picked))
        }
        _ => None,
    }
}

fn remove(object: &mut Map<String, Value>, path: &AttrPath) {
    let target = match path.uri.as_deref().filter(|u| !is_core(u)) {
        None => object,
        Some(uri) => match key_of(object, uri).and_then(|key| object.get_mut(&key)) {
            Some(Value::Object(inner)) => inner,
            _ => return,
        },
    };
    let Some(key) = key_of(target, &path.name) else {
        return;
    };
    match (&path.sub_attr, target.get_mut(&key)) {
        (None, _) => {
            target.remove(&key);
        }
        (Some(sub), Some(Value::Object(inner))) => {
            if let Some(sub_key) = key_of(inner, sub) {
                inner.remove(&sub_key);
            }
        }
        (Some(sub), Some(Value::Array(items))) => {
            for item in items.iter_mut() {
                if let Some(inner) = item.as_object_mut()
                    && let Some(sub_key) = key_of(inner, sub)
                {
                    inner.remove(&sub_key);
                }
            }
        }
        _ => {}
    }
}

/// The value a resource sorts by: the primary value of a multi-valued attribute, else its
/// first (RFC 7644 3.4.2.3).
fn sort_key<'a>(resource: &'a Value, by: &AttrPath) -> Option<&'a Value> {
    let whole = AttrPath {
        uri: by.uri.clone(),
        name: by.name.clone(),
        sub_attr: None,
    };
    let elements = values(resource, &whole);
    let primary = elements
        .iter()
        .find(|e| crate::path::get(e, "primary") == Some(&Value::Bool(true)));
    let chosen = primary.or(elements.first()).copied()?;
    match &by.sub_attr {
        Some(sub) => crate::path::get(chosen, sub),
        None if chosen.is_object() => crate::path::get(chosen, "value"),
        None => Some(chosen),
    }
}

/// Where a kind of value sorts among others, so that mixed kinds (a client may store a number
/// where another stored a string) still make one consistent order.
fn rank(value: &Value) -> u8 {
    match value {
        Value::Bool(_) => 0,
        Value::Number(_) => 1,
        Value::String(_) => 2,
        Value::Null => 4,
        Value::Array(_) | Value::Object(_) => 3,
    }
}

fn order(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a, b) {
        (Some(Value::String(a)), Some(Value::String(b))) => a
            .to_lowercase()
            .cmp(&b.to_lowercase())
            .then_with(|| a.cmp(b)),
        (Some(Value::Number(a)), Some(Value::Number(b))) => a
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b.as_f64().unwrap_or(0.0)),
        (Some(Value::Bool(a)), Some(Value::Bool(b))) => a.cmp(b),
        (Some(a), Some(b)) if rank(a) != rank(b) => rank(a).cmp(&rank(b)),
        (Some(a), Some(b)) => a.to_string().cmp(&b.to_string()),
        // Resources without the attribute sort last either way (RFC 7644 3.4.2.3).
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Sorts `resources` by `by`, ascending unless `descending`; without the attribute, last.
pub fn sort(resources: &mut [Value], by: &AttrPath, descending: bool) {
    resources.sort_by(|a, b| {
        let (ka, kb) = (sort_key(a, by), sort_key(b, by));
        match (ka, kb) {
            (Some(_), Some(_)) if descending => order(kb, ka),
            _ => order(ka, kb),
        }
    });
}

/// The largest page a list returns, whatever `count` asks.
pub const MAX_PAGE: usize = 500;

/// The slice of `total` results a page covers: `start_index` is 1-based (below 1 counts as
/// 1), `count` is capped at [`MAX_PAGE`] (0 asks only for the total).
pub fn page(total: usize, start_index: i64, count: Option<i64>) -> Range<usize> {
    let start = usize::try_from(start_index.max(1) - 1)
        .unwrap_or(0)
        .min(total);
    let count = count
        .map_or(MAX_PAGE, |c| usize::try_from(c.max(0)).unwrap_or(0))
        .min(MAX_PAGE);
    start..start.saturating_add(count).min(total)
}

/// A ListResponse.
pub fn list_response(resources: Vec<Value>, total: usize, start_index: usize) -> Value {
    json!({
        "schemas": [crate::urn::LIST_RESPONSE],
        "totalResults": total,
        "startIndex": start_index.max(1),
        "itemsPerPage": resources.len(),
        "Resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann() -> Value {
        json!({
            "schemas": [crate::urn::USER, crate::urn::ENTERPRISE_USER],
            "id": "U-1",
            "userName": "ann",
            "name": {"givenName": "Ann", "familyName": "Lee"},
            "emails": [{"value": "a@x", "type": "work"}, {"value": "a@y", "type": "home"}],
            "meta": {"resourceType": "User"},
            crate::urn::ENTERPRISE_USER: {"employeeNumber": "7", "department": "R&D"}
        })
    }

    #[test]
    fn attributes_keep_only_what_is_asked_plus_id_and_schemas() {
        let asked = parse_attributes(&format!(
            "userName, name.familyName, emails.value, {}:department",
            crate::urn::ENTERPRISE_USER
        ))
        .expect("parses");
        let shown = project(&ann(), &asked, &[]);
        assert_eq!(
            shown,
            json!({
                "schemas": [crate::urn::USER, crate::urn::ENTERPRISE_USER],
                "id": "U-1",
                "userName": "ann",
                "name": {"familyName": "Lee"},
                "emails": [{"value": "a@x"}, {"value": "a@y"}],
                crate::urn::ENTERPRISE_USER: {"department": "R&D"}
            })
        );
    }

    #[test]
    fn regression_attributes_naming_one_multi_valued_attribute_twice_keep_what_both_ask() {
        // Found by tests/never_panics.rs: the second path replaced what the first had kept.
        let two_subs = parse_attributes("emails.value,emails.type").expect("parses");
        assert_eq!(
            project(&ann(), &two_subs, &[])["emails"],
            json!([{"value": "a@x", "type": "work"}, {"value": "a@y", "type": "home"}])
        );
        let whole_then_sub = parse_attributes("emails,emails.value").expect("parses");
        assert_eq!(
            project(&ann(), &whole_then_sub, &[])["emails"],
            ann()["emails"]
        );
        let sub_of_always = parse_attributes("id.value").expect("parses");
        let odd = json!({"id": [null], "schemas": [crate::urn::USER]});
        assert_eq!(project(&odd, &sub_of_always, &[]), odd);
    }

    #[test]
    fn excluded_attributes_go_but_id_and_schemas_stay() {
        let excluded = parse_attributes(&format!(
            "emails, name.givenName, id, meta, {}:employeeNumber",
            crate::urn::ENTERPRISE_USER
        ))
        .expect("parses");
        let shown = project(&ann(), &[], &excluded);
        assert!(shown.get("emails").is_none() && shown.get("meta").is_none());
        assert_eq!(shown["name"], json!({"familyName": "Lee"}));
        assert_eq!(shown["id"], "U-1");
        assert_eq!(
            shown[crate::urn::ENTERPRISE_USER],
            json!({"department": "R&D"})
        );
        assert!(parse_attributes("emails[type eq \"work\"]").is_err());
    }

    #[test]
    fn sorting_ignores_case_puts_the_missing_last_and_reverses() {
        let mut list = vec![
            json!({"userName": "bob"}),
            json!({"id": "x"}),
            json!({"userName": "Ann"}),
            json!({"userName": "carl"}),
        ];
        let by = parse_attribute("userName").expect("path");
        sort(&mut list, &by, false);
        let names: Vec<&str> = list
            .iter()
            .map(|u| u["userName"].as_str().unwrap_or("-"))
            .collect();
        assert_eq!(names, ["Ann", "bob", "carl", "-"]);
        sort(&mut list, &by, true);
        let names: Vec<&str> = list
            .iter()
            .map(|u| u["userName"].as_str().unwrap_or("-"))
            .collect();
        assert_eq!(names, ["carl", "bob", "Ann", "-"]);
    }

    #[test]
    fn a_multi_valued_attribute_sorts_by_its_primary_value() {
        let mut list = vec![
            json!({"id": "1", "emails": [{"value": "a@x"}, {"value": "z@x", "primary": true}]}),
            json!({"id": "2", "emails": [{"value": "m@x"}]}),
        ];
        sort(&mut list, &parse_attribute("emails").expect("path"), false);
        assert_eq!(list[0]["id"], "2", "z@x (primary) sorts after m@x");
        sort(
            &mut list,
            &parse_attribute("emails.value").expect("path"),
            false,
        );
        assert_eq!(list[0]["id"], "2");
    }

    #[test]
    fn mixed_kinds_sort_in_one_consistent_order() {
        let mut list: Vec<Value> = [
            json!(3),
            json!("b"),
            json!(true),
            json!(1),
            json!("A"),
            json!({"x": 1}),
            json!(null),
        ]
        .into_iter()
        .map(|v| json!({"title": v}))
        .collect();
        sort(&mut list, &parse_attribute("title").expect("path"), false);
        // A complex value without a `value` sorts as no value: last.
        let titles: Vec<Value> = list.iter().map(|u| u["title"].clone()).collect();
        let expected = [
            json!(true),
            json!(1),
            json!(3),
            json!("A"),
            json!("b"),
            json!(null),
            json!({"x": 1}),
        ];
        assert_eq!(titles, expected);
    }

    #[test]
    fn pages_are_one_based_clamped_and_capped() {
        assert_eq!(page(10, 1, Some(3)), 0..3);
        assert_eq!(page(10, 9, Some(5)), 8..10);
        assert_eq!(page(10, 0, Some(2)), 0..2);
        assert_eq!(page(10, -5, None), 0..10);
        assert_eq!(page(10, 20, Some(5)), 10..10);
        assert_eq!(page(10, 1, Some(0)), 0..0);
        assert_eq!(page(10_000, 1, Some(100_000)), 0..MAX_PAGE);
        let list = list_response(vec![json!({"id": "a"})], 7, 3);
        assert_eq!(
            (
                list["totalResults"].clone(),
                list["itemsPerPage"].clone(),
                list["startIndex"].clone()
            ),
            (json!(7), json!(1), json!(3))
        );
    }
}
